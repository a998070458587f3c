"""Listener actions: create, update, start/stop/delete, additional certificates, listing."""

from __future__ import annotations

import errno
import socket
from typing import Any, Literal

from pydantic import Field, field_validator
from sqlmodel import Session, col, select

from certwatch import errors
from certwatch.actions.balancers import get_load_balancer, get_server_group
from certwatch.actions.certificates import get_certificate_row
from certwatch.actions.policies import resolve_policy
from certwatch.actions.registry import ActionContext, ChangeRequest, IpAddress, Request, action
from certwatch.clock import rfc3339
from certwatch.ids import new_id
from certwatch.inventory.policies import DEFAULT_POLICY
from certwatch.pki import x509
from certwatch.store import history
from certwatch.store.models import Certificate, Listener, ListenerCertificate

MAX_PER_CALL = 15
Thresholds = list[int] | None


def _check_thresholds(value: Thresholds) -> Thresholds:
    if value is None:
        return None
    if not value or len(value) > 10:
        raise ValueError("AlertThresholdsDays takes 1 to 10 whole numbers of days")
    if any(d < 1 or d > 3650 for d in value) or len(set(value)) != len(value):
        raise ValueError("AlertThresholdsDays must be distinct days between 1 and 3650")
    return sorted(value, reverse=True)


class ListenerFields(ChangeRequest):
    """The fields shared by CreateListener and UpdateListenerAttribute."""

    ServerGroupId: str | None = None
    CertificateIds: list[str] | None = None
    SecurityPolicyId: str | None = None
    CaEnabled: bool | None = None
    CaCertificateIds: list[str] | None = Field(default=None, max_length=MAX_PER_CALL)
    IdleTimeout: int | None = Field(default=None, ge=1, le=86400)
    ListenerDescription: str | None = Field(default=None, max_length=256)
    AlertThresholdsDays: Thresholds = None

    _thresholds = field_validator("AlertThresholdsDays")(_check_thresholds)


class CreateListenerRequest(ListenerFields):
    """CreateListener parameters."""

    LoadBalancerId: str
    ListenerProtocol: Literal["TCPSSL", "TCP"] = "TCPSSL"
    ListenerPort: int = Field(ge=1, le=65535)
    ListenerAddress: IpAddress = "127.0.0.1"
    ServerGroupId: str


def get_listener(session: Session, listener_id: str) -> Listener:
    """The listener with this id, or 404."""
    row = session.get(Listener, listener_id)
    if row is None:
        raise errors.NotFound("Listener", listener_id)
    return row


def role_ids(ctx: ActionContext, listener_id: str, role: str) -> list[str]:
    """The ids of the certificates a listener uses in one role, oldest first."""
    rows = ctx.session.exec(
        select(ListenerCertificate)
        .where(ListenerCertificate.listener_id == listener_id, ListenerCertificate.role == role)
        .order_by(col(ListenerCertificate.created_at), col(ListenerCertificate.certificate_id))
    ).all()
    return [r.certificate_id for r in rows]


def server_certificate(ctx: ActionContext, certificate_id: str, what: str) -> Certificate:
    row = get_certificate_row(ctx.session, certificate_id)
    if row.type != "Server":
        raise errors.IncorrectCertificateType(
            f"{what} must be a Server certificate; {row.id} is a {row.type} certificate"
        )
    state = x509.status(row.not_before, row.not_after, ctx.now, 0)
    if state in ("Expired", "NotYetValid"):
        when = rfc3339(row.not_after if state == "Expired" else row.not_before)
        verb = "expired at" if state == "Expired" else "is not valid before"
        raise errors.CertificateExpired(f"certificate {row.id} {verb} {when}; {what} refused")
    return row


def _default_certificate(ctx: ActionContext, ids: list[str]) -> Certificate:
    if len(ids) != 1:
        raise errors.InvalidParameter(
            f"CertificateIds takes exactly one certificate (the default); got {len(ids)}"
        )
    return server_certificate(ctx, ids[0], "the default certificate")


def _ca_certificates(ctx: ActionContext, ids: list[str]) -> list[str]:
    for certificate_id in ids:
        row = get_certificate_row(ctx.session, certificate_id)
        if row.type != "Ca":
            raise errors.IncorrectCertificateType(
                f"CaCertificateIds takes Ca certificates; {row.id} is a {row.type} certificate"
            )
    return list(dict.fromkeys(ids))


