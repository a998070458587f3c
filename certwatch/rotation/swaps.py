"""The steps of a rotation after its `InProgress` event: swap, live check, settle.

A swap goes through the API's own actions, called with actor `rotation`: the default through
`UpdateListenerAttribute`; an additional certificate by associating the new one, then
disassociating the old one (the listener never lacks either). Each call is one transaction
that commits once every proxy worker serves it; the swap records no history entry of its own,
the rotation's event is the entry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from certwatch import clock, errors
from certwatch.rotation import staged
from certwatch.rotation.liveness import live_check
from certwatch.store.db import transaction
from certwatch.store.models import Certificate, RotationEvent, StagedCertificate

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


def swap(service: Service, listener_id: str, role: str, old: str | None, new: str) -> None:
    """Make `new` serve in place of `old`; raise `errors.ApiError` (nothing changed) if refused."""
    if role == "default":
        service.call(
            "UpdateListenerAttribute",
            {"ListenerId": listener_id, "CertificateIds": [new]},
            actor=SWAP_ACTOR,
            record_history=False,
        )
        return
    for action, ids in (("Associate", [new]), ("Disassociate", [old])):
        service.call(
            f"{action}AdditionalCertificatesWithListener",
            {"ListenerId": listener_id, "AdditionalCertificateIds": ids},
            actor=SWAP_ACTOR,
            record_history=False,
        )


def check_and_settle(service: Service, event_id: str) -> Outcome:
    """Probe the listener after a swap; keep the new certificate or restore the old one."""
    with transaction(service.engine) as session:
        event = session.get(RotationEvent, event_id)
        assert event is not None and event.new_certificate_id is not None
        check = live_check(
            service, session, event.listener_id, event.new_certificate_id, event.role
        )
        if check.problems:
            event.reason = f"live check failed: {'; '.join(check.problems)}"
            session.add(event)
    if check.names is None:
        return settle(service, event_id, "Applied", "not probed: the listener is not served here")
    if not check.problems:
        return settle(service, event_id, "Applied", f"served live for {check.names}")
    old, reason = event.old_certificate_id, event.reason
    assert old is not None
    try:
        swap(service, event.listener_id, event.role, event.new_certificate_id, old)
    except errors.ApiError as exc:
        kept = f"{reason}; restoring {old} failed ({exc.code}: {exc}), the new one stays"
        return settle(service, event_id, "Applied", kept)
    outcome = settle(service, event_id, "RolledBack", f"{reason}; {old} restored")
    service.notify(
        f"certwatch rolled back a certificate rotation on {event.listener_id}",
        f"Listener {event.listener_id} ({event.role} certificate): {event.new_certificate_id} "
        f"was swapped in, then {outcome.reason}. Rotation event {event_id}.",
    )
    return outcome


def settle(service: Service, event_id: str, result: str, reason: str | None) -> Outcome:
    """Give the rotation its final result and update the staged row."""
    now = clock.now()
    with transaction(service.engine) as session:
        event = session.get(RotationEvent, event_id)
        assert event is not None
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
    if event.staged_certificate_id is not None:  # a rotation, not a rollback
        count(service, event.listener_id, result)
    log.info("rotation %s on %s: %s (%s)", event_id, event.listener_id, result, reason)
    return Outcome(event_id, result, reason)


def count(service: Service, listener_id: str, result: str) -> None:
    """One more rotation in `certwatch_rotations_total`."""
    service.monitoring.rotations.labels(listener_id=listener_id, result=result).inc()
