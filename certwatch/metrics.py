"""Prometheus metrics of SPEC §6, read from the STORE at scrape time.

Reading the store (not process memory) means every node of a shared store exports the same
series, a restart loses nothing, and a certificate in use never vanishes, expired or not.
Alert counters are derived from the `alerts` table (ACME failure-streak alerts too, as
thresholds `renewal-failing` / `renewal-recovered`): sent = delivered alerts, failures = failed
attempts, each retry within a delivery counted (an alert dropped while pending takes its
failures with it: a counter reset).
Only `certwatch_rotations_total` is a process counter, incremented by the rotation code
through `Monitoring.rotations`. When a managed certificate is renewed is ACME's to say: the
collector is handed that (`RenewalTimes`, implemented by `acme/renewal.py`).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import ssl
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from certwatch.alerts.notify import Notifier
from certwatch.alerts.rules import EXPIRED, REVOKED, target_certificate_id
from certwatch.config import ScanTarget
from certwatch.store.models import (
    Alert,
    Certificate,
    ChainEntry,
    Listener,
    ListenerCertificate,
    ProbeResult,
    RevocationState,
    RevocationStatus,
    ScanRun,
)

SCAN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RenewalTimes = Callable[[Session], Iterable[tuple[str, dt.datetime]]]
"""(certificate id, when its renewal is due) of every managed certificate in use."""


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class StoreCollector(Collector):
    """Certificate, chain, listener, probe, scan and alert series from the store."""

    def __init__(
        self,
        engine: Engine,
        thresholds: Sequence[int],
        targets: Sequence[ScanTarget] = (),
        renewal_times: RenewalTimes | None = None,
    ) -> None:
        self._engine = engine
        self._renewal_times = renewal_times
        self._default_days = tuple(thresholds)
        self._targets = tuple(targets)
        self._thresholds = [str(d) for d in thresholds] + [EXPIRED, REVOKED]

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: registering must not query the store."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """One read of the store per scrape."""
        with Session(self._engine) as session:
            yield from self._certificates(session)
            yield from self._revocations(session)
            yield from self._listeners(session)
            yield from self._alert_thresholds(session)
            yield from self._probes(session)
            yield from self._scans(session)
            yield from self._alerts(session)
            yield from self._renewals(session)

    def _certificates(self, session: Session) -> Iterator[Metric]:
        after = _gauge(
            "certwatch_certificate_not_after_timestamp_seconds",
            "NotAfter of each certificate of the inventory",
            ("certificate_id", "common_name", "certificate_type"),
        )
        before = _gauge(
            "certwatch_certificate_not_before_timestamp_seconds",
            "NotBefore of each certificate of the inventory",
            ("certificate_id", "common_name", "certificate_type"),
        )
        info = _gauge(
            "certwatch_certificate_info",
            "Facts of each certificate of the inventory (always 1)",
            (
                "certificate_id", "common_name", "issuer", "serial_number",
                "fingerprint_sha256", "key_algorithm",
            ),
        )
        for row in session.exec(select(Certificate)):
            labels = [row.id, row.common_name, row.type]
            after.add_metric(labels, row.not_after.timestamp())
            before.add_metric(labels, row.not_before.timestamp())
            info.add_metric(
                [
                    row.id, row.common_name, row.issuer, row.serial_number, row.fingerprint,
                    row.key_algorithm,
                ],
                1.0,
            )
        chain = _gauge(
            "certwatch_chain_certificate_not_after_timestamp_seconds",
            "NotAfter of each chain certificate above a leaf (position 1 = first intermediate)",
            ("certificate_id", "position", "common_name"),
        )
        for cert_id, position, common_name, not_after in session.exec(
            select(
                ChainEntry.certificate_id,
                ChainEntry.position,
                ChainEntry.common_name,
                ChainEntry.not_after,
            )
        ):
            chain.add_metric([cert_id, str(position), common_name], not_after.timestamp())
        yield from (after, chain, before, info)

    def _revocations(self, session: Session) -> Iterator[Metric]:
        gauge = _gauge(
            "certwatch_certificate_revoked",
            "1 when the certificate or one of its chain is revoked, 0 when checked good, by "
            "source (crl/ocsp); absent while no source could tell",
            ("certificate_id", "source"),
        )
        revoked: dict[tuple[str, str], bool] = {}
        for cert_id, source, status in session.execute(
            sa_select(
                col(RevocationState.certificate_id),
                col(RevocationState.source),
                col(RevocationState.status),
            ).where(col(RevocationState.status) != RevocationStatus.UNKNOWN)
        ):
            key = (cert_id, source)
            revoked[key] = revoked.get(key, False) or status == RevocationStatus.REVOKED
        for (cert_id, source), value in sorted(revoked.items()):
            gauge.add_metric([cert_id, source], float(value))
        yield gauge

    def _alert_thresholds(self, session: Session) -> Iterator[Metric]:
        """Per certificate in use, each threshold; a scan target's thresholds go on the
        certificate it served at the last probe (the inventory's, else `srv-<16 hex>`), with
        `target` and `server_name` so the target rules can join them."""
        name = "certwatch_certificate_alert_threshold_seconds"
        gauge = Metric(
            name,
            "Each alert threshold that applies to a certificate in use, in seconds before "
            "NotAfter (a listener's AlertThresholdsDays or a scan target's thresholds_days, "
            "else alerts.thresholds_days)",
            "gauge",
        )
        days: dict[tuple[str, str, str], set[int]] = defaultdict(set)  # (id, target, name)
        for cert_id, own in session.execute(
            sa_select(col(ListenerCertificate.certificate_id), col(Listener.alert_thresholds_days))
            .join(Listener, col(Listener.id) == col(ListenerCertificate.listener_id))
        ):
            days[(cert_id, "", "")].update(own if own is not None else self._default_days)
        targets = {(t.address, t.sent_name): t for t in self._targets}
        for (address, sent), cert_id in self._target_certificates(session).items():
            own = targets[(address, sent)].thresholds_days
            days[(cert_id, address, sent)].update(own or self._default_days)
        for cert_id, address, sent in sorted(days):
            where = {"target": address, "server_name": sent} if address else {}
            for threshold in sorted(days[(cert_id, address, sent)], reverse=True):
                labels = {"certificate_id": cert_id, "threshold": str(threshold), **where}
                gauge.add_sample(name, labels, threshold * 86400.0)
        yield gauge

    def _target_certificates(self, session: Session) -> dict[tuple[str, str], str]:
        """(target, server name) → the id of the certificate it served at the last probe."""
        wanted = {(t.address, t.sent_name) for t in self._targets}
        if not wanted:
            return {}
        served = {
            (row.target, row.server_name): row.served_fingerprint
            for row in session.exec(
                select(ProbeResult).where(col(ProbeResult.target).in_({t for t, _ in wanted}))
            )
            if (row.target, row.server_name) in wanted and row.served_fingerprint
        }
        known = dict(
            session.execute(
                sa_select(col(Certificate.fingerprint), col(Certificate.id)).where(
                    col(Certificate.fingerprint).in_(set(served.values()))
                )
            ).all()
        )
        return {key: known.get(fp, target_certificate_id(fp)) for key, fp in served.items()}

    def _listeners(self, session: Session) -> Iterator[Metric]:
        gauge = _gauge(
            "certwatch_listener_certificate_not_after_timestamp_seconds",
            "NotAfter of every certificate a listener uses (default, additional, CA)",
            ("listener_id", "listener_port", "certificate_id", "common_name", "role"),
        )
        rows = session.execute(
            sa_select(
                col(ListenerCertificate.listener_id),
                col(Listener.port),
                col(Certificate.id),
                col(Certificate.common_name),
                col(ListenerCertificate.role),
                col(Certificate.not_after),
            )
            .join(Listener, col(Listener.id) == col(ListenerCertificate.listener_id))
            .join(Certificate, col(Certificate.id) == col(ListenerCertificate.certificate_id))
        )
        for listener_id, port, cert_id, common_name, role, not_after in rows:
            gauge.add_metric(
                [listener_id, str(port), cert_id, common_name, role], not_after.timestamp()
            )
        yield gauge

    def _probes(self, session: Session) -> Iterator[Metric]:
        labels = ("target", "server_name")
        success = _gauge("certwatch_probe_success", "Last live probe succeeded (1) or not", labels)
        served = _gauge(
            "certwatch_probe_certificate_not_after_timestamp_seconds",
            "NotAfter of the leaf the last probe was served",
            labels,
        )
        complete = _gauge(
            "certwatch_probe_chain_complete",
            "The served chain verified to a trusted root (1) or not",
            labels,
        )
        taken = _gauge(
            "certwatch_probe_timestamp_seconds",
            "When the last recorded probe result was taken",
            labels,
        )
        matches = _gauge(
            "certwatch_probe_matches_configured",
            "The served leaf is the configured one (1) or not",
            ("listener_id", "server_name"),
        )
        for row in session.exec(select(ProbeResult)):
            key = [row.target, row.server_name]
            success.add_metric(key, float(row.success))
            complete.add_metric(key, float(row.chain_complete))
            taken.add_metric(key, row.probed_at.timestamp())
            if row.served_not_after is not None:
                served.add_metric(key, row.served_not_after.timestamp())
            if row.listener_id is not None and row.matches_configured is not None:
                matches.add_metric(
                    [row.listener_id, row.server_name], float(row.matches_configured)
                )
        yield from (success, served, complete, taken, matches)

    def _scans(self, session: Session) -> Iterator[Metric]:
        last = session.exec(
            select(func.max(ScanRun.finished_at)).where(col(ScanRun.success).is_(True))
        ).one()
        yield GaugeMetricFamily(
            "certwatch_scan_last_success_timestamp_seconds",
            "When the last successful scan finished (0: none yet)",
            value=last.timestamp() if last else 0.0,
        )

    def _alerts(self, session: Session) -> Iterator[Metric]:
        sent: dict[str, float] = defaultdict(float, dict.fromkeys(self._thresholds, 0.0))
        failed: dict[str, float] = defaultdict(float, dict.fromkeys(self._thresholds, 0.0))
        for threshold, delivered, attempts in session.exec(
            select(Alert.threshold, Alert.delivered, Alert.attempts)
        ):
            sent[threshold] += float(delivered)
            failed[threshold] += float(attempts - int(delivered))
        sent_family = CounterMetricFamily(
            "certwatch_alerts_sent",
            "Alerts delivered (expiry, revocation, ACME failure streaks)",
            labels=["threshold"],
        )
        failed_family = CounterMetricFamily(
            "certwatch_alert_delivery_failures",
            "Alert sends that failed (each attempt, retries within a delivery included)",
            labels=["threshold"],
        )
        for threshold in sorted(sent):
            sent_family.add_metric([threshold], sent[threshold])
            failed_family.add_metric([threshold], failed[threshold])
        yield from (sent_family, failed_family)


    def _renewals(self, session: Session) -> Iterator[Metric]:
        gauge = _gauge(
            "certwatch_certificate_renewal_timestamp_seconds",
            "When certwatch renews each managed certificate in use (the start of the ACME "
            "server's suggested renewal window when it offers one) or rotates one a pending "
            "staged certificate replaces; in the past while due",
            ("certificate_id",),
        )
        for cert_id, when in self._renewal_times(session) if self._renewal_times else ():
            gauge.add_metric([cert_id], when.timestamp())
        yield gauge


class NodeCollector(Collector):
    """This node's own state (SPEC §10): does it lead, which revision it serves, is the store
    reachable."""

    def __init__(
        self,
        leader: Callable[[], bool],
        revision: Callable[[], int],
        store_up: Callable[[], bool],
    ) -> None:
        self._leader, self._revision, self._store_up = leader, revision, store_up

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: registering must not query the store."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """The three node gauges."""
        yield GaugeMetricFamily(
            "certwatch_node_leader", "1 while this node leads scans, alerts and rotations",
            value=float(self._leader()),
        )
        yield GaugeMetricFamily(
            "certwatch_node_snapshot_revision", "The snapshot revision this node's proxy serves",
            value=float(self._revision()),
        )
        yield GaugeMetricFamily(
            "certwatch_node_store_up", "1 when this node reaches the store",
            value=float(self._store_up()),
        )


class Monitoring:
    """The monitoring parts a Service owns: notifier, store metrics, the rotations counter.

    Rotation code counts a rotation with
    `service.monitoring.rotations.labels(listener_id=..., result=...).inc()`.
    """

    def __init__(
        self,
        engine: Engine,
        registry: CollectorRegistry,
        urls: Sequence[str],
        thresholds: Sequence[int],
        targets: Sequence[ScanTarget] = (),
        renewal_times: RenewalTimes | None = None,
    ) -> None:
        self.notifier = Notifier(urls)
        registry.register(StoreCollector(engine, thresholds, targets, renewal_times))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Gauge(
            "certwatch_build_info",
            "certwatch's version and the Python and OpenSSL it runs on (always 1)",
            ["version", "python", "openssl"],
            registry=registry,
        ).labels(
            importlib.metadata.version("certwatch"), platform.python_version(), ssl.OPENSSL_VERSION
        ).set(1)
        self.scan_duration = Histogram(
            "certwatch_scan_duration_seconds",
            "How long scans took (observed by the node that ran them)",
            buckets=SCAN_BUCKETS,
            registry=registry,
        )
        self.rotations = Counter(
            "certwatch_rotations",
            "Default-certificate rotations by result (Applied, RolledBack, Rejected)",
            ["listener_id", "result"],
            registry=registry,
        )
