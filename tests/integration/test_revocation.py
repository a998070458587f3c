"""Revocation checks against real sources on 127.0.0.1: a CRL web server and `openssl ocsp`.

A certificate is revoked between two scans: the first finds it good (metric 0, no alert), the
second finds it revoked (metric 1, Status Revoked, one alert), the third sends nothing more.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from prometheus_client import generate_latest

from certwatch.app.service import Service
from tests.certfactory import Pki, Revocation, make_crl, make_pki
from tests.conftest import require
from tests.integration.conftest_monitoring import HttpReceiver, add_listener, make_service, upload
from tests.integration.revocation_servers import CrlServer, OcspResponder, index_line
from tests.support import free_port

CRL_PATH = "/intermediate.crl"
SCAN = {"probe_timeout": 2}


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A root → intermediate PKI."""
    return make_pki("revocation test")


@pytest.fixture
def crl_server() -> Iterator[CrlServer]:
    """A CRL web server on 127.0.0.1."""
    with CrlServer() as server:
        yield server


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    """A webhook receiver for the alerts."""
    with HttpReceiver() as receiver:
        yield receiver


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _service(
    tmp_path: Path, pki: Pki, hook: HttpReceiver, store_url: str | None = None, **sections: Any
) -> Service:
    if store_url is not None:
        sections["store"] = {"url": store_url}
    service = make_service(tmp_path, alerts={"urls": [hook.url()]}, scan=SCAN, **sections)
    upload(service, pki.root, cert_type="Ca")
    return service


def _in_use(
    service: Service, pki: Pki, name: str = "shop.test", **extensions: Any
) -> tuple[str, x509.Certificate]:
    """A listener's default certificate `name` naming the given revocation source: its id
    and its leaf."""
    issued = pki.leaf(name, days=200, **extensions)
    cert_id = upload(service, issued)
    add_listener(service, cert_id, free_port())
    return cert_id, issued.cert


def revoked_metric(service: Service, cert_id: str, source: str) -> float | None:
    """`certwatch_certificate_revoked{certificate_id, source}`, or None when absent."""
    wanted = f'certwatch_certificate_revoked{{certificate_id="{cert_id}",source="{source}"}}'
    for line in generate_latest(service.registry).decode().splitlines():
        if line.startswith(wanted):
            return float(line.rsplit(" ", 1)[1])
    return None


def certificate(service: Service, cert_id: str) -> dict[str, Any]:
    """GetCertificate's Certificate object."""
    return dict(service.call("GetCertificate", {"CertificateId": cert_id})["Certificate"])


def revoked_alerts(service: Service, cert_id: str) -> list[dict[str, Any]]:
    """The stored `revoked` alerts of a certificate."""
    alerts = service.call("ListAlerts", {"CertificateId": cert_id})["Alerts"]
    return [a for a in alerts if a["Threshold"] == "revoked"]


def _wait_past(moment: dt.datetime) -> None:
    delay = (moment - _now()).total_seconds()
    if delay > 0:
        time.sleep(delay + 0.05)


