"""Wall-clock time in epoch milliseconds, the unit of every timestamp on the wire.

Microseconds are kept as a fraction, so that Server-Timing can show sub-millisecond polling
lag; a core in another language may write whole milliseconds, and that reads the same.
"""

from __future__ import annotations

import time


def now_ms() -> float:
    return round(time.time_ns() / 1_000_000, 3)
