"""Expiry alert delivery through apprise to a real SMTP server and a real webhook receiver."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from pathlib import Path

import pytest
from freezegun import freeze_time
from prometheus_client import generate_latest

from certwatch.alerts.notify import Notifier, RetryPolicy
from certwatch.app.service import Service
from tests.certfactory import Pki, issue, make_pki
from tests.integration.conftest_monitoring import (
    HttpReceiver,
    add_listener,
    make_service,
    smtp_sink,
    upload,
)
from tests.support import free_port

# apprise's e-mail plugin imports the deprecated `imghdr` module when first used.


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A root → intermediate PKI."""
    return make_pki("alerts test")


def expiring_listener(service: Service, pki: Pki, days: float = 6.5) -> tuple[str, str, int]:
    """A listener whose default certificate has `days` left: (listener id, cert id, port)."""
    cert_id = upload(service, pki.leaf("shop.example.com", "www.shop.example.com", days=days))
    port = free_port()
    return add_listener(service, cert_id, port), cert_id, port


def metric(service: Service, line_start: str) -> float:
    """The value of the first /metrics sample line starting with `line_start`."""
    for line in generate_latest(service.registry).decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start}")


def test_alert_reaches_email_and_webhook(tmp_path: Path, pki: Pki) -> None:
    """A certificate with 6.5 days left sends one 7-day alert by e-mail and by webhook."""
    with smtp_sink() as (mail_url, mails), HttpReceiver() as hook:
        service = make_service(tmp_path, alerts={"urls": [mail_url, hook.url()]})
        listener_id, cert_id, port = expiring_listener(service, pki)
        result = service.call("ScanNow")
        service.close()
    assert result["AlertsSent"] == 1 and result["AlertsFailed"] == 0
    assert [m["Subject"] for m in mails] == ["shop.example.com expires within 7 days"]
    assert len(hook.delivered) == 1
    payload = hook.delivered[0]
    assert payload["title"] == "shop.example.com expires within 7 days"
    for part in (
        listener_id,
        f"port {port}",
        cert_id,
        "www.shop.example.com",
        "role default",
        "Days left: 6",
        "no staged renewal",
    ):
        assert part in payload["message"]
    texts = [p.get_payload(decode=True) for p in mails[0].walk() if not p.is_multipart()]
    assert any(isinstance(t, bytes) and cert_id in t.decode() for t in texts)


def test_receiver_failing_twice_gets_the_alert_within_the_same_scan(
    tmp_path: Path, pki: Pki, store_url: str
) -> None:
    """A receiver answering 500 twice, then 200, gets the alert in the same scan: exactly three
    requests, seconds apart at most, the two failures counted, the alert sent once."""
    with HttpReceiver(statuses=(500, 500)) as hook:
        service = make_service(
            tmp_path, store={"url": store_url}, alerts={"urls": [hook.url()]}
        )
        _, cert_id, _ = expiring_listener(service, pki)
        started = time.monotonic()
        first = service.call("ScanNow")
        took = time.monotonic() - started
        alerts = service.call("ListAlerts", {"CertificateId": cert_id})["Alerts"]
        again = service.call("ScanNow")
        failures = metric(service, 'certwatch_alert_delivery_failures_total{threshold="7"}')
        sent = metric(service, 'certwatch_alerts_sent_total{threshold="7"}')
        service.close()
    assert (first["AlertsSent"], first["AlertsFailed"], again["AlertsSent"]) == (1, 0, 0)
    assert [status for status, _ in hook.received] == [500, 500, 200]
    assert len(hook.delivered) == 1 and hook.delivered[0]["type"] == "warning"
    assert len(alerts) == 1 and alerts[0]["Delivered"] and alerts[0]["SentAt"] is not None
    assert alerts[0]["Attempts"] == 3 and alerts[0]["LastError"] is None
    assert (failures, sent) == (2.0, 1.0)
    assert took < 8, f"the scan with two retries took {took:.1f} s"


