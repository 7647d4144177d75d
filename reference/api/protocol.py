"""Sanic's HTTP protocol with a bound on slow clients.

Sanic's request timeout restarts at every byte received, so a client that trickles one byte
every few seconds holds a connection (and a request slot) forever, and a stalled body ends in
a 503 "Response Timeout" a minute later. Here a request's headers and body together must
arrive within REFERENCE_CLIENT_TIMEOUT_S (default 10) of its first byte, checked every
quarter of that bound; past it the client gets 408 with the error envelope and the
connection is closed. Time spent waiting for the result does not count: only receiving does.
"""

from __future__ import annotations

import sys
from time import monotonic
from typing import Any

from sanic.exceptions import RequestTimeout
from sanic.http import Stage
from sanic.server.protocols.http_protocol import HttpProtocol

DEFAULT_CLIENT_TIMEOUT_S = 10.0


class BoundedHttpProtocol(HttpProtocol):
    __slots__ = ("_request_began", "client_timeout")  # Sanic's protocols have no __dict__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = getattr(self.app.ctx, "settings", None)
        self.client_timeout = float(getattr(settings, "client_timeout_s",
                                            DEFAULT_CLIENT_TIMEOUT_S))
        self._request_began: float | None = None

    def _receiving(self) -> bool:
        http = getattr(self, "_http", None)
        if http is None:
            return False
        return http.stage is Stage.REQUEST or (http.stage is Stage.HANDLER
                                               and bool(http.request_body))

    def data_received(self, data: bytes) -> None:
        http = getattr(self, "_http", None)
        if self._request_began is None or http is None or http.stage is Stage.IDLE:
            self._request_began = monotonic()
        super().data_received(data)

    def check_timeouts(self) -> None:
        began = self._request_began
        task = getattr(self, "_task", None)
        if (task is not None and began is not None and self._receiving()
                and monotonic() - began > self.client_timeout):
            self._http.exception = RequestTimeout("the request was not received in time")
            if sys.version_info < (3, 14):
                task.cancel("the client was too slow")
            else:
                task.cancel()
            return
        super().check_timeouts()  # type: ignore[no-untyped-call]
        # Sanic sweeps every min(keep-alive, request, response timeout) / 2 s (30 s with
        # its defaults): sweep at least every quarter of our bound.
        handle = getattr(self, "_callback_check_timeouts", None)
        sweep = max(0.1, self.client_timeout / 4)
        if handle is not None and handle.when() - self.loop.time() > sweep:
            handle.cancel()
            self._callback_check_timeouts = self.loop.call_later(sweep, self.check_timeouts)
