"""The listener rules every path obeys: certificates by role, the default's validity, a CA
for mutual TLS, the additional-certificate limits, a free port; each change in the history."""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection

from sqlmodel import Session, col, select

from certwatch import errors
from certwatch.clock import rfc3339
from certwatch.inventory.change import Change
from certwatch.inventory.rows import get_certificate
from certwatch.pki import x509
from certwatch.store import history
from certwatch.store.models import Certificate, Listener, ListenerCertificate, Role

MAX_PER_CALL = 15
MAX_ADDITIONAL_PER_INSTANCE = 25


def role_ids(session: Session, listener_id: str, role: Role) -> list[str]:
    """The ids of the certificates a listener uses in one role, oldest first."""
    rows = session.exec(
        select(ListenerCertificate.certificate_id)
        .where(ListenerCertificate.listener_id == listener_id, ListenerCertificate.role == role)
        .order_by(col(ListenerCertificate.created_at), col(ListenerCertificate.certificate_id))
    ).all()
    return list(rows)


def server_certificate(change: Change, certificate_id: str, what: str) -> Certificate:
    """A Server certificate valid now, to serve as `what`; refused otherwise."""
    row = get_certificate(change.session, certificate_id)
    if row.type != "Server":
        raise errors.IncorrectCertificateType(
            f"{what} must be a Server certificate; {row.id} is a {row.type} certificate"
        )
    state = x509.status(row.not_before, row.not_after, change.now, 0)
    if state == "Expired":
        raise errors.CertificateExpired(
            f"certificate {row.id} expired at {rfc3339(row.not_after)}; {what} refused"
        )
    if state == "NotYetValid":
        raise errors.CertificateNotYetValid(
            f"certificate {row.id} is not valid before {rfc3339(row.not_before)}; {what} refused"
        )
    return row


def ca_certificates(session: Session, ids: list[str]) -> list[str]:
    """`ids` without repeats, each a Ca certificate; refused otherwise."""
    for certificate_id in ids:
        row = get_certificate(session, certificate_id)
        if row.type != "Ca":
            raise errors.IncorrectCertificateType(
                f"CaCertificateIds takes Ca certificates; {row.id} is a {row.type} certificate"
            )
    return list(dict.fromkeys(ids))


def check_port_free(
    session: Session, address: str, port: int, served_ports: Collection[int]
) -> None:
    """Refuse a port another listener uses, or another program listens on; `served_ports`
    are the ports this node's proxy serves (a listener it has not let go of yet, e.g. deleted
    on another node: the proxy itself then decides when it applies the change)."""
    wildcards = ("0.0.0.0", "::")
    query = select(Listener).where(Listener.port == port)
    if address not in wildcards:
        query = query.where(col(Listener.address).in_({address, *wildcards}))
    taken = session.exec(query).first()
    if taken is not None:
        raise errors.PortInUse(
            f"{address}:{port} is already used by listener {taken.id} ({taken.address}:{port})"
        )
    if port not in served_ports:
        _check_bindable(address, port)


def _check_bindable(address: str, port: int) -> None:
    """Bind `address:port` as the proxy would (SO_REUSEADDR: connections still open or in
    TIME_WAIT on the port do not count), but without SO_REUSEPORT, so that another program's
    listening socket does."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise errors.PortInUse(
                    f"{address}:{port} is in use by another program on this host"
                ) from exc
            raise errors.InvalidParameter(
                f"cannot listen on {address}:{port}: {exc.strerror}"
            ) from exc


def set_role(change: Change, listener: Listener, role: Role, ids: list[str]) -> None:
    """Make `ids` the listener's certificates in `role`, recording each change in its history."""
    session = change.session
    current = role_ids(session, listener.id, role)
    removed = [c for c in current if c not in ids]
    added = [c for c in ids if c not in current]
    for certificate_id in removed:
        link = session.get(ListenerCertificate, (listener.id, certificate_id, role))
        session.delete(link)
    session.flush()  # the old links go first: the store allows one default per listener
    for certificate_id in added:
        session.add(
            ListenerCertificate(
                listener_id=listener.id,
                certificate_id=certificate_id,
                role=role,
                created_at=change.now,
            )
        )
    if role == Role.DEFAULT:
        changes = [(removed[0] if removed else None, added[0] if added else None)]
        changes = changes if removed or added else []
    else:
        changes = [(c, None) for c in removed] + [(None, c) for c in added]
    for old, new in changes if change.record_history else []:
        history.record(
            session,
            listener_id=listener.id,
            now=change.now,
            actor=change.actor,
            old=old,
            new=new,
            role=role,
        )
    session.flush()


def set_default(change: Change, listener: Listener, ids: list[str]) -> None:
    """Make the one certificate of `ids` the listener's default (valid now, a Server one)."""
    if len(ids) != 1:
        raise errors.InvalidParameter(
            f"CertificateIds takes exactly one certificate (the default); got {len(ids)}"
        )
    row = server_certificate(change, ids[0], "the default certificate")
    set_role(change, listener, Role.DEFAULT, [row.id])


def require_ca_when_enabled(session: Session, listener: Listener) -> None:
    """Mutual TLS needs a CA certificate to check clients against."""
    if listener.ca_enabled and not role_ids(session, listener.id, Role.CA):
        raise errors.MissingCaCertificate(
            "CaEnabled=true (mutual TLS) needs at least one Ca certificate in CaCertificateIds"
        )


def _batch(ids: list[str]) -> list[str]:
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_PER_CALL:
        raise errors.TooManyCertificates(
            f"one call adds or removes at most {MAX_PER_CALL} certificates; got {len(unique)}"
        )
    return unique


def associate(change: Change, listener: Listener, ids: list[str]) -> None:
    """Serve more certificates on a listener by SNI, within the load balancer's limit."""
    session, ids = change.session, _batch(ids)
    default = role_ids(session, listener.id, Role.DEFAULT)
    for certificate_id in ids:
        server_certificate(change, certificate_id, "an additional certificate")
        if certificate_id in default:
            raise errors.InvalidParameter(
                f"{certificate_id} is already the default certificate of {listener.id}"
            )
    current = role_ids(session, listener.id, Role.ADDITIONAL)
    new = [c for c in ids if c not in current]
    in_instance = len(
        session.exec(
            select(ListenerCertificate.certificate_id)
            .join(Listener, col(Listener.id) == col(ListenerCertificate.listener_id))
            .where(
                Listener.load_balancer_id == listener.load_balancer_id,
                ListenerCertificate.role == Role.ADDITIONAL,
            )
        ).all()
    )
    if in_instance + len(new) > MAX_ADDITIONAL_PER_INSTANCE:
        raise errors.QuotaExceeded(
            f"load balancer {listener.load_balancer_id} holds {in_instance} additional "
            f"certificates; adding {len(new)} would exceed its limit of "
            f"{MAX_ADDITIONAL_PER_INSTANCE}"
        )
    set_role(change, listener, Role.ADDITIONAL, current + new)


def disassociate(change: Change, listener: Listener, ids: list[str]) -> None:
    """Stop serving some additional certificates of a listener."""
    ids = _batch(ids)
    current = role_ids(change.session, listener.id, Role.ADDITIONAL)
    missing = [c for c in ids if c not in current]
    if missing:
        raise errors.InvalidParameter(
            f"not additional certificates of {listener.id}: {', '.join(missing)}"
        )
    set_role(change, listener, Role.ADDITIONAL, [c for c in current if c not in ids])
