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

from sqlmodel import Session, col, delete, select

from certwatch import alerting, clock, x509
from certwatch.ids import new_id
from certwatch.models import (
    Alert,
    Certificate,
    ChainEntry,
    Listener,
    ListenerCertificate,
    ProbeResult,
    ScanRun,
)
from certwatch.probe import ProbeOutcome, ProbeTarget, probe_sync
from certwatch.renewal import StagedRenewal
from certwatch.snapshot import _names as served_names
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


@dataclass
class Inventory:
    """Listeners, the certificates they use (by role), and those as `CertInUse`."""

    listeners: dict[str, Listener]
    roles: dict[str, dict[str, list[Certificate]]]
    certificates: dict[str, Certificate]
    in_use: list[alerting.CertInUse]


def read_inventory(session: Session, default_thresholds: list[int]) -> Inventory:
    """Every listener and every certificate it uses (default, additional, CA) with chains."""
    listeners = {row.id: row for row in session.exec(select(Listener).order_by(col(Listener.id)))}
    links = session.exec(
        select(ListenerCertificate, Certificate)
        .join(Certificate, col(Certificate.id) == col(ListenerCertificate.certificate_id))
        .order_by(col(ListenerCertificate.created_at), col(ListenerCertificate.certificate_id))
    ).all()
    chains: dict[str, list[alerting.ChainLink]] = {}
    for entry in session.exec(select(ChainEntry).order_by(col(ChainEntry.position))):
        chains.setdefault(entry.certificate_id, []).append(
            alerting.ChainLink(entry.position, entry.common_name, entry.not_after)
        )
    roles: dict[str, dict[str, list[Certificate]]] = {}
    usages: dict[str, list[alerting.Usage]] = {}
    certificates: dict[str, Certificate] = {}
    for link, cert in links:
        listener = listeners[link.listener_id]
        roles.setdefault(listener.id, {}).setdefault(link.role, []).append(cert)
        certificates[cert.id] = cert
        thresholds = alerting.effective_thresholds(
            listener.alert_thresholds_days, default_thresholds
        )
        usages.setdefault(cert.id, []).append(
            alerting.Usage(listener.id, listener.port, link.role, thresholds)
        )
    in_use = [
        alerting.CertInUse(
            cert.id,
            cert.common_name,
            tuple(cert.sans),
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
    listener: Listener, roles: dict[str, list[Certificate]]
) -> list[tuple[ProbeTarget, str]]:
    """Probe targets of one listener, each with the fingerprint SNI selection should serve."""
    default = roles.get("default", [])
    if not default:
        return []
    additional = roles.get("additional", [])
    table = [(cert, served_names(cert)) for cert in additional]
    names = [probe_name(n) for cert in [default[0], *additional] for n in served_names(cert)]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listener.address, listener.address)
    targets = []
    for name in [*dict.fromkeys(names), None]:
        expected = sni.select(table, name) or default[0]
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


def probe_everything(service: Service, inventory: Inventory, now: dt.datetime) -> list[ProbeResult]:
    """Probe every running TCPSSL listener and every external target; failures are rows."""
    planned: list[tuple[ProbeTarget, str | None]] = []
    for listener in inventory.listeners.values():
        if listener.status == "Running" and listener.protocol == "TCPSSL":
            planned.extend(listener_targets(listener, inventory.roles.get(listener.id, {})))
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
        with transaction(service.engine) as session:
            roots = service.trusted_roots(session)
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


def _renewal_text(found: StagedRenewal | None) -> str:
    if found is None:
        return "no staged renewal"
    when = (
        f"rotates at {clock.rfc3339(found.rotates_at)}"
        if found.rotates_at
        else "no automatic rotation scheduled"
    )
    return (
        f"{found.staged_certificate_id} ready (certificate {found.certificate_id}, "
        f"NotAfter {clock.rfc3339(found.not_after)}), {when}"
    )


def _renewals(
    service: Service, session: Session, inventory: Inventory, cert_id: str, now: dt.datetime
) -> dict[str, str]:
    lookup = service.renewal_lookup
    out: dict[str, str] = {}
    for listener_id in {
        u.listener_id for c in inventory.in_use if c.certificate_id == cert_id for u in c.usages
    }:
        found = None
        if lookup is not None:
            try:
                found = lookup(
                    session, inventory.certificates[cert_id], inventory.listeners[listener_id], now
                )
            except Exception:
                log.exception("staged-renewal lookup failed for %s", cert_id)
        out[listener_id] = _renewal_text(found)
    return out


def prepare_alerts(
    service: Service, inventory: Inventory, now: dt.datetime
) -> list[tuple[str, str, str]]:
    """Apply the alert plan to the store; return (alert id, title, body) to deliver."""
    outgoing = []
    with transaction(service.engine) as session:
        existing = [
            alerting.AlertRecord(a.id, a.certificate_id, a.threshold, a.delivered)
            for a in session.exec(select(Alert))
        ]
        plan = alerting.plan_alerts(inventory.in_use, existing, now)
        if plan.drop:
            log.info("dropping %d pending alert(s) no longer due", len(plan.drop))
            session.exec(delete(Alert).where(col(Alert.id).in_(plan.drop)))
        for due in plan.send:
            renewals = _renewals(service, session, inventory, due.cert.certificate_id, now)
            title = alerting.title(due.cert, due.threshold)
            body = alerting.body(due.cert, due.threshold, now, renewals)
            row = session.get(Alert, due.alert_id) if due.alert_id else None
            if row is None:
                row = Alert(
                    id=new_id("alr"),
                    certificate_id=due.cert.certificate_id,
                    threshold=due.threshold,
                    created_at=now,
                )
            row.listener_ids = alerting.listener_ids(due.cert)
            row.title, row.body = title, body
            session.add(row)
            outgoing.append((row.id, title, body))
    return outgoing


def deliver(service: Service, outgoing: list[tuple[str, str, str]]) -> tuple[int, int]:
    """Send each alert; record the attempt; mark sent only when delivered. (sent, failed)."""
    sent = failed = 0
    for alert_id, title, body in outgoing:
        outcome = service.monitoring.notifier.send(title, body)
        with transaction(service.engine) as session:
            row = session.get(Alert, alert_id)
            if row is None:
                continue
            row.attempts += 1
            if outcome.delivered:
                row.delivered, row.sent_at, row.last_error = True, clock.now(), None
                sent += 1
            else:
                row.last_error = outcome.error
                failed += 1
                log.warning("alert %s not delivered (retried next scan): %s", title, outcome.error)
            session.add(row)
    return sent, failed


def _scan(service: Service, scan_id: str, started: dt.datetime) -> ScanReport:
    with transaction(service.engine) as session:
        inventory = read_inventory(session, service.config.alerts.thresholds_days)
    statuses = Counter(
        x509.status(c.not_before, c.not_after, started, service.expiring_days)
        for c in inventory.certificates.values()
    )
    probes = probe_everything(service, inventory, started)
    sent, failed = deliver(service, prepare_alerts(service, inventory, started))
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
