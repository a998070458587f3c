"""`ProxyControl`: the parent's handle on N worker processes serving the snapshot.

Every public method is thread-safe: one lock serialises all pipe traffic, so the
control plane may call `apply`, `stats` and `healthy` from any thread. A supervisor
thread restarts a worker that died and hands it the current snapshot.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType

from offload import worker
from offload.errors import ApplyError, ApplyTimeout, OffloadError, WorkerExited
from offload.spec import Snapshot
from offload.stats import ProxyStats

log = logging.getLogger(__name__)
_CTX = multiprocessing.get_context("spawn")
SPAWN_TIMEOUT = 15.0


class _Handle:
    """One worker process and its pipe; used only with `ProxyControl._lock` held."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self._seq = 0

    def spawn(self, timeout: float) -> None:
        parent, child = _CTX.Pipe()
        process = _CTX.Process(
            target=worker.run, args=(child,), name=f"offload-worker-{self.index}", daemon=True
        )
        process.start()
        child.close()
        self.process, self.conn = process, parent
        self._seq = 0
        self.wait(0, timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def send(self, kind: str, *args: object) -> int:
        assert self.conn is not None
        self._seq += 1
        try:
            self.conn.send((kind, self._seq, *args))
        except OSError as exc:
            raise WorkerExited(str(exc)) from exc
        return self._seq

    def wait(self, seq: int, timeout: float) -> object:
        """The reply to request `seq`; older replies (after a timeout) are dropped."""
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                ready = remaining > 0 and self.conn.poll(remaining)
                if ready:
                    got, payload = self.conn.recv()
            except (EOFError, OSError) as exc:
                raise WorkerExited(str(exc)) from exc
            if not ready:
                raise ApplyTimeout(f"worker {self.index} did not answer within {timeout:g} s")
            if got == seq:
                return payload

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join(5)
        if self.conn is not None:
            self.conn.close()


class ProxyControl:
    """Start, update, observe and stop the worker processes of the data plane."""

    def __init__(self, workers: int, ack_timeout: float = 5.0) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._ack_timeout = ack_timeout
        self._handles = [_Handle(i) for i in range(workers)]
        self._lock = threading.RLock()
        self._snapshot = Snapshot(revision=0)
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

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
        """Hand `snapshot` to every worker and wait until all acknowledge it.

        Raises ApplyError naming every listener some worker could not apply (the
        rest is applied and serving), or ApplyTimeout when a worker does not answer.
        """
        with self._lock:
            self._require_started()
            self._snapshot = snapshot
            failures: dict[str, str] = {}
            pending: list[tuple[_Handle, int]] = []
            for handle in self._handles:
                try:
                    pending.append((handle, handle.send("apply", snapshot)))
                except WorkerExited:
                    failures.update(self._restart(handle))
            for handle, seq in pending:
                try:
                    result = handle.wait(seq, self._ack_timeout)
                except WorkerExited:
                    result = self._restart(handle)
                assert isinstance(result, dict)
                failures.update(result)
            if failures:
                raise ApplyError(failures)

    def stats(self) -> ProxyStats:
        """Counters of every listener, summed over the workers."""
        self._require_started()
        with self._lock:
            self._require_started()
            total = ProxyStats()
            for handle in self._handles:
                try:
                    part = handle.wait(handle.send("stats"), self._ack_timeout)
                except WorkerExited:
                    continue
                assert isinstance(part, ProxyStats)
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
                    handle.wait(handle.send("ping"), self._ack_timeout)
                except (WorkerExited, ApplyTimeout):
                    return False
            return True

    def stop(self, drain_timeout: float) -> None:
        """Stop accepting at once, let open connections finish up to `drain_timeout`, end."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        with self._lock:
            for handle in self._handles:
                if handle.alive():
                    try:
                        handle.wait(handle.send("stop", drain_timeout), self._ack_timeout)
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

    def _restart(self, handle: _Handle) -> dict[str, str]:
        """Replace a dead worker and give it the current snapshot; returns its failures."""
        handle.kill()
        handle.spawn(max(self._ack_timeout, SPAWN_TIMEOUT))
        result = handle.wait(handle.send("apply", self._snapshot), self._ack_timeout)
        assert isinstance(result, dict)
        return result

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            sentinels = [h.process.sentinel for h in self._handles if h.process is not None]
            wait(sentinels, timeout=0.2)
            for handle in self._handles:
                if not self._stopping.is_set() and not handle.alive() and not self._revive(handle):
                    self._stopping.wait(1.0)

    def _revive(self, handle: _Handle) -> bool:
        """Restart a dead worker under the lock; False when that failed (retry later)."""
        with self._lock:
            if self._stopping.is_set() or handle.alive():
                return True
            log.warning("offload worker %d died; restarting it", handle.index)
            try:
                failures = self._restart(handle)
            except (OffloadError, OSError) as exc:
                log.error("offload worker %d failed to restart: %s", handle.index, exc)
                return False
        for lid, reason in failures.items():
            log.error("restarted worker %d: listener %s on %s", handle.index, lid, reason)
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