def _check_port_free(ctx: ActionContext, address: str, port: int) -> None:
    taken = ctx.session.exec(
        select(Listener).where(
            Listener.port == port,
            Listener.address.in_(  # type: ignore[attr-defined]
                {address, "0.0.0.0", "::"} if address not in ("0.0.0.0", "::") else {address}
            ),
        )
    ).first()
    if taken is None and address in ("0.0.0.0", "::"):
        taken = ctx.session.exec(select(Listener).where(Listener.port == port)).first()
    if taken is not None:
        raise errors.PortInUse(
            f"{address}:{port} is already used by listener {taken.id} ({taken.address}:{port})"
        )
    if not _served_by_proxy(ctx, port):
        _check_bindable(address, port)


def _served_by_proxy(ctx: ActionContext, port: int) -> bool:
    """Whether this node's proxy has a socket on `port` (a listener it has not let go of yet,
    e.g. deleted on another node); the proxy itself then decides when it applies the change."""
    snapshot = ctx.service.applied_snapshot
    return snapshot is not None and any(spec.port == port for spec in snapshot.listeners)


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


def set_role(ctx: ActionContext, listener: Listener, role: str, ids: list[str]) -> None:
    """Make `ids` the listener's certificates in `role`, recording each change in its history."""
    current = role_ids(ctx, listener.id, role)
    removed = [c for c in current if c not in ids]
    added = [c for c in ids if c not in current]
    for certificate_id in removed:
        link = ctx.session.get(ListenerCertificate, (listener.id, certificate_id, role))
        ctx.session.delete(link)
    for certificate_id in added:
        ctx.session.add(
            ListenerCertificate(
                listener_id=listener.id,
                certificate_id=certificate_id,
                role=role,
                created_at=ctx.now,
            )
        )
    if role == "default":
        changes = [(removed[0] if removed else None, added[0] if added else None)]
        changes = changes if removed or added else []
    else:
        changes = [(c, None) for c in removed] + [(None, c) for c in added]
    for old, new in changes if ctx.record_history else []:
        history.record(
            ctx.session,
            listener_id=listener.id,
            now=ctx.now,
            actor=ctx.actor,
            old=old,
            new=new,
            role=role,
        )
    ctx.session.flush()


def _require_ca_when_enabled(ctx: ActionContext, listener: Listener) -> None:
    if listener.ca_enabled and not role_ids(ctx, listener.id, "ca"):
        raise errors.MissingCaCertificate(
            "CaEnabled=true (mutual TLS) needs at least one Ca certificate in CaCertificateIds"
        )


def _apply_fields(ctx: ActionContext, listener: Listener, req: ListenerFields) -> None:
    if req.ServerGroupId is not None:
        listener.server_group_id = get_server_group(ctx, req.ServerGroupId).id
    if req.SecurityPolicyId is not None:
        listener.security_policy_id = resolve_policy(ctx.session, req.SecurityPolicyId).policy_id
    if req.IdleTimeout is not None:
        listener.idle_timeout = req.IdleTimeout
    if req.ListenerDescription is not None:
        listener.description = req.ListenerDescription
    if req.AlertThresholdsDays is not None:
        listener.alert_thresholds_days = req.AlertThresholdsDays
    if req.CaEnabled is not None:
        listener.ca_enabled = req.CaEnabled
    ctx.session.add(listener)
    ctx.session.flush()
    if req.CertificateIds is not None:
        set_role(ctx, listener, "default", [_default_certificate(ctx, req.CertificateIds).id])
    if req.CaCertificateIds is not None:
        set_role(ctx, listener, "ca", _ca_certificates(ctx, req.CaCertificateIds))
    _require_ca_when_enabled(ctx, listener)


@action("CreateListener", CreateListenerRequest, changing=True)
def create_listener(ctx: ActionContext, req: CreateListenerRequest) -> dict[str, Any]:
    """Create a listener and start serving it."""
    load_balancer = get_load_balancer(ctx, req.LoadBalancerId)
    if req.ListenerProtocol == "TCPSSL" and req.CertificateIds is None:
        raise errors.InvalidParameter("a TCPSSL listener needs CertificateIds (its default)")
    _check_port_free(ctx, req.ListenerAddress, req.ListenerPort)
    listener = Listener(
        id=new_id("lsn"),
        load_balancer_id=load_balancer.id,
        protocol=req.ListenerProtocol,
        address=req.ListenerAddress,
        port=req.ListenerPort,
        server_group_id=get_server_group(ctx, req.ServerGroupId).id,
        security_policy_id=DEFAULT_POLICY,
        created_at=ctx.now,
    )
    _apply_fields(ctx, listener, req)
    return {"ListenerId": listener.id}


