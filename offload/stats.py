"""Per-listener counters kept by each worker and summed by the parent (`offload.export`
turns them into Prometheus families).

Workers mutate `ListenerStats` in place (plain int attributes, no locks: one thread);
`ProxyStats` is the picklable, immutable sum handed to the control plane.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field

HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# `rate_limited`: closed at accept, beyond the listener's Cps or MaxConnections.
FAILURE_REASONS = ("timeout", "tls_error", "client_cert", "backend_unavailable", "rate_limited")


class ListenerStats:
    """Mutable counters of one listener inside one worker."""

    __slots__ = (
        "active", "total", "bytes_in", "bytes_out", "failures", "buckets", "hs_sum", "resumptions",
    )

    def __init__(self) -> None:
        self.active = 0
        self.total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self.buckets = [0] * (len(HANDSHAKE_BUCKETS) + 1)
        self.hs_sum = 0.0
        self.resumptions = 0

    def observe_handshake(self, seconds: float) -> None:
        """Count one completed handshake of `seconds` in the histogram."""
        self.buckets[bisect.bisect_left(HANDSHAKE_BUCKETS, seconds)] += 1
        self.hs_sum += seconds

    def freeze(self) -> ListenerCounters:
        """An immutable copy to send to the parent."""
        return ListenerCounters(
            active=self.active,
            total=self.total,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            failures=tuple(self.failures[r] for r in FAILURE_REASONS),
            buckets=tuple(self.buckets),
            handshake_sum=self.hs_sum,
            resumptions=self.resumptions,
        )


@dataclass(frozen=True)
class ListenerCounters:
    """One listener's counters; `failures` follows FAILURE_REASONS, `buckets` are per-bucket
    (not cumulative) counts for HANDSHAKE_BUCKETS plus +Inf; `resumptions` are the completed
    handshakes that resumed a session."""

    active: int = 0
    total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    failures: tuple[int, ...] = (0,) * len(FAILURE_REASONS)
    buckets: tuple[int, ...] = (0,) * (len(HANDSHAKE_BUCKETS) + 1)
    handshake_sum: float = 0.0
    resumptions: int = 0

    def __add__(self, other: ListenerCounters) -> ListenerCounters:
        return ListenerCounters(
            active=self.active + other.active,
            total=self.total + other.total,
            bytes_in=self.bytes_in + other.bytes_in,
            bytes_out=self.bytes_out + other.bytes_out,
            failures=tuple(a + b for a, b in zip(self.failures, other.failures, strict=True)),
            buckets=tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            handshake_sum=self.handshake_sum + other.handshake_sum,
            resumptions=self.resumptions + other.resumptions,
        )

    def failure(self, reason: str) -> int:
        """Handshake failures counted for `reason` (one of FAILURE_REASONS)."""
        return self.failures[FAILURE_REASONS.index(reason)]

    @property
    def handshakes(self) -> int:
        """Completed handshakes (the histogram's count)."""
        return sum(self.buckets)


@dataclass(frozen=True)
class ProxyStats:
    """Counters by listener id, over every worker; removed listeners may stay.

    `backends`: whether each health-checked server is up, by (server group id, `ip:port`);
    summed over workers, a server is up only when every worker that checks it sees it up.
    """

    listeners: dict[str, ListenerCounters] = field(default_factory=dict)
    backends: dict[tuple[str, str], bool] = field(default_factory=dict)

    def __add__(self, other: ProxyStats) -> ProxyStats:
        merged = dict(self.listeners)
        for lid, counters in other.listeners.items():
            merged[lid] = merged[lid] + counters if lid in merged else counters
        up = dict(self.backends)
        for key, state in other.backends.items():
            up[key] = up.get(key, True) and state
        return ProxyStats(merged, up)

    def retired(self) -> ProxyStats:
        """These counters once their worker is gone: totals kept, no connection open, and
        no server state (a gone worker's view is no longer anyone's)."""
        return ProxyStats(
            {lid: dataclasses.replace(c, active=0) for lid, c in self.listeners.items()}
        )

    def get(self, listener_id: str) -> ListenerCounters:
        """The counters of one listener (zeros when never seen)."""
        return self.listeners.get(listener_id, ListenerCounters())
