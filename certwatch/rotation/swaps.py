"""The steps of a rotation after its `InProgress` event: swap, live check, settle.

A swap applies the inventory's own rules (`certwatch.inventory.listeners`) through the one
change pipeline, with actor `rotation`: the default by `set_default`; an additional
certificate by associating the new one, then disassociating the old one (the listener never
lacks either). Each step is one transaction that commits once every proxy worker serves it;
the swap records no history entry of its own, the rotation's event is the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from certwatch import clock, errors
from certwatch.inventory.change import Change
from certwatch.inventory.listeners import associate, disassociate, set_default
from certwatch.inventory.rows import get_listener, get_rotation_event
from certwatch.node import Node
from certwatch.rotation import staged
from certwatch.rotation.liveness import live_check
from certwatch.store.db import transaction
from certwatch.store.models import Certificate, Listener, Role, StagedCertificate

log = logging.getLogger(__name__)
SWAP_ACTOR = "rotation"


@dataclass(frozen=True)
class Outcome:
    """What a rotation or rollback did: the answer of the API actions."""

    event_id: str
    result: str
    reason: str | None


def swap(node: Node, listener_id: str, role: str, old: str | None, new: str) -> None:
    """Make `new` serve in place of `old`; raise `errors.ApiError` (nothing changed) if refused."""
    if role == Role.DEFAULT:
        _change(node, lambda c, lsn: set_default(c, lsn, [new]), listener_id)
        return
    if old is None:
        raise errors.InvalidParameter(f"no additional certificate of {listener_id} to replace")
    _change(node, lambda c, lsn: associate(c, lsn, [new]), listener_id)
    _change(node, lambda c, lsn: disassociate(c, lsn, [old]), listener_id)


def drop_additional(node: Node, listener_id: str, certificate_id: str) -> None:
    """Disassociate one additional certificate (crash recovery, between associate and
    disassociate)."""
    _change(node, lambda c, lsn: disassociate(c, lsn, [certificate_id]), listener_id)


def _change(node: Node, step: Callable[[Change, Listener], None], listener_id: str) -> None:
    """One step of a swap through the pipeline; the rotation's event is its history entry."""

    def work(change: Change) -> None:
        step(change, get_listener(change.session, listener_id))

    node.changes.run(work, actor=SWAP_ACTOR, record_history=False)


def check_and_settle(node: Node, event_id: str) -> Outcome:
    """Probe the listener after a swap; keep the new certificate or restore the old one."""
    with transaction(node.engine) as session:
        event = get_rotation_event(session, event_id)
        if event.new_certificate_id is None:
            raise errors.InvalidParameter(f"rotation {event_id} names no new certificate")
        check = live_check(node, session, event.listener_id, event.new_certificate_id, event.role)
        if check.problems:
            event.reason = f"live check failed: {'; '.join(check.problems)}"
            session.add(event)
    if check.names is None:
        return settle(node, event_id, "Applied", "not probed: the listener is not served here")
    if not check.problems:
        return settle(node, event_id, "Applied", f"served live for {check.names}")
    old, reason = event.old_certificate_id, event.reason
    if old is None:
        return settle(node, event_id, "Applied", f"{reason}; nothing to restore, the new one stays")
    try:
        swap(node, event.listener_id, event.role, event.new_certificate_id, old)
    except errors.ApiError as exc:
        kept = f"{reason}; restoring {old} failed ({exc.code}: {exc}), the new one stays"
        return settle(node, event_id, "Applied", kept)
    outcome = settle(node, event_id, "RolledBack", f"{reason}; {old} restored")
    node.notify(
        f"certwatch rolled back a certificate rotation on {event.listener_id}",
        f"Listener {event.listener_id} ({event.role} certificate): {event.new_certificate_id} "
        f"was swapped in, then {outcome.reason}. Rotation event {event_id}.",
    )
    return outcome


def settle(node: Node, event_id: str, result: str, reason: str | None) -> Outcome:
    """Give the rotation its final result and update the staged row."""
    now = clock.now()
    with transaction(node.engine) as session:
        event = get_rotation_event(session, event_id)
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
                staged.mark_applied(node, session, row, event.listener_id, replaced, now)
        elif row is not None and result == "RolledBack":
            staged.set_status(session, row, "Rejected", f"rolled back: {reason}", now)
    if event.staged_certificate_id is not None:  # a rotation, not a rollback
        count(node, event.listener_id, result)
    log.info(
        "rotation %s on %s: %s (%s)", event_id, event.listener_id, result, reason,
        extra={
            "listener_id": event.listener_id, "rotation_event_id": event_id,
            "certificate_id": event.new_certificate_id, "result": result,
        },
    )
    return Outcome(event_id, result, reason)


def count(node: Node, listener_id: str, result: str) -> None:
    """One more rotation in `certwatch_rotations_total`."""
    node.monitoring.rotations.labels(listener_id=listener_id, result=result).inc()
