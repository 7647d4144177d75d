"""Ways for the API to wait for a final record. `poll` is the original design's."""

from __future__ import annotations

import asyncio
import logging
import time

from reference.errors import StoreUnavailable
from reference.ports import ResultStore
from reference.records import ResultRecord

log = logging.getLogger(__name__)


class PollingCompletion:
    """One GET per waiting request per interval. Store outages are waited out, not raised:
    a request already published must not get a 503 that invites a duplicate retry."""

    def __init__(self, results: ResultStore, *, interval_s: float) -> None:
        self._results = results
        self._interval_s = interval_s

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def wait_final(self, request_id: str, timeout_s: float) -> ResultRecord | None:
        deadline = time.monotonic() + timeout_s
        last: ResultRecord | None = None
        while True:
            try:
                record = await self._results.get(request_id)
            except StoreUnavailable as exc:
                log.debug("store unavailable while waiting for %s: %s", request_id, exc)
            else:
                if record is not None:
                    last = record
                    if record.is_final:
                        return record
            left = deadline - time.monotonic()
            if left <= 0:
                return last
            await asyncio.sleep(min(self._interval_s, left))
