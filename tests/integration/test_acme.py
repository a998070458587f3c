"""ACME against a real Pebble: `certwatch serve` orders, answers http-01 and dns-01 (through a
hook that drives pebble-challtestsrv), and serves what it got to a real TLS client."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwatch import errors
from certwatch.app.service import Service
from certwatch.clock import rfc3339
from certwatch.config import Config
from certwatch.pki.devpki import make_pki
from offload.echo import EchoServer
from tests.integration.pebble import HOOK, Pebble, call, issued, serve_acme, served_leaf
from tests.integration.servers import ServeProcess
from tests.support import eventually, free_port


@pytest.fixture(scope="module")
def http01_serve(
    tmp_path_factory: pytest.TempPathFactory, pebble: Pebble
) -> Iterator[ServeProcess]:
    """One `certwatch serve` with http-01 on Pebble, shared by the refusal cases (a refusal
    changes nothing, so they cannot disturb each other)."""
    serve = serve_acme(tmp_path_factory.mktemp("refusals"), pebble, "http-01")
    try:
        yield serve
    finally:
        serve.stop()


def test_http01_request_is_issued_and_enters_the_inventory_as_managed(
    tmp_path: Path, pebble: Pebble
) -> None:
    """An http-01 request ends Issued, and its certificate is Managed with the whole chain and
    its RenewalAt (a third of its lifetime left, or rotation.before_days if sooner)."""
    serve = serve_acme(tmp_path, pebble, "http-01")
    try:
        answer = call(serve, "RequestCertificate", DomainNames=["www.example.test"]).json()
        assert answer["Status"] == "Pending"
        assert answer["CertificateRequestId"].startswith("crq-")
        request = issued(serve, answer["CertificateRequestId"])
        assert request["Status"] == "Issued", (request, serve.output())
        cert = call(serve, "GetCertificate", CertificateId=request["CertificateId"]).json()
        assert cert["Certificate"]["Managed"] is True
        assert cert["Certificate"]["SubjectAlternativeNames"] == ["www.example.test"]
        assert cert["Certificate"]["ChainLength"] >= 2
        view = cert["Certificate"]
        not_before, not_after = (
            dt.datetime.fromisoformat(view[k].replace("Z", "+00:00"))
            for k in ("NotBefore", "NotAfter")
        )
        before_days = dt.timedelta(days=30)  # rotation.before_days, the default
        expected = min(not_after - (not_after - not_before) / 3, not_after - before_days)
        assert view["RenewalAt"] == rfc3339(expected)
        metrics = httpx.get(f"{serve.url}/metrics", timeout=10).text
        assert 'certwatch_acme_orders_total{result="issued"} 1.0' in metrics
    finally:
        serve.stop()


def test_issued_certificate_goes_onto_the_listener_and_chains_to_pebbles_root(
    tmp_path: Path, pebble: Pebble
) -> None:
    """With ListenerId the listener serves the issued leaf (verified against Pebble's root), and
    RenewCertificate rotates a renewed one onto it."""
    serve = serve_acme(tmp_path, pebble, "http-01", key_type="rsa-2048")
    demo = make_pki("acme-test")
    first = demo.leaf("shop.example.test", days=30)
    with EchoServer() as echo:
        try:
            cert_id = call(
                serve, "UploadCertificate", CertificateName="first", CertificateType="Server",
                Certificate=first.chain_pem, PrivateKey=first.key_pem,
            ).json()["CertificateId"]
            lb = call(serve, "CreateLoadBalancer", LoadBalancerName="lb").json()
            group = call(
                serve, "CreateServerGroup", ServerGroupName="echo",
                Servers=[{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 100}],
            ).json()
            port = free_port()
            listener = call(
                serve, "CreateListener", LoadBalancerId=lb["LoadBalancerId"],
                ServerGroupId=group["ServerGroupId"], ListenerPort=port, CertificateIds=[cert_id],
            ).json()["ListenerId"]
            answer = call(
                serve, "RequestCertificate", DomainNames=["shop.example.test"],
                ListenerId=listener,
            ).json()
            request = issued(serve, answer["CertificateRequestId"])
            assert request["Status"] == "Issued", (request, serve.output())
            leaf = served_leaf(port, pebble.root_pem, "shop.example.test")
            assert ("DNS", "shop.example.test") in leaf["subjectAltName"]
            renewal = call(serve, "RenewCertificate", CertificateId=request["CertificateId"])
            renewed = issued(serve, renewal.json()["CertificateRequestId"])
            assert renewed["Status"] == "Issued" and renewed["Renewal"], (renewed, serve.output())
            new = call(serve, "GetCertificate", CertificateId=renewed["CertificateId"]).json()
            serial = new["Certificate"]["SerialNumber"].lower().lstrip("0")

            def serves_renewal() -> bool:
                served = served_leaf(port, pebble.root_pem, "shop.example.test")
                return str(served["serialNumber"]).lower().lstrip("0") == serial

            assert eventually(serves_renewal, 30), serve.output()
        finally:
            serve.stop()


def test_dns01_through_the_hook_issues_a_wildcard(tmp_path: Path, pebble: Pebble) -> None:
    """dns-01 through a hook that sets and clears TXT records issues `*.NAME` and NAME."""
    hook = tmp_path / "dns-hook"
    hook.write_text(HOOK.format(python=sys.executable, url=pebble.challtestsrv_url))
    hook.chmod(0o700)
    serve = serve_acme(tmp_path, pebble, "dns-01", dns_hook=str(hook))
    try:
        names = ["*.wild.example.test", "wild.example.test"]
        answer = call(serve, "RequestCertificate", DomainNames=names).json()
        request = issued(serve, answer["CertificateRequestId"])
        assert request["Status"] == "Issued", (request, serve.output())
        cert = call(serve, "GetCertificate", CertificateId=request["CertificateId"]).json()
        assert sorted(cert["Certificate"]["SubjectAlternativeNames"]) == sorted(names)
    finally:
        serve.stop()


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"DomainNames": ["*.example.test"]}, "UnsupportedChallenge"),
        ({"DomainNames": ["10.0.0.1"]}, "InvalidParameter"),
        ({"DomainNames": ["not a name"]}, "InvalidParameter"),
        ({"DomainNames": [f"n{i}.example.test" for i in range(101)]}, "InvalidParameter"),
        ({"DomainNames": ["a.example.test"], "ListenerId": "lsn-0000000000000000"},
         "ListenerNotFound"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(
    http01_serve: ServeProcess, params: dict[str, Any], code: str
) -> None:
    """A request that cannot be satisfied is a 4xx with its code, and no request is kept."""
    answer = call(http01_serve, "RequestCertificate", **params)
    assert 400 <= answer.status_code < 500
    assert answer.json()["Code"] == code
    listed = call(http01_serve, "ListCertificateRequests").json()
    assert listed["CertificateRequests"] == []


def test_request_without_acme_configured_is_refused(tmp_path: Path) -> None:
    """With no [acme] section, RequestCertificate is AcmeNotConfigured and keeps nothing."""
    service = Service(Config(data_dir=str(tmp_path / "data")))
    try:
        with pytest.raises(errors.AcmeNotConfigured):
            service.call("RequestCertificate", {"DomainNames": ["a.example.test"]})
        assert service.call("ListCertificateRequests")["CertificateRequests"] == []
    finally:
        service.close()


def test_a_failed_order_logs_its_request_id_as_a_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An order against an ACME server that is not there fails; its log line carries
    `certificate_request_id` as a structured field (JSON logs show it as a key)."""
    port = free_port()
    config = Config.model_validate({
        "data_dir": str(tmp_path / "data"),
        "acme": {"directory_url": f"https://127.0.0.1:{port}/dir", "challenge": "http-01",
                 "http_listen": f"127.0.0.1:{free_port()}"},
    })
    service = Service(config)
    try:
        request_id = service.call("RequestCertificate", {"DomainNames": ["a.example.test"]})[
            "CertificateRequestId"
        ]
        with caplog.at_level(logging.WARNING, logger="certwatch.acme.runner"):
            service.acme.attempt(request_id)
        (line,) = [r for r in caplog.records if "failed" in r.getMessage()]
        assert getattr(line, "certificate_request_id", None) == request_id
        view = service.call("GetCertificateRequest", {"CertificateRequestId": request_id})
        assert view["CertificateRequest"]["Status"] == "Failed"
    finally:
        service.close()
