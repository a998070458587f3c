"""ACME renewal that never stops, against a real Pebble: rotation onto the listener, backoff with
one alert per failure streak (to a real webhook receiver) that survives a restart, renewal
information (RFC 9773) through an HTTPS front that adds it, and a `kill -9` mid-order."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trustme
from cryptography import x509
from prometheus_client import generate_latest
from sqlmodel import select

from certwatch.acme import ari
from certwatch.acme.renewal import renew_at, renew_due
from certwatch.app.service import Service
from certwatch.pki.devpki import make_pki
from certwatch.store.db import transaction
from certwatch.store.models import (
    AcmeAccount,
    AcmeRenewalInfo,
    Certificate,
    CertificateRequest,
)
from offload.echo import EchoServer
from tests.integration.ari_front import AriFront
from tests.integration.conftest_monitoring import HttpReceiver, add_listener, make_service
from tests.integration.pebble import (
    HOOK,
    Pebble,
    PebbleRun,
    call,
    issued,
    serve_acme,
    served_leaf,
)
from tests.integration.relay import Relay
from tests.integration.servers import ServeProcess
from tests.support import eventually, free_port

RENEWAL_METRIC = "certwatch_certificate_renewal_timestamp_seconds"

SLOW_HOOK = """#!{python}
import json, pathlib, sys, time, urllib.request
verb, name, value = sys.argv[1:4]
marks = pathlib.Path("{marks}")
if verb == "set" and not (marks / "slept").exists():
    (marks / "slept").touch()
    time.sleep(60)
path, body = ("/set-txt", {{"host": name + ".", "value": value}}) if verb == "set" else (
    "/clear-txt", {{"host": name + "."}})
