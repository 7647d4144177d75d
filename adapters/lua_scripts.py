"""The Lua scripts of the Redis adapters, read from `adapters/lua/*.lua`.

They are the atomic steps of the contract (docs/contract.md): a core in another language runs
the very same files (the C++ core embeds them at build time), so both take the same steps.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def lua(name: str) -> str:
    """The text of `adapters/lua/<name>.lua`."""
    return files("reference.adapters").joinpath("lua", f"{name}.lua").read_text()
