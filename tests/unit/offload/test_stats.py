"""Counters: histogram buckets, summing across workers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from offload.export import OffloadCollector
from offload.stats import HANDSHAKE_BUCKETS, ListenerStats, ProxyStats
from offload.workers import ProxyControl


def test_handshake_lands_in_its_bucket() -> None:
    """A 3 ms handshake counts in the 5 ms bucket; the sum adds up."""
    stats = ListenerStats()
    stats.observe_handshake(0.003)
    stats.observe_handshake(60.0)
    frozen = stats.freeze()
    assert frozen.buckets[HANDSHAKE_BUCKETS.index(0.005)] == 1
    assert frozen.buckets[-1] == 1
    assert frozen.handshakes == 2
    assert frozen.handshake_sum == 60.003


def test_stats_sum_over_workers() -> None:
    """Two workers' counters add up per listener; listeners only one saw are kept."""
    one, two = ListenerStats(), ListenerStats()
    one.total, one.bytes_in, one.failures["timeout"], one.resumptions = 2, 10, 1, 1
    two.total, two.bytes_out, two.failures["timeout"], two.resumptions = 3, 7, 2, 2
    total = ProxyStats({"a": one.freeze()}) + ProxyStats({"a": two.freeze(), "b": two.freeze()})
    assert total.get("a").total == 5
    assert (total.get("a").bytes_in, total.get("a").bytes_out) == (10, 7)
    assert total.get("a").failure("timeout") == 3
    assert total.get("a").resumptions == 3
    assert total.get("b").total == 3
    assert total.get("missing").total == 0


def test_backend_is_up_only_where_every_worker_sees_it_up() -> None:
    """Summed over workers a server is up only if every worker checking it sees it up; a
    retired worker's view of the servers is dropped, its counters kept."""
    one = ProxyStats(backends={("sgp-1", "10.0.0.1:80"): True, ("sgp-1", "10.0.0.2:80"): True})
    two = ProxyStats(backends={("sgp-1", "10.0.0.1:80"): False, ("sgp-2", "10.0.0.3:80"): True})
    assert (one + two).backends == {
        ("sgp-1", "10.0.0.1:80"): False,
        ("sgp-1", "10.0.0.2:80"): True,
        ("sgp-2", "10.0.0.3:80"): True,
    }
    assert two.retired().backends == {}


def test_collector_of_a_proxy_not_running_exports_empty_families() -> None:
    """Registering and scraping before start() works: the families are there, without samples."""
    registry = CollectorRegistry()
    registry.register(OffloadCollector(ProxyControl(workers=1)))
    text = generate_latest(registry).decode()
    for name in (
        "certwatch_offload_connections_active gauge",
        "certwatch_offload_connections_total counter",
        "certwatch_offload_handshake_failures_total counter",
        "certwatch_offload_bytes_total counter",
        "certwatch_offload_handshake_duration_seconds histogram",
        "certwatch_offload_tls_resumptions_total counter",
    ):
        assert f"# TYPE {name}" in text
    assert "listener_id=" not in text
