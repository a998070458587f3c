"""A worker process: one uvloop loop serving every listener the parent asks for.

The parent talks over a Unix socket in frames (`offload.channel`), read by the event loop
so it never blocks on them; only end-of-file means the parent is gone. Requests are
`(kind, seq, *args)`; every reply is `(seq, payload)`:

- `("apply", seq, Change)` → `{listener_id: Failure}` (offload.errors) of what failed
- `("stats", seq)` → `ProxyStats`
- `("ping", seq)` → `None`
- `("stop", seq, drain_timeout)` → `None` once listening stopped; the process exits
  when open connections are done, the drain timeout passes or the parent goes away.

A change names only the listeners that changed (`offload.delta`); a `prepare` change only
builds contexts, which the next change serves without building them again. A listener is recorded
as applied only when everything about it succeeded; on failure its previous state keeps
serving untouched, and every later change retries it. Session ticket keys, when a change
carries them, replace the worker's one ring in place: no context is rebuilt for them; so do
the ACME challenges (one `Challenges` table every listener's context reads). A challenge
whose certificate cannot be loaded is reported as the failure `challenge:<name>`; the
others are served.
The servers of listeners whose group has a health check are checked by the worker itself
(`offload.health`); its listeners' pickers read those states.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import gc
import signal
import socket
import ssl

import uvloop

from offload.channel import READ_SIZE, FrameReader, encode, unpack
from offload.connection import ClientSide
from offload.deadlines import Deadlines
from offload.delta import Change, Materials
from offload.errors import Failure
from offload.health import HealthChecks
from offload.limits import SharedLimits
from offload.proxy import Listener, ReadBuffers, bind
from offload.spec import ChallengeCert, ListenerSpec
from offload.stats import ListenerStats, ProxyStats
from offload.tls import build_context, challenge_context
from offload.tlscontext import Challenges, TicketKeys, TlsContext

# Seconds a drain waits, after cutting the connections left, for their close_notify to go.
CUT_GRACE = 0.5
# A change this large (a first state) is followed by `_settle`.
SETTLE_AFTER_CERTIFICATES = 1000
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def _tls_material(spec: ListenerSpec) -> tuple[object, ...]:
    return (
        spec.protocol, spec.default_cert, spec.additional_certs, spec.ca_pem,
        spec.tls_versions, spec.ciphers, spec.alpn_policy,
    )


def _routing(spec: ListenerSpec) -> tuple[object, ...]:
    """What a listener's backend picker is made of."""
    return (spec.backends, spec.server_group_id, spec.health_check)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"SSL error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return f"{type(exc).__name__}: {exc}"