def test_always_failing_receiver_is_retried_next_scan(
    tmp_path: Path, pki: Pki, store_url: str
) -> None:
    """A receiver that always answers 500 gets three attempts per scan, the alert stays
    unsent, and the first scan after it recovers delivers it once."""
    with HttpReceiver(otherwise=500) as hook:
        service = make_service(
            tmp_path, store={"url": store_url}, alerts={"urls": [hook.url()]}
        )
        _, cert_id, _ = expiring_listener(service, pki)
        started = time.monotonic()
        first = service.call("ScanNow")
        took = time.monotonic() - started
        pending = service.call("ListAlerts", {"CertificateId": cert_id})["Alerts"]
        second = service.call("ScanNow")
        failures_before = metric(
            service, 'certwatch_alert_delivery_failures_total{threshold="7"}'
        )
        requests_while_failing = len(hook.received)
        hook.otherwise = 200
        third = service.call("ScanNow")
        fourth = service.call("ScanNow")
        alerts = service.call("ListAlerts")["Alerts"]
        failures = metric(service, 'certwatch_alert_delivery_failures_total{threshold="7"}')
        sent = metric(service, 'certwatch_alerts_sent_total{threshold="7"}')
        service.close()
    assert (first["AlertsSent"], first["AlertsFailed"]) == (0, 1)
    assert (second["AlertsSent"], second["AlertsFailed"]) == (0, 1)
    assert pending[0]["Delivered"] is False and pending[0]["SentAt"] is None
    assert pending[0]["Attempts"] == 3 and "500" in (pending[0]["LastError"] or "")
    assert requests_while_failing == 6 and failures_before == 6.0
    assert (third["AlertsSent"], fourth["AlertsSent"]) == (1, 0)
    assert len(hook.received) == 7 and len(hook.delivered) == 1
    assert len(alerts) == 1 and alerts[0]["Delivered"] and alerts[0]["Attempts"] == 7
    assert alerts[0]["Threshold"] == "7" and alerts[0]["LastError"] is None
    assert (failures, sent) == (6.0, 1.0)
    assert took < 8, f"a scan with a failing URL took {took:.1f} s"


def test_retry_goes_only_to_the_url_that_failed(tmp_path: Path, pki: Pki) -> None:
    """E-mail works, the webhook fails its three attempts of the first scan: the e-mail is
    sent once, only the webhook is retried, and each gets the alert exactly once."""
    with smtp_sink() as (mail_url, mails), HttpReceiver(statuses=(500, 500, 500)) as hook:
        service = make_service(tmp_path, alerts={"urls": [mail_url, hook.url()]})
        expiring_listener(service, pki)
        first = service.call("ScanNow")
        mails_after_first = len(mails)
        second = service.call("ScanNow")
        third = service.call("ScanNow")
        alerts = service.call("ListAlerts")["Alerts"]
        service.close()
    assert (first["AlertsFailed"], second["AlertsSent"], third["AlertsSent"]) == (1, 1, 0)
    assert mails_after_first == 1 and len(mails) == 1
    assert len(hook.received) == 4 and len(hook.delivered) == 1
    assert alerts[0]["Delivered"] and alerts[0]["Attempts"] == 4


@pytest.mark.parametrize(
    ("statuses", "sent_after_restart"),
    [((), 0), ((500, 500, 500), 1)],
    ids=["delivered-is-not-repeated", "pending-is-delivered"],
)
def test_restart_keeps_what_was_delivered_and_what_was_not(
    tmp_path: Path, pki: Pki, statuses: tuple[int, ...], sent_after_restart: int
) -> None:
    """A new Service on the same store does not repeat an alert already delivered, and
    delivers one that failed before the restart."""
    with HttpReceiver(statuses=statuses) as hook:
        first = make_service(tmp_path, alerts={"urls": [hook.url()]})
        expiring_listener(first, pki)
        first.call("ScanNow")
        first.close()
        second = make_service(tmp_path, alerts={"urls": [hook.url()]})
        again = second.call("ScanNow")
        second.close()
    assert again["AlertsSent"] == sent_after_restart and len(hook.delivered) == 1


