"""`Node`: the parts one certwatch node is built from, handed to the layers above.

A node has no `call()`: the layers above use its parts directly (the store's engine, the
key box, the change pipeline, monitoring, leadership). `app/service.py` builds it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from certwatch.changes.commit import Pipeline
from certwatch.config import Config
from certwatch.inventory.certificates import trusted_roots
from certwatch.metrics import Monitoring
from certwatch.store.cluster import Leadership
from certwatch.store.db import KeyBox, ping

log = logging.getLogger(__name__)


@dataclass
class Node:
    """One node: configuration, store, key box, change pipeline, monitoring, leadership."""

    config: Config
    engine: Engine
    keybox: KeyBox
    changes: Pipeline
    monitoring: Monitoring
    leadership: Leadership

    @property
    def expiring_days(self) -> int:
        """A certificate is `Expiring` within the largest alert threshold."""
        return max(self.config.alerts.thresholds_days, default=30)

    @property
    def serves(self) -> bool:
        """Whether this node runs a data plane of its own."""
        return self.changes.data_plane is not None

    def trusted_roots(self, session: Session) -> list[Any]:
        """System roots, every uploaded Ca certificate, and `scan.trusted_ca_file`."""
        return trusted_roots(session, self.config.scan.trusted_ca_file)

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
        if self.changes.data_plane is not None:
            parts["proxy"] = self.changes.data_plane.healthy()
        return parts

    def close(self) -> None:
        """Give up leadership and release the store's connections."""
        self.leadership.close()
        self.engine.dispose()
