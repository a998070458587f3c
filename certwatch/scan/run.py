"""One scan: read every certificate in use, probe every running listener and external target
(`scan.probes`), check revocation (`scan.revocation`), store what was seen, and deliver the
expiry and revocation alerts that are due (`alerts.delivery`).

`Scanner.run()` is the one function the scheduler's job and `ScanNow` call. It writes scan
state in its own short transactions. Certificates are counted by the Status of the leaf
(`Revoked` when a certificate of its chain is revoked).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import delete
from sqlmodel import col

from certwatch import clock
from certwatch.alerts import delivery
from certwatch.alerts.renewal import RenewalLookup
from certwatch.ids import new_id
from certwatch.node import Node
from certwatch.pki import x509
from certwatch.scan.inventory import read_inventory
from certwatch.scan.probes import probe_everything, with_targets
from certwatch.scan.revocation import check_in_use
from certwatch.store.db import transaction
from certwatch.store.models import (
    ScanRun,
)

log = logging.getLogger(__name__)
STATUSES = ("Valid", "Expiring", "Expired", "NotYetValid", "Revoked")
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
    revocations_checked: int = 0
    revocation_warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """The counts as the API names them."""
        return {
            "Certificates": self.certificates,
            "ProbesRun": self.probes_run,
            "ProbesFailed": self.probes_failed,
            "AlertsSent": self.alerts_sent,
            "AlertsFailed": self.alerts_failed,
            "RevocationsChecked": self.revocations_checked,
            "RevocationWarnings": self.revocation_warnings,
        }


class Scanner:
    """The scans of one node: hooks (leader only), inventory, probes, alerts (leader only).

    `hooks` run before each scan on the leader (recovery, staging intake, auto-rotation), in
    the order of the sequence as it stands at each scan;
    `renewals` names the staged renewal in alert texts. Both are wired by `app/service.py`.
    """

    def __init__(
        self,
        node: Node,
        hooks: Sequence[Callable[[Node], None]] = (),
        renewals: RenewalLookup | None = None,
    ) -> None:
        self._node = node
        self._hooks = hooks
        self._renewals = renewals

    def run(self) -> ScanReport:
        """One whole scan (hooks, inventory, probes, alerts), recorded in `scan_runs`.

        Hooks (rotation) and alerts run only on the leader, so a `ScanNow` on another node of
        a shared store probes and counts but never sends an alert twice.
        """
        node = self._node
        with _ONE_SCAN_AT_A_TIME:
            if node.is_leader():
                self._run_hooks()
            started = clock.now()
            scan_id = new_id("scn")
            with transaction(node.engine) as session:
                session.add(ScanRun(id=scan_id, started_at=started))
            try:
                report = self._scan(scan_id, started)
            except Exception:
                self._finish(scan_id, None)
                raise
            self._finish(scan_id, report)
            return report

    def _run_hooks(self) -> None:
        for hook in self._hooks:
            try:
                hook(self._node)
            except Exception:
                log.exception("before-scan hook %r failed; the scan goes on", hook)

    def _scan(self, scan_id: str, started: dt.datetime) -> ScanReport:
        node = self._node
        with transaction(node.engine) as session:
            inventory = read_inventory(session, node.config.alerts.thresholds_days)
        leads = node.is_leader()
        probed = probe_everything(node, inventory, started, store=leads)
        probes = probed.results
        revocations = check_in_use(node, list(inventory.certificates), started, store=leads)
        revoked = revocations.revoked
        statuses = Counter(
            "Revoked"
            if c.id in revoked
            else x509.status(c.not_before, c.not_after, started, node.expiring_days)
            for c in inventory.certificates.values()
        )
        in_use = [
            replace(cert, revocation=revocations.revocation(cert.certificate_id))
            for cert in with_targets(inventory.in_use, inventory.certificates, probed.served)
        ]
        sent = failed = 0
        if leads:
            sent, failed = delivery.run(
                node.engine, node.monitoring.notifier, self._renewals, in_use, started
            )
        else:
            log.info("not the leader: alerts are left to the leading node")
        return ScanReport(
            scan_id,
            {s: statuses.get(s, 0) for s in STATUSES},
            len(probes),
            sum(not p.success for p in probes),
            sent,
            failed,
            revocations.checked,
            revocations.warnings,
        )

    def _finish(self, scan_id: str, report: ScanReport | None) -> None:
        """Record the scan's end and duration; runs older than KEEP_SCAN_RUNS are dropped."""
        finished = clock.now()
        with transaction(self._node.engine) as session:
            row = session.get(ScanRun, scan_id)
            if row is not None:
                row.finished_at = finished
                row.success = report is not None
                row.counts = report.counts() if report else {}
                session.add(row)
                self._node.monitoring.scan_duration.observe(
                    (finished - row.started_at).total_seconds()
                )
            session.execute(
                delete(ScanRun).where(col(ScanRun.started_at) < finished - KEEP_SCAN_RUNS)
            )
