"""Rotate a listener's certificate from the staging store, check it live, roll back, recover.

History rules (one `RotationEvent` per rotation or rollback, whatever it took):

1. Before the swap, the rotation's event is committed on its own as `InProgress` (old, new,
   staged id, actor). It is the journal `recover` reads after a crash.
2. The swap is `UpdateListenerAttribute` (or Associate/Disassociate for an additional
   certificate) called with actor `rotation`: one transaction that commits only once every
   proxy worker serves the change, and that records its own history entries.
3. After the live check, one transaction settles the rotation: it folds the swap's own
   entries (actor `rotation`, after the event) into the event, which gets its final `Result`
   (`Applied`, `RolledBack`, `Rejected`) and `Reason`, and updates the staged certificate.

So the store names the old or the new certificate at every instant (each swap is one
transaction), and an `InProgress` event left by a crash is finished or undone by `recover`.
The whole rotation holds the service's write lock, so no other change interleaves on a node.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from certwatch import clock, errors, history, staged
from certwatch.candidates import best, reject_reason
from certwatch.liveness import live_check
from certwatch.models import Certificate, Listener, RotationEvent, StagedCertificate
from certwatch.store import transaction

if TYPE_CHECKING:
    from certwatch.service import Service

log = logging.getLogger(__name__)
SWAP_ACTOR = "rotation"


@dataclass(frozen=True)
class Outcome:
    """What a rotation or rollback did: the answer of the API actions."""

    event_id: str
    result: str
    reason: str | None


def _default(session: Session, listener: Listener) -> Certificate:
    rows = staged.in_use(session, listener.id, "default")
    if not rows:
        raise errors.InvalidParameter(f"listener {listener.id} has no default certificate")
    return rows[0]


def _listener(session: Session, listener_id: str) -> Listener:
    row = session.get(Listener, listener_id)
    if row is None:
        raise errors.NotFound("Listener", listener_id)
    return row


def _choose(
    service: Service, session: Session, listener: Listener, staged_id: str | None, now: dt.datetime
) -> tuple[StagedCertificate | None, str | None]:
    """The staged certificate to rotate in, or None and why none."""
    current = _default(session, listener)
    roots = service.trusted_roots(session)
    verdicts = staged.judge(service, session, listener.id, current, roots, now)
    if staged_id is None:
        winner = best(verdicts)
        if winner is not None:
            return winner.item, None
        reasons = "; ".join(f"{v.item.id}: {v.reason}" for v in verdicts)
        return None, f"no staged certificate is a candidate ({reasons or 'none staged'})"
    row = session.get(StagedCertificate, staged_id)
    if row is None:
        raise errors.NotFound("StagedCertificate", staged_id)
    if row.listener_id not in (None, listener.id):
        raise errors.InvalidParameter(f"{staged_id} is staged for listener {row.listener_id}")
    cert = session.get(Certificate, row.certificate_id)
    assert cert is not None
    if cert.id == current.id:
        return None, f"{staged_id} is already the default certificate"
    incumbent = staged.incumbent(current)
    reason = reject_reason(staged.offer(service, cert), incumbent, roots, now)
    if reason is not None:
        staged.set_status(session, row, "Rejected", reason, now)
        return None, reason
    return row, None


def rotate(
    service: Service, listener_id: str, staged_id: str | None = None, actor: str = SWAP_ACTOR
) -> Outcome:
    """Swap in a staged certificate (or the best candidate), check it live, roll back if bad."""
    with service.write_lock:
        _recover_listener(service, listener_id)
        now = clock.now()
        with transaction(service.engine) as session:
            listener = _listener(session, listener_id)
            old = _default(session, listener).id
            chosen, reason = _choose(service, session, listener, staged_id, now)
            new = chosen.certificate_id if chosen else None
            event = history.record(
                session,
                listener_id=listener_id,
                now=now,
                actor=actor,
                old=old,
                new=new,
                result="InProgress" if chosen else "Rejected",
                reason=reason,
                staged_certificate_id=chosen.id if chosen else staged_id,
            )
        if chosen is None:
            service.monitoring.rotations.labels(listener_id=listener_id, result="Rejected").inc()
            return Outcome(event.id, "Rejected", reason)
        try:
            _swap(service, listener_id, new)
        except errors.ApiError as exc:
            return _settle(service, event.id, "Rejected", f"the swap failed: {exc.code}: {exc}")
        return _check_and_settle(service, event.id)


def _swap(service: Service, listener_id: str, certificate_id: str | None) -> None:
    service.call(
        "UpdateListenerAttribute",
        {"ListenerId": listener_id, "CertificateIds": [certificate_id]},
        actor=SWAP_ACTOR,
    )


def _check_and_settle(service: Service, event_id: str) -> Outcome:
    """Probe the listener after a swap; keep the new certificate or restore the old one."""
    with transaction(service.engine) as session:
        event = session.get(RotationEvent, event_id)
        assert event is not None and event.new_certificate_id is not None
        check = live_check(service, session, event.listener_id, event.new_certificate_id)
        if check.problems:
            event.reason = f"live check failed: {'; '.join(check.problems)}"
            session.add(event)
    if check.names is None:
        return _settle(service, event_id, "Applied", "not probed: the listener is not served here")
    if not check.problems:
        return _settle(service, event_id, "Applied", f"served live for {check.names}")
    old, reason = event.old_certificate_id, event.reason
    try:
        _swap(service, event.listener_id, old)
    except errors.ApiError as exc:
        kept = f"{reason}; restoring {old} failed ({exc.code}: {exc}), the new one stays"
        return _settle(service, event_id, "Applied", kept)
    outcome = _settle(service, event_id, "RolledBack", f"{reason}; {old} restored")
    service.notify(
        f"certwatch rolled back a certificate rotation on {event.listener_id}",
        f"Listener {event.listener_id}: {event.new_certificate_id} was swapped in, then "
        f"{outcome.reason}. Rotation event {event_id}.",
    )
    return outcome


def _fold_swap_entries(session: Session, event: RotationEvent) -> None:
    """Remove the swap's own history entries after `event`, keeping `seq` contiguous."""
    later = session.exec(
        select(RotationEvent)
        .where(RotationEvent.listener_id == event.listener_id, RotationEvent.seq > event.seq)
        .order_by(col(RotationEvent.seq))
    ).all()
    kept = []
    for entry in later:
        if entry.actor == SWAP_ACTOR and entry.role == event.role and entry.result == "Applied":
            session.delete(entry)
        else:
            kept.append(entry)
    session.flush()
    for seq, entry in enumerate(kept, start=event.seq + 1):
        entry.seq = seq
        session.add(entry)


