"""Backend choice: smooth weighted round robin (as nginx), with failover order.

`candidates()` yields the weighted pick first, then every other backend once;
backends that recently refused or timed out go last, so a dead server costs
little while it stays down. Weight 0 drains a backend: it is never chosen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from offload.spec import Backend

DOWN_FOR = 5.0


class BackendPicker:
    """Weighted round robin state for one listener's backends (one per worker)."""

    __slots__ = ("_backends", "_current", "_total", "_down_until")

    def __init__(self, backends: tuple[Backend, ...]) -> None:
        self._backends = [b for b in backends if b.weight > 0]
        self._current = [0] * len(self._backends)
        self._total = sum(b.weight for b in self._backends)
        self._down_until = [0.0] * len(self._backends)

    def _pick(self) -> int:
        best = 0
        current = self._current
        for i, backend in enumerate(self._backends):
            current[i] += backend.weight
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return best

    def candidates(self) -> Iterator[tuple[int, Backend]]:
        """Backends to try for one client connection, each at most once, best first."""
        backends = self._backends
        n = len(backends)
        if n < 2:
            yield from enumerate(backends)
            return
        first = self._pick()
        now = time.monotonic()
        deferred = []
        for k in range(n):
            i = (first + k) % n
            if self._down_until[i] > now:
                deferred.append(i)
            else:
                yield i, backends[i]
        for i in deferred:
            yield i, backends[i]

    def mark_down(self, index: int) -> None:
        """Record that backend `index` failed to connect; it is tried last for a while."""
        self._down_until[index] = time.monotonic() + DOWN_FOR

    def mark_up(self, index: int) -> None:
        """Record that backend `index` accepted a connection."""
        self._down_until[index] = 0.0
