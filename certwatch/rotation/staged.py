"""Staged certificates in the store: judge them against the certificates listeners use.

The rules themselves are `certwatch.candidates`; this module reads their inputs from the
store and keeps each staged certificate's `Status` and `Reason`:
`Pending` → `Applied` | `Rejected` | `Superseded` (a pending one beaten by a later-expiring
certificate that was applied to its listener).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509 as cx509
from sqlmodel import Session, col, or_, select

from certwatch.ids import new_id
from certwatch.inventory.certificates import store_certificate
from certwatch.inventory.change import Change
from certwatch.inventory.rows import get_certificate, get_listener
from certwatch.node import Node
from certwatch.pki import x509
from certwatch.rotation.candidates import (
    Incumbent,
    Offer,
    Verdict,
    against,
    offer_problem,
    reject_reason,
    revocation_text,
    uncovered,
)
from certwatch.store.models import (
    Certificate,
    Listener,
    ListenerCertificate,
    RevocationState,
    RevocationStatus,
    Role,
    RotationEvent,
    StagedCertificate,
    StagedStatus,
)

FILE_ACTOR = "staging"

NOTHING_IN_USE = Incumbent(names=(), not_after=dt.datetime.min.replace(tzinfo=dt.UTC))


def incumbent(row: Certificate) -> Incumbent:
    """The rule inputs of a certificate in use."""
    return Incumbent(x509.host_names(row.sans, row.common_name), row.not_after)


def revoked(session: Session, certificate_id: str) -> str | None:
    """Why the last revocation check found the certificate (or its chain) revoked, or None."""
    state = session.exec(
        select(RevocationState)
        .where(
            RevocationState.certificate_id == certificate_id,
            RevocationState.status == RevocationStatus.REVOKED,
        )
        .order_by(col(RevocationState.position))
    ).first()
    if state is None:
        return None
    return revocation_text(
        state.common_name, state.position, state.revoked_at, state.reason, state.source, state.url
    )


def offer(node: Node, session: Session, row: Certificate) -> Offer:
    """The rule inputs of a staged certificate (its chain, whether its stored key matches, and
    whether it was found revoked)."""
    chain = x509.parse_chain(row.chain_pem)
    why = revoked(session, row.id)
    if row.key_encrypted is None:
        return Offer(chain, key_matches=False, revoked=why)
    key = x509.parse_private_key(node.keybox.open(row.key_encrypted))
    return Offer(chain, key_matches=x509.key_matches(chain[0], key), revoked=why)


def in_use(session: Session, listener_id: str, role: str) -> list[Certificate]:
    """The certificates a listener uses in `role`, oldest link first."""
    query = (
        select(Certificate)
        .join(ListenerCertificate, col(ListenerCertificate.certificate_id) == col(Certificate.id))
        .where(ListenerCertificate.listener_id == listener_id, ListenerCertificate.role == role)
        .order_by(col(ListenerCertificate.created_at), col(Certificate.id))
    )
    return list(session.exec(query).all())


def pool(session: Session, listener_id: str) -> list[tuple[StagedCertificate, Certificate]]:
    """Staged certificates that may still go to this listener, oldest first.

    Pending ones scoped to it or to no listener, and applied unscoped ones it never had.
    """
    rows = session.exec(
        select(StagedCertificate, Certificate)
        .join(Certificate, col(Certificate.id) == col(StagedCertificate.certificate_id))
        .where(
            or_(
                col(StagedCertificate.listener_id) == listener_id,
                col(StagedCertificate.listener_id).is_(None),
            ),
            col(StagedCertificate.status).in_(["Pending", "Applied"]),
        )
        .order_by(col(StagedCertificate.created_at), col(StagedCertificate.id))
    ).all()
    if all(staged.status == "Pending" for staged, _ in rows):  # none to check against history
        return list(rows)
    had = set(
        session.exec(
            select(RotationEvent.new_certificate_id).where(
                RotationEvent.listener_id == listener_id, RotationEvent.result == "Applied"
            )
        ).all()
    )
    return [
        (staged, cert)
        for staged, cert in rows
        if staged.status == "Pending" or (staged.listener_id is None and cert.id not in had)
    ]


def judge(
    node: Node, session: Session, listener_id: str, current: Certificate, now: dt.datetime
) -> list[Verdict[StagedCertificate]]:
    """Every staged certificate of the listener's pool, judged against `current` (the trusted
    roots are read only when there is one to judge)."""
    candidates = [(s, cert) for s, cert in pool(session, listener_id) if cert.id != current.id]
    if not candidates:
        return []
    target = incumbent(current)
    roots = node.trusted_roots(session)
    return [
        Verdict(
            staged, cert.not_after, reject_reason(offer(node, session, cert), target, roots, now)
        )
        for staged, cert in candidates
    ]


def first_verdict(
    candidate: Offer,
    incumbents: Sequence[Certificate],
    roots: Sequence[cx509.Certificate],
    now: dt.datetime,
) -> str | None:
    """Why `candidate` replaces none of `incumbents` (None: it replaces one, or there is none).

    The reason shown is the one against the first incumbent whose names it covers, if any.
    """
    problem = offer_problem(candidate, roots, now)
    if problem is not None:  # whatever the incumbent
        return problem
    if not incumbents:
        return against(candidate, NOTHING_IN_USE)
    targets = [incumbent(row) for row in incumbents]
    reasons = [against(candidate, target) for target in targets]
    if None in reasons:
        return None
    names = x509.dns_names(candidate.chain[0])
    covering = [r for t, r in zip(targets, reasons, strict=True) if not uncovered(t.names, names)]
    return (covering or reasons)[0]


def incumbents_for(session: Session, listener_id: str | None) -> list[Certificate]:
    """The Server certificates a staged certificate could replace: one listener's, or all."""
    query = (
        select(Certificate)
        .join(ListenerCertificate, col(ListenerCertificate.certificate_id) == col(Certificate.id))
        .join(Listener, col(Listener.id) == col(ListenerCertificate.listener_id))
        .where(col(ListenerCertificate.role).in_([Role.DEFAULT, Role.ADDITIONAL]))
        # Listeners oldest first; in each, the default ("default" > "additional"), then the
        # additional ones, oldest link first.
        .order_by(
            col(Listener.created_at),
            col(Listener.id),
            col(ListenerCertificate.role).desc(),
            col(ListenerCertificate.created_at),
            col(Certificate.id),
        )
    )
    if listener_id:
        query = query.where(ListenerCertificate.listener_id == listener_id)
    return list(session.exec(query).all())


