"""One scan: read every certificate in use, probe every running listener and external target,
store what was seen, and deliver the expiry alerts that are due.

`run_scan(service)` is the one function the scheduler's job and `ScanNow` call. It writes scan
state in its own short transactions; delivery (network) happens outside any transaction, and an
alert is marked sent only after apprise reports delivery.

Probes (per running TCPSSL listener): one handshake per DNS name its default and additional
certificates serve (a wildcard `*.example.com` is probed as `probe.example.com`) and one without
SNI. The configured leaf for a name is the one `offload.sni` selects, the proxy's own rule.

External targets (`scan.targets`): `"host:port"` sends `host` as SNI when it is a DNS name (no
SNI for an IP address); `"host:port/name"` sends `name`; `"host:port/"` sends no SNI. IPv6
hosts go in brackets: `"[::1]:8443/example.com"`. Metrics label them `target="host:port"`.
A probe sent without SNI is stored and labelled with `server_name=""`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, delete, select

from certwatch import alert_delivery, alerting, clock, x509
from certwatch.ids import new_id
from certwatch.models import (
    Certificate,
    ChainEntry,
    Listener,
    ListenerCertificate,
    ProbeResult,
    ScanRun,
)
from certwatch.probe import ProbeOutcome, ProbeTarget, probe_sync
from certwatch.store import transaction
from offload import sni

if TYPE_CHECKING:
    from certwatch.service import Service

log = logging.getLogger(__name__)
STATUSES = ("Valid", "Expiring", "Expired", "NotYetValid")
_ONE_SCAN_AT_A_TIME = threading.Lock()


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
        cert_id: CertFacts(cert_id, common_name, tuple(sans), not_before, not_after)
        for cert_id, common_name, sans, not_before, not_after in session.execute(
            sa_select(
                col(Certificate.id),
                col(Certificate.common_name),
                col(Certificate.sans),
                col(Certificate.not_before),
                col(Certificate.not_after),
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
        ).order_by(col(ChainEntry.position))
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


def probe_name(name: str) -> str:
    """The name to send for a served DNS name: a wildcard gets the label `probe`."""
    return "probe." + name[2:] if name.startswith("*.") else name


def listener_targets(
    listener: Listener, default: Certificate, additional: list[Certificate]
) -> list[tuple[ProbeTarget, str]]:
    """Probe targets of one listener, each with the fingerprint SNI selection should serve."""
    # Imported here: certwatch.snapshot imports the actions package, which imports this module.
    from certwatch.snapshot import _names as served_names

    table = [(cert, served_names(cert)) for cert in additional]
    names = [probe_name(n) for cert in [default, *additional] for n in served_names(cert)]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listener.address, listener.address)
    targets = []
    for name in [*dict.fromkeys(names), None]:
        expected = sni.select(table, name) or default
        target = ProbeTarget(listener.id, host, listener.port, name, listener.id)
        targets.append((target, expected.fingerprint))
    return targets


def parse_target(text: str) -> ProbeTarget:
    """A `scan.targets` entry as a probe target (syntax in the module docstring)."""
    address, slash, name = text.partition("/")
    host, colon, port = address.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"scan target {text!r} is not host:port[/server-name]")
    if not slash:
        try:
            ipaddress.ip_address(host)
            name = ""
        except ValueError:
            name = host
    return ProbeTarget(address, host, int(port), name or None)


def _run_hooks(service: Service) -> None:
    for hook in list(service.before_scan):
        try:
            hook(service)
        except Exception:
            log.exception("before-scan hook %r failed; the scan goes on", hook)


def _probe_row(outcome: ProbeOutcome, expected: str | None, now: dt.datetime) -> ProbeResult:
    target = outcome.target
    leaf = outcome.leaf
    matches = None
    if expected is not None and outcome.success:
        matches = outcome.fingerprint == expected
    return ProbeResult(
        target=target.target,
        server_name=target.server_name or "",
        listener_id=target.listener_id,
        success=outcome.success,
        served_fingerprint=outcome.fingerprint,
        served_not_after=leaf.not_valid_after_utc if leaf else None,
        chain_complete=outcome.chain_complete,
        matches_configured=matches,
        error=outcome.error or outcome.chain_error,
        probed_at=now,
    )


def _running_targets(session: Session, inventory: Inventory) -> list[tuple[ProbeTarget, str]]:
    running = [
        listener
        for listener in inventory.listeners.values()
        if listener.status == "Running"
        and listener.protocol == "TCPSSL"
        and inventory.roles.get(listener.id, {}).get("default")
    ]
    wanted = {
        cert_id
        for listener in running
        for role in ("default", "additional")
        for cert_id in inventory.roles[listener.id].get(role, [])
    }
    rows = {
        row.id: row
        for row in session.exec(select(Certificate).where(col(Certificate.id).in_(wanted)))
    }
    planned: list[tuple[ProbeTarget, str]] = []
    for listener in running:
        roles = inventory.roles[listener.id]
        default = rows[roles["default"][0]]
        planned.extend(
            listener_targets(listener, default, [rows[i] for i in roles.get("additional", [])])
        )
    return planned


def probe_everything(service: Service, inventory: Inventory, now: dt.datetime) -> list[ProbeResult]:
    """Probe every running TCPSSL listener and every external target; failures are rows."""
    with transaction(service.engine) as session:
        planned: list[tuple[ProbeTarget, str | None]] = [*_running_targets(session, inventory)]
        roots = service.trusted_roots(session)
    rows: list[ProbeResult] = []
    for text in service.config.scan.targets:
        try:
            planned.append((parse_target(text), None))
        except ValueError as exc:
            rows.append(
                ProbeResult(
                    target=text, server_name="", success=False, error=str(exc), probed_at=now
                )
            )
    if planned:
        scan = service.config.scan
        outcomes = probe_sync(
            [t for t, _ in planned], roots, now, scan.probe_timeout, scan.probe_concurrency
        )
        rows.extend(
            _probe_row(o, expected, now) for o, (_, expected) in zip(outcomes, planned, strict=True)
        )
    with transaction(service.engine) as session:
        session.exec(delete(ProbeResult))
        session.add_all({(r.target, r.server_name): r for r in rows}.values())
    return rows


def _scan(service: Service, scan_id: str, started: dt.datetime) -> ScanReport:
    with transaction(service.engine) as session:
        inventory = read_inventory(session, service.config.alerts.thresholds_days)
    statuses = Counter(
        x509.status(c.not_before, c.not_after, started, service.expiring_days)
        for c in inventory.certificates.values()
    )
    probes = probe_everything(service, inventory, started)
    sent, failed = alert_delivery.run(service, inventory.in_use, started)
    return ScanReport(
        scan_id,
        {s: statuses.get(s, 0) for s in STATUSES},
        len(probes),
        sum(not p.success for p in probes),
        sent,
        failed,
    )


def _finish(service: Service, scan_id: str, report: ScanReport | None) -> None:
    with transaction(service.engine) as session:
        row = session.get(ScanRun, scan_id)
        if row is not None:
            row.finished_at = clock.now()
            row.success = report is not None
            row.counts = report.counts() if report else {}
            session.add(row)


def run_scan(service: Service) -> ScanReport:
    """One whole scan (hooks, inventory, probes, alerts), recorded in `scan_runs`."""
    with _ONE_SCAN_AT_A_TIME:
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
