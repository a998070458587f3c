"""Wiring of the certificate lifecycle into a service: scan hooks, staged-renewal lookup, recovery.

`install(service)` (from `Service.__init__`) sets the lookup and adds three scan hooks, run
by the leader before each scan (the first one at start, after the proxy serves the store):
`recover` (settle rotations a crash left `InProgress`), the staging-directory intake, and
automatic rotation.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from certwatch import clock
from certwatch.alerts.renewal import StagedRenewal
from certwatch.rotation import intake as staging
from certwatch.rotation import rotate as rotation
from certwatch.rotation import staged
from certwatch.rotation.candidates import best
from certwatch.rotation.rotate import recover
from certwatch.store.db import transaction
from certwatch.store.models import Certificate, Listener, ListenerCertificate

if TYPE_CHECKING:
    from certwatch.service import Service

log = logging.getLogger(__name__)
__all__ = ["StagedRenewals", "auto_rotate", "install", "recover"]


class StagedRenewals:
    """`service.renewal_lookup`: the best staged replacement for a certificate in use."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def __call__(
        self, session: Session, certificate: Certificate, listener: Listener, now: dt.datetime
    ) -> StagedRenewal | None:
        """The candidate that would replace `certificate` on `listener`, and when."""
        if certificate.type != "Server":
            return None
        verdicts = staged.judge(self._service, session, listener.id, certificate, now)
        winner = best(verdicts)
        if winner is None:
            return None
        config = self._service.config.rotation
        due = certificate.not_after - dt.timedelta(days=config.before_days)
        return StagedRenewal(
            staged_certificate_id=winner.item.id,
            certificate_id=winner.item.certificate_id,
            not_after=winner.not_after,
            rotates_at=max(due, now) if config.auto else None,
        )


def auto_rotate(service: Service) -> None:
    """Scan hook: on every running listener, rotate each default or additional certificate
    that is due (`rotation.before_days` or less left) when a staged candidate is ready."""
    if not service.config.rotation.auto:
        return
    now = clock.now()
    horizon = now + dt.timedelta(days=service.config.rotation.before_days)
    with transaction(service.engine) as session:
        due = session.exec(
            select(Listener, Certificate)
            .join(ListenerCertificate, col(ListenerCertificate.listener_id) == col(Listener.id))
            .join(Certificate, col(Certificate.id) == col(ListenerCertificate.certificate_id))
            .where(
                Listener.status == "Running",
                col(ListenerCertificate.role).in_(["default", "additional"]),
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
    lookup = StagedRenewals(service)
    for listener, current in due:
        try:
            with transaction(service.engine) as session:
                renewal = lookup(session, current, listener, now)
            if renewal is not None:
                rotation.rotate(
                    service, listener.id, renewal.staged_certificate_id, replaced=current.id
                )
        except Exception:
            log.exception("automatic rotation of %s on %s failed", current.id, listener.id)


def install(service: Service) -> None:
    """Give the service its staged-renewal lookup and the recovery, intake and rotation hooks."""
    service.renewal_lookup = StagedRenewals(service)
    service.before_scan.extend([recover, staging.intake, auto_rotate])