def test_replacing_the_certificate_drops_its_pending_alert(tmp_path: Path, pki: Pki) -> None:
    """After the default is replaced, the old certificate's undelivered alert is never sent."""
    with HttpReceiver(otherwise=500) as hook:
        service = make_service(tmp_path, alerts={"urls": [hook.url()]})
        listener_id, _, _ = expiring_listener(service, pki)
        service.call("ScanNow")
        renewed = upload(service, pki.leaf("shop.example.com", days=300))
        service.call(
            "UpdateListenerAttribute", {"ListenerId": listener_id, "CertificateIds": [renewed]}
        )
        result = service.call("ScanNow")
        alerts = service.call("ListAlerts", {"ListenerId": listener_id})["Alerts"]
        service.close()
    assert result["AlertsSent"] == 0 and alerts == [] and hook.delivered == []


def test_expired_intermediate_alerts_for_its_leaf(tmp_path: Path) -> None:
    """An intermediate that expires in 5 days alerts (7-day) for a leaf valid for 300 days."""
    root = issue(common_name="Chain Root", ca=True, days=3650)
    short = root.issue(common_name="Short Intermediate", ca=True, days=5)
    leaf = short.issue("api.example.com", days=300)
    with HttpReceiver() as hook:
        service = make_service(tmp_path, alerts={"urls": [hook.url()]})
        cert_id = upload(service, leaf)
        add_listener(service, cert_id, free_port())
        service.call("ScanNow")
        alerts = service.call("ListAlerts", {"CertificateId": cert_id})["Alerts"]
        service.close()
    assert [a["Threshold"] for a in alerts] == ["7"]
    assert hook.delivered[0]["title"].startswith("api.example.com expires within 7 days")
    assert "Short Intermediate" in hook.delivered[0]["title"]
    assert "Expires first: intermediate Short Intermediate" in hook.delivered[0]["message"]


