"""A worker process: one uvloop loop serving every listener of the latest snapshot.

The parent talks over a `multiprocessing` pipe, read with `loop.add_reader` so the
loop never blocks on it. Requests are `(kind, seq, *args)`; every reply is `(seq, payload)`:

- `("apply", seq, Snapshot)` → `{listener_id: "address:port: reason"}` of failures
- `("stats", seq)` → `ProxyStats`
- `("ping", seq)` → `None`
- `("stop", seq, drain_timeout)` → `None` once listening stopped; the process exits
  when open connections are done or the drain timeout passes.

Apply diffs by listener id. A listener is recorded as applied only when everything
about it succeeded; on failure its previous state keeps serving untouched, so the
next snapshot retries it.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from multiprocessing.connection import Connection

import uvloop

from offload.deadlines import Deadlines
from offload.proxy import Listener, bind
from offload.spec import ListenerSpec, Snapshot
from offload.stats import ListenerStats, ProxyStats
from offload.tls import build_context


def _tls_material(spec: ListenerSpec) -> tuple[object, ...]:
    return (
        spec.protocol, spec.default_cert, spec.additional_certs, spec.ca_pem,
        spec.tls_versions, spec.ciphers,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"SSL error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return f"{type(exc).__name__}: {exc}"


class Worker:
    """The listeners of one process and the diff that updates them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.deadlines = Deadlines(loop)
        self.listeners: dict[str, Listener] = {}
        self.stats: dict[str, ListenerStats] = {}

    async def apply(self, snapshot: Snapshot) -> dict[str, str]:
        """Bring the listeners to `snapshot`; returns failures by listener id."""
        wanted = {spec.listener_id: spec for spec in snapshot.listeners}
        for lid in [lid for lid in self.listeners if lid not in wanted]:
            self.listeners.pop(lid).close()
        failures: dict[str, str] = {}
        seen: dict[tuple[str, int], str] = {}
        for spec in snapshot.listeners:
            where = (spec.address, spec.port)
            if where in seen:
                failures[spec.listener_id] = (
                    f"{spec.address}:{spec.port}: address already used by {seen[where]}"
                )
                continue
            seen[where] = spec.listener_id
            try:
                await self._apply_one(spec)
            except Exception as exc:
                failures[spec.listener_id] = f"{spec.address}:{spec.port}: {_reason(exc)}"
        return failures

    async def _apply_one(self, spec: ListenerSpec) -> None:
        current = self.listeners.get(spec.listener_id)
        if current is not None and current.spec == spec:
            return
        if current is None or _tls_material(current.spec) != _tls_material(spec):
            context = build_context(spec)
        else:
            context = current.context
        stats = self.stats.setdefault(spec.listener_id, ListenerStats())
        listener = Listener(spec, context, stats, self.deadlines)
        if current is not None and (current.spec.address, current.spec.port) == (
            spec.address, spec.port,
        ):
            if current.spec.backends != spec.backends:
                current.picker = listener.picker
            current.spec, current.context = spec, context
            return
        await listener.listen(bind(spec))
        self.listeners[spec.listener_id] = listener
        if current is not None:
            current.close()

    def stop_listening(self) -> None:
        """Close every listening socket; open connections go on."""
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()

    def active(self) -> int:
        """Open client connections over all listeners, removed ones included."""
        return sum(s.active for s in self.stats.values())

    def snapshot_stats(self) -> ProxyStats:
        """Frozen counters of every listener this worker has served."""
        return ProxyStats({lid: s.freeze() for lid, s in self.stats.items()})


class _Channel:
    """Reads requests from the parent without blocking the loop; runs them in order."""

    def __init__(self, conn: Connection, worker: Worker) -> None:
        self._conn = conn
        self._worker = worker
        self._queue: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()

    def on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._queue.put_nowait(self._conn.recv())
        except (EOFError, OSError):
            self._worker.loop.remove_reader(self._conn.fileno())
            self._queue.put_nowait(("stop", None, 0.0))

    async def serve(self) -> None:
        """Answer requests until told to stop; an unexpected error ends the process."""
        worker = self._worker
        while True:
            kind, seq, *args = await self._queue.get()
            if kind == "apply":
                snapshot = args[0]
                assert isinstance(snapshot, Snapshot)
                self._reply(seq, await worker.apply(snapshot))
            elif kind == "stats":
                self._reply(seq, worker.snapshot_stats())
            elif kind == "ping":
                self._reply(seq, None)
            elif kind == "stop":
                worker.stop_listening()
                self._reply(seq, None)
                await self._drain(float(args[0]))  # type: ignore[arg-type]
                return

    async def _drain(self, seconds: float) -> None:
        """Return when no connection is open any more, or after `seconds`."""
        loop = self._worker.loop
        deadline = loop.time() + seconds
        drained: asyncio.Future[None] = loop.create_future()

        def check() -> None:
            if not self._worker.active() or loop.time() >= deadline:
                drained.set_result(None)
            else:
                loop.call_later(0.05, check)

        check()
        await drained

    def _reply(self, seq: object, payload: object) -> None:
        if seq is None:
            return
        try:
            self._conn.send((seq, payload))
        except OSError:
            pass


async def _main(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    channel = _Channel(conn, Worker(loop))
    loop.add_reader(conn.fileno(), channel.on_readable)
    conn.send((0, "ready"))
    await channel.serve()


def run(conn: Connection) -> None:
    """Process entry point: serve until the parent says stop or goes away.

    SIGINT and SIGTERM sent to the whole process group (Ctrl+C, a service manager) are left to
    the parent, which drains the workers over the pipe; a worker whose parent is gone exits.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    uvloop.run(_main(conn))