def set_status(
    session: Session, staged: StagedCertificate, status: str, reason: str | None, now: dt.datetime
) -> None:
    """Record a staged certificate's new status, in the caller's transaction."""
    staged.status, staged.reason, staged.updated_at = status, reason, now
    session.add(staged)


def mark_applied(
    node: Node,
    session: Session,
    staged: StagedCertificate,
    listener_id: str,
    replaced: Certificate,
    now: dt.datetime,
) -> None:
    """`staged` replaced `replaced`: pending candidates for it that expire no later lose."""
    applied = get_certificate(session, staged.certificate_id)
    for verdict in judge(node, session, listener_id, replaced, now):
        other = verdict.item
        beaten = verdict.reason is None and verdict.not_after <= applied.not_after
        if other.id != staged.id and other.status == "Pending" and beaten:
            why = f"superseded by {staged.id} (expires later), applied to {listener_id}"
            set_status(session, other, "Superseded", why, now)
    set_status(session, staged, "Applied", f"applied to {listener_id}", now)


def stage(
    node: Node, change: Change, chain_pem: str, key_pem: str, listener_id: str | None
) -> StagedCertificate:
    """Store a renewed certificate (upload rules) and stage it, judged at once as a candidate
    for the certificates in use (of `listener_id` only, when given)."""
    if listener_id is not None:
        get_listener(change.session, listener_id)
    roots = node.trusted_roots(change.session)
    row = store_certificate(change, node.keybox, roots, "staged", "Server", chain_pem, key_pem)
    row.name = f"{row.common_name or row.id} (staged)"
    # store_certificate refused a key that does not match: no need to parse and compare again.
    candidate = Offer(x509.parse_chain(row.chain_pem), key_matches=True)
    reason = first_verdict(
        candidate, incumbents_for(change.session, listener_id), roots, change.now
    )
    entry = StagedCertificate(
        id=new_id("stg"),
        certificate_id=row.id,
        listener_id=listener_id,
        status=StagedStatus.REJECTED if reason else StagedStatus.PENDING,
        reason=reason,
        source="file" if change.actor == FILE_ACTOR else "api",
        created_at=change.now,
        updated_at=change.now,
    )
    change.session.add(entry)
    return entry
