"""What a scan reads from the store: every certificate in use, where, and its chain."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from certwatch.alerts import rules as alerting
from certwatch.store.models import Certificate, ChainEntry, Listener, ListenerCertificate


@dataclass(frozen=True)
class CertFacts:
    """What a scan needs of a certificate in use (light: no PEM, no key)."""

    id: str
    common_name: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str


@dataclass
class Inventory:
    """Listeners, the certificate ids they use by role, and the certificates as `CertInUse`."""

    listeners: dict[str, Listener]
    roles: dict[str, dict[str, list[str]]]
    certificates: dict[str, CertFacts]
    in_use: list[alerting.CertInUse]


def read_inventory(session: Session, default_thresholds: list[int]) -> Inventory:
    """Every listener and every certificate it uses (default, additional, CA) with chains."""
    listeners = {row.id: row for row in session.exec(select(Listener).order_by(col(Listener.id)))}
    links = session.exec(
        select(
            ListenerCertificate.listener_id,
            ListenerCertificate.role,
            ListenerCertificate.certificate_id,
        ).order_by(col(ListenerCertificate.created_at), col(ListenerCertificate.certificate_id))
    ).all()
    used = select(ListenerCertificate.certificate_id)
    certificates = {
        cert_id: CertFacts(cert_id, common_name, tuple(sans), not_before, not_after, fingerprint)
        for cert_id, common_name, sans, not_before, not_after, fingerprint in session.execute(
            sa_select(
                col(Certificate.id),
                col(Certificate.common_name),
                col(Certificate.sans),
                col(Certificate.not_before),
                col(Certificate.not_after),
                col(Certificate.fingerprint),
            ).where(col(Certificate.id).in_(used))
        )
    }
    chains: dict[str, list[alerting.ChainLink]] = {}
    for cert_id, position, common_name, not_after in session.exec(
        select(
            ChainEntry.certificate_id,
            ChainEntry.position,
            ChainEntry.common_name,
            ChainEntry.not_after,
        )
        .where(col(ChainEntry.certificate_id).in_(used))
        .order_by(col(ChainEntry.position))
    ):
        chains.setdefault(cert_id, []).append(alerting.ChainLink(position, common_name, not_after))
    roles: dict[str, dict[str, list[str]]] = {}
    usages: dict[str, list[alerting.Usage]] = {}
    for listener_id, role, cert_id in links:
        listener = listeners[listener_id]
        roles.setdefault(listener_id, {}).setdefault(role, []).append(cert_id)
        thresholds = alerting.effective_thresholds(
            listener.alert_thresholds_days, default_thresholds
        )
        usages.setdefault(cert_id, []).append(
            alerting.Usage(listener_id, listener.port, role, thresholds)
        )
    in_use = [
        alerting.CertInUse(
            cert.id,
            cert.common_name,
            cert.sans,
            cert.not_after,
            tuple(usages[cert.id]),
            tuple(chains.get(cert.id, ())),
        )
        for cert in certificates.values()
    ]
    return Inventory(listeners, roles, certificates, in_use)