def test_without_urls_alerts_go_to_the_log(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """With no alert URL, the alert is logged and counts as delivered."""
    service = make_service(tmp_path)
    expiring_listener(service, pki, days=0.5)
    with caplog.at_level(logging.WARNING, logger="certwatch.alerts.notify"):
        result = service.call("ScanNow")
    alerts = service.call("ListAlerts")["Alerts"]
    service.close()
    assert result["AlertsSent"] == 1 and alerts[0]["Threshold"] == "1"
    assert "shop.example.com expires within 1 day" in caplog.text


def test_test_notification_reports_each_url(tmp_path: Path) -> None:
    """TestNotification delivers to each URL separately (a failing one retried like an alert)
    and reports failures, secrets masked."""
    with smtp_sink() as (mail_url, mails), HttpReceiver() as ok, HttpReceiver(otherwise=500) as bad:
        secret_url = f"json://alice:hunter2secret@127.0.0.1:{bad.port}/hook"
        urls = [mail_url, ok.url(), secret_url, "nosuchscheme://token-s3cr3t@host"]
        service = make_service(tmp_path, alerts={"urls": urls})
        results = service.call("TestNotification")["Results"]
        service.close()
    assert [r["Delivered"] for r in results] == [True, True, False, False]
    assert results[0]["Url"].startswith("mailto://") and results[0]["Error"] is None
    assert results[1]["Url"].startswith(f"json://127.0.0.1:{ok.port}/hook")
    assert "hunter2secret" not in results[2]["Url"] and "500" in results[2]["Error"]
    assert "s3cr3t" not in results[3]["Url"] and "not a valid apprise URL" in results[3]["Error"]
    assert len(mails) == 1 and len(ok.delivered) == 1 and len(bad.received) == 3
    assert ok.delivered[0]["type"] == "info"


def test_service_notify_uses_the_alert_urls(tmp_path: Path) -> None:
    """Service.notify (used for rollback alerts) delivers through the same notifier."""
    with HttpReceiver() as hook:
        service = make_service(tmp_path, alerts={"urls": [hook.url()]})
        service.notify("lsn-x rolled back", "the new certificate failed the live check")
        service.close()
    assert hook.delivered[0]["title"] == "lsn-x rolled back"


def test_alert_not_sent_before_thresholds(tmp_path: Path, pki: Pki) -> None:
    """A certificate with 60 days left sends nothing and stores no alert."""
    with HttpReceiver() as hook:
        service = make_service(tmp_path, alerts={"urls": [hook.url()]})
        expiring_listener(service, pki, days=60)
        result = service.call("ScanNow")
        service.close()
    assert result["AlertsSent"] == 0 and hook.received == []
    assert result["Certificates"]["Valid"] == 1


def test_scan_counts_certificates_by_status(tmp_path: Path, pki: Pki) -> None:
    """ScanNow counts each certificate in use by Status."""
    service = make_service(tmp_path, alerts={"thresholds_days": [30, 7, 1]})
    expiring_listener(service, pki, days=6.5)
    expiring_listener(service, pki, days=90)
    result = service.call("ScanNow")
    service.close()
    assert result["Certificates"] == {
        "Valid": 1, "Expiring": 1, "Expired": 0, "NotYetValid": 0, "Revoked": 0,
    }
    assert result["ScanId"].startswith("scn-")


def test_scan_on_a_non_leader_sends_no_alert(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ScanNow on a node that does not lead counts certificates but leaves alerts to the leader."""
    with HttpReceiver() as hook:
        service = make_service(tmp_path, alerts={"urls": [hook.url()]})
        expiring_listener(service, pki)
        monkeypatch.setattr(service.node, "is_leader", lambda: False)
        result = service.call("ScanNow")
        alerts = service.call("ListAlerts")["Alerts"]
        service.close()
    assert result["Certificates"]["Expiring"] == 1
    assert result["AlertsSent"] == 0 and alerts == [] and hook.received == []


def test_alert_sequence_over_time(tmp_path: Path, pki: Pki) -> None:
    """Scans at 20, 6.5, 0.5 and -1 days left send 30, 7, 1 and expired, each exactly once."""
    with HttpReceiver() as hook:
        service = make_service(tmp_path, alerts={"urls": [hook.url()]})
        listener_id, cert_id, _ = expiring_listener(service, pki, days=25)
        service.call("StopListener", {"ListenerId": listener_id})
        not_after = dt.datetime.fromisoformat(
            service.call("GetCertificate", {"CertificateId": cert_id})["Certificate"]["NotAfter"]
        )
        for days_left in (20, 19, 6.5, 6, 0.5, 0.25, -1, -2):
            with freeze_time(not_after - dt.timedelta(days=days_left)):
                service.call("ScanNow")
        alerts = service.call("ListAlerts", {"CertificateId": cert_id})["Alerts"]
        service.close()
    titles = [payload["title"] for payload in hook.delivered]
    assert titles == [
        "shop.example.com expires within 30 days",
        "shop.example.com expires within 7 days",
        "shop.example.com expires within 1 day",
        "shop.example.com has expired",
    ]
    assert [p["type"] for p in hook.delivered] == ["info", "warning", "failure", "failure"]
    assert sorted(a["Threshold"] for a in alerts) == ["1", "30", "7", "expired"]


def test_a_url_with_its_own_retry_setting_keeps_it(tmp_path: Path) -> None:
    """An alert URL naming apprise's `retry=0` is tried once, not three times."""
    with HttpReceiver(otherwise=500) as hook:
        service = make_service(tmp_path, alerts={"urls": [hook.url() + "?retry=0"]})
        results = service.call("TestNotification")["Results"]
        service.close()
    assert [r["Delivered"] for r in results] == [False] and "500" in results[0]["Error"]
    assert len(hook.received) == 1


def test_a_silent_url_is_given_up_at_the_time_bound() -> None:
    """A webhook that accepts the connection and never answers costs the URL's time bound,
    not three socket timeouts, and is reported undelivered."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    notifier = Notifier([f"json://127.0.0.1:{port}/hook"], RetryPolicy(timeout=1.5))
    try:
        started = time.monotonic()
        (result,) = notifier.send_each("title", "body")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert not result.delivered and result.error
    assert result.attempts == 1
    assert took < 3, f"gave up after {took:.1f} s"