class UpdateListenerRequest(ListenerFields):
    """UpdateListenerAttribute parameters."""

    ListenerId: str


@action("UpdateListenerAttribute", UpdateListenerRequest, changing=True)
def update_listener(ctx: ActionContext, req: UpdateListenerRequest) -> dict[str, Any]:
    """Change a listener; new connections use the change once the call returns."""
    _apply_fields(ctx, get_listener(ctx.session, req.ListenerId), req)
    return {}


def listener_view(ctx: ActionContext, listener: Listener) -> dict[str, Any]:
    """The API form of a listener."""
    return {
        "ListenerId": listener.id,
        "LoadBalancerId": listener.load_balancer_id,
        "ListenerProtocol": listener.protocol,
        "ListenerPort": listener.port,
        "ListenerAddress": listener.address,
        "ServerGroupId": listener.server_group_id,
        "CertificateIds": role_ids(ctx, listener.id, "default"),
        "AdditionalCertificateIds": role_ids(ctx, listener.id, "additional"),
        "SecurityPolicyId": listener.security_policy_id,
        "CaEnabled": listener.ca_enabled,
        "CaCertificateIds": role_ids(ctx, listener.id, "ca"),
        "IdleTimeout": listener.idle_timeout,
        "ListenerDescription": listener.description,
        "AlertThresholdsDays": listener.alert_thresholds_days,
        "ListenerStatus": listener.status,
        "CreatedAt": rfc3339(listener.created_at),
    }


class ListenerIdRequest(Request):
    """An action on one listener."""

    ListenerId: str


class ListenerChangeRequest(ChangeRequest):
    """A changing action on one listener."""

    ListenerId: str


@action("GetListenerAttribute", ListenerIdRequest, changing=False)
def get_listener_attribute(ctx: ActionContext, req: ListenerIdRequest) -> dict[str, Any]:
    """Describe one listener."""
    return listener_view(ctx, get_listener(ctx.session, req.ListenerId))


class ListListenersRequest(Request):
    """ListListeners parameters."""

    LoadBalancerId: str | None = None


@action("ListListeners", ListListenersRequest, changing=False)
def list_listeners(ctx: ActionContext, req: ListListenersRequest) -> dict[str, Any]:
    """List listeners, optionally of one load balancer."""
    query = select(Listener).order_by(col(Listener.created_at), col(Listener.id))
    if req.LoadBalancerId is not None:
        query = query.where(
            Listener.load_balancer_id == get_load_balancer(ctx, req.LoadBalancerId).id
        )
    return {"Listeners": [listener_view(ctx, row) for row in ctx.session.exec(query)]}


def _set_status(ctx: ActionContext, listener_id: str, status: str) -> dict[str, Any]:
    listener = get_listener(ctx.session, listener_id)
    listener.status = status
    ctx.session.add(listener)
    return {}


@action("StartListener", ListenerChangeRequest, changing=True)
def start_listener(ctx: ActionContext, req: ListenerChangeRequest) -> dict[str, Any]:
    """Start accepting connections."""
    return _set_status(ctx, req.ListenerId, "Running")


@action("StopListener", ListenerChangeRequest, changing=True)
def stop_listener(ctx: ActionContext, req: ListenerChangeRequest) -> dict[str, Any]:
    """Stop accepting; open connections are let finish."""
    return _set_status(ctx, req.ListenerId, "Stopped")


@action("DeleteListener", ListenerChangeRequest, changing=True)
def delete_listener(ctx: ActionContext, req: ListenerChangeRequest) -> dict[str, Any]:
    """Delete a listener (its history is kept); open connections are let finish."""
    listener = get_listener(ctx.session, req.ListenerId)
    for link in ctx.session.exec(
        select(ListenerCertificate).where(ListenerCertificate.listener_id == listener.id)
    ):
        ctx.session.delete(link)
    ctx.session.flush()
    ctx.session.delete(listener)
    return {}
