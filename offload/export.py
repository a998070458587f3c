"""The proxy's counters as the `certwatch_offload_*` Prometheus families of SPEC §6."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from offload.errors import OffloadError
from offload.stats import FAILURE_REASONS, HANDSHAKE_BUCKETS, ListenerCounters, ProxyStats
from offload.workers import ProxyControl


class _Families:
    """The SPEC §6 families, empty until filled."""

    def __init__(self) -> None:
        self.active = GaugeMetricFamily(
            "certwatch_offload_connections_active", "Open client connections.",
            labels=["listener_id"],
        )
        self.total = CounterMetricFamily(
            "certwatch_offload_connections", "Accepted client connections.",
            labels=["listener_id"],
        )
        self.failures = CounterMetricFamily(
            "certwatch_offload_handshake_failures",
            "Client connections that failed: TLS handshake or no backend reachable.",
            labels=["listener_id", "reason"],
        )
        self.traffic = CounterMetricFamily(
            "certwatch_offload_bytes", "Application bytes relayed (in = from clients).",
            labels=["listener_id", "direction"],
        )
        self.duration = HistogramMetricFamily(
            "certwatch_offload_handshake_duration_seconds",
            "Time from accept to completed TLS handshake.",
            labels=["listener_id"],
        )
        self.backend_up = GaugeMetricFamily(
            "certwatch_offload_backend_up",
            "1 when a health-checked backend server is up (as every worker sees it), else 0.",
            labels=["server_group_id", "backend"],
        )
        self.resumptions = CounterMetricFamily(
            "certwatch_offload_tls_resumptions",
            "Completed TLS handshakes that resumed a session (ticket).",
            labels=["listener_id"],
        )

    def add(self, lid: str, c: ListenerCounters) -> None:
        self.active.add_metric([lid], c.active)
        self.total.add_metric([lid], c.total)
        for reason, count in zip(FAILURE_REASONS, c.failures, strict=True):
            self.failures.add_metric([lid, reason], count)
        self.traffic.add_metric([lid, "in"], c.bytes_in)
        self.traffic.add_metric([lid, "out"], c.bytes_out)
        cumulative, buckets = 0, []
        for bound, count in zip([*HANDSHAKE_BUCKETS, float("inf")], c.buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        self.duration.add_metric([lid], buckets, c.handshake_sum)
        self.resumptions.add_metric([lid], c.resumptions)

    def add_backend(self, group: str, backend: str, up: bool) -> None:
        self.backend_up.add_metric([group, backend], 1 if up else 0)

    def __iter__(self) -> Iterator[Metric]:
        return iter((
            self.active, self.total, self.failures, self.traffic, self.duration,
            self.resumptions, self.backend_up,
        ))


class OffloadCollector(Collector):
    """Exports the `certwatch_offload_*` families of SPEC §6 from `ProxyControl.stats()`.

    A proxy that is not running (not started, stopped) exports the families without samples.
    """

    def __init__(self, control: ProxyControl) -> None:
        self._control = control

    def describe(self) -> Iterator[Metric]:
        """The families, without asking the workers (used at registration)."""
        return iter(_Families())

    def collect(self) -> Iterator[Metric]:
        """One scrape: ask every worker, yield the families."""
        families = _Families()
        try:
            stats = self._control.stats()
        except OffloadError:
            stats = ProxyStats()
        for lid, counters in sorted(stats.listeners.items()):
            families.add(lid, counters)
        for (group, backend), up in sorted(stats.backends.items()):
            families.add_backend(group, backend, up)
        yield from families
