"""Wall-clock time in epoch milliseconds, the unit of every timestamp on the wire.

Microseconds are kept as a fraction, so that Server-Timing can show sub-millisecond polling
lag; a core in another language may write whole milliseconds, and that reads the same.

The source is the system clock. A simulation (or a test) may put another source in place with
`use_clock`, for virtual time or for clock jumps; the core only ever calls `now_ms`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

_source: Callable[[], float] | None = None  # epoch seconds; None means the system clock


def now_ms() -> float:
    if _source is None:
        return round(time.time_ns() / 1_000_000, 3)
    return round(_source() * 1000, 3)


def now_s() -> float:
    return now_ms() / 1000


@contextlib.contextmanager
def use_clock(source: Callable[[], float]) -> Iterator[None]:
    """Read wall-clock time (epoch seconds) from `source` inside the block."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous
