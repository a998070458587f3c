"""A small TCP echo server on its own thread and loop, for tests, the benchmark and the demo.

It echoes every byte back, answers a client's EOF by closing after the echo, and may
first send a `greeting` so a test can tell which backend it reached.
"""

from __future__ import annotations

import asyncio
import threading
from typing import cast


class _Echo(asyncio.Protocol):
    def __init__(self, greeting: bytes, open_transports: set[asyncio.Transport]) -> None:
        self._greeting = greeting
        self._open = open_transports
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._open.add(self._transport)
        if self._greeting:
            self._transport.write(self._greeting)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        assert self._transport is not None
        self._open.discard(self._transport)


class EchoServer:
    """`start()` binds (port 0 = any free port) and returns the port; `stop()` ends it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, greeting: bytes = b"") -> None:
        self.host = host
        self.port = port
        self._greeting = greeting
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.Transport] = set()

    def start(self) -> int:
        """Start serving on a background thread; returns the bound port."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(), self._loop)
        self.port = future.result(timeout=10)
        return self.port

    async def _open(self) -> int:
        self._server = await self._loop.create_server(
            lambda: _Echo(self._greeting, self._transports), self.host, self.port
        )
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Close the listening socket and every connection, then end the thread."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        # A connection accepted just before the close gets its transport a few ticks later:
        # abort until none is left, so no transport outlives the loop.
        for _ in range(20):
            for transport in list(self._transports):
                transport.abort()
            await asyncio.sleep(0.01)
            if not self._transports:
                break
        # An accept still in flight is a task of this loop holding the accepted socket (and
        # maybe its transport): cancel it and wait, so nothing is left for the GC to find open.
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for transport in list(self._transports):
            transport.abort()
        await asyncio.sleep(0)

    def __enter__(self) -> EchoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve_echo(host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Serve echo on the running loop (for callers that have one); returns the server."""
    loop = asyncio.get_running_loop()
    open_transports: set[asyncio.Transport] = set()
    return await loop.create_server(lambda: _Echo(b"", open_transports), host, port)