class Worker:
    """The listeners of one process and the changes that update them."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limits: SharedLimits, index: int = 0
    ) -> None:
        """`limits`: the connection limits shared with the other workers; `index`: this
        worker's column in them."""
        self.loop = loop
        self.limits = limits
        self.index = index
        self.deadlines = Deadlines(loop)
        self.buffers = ReadBuffers()
        self.listeners: dict[str, Listener] = {}
        self.stats: dict[str, ListenerStats] = {}
        self.materials = Materials()
        # One ring for every listener: updated in place, it outlives context rebuilds.
        self.tickets = TicketKeys()
        self.health = HealthChecks(loop)
        self.challenges = Challenges()
        self.revision = 0
        # What the parent wants served; a listener that failed keeps its previous state
        # running (in `listeners`) and is retried with every later change.
        self.wanted: dict[str, ListenerSpec] = {}
        self.failed: set[str] = set()
        # Contexts built by a `prepare` change, by listener id, with the material they are of.
        self._prepared: dict[str, tuple[tuple[object, ...], TlsContext | None]] = {}
        self._at: dict[tuple[str, int], set[str]] = {}

    async def apply(self, change: Change) -> dict[str, Failure]:
        """Bring the listeners to `change`; returns failures by listener id."""
        specs = self.materials.receive(change)
        if change.ticket_keys is not None:
            self.tickets.set(k.material for k in change.ticket_keys)
        failures: dict[str, Failure] = {}
        if change.challenges is not None:
            failures.update(self._set_challenges(change.challenges))
        if change.prepare:
            self._prepare(specs)
            return failures
        removed = set(self.wanted) - {s.listener_id for s in specs} if change.full else set()
        for lid in [*change.removed, *removed]:
            self._unwant(lid)
            self.failed.discard(lid)
            if lid in self.listeners:
                self.listeners.pop(lid).close()
        for spec in specs:
            self._unwant(spec.listener_id)
            self.wanted[spec.listener_id] = spec
            self._at.setdefault((spec.address, spec.port), set()).add(spec.listener_id)
        touched = [*(s.listener_id for s in specs), *sorted(self.failed)]
        self._check_backends()
        for lid in dict.fromkeys(touched):
            spec = self.wanted[lid]
            holder = self._holder(spec)
            try:
                if holder is not None:
                    raise OSError(errno.EADDRINUSE, f"address already used by {holder}")
                await self._apply_one(spec)
            except Exception as exc:
                number = exc.errno if isinstance(exc, OSError) else None
                failures[lid] = Failure(f"{spec.address}:{spec.port}: {_reason(exc)}", number)
                self.failed.add(lid)
            else:
                self.failed.discard(lid)
        self._check_backends()
        self.revision = change.revision
        self._prepared.clear()
        return failures

    def _check_backends(self) -> None:
        """Health-check the servers of every listener wanted or still running."""
        self.health.update([*self.wanted.values(), *(run.spec for run in self.listeners.values())])

    def _set_challenges(self, challenges: tuple[ChallengeCert, ...]) -> dict[str, Failure]:
        """Serve `challenges` from now on; those that cannot be loaded are reported."""
        contexts, failures = {}, {}
        for challenge in challenges:
            try:
                contexts[challenge.name] = challenge_context(challenge)
            except (ssl.SSLError, ValueError, OSError) as exc:
                failures[f"challenge:{challenge.name}"] = Failure(_reason(exc))
        self.challenges.set(contexts)
        return failures

    def _prepare(self, specs: list[ListenerSpec]) -> None:
        """Build the TLS contexts of `specs` ahead of the change that will serve them; one
        that cannot be built is built (and its failure reported) by that change."""
        for spec in specs:
            try:
                self._prepared[spec.listener_id] = (_tls_material(spec), build_context(
                    spec, self.tickets, self.challenges
                ))
            except (ssl.SSLError, ValueError, OSError):
                continue

    def _context(self, spec: ListenerSpec) -> TlsContext | None:
        """A prepared context of the same material, or a new one."""
        prepared = self._prepared.pop(spec.listener_id, None)
        if prepared is not None and prepared[0] == _tls_material(spec):
            return prepared[1]
        return build_context(spec, self.tickets, self.challenges)

    def _unwant(self, lid: str) -> None:
        old = self.wanted.pop(lid, None)
        if old is not None:
            self._at[(old.address, old.port)].discard(lid)

    def _holder(self, spec: ListenerSpec) -> str | None:
        """Another wanted listener already serving `spec`'s address, which keeps it."""
        for other in self._at.get((spec.address, spec.port), ()):
            running = self.listeners.get(other)
            if other != spec.listener_id and running is not None and (
                running.spec.address, running.spec.port) == (spec.address, spec.port):
                return other
        return None

    async def _apply_one(self, spec: ListenerSpec) -> None:
        current = self.listeners.get(spec.listener_id)
        if current is not None and current.spec == spec:
            return
        if current is None or _tls_material(current.spec) != _tls_material(spec):
            context = self._context(spec)
        else:
            context = current.context
        stats = self.stats.setdefault(spec.listener_id, ListenerStats())
        listener = Listener(
            spec, context, stats, self.deadlines, self.buffers, self.health.states(spec),
            (self.limits, *self.materials.slots.get(spec.listener_id, (-1, 0)), self.index),
        )
        if current is not None and (current.spec.address, current.spec.port) == (
            spec.address, spec.port,
        ):
            if _routing(current.spec) != _routing(spec):
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
        self.health.close()

    def active(self) -> int:
        """Open client connections over all listeners, removed ones included."""
        return sum(s.active for s in self.stats.values())

    def cut_open(self) -> None:
        """End every open connection now (TLS ones with close_notify)."""
        for item in self.deadlines.pending():
            if isinstance(item, ClientSide):
                item.cut()

    def snapshot_stats(self) -> ProxyStats:
        """Frozen counters of every listener this worker has served."""
        return ProxyStats(
            {lid: s.freeze() for lid, s in self.stats.items()}, backends=self.health.up()
        )


