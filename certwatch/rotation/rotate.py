"""Rotate a listener's certificate from the staging store, roll back, recover after a crash.

History rules (one `RotationEvent` per rotation or rollback, whatever it took):

1. Before the swap, the rotation's event is committed on its own as `InProgress` (old, new,
   role, staged id, actor). It is the journal `recover` reads after a crash.
2. The swap (`certwatch.swaps`) goes through the API's own actions with actor `rotation`:
   each is one transaction that commits only once every proxy worker serves the change; it
   records no history entry of its own (`record_history=False`): the event is the entry.
3. After the live check, one transaction settles the rotation: the event gets its final
   `Result` (`Applied`, `RolledBack`, `Rejected`) and `Reason`, and the staged certificate
   its status.

So the store names the old or the new certificate at every instant (each swap is one
transaction), and an `InProgress` event left by a crash is finished or undone by `recover`.
The whole rotation holds the node's write lock, so no other change interleaves on a node.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlmodel import Session, col, select

from certwatch import clock, errors
from certwatch.inventory.rows import get_certificate, get_listener, get_rotation_event
from certwatch.node import Node
from certwatch.pki import x509
from certwatch.rotation import staged
from certwatch.rotation.candidates import best, reject_reason, uncovered
from certwatch.rotation.swaps import (
    Outcome,
    check_and_settle,
    count,
    drop_additional,
    settle,
    swap,
)
from certwatch.store import history
from certwatch.store.db import transaction
from certwatch.store.models import Certificate, Listener, Role, RotationEvent, StagedCertificate

log = logging.getLogger(__name__)
# Rotations and rollbacks of a node run one at a time (each step still goes through the
# change pipeline, which has its own lock).
_ROTATIONS = threading.Lock()
__all__ = ["Outcome", "preview", "recover", "rollback", "rollback_target", "rotate"]


def _default(session: Session, listener: Listener) -> Certificate:
    rows = staged.in_use(session, listener.id, Role.DEFAULT)
    if not rows:
        raise errors.InvalidParameter(f"listener {listener.id} has no default certificate")
    return rows[0]


def _staged(session: Session, listener: Listener, staged_id: str) -> StagedCertificate:
    row = session.get(StagedCertificate, staged_id)
    if row is None:
        raise errors.NotFound("StagedCertificate", staged_id)
    if row.listener_id not in (None, listener.id):
        raise errors.InvalidParameter(f"{staged_id} is staged for listener {row.listener_id}")
    return row


def _incumbent(
    session: Session, listener: Listener, replaced: str | None, offered: Certificate | None
) -> tuple[Certificate, str]:
    """The certificate in use to replace, and its role.

    `replaced` names it; else the default, unless `offered` covers only an additional's names.
    """
    default = _default(session, listener)
    additional = staged.in_use(session, listener.id, Role.ADDITIONAL)
    if replaced is not None:
        for row, role in [(default, Role.DEFAULT), *((a, Role.ADDITIONAL) for a in additional)]:
            if row.id == replaced:
                return row, role
        raise errors.InvalidParameter(f"{replaced} is not a certificate of {listener.id}")
    if offered is not None:
        names = x509.host_names(offered.sans, offered.common_name)
        if uncovered(staged.incumbent(default).names, names):
            for row in additional:
                if not uncovered(staged.incumbent(row).names, names):
                    return row, Role.ADDITIONAL
    return default, Role.DEFAULT


def _choose(
    node: Node,
    session: Session,
    listener: Listener,
    staged_id: str | None,
    replaced: str | None,
    now: dt.datetime,
) -> tuple[Certificate, str, StagedCertificate | None, str | None]:
    """(certificate to replace, its role, the staged one to rotate in or None, why none)."""
    if staged_id is None:
        current, role = _incumbent(session, listener, replaced, None)
        verdicts = staged.judge(node, session, listener.id, current, now)
        winner = best(verdicts)
        if winner is not None:
            return current, role, winner.item, None
        reasons = "; ".join(f"{v.item.id}: {v.reason}" for v in verdicts)
        return current, role, None, f"no staged certificate is a candidate ({reasons or 'none'})"
    row = _staged(session, listener, staged_id)
    cert = get_certificate(session, row.certificate_id)
    current, role = _incumbent(session, listener, replaced, cert)
    if cert.id == current.id:
        return current, role, None, f"{staged_id} is already in use"
    roots = node.trusted_roots(session)
    reason = reject_reason(staged.offer(node, session, cert), staged.incumbent(current), roots, now)
    if reason is not None:
        staged.set_status(session, row, "Rejected", reason, now)
        return current, role, None, reason
    return current, role, row, None


def rotate(
    node: Node,
    listener_id: str,
    staged_id: str | None = None,
    actor: str = "rotation",
    replaced: str | None = None,
) -> Outcome:
    """Swap in a staged certificate (or the best candidate) for `replaced` (else the default,
    or the additional certificate whose names the staged one covers), check it live, and
    roll back if it fails."""
    with _ROTATIONS:
        _recover_listener(node, listener_id)
        now = clock.now()
        with transaction(node.engine) as session:
            listener = get_listener(session, listener_id)
            current, role, chosen, reason = _choose(
                node, session, listener, staged_id, replaced, now
            )
            offered = session.get(StagedCertificate, staged_id) if staged_id else chosen
            event = history.record(
                session,
                listener_id=listener_id,
                now=now,
                actor=actor,
                old=current.id,
                new=offered.certificate_id if offered else None,
                role=role,
                result="InProgress" if chosen else "Rejected",
                reason=reason,
                staged_certificate_id=offered.id if offered else None,
            )
        if chosen is None:
            count(node, listener_id, "Rejected")
            return Outcome(event.id, "Rejected", reason)
        try:
            swap(node, listener_id, role, current.id, chosen.certificate_id)
        except errors.ApiError as exc:
            return settle(node, event.id, "Rejected", f"the swap failed: {exc.code}: {exc}")
        return check_and_settle(node, event.id)


def preview(
    node: Node, listener_id: str, staged_id: str | None
) -> tuple[str | None, str | None]:
    """What `rotate` would swap in (a staged id) or why nothing, changing nothing."""
    with transaction(node.engine) as session:
        listener = get_listener(session, listener_id)
        _, _, chosen, reason = _choose(node, session, listener, staged_id, None, clock.now())
        chosen_id = chosen.id if chosen else None
        session.rollback()
    return chosen_id, reason


def rollback_target(node: Node, listener_id: str) -> tuple[str, str, str]:
    """(current default, default to restore, the event it undoes); raise when there is none."""
    now = clock.now()
    with transaction(node.engine) as session:
        current = _default(session, get_listener(session, listener_id)).id
        last = next(
            (
                e
                for e in history.events(session, listener_id)
                if e.role == Role.DEFAULT and e.result == "Applied" and e.old_certificate_id
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


def rollback(node: Node, listener_id: str, actor: str) -> Outcome:
    """Restore the default certificate that was in place before the listener's last change."""
    with _ROTATIONS:
        _recover_listener(node, listener_id)
        current, target, undone = rollback_target(node, listener_id)
        with transaction(node.engine) as session:
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
            swap(node, listener_id, Role.DEFAULT, current, target)
        except errors.ApiError as exc:
            settle(node, event.id, "Rejected", f"the swap failed: {exc.code}: {exc}")
            raise
        return settle(node, event.id, "Applied", f"restored {target}, in place before {undone}")