request = urllib.request.Request("{url}" + path, data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(request, timeout=10).read()
"""


def _hook(tmp_path: Path, pebble: Pebble, template: str = HOOK) -> Path:
    hook = tmp_path / "dns-hook"
    hook.write_text(
        template.format(python=sys.executable, url=pebble.challtestsrv_url, marks=tmp_path)
    )
    hook.chmod(0o700)
    return hook


def _service(
    tmp_path: Path, pebble: Pebble, directory_url: str, ca_bundle: Path, **sections: Any
) -> Service:
    """An in-process Service ordering with dns-01 (the challtestsrv hook) from `directory_url`."""
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem)
    acme = {
        "directory_url": directory_url,
        "ca_bundle": str(ca_bundle),
        "challenge": "dns-01",
        "dns_hook": str(_hook(tmp_path, pebble)),
        "key_type": "ec-p256",
    }
    return make_service(
        tmp_path / "data", acme=acme, scan={"trusted_ca_file": str(root)}, **sections
    )


def _request(service: Service, request_id: str) -> dict[str, Any]:
    view = service.call("GetCertificateRequest", {"CertificateRequestId": request_id})
    return dict(view["CertificateRequest"])


def _row(service: Service, request_id: str) -> CertificateRequest:
    with transaction(service.engine) as session:
        row = session.get(CertificateRequest, request_id)
        assert row is not None
        session.expunge(row)
        return row


def _issue(service: Service, name: str) -> str:
    """Request `name`, run the order now, and return the issued certificate's id."""
    answer = service.call("RequestCertificate", {"DomainNames": [name]})
    assert service.acme.run_due() == 1
    request = _request(service, answer["CertificateRequestId"])
    assert request["Status"] == "Issued", request
    return str(request["CertificateId"])


def _leaf(service: Service, certificate_id: str) -> x509.Certificate:
    with transaction(service.engine) as session:
        row = session.get(Certificate, certificate_id)
        assert row is not None
        return x509.load_pem_x509_certificate(row.chain_pem.encode())


def _renewal_metric(service: Service) -> dict[str, float]:
    """certificate id → value of the renewal-timestamp gauge, as /metrics exports it."""
    out = {}
    for line in generate_latest(service.registry).decode().splitlines():
        if line.startswith(RENEWAL_METRIC + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('certificate_id="')[1].split('"')[0]] = float(value)
    return out


@pytest.fixture
def front(pebble: Pebble, tmp_path: Path) -> Iterator[tuple[AriFront, Path]]:
    """The ARI front before Pebble, with its own HTTPS certificate; (front, its CA file)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "front-cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "front-key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "front-ca.pem"))
    base = pebble.directory_url.removesuffix("/dir")
    with AriFront(
        base, pebble.ca_bundle, tmp_path / "front-cert.pem", tmp_path / "front-key.pem"
    ) as running:
        yield running, tmp_path / "front-ca.pem"


def test_failing_renewal_backs_off_alerts_once_and_once_more_when_it_recovers(
    tmp_path: Path, pebble: Pebble
) -> None:
    """Pebble unreachable: two failed attempts, the second wait longer, ONE alert; a restart
    keeps streak and schedule; Pebble back: Issued and ONE recovery alert."""
    pebble_port = urlsplit(pebble.directory_url).port
    assert pebble_port is not None
    with HttpReceiver() as receiver, Relay(("127.0.0.1", pebble_port)) as relay:
        directory = f"https://127.0.0.1:{relay.port}/dir"
        alerts = {"urls": [receiver.url()]}
        service = _service(tmp_path, pebble, directory, pebble.ca_bundle, alerts=alerts)
        try:
            cert_id = _issue(service, "streak.example.test")
            relay.cut()
            request_id = service.call("RenewCertificate", {"CertificateId": cert_id})[
                "CertificateRequestId"
            ]
            assert service.acme.run_due() == 1
            first = _row(service, request_id)
            assert first.status == "Failed" and first.failures == 1
            first_wait = first.next_attempt_at - first.updated_at
            assert dt.timedelta(minutes=1) <= first_wait <= dt.timedelta(minutes=1.2)
            assert _request(service, request_id)["NextAttemptAt"] is not None
            assert service.acme.run_due() == 0, "attempted again before NextAttemptAt"
            service.acme.attempt(request_id)  # the runner's next attempt, without the wait
            second = _row(service, request_id)
            second_wait = second.next_attempt_at - second.updated_at
            assert second.failures == 2 and second_wait > first_wait
            assert dt.timedelta(minutes=2) <= second_wait <= dt.timedelta(minutes=2.4)
            service.acme.run_due()
            assert len(receiver.delivered) == 1, receiver.received
            alert = receiver.delivered[0]
            assert alert["title"].startswith("Renewal of streak.example.test is failing: ")
            assert request_id in alert["message"] and "AlertId: alr-" in alert["message"]
        finally:
            service.close()
        service = _service(tmp_path, pebble, directory, pebble.ca_bundle, alerts=alerts)
        try:
            assert service.acme.run_due() == 0, "a restart lost the backoff schedule"
            kept = _row(service, request_id)
            assert (kept.failures, kept.next_attempt_at) == (2, second.next_attempt_at)
            relay.restore()
            service.acme.attempt(request_id)
            service.acme.run_due()
            request = _request(service, request_id)
            assert request["Status"] == "Issued" and request["Renewal"], request
            titles = [payload["title"] for payload in receiver.delivered]
            assert len(titles) == 2, titles
            assert titles[1] == "Renewal of streak.example.test succeeded again"
        finally:
            service.close()


def test_renewal_information_schedules_the_renewal_and_the_order_names_what_it_replaces(
    tmp_path: Path, pebble: Pebble, front: tuple[AriFront, Path]
) -> None:
    """With renewalInfo: a future window is exported and waited for, Retry-After is honoured,
    a window that has come renews, and the new order `replaces` the old certificate."""
    server, front_ca = front
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    server.window = (now + dt.timedelta(days=10), now + dt.timedelta(days=12))
    server.retry_after = "7200"
    service = _service(tmp_path, pebble, server.directory_url, front_ca)
    try:
        cert_id = _issue(service, "ari.example.test")
        add_listener(service, cert_id, free_port())
        assert "replaces" not in server.orders[-1]
        old_ari_id = ari.cert_id(_leaf(service, cert_id))
        renew_due(service.node)
        assert server.asked == [old_ari_id]
        with transaction(service.engine) as session:
            info = session.get(AcmeRenewalInfo, cert_id)
            assert info is not None
            assert server.window[0] <= info.renew_at <= server.window[1]
            assert dt.timedelta(hours=1.9) < info.next_check_at - now < dt.timedelta(hours=2.1)
        assert _renewal_metric(service) == {cert_id: server.window[0].timestamp()}
        listed = service.call("ListCertificateRequests")["CertificateRequests"]
        assert len(listed) == 1, "renewed before the window"
        renew_due(service.node)
        assert len(server.asked) == 1, "asked again before Retry-After"
        server.window = (now - dt.timedelta(days=2), now - dt.timedelta(days=1))
        with transaction(service.engine) as session:
            info = session.get(AcmeRenewalInfo, cert_id)
            assert info is not None
            info.next_check_at = now - dt.timedelta(seconds=1)  # Retry-After has passed
            session.add(info)
        renew_due(service.node)
        assert len(server.asked) == 2
        assert service.acme.run_due() == 1
        renewal = service.call("ListCertificateRequests")["CertificateRequests"][0]
        assert renewal["Status"] == "Issued" and renewal["Renewal"], renewal
        assert server.orders[-1]["replaces"] == old_ari_id
    finally:
        service.close()


def test_a_refused_replaces_falls_back_to_a_plain_order(
    tmp_path: Path, pebble: Pebble, front: tuple[AriFront, Path]
) -> None:
    """The server answers `alreadyReplaced` to the order naming the old certificate: the
    renewal is ordered again without `replaces` and is Issued, not stuck."""
    server, front_ca = front
    now = dt.datetime.now(dt.UTC)
    server.window = (now - dt.timedelta(days=2), now - dt.timedelta(days=1))
    service = _service(tmp_path, pebble, server.directory_url, front_ca)
    try:
        cert_id = _issue(service, "replaced.example.test")
        server.refuse_replaces = True
        renew_due(service.node)
        assert service.acme.run_due() == 1
        renewal = service.call("ListCertificateRequests")["CertificateRequests"][0]
        assert renewal["Status"] == "Issued" and renewal["Renewal"], renewal
        assert ["replaces" in order for order in server.orders[1:]] == [True, False]
        assert server.orders[1]["replaces"] == ari.cert_id(_leaf(service, cert_id))
    finally:
        service.close()


def test_without_renewal_information_the_lifetime_rule_schedules_the_renewal(
    tmp_path: Path, pebble: Pebble
) -> None:
    """Pebble offers no renewalInfo: nothing is stored, the metric is `renew_at`, and the
    renewal is placed once that time has come (here `rotation.before_days` beyond the life)."""
    service = _service(tmp_path, pebble, pebble.directory_url, pebble.ca_bundle)
    try:
        cert_id = _issue(service, "plain.example.test")
        add_listener(service, cert_id, free_port())
        leaf = _leaf(service, cert_id)
        due = renew_at(leaf.not_valid_before_utc, leaf.not_valid_after_utc, 30)
        assert _renewal_metric(service) == {cert_id: due.timestamp()}
        renew_due(service.node)
        with transaction(service.engine) as session:
            assert session.get(AcmeRenewalInfo, cert_id) is None
        assert len(service.call("ListCertificateRequests")["CertificateRequests"]) == 1
    finally:
        service.close()
    lifetime = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days + 1
    service = _service(
        tmp_path, pebble, pebble.directory_url, pebble.ca_bundle,
        rotation={"before_days": lifetime},
    )
    try:
        renew_due(service.node)
        listed = service.call("ListCertificateRequests")["CertificateRequests"]
        assert [r["Renewal"] for r in listed].count(True) == 1, listed
    finally:
        service.close()


def _listener_with_placeholder(serve: ServeProcess, backend: int) -> tuple[str, int, str]:
    """A running listener serving an uploaded placeholder; (listener id, port, placeholder)."""
    placeholder = make_pki("renewal-test").leaf("placeholder.example.test", days=30)
    cert_id = call(
        serve, "UploadCertificate", CertificateName="placeholder", CertificateType="Server",
        Certificate=placeholder.chain_pem, PrivateKey=placeholder.key_pem,
    ).json()["CertificateId"]
    lb = call(serve, "CreateLoadBalancer", LoadBalancerName="lb").json()
    group = call(
        serve, "CreateServerGroup", ServerGroupName="echo",
        Servers=[{"ServerIp": "127.0.0.1", "Port": backend, "Weight": 100}],
    ).json()
    port = free_port()
    listener = call(
        serve, "CreateListener", LoadBalancerId=lb["LoadBalancerId"],
        ServerGroupId=group["ServerGroupId"], ListenerPort=port, CertificateIds=[cert_id],
    ).json()["ListenerId"]
    return listener, port, cert_id


def _serial(serve: ServeProcess, certificate_id: str) -> str:
    cert = call(serve, "GetCertificate", CertificateId=certificate_id).json()
    return str(cert["Certificate"]["SerialNumber"]).lower().lstrip("0")


def _served_serial(port: int, pebble: Pebble, name: str) -> str:
    try:
        served = served_leaf(port, pebble.root_pem, name)
    except (OSError, ValueError):
        return ""
    return str(served["serialNumber"]).lower().lstrip("0")


def test_renew_certificate_rotates_the_new_leaf_onto_the_listener_and_retires_the_old(
    tmp_path: Path, pebble: Pebble
) -> None:
    """`RenewCertificate` on a served managed certificate: the listener serves the new leaf, its
    history has the acme rotation old → new, the old one is off it, the metric moves on."""
    serve = serve_acme(tmp_path, pebble, "http-01")
    with EchoServer() as echo:
        try:
            listener, port, _ = _listener_with_placeholder(serve, echo.port)
            answer = call(
                serve, "RequestCertificate", DomainNames=["rotate.example.test"],
                ListenerId=listener,
            ).json()
            first = issued(serve, answer["CertificateRequestId"])
            assert first["Status"] == "Issued", (first, serve.output())
            old = first["CertificateId"]
            renewal = call(serve, "RenewCertificate", CertificateId=old).json()
            renewed = issued(serve, renewal["CertificateRequestId"])
            assert renewed["Status"] == "Issued" and renewed["Renewal"], (renewed, serve.output())
            new = renewed["CertificateId"]
            serial = _serial(serve, new)
            assert eventually(
                lambda: _served_serial(port, pebble, "rotate.example.test") == serial, 30
            ), serve.output()
            events = call(serve, "ListRotationEvents", ListenerId=listener).json()
            applied = [
                (e["OldCertificateId"], e["NewCertificateId"], e["Actor"])
                for e in events["RotationEvents"]
                if e["Result"] == "Applied"
            ]
            assert (old, new, "acme") in applied, events
            on_listener = call(
                serve, "ListListenerCertificates", ListenerId=listener
            ).json()["Certificates"]
            assert [c["CertificateId"] for c in on_listener] == [new]
            metrics = httpx.get(f"{serve.url}/metrics", timeout=10).text
            assert f'{RENEWAL_METRIC}{{certificate_id="{new}"}}' in metrics
            assert f'certificate_id="{old}"}}' not in metrics.split(RENEWAL_METRIC, 1)[1]
        finally:
            serve.stop()


def test_kill_9_during_an_order_ends_with_exactly_one_certificate_on_the_listener(
    tmp_path: Path, pebble: Pebble
) -> None:
    """`kill -9` of `certwatch serve` while the dns-01 hook runs: after restart the order is
    retried and Issued, the listener serves that one certificate, nothing is left behind."""
    hook = _hook(tmp_path, pebble, SLOW_HOOK)
    serve = serve_acme(tmp_path, pebble, "dns-01", dns_hook=str(hook))
    serve.stop()
    serve.start(new_session=True)
    with EchoServer() as echo:
        try:
            listener, port, placeholder = _listener_with_placeholder(serve, echo.port)
            answer = call(
                serve, "RequestCertificate", DomainNames=["crash.example.test"],
                ListenerId=listener,
            ).json()
            assert eventually(lambda: (tmp_path / "slept").exists(), 30), serve.output()
            serve.kill_group()
            serve.start(new_session=True)
            request = issued(serve, answer["CertificateRequestId"], limit=90)
            assert request["Status"] == "Issued", (request, serve.output())
            issued_id = request["CertificateId"]
            on_listener = call(
                serve, "ListListenerCertificates", ListenerId=listener
            ).json()["Certificates"]
            assert [c["CertificateId"] for c in on_listener] == [issued_id]
            managed = [
                c for c in call(serve, "ListCertificates").json()["Certificates"]
                if c.get("Managed")
            ]
            assert [c["CertificateId"] for c in managed] == [issued_id]
            requests = call(serve, "ListCertificateRequests").json()
            assert len(requests["CertificateRequests"]) == 1
            serial = _serial(serve, issued_id)
            assert eventually(
                lambda: _served_serial(port, pebble, "crash.example.test") == serial, 30
            ), serve.output()
            assert placeholder != issued_id
        finally:
            serve.kill_group()



def test_an_account_the_server_forgot_is_registered_again(tmp_path: Path) -> None:
    """A restarted Pebble knows no account any more: the next order meets
    accountDoesNotExist, registers a new account (one warning line) and is issued."""
    (tmp_path / "pebble").mkdir()
    run = PebbleRun(tmp_path / "pebble")
    first = run.start()
    try:
        service = _service(tmp_path, first, first.directory_url, first.ca_bundle)
        try:
            _issue(service, "before.example.test")
            run.stop()
            again = run.start()
            _hook(tmp_path, again)
            with transaction(service.engine) as session:
                (before,) = session.exec(select(AcmeAccount)).all()
                old_registration = before.registration
            _issue(service, "after.example.test")
            with transaction(service.engine) as session:
                (after,) = session.exec(select(AcmeAccount)).all()
                assert after.registration != old_registration
        finally:
            service.close()
    finally:
        run.stop()
