"""Expiry alerts against the store: apply the plan (`alerting.plan_alerts`), then deliver.

The plan is applied in one transaction (new alerts inserted undelivered, dropped ones
deleted). Delivery happens outside any transaction; each attempt is then recorded in its own
transaction, and an alert is marked sent only once apprise reported delivery to every alert
URL. Within one delivery a URL that fails is retried a few times, seconds apart
(`notify.RetryPolicy`); `attempts` counts those sends (the most any URL needed), so the
failure counter (attempts of undelivered sends) says what happened. Each URL that took it is
recorded (`delivered_to`), so the next scan retries only the URLs that still failed. A crash
between a delivery and its record sends that one again after restart (at least once, never
lost). The apprise notify type follows the threshold (`rules.notify_type`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, col, delete, select, update

from certwatch import clock
from certwatch.alerts import notify
from certwatch.alerts import rules as alerting
from certwatch.alerts.renewal import RenewalLookup, StagedRenewal
from certwatch.ids import new_id
from certwatch.store.db import transaction
from certwatch.store.models import Alert, Certificate, Listener, Role

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """An alert to deliver, and the URLs (keys) that already took it."""

    alert_id: str
    title: str
    body: str
    delivered_to: frozenset[str] = frozenset()
    notify_type: str = notify.WARNING


def renewal_text(found: StagedRenewal | None) -> str:
    """How an alert names the staged renewal of a certificate (or its absence)."""
    if found is None:
        return "no staged renewal"
    when = (
        f"rotates at {clock.rfc3339(found.rotates_at)}"
        if found.rotates_at
        else "no automatic rotation scheduled"
    )
    return (
        f"{found.staged_certificate_id} ready (certificate {found.certificate_id}, "
        f"NotAfter {clock.rfc3339(found.not_after)}), {when}"
    )


def _serving(cert: alerting.CertInUse) -> list[str]:
    return [use.listener_id for use in cert.usages if use.role in (Role.DEFAULT, Role.ADDITIONAL)]


class _Renewals:
    """Staged-renewal texts for the alerts of one plan. The certificate and listener rows
    the lookups need are read in two queries, not one per alert and listener."""

    def __init__(
        self, lookup: RenewalLookup, session: Session, certs: Sequence[alerting.CertInUse]
    ) -> None:
        self._lookup = lookup
        self._session = session
        serving = {cert.certificate_id: _serving(cert) for cert in certs}
        cert_ids = [cert_id for cert_id, listeners in serving.items() if listeners]
        listener_ids = {lid for listeners in serving.values() for lid in listeners}
        self._certificates = {
            row.id: row
            for row in session.exec(select(Certificate).where(col(Certificate.id).in_(cert_ids)))
        }
        self._listeners = {
            row.id: row
            for row in session.exec(select(Listener).where(col(Listener.id).in_(listener_ids)))
        }

    def __call__(self, cert: alerting.CertInUse, now: dt.datetime) -> dict[str, str]:
        """Per listener serving `cert` (default or additional), its staged renewal, as text."""
        out: dict[str, str] = {}
        row = self._certificates.get(cert.certificate_id)
        if row is None:
            return out
        for listener_id in _serving(cert):
            listener = self._listeners.get(listener_id)
            if listener is None:
                continue
            try:
                out[listener_id] = renewal_text(self._lookup(self._session, row, listener, now))
            except Exception:
                log.exception(
                    "staged-renewal lookup failed for %s", cert.certificate_id,
                    extra={"certificate_id": cert.certificate_id, "listener_id": listener_id},
                )
                out[listener_id] = "unknown (the staged-renewal lookup failed; see the log)"
        return out


def prepare(
    engine: Engine,
    lookup: RenewalLookup | None,
    in_use: Sequence[alerting.CertInUse],
    now: dt.datetime,
) -> list[Outgoing]:
    """Apply the alert plan to the store; return the alerts to deliver (`lookup` names each
    certificate's staged renewal)."""
    outgoing = []
    with transaction(engine) as session:
        rows = session.execute(
            sa_select(
                col(Alert.id),
                col(Alert.certificate_id),
                col(Alert.threshold),
                col(Alert.delivered),
                col(Alert.delivered_to),
            ).where(col(Alert.threshold).not_in(alerting.ACME_KINDS))
        ).all()
        existing = [alerting.AlertRecord(*row[:4]) for row in rows]
        reached = {row[0]: frozenset(row[4]) for row in rows}
        plan = alerting.plan_alerts(in_use, existing, now)
        fresh: list[dict[str, object]] = []
        retried: list[dict[str, object]] = []
        renewals = _Renewals(lookup, session, [d.cert for d in plan.send]) if lookup else None
        for due in plan.send:
            title = alerting.title(due.cert, due.threshold)
            staged = renewals(due.cert, now) if renewals else {}
            body = alerting.body(due.cert, due.threshold, now, staged)
            fields = {"listener_ids": alerting.listener_ids(due.cert), "title": title, "body": body}
            if due.alert_id is None:
                alert_id = new_id("alr")
                fresh.append(
                    {
                        "id": alert_id,
                        "certificate_id": due.cert.certificate_id,
                        "threshold": due.threshold,
                        "created_at": now,
                        "delivered": False,
                        "attempts": 0,
                        "delivered_to": [],
                        **fields,
                    }
                )
            else:
                alert_id = due.alert_id
                retried.append({"id": alert_id, **fields})
            body = f"{body}\n\nAlertId: {alert_id}"
            outgoing.append(
                Outgoing(
                    alert_id,
                    title,
                    body,
                    reached.get(alert_id, frozenset()),
                    alerting.notify_type(due.threshold),
                )
            )
        if plan.drop:
            log.info("dropping %d pending alert(s) no longer due", len(plan.drop))
            session.exec(delete(Alert).where(col(Alert.id).in_(plan.drop)))
        if fresh:
            session.execute(insert(Alert), fresh)
        if retried:
            session.execute(update(Alert), retried)
    return outgoing


_ALERTS = SQLModel.metadata.tables["alerts"]
# Recorded before an alert is sent (so a crash mid-delivery repeats at most that one message,
# which carries its AlertId), then settled after, adding the retries made within the delivery.
_CLAIM = (
    update(_ALERTS)
    .where(_ALERTS.c.id == bindparam("alert_id"))
    .values(attempts=_ALERTS.c.attempts + 1, last_error=bindparam("last_error"))
)
_ATTEMPT = (
    update(_ALERTS)
    .where(_ALERTS.c.id == bindparam("alert_id"))
    .values(
        attempts=_ALERTS.c.attempts + bindparam("retries"),
        delivered=bindparam("delivered"),
        delivered_to=bindparam("delivered_to"),
        sent_at=bindparam("sent_at"),
        last_error=bindparam("last_error"),
    )
)


def deliver(
    engine: Engine, notifier: notify.Notifier, outgoing: Sequence[Outgoing]
) -> tuple[int, int]:
    """Record each attempt, send the alert to the URLs that lack it, settle the attempt, then
    the next alert.

    Returns (alerts now delivered everywhere, alerts some URL still lacks). With no URL the
    alerts go to the log, which cannot fail: they are logged, then settled in one statement
    and one commit (a first scan of thousands of certificates is not thousands of commits).
    """
    if not notifier.urls:
        return _to_the_log(engine, notifier, outgoing), 0
    sent = failed = 0
    with engine.connect() as connection:
        for item in outgoing:
            claim = {"alert_id": item.alert_id, "last_error": f"sending since {clock.now()}"}
            connection.execute(_CLAIM, claim)
            connection.commit()
            results = notifier.send_each(
                item.title, item.body, item.notify_type, skip=item.delivered_to
            )
            reached = item.delivered_to | {r.key for r in results if r.delivered}
            error = notify.failures(results)
            sends = max((r.attempts for r in results), default=1)
            done = notifier.keys <= reached
            params = {
                "alert_id": item.alert_id,
                "retries": max(sends - 1, 0),
                "delivered": done,
                "delivered_to": sorted(reached),
                "sent_at": clock.now() if done else None,
                "last_error": error or None,
            }
            connection.execute(_ATTEMPT, params)
            connection.commit()
            sent += done
            failed += not done
            if not done:
                log.warning(
                    "alert %r not delivered everywhere (retried next scan): %s", item.title, error,
                    extra={"alert_id": item.alert_id},
                )
    return sent, failed


def _to_the_log(engine: Engine, notifier: notify.Notifier, outgoing: Sequence[Outgoing]) -> int:
    """Log every alert, then mark them all delivered at once; how many."""
    for item in outgoing:
        notifier.send(item.title, item.body, item.notify_type)
    if outgoing:
        now = clock.now()
        settled: list[dict[str, object]] = [
            {"alert_id": item.alert_id, "retries": 1, "delivered": True, "delivered_to": [],
             "sent_at": now, "last_error": None}
            for item in outgoing
        ]
        with engine.begin() as connection:
            connection.execute(_ATTEMPT, settled)
    return len(outgoing)


def run(
    engine: Engine,
    notifier: notify.Notifier,
    lookup: RenewalLookup | None,
    in_use: Sequence[alerting.CertInUse],
    now: dt.datetime,
) -> tuple[int, int]:
    """Plan, store and deliver the alerts due at `now`; (delivered, failed)."""
    return deliver(engine, notifier, prepare(engine, lookup, in_use, now))