def _settle(service: Service, event_id: str, result: str, reason: str | None) -> Outcome:
    """Give the rotation its final result, fold the swap entries, update the staged row."""
    now = clock.now()
    with transaction(service.engine) as session:
        event = session.get(RotationEvent, event_id)
        assert event is not None
        _fold_swap_entries(session, event)
        event.result, event.reason = result, reason
        session.add(event)
        row = (
            session.get(StagedCertificate, event.staged_certificate_id)
            if event.staged_certificate_id
            else None
        )
        if row is not None and result == "Applied":
            replaced = session.get(Certificate, event.old_certificate_id or "")
            if replaced is not None:
                staged.mark_applied(service, session, row, event.listener_id, replaced, now)
        elif row is not None and result == "RolledBack":
            staged.set_status(session, row, "Rejected", f"rolled back: {reason}", now)
    service.monitoring.rotations.labels(listener_id=event.listener_id, result=result).inc()
    log.info("rotation %s on %s: %s (%s)", event_id, event.listener_id, result, reason)
    return Outcome(event_id, result, reason)


def preview(
    service: Service, listener_id: str, staged_id: str | None
) -> tuple[str | None, str | None]:
    """What `rotate` would swap in (a staged id) or why nothing, changing nothing."""
    with transaction(service.engine) as session:
        chosen, reason = _choose(
            service, session, _listener(session, listener_id), staged_id, clock.now()
        )
        session.rollback()
    return (chosen.id if chosen else None), reason


