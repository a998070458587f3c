"""The live check after a swap: does the listener serve the new certificate, with a chain
that verifies, for every DNS name it should answer with it?"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session

from certwatch import clock
from certwatch.node import Node
from certwatch.pki import x509
from certwatch.rotation import staged
from certwatch.scan.probe import ProbeOutcome, ProbeTarget, connect_host, probe_name, probe_sync
from certwatch.store.cluster import RENEW_SECONDS, is_postgres, nodes_behind, serving_nodes
from certwatch.store.db import transaction
from certwatch.store.models import Certificate, Listener, Role
from offload.sni import SniTable

FLEET_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class LiveCheck:
    """What was probed (`names` None: not probed) and what was wrong."""

    names: str | None
    problems: tuple[str, ...] = ()


def probe_names(
    names: Sequence[str], additional: Sequence[Certificate], target: str | None
) -> list[str | None]:
    """The server names for which the listener should serve `target` (None: the default).

    The SNI table of the additional certificates decides, as in the proxy; the default is
    also probed without SNI. A wildcard `*.example.com` is probed as `probe.example.com`.
    """
    table = SniTable([(row.id, x509.host_names(row.sans, row.common_name)) for row in additional])
    hosts = [probe_name(n) for n in names]
    chosen = [h for h in dict.fromkeys(hosts) if table.lookup(h) == target]
    return [None, *chosen] if target is None else list(chosen)


def _problem(outcome: ProbeOutcome, fingerprint: str) -> str | None:
    name = outcome.target.server_name or "no SNI"
    if not outcome.success:
        return f"{name}: {outcome.error}"
    if outcome.fingerprint != fingerprint:
        return f"{name}: served {(outcome.fingerprint or '')[:16]}…, not the new certificate"
    if not outcome.chain_complete:
        return f"{name}: the served chain does not verify ({outcome.chain_error})"
    return None


def wait_for_fleet(node: Node, revision: int) -> str:
    """Wait (bounded) until every live serving node of a shared store serves `revision`, so
    a node a few milliseconds behind never fails the check; the nodes still behind, if any."""
    if not is_postgres(node.engine):
        return ""
    deadline = time.monotonic() + FLEET_WAIT_SECONDS
    while True:
        with transaction(node.engine) as session:
            behind = nodes_behind(session, revision, _fresh(node))
        if not behind or time.monotonic() >= deadline:
            return ", ".join(f"{n.node_id} at {n.revision}" for n in behind)
        time.sleep(0.05)


def _fresh(node: Node) -> dt.timedelta:
    """A node heard from within this is alive (three missed beats are not)."""
    return dt.timedelta(seconds=max(3 * RENEW_SECONDS, node.config.proxy.reload_interval * 2))


def _fleet_serves(node: Node) -> bool:
    if not is_postgres(node.engine):
        return False
    with transaction(node.engine) as session:
        return serving_nodes(session, _fresh(node)) > 0


def live_check(
    node: Node, session: Session, listener_id: str, certificate_id: str, role: str
) -> LiveCheck:
    """Probe the listener for each name on which it should now serve `certificate_id`."""
    listener = session.get(Listener, listener_id)
    cert = session.get(Certificate, certificate_id)
    if listener is None or cert is None or listener.status != "Running":
        return LiveCheck(None)
    lagging = wait_for_fleet(node, node.changes.revision)
    if not node.serves and not _fleet_serves(node):
        return LiveCheck(None)
    additional = staged.in_use(session, listener_id, Role.ADDITIONAL)
    names = probe_names(
        x509.host_names(cert.sans, cert.common_name),
        additional,
        cert.id if role != Role.DEFAULT else None,
    )
    host = connect_host(listener.address)
    targets = [ProbeTarget(listener_id, host, listener.port, name, listener_id) for name in names]
    outcomes = probe_sync(
        targets,
        node.trusted_roots(session),
        clock.now(),
        time_limit=node.config.scan.probe_timeout,
        concurrency=node.config.scan.probe_concurrency,
    )
    problems = [p for o in outcomes if (p := _problem(o, cert.fingerprint)) is not None]
    if problems and lagging:
        problems.append(f"nodes still behind after {FLEET_WAIT_SECONDS:g} s: {lagging}")
    shown = ", ".join(n or "no SNI" for n in names)
    return LiveCheck(shown, tuple(problems))
