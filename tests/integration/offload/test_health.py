"""Backend health checks (SPEC §4): TCP checks mark servers down and up, clients go only to
servers up, and `certwatch_offload_backend_up` shows the state.

The checked server `127.0.0.2` accepts clients on its data port throughout; only its health
check port (`connect_port`, shared by the group) stops or starts answering. So a client that
reached it while it was down would be seen (by its greeting), not hidden by failover.
"""

from __future__ import annotations

import ssl
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from offload.echo import EchoServer
from offload.export import OffloadCollector
from offload.spec import Backend, HealthCheck, ListenerSpec
from offload.workers import ProxyControl
from tests.certfactory import Pki
from tests.integration.offload.conftest import client_context, listener, snapshot, tls_connect
from tests.support import free_port

INTERVAL = 0.3
HEALTHY, UNHEALTHY = 3, 3
# Time a state change may take beyond its thresholds: polling the workers' stats (every
# 50 ms, each a round trip to two processes) on a shared 2-core machine.
SLACK = 0.3
GROUP = "sgp-00000000000000aa"


@pytest.fixture
def check_port() -> int:
    """A port free on 127.0.0.1 and 127.0.0.2: the group's health check port."""
    return free_port()


@pytest.fixture
def live() -> Iterator[EchoServer]:
    """Server A on 127.0.0.1, greeting b"A"."""
    with EchoServer(greeting=b"A") as server:
        yield server


@pytest.fixture
def checked() -> Iterator[EchoServer]:
    """Server B on 127.0.0.2, greeting b"B"; its data port always accepts."""
    with EchoServer(host="127.0.0.2", greeting=b"B") as server:
        yield server


def _spec(pki: Pki, check_port: int, *servers: EchoServer) -> ListenerSpec:
    check = HealthCheck(
        interval=INTERVAL, connect_timeout=INTERVAL, healthy_threshold=HEALTHY,
        unhealthy_threshold=UNHEALTHY, connect_port=check_port,
    )
    return listener(
        pki.leaf("health.example.com"),
        tuple(Backend(s.host, s.port) for s in servers),
        server_group_id=GROUP,
        health_check=check,
    )


def _up(control: ProxyControl, server: EchoServer) -> bool | None:
    """Whether `server` is up as every worker sees it (None: not checked)."""
    return control.stats().backends.get((GROUP, f"{server.host}:{server.port}"))


def _seconds_until(control: ProxyControl, server: EchoServer, up: bool, limit: float) -> float:
    """Seconds until `server`'s state is `up` (fails the test after `limit`)."""
    started = time.monotonic()
    while _up(control, server) is not up:
        elapsed = time.monotonic() - started
        assert elapsed < limit, f"{server.host}:{server.port} not {'up' if up else 'down'}"
        time.sleep(0.05)
    return time.monotonic() - started


def _greetings(port: int, n: int) -> Counter[bytes]:
    """Which server each of `n` TLS clients reached (its one-byte greeting)."""
    seen: Counter[bytes] = Counter()
    for _ in range(n):
        with tls_connect(port, client_context()) as sock:
            seen[sock.recv(1)] += 1
    return seen


def _backend_up_samples(control: ProxyControl) -> dict[str, float]:
    """`certwatch_offload_backend_up` by `backend` label, as /metrics exports it."""
    registry = CollectorRegistry()
    registry.register(OffloadCollector(control))
    samples = {}
    for family in registry.collect():
        if family.name == "certwatch_offload_backend_up":
            for sample in family.samples:
                assert sample.labels["server_group_id"] == GROUP
                samples[sample.labels["backend"]] = sample.value
    assert b"certwatch_offload_backend_up{" in generate_latest(registry)
    return samples


def test_dead_backend_gets_no_client_until_it_is_healthy_again(
    control: ProxyControl, pki: Pki, live: EchoServer, checked: EchoServer, check_port: int
) -> None:
    """A server whose check port refuses is down within UnhealthyThreshold intervals and gets
    no client while down (every client reaches the live one, none fails); once its check port
    answers it is up again after HealthyThreshold successes, not before, and gets clients."""
    with EchoServer(port=check_port):  # the live server's health check port
        spec = _spec(pki, check_port, live, checked)
        started = time.monotonic()
        control.apply(snapshot(spec))
        _seconds_until(control, checked, False, limit=10)
        assert time.monotonic() - started <= UNHEALTHY * INTERVAL + SLACK
        assert _up(control, live) is True
        assert _backend_up_samples(control) == {
            f"127.0.0.1:{live.port}": 1.0, f"127.0.0.2:{checked.port}": 0.0,
        }
        assert _greetings(spec.port, 40) == {b"A": 40}
        counters = control.stats().get(spec.listener_id)
        assert sum(counters.failures) == 0 and counters.handshakes == 40

        with EchoServer(host="127.0.0.2", port=check_port):
            up_after = _seconds_until(control, checked, True, limit=10)
            assert (HEALTHY - 1) * INTERVAL - 0.05 <= up_after <= HEALTHY * INTERVAL + SLACK
            seen = _greetings(spec.port, 40)
            assert seen[b"A"] + seen[b"B"] == 40 and seen[b"B"] >= 10
            assert _backend_up_samples(control)[f"127.0.0.2:{checked.port}"] == 1.0


def test_all_backends_down_closes_the_client_and_counts_backend_unavailable(
    control: ProxyControl, pki: Pki, checked: EchoServer, check_port: int
) -> None:
    """With every server down by its checks, a client is closed after its handshake, though
    the server's data port accepts, and backend_unavailable is counted; the gauge shows 0."""
    spec = _spec(pki, check_port, checked)
    control.apply(snapshot(spec))
    _seconds_until(control, checked, False, limit=10)
    assert _backend_up_samples(control) == {f"127.0.0.2:{checked.port}": 0.0}
    for _ in range(3):
        with tls_connect(spec.port, client_context()) as sock:
            sock.settimeout(5)
            try:
                assert sock.recv(1) == b""
            except (ConnectionResetError, ssl.SSLError):
                pass
    counters = control.stats().get(spec.listener_id)
    assert counters.failure("backend_unavailable") == 3
    assert counters.bytes_out == 0


def test_without_health_checks_no_state_is_exported(
    control: ProxyControl, pki: Pki, live: EchoServer
) -> None:
    """A group without HealthCheckConfig is not checked: it gets clients, and no gauge."""
    spec = listener(pki.leaf("nocheck.example.com"), (Backend(live.host, live.port),))
    control.apply(snapshot(spec))
    assert _greetings(spec.port, 3) == {b"A": 3}
    assert control.stats().backends == {}
