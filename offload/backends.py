"""Backend choice: smooth weighted round robin (as nginx), with failover order.

`candidates()` yields the weighted pick first, then every other backend once; backends that
recently refused or timed out go last, so a dead server costs little while it stays down.
Weight 0 drains a backend: it is never chosen. A backend whose health checks
(`offload.health`) mark it down is no candidate at all: the round robin runs over the
backends up, and with none up there is no candidate (the client is closed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from offload.health import BackendHealth
from offload.spec import Backend

DOWN_FOR = 5.0


class BackendPicker:
    """Weighted round robin state for one listener's backends (one per worker)."""

    __slots__ = ("_backends", "_current", "_down_until", "_health")

    def __init__(
        self, backends: tuple[Backend, ...], health: Sequence[BackendHealth | None] = ()
    ) -> None:
        """`health[i]` is the checked state of `backends[i]` (None or missing: unchecked)."""
        states = [*health, *[None] * (len(backends) - len(health))]
        kept = [(b, h) for b, h in zip(backends, states, strict=False) if b.weight > 0]
        self._backends = [b for b, _ in kept]
        self._health = [h for _, h in kept] if any(h is not None for _, h in kept) else None
        self._current = [0] * len(self._backends)
        self._down_until = [0.0] * len(self._backends)

    def _eligible(self) -> list[int]:
        """The indices of the backends up (every one when none is checked)."""
        if self._health is None:
            return list(range(len(self._backends)))
        return [i for i, h in enumerate(self._health) if h is None or h.up]

    def _pick(self, eligible: list[int]) -> int:
        best, total = eligible[0], 0
        current, backends = self._current, self._backends
        for i in eligible:
            current[i] += backends[i].weight
            total += backends[i].weight
            if current[i] > current[best]:
                best = i
        current[best] -= total
        return best

    def candidates(self) -> Iterator[tuple[int, Backend]]:
        """Backends to try for one client connection, each at most once, best first."""
        backends = self._backends
        eligible = self._eligible()
        n = len(eligible)
        if n < 2:
            yield from ((i, backends[i]) for i in eligible)
            return
        first = eligible.index(self._pick(eligible))
        now = time.monotonic()
        deferred = []
        for k in range(n):
            i = eligible[(first + k) % n]
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
