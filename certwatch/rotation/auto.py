"""Automatic rotation, and the staged-renewal lookup that alerts name.

`auto_rotate` is a scan hook (run by the leader before each scan); `StagedRenewals`
implements the alerts' `RenewalLookup` port. `app/service.py` wires both.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlmodel import Session, col, select

from certwatch import clock
from certwatch.alerts.renewal import StagedRenewal
from certwatch.config import RotationConfig
from certwatch.node import Node
from certwatch.pki import x509
from certwatch.rotation import rotate, staged
from certwatch.rotation.candidates import best, uncovered
from certwatch.store.db import transaction
from certwatch.store.models import (
    Certificate,
    Listener,
    ListenerCertificate,
    Role,
    StagedCertificate,
    StagedStatus,
)

log = logging.getLogger(__name__)


def staged_rotation_times(
    config: RotationConfig, session: Session, now: dt.datetime | None = None
) -> list[tuple[str, dt.datetime]]:
    """(certificate id, when it is rotated) for each certificate a running listener serves
    (default or additional, not ACME-managed) that a pending staged certificate would replace:
    `rotation.before_days` before its NotAfter (now, once that has passed), with `rotation.auto`
    on. A candidate counts when it is staged for that listener or for any, expires later and
    covers every name (it is judged in full when it rotates, not here, so reading metrics stays
    cheap)."""
    if not config.auto:
        return []
    moment = clock.now() if now is None else now
    pending = session.exec(
        select(StagedCertificate.listener_id, Certificate)
        .join(Certificate, col(Certificate.id) == col(StagedCertificate.certificate_id))
        .where(StagedCertificate.status == StagedStatus.PENDING)
    ).all()
    if not pending:
        return []
    offers = [
        (listener_id, x509.host_names(cert.sans, cert.common_name), cert.not_after)
        for listener_id, cert in pending
    ]
    in_use = session.exec(
        select(ListenerCertificate.listener_id, Certificate)
        .join(Certificate, col(Certificate.id) == col(ListenerCertificate.certificate_id))
        .join(Listener, col(Listener.id) == col(ListenerCertificate.listener_id))
        .where(
            Listener.status == "Running",
            Certificate.managed == False,  # noqa: E712 (SQL, not Python)
            col(ListenerCertificate.role).in_([Role.DEFAULT, Role.ADDITIONAL]),
        )
    ).all()
    due: dict[str, dt.datetime] = {}
    for listener_id, cert in in_use:
        names = x509.host_names(cert.sans, cert.common_name)
        if any(
            target in (None, listener_id) and not_after > cert.not_after
            and not uncovered(names, offered)
            for target, offered, not_after in offers
        ):
            due[cert.id] = max(cert.not_after - dt.timedelta(days=config.before_days), moment)
    return sorted(due.items())



class StagedRenewals:
    """The alerts' renewal lookup: the best staged replacement for a certificate in use."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def __call__(
        self, session: Session, certificate: Certificate, listener: Listener, now: dt.datetime
    ) -> StagedRenewal | None:
        """The candidate that would replace `certificate` on `listener`, and when."""
        if certificate.type != "Server":
            return None
        verdicts = staged.judge(self._node, session, listener.id, certificate, now)
        winner = best(verdicts)
        if winner is None:
            return None
        config = self._node.config.rotation
        due = certificate.not_after - dt.timedelta(days=config.before_days)
        return StagedRenewal(
            staged_certificate_id=winner.item.id,
            certificate_id=winner.item.certificate_id,
            not_after=winner.not_after,
            rotates_at=max(due, now) if config.auto else None,
        )


def auto_rotate(node: Node) -> None:
    """Scan hook: on every running listener, rotate each default or additional certificate
    that is due (`rotation.before_days` or less left) when a staged candidate is ready."""
    if not node.config.rotation.auto:
        return
    now = clock.now()
    horizon = now + dt.timedelta(days=node.config.rotation.before_days)
    with transaction(node.engine) as session:
        due = session.exec(
            select(Listener, Certificate)
            .join(ListenerCertificate, col(ListenerCertificate.listener_id) == col(Listener.id))
            .join(Certificate, col(Certificate.id) == col(ListenerCertificate.certificate_id))
            .where(
                Listener.status == "Running",
                col(ListenerCertificate.role).in_([Role.DEFAULT, Role.ADDITIONAL]),
                Certificate.not_after <= horizon,
            )
            # Per listener: the default first ("default" > "additional"), then oldest link.
            .order_by(
                col(Listener.id),
                col(ListenerCertificate.role).desc(),
                col(ListenerCertificate.created_at),
                col(Certificate.id),
            )
        ).all()
    lookup = StagedRenewals(node)
    for listener, current in due:
        try:
            with transaction(node.engine) as session:
                renewal = lookup(session, current, listener, now)
            if renewal is not None:
                rotate.rotate(
                    node, listener.id, renewal.staged_certificate_id, replaced=current.id
                )
        except Exception:
            log.exception(
                "automatic rotation of %s on %s failed", current.id, listener.id,
                extra={"certificate_id": current.id, "listener_id": listener.id},
            )

