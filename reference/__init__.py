"""Reference asynchronous request/reply service: the core, written against ports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reference")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