def rollback_target(service: Service, listener_id: str) -> tuple[str, str, str]:
    """(current default, default to restore, the event it undoes); raise when there is none."""
    now = clock.now()
    with transaction(service.engine) as session:
        current = _default(session, _listener(session, listener_id)).id
        last = next(
            (
                e
                for e in history.events(session, listener_id)
                if e.role == "default" and e.result == "Applied" and e.old_certificate_id
            ),
            None,
        )
        if last is None or last.old_certificate_id is None:
            raise errors.BadRequest(
                f"listener {listener_id} has no earlier default certificate to restore",
                code="NoPreviousCertificate",
            )
        target = session.get(Certificate, last.old_certificate_id)
        if target is None:
            raise errors.NotFound("Certificate", last.old_certificate_id)
        if not target.not_before <= now < target.not_after:
            raise errors.CertificateExpired(
                f"certificate {target.id}, in place before {last.id}, is not valid now"
            )
    return current, target.id, last.id


def rollback(service: Service, listener_id: str, actor: str) -> Outcome:
    """Restore the default certificate that was in place before the listener's last change."""
    with service.write_lock:
        _recover_listener(service, listener_id)
        current, target, undone = rollback_target(service, listener_id)
        with transaction(service.engine) as session:
            event = history.record(
                session,
                listener_id=listener_id,
                now=clock.now(),
                actor=actor,
                old=current,
                new=target,
                result="InProgress",
                reason=f"rollback of {undone}",
            )
        try:
            _swap(service, listener_id, target)
        except errors.ApiError as exc:
            _settle(service, event.id, "Rejected", f"the swap failed: {exc.code}: {exc}")
            raise
        return _settle(service, event.id, "Applied", f"restored {target}, in place before {undone}")


def _recover_listener(service: Service, listener_id: str) -> None:
    with transaction(service.engine) as session:
        pending = session.exec(
            select(RotationEvent.id)
            .where(RotationEvent.listener_id == listener_id, RotationEvent.result == "InProgress")
            .order_by(col(RotationEvent.seq))
        ).all()
    for event_id in pending:
        _recover_one(service, event_id)


def _recover_one(service: Service, event_id: str) -> Outcome:
    """Finish or undo one rotation a crash left `InProgress`."""
    with transaction(service.engine) as session:
        event = session.get(RotationEvent, event_id)
        assert event is not None
        listener = session.get(Listener, event.listener_id)
        rows = staged.in_use(session, event.listener_id, event.role) if listener else []
        current = rows[0].id if rows else None
        noted = event.reason
    if current == event.old_certificate_id:
        why = noted if noted and noted.startswith("live check failed") else None
        kept = (
            f"{why}; {current} restored" if why else f"interrupted before the swap; {current} kept"
        )
        return _settle(service, event_id, "RolledBack", kept)
    if current != event.new_certificate_id:
        return _settle(service, event_id, "RolledBack", f"interrupted; {current} is in place")
    if event.staged_certificate_id is None:
        return _settle(service, event_id, "Applied", f"{noted}; finished after a restart")
    return _check_and_settle(service, event_id)


def recover(service: Service) -> None:
    """At start-up (after the proxy serves the store): settle every `InProgress` rotation."""
    with transaction(service.engine) as session:
        listeners = session.exec(
            select(RotationEvent.listener_id).where(RotationEvent.result == "InProgress")
        ).all()
    with service.write_lock:
        for listener_id in dict.fromkeys(listeners):
            _recover_listener(service, listener_id)
