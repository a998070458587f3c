"""One scan: read every certificate in use, probe every running listener and external target
(`certwatch.scan_probes`), store what was seen, and deliver the expiry alerts that are due
(`certwatch.alert_delivery`).

`run_scan(service)` is the one function the scheduler's job and `ScanNow` call. It writes scan
state in its own short transactions. Certificates are counted by the Status of the leaf.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from certwatch import clock
from certwatch.alerts import delivery as alert_delivery
from certwatch.alerts import rules as alerting
from certwatch.ids import new_id
from certwatch.pki import x509
from certwatch.scan import probes as scan_probes
from certwatch.store.db import transaction
from certwatch.store.models import (
    Certificate,
    ChainEntry,
    Listener,
    ListenerCertificate,
    ScanRun,
)

if TYPE_CHECKING:
    from certwatch.service import Service

log = logging.getLogger(__name__)
STATUSES = ("Valid", "Expiring", "Expired", "NotYetValid")
_ONE_SCAN_AT_A_TIME = threading.Lock()
KEEP_SCAN_RUNS = dt.timedelta(days=30)


@dataclass(frozen=True)
class ScanReport:
    """What one scan counted."""

    scan_id: str
    certificates: dict[str, int]
    probes_run: int
    probes_failed: int
    alerts_sent: int
    alerts_failed: int

    def counts(self) -> dict[str, Any]:
        """The counts as the API names them."""
        return {
            "Certificates": self.certificates,
            "ProbesRun": self.probes_run,
            "ProbesFailed": self.probes_failed,
            "AlertsSent": self.alerts_sent,
            "AlertsFailed": self.alerts_failed,
        }


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


def _run_hooks(service: Service) -> None:
    for hook in list(service.before_scan):
        try:
            hook(service)
        except Exception:
            log.exception("before-scan hook %r failed; the scan goes on", hook)


def _scan(service: Service, scan_id: str, started: dt.datetime) -> ScanReport:
    with transaction(service.engine) as session:
        inventory = read_inventory(session, service.config.alerts.thresholds_days)
    statuses = Counter(
        x509.status(c.not_before, c.not_after, started, service.expiring_days)
        for c in inventory.certificates.values()
    )
    probes = scan_probes.probe_everything(service, inventory, started)
    sent = failed = 0
    if service.is_leader():
        sent, failed = alert_delivery.run(service, inventory.in_use, started)
    else:
        log.info("not the leader: alerts are left to the leading node")
    return ScanReport(
        scan_id,
        {s: statuses.get(s, 0) for s in STATUSES},
        len(probes),
        sum(not p.success for p in probes),
        sent,
        failed,
    )


def _finish(service: Service, scan_id: str, report: ScanReport | None) -> None:
    """Record the scan's end and duration; runs older than KEEP_SCAN_RUNS are dropped."""
    finished = clock.now()
    with transaction(service.engine) as session:
        row = session.get(ScanRun, scan_id)
        if row is not None:
            row.finished_at = finished
            row.success = report is not None
            row.counts = report.counts() if report else {}
            session.add(row)
            service.monitoring.scan_duration.observe((finished - row.started_at).total_seconds())
        session.execute(delete(ScanRun).where(col(ScanRun.started_at) < finished - KEEP_SCAN_RUNS))


def run_scan(service: Service) -> ScanReport:
    """One whole scan (hooks, inventory, probes, alerts), recorded in `scan_runs`.

    Hooks (rotation) and alerts run only on the leader, so a `ScanNow` on another node of a
    shared store probes and counts but never sends an alert twice.
    """
    with _ONE_SCAN_AT_A_TIME:
        if service.is_leader():
            _run_hooks(service)
        started = clock.now()
        scan_id = new_id("scn")
        with transaction(service.engine) as session:
            session.add(ScanRun(id=scan_id, started_at=started))
        try:
            report = _scan(service, scan_id, started)
        except Exception:
            _finish(service, scan_id, None)
            raise
        _finish(service, scan_id, report)
        return report
