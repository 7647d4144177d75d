"""Reference asynchronous request/reply service: the core, written against ports."""

__version__ = "0.1.0"
