"""Scans against real TLS listeners served by the offload proxy, and external endpoints."""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from certwatch.api.http import create_app
from certwatch.app.scheduler import ScanScheduler, scheduled_scan
from certwatch.app.service import Service
from certwatch.config import ScanConfig
from certwatch.scan.probes import probe_target
from certwatch.store.models import Alert, Certificate, ProbeResult, ScanRun
from offload.echo import EchoServer
from offload.export import OffloadCollector
from offload.workers import ProxyControl
from tests.certfactory import Pki, issue, make_pki
from tests.integration.conftest_monitoring import (
    add_listener,
    make_service,
    tls_server,
    upload,
)
from tests.support import free_port

SPEC_METRICS = (
    "certwatch_certificate_not_after_timestamp_seconds",
    "certwatch_chain_certificate_not_after_timestamp_seconds",
    "certwatch_certificate_not_before_timestamp_seconds",
    "certwatch_listener_certificate_not_after_timestamp_seconds",
    "certwatch_probe_success",
    "certwatch_probe_certificate_not_after_timestamp_seconds",
    "certwatch_probe_chain_complete",
    "certwatch_probe_matches_configured",
    "certwatch_probe_timestamp_seconds",
    "certwatch_scan_last_success_timestamp_seconds",
    "certwatch_scan_duration_seconds_bucket",
    "certwatch_alerts_sent_total",
    "certwatch_alert_delivery_failures_total",
)


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A root → intermediate PKI."""
    return make_pki("scan test")


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyControl]:
    """One real proxy worker; each test's service applies its own listeners."""
    with ProxyControl(1) as control:
        yield control


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    """An echo backend."""
    with EchoServer() as server:
        yield server


@pytest.fixture
def service(tmp_path: Path, proxy: ProxyControl, pki: Pki) -> Iterator[Service]:
    """A service on a fresh store driving the real proxy, trusting the PKI's root."""
    svc = make_service(tmp_path, data_plane=proxy, scan={"probe_timeout": 3})
    upload(svc, pki.root, cert_type="Ca")
    yield svc
    svc.close()


def probes(service: Service) -> dict[tuple[str, str], ProbeResult]:
    """The stored probe results by (target, server name)."""
    with Session(service.engine) as session:
        return {(r.target, r.server_name): r for r in session.exec(select(ProbeResult))}


