"""A listener's connection limits, as one worker enforces them at accept time.

`Cps` is a token bucket (as many tokens as a second's share, refilled continuously), so a
burst is admitted up to the share at once and then at the share's rate; `MaxConnections`
caps the connections open at once. The kernel spreads a listener's connections over the N
workers (SO_REUSEPORT), so each worker enforces its share of a limit, ceil(limit / N).
"""

from __future__ import annotations

import math

from offload.spec import ListenerSpec


def share(limit: int, workers: int) -> int:
    """One worker's share of a listener-wide limit (0: unlimited)."""
    return math.ceil(limit / max(workers, 1)) if limit > 0 else 0


class Admission:
    """One listener's limit state in one worker; survives in-place spec updates."""

    __slots__ = ("_workers", "_tokens", "_at")

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._tokens = 0.0
        self._at: float | None = None

    def admit(self, spec: ListenerSpec, active: int, now: float) -> bool:
        """Whether a connection accepted at `now` (loop time), with `active` open, is served."""
        cap = share(spec.max_connections, self._workers)
        if cap and active >= cap:
            return False
        rate = share(spec.cps, self._workers)
        if not rate:
            return True
        elapsed = 0.0 if self._at is None else now - self._at
        tokens = float(rate) if self._at is None else min(rate, self._tokens + elapsed * rate)
        self._at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
