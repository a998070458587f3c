"""Monitoring actions: run a scan now, list expiry alerts, send a test notification."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from certwatch.alerts import notify
from certwatch.api.registry import ActionContext, Request, action
from certwatch.clock import rfc3339
from certwatch.store.models import Alert


class ScanNowRequest(Request):
    """ScanNow takes no parameters."""


class ListAlertsRequest(Request):
    """ListAlerts parameters: optional filters."""

    ListenerId: str | None = None
    CertificateId: str | None = None


class TestNotificationRequest(Request):
    """TestNotification takes no parameters."""


@action("ScanNow", ScanNowRequest, changing=False)
def scan_now(ctx: ActionContext, req: ScanNowRequest) -> dict[str, Any]:
    """Run one scan now: certificates by Status, probes run and failed, alerts sent."""
    report = ctx.scanner.run()
    return {"ScanId": report.scan_id, **report.counts()}


def alert_view(row: Alert) -> dict[str, Any]:
    """An alert as the API shows it."""
    return {
        "AlertId": row.id,
        "CertificateId": row.certificate_id,
        "ListenerIds": list(row.listener_ids),
        "Threshold": row.threshold,
        "Title": row.title,
        "CreatedAt": rfc3339(row.created_at),
        "SentAt": rfc3339(row.sent_at),
        "Delivered": row.delivered,
        "Attempts": row.attempts,
        "LastError": row.last_error,
    }


@action("ListAlerts", ListAlertsRequest, changing=False)
def list_alerts(ctx: ActionContext, req: ListAlertsRequest) -> dict[str, Any]:
    """Expiry alerts, sent or pending, newest first."""
    query = select(Alert).order_by(col(Alert.created_at).desc(), col(Alert.id))
    if req.CertificateId:
        query = query.where(Alert.certificate_id == req.CertificateId)
    rows = [
        row
        for row in ctx.session.exec(query)
        if req.ListenerId is None or req.ListenerId in row.listener_ids
    ]
    return {"Alerts": [alert_view(row) for row in rows]}


@action("TestNotification", TestNotificationRequest, changing=False)
def test_notification(ctx: ActionContext, req: TestNotificationRequest) -> dict[str, Any]:
    """Send a test message to every alert URL; report per URL (secrets masked)."""
    results = ctx.node.monitoring.notifier.send_each(
        "certwatch test notification",
        f"A test message from certwatch at {rfc3339(ctx.now)}: alert delivery works.",
        notify_type=notify.INFO,
    )
    return {
        "Results": [{"Url": r.url, "Delivered": r.delivered, "Error": r.error} for r in results]
    }
