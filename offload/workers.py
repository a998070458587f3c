"""`ProxyControl`: the parent's handle on N worker processes serving the snapshot.

Every public method is thread-safe: one lock serialises all socket traffic, so the
control plane may call `apply`, `stats` and `healthy` from any thread. A change is taken by
the workers that are up; a worker that died is left out (the kernel sends its listeners'
new connections to the others) and replaced by a supervisor thread, without holding up
changes: the replacement builds every TLS context of the state outside the lock (a
`prepare` change, seconds at thousands of certificates), then, under the lock, gets the
whole current state, which it serves from the prepared contexts at once, and only then
takes its place. After that, every worker is sent only what changed (`offload.delta`). A
snapshot without session ticket keys gets the control's own random key, so a client resumes
on any of its workers (without rotation: the control plane's snapshots carry rotated keys).
The workers share one memory file of connection limits (`offload.limits`), sent to each as
its first message; a dead worker's open connections are taken off it before its
replacement starts.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import socket
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import TracebackType

from offload import worker
from offload.channel import READ_SIZE, FrameReader, encode, pack
from offload.delta import Change, DeltaEncoder
from offload.errors import ApplyError, ApplyTimeout, Failure, OffloadError, WorkerExited
from offload.limits import SharedLimits
from offload.spec import Snapshot, TicketKey
from offload.stats import ProxyStats

log = logging.getLogger(__name__)
_CTX = multiprocessing.get_context("spawn")
SPAWN_TIMEOUT = 15.0
# A worker builds a context per new certificate (thousands in a first state): allowed for.
FULL_STATE_SECONDS_PER_CERTIFICATE = 0.02
# Listeners the shared connection limits have room for (a few bytes each, mapped sparsely).
LIMIT_SLOTS = 65536


class _Handle:
    """One worker process and its socket; used only with `ProxyControl._lock` held."""

    def __init__(self, index: int, limits: SharedLimits) -> None:
        self.index = index
        self.limits = limits
        self.process: BaseProcess | None = None
        self.sock: socket.socket | None = None
        self._frames = FrameReader()
        self._seq = 0
        self.last_stats = ProxyStats()

    def spawn(self, timeout: float) -> None:
        parent, child = socket.socketpair()
        limits = self.limits
        process = _CTX.Process(
            target=worker.run, args=(child, limits.workers, self.index, limits.capacity),
            name=f"offload-worker-{self.index}", daemon=True,
        )
        try:
            process.start()
        finally:
            child.close()
        self.process, self.sock = process, parent
        socket.send_fds(parent, [b"L"], [limits.fd])
        self._frames = FrameReader()
        self._seq = 0
        self.last_stats = ProxyStats()
        self.wait(0, timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def send(self, kind: str, *args: object, timeout: float) -> int:
        """Write one request; its sequence number."""
        if self.sock is None:
            raise WorkerExited(f"worker {self.index} was not started")
        self._seq += 1
        frame = encode((kind, self._seq, *args))
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(frame)
        except TimeoutError as exc:
            # Part of a frame may be written: the stream is unusable, so the worker goes.
            self.kill()
            raise ApplyTimeout(f"worker {self.index} took no request within {timeout:g} s") from exc
        except OSError as exc:
            raise WorkerExited(f"worker {self.index}: {exc}") from exc
        return self._seq

    def ask(self, kind: str, *args: object, timeout: float) -> object:
        """Send one request and wait for its answer."""
        return self.wait(self.send(kind, *args, timeout=timeout), timeout)

    def wait(self, seq: int, timeout: float) -> object:
        """The reply to request `seq`; older replies (after a timeout) are dropped."""
        if self.sock is None:
            raise WorkerExited(f"worker {self.index} was not started")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApplyTimeout(f"worker {self.index} did not answer within {timeout:g} s")
            try:
                self.sock.settimeout(remaining)
                data = self.sock.recv(READ_SIZE)
            except TimeoutError:
                continue
            except OSError as exc:
                raise WorkerExited(f"worker {self.index}: {exc}") from exc
            if not data:
                raise WorkerExited(f"worker {self.index} closed its socket")
            for reply in self._frames.feed(data):
                if not isinstance(reply, tuple) or len(reply) != 2:
                    raise OffloadError(f"worker {self.index} sent {reply!r}")
                if reply[0] == seq:
                    return reply[1]

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join(5)
        if self.sock is not None:
            self.sock.close()


class ProxyControl:
    """Start, update, observe and stop the worker processes of the data plane."""

    def __init__(self, workers: int, ack_timeout: float = 5.0) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._ack_timeout = ack_timeout
        self._limits = SharedLimits(LIMIT_SLOTS, workers)
        self._handles = [_Handle(i, self._limits) for i in range(workers)]
        self._lock = threading.RLock()
        self._snapshot = Snapshot(revision=0)
        self._encoder = DeltaEncoder(self._limits)
        self._own_ticket_keys = (TicketKey.generate(),)
        self._retired = ProxyStats()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._incoming: _Handle | None = None

    @property
    def current_revision(self) -> int:
        """Revision of the last snapshot handed to the workers (0 before any)."""
        return self._snapshot.revision

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for operators and tests)."""
        with self._lock:
            return [h.process.pid for h in self._handles if h.process and h.process.pid]

    def start(self) -> None:
        """Spawn every worker and wait until each one is ready."""
        with self._lock:
            if self._supervisor is not None:
                return
            try:
                for handle in self._handles:
                    handle.spawn(max(self._ack_timeout, SPAWN_TIMEOUT))
            except BaseException:
                for handle in self._handles:
                    handle.kill()
                raise
            self._supervisor = threading.Thread(
                target=self._supervise, name="offload-supervisor", daemon=True
            )
            self._supervisor.start()

    def apply(self, snapshot: Snapshot) -> None:
        """Hand `snapshot` to every worker that is up (as the change from the last one) and
        wait until all acknowledge it; a worker being replaced gets it with its whole state.

        Raises ApplyError naming every listener some worker could not apply (the
        rest is applied and serving), ApplyTimeout when a worker does not answer, or
        WorkerExited when no worker is up to take it.
        """
        with self._lock:
            self._require_started()
            if not snapshot.ticket_keys:
                snapshot = dataclasses.replace(snapshot, ticket_keys=self._own_ticket_keys)
            step = self._encoder.change(snapshot)
            self._snapshot = snapshot
            timeout = self._change_timeout(step)
            change = pack(step)
            failures: dict[str, Failure] = {}
            pending: list[tuple[_Handle, int]] = []
            for handle in self._handles:
                if not handle.alive():
                    continue
                try:
                    pending.append((handle, handle.send("apply", change, timeout=timeout)))
                except WorkerExited as exc:
                    self._lost(handle, f"it could not be sent a change: {exc}")
            taken = 0
            for handle, seq in pending:
                try:
                    failures.update(_failures(handle.wait(seq, timeout)))
                    taken += 1
                except WorkerExited as exc:
                    self._lost(handle, f"it exited while applying a change: {exc}")
            if not taken:
                raise WorkerExited("no proxy worker is up to take the change")
            if failures:
                raise ApplyError(failures)

    def stats(self) -> ProxyStats:
        """Counters of every listener, summed over the workers; a replaced worker's counts
        are kept, so no counter goes backwards."""
        self._require_started()
        with self._lock:
            self._require_started()
            total = self._retired
            for handle in self._handles:
                try:
                    part = handle.ask("stats", timeout=self._ack_timeout)
                except (WorkerExited, ApplyTimeout):
                    part = handle.last_stats
                if not isinstance(part, ProxyStats):
                    raise OffloadError(f"worker {handle.index} answered stats with {part!r}")
                handle.last_stats = part
                total = total + part
            return total

    def healthy(self) -> bool:
        """True when every worker is alive and answers a ping."""
        if self._supervisor is None or self._stopping.is_set():
            return False
        with self._lock:
            if self._stopping.is_set():
                return False
            for handle in self._handles:
                try:
                    handle.ask("ping", timeout=self._ack_timeout)
                except (WorkerExited, ApplyTimeout):
                    return False
            return True

    def stop(self, drain_timeout: float) -> None:
        """Stop accepting at once, let open connections finish up to `drain_timeout`, end."""
        self._stopping.set()
        with self._lock:
            incoming = self._incoming
        if incoming is not None:  # a replacement still preparing: it would serve too late
            incoming.kill()
        if self._supervisor is not None:
            self._supervisor.join()
        with self._lock:
            for handle in self._handles:
                if handle.alive():
                    try:
                        handle.ask("stop", drain_timeout, timeout=self._ack_timeout)
                    except (WorkerExited, ApplyTimeout):
                        handle.kill()
        # Drain without the lock: other threads see `_stopping` and return at once.
        deadline = time.monotonic() + drain_timeout + self._ack_timeout
        for handle in self._handles:
            if handle.process is not None:
                handle.process.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for handle in self._handles:
                handle.kill()

    def _require_started(self) -> None:
        if self._supervisor is None or self._stopping.is_set():
            raise OffloadError("proxy control is not running (start() first, not after stop())")

    def _lost(self, handle: _Handle, why: str) -> None:
        """A worker stopped answering: end it; the supervisor replaces it."""
        log.warning("offload worker %d is lost: %s", handle.index, why)
        handle.kill()

    def _change_timeout(self, change: Change) -> float:
        """How long a worker may take to apply `change`: the ack timeout, plus the time to
        build a context for each certificate new to it (a first state holds thousands)."""
        return self._ack_timeout + len(change.materials) * FULL_STATE_SECONDS_PER_CERTIFICATE

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            sentinels = [h.process.sentinel for h in self._handles if h.process is not None]
            wait(sentinels, timeout=0.2)
            for index, handle in enumerate(self._handles):
                if not self._stopping.is_set() and not handle.alive() and not self._replace(index):
                    self._stopping.wait(1.0)

    def _replace(self, index: int) -> bool:
        """Replace the dead worker `index`; False when that failed (retried later)."""
        with self._lock:
            old = self._handles[index]
            if self._stopping.is_set() or old.alive():
                return True
            self._retired = self._retired + old.last_stats.retired()
            old.last_stats = ProxyStats()
            old.kill()
            self._limits.recover(index, self._encoder.slots_used)
            prepare = self._encoder.full(prepare=True)
            self._incoming = fresh = _Handle(index, self._limits)
        code = old.process.exitcode if old.process is not None else None
        log.warning("replacing offload worker %d (exit code %s)", index, code)
        try:
            started = time.monotonic()
            spawn = max(self._ack_timeout, SPAWN_TIMEOUT)
            fresh.spawn(spawn)
            fresh.ask("apply", pack(prepare), timeout=spawn + self._change_timeout(prepare))
            prepared = time.monotonic()
            with self._lock:
                locked = time.monotonic()
                if self._stopping.is_set():
                    return True
                full = self._encoder.full()
                # The material the replacement prepared is not sent again.
                full = dataclasses.replace(full, materials={
                    k: v for k, v in full.materials.items() if k not in prepare.materials
                })
                failures = _failures(
                    fresh.ask("apply", pack(full), timeout=self._change_timeout(full))
                )
                self._handles[index] = fresh
            log.info(
                "offload worker %d replaced: prepared in %.1f s, then took its place in %.2f s",
                index, prepared - started, time.monotonic() - locked,
                extra={"worker": index, "pid": fresh.process.pid if fresh.process else None},
            )
        except (OffloadError, OSError) as exc:
            fresh.kill()
            log.error("offload worker %d failed to restart: %s", index, exc)
            return False
        finally:
            self._incoming = None
        for lid, failure in failures.items():
            log.error("replaced worker %d: listener %s on %s", index, lid, failure.reason)
        return True

    def __enter__(self) -> ProxyControl:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(drain_timeout=0.0)


def _failures(result: object) -> dict[str, Failure]:
    """A worker's answer to `apply`, checked."""
    if not isinstance(result, dict) or not all(isinstance(f, Failure) for f in result.values()):
        raise OffloadError(f"a worker answered apply with {result!r}")
    return result
