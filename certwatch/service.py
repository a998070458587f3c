"""The composition root: builds the store, key box, data plane hook and registry from a Config."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from certwatch.actions import ACTIONS
from certwatch.actions.registry import Request
from certwatch.alerts.renewal import RenewalLookup
from certwatch.changes.snapshot import SnapshotBuilder, current_revision
from certwatch.config import Config
from certwatch.dispatch import dispatch
from certwatch.metrics import Monitoring
from certwatch.pki import x509
from certwatch.rotation import auto as lifecycle
from certwatch.store.cluster import Leadership
from certwatch.store.db import KeyBox, make_engine, migrate, ping, transaction
from certwatch.store.models import Certificate
from offload.spec import Snapshot

log = logging.getLogger(__name__)


class DataPlane(Protocol):
    """What the control plane needs of the proxy (`offload.workers.ProxyControl`)."""

    def apply(self, snapshot: Snapshot) -> None:
        """Serve this snapshot; return once every worker has it."""

    def healthy(self) -> bool:
        """Every worker is up and answering."""


class Service:
    """One certwatch node's control plane."""

    def __init__(self, config: Config, data_plane: DataPlane | None = None) -> None:
        self.config = config
        self.keybox = KeyBox.from_file(config.key_file)
        self.engine = make_engine(config.store_url)
        migrate(self.engine)
        self.data_plane = data_plane
        self.write_lock = threading.RLock()
        self.applied_snapshot: Snapshot | None = None
        self.snapshots = SnapshotBuilder(self.keybox, config.proxy)
        self.registry = CollectorRegistry()
        self.before_scan: list[Callable[[Service], None]] = []
        self.renewal_lookup: RenewalLookup | None = None
        self.leadership = Leadership(self)
        self.monitoring = Monitoring(
            self.engine, self.registry, config.alerts.urls, config.alerts.thresholds_days
        )
        lifecycle.install(self)

    @property
    def expiring_days(self) -> int:
        """A certificate is `Expiring` within the largest alert threshold."""
        return max(self.config.alerts.thresholds_days, default=30)

    def trusted_roots(self, session: Session) -> list[Any]:
        """System roots, every uploaded Ca certificate, and `scan.trusted_ca_file`."""
        roots = list(x509.system_roots())
        for row in session.exec(select(Certificate).where(Certificate.type == "Ca")):
            roots.extend(x509.parse_chain(row.chain_pem))
        if self.config.scan.trusted_ca_file:
            roots.extend(x509.load_bundle(self.config.scan.trusted_ca_file))
        return roots

    def call(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        actor: str = "api",
        record_history: bool = True,
    ) -> dict[str, Any]:
        """Run an action by name with raw parameters (validated here), as the API does.

        `record_history` False: the caller records the change in its own history entry.
        """
        action = ACTIONS[name]
        req: Request = action.request.model_validate(params or {})
        return dispatch(self, action, req, actor, record_history)

    def sync_data_plane(self) -> None:
        """Hand the proxy the store's current state (at start, and on proxy-only nodes)."""
        if self.data_plane is None:
            return
        with self.write_lock, transaction(self.engine) as session:
            revision = current_revision(session)
            if self.applied_snapshot is not None and self.applied_snapshot.revision == revision:
                return
            snapshot = self.snapshots.build(session, revision)
            self.data_plane.apply(snapshot)
            self.applied_snapshot = snapshot

    def is_leader(self) -> bool:
        """Whether this node runs scans, alerts and rotations (one node of a shared store)."""
        return self.leadership.is_leader()

    def notify(self, title: str, body: str) -> None:
        """Send an operational alert (e.g. a rollback) to every alert URL (none: the log)."""
        outcome = self.monitoring.notifier.send(title, body)
        if not outcome.delivered:
            log.error("notification %r not delivered: %s\n%s", title, outcome.error, body)

    def healthy(self) -> dict[str, bool]:
        """Health of each part: the store, and the proxy when this node runs one."""
        parts = {"store": ping(self.engine)}
        if self.data_plane is not None:
            parts["proxy"] = self.data_plane.healthy()
        return parts

    def close(self) -> None:
        """Give up leadership and release the store's connections."""
        self.leadership.close()
        self.engine.dispose()
        log.debug("service closed")
