"""Build the data plane's desired state (`offload.spec.Snapshot`) from the store."""

from __future__ import annotations

from collections import defaultdict

from sqlmodel import Session, col, select

from certwatch import x509
from certwatch.actions.policies import resolve_policy
from certwatch.config import ProxyConfig
from certwatch.models import Certificate, Listener, ListenerCertificate, ServerGroup, StateRevision
from certwatch.store import KeyBox
from offload.spec import Backend, CertChain, ListenerSpec, Snapshot


def current_revision(session: Session) -> int:
    """The revision of what the proxy should serve (0 before any change)."""
    row = session.get(StateRevision, 1)
    return row.revision if row else 0


def bump_revision(session: Session) -> int:
    """Count one more change of what the proxy serves, in the caller's transaction."""
    row = session.get(StateRevision, 1, with_for_update=True) or StateRevision(id=1, revision=0)
    row.revision += 1
    session.add(row)
    session.flush()
    return row.revision


def build_snapshot(session: Session, keybox: KeyBox, revision: int, proxy: ProxyConfig) -> Snapshot:
    """Every running listener with its certificates, keys, policy and backends, and the
    proxy's timeouts from `proxy`."""
    listeners = session.exec(
        select(Listener).where(Listener.status == "Running").order_by(col(Listener.id))
    ).all()
    links = session.exec(
        select(ListenerCertificate, Certificate)
        .join(Certificate, col(Certificate.id) == col(ListenerCertificate.certificate_id))
        .order_by(col(ListenerCertificate.created_at), col(ListenerCertificate.certificate_id))
    ).all()
    by_role: dict[tuple[str, str], list[Certificate]] = defaultdict(list)
    for link, cert in links:
        by_role[(link.listener_id, link.role)].append(cert)
    keys: dict[str, str] = {}

    def chain(cert: Certificate) -> CertChain:
        if cert.id not in keys:
            keys[cert.id] = keybox.open(cert.key_encrypted) if cert.key_encrypted else ""
        return CertChain(
            chain_pem=cert.chain_pem,
            key_pem=keys[cert.id],
            names=x509.host_names(cert.sans, cert.common_name),
        )

    specs = []
    for listener in listeners:
        group = session.get(ServerGroup, listener.server_group_id)
        policy = resolve_policy(session, listener.security_policy_id)
        defaults = by_role[(listener.id, "default")]
        if listener.protocol == "TCPSSL" and not defaults:
            continue
        cas = by_role[(listener.id, "ca")]
        specs.append(
            ListenerSpec(
                listener_id=listener.id,
                address=listener.address,
                port=listener.port,
                protocol=listener.protocol,
                default_cert=chain(defaults[0]) if defaults else CertChain("", ""),
                additional_certs=tuple(chain(c) for c in by_role[(listener.id, "additional")]),
                ca_pem="".join(c.chain_pem for c in cas) if listener.ca_enabled and cas else None,
                tls_versions=policy.tls_versions,
                ciphers=policy.tls12_ciphers,
                backends=tuple(
                    Backend(s["ServerIp"], s["Port"], s["Weight"])
                    for s in (group.servers if group else [])
                    if s["Weight"] > 0
                ),
                idle_timeout=float(listener.idle_timeout),
                handshake_timeout=proxy.handshake_timeout,
                connect_timeout=proxy.connect_timeout,
            )
        )
    return Snapshot(revision=revision, listeners=tuple(specs))
