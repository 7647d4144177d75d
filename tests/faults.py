"""A small TCP proxy on loopback for fault injection: cut a connection, then restore it.

It runs its own event loop in a thread, so it serves in-process tests and subprocesses alike.
`cut()` drops every open connection and refuses new ones (connections are accepted and closed
at once, as a broker that went away); `blackhole()` keeps every connection open but forwards
nothing in either direction, not even a close, and new connections are accepted and never
forwarded (a link that drops packets: no FIN, no RST, only silence); `restore()` ends either
fault. Connections that lived through a black hole are closed on `restore()`: their byte
streams lost data midway, so they could never be resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()  # sockets that lived through a black hole
        self._cut = False
        self._blackhole = False
        self.connections = 0
        self.held_connections = 0  # accepted during a black hole, never forwarded

    @classmethod
    def for_url(cls, url: str, default_port: int) -> TcpProxy:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or default_port)

    def url_through(self, url: str) -> str:
        """The same URL, pointed at the proxy."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = (auth + "@" if auth else "") + f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close_all(stop=True), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> None:
        self._cut = True
        asyncio.run_coroutine_threadsafe(self._close_all(stop=False), self._loop).result(5)

    def blackhole(self) -> None:
        """Silence every connection, open or new, without closing any."""
        asyncio.run_coroutine_threadsafe(self._start_blackhole(), self._loop).result(5)

    def restore(self) -> None:
        self._cut = False
        asyncio.run_coroutine_threadsafe(self._end_blackhole(), self._loop).result(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_all(self, *, stop: bool) -> None:
        if stop and self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        self._held.clear()

    async def _start_blackhole(self) -> None:
        # On the proxy's loop, so no pipe forwards a byte once this returns.
        self._blackhole = True
        self._held |= self._open

    async def _end_blackhole(self) -> None:
        self._blackhole = False
        for writer in list(self._held):
            writer.transport.abort()
        self._open -= self._held
        self._held.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        if self._blackhole:
            await self._hold(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self._blackhole:  # it began while we connected upstream
            up_writer.transport.abort()
            await self._hold(reader, writer)
            return
        self.connections += 1
        self._open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if self._blackhole:
                        continue  # read and discard: the sender sees no back-pressure either
                    dst.write(data)
                    await dst.drain()
            if not self._blackhole:  # a black hole passes no close on either
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open -= {writer, up_writer}
        self._held -= {writer, up_writer}

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accepted during a black hole: swallow whatever comes, answer nothing, until restored."""
        self.held_connections += 1
        self._open.add(writer)
        self._held.add(writer)
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while await reader.read(65536):
                pass
        self._open.discard(writer)
        self._held.discard(writer)
        writer.transport.abort()
