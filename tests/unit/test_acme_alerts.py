"""Failure-streak alerts in the store: one per streak, one recovery, and the expiry plan of a
scan neither sends nor drops them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import col, select

from certwatch.acme import alerts, requests
from certwatch.alerts.delivery import prepare
from certwatch.app.service import Service
from certwatch.store.db import transaction
from certwatch.store.models import Alert, CertificateRequest
from tests.conftest import make_config

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def acme_service(tmp_path: Path) -> Iterator[Service]:
    """A Service on SQLite with ACME configured (nothing is ordered: no runner runs)."""
    config = make_config(
        tmp_path, acme={"directory_url": "https://acme.test/dir", "challenge": "http-01"}
    )
    service = Service(config)
    yield service
    service.close()


def _fail(service: Service, request_id: str, reason: str) -> None:
    with transaction(service.engine) as session:
        row = session.get(CertificateRequest, request_id)
        assert row is not None
        requests.failed(session, row, reason, NOW)
        alerts.record_failure(session, row, NOW)


def _recover(service: Service, request_id: str) -> None:
    with transaction(service.engine) as session:
        row = session.get(CertificateRequest, request_id)
        assert row is not None
        alerts.record_recovery(session, row, NOW)


def _titles(service: Service) -> list[str]:
    with transaction(service.engine) as session:
        return list(session.exec(select(Alert.title).order_by(col(Alert.threshold))).all())


def test_a_streak_of_failures_records_one_alert_and_its_end_one_more(
    acme_service: Service,
) -> None:
    """Three failures of a first issue: one `Issuing … is failing` alert; then one recovery."""
    request_id = acme_service.call("RequestCertificate", {"DomainNames": ["a.example.test"]})[
        "CertificateRequestId"
    ]
    for reason in ("ConnectionError: refused", "ConnectionError: again", "Timeout"):
        _fail(acme_service, request_id, reason)
    assert _titles(acme_service) == ["Issuing a.example.test is failing: ConnectionError: refused"]
    _recover(acme_service, request_id)
    _recover(acme_service, request_id)
    assert _titles(acme_service)[1] == "Issuing a.example.test succeeded again"
    assert len(_titles(acme_service)) == 2
    [failing] = [o for o in alerts.pending(acme_service.engine) if "failing" in o.title]
    assert "NextAttemptAt: " in failing.body and f"AlertId: {failing.alert_id}" in failing.body


def test_an_issue_without_failures_records_no_recovery(acme_service: Service) -> None:
    """A request issued at its first attempt sends nothing."""
    request_id = acme_service.call("RequestCertificate", {"DomainNames": ["b.example.test"]})[
        "CertificateRequestId"
    ]
    _recover(acme_service, request_id)
    assert _titles(acme_service) == []


def test_the_expiry_plan_leaves_pending_streak_alerts_alone(acme_service: Service) -> None:
    """A scan's alert plan (no certificate in use) neither drops nor resends a pending one."""
    request_id = acme_service.call("RequestCertificate", {"DomainNames": ["c.example.test"]})[
        "CertificateRequestId"
    ]
    _fail(acme_service, request_id, "ConnectionError: refused")
    assert prepare(acme_service.engine, None, [], NOW) == []
    assert [o.title for o in alerts.pending(acme_service.engine)] == [
        "Issuing c.example.test is failing: ConnectionError: refused"
    ]
