"""The pending tls-alpn-01 challenges, kept in the store so that every node's proxy answers them.

Rules:
- A challenge is a row of `acme_challenges` (its key sealed by the key box), put and removed
  through the change pipeline like any change: the snapshot that carries it (see
  `changes.snapshot`) reaches every worker of this node before the put commits, and the other
  nodes as they follow the store's revision. `put` returns once every live serving node
  serves that revision (the rotation's bounded fleet wait; see `_wait_for_proxies` on
  SQLite), so the validator may ask any node.
- A process killed during an order leaves its rows behind; `clear_stale` (a scan hook of the
  leader) removes those older than any order can last, so no stale challenge is answered
  for ever.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from functools import partial

from sqlmodel import col, delete, select

from certwatch import clock
from certwatch.acme.orders import ORDER_SECONDS
from certwatch.acme.requests import MAX_NAMES
from certwatch.inventory.change import Change
from certwatch.node import Node
from certwatch.rotation.liveness import FLEET_WAIT_SECONDS, wait_for_fleet
from certwatch.store.cluster import is_postgres
from certwatch.store.db import transaction
from certwatch.store.models import AcmeChallenge

log = logging.getLogger(__name__)
ACTOR = "acme"
STALE_AFTER = dt.timedelta(seconds=2 * ORDER_SECONDS + MAX_NAMES * FLEET_WAIT_SECONDS)
"""Longer than any order keeps a challenge up: its largest number of challenges, each put up
within the fleet wait, then the order's own time to settle (twice, as a margin)."""


def _put(node: Node, name: str, chain_pem: str, key_pem: str, change: Change) -> None:
    """Store the challenge of `name`, replacing any left from an earlier attempt."""
    sealed = node.keybox.seal(key_pem)
    change.session.merge(
        AcmeChallenge(
            domain_name=name, chain_pem=chain_pem, key_sealed=sealed, created_at=change.now
        )
    )


def _remove(name: str, change: Change) -> None:
    """Delete the challenge of `name`."""
    change.session.exec(delete(AcmeChallenge).where(col(AcmeChallenge.domain_name) == name))


def _remove_stale(change: Change) -> int:
    """Delete the challenges older than STALE_AFTER; how many."""
    older = delete(AcmeChallenge).where(col(AcmeChallenge.created_at) < change.now - STALE_AFTER)
    return change.session.exec(older).rowcount


def _wait_for_proxies(node: Node, revision: int) -> str:
    """Until every serving node serves `revision` (bounded); the nodes still behind, if any.

    A shared PostgreSQL store records what each node serves. On SQLite, a node with a proxy
    of its own serves the change already; one without (`proxy.workers = 0`, next to a
    `certwatch proxy` on the same file) gives the proxy two of its polls to pick it up."""
    if is_postgres(node.engine):
        return wait_for_fleet(node, revision)
    if not node.serves:
        time.sleep(2 * node.config.proxy.reload_interval)
    return ""


class StoreChallenges:
    """The `orders.ChallengeBoard` of a node: challenges in the store, served by every node."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def put(self, name: str, chain_pem: str, key_pem: str) -> None:
        """Serve the challenge certificate for `name` on every listener of every live serving
        node (after a bounded wait for the nodes still behind, which are logged)."""
        node = self._node
        node.changes.run(partial(_put, node, name, chain_pem, key_pem), actor=ACTOR)
        try:
            behind = _wait_for_proxies(node, node.changes.revision)
        except BaseException:
            self.remove(name)
            raise
        if behind:
            log.warning(
                "tls-alpn-01 challenge for %s: nodes still behind after %g s: %s",
                name, FLEET_WAIT_SECONDS, behind,
            )

    def remove(self, name: str) -> None:
        """Stop serving the challenge of `name`."""
        self._node.changes.run(partial(_remove, name), actor=ACTOR)


def clear_stale(node: Node) -> None:
    """Scan hook: remove the challenges left behind by an order that did not end (a killed
    process), once they are older than any order lasts; no change when there are none."""
    cutoff = clock.now() - STALE_AFTER
    with transaction(node.engine) as session:
        stale = session.exec(
            select(AcmeChallenge.domain_name).where(col(AcmeChallenge.created_at) < cutoff)
        ).all()
    if not stale:
        return
    removed = node.changes.run(_remove_stale, actor=ACTOR)
    log.info("removed %d stale tls-alpn-01 challenge(s): %s", removed, ", ".join(stale))