def test_crl_revocation_between_scans_alerts_once(
    tmp_path: Path, pki: Pki, crl_server: CrlServer, hook: HttpReceiver, store_url: str
) -> None:
    """Good by the CRL (0, no alert), cached until nextUpdate, then revoked (1, Revoked, one
    alert with time and reason); a third scan sends no second alert (SQLite and PostgreSQL)."""
    service = _service(tmp_path, pki, hook, store_url)
    cert_id, leaf = _in_use(service, pki, crl_url=crl_server.url(CRL_PATH))
    first_expires = _now() + dt.timedelta(seconds=3)
    crl_server.crls[CRL_PATH] = make_crl(pki.intermediate, next_update=first_expires)

    first = service.call("ScanNow")
    assert first["RevocationsChecked"] == 1 and first["RevocationWarnings"] == []
    assert revoked_metric(service, cert_id, "crl") == 0.0
    assert certificate(service, cert_id)["Status"] == "Valid"
    assert revoked_alerts(service, cert_id) == []

    revoked_at = (_now() - dt.timedelta(minutes=5)).replace(microsecond=0)
    crl_server.crls[CRL_PATH] = make_crl(
        pki.intermediate, [Revocation(leaf, revoked_at, x509.ReasonFlags.key_compromise)]
    )
    cached = service.call("ScanNow")
    assert crl_server.requests == [CRL_PATH]  # the cached CRL served the second scan
    assert revoked_metric(service, cert_id, "crl") == 0.0
    assert cached["AlertsSent"] == 0

    _wait_past(first_expires)
    second = service.call("ScanNow")
    assert crl_server.requests == [CRL_PATH, CRL_PATH]
    assert second["Certificates"]["Revoked"] == 1 and second["AlertsSent"] == 1
    assert revoked_metric(service, cert_id, "crl") == 1.0
    assert certificate(service, cert_id)["Status"] == "Revoked"
    listed = service.call("ListCertificates", {"CertificateType": "Server"})["Certificates"]
    assert [c["Status"] for c in listed if c["CertificateId"] == cert_id] == ["Revoked"]
    [alert] = revoked_alerts(service, cert_id)
    assert alert["Title"] == "shop.test has been revoked" and alert["Delivered"]
    [payload] = hook.delivered
    assert payload["title"] == "shop.test has been revoked"
    assert revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ") in payload["message"]
    assert "keyCompromise" in payload["message"] and cert_id in payload["message"]

    third = service.call("ScanNow")
    assert third["AlertsSent"] == 0 and len(hook.delivered) == 1
    assert len(revoked_alerts(service, cert_id)) == 1
    service.close()


def test_cached_crl_and_revocation_survive_a_restart(
    tmp_path: Path, pki: Pki, crl_server: CrlServer, hook: HttpReceiver
) -> None:
    """A restarted service uses the stored CRL (no fetch before nextUpdate) and sends no
    second alert for a certificate already alerted as revoked."""
    service = _service(tmp_path, pki, hook)
    cert_id, leaf = _in_use(service, pki, crl_url=crl_server.url(CRL_PATH))
    crl_server.crls[CRL_PATH] = make_crl(pki.intermediate, [Revocation(leaf, _now())])
    assert service.call("ScanNow")["AlertsSent"] == 1
    service.close()

    restarted = make_service(tmp_path, alerts={"urls": [hook.url()]}, scan=SCAN)
    again = restarted.call("ScanNow")
    assert crl_server.requests == [CRL_PATH]
    assert again["AlertsSent"] == 0 and len(hook.delivered) == 1
    assert certificate(restarted, cert_id)["Status"] == "Revoked"
    assert revoked_metric(restarted, cert_id, "crl") == 1.0
    restarted.close()


def test_ocsp_revocation_between_scans_alerts_once(
    tmp_path: Path, pki: Pki, hook: HttpReceiver
) -> None:
    """With only an OCSP responder named, `openssl ocsp` says good (0, no alert), then revoked
    after the index changes (1, Revoked, one alert); a third scan sends no second alert."""
    require(shutil.which("openssl") is not None, "openssl is not installed")
    folder = tmp_path / "ocsp"
    folder.mkdir()
    with OcspResponder(pki.intermediate, folder) as responder:
        service = _service(tmp_path, pki, hook)
        cert_id, leaf = _in_use(service, pki, ocsp_url=responder.url)
        responder.write_index(index_line(leaf))

        first = service.call("ScanNow")
        assert first["RevocationWarnings"] == [] and first["AlertsSent"] == 0
        assert revoked_metric(service, cert_id, "ocsp") == 0.0
        assert certificate(service, cert_id)["Status"] == "Valid"

        revoked_at = (_now() - dt.timedelta(minutes=1)).replace(microsecond=0)
        responder.write_index(index_line(leaf, revoked_at, "superseded"))
        second = service.call("ScanNow")
        assert second["AlertsSent"] == 1
        assert revoked_metric(service, cert_id, "ocsp") == 1.0
        assert certificate(service, cert_id)["Status"] == "Revoked"
        [payload] = hook.delivered
        assert payload["title"] == "shop.test has been revoked"
        assert "superseded" in payload["message"]
        assert revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ") in payload["message"]

        third = service.call("ScanNow")
        assert third["AlertsSent"] == 0 and len(hook.delivered) == 1
        assert len(revoked_alerts(service, cert_id)) == 1
        service.close()


