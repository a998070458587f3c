"""A listener's certificate history: every change of its certificates is a RotationEvent."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from certwatch.clock import rfc3339
from certwatch.ids import new_id
from certwatch.store.models import Listener, Role, RotationEvent


def record(
    session: Session,
    *,
    listener_id: str,
    now: dt.datetime,
    actor: str,
    old: str | None,
    new: str | None,
    role: str = Role.DEFAULT,
    result: str = "Applied",
    reason: str | None = None,
    staged_certificate_id: str | None = None,
) -> RotationEvent:
    """Add one history entry in the caller's transaction, numbered after the listener's last
    one while its row is locked (the database also keeps the numbers unique per listener)."""
    session.get(Listener, listener_id, with_for_update=True)
    last = select(func.max(RotationEvent.seq)).where(RotationEvent.listener_id == listener_id)
    event = RotationEvent(
        id=new_id("rot"),
        listener_id=listener_id,
        seq=(session.exec(last).one() or 0) + 1,
        time=now,
        actor=actor,
        old_certificate_id=old,
        new_certificate_id=new,
        role=role,
        result=result,
        reason=reason,
        staged_certificate_id=staged_certificate_id,
    )
    session.add(event)
    return event


def events(session: Session, listener_id: str) -> list[RotationEvent]:
    """The listener's history, newest first."""
    query = (
        select(RotationEvent)
        .where(RotationEvent.listener_id == listener_id)
        .order_by(col(RotationEvent.seq).desc())
    )
    return list(session.exec(query).all())


def event_view(event: RotationEvent) -> dict[str, Any]:
    """The API form of a history entry."""
    return {
        "RotationEventId": event.id,
        "Time": rfc3339(event.time),
        "Actor": event.actor,
        "OldCertificateId": event.old_certificate_id,
        "NewCertificateId": event.new_certificate_id,
        "Role": event.role,
        "Result": event.result,
        "Reason": event.reason,
    }
