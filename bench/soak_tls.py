"""The soak benchmark's TLS client: long-lived connections and a handshake loop, on one
uvloop event loop in its own thread, driven from the main thread.

A round trip writes a short line and reads back exactly those bytes (the backend echoes).
The client verifies the server's chain against the bench CA but not the host name: a
default-certificate swap or an SNI certificate taken away changes which name is served,
and what is measured is whether the handshake and the data path work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import ssl
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """One place to connect to: a listener port and the SNI name to send."""

    port: int
    sni: str


@dataclass
class Held:
    """One long-lived connection."""

    index: int
    target: Target
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    local_port: int


@dataclass(frozen=True)
class Attempt:
    """One new connection of the handshake loop (monotonic times)."""

    start: float
    end: float
    ok: bool
    error: str = ""


@dataclass
class LoopResult:
    """What the handshake loop did."""

    attempts: list[Attempt] = field(default_factory=list)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


class TlsClient:
    """Runs coroutines on a private uvloop loop; `run` waits, `submit` does not."""

    def __init__(self, ca_pem: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.load_verify_locations(cadata=ca_pem)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.held: list[Held] = []
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="soak-tls", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coro` on the client loop; returns a future to wait on later."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], step_limit: float) -> T:
        """Run `coro` on the client loop and wait up to `step_limit` s for its result."""
        future = self.submit(coro)
        try:
            return future.result(max(step_limit, 0.1))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    async def _round_trip(
        self, target: Target, payload: bytes, step_limit: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1",
                target.port,
                ssl=self.context,
                server_hostname=target.sni,
                ssl_handshake_timeout=step_limit,
            ),
            step_limit,
        )
        try:
            await self._echo(reader, writer, payload, step_limit)
        except BaseException:
            writer.transport.abort()
            raise
        return reader, writer

    @staticmethod
    async def _echo(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        payload: bytes,
        step_limit: float,
    ) -> None:
        writer.write(payload)
        await asyncio.wait_for(writer.drain(), step_limit)
        got = await asyncio.wait_for(reader.readexactly(len(payload)), step_limit)
        if got != payload:
            raise ValueError(f"echo mismatch: sent {payload!r}, got {got!r}")

    async def open_held(
        self, targets: list[Target], concurrency: int, step_limit: float
    ) -> list[str]:
        """Open one connection per target (handshake + one round trip) and keep it in
        `self.held`; returns the errors of those that failed."""
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []

        async def one(index: int, target: Target) -> None:
            async with gate:
                try:
                    payload = f"held {index:07d} open\n".encode()
                    reader, writer = await self._round_trip(target, payload, step_limit)
                except Exception as exc:
                    errors.append(f"port {target.port} sni {target.sni}: {_reason(exc)}")
                    return
                local = writer.get_extra_info("sockname")
                self.held.append(Held(index, target, reader, writer, int(local[1])))

        await asyncio.gather(*(one(i, t) for i, t in enumerate(targets)))
        self.held.sort(key=lambda h: h.index)
        return errors

    async def check_held(self, concurrency: int, step_limit: float) -> dict[int, str]:
        """One more round trip on every held connection; returns {index: error} of those
        that failed."""
        gate = asyncio.Semaphore(concurrency)
        failed: dict[int, str] = {}

        async def one(held: Held) -> None:
            async with gate:
                try:
                    payload = f"held {held.index:07d} check\n".encode()
                    await self._echo(held.reader, held.writer, payload, step_limit)
                except Exception as exc:
                    failed[held.index] = _reason(exc)

        await asyncio.gather(*(one(h) for h in self.held))
        return failed

    async def close_held(self, step_limit: float) -> None:
        """Close every held connection (abort those that do not close in time)."""
        for held in self.held:
            held.writer.close()
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    *(h.writer.wait_closed() for h in self.held), return_exceptions=True
                ),
                step_limit,
            )
        except TimeoutError:
            pass
        for held in self.held:
            held.writer.transport.abort()
        self.held.clear()

    async def handshake_loop(
        self,
        targets: list[Target],
        concurrency: int,
        limit: int,
        stop: threading.Event,
        deadline: float,
        step_limit: float,
    ) -> LoopResult:
        """New connection + one round trip + close, `concurrency` at a time, round-robin
        over `targets`, until `stop` is set, `limit` attempts were made or `deadline`
        (monotonic) passed."""
        result = LoopResult()
        counter = itertools.count()

        async def lane() -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                n = next(counter)
                if n >= limit:
                    return
                target = targets[n % len(targets)]
                start = time.monotonic()
                try:
                    _, writer = await self._round_trip(
                        target, f"loop {n:09d}\n".encode(), step_limit
                    )
                except Exception as exc:
                    result.attempts.append(Attempt(start, time.monotonic(), False, _reason(exc)))
                    await asyncio.sleep(0.01)  # a refusing port must not spin the loop
                    continue
                result.attempts.append(Attempt(start, time.monotonic(), True))
                writer.close()
                try:
                    await asyncio.wait_for(writer.wait_closed(), step_limit)
                except (OSError, TimeoutError, ssl.SSLError):
                    writer.transport.abort()

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return result

    def close(self) -> None:
        """Stop the loop and its thread."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