def _recover_listener(node: Node, listener_id: str) -> None:
    with transaction(node.engine) as session:
        pending = session.exec(
            select(RotationEvent.id)
            .where(RotationEvent.listener_id == listener_id, RotationEvent.result == "InProgress")
            .order_by(col(RotationEvent.seq))
        ).all()
    for event_id in pending:
        _recover_one(node, event_id)


def _in_place(session: Session, event: RotationEvent) -> str:
    """Which of the event's certificates the listener uses now: old, new, both or neither."""
    ids = {row.id for row in staged.in_use(session, event.listener_id, event.role)}
    has_old, has_new = event.old_certificate_id in ids, event.new_certificate_id in ids
    return {(True, False): "old", (False, True): "new", (True, True): "both"}.get(
        (has_old, has_new), "neither"
    )


def _recover_one(node: Node, event_id: str) -> Outcome:
    """Finish or undo one rotation a crash left `InProgress`."""
    with transaction(node.engine) as session:
        event = get_rotation_event(session, event_id)
        state = _in_place(session, event)
    old, new, noted = event.old_certificate_id, event.new_certificate_id, event.reason
    failed = noted if noted and noted.startswith("live check failed") else None
    if state == "both" and new is not None:  # additional: between associate and disassociate
        drop_additional(node, event.listener_id, new)
        state = "old"
    if state == "old":
        kept = (
            f"{failed}; {old} restored"
            if failed
            else f"interrupted before the swap completed; {old} kept"
        )
        return settle(node, event_id, "RolledBack", kept)
    if state == "neither":
        return settle(
            node, event_id, "RolledBack", f"interrupted; neither {old} nor {new} is in place"
        )
    if event.staged_certificate_id is None:
        return settle(node, event_id, "Applied", f"{noted}; finished after a restart")
    return check_and_settle(node, event_id)


def recover(node: Node) -> None:
    """At start-up (after the proxy serves the store): settle every `InProgress` rotation."""
    with transaction(node.engine) as session:
        listeners = session.exec(
            select(RotationEvent.listener_id).where(RotationEvent.result == "InProgress")
        ).all()
    with _ROTATIONS:
        for listener_id in dict.fromkeys(listeners):
            _recover_listener(node, listener_id)
