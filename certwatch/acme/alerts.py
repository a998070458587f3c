"""Failure-streak alerts of certificate requests (SPEC §12): the first failed attempt of a
streak records ONE alert (`Renewal of <common name> is failing: <reason>`, or `Issuing <name>
is failing: …` for a first issue), and the attempt that issues after it records ONE recovery
alert. Nothing else is sent during the streak.

Both are rows of the `alerts` table keyed by the request id (`certificate_id` holds the
`crq-` id, `threshold` is `renewal-failing` / `renewal-recovered`), recorded in the same
transaction as the attempt's outcome and before any send; the unique (id, kind) pair makes a
restarted runner, or a second node, unable to record a second one. They are delivered by
`alerts.delivery.deliver` (AlertId in every message, retried until every URL took it).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from certwatch.alerts import notify
from certwatch.alerts.delivery import Outgoing, deliver
from certwatch.alerts.rules import ACME_KINDS, RENEWAL_FAILING, RENEWAL_RECOVERED
from certwatch.clock import rfc3339
from certwatch.ids import new_id
from certwatch.store.db import transaction
from certwatch.store.models import Alert, Certificate, CertificateRequest, ListenerCertificate


def _subject(session: Session, row: CertificateRequest) -> str:
    """`Renewal of <common name>` or `Issuing <name>`."""
    if row.renews_certificate_id is not None:
        old = session.get(Certificate, row.renews_certificate_id)
        name = old.common_name if old is not None and old.common_name else row.domain_names[0]
        return f"Renewal of {name}"
    return f"Issuing {row.certificate_name or row.domain_names[0]}"


def _listeners(session: Session, row: CertificateRequest) -> list[str]:
    if row.renews_certificate_id is None:
        return [row.listener_id] if row.listener_id else []
    found = session.exec(
        select(ListenerCertificate.listener_id).where(
            ListenerCertificate.certificate_id == row.renews_certificate_id
        )
    ).all()
    return sorted(set(found))


def _body(session: Session, row: CertificateRequest, lines: list[str]) -> str:
    what = (
        f"renewal of {row.renews_certificate_id}" if row.renews_certificate_id else "first issue"
    )
    head = [f"Certificate request {row.id} ({what})", f"Names: {', '.join(row.domain_names)}"]
    listeners = _listeners(session, row)
    tail = [f"Listeners: {', '.join(listeners)}"] if listeners else []
    return "\n".join(head + lines + tail)


def _exists(session: Session, request_id: str, kind: str) -> bool:
    return (
        session.exec(
            select(Alert.id).where(Alert.certificate_id == request_id, Alert.threshold == kind)
        ).first()
        is not None
    )


def _add(session: Session, row: CertificateRequest, kind: str, title: str, body: str,
         now: dt.datetime) -> None:
    session.add(
        Alert(
            id=new_id("alr"),
            certificate_id=row.id,
            threshold=kind,
            listener_ids=_listeners(session, row),
            title=title,
            body=body,
            created_at=now,
        )
    )


def record_failure(session: Session, row: CertificateRequest, now: dt.datetime) -> None:
    """After `row` was marked Failed: record the streak's alert unless it has one."""
    if _exists(session, row.id, RENEWAL_FAILING):
        return
    reason = row.reason or "unknown"
    lines = [
        f"Reason: {reason}",
        f"Failed attempts: {row.failures}",
        f"NextAttemptAt: {rfc3339(row.next_attempt_at)} (backoff 1 minute to 6 hours)",
    ]
    title = f"{_subject(session, row)} is failing: {reason}"
    _add(session, row, RENEWAL_FAILING, title, _body(session, row, lines), now)


def record_recovery(session: Session, row: CertificateRequest, now: dt.datetime) -> None:
    """Before `row` is marked Issued: record the recovery alert if its streak alerted."""
    if not _exists(session, row.id, RENEWAL_FAILING) or _exists(
        session, row.id, RENEWAL_RECOVERED
    ):
        return
    lines = [f"Issued after {row.failures} failed attempt(s); last reason: {row.reason}"]
    title = f"{_subject(session, row)} succeeded again"
    _add(session, row, RENEWAL_RECOVERED, title, _body(session, row, lines), now)


def pending(engine: Engine) -> list[Outgoing]:
    """The streak alerts some alert URL still lacks, oldest first."""
    with transaction(engine) as session:
        rows = session.exec(
            select(Alert)
            .where(col(Alert.threshold).in_(ACME_KINDS), Alert.delivered == False)  # noqa: E712
            .order_by(col(Alert.created_at), col(Alert.id))
        ).all()
        return [
            Outgoing(
                row.id,
                row.title,
                f"{row.body}\n\nAlertId: {row.id}",
                frozenset(row.delivered_to),
                notify.FAILURE if row.threshold == RENEWAL_FAILING else notify.INFO,
            )
            for row in rows
        ]


def deliver_pending(engine: Engine, notifier: notify.Notifier) -> tuple[int, int]:
    """Send every pending streak alert; (delivered, still pending)."""
    return deliver(engine, notifier, pending(engine))