class _Channel:
    """Reads frames from the parent without blocking the loop; answers requests in order."""

    def __init__(self, sock: socket.socket, worker: Worker) -> None:
        self._sock = sock
        self._worker = worker
        self._queue: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()
        self.parent_gone = asyncio.Event()

    async def read(self) -> None:
        """Queue every request the parent sends; at end-of-file, a stop without drain."""
        loop, frames = self._worker.loop, FrameReader()
        try:
            while data := await loop.sock_recv(self._sock, READ_SIZE):
                for message in frames.feed(data):
                    self._queue.put_nowait(message)  # type: ignore[arg-type]
        except OSError:
            pass
        self.parent_gone.set()
        self._queue.put_nowait(("stop", None, 0.0))

    async def serve(self) -> None:
        """Answer requests until told to stop; an unexpected error ends the process."""
        worker = self._worker
        while True:
            kind, seq, *args = await self._queue.get()
            if kind == "apply":
                change = unpack(args[0])  # type: ignore[arg-type]
                if not isinstance(change, Change):
                    raise TypeError(f"apply takes a Change, not {type(change).__name__}")
                await self._reply(seq, await worker.apply(change))
                if change.full or len(change.materials) >= SETTLE_AFTER_CERTIFICATES:
                    _settle()
            elif kind == "stats":
                await self._reply(seq, worker.snapshot_stats())
            elif kind == "ping":
                await self._reply(seq, None)
            elif kind == "stop":
                worker.stop_listening()
                await self._reply(seq, None)
                await self._drain(float(args[0]))  # type: ignore[arg-type]
                return

    async def _drain(self, seconds: float) -> None:
        """Return when no connection is open any more, after `seconds`, or when the parent
        goes away (a second signal: nothing outlives the parent). Connections the deadline
        cuts get close_notify, and a moment (`CUT_GRACE`) for it to leave."""
        loop = self._worker.loop
        await self._until_closed(loop.time() + seconds)
        if not self._worker.active() or self.parent_gone.is_set():
            return
        self._worker.cut_open()
        await self._until_closed(loop.time() + CUT_GRACE)

    async def _until_closed(self, deadline: float) -> None:
        """Wait until no connection is open, loop time `deadline`, or the parent is gone."""
        loop = self._worker.loop
        while self._worker.active() and loop.time() < deadline and not self.parent_gone.is_set():
            try:
                await asyncio.wait_for(self.parent_gone.wait(), 0.02)
            except TimeoutError:
                pass

    async def _reply(self, seq: object, payload: object) -> None:
        if seq is None:
            return
        try:
            await self._worker.loop.sock_sendall(self._sock, encode((seq, payload)))
        except OSError:
            self.parent_gone.set()


def _settle() -> None:
    """After a large change: keep the long-lived objects it made out of the garbage
    collector's full passes (so no later collection walks thousands of contexts in the middle
    of a change), and give the memory its transfer used back to the system. Both take well
    under a millisecond; a full collection first would take ~100 ms of the next change's."""
    gc.freeze()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


async def _main(sock: socket.socket, limits: SharedLimits, index: int) -> None:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    channel = _Channel(sock, Worker(loop, limits, index))
    reader = loop.create_task(channel.read())
    await loop.sock_sendall(sock, encode((0, "ready")))
    try:
        await channel.serve()
    finally:
        reader.cancel()


def run(sock: socket.socket, workers: int, index: int, capacity: int) -> None:
    """Process entry point: serve until the parent says stop or goes away. The parent's first
    message is the descriptor of the shared connection limits (`capacity` slots for `workers`
    workers, of which this is number `index`).

    SIGINT and SIGTERM sent to the whole process group (Ctrl+C, a service manager) are left to
    the parent, which drains the workers over the socket; a worker whose parent is gone exits.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if len(fds) != 1:
        raise RuntimeError("the parent sent no connection-limits descriptor")
    uvloop.run(_main(sock, SharedLimits(capacity, workers, fds[0]), index))
