"""The composition root: one node's parts, built from a Config and wired here, visibly.

Wiring, in the order it is built:
- the store (engine, migrations), the key box, the snapshot builder and the change pipeline
  over the data plane (when this node runs one);
- monitoring (metrics, notifier) and leadership, which make the `Node`;
- the scan hooks the leader runs before each scan — crash recovery of rotations, staging
  intake, rejection of revoked staged certificates, automatic rotation, ACME renewals that
  are due, tls-alpn-01 challenges a killed order left behind — and the staged-renewal lookup
  alerts name;
- the ACME order runner (started by `certwatch serve` when `[acme]` is configured);
- the staging-folder watcher, which runs the intake hook when a file lands (started by
  `certwatch serve` with `rotation.watch`);
- the scanner, and the dispatcher that runs API actions by name for the HTTP API, the CLI's
  service and the demo.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session

from certwatch.acme.alpn import clear_stale
from certwatch.acme.renewal import renew_due, renewal_times
from certwatch.acme.runner import OrderRunner, orders_counter
from certwatch.api import ACTIONS
from certwatch.api.dispatch import Dispatcher
from certwatch.api.registry import Request
from certwatch.changes.commit import DataPlane, Pipeline
from certwatch.changes.snapshot import SnapshotBuilder
from certwatch.config import Config, RotationConfig
from certwatch.metrics import Monitoring, NodeCollector
from certwatch.node import Node
from certwatch.rotation.auto import StagedRenewals, auto_rotate, staged_rotation_times
from certwatch.rotation.intake import intake
from certwatch.rotation.revoked import reject_revoked
from certwatch.rotation.rotate import recover
from certwatch.rotation.watch import StagingWatcher
from certwatch.scan.run import Scanner
from certwatch.store.cluster import Leadership
from certwatch.store.db import KeyBox, make_engine, migrate, ping
from offload.spec import Snapshot

log = logging.getLogger(__name__)
ScanHook = Callable[[Node], None]


def _renewal_times(config: RotationConfig, session: Session) -> list[tuple[str, dt.datetime]]:
    """When certwatch renews or rotates each certificate in use: ACME-managed ones by their
    renewal time, others by the rotation a pending staged certificate would make."""
    return [
        *renewal_times(config.before_days, session),
        *staged_rotation_times(config, session),
    ]


class Service:
    """One certwatch node, wired: its `Node`, scanner and action dispatcher."""

    def __init__(self, config: Config, data_plane: DataPlane | None = None) -> None:
        keybox = KeyBox.from_file(config.key_file)
        engine = make_engine(config.store_url)
        migrate(engine)
        self.registry = CollectorRegistry()
        node_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        snapshots = SnapshotBuilder(keybox, config.proxy)
        self.node = Node(
            config=config,
            engine=engine,
            keybox=keybox,
            changes=Pipeline(engine, snapshots, data_plane, node_id),
            monitoring=Monitoring(
                engine,
                self.registry,
                config.alerts.urls,
                config.alerts.thresholds_days,
                targets=config.scan.targets,
                renewal_times=partial(_renewal_times, config.rotation),
            ),
            leadership=Leadership(engine),
        )
        self.registry.register(
            NodeCollector(
                self.node.is_leader, lambda: self.node.changes.revision, lambda: ping(engine)
            )
        )
        self.before_scan: list[ScanHook] = [
            recover, intake, reject_revoked, auto_rotate, renew_due, clear_stale,
        ]
        self.scanner = Scanner(self.node, self.before_scan, StagedRenewals(self.node))
        self.dispatch = Dispatcher(self.node, self.scanner)
        self.acme = OrderRunner(self.node, orders_counter(self.registry))
        self.watcher = StagingWatcher(self.node, intake)

    @property
    def config(self) -> Config:
        """The node's configuration."""
        return self.node.config

    @property
    def engine(self) -> Engine:
        """The store's engine."""
        return self.node.engine

    @property
    def keybox(self) -> KeyBox:
        """The key that seals private keys at rest."""
        return self.node.keybox

    @property
    def monitoring(self) -> Monitoring:
        """Metrics and the notifier."""
        return self.node.monitoring

    @property
    def leadership(self) -> Leadership:
        """Who leads scans, alerts and rotations."""
        return self.node.leadership

    @property
    def applied_snapshot(self) -> Snapshot | None:
        """What this node's proxy was last given."""
        return self.node.changes.applied

    def call(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        actor: str = "api",
        record_history: bool = True,
    ) -> dict[str, Any]:
        """Run an action by name with raw parameters (validated here), as the HTTP API does."""
        action = ACTIONS[name]
        req: Request = action.request.model_validate(params or {})
        return self.dispatch(action, req, actor, record_history)

    def sync_data_plane(self) -> None:
        """Hand the proxy the store's current state (at start, and on proxy-only nodes)."""
        self.node.changes.sync()

    def trusted_roots(self, session: Session) -> list[Any]:
        """System roots, every uploaded Ca certificate, and `scan.trusted_ca_file`."""
        return self.node.trusted_roots(session)

    def is_leader(self) -> bool:
        """Whether this node runs scans, alerts and rotations."""
        return self.node.is_leader()

    def notify(self, title: str, body: str) -> None:
        """Send an operational alert to every alert URL (none: the log)."""
        self.node.notify(title, body)

    def healthy(self) -> dict[str, bool]:
        """Health of each part: the store, and the proxy when this node runs one."""
        return self.node.healthy()

    def close(self) -> None:
        """Give up leadership and release the store's connections."""
        self.node.close()
        log.debug("service closed")