def scrape(service: Service) -> str:
    """GET /metrics from the service's API."""
    with TestClient(create_app(service)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


def test_probes_every_served_name(service: Service, pki: Pki, echo: EchoServer) -> None:
    """Each DNS name (wildcards via a label) and no-SNI is probed; all verify and match."""
    default = upload(service, pki.leaf("www.shop.test", "shop.test"))
    extra = upload(service, pki.leaf("*.api.test"))
    port = free_port()
    listener_id = add_listener(service, default, port, echo.port)
    service.call(
        "AssociateAdditionalCertificatesWithListener",
        {"ListenerId": listener_id, "AdditionalCertificateIds": [extra]},
    )
    report = service.scanner.run()
    seen = probes(service)
    assert set(seen) == {
        (listener_id, name) for name in ("www.shop.test", "shop.test", "probe.api.test", "")
    }
    assert (report.probes_run, report.probes_failed) == (4, 0)
    assert all(r.success and r.chain_complete and r.matches_configured for r in seen.values())
    wildcard = seen[(listener_id, "probe.api.test")]
    with Session(service.engine) as session:
        extra_row = session.get(Certificate, extra)
        assert extra_row is not None
    assert wildcard.served_fingerprint == extra_row.fingerprint
    text = scrape(service)
    assert (
        f'certwatch_probe_success{{server_name="probe.api.test",target="{listener_id}"}} 1.0'
        in text
    )


def test_incomplete_chain_is_reported(service: Service, pki: Pki, echo: EchoServer) -> None:
    """A leaf uploaded without its intermediate is served alone: chain_complete is 0."""
    lonely = upload(service, pki.leaf("alone.test"), chain=False)
    listener_id = add_listener(service, lonely, free_port(), echo.port)
    service.scanner.run()
    result = probes(service)[(listener_id, "alone.test")]
    assert result.success and not result.chain_complete and result.error
    assert (
        f'certwatch_probe_chain_complete{{server_name="alone.test",target="{listener_id}"}} 0.0'
        in scrape(service)
    )


def test_served_certificate_not_the_configured_one(tmp_path: Path, pki: Pki) -> None:
    """A listener whose port serves another certificate is flagged served≠configured."""
    other = pki.leaf("www.drift.test", days=40)
    port = free_port()
    store_only = make_service(tmp_path / "store", scan={"targets": [f"127.0.0.1:{port}"]})
    upload(store_only, pki.root, cert_type="Ca")
    listener_id = add_listener(store_only, upload(store_only, pki.leaf("www.drift.test")), port)
    with tls_server(other, tmp_path, port):
        store_only.scanner.run()
    seen = probes(store_only)
    text = scrape(store_only)
    store_only.close()
    drift = seen[(listener_id, "www.drift.test")]
    assert drift.success and drift.matches_configured is False
    labels = f'listener_id="{listener_id}",server_name="www.drift.test"'
    assert f"certwatch_probe_matches_configured{{{labels}}} 0.0" in text
    external = seen[(f"127.0.0.1:{port}", "")]
    assert external.success and external.listener_id is None
    assert external.served_fingerprint == other.fingerprint


def test_external_target_with_sni(tmp_path: Path, pki: Pki) -> None:
    """A `host:port/name` scan target is probed with that SNI and its chain verified."""
    served = pki.leaf("ext.example.test", days=10)
    with tls_server(served, tmp_path) as port:
        target = f"127.0.0.1:{port}"
        svc = make_service(
            tmp_path / "s", scan={"targets": [f"{target}/ext.example.test"]}
        )
        upload(svc, pki.root, cert_type="Ca")
        report = svc.scanner.run()
        seen = probes(svc)
        text = scrape(svc)
        svc.close()
    result = seen[(target, "ext.example.test")]
    assert result.success and result.chain_complete and result.served_not_after is not None
    assert (report.probes_run, report.probes_failed) == (1, 0)
    assert (
        f'certwatch_probe_certificate_not_after_timestamp_seconds{{server_name="ext.example.test",target="{target}"}}'
        in text
    )


def test_scan_targets_alert_at_their_own_thresholds(tmp_path: Path, pki: Pki) -> None:
    """A target's certificate alerts once at its own thresholds, as `srv-…`; a target with
    thresholds below its days left stays silent, and `/metrics` exports both thresholds."""
    ten_days, calm = pki.leaf("ten.example.test", days=10), pki.leaf("calm.test", days=10)
    with tls_server(ten_days, tmp_path / "a") as port_a, tls_server(calm, tmp_path / "b") as port_b:
        targets = [
            f"127.0.0.1:{port_a}/ten.example.test",
            {"address": f"127.0.0.1:{port_b}", "server_name": "calm.test", "thresholds_days": [5]},
        ]
        svc = make_service(tmp_path / "s", scan={"targets": targets})
        first = svc.scanner.run()
        second = svc.scanner.run()
        text = scrape(svc)
        with Session(svc.engine) as session:
            alerts = list(session.exec(select(Alert)))
        svc.close()
    assert (first.alerts_sent, second.alerts_sent) == (1, 0)
    (alert,) = alerts
    assert alert.certificate_id == f"srv-{ten_days.fingerprint[:16]}"
    assert alert.title == "ten.example.test expires within 30 days"
    assert alert.listener_ids == [f"127.0.0.1:{port_a}"] and alert.delivered
    assert f"scan target 127.0.0.1:{port_a}" in alert.body
    calm_id, ten_id = f"srv-{calm.fingerprint[:16]}", alert.certificate_id
    assert (
        f'certwatch_certificate_alert_threshold_seconds{{certificate_id="{calm_id}",'
        f'server_name="calm.test",target="127.0.0.1:{port_b}",threshold="5"}} 432000.0'
    ) in text
    assert (
        f'certwatch_certificate_alert_threshold_seconds{{certificate_id="{ten_id}",'
        f'server_name="ten.example.test",target="127.0.0.1:{port_a}",threshold="30"}} 2.592e+06'
    ) in text


def test_unreachable_listener_is_a_failed_probe(tmp_path: Path, pki: Pki) -> None:
    """A running listener nobody serves is a failed probe, not a failed scan."""
    svc = make_service(tmp_path)
    listener_id = add_listener(svc, upload(svc, pki.leaf("down.test")), free_port())
    report = svc.scanner.run()
    result = probes(svc)[(listener_id, "")]
    svc.close()
    assert report.probes_failed == report.probes_run == 2
    assert not result.success and "cannot connect" in (result.error or "")


def test_expired_certificate_stays_in_metrics(service: Service, pki: Pki, echo: EchoServer) -> None:
    """An expired CA certificate in use stays in /metrics and alerts as expired."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    expired_ca = issue(common_name="Old Client CA", ca=True, not_before=start, days=-2)
    ca_id = upload(service, expired_ca, cert_type="Ca")
    leaf = upload(service, pki.leaf("mtls.test"))
    listener_id = add_listener(
        service, leaf, free_port(), echo.port, CaEnabled=True, CaCertificateIds=[ca_id]
    )
    first = service.scanner.run()
    service.scanner.run()
    alerts = service.call("ListAlerts", {"CertificateId": ca_id})["Alerts"]
    text = scrape(service)
    assert first.certificates["Expired"] == 1
    assert [a["Threshold"] for a in alerts] == ["expired"]
    assert alerts[0]["ListenerIds"] == [listener_id]
    assert f'listener_id="{listener_id}"' in text and f'certificate_id="{ca_id}"' in text
    assert 'role="ca"' in text


def test_metrics_expose_the_spec_names(service: Service, pki: Pki, proxy: ProxyControl) -> None:
    """/metrics names every SPEC §6 series, the offload ones included."""
    listener_id = add_listener(service, upload(service, pki.leaf("names.test")), free_port())
    service.registry.register(OffloadCollector(proxy))
    service.monitoring.rotations.labels(listener_id=listener_id, result="Applied").inc()
    service.scanner.run()
    text = scrape(service)
    for name in (*SPEC_METRICS, "certwatch_offload_connections_total"):
        assert f"\n{name}" in text, name
    rotation = f'certwatch_rotations_total{{listener_id="{listener_id}",result="Applied"}} 1.0'
    assert rotation in text


def test_failing_hook_does_not_stop_the_scan(service: Service) -> None:
    """A before-scan hook that raises is logged; the next hooks and the scan still run."""
    called: list[str] = []

    def broken(_: Service) -> None:
        raise RuntimeError("staging directory unreadable")

    service.before_scan.extend([broken, lambda s: called.append("intake")])
    report = service.scanner.run()
    assert called == ["intake"] and report.scan_id.startswith("scn-")


def test_scheduler_scans_at_start(service: Service) -> None:
    """The schedule runs a scan as soon as it starts, then waits for the interval."""
    scheduler = ScanScheduler(service)
    scheduler.start()
    deadline = time.monotonic() + 10
    runs: list[ScanRun] = []
    while time.monotonic() < deadline and not runs:
        with Session(service.engine) as session:
            runs = list(session.exec(select(ScanRun).where(ScanRun.success)))
        time.sleep(0.05)
    next_run = scheduler.next_run
    scheduler.stop()
    assert len(runs) == 1 and next_run is not None


def test_scheduled_scan_only_on_the_leader(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job does nothing on a node that is not the leader."""
    monkeypatch.setattr(service.node, "is_leader", lambda: False)
    assert scheduled_scan(service) is None
    with Session(service.engine) as session:
        assert list(session.exec(select(ScanRun))) == []


@pytest.mark.parametrize(
    ("text", "host", "port", "name"),
    [
        ("example.com:443", "example.com", 443, "example.com"),
        ("10.0.0.1:8443", "10.0.0.1", 8443, None),
        ("10.0.0.1:8443/api.example.com", "10.0.0.1", 8443, "api.example.com"),
        ("example.com:443/", "example.com", 443, None),
        ("[::1]:8443/v6.example.com", "::1", 8443, "v6.example.com"),
    ],
)
def test_scan_target_syntax(text: str, host: str, port: int, name: str | None) -> None:
    """`host:port[/sni]`: a DNS host is its own SNI, an IP sends none, `/name` overrides."""
    target = probe_target(ScanConfig(targets=[text]).targets[0])
    assert (target.host, target.port, target.server_name) == (host, port, name)
    assert target.target == text.partition("/")[0]


def test_silent_target_times_out(tmp_path: Path) -> None:
    """An endpoint that accepts TCP but never answers TLS fails within `scan.probe_timeout`."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        target = f"127.0.0.1:{silent.getsockname()[1]}/silent.test"
        svc = make_service(tmp_path, scan={"targets": [target], "probe_timeout": 0.5})
        start = time.monotonic()
        report = svc.scanner.run()
        elapsed = time.monotonic() - start
        result = probes(svc)[(target.partition("/")[0], "silent.test")]
        svc.close()
    assert report.probes_failed == 1 and elapsed < 5
    assert not result.success and "within 0.5s" in (result.error or "")