def test_unreachable_sources_are_warnings_not_revocations(
    tmp_path: Path, pki: Pki, crl_server: CrlServer, hook: HttpReceiver
) -> None:
    """A CRL URL nothing listens on, and a CRL signed by another key, are warnings (scan
    report, certificate Warnings), never a revocation: no alert, no metric, Status unchanged."""
    service = _service(tmp_path, pki, hook)
    dead, _ = _in_use(service, pki, crl_url=f"http://127.0.0.1:{free_port()}/gone.crl")
    forged_id, forged = _in_use(
        service, pki, "forged.test", crl_url=crl_server.url("/forged.crl")
    )
    impostor = make_pki("impostor")
    crl_server.crls["/forged.crl"] = make_crl(
        pki.intermediate, [Revocation(forged, _now())], signer=impostor.intermediate
    )

    report = service.call("ScanNow")
    assert report["AlertsSent"] == 0 and report["Certificates"]["Revoked"] == 0
    warnings = report["RevocationWarnings"]
    assert any(w.startswith(f"{dead}: RevocationUnavailable") and "reached" in w for w in warnings)
    assert any(w.startswith(f"{forged_id}: RevocationUnavailable") for w in warnings)
    for cert_id in (dead, forged_id):
        view = certificate(service, cert_id)
        assert view["Status"] == "Valid"
        assert any(w.startswith("RevocationUnavailable: CRL") for w in view["Warnings"])
        assert revoked_metric(service, cert_id, "crl") is None
        assert revoked_alerts(service, cert_id) == []
    assert hook.delivered == []
    service.close()


def test_revoked_staged_candidate_is_rejected(
    tmp_path: Path, pki: Pki, crl_server: CrlServer, hook: HttpReceiver, store_url: str
) -> None:
    """A staged renewal found revoked by its CRL is `Rejected` with the revocation as reason;
    a good one next to it stays `Pending` (SQLite and PostgreSQL)."""
    service = _service(tmp_path, pki, hook, store_url, rotation={"auto": False})
    current = upload(service, pki.leaf("shop.test", days=20))
    listener_id = add_listener(service, current, free_port())
    url = crl_server.url(CRL_PATH)
    bad = pki.leaf("shop.test", days=300, crl_url=url)
    good = pki.leaf("shop.test", days=200, crl_url=url)
    crl_server.crls[CRL_PATH] = make_crl(
        pki.intermediate,
        [Revocation(bad.cert, _now(), x509.ReasonFlags.key_compromise)],
    )
    staged = [
        service.call(
            "StageCertificate",
            {"Certificate": c.chain_pem, "PrivateKey": c.key_pem, "ListenerId": listener_id},
        )
        for c in (bad, good)
    ]
    assert [s["Status"] for s in staged] == ["Pending", "Pending"]

    service.call("ScanNow")
    found = {
        s["StagedCertificateId"]: s
        for s in service.call("ListStagedCertificates")["StagedCertificates"]
    }
    rejected = found[staged[0]["StagedCertificateId"]]
    assert rejected["Status"] == "Rejected"
    assert rejected["Reason"].startswith("revoked since ") and "keyCompromise" in rejected["Reason"]
    assert url in rejected["Reason"]
    assert found[staged[1]["StagedCertificateId"]]["Status"] == "Pending"
    service.close()
