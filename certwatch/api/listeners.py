"""Listener actions: create, update, start/stop/delete, additional certificates, listing."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from sqlmodel import col, select

from certwatch import errors
from certwatch.api.registry import (
    SERVING_RULES,
    ActionContext,
    ChangeRequest,
    IpAddress,
    Request,
    action,
)
from certwatch.clock import rfc3339
from certwatch.ids import new_id
from certwatch.inventory.listeners import (
    MAX_PER_CALL,
    ca_certificates,
    check_port_free,
    require_ca_when_enabled,
    role_ids,
    set_default,
    set_role,
)
from certwatch.inventory.policies import DEFAULT_POLICY, impossible, resolve_policy
from certwatch.inventory.rows import get_listener, get_load_balancer, get_server_group
from certwatch.store.models import Listener, ListenerCertificate, Role

Thresholds = list[int] | None
AlpnPolicyName = Literal["HTTP1Only", "HTTP2Only", "HTTP2Preferred", "HTTP2Optional"]
MAX_LIMIT = 1_000_000


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
    AlpnEnabled: bool | None = Field(
        default=None, description="Select an application protocol (ALPN) by AlpnPolicy."
    )
    AlpnPolicy: AlpnPolicyName | None = Field(
        default=None,
        description="HTTP1Only (http/1.1, http/1.0), HTTP2Only (h2), HTTP2Optional (HTTP/1.x "
        "before h2) or HTTP2Preferred (h2 before HTTP/1.x); required with AlpnEnabled.",
    )
    ProxyProtocolEnabled: bool | None = Field(
        default=None,
        description="Send a PROXY protocol v2 header (client address, SNI) to the backend.",
    )
    Cps: int | None = Field(
        default=None, ge=0, le=MAX_LIMIT,
        description="New connections accepted per second; 0 (the default) is unlimited.",
    )
    MaxConnections: int | None = Field(
        default=None, ge=0, le=MAX_LIMIT,
        description="Connections open at once; 0 (the default) is unlimited.",
    )

    _thresholds = field_validator("AlertThresholdsDays")(_check_thresholds)


class CreateListenerRequest(ListenerFields):
    """CreateListener parameters."""

    LoadBalancerId: str
    ListenerProtocol: Literal["TCPSSL", "TCP"] = "TCPSSL"
    ListenerPort: int = Field(ge=1, le=65535)
    ListenerAddress: IpAddress = "127.0.0.1"
    ServerGroupId: str


# API field -> listener column, for the options applied as given.
_OPTIONS = {
    "AlpnEnabled": "alpn_enabled",
    "AlpnPolicy": "alpn_policy",
    "ProxyProtocolEnabled": "proxy_protocol_enabled",
    "Cps": "cps",
    "MaxConnections": "max_connections",
}


def _apply_fields(ctx: ActionContext, listener: Listener, req: ListenerFields) -> None:
    if req.ServerGroupId is not None:
        listener.server_group_id = get_server_group(ctx.session, req.ServerGroupId).id
    if req.SecurityPolicyId is not None:
        policy = resolve_policy(ctx.session, req.SecurityPolicyId)
        problem = impossible(policy.tls_versions, policy.ciphers)
        if problem:
            raise errors.InvalidParameter(
                f"security policy {policy.policy_id} cannot be served: {problem}"
            )
        listener.security_policy_id = policy.policy_id
    if req.IdleTimeout is not None:
        listener.idle_timeout = req.IdleTimeout
    if req.ListenerDescription is not None:
        listener.description = req.ListenerDescription
    if req.AlertThresholdsDays is not None:
        listener.alert_thresholds_days = req.AlertThresholdsDays
    if req.CaEnabled is not None:
        listener.ca_enabled = req.CaEnabled
    for name, column in _OPTIONS.items():
        value = getattr(req, name)
        if value is not None:
            setattr(listener, column, value)
    if listener.alpn_enabled and listener.alpn_policy is None:
        raise errors.InvalidParameter(
            "AlpnEnabled=true needs an AlpnPolicy: HTTP1Only, HTTP2Only, HTTP2Preferred or "
            "HTTP2Optional"
        )
    ctx.session.add(listener)
    ctx.session.flush()
    if req.CertificateIds is not None:
        set_default(ctx, listener, req.CertificateIds)
    if req.CaCertificateIds is not None:
        set_role(ctx, listener, Role.CA, ca_certificates(ctx.session, req.CaCertificateIds))
    require_ca_when_enabled(ctx.session, listener)


@action(
    "CreateListener",
    CreateListenerRequest,
    changing=True,
    codes=(
        "LoadBalancerNotFound", "ServerGroupNotFound", "SecurityPolicyNotFound", *SERVING_RULES,
        "MissingCaCertificate", "TooManyCertificates", "PortInUse",
    ),
)
def create_listener(ctx: ActionContext, req: CreateListenerRequest) -> dict[str, Any]:
    """Create a listener and start serving it."""
    load_balancer = get_load_balancer(ctx.session, req.LoadBalancerId)
    if req.ListenerProtocol == "TCPSSL" and req.CertificateIds is None:
        raise errors.InvalidParameter("a TCPSSL listener needs CertificateIds (its default)")
    applied = ctx.node.changes.applied
    served = {spec.port for spec in applied.listeners} if applied else set()
    check_port_free(ctx.session, req.ListenerAddress, req.ListenerPort, served)
    listener = Listener(
        id=new_id("lsn"),
        load_balancer_id=load_balancer.id,
        protocol=req.ListenerProtocol,
        address=req.ListenerAddress,
        port=req.ListenerPort,
        server_group_id=get_server_group(ctx.session, req.ServerGroupId).id,
        security_policy_id=DEFAULT_POLICY,
        created_at=ctx.now,
    )
    _apply_fields(ctx, listener, req)
    return {"ListenerId": listener.id}


class UpdateListenerRequest(ListenerFields):
    """UpdateListenerAttribute parameters."""

    ListenerId: str


@action(
    "UpdateListenerAttribute",
    UpdateListenerRequest,
    changing=True,
    codes=(
        "ListenerNotFound", "ServerGroupNotFound", "SecurityPolicyNotFound", *SERVING_RULES,
        "MissingCaCertificate", "PortInUse",
    ),
)
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
        "CertificateIds": role_ids(ctx.session, listener.id, Role.DEFAULT),
        "AdditionalCertificateIds": role_ids(ctx.session, listener.id, Role.ADDITIONAL),
        "SecurityPolicyId": listener.security_policy_id,
        "CaEnabled": listener.ca_enabled,
        "CaCertificateIds": role_ids(ctx.session, listener.id, Role.CA),
        "IdleTimeout": listener.idle_timeout,
        "ListenerDescription": listener.description,
        "AlertThresholdsDays": listener.alert_thresholds_days,
        "AlpnEnabled": listener.alpn_enabled,
        "AlpnPolicy": listener.alpn_policy,
        "ProxyProtocolEnabled": listener.proxy_protocol_enabled,
        "Cps": listener.cps,
        "MaxConnections": listener.max_connections,
        "ListenerStatus": listener.status,
        "CreatedAt": rfc3339(listener.created_at),
    }


class ListenerIdRequest(Request):
    """An action on one listener."""

    ListenerId: str


class ListenerChangeRequest(ChangeRequest):
    """A changing action on one listener."""

    ListenerId: str


@action("GetListenerAttribute", ListenerIdRequest, changing=False, codes=("ListenerNotFound",))
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
            Listener.load_balancer_id == get_load_balancer(ctx.session, req.LoadBalancerId).id
        )
    return {"Listeners": [listener_view(ctx, row) for row in ctx.session.exec(query)]}


def _set_status(ctx: ActionContext, listener_id: str, status: str) -> dict[str, Any]:
    listener = get_listener(ctx.session, listener_id)
    listener.status = status
    ctx.session.add(listener)
    return {}


@action(
    "StartListener",
    ListenerChangeRequest,
    changing=True,
    codes=("ListenerNotFound", "PortInUse"),
)
def start_listener(ctx: ActionContext, req: ListenerChangeRequest) -> dict[str, Any]:
    """Start accepting connections."""
    return _set_status(ctx, req.ListenerId, "Running")


@action("StopListener", ListenerChangeRequest, changing=True, codes=("ListenerNotFound",))
def stop_listener(ctx: ActionContext, req: ListenerChangeRequest) -> dict[str, Any]:
    """Stop accepting; open connections are let finish."""
    return _set_status(ctx, req.ListenerId, "Stopped")


@action("DeleteListener", ListenerChangeRequest, changing=True, codes=("ListenerNotFound",))
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
