"""The scan's live probes: which endpoints and names, what each should serve, the results.

Probes (per running TCPSSL listener): one handshake per DNS name its default and additional
certificates serve (a wildcard `*.example.com` is probed as `probe.example.com`) and one without
SNI. The configured leaf for a name is the one `offload.sni.SniTable` selects, the proxy's own rule.

External targets (`scan.targets`): `"host:port"` sends `host` as SNI when it is a DNS name (no
SNI for an IP address); `"host:port/name"` sends `name`; `"host:port/"` sends no SNI. IPv6
hosts go in brackets: `"[::1]:8443/example.com"`. The table form
`{address = "host:port", server_name = "name", thresholds_days = [60, 14]}` says the same
and gives the target its own alert thresholds. Metrics label them `target="host:port"`.
The certificate a target serves alerts like a listener's (`with_targets`): as the inventory
certificate it is, when it is one, else as `srv-<16 hex of its fingerprint>`.
A probe sent without SNI is stored and labelled with `server_name=""`.

Each scan replaces every stored result (`probe_results`), so a deleted listener or target
leaves the metrics. A failed probe (refused, timeout, no certificate; after the probe's own
retries) is a result, not an error; each row carries the time its probe was taken.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace

from sqlalchemy.exc import IntegrityError
from sqlmodel import delete

from certwatch.alerts import rules as alerting
from certwatch.config import ScanTarget
from certwatch.node import Node
from certwatch.pki import x509
from certwatch.scan.inventory import CertFacts, Inventory
from certwatch.scan.probe import ProbeOutcome, ProbeTarget, connect_host, probe_name, probe_sync
from certwatch.store.db import transaction
from certwatch.store.models import Listener, ProbeResult
from offload.sni import SniTable

log = logging.getLogger(__name__)


def listener_targets(
    listener: Listener, default: CertFacts, additional: list[CertFacts]
) -> list[tuple[ProbeTarget, str]]:
    """Probe targets of one listener, each with the fingerprint SNI selection should serve."""
    names_by_cert = [(cert, x509.host_names(cert.sans, cert.common_name)) for cert in additional]
    served = [x509.host_names(default.sans, default.common_name), *(n for _, n in names_by_cert)]
    names = [probe_name(name) for names_of_cert in served for name in names_of_cert]
    table = SniTable(names_by_cert)
    host = connect_host(listener.address)
    targets = []
    for name in [*dict.fromkeys(names), None]:
        expected = table.lookup(name) or default
        target = ProbeTarget(listener.id, host, listener.port, name, listener.id)
        targets.append((target, expected.fingerprint))
    return targets


def probe_target(target: ScanTarget) -> ProbeTarget:
    """A `scan.targets` entry as a probe target (syntax in the module docstring)."""
    return ProbeTarget(target.address, target.host, target.port, target.sent_name or None)


def _probe_row(outcome: ProbeOutcome, expected: str | None) -> ProbeResult:
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
        warnings=[f"NotStrictlyCompliant: {finding}" for finding in outcome.findings],
        probed_at=outcome.taken_at,
    )


def _running_targets(inventory: Inventory) -> list[tuple[ProbeTarget, str]]:
    running = [
        listener
        for listener in inventory.listeners.values()
        if listener.status == "Running"
        and listener.protocol == "TCPSSL"
        and inventory.roles.get(listener.id, {}).get("default")
    ]
    certs = inventory.certificates
    planned: list[tuple[ProbeTarget, str]] = []
    for listener in running:
        roles = inventory.roles[listener.id]
        default = certs[roles["default"][0]]
        planned.extend(
            listener_targets(listener, default, [certs[i] for i in roles.get("additional", [])])
        )
    return planned


@dataclass(frozen=True)
class Probed:
    """A scan's probe results, and the certificates external targets served as in use."""

    results: list[ProbeResult]
    served: list[alerting.CertInUse]


def _served(
    outcome: ProbeOutcome, target: ScanTarget, default_thresholds: list[int]
) -> alerting.CertInUse | None:
    """The certificate a target served, in use by that target at its own thresholds."""
    leaf, fingerprint = outcome.leaf, outcome.fingerprint
    if leaf is None or fingerprint is None:
        return None
    chain = tuple(
        alerting.ChainLink(position, x509.common_name(cert), cert.not_valid_after_utc)
        for position, cert in enumerate(outcome.chain[1:], start=1)
    )
    thresholds = alerting.effective_thresholds(target.thresholds_days, default_thresholds)
    use = alerting.Usage(target.address, target.port, alerting.TARGET, thresholds)
    return alerting.CertInUse(
        alerting.target_certificate_id(fingerprint), x509.common_name(leaf), x509.dns_names(leaf),
        leaf.not_valid_after_utc, (use,), chain,
    )


def with_targets(
    in_use: list[alerting.CertInUse],
    certificates: dict[str, CertFacts],
    served: list[alerting.CertInUse],
) -> list[alerting.CertInUse]:
    """Every certificate in use, listeners' and targets': a target serving a certificate of
    the inventory adds its use to that certificate; targets serving one same certificate
    share one entry (so each alerts once, at the union of thresholds)."""
    known_ids = {alerting.target_certificate_id(c.fingerprint): i for i, c in certificates.items()}
    merged = {cert.certificate_id: cert for cert in in_use}
    for cert in served:
        cert_id = known_ids.get(cert.certificate_id, cert.certificate_id)
        known = merged.get(cert_id)
        merged[cert_id] = (
            cert if known is None else replace(known, usages=known.usages + cert.usages)
        )
    return list(merged.values())


def probe_everything(
    node: Node, inventory: Inventory, now: dt.datetime, store: bool = True
) -> Probed:
    """Probe every running TCPSSL listener and every external target; failures are rows.

    Only a leader's scan `store`s its results (several nodes' scans never collide on them);
    should two nodes both believe they lead for a moment, the first write stands."""
    planned: list[tuple[ProbeTarget, str | None]] = [*_running_targets(inventory)]
    external = {len(planned) + i: target for i, target in enumerate(node.config.scan.targets)}
    planned.extend((probe_target(target), None) for target in node.config.scan.targets)
    with transaction(node.engine) as session:
        roots = node.trusted_roots(session)
    rows: list[ProbeResult] = []
    served: list[alerting.CertInUse] = []
    if planned:
        scan = node.config.scan
        outcomes = probe_sync(
            [t for t, _ in planned], roots, now, scan.probe_timeout, scan.probe_concurrency
        )
        rows.extend(
            _probe_row(o, expected) for o, (_, expected) in zip(outcomes, planned, strict=True)
        )
        thresholds = node.config.alerts.thresholds_days
        for index, target in external.items():
            cert = _served(outcomes[index], target, thresholds)
            if cert is not None:
                served.append(cert)
    if not store:
        return Probed(rows, served)
    try:
        with transaction(node.engine) as session:
            session.exec(delete(ProbeResult))
            session.add_all({(r.target, r.server_name): r for r in rows}.values())
    except IntegrityError:
        log.info("another node stored its probe results at the same moment; keeping those")
    return Probed(rows, served)
