"""The live check after a swap: does the listener serve the new certificate, with a chain
that verifies, for every DNS name it should answer with it?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session

from certwatch import clock
from certwatch.node import Node
from certwatch.pki import x509
from certwatch.rotation import staged
from certwatch.scan.probe import ProbeOutcome, ProbeTarget, connect_host, probe_name, probe_sync
from certwatch.store.models import Certificate, Listener
from offload.sni import SniTable


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


def live_check(
    node: Node, session: Session, listener_id: str, certificate_id: str, role: str
) -> LiveCheck:
    """Probe the listener for each name on which it should now serve `certificate_id`."""
    listener = session.get(Listener, listener_id)
    cert = session.get(Certificate, certificate_id)
    if listener is None or cert is None or listener.status != "Running":
        return LiveCheck(None)
    if not node.serves:
        return LiveCheck(None)
    additional = staged.in_use(session, listener_id, "additional")
    names = probe_names(
        x509.host_names(cert.sans, cert.common_name),
        additional,
        cert.id if role != "default" else None,
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
    shown = ", ".join(n or "no SNI" for n in names)
    return LiveCheck(shown, tuple(problems))
