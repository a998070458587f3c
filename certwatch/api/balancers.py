"""Load balancer and server group actions."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from certwatch import errors
from certwatch.api.registry import (
    PARAMETERS,
    ActionContext,
    ChangeRequest,
    IpAddress,
    Request,
    action,
)
from certwatch.clock import rfc3339
from certwatch.ids import new_id
from certwatch.inventory.rows import get_load_balancer, get_server_group
from certwatch.store.models import Listener, LoadBalancer, ServerGroup

MAX_SERVERS = 200


class Server(BaseModel):
    """A backend server (a parameter object: strict like a request)."""

    model_config = PARAMETERS

    ServerIp: IpAddress
    Port: int = Field(ge=1, le=65535)
    Weight: int = Field(default=100, ge=0, le=100)


HEALTH_CHECK_DEFAULTS: dict[str, Any] = {
    "HealthCheckEnabled": False,
    "HealthCheckType": "TCP",
    "HealthCheckConnectPort": 0,
    "HealthCheckInterval": 10.0,
    "HealthCheckConnectTimeout": 5.0,
    "HealthyThreshold": 3,
    "UnhealthyThreshold": 3,
}
"""A group's checks before any HealthCheckConfig was given: off."""


class HealthCheckParameters(BaseModel):
    """A server group's health checks (a parameter object); a field not given keeps its value
    (on create: the default)."""

    model_config = PARAMETERS

    HealthCheckEnabled: bool | None = Field(
        default=None,
        description="Check the servers (default when a HealthCheckConfig is given to "
        "CreateServerGroup: true; a group never given one is not checked).",
    )
    HealthCheckType: Literal["TCP"] | None = Field(
        default=None, description="TCP: a server is healthy when it accepts a TCP connection."
    )
    HealthCheckConnectPort: int | None = Field(
        default=None, ge=0, le=65535,
        description="The port checked on every server; 0 (the default): the server's own port.",
    )
    HealthCheckInterval: float | None = Field(
        default=None, ge=0.1, le=300, description="Seconds between checks (default 10)."
    )
    HealthCheckConnectTimeout: float | None = Field(
        default=None, ge=0.1, le=300,
        description="Seconds a check waits for the connection (default 5; at most the interval).",
    )
    HealthyThreshold: int | None = Field(
        default=None, ge=1, le=10,
        description="Successes in a row that mark a server down up (default 3).",
    )
    UnhealthyThreshold: int | None = Field(
        default=None, ge=1, le=10,
        description="Failures in a row that mark a server up down (default 3).",
    )


def _health_check(
    stored: dict[str, Any] | None, given: HealthCheckParameters | None, creating: bool
) -> dict[str, Any] | None:
    """The group's whole HealthCheckConfig after `given` (None: never configured); refuses a
    combination that cannot work."""
    if given is None:
        return stored
    merged = dict(stored or HEALTH_CHECK_DEFAULTS)
    if creating:
        merged["HealthCheckEnabled"] = True
    merged.update(given.model_dump(exclude_none=True))
    timeout, interval = merged["HealthCheckConnectTimeout"], merged["HealthCheckInterval"]
    if timeout > interval:
        raise errors.InvalidParameter(
            f"HealthCheckConnectTimeout ({timeout:g} s) exceeds HealthCheckInterval "
            f"({interval:g} s): a check must end before the next one starts"
        )
    return merged


class CreateLoadBalancerRequest(ChangeRequest):
    """CreateLoadBalancer parameters."""

    LoadBalancerName: str = Field(min_length=1, max_length=128)


@action("CreateLoadBalancer", CreateLoadBalancerRequest, changing=True)
def create_load_balancer(ctx: ActionContext, req: CreateLoadBalancerRequest) -> dict[str, Any]:
    """Create a load balancer instance to hold listeners."""
    row = LoadBalancer(id=new_id("nlb"), name=req.LoadBalancerName, created_at=ctx.now)
    ctx.session.add(row)
    return {"LoadBalancerId": row.id}


def _key(server: dict[str, Any]) -> tuple[str, int]:
    return server["ServerIp"], server["Port"]


def _unique(servers: list[Server]) -> list[dict[str, Any]]:
    out = [s.model_dump() for s in servers]
    keys = [_key(s) for s in out]
    if len(set(keys)) != len(keys):
        raise errors.InvalidParameter("Servers lists the same ServerIp and Port twice")
    return out


class CreateServerGroupRequest(ChangeRequest):
    """CreateServerGroup parameters."""

    ServerGroupName: str = Field(min_length=1, max_length=128)
    Servers: list[Server] = Field(default_factory=list, max_length=MAX_SERVERS)
    HealthCheckConfig: HealthCheckParameters | None = None


@action("CreateServerGroup", CreateServerGroupRequest, changing=True)
def create_server_group(ctx: ActionContext, req: CreateServerGroupRequest) -> dict[str, Any]:
    """Create a group of backend servers, health-checked when a HealthCheckConfig is given."""
    row = ServerGroup(
        id=new_id("sgp"),
        name=req.ServerGroupName,
        servers=_unique(req.Servers),
        health_check=_health_check(None, req.HealthCheckConfig, creating=True),
        created_at=ctx.now,
    )
    ctx.session.add(row)
    return {"ServerGroupId": row.id}


class UpdateServerGroupAttributeRequest(ChangeRequest):
    """UpdateServerGroupAttribute parameters: what is not given is left as it is."""

    ServerGroupId: str
    ServerGroupName: str | None = Field(default=None, min_length=1, max_length=128)
    HealthCheckConfig: HealthCheckParameters | None = None


@action(
    "UpdateServerGroupAttribute",
    UpdateServerGroupAttributeRequest,
    changing=True,
    codes=("ServerGroupNotFound",),
)
def update_server_group(
    ctx: ActionContext, req: UpdateServerGroupAttributeRequest
) -> dict[str, Any]:
    """Rename a server group or change its health checks; live listeners apply them at once."""
    if req.ServerGroupName is None and req.HealthCheckConfig is None:
        raise errors.InvalidParameter(
            "nothing to change: give ServerGroupName or HealthCheckConfig"
        )
    group = get_server_group(ctx.session, req.ServerGroupId)
    if req.ServerGroupName is not None:
        group.name = req.ServerGroupName
    group.health_check = _health_check(group.health_check, req.HealthCheckConfig, creating=False)
    ctx.session.add(group)
    return {}


class ServersChangeRequest(ChangeRequest):
    """Add or remove servers of a group."""

    ServerGroupId: str
    Servers: list[Server] = Field(min_length=1, max_length=MAX_SERVERS)


@action(
    "AddServersToServerGroup",
    ServersChangeRequest,
    changing=True,
    codes=("ServerGroupNotFound",),
)
def add_servers(ctx: ActionContext, req: ServersChangeRequest) -> dict[str, Any]:
    """Add servers to a group; live listeners use them for new connections."""
    group = get_server_group(ctx.session, req.ServerGroupId)
    new = _unique(req.Servers)
    present = {_key(s) for s in group.servers}
    clash = [f"{ip}:{port}" for ip, port in map(_key, new) if (ip, port) in present]
    if clash:
        raise errors.InvalidParameter(f"already in server group {group.id}: {', '.join(clash)}")
    if len(group.servers) + len(new) > MAX_SERVERS:
        raise errors.InvalidParameter(f"a server group holds at most {MAX_SERVERS} servers")
    group.servers = [*group.servers, *new]
    ctx.session.add(group)
    return {}


@action(
    "RemoveServersFromServerGroup",
    ServersChangeRequest,
    changing=True,
    codes=("ServerGroupNotFound",),
)
def remove_servers(ctx: ActionContext, req: ServersChangeRequest) -> dict[str, Any]:
    """Remove servers from a group; open connections to them are let finish."""
    group = get_server_group(ctx.session, req.ServerGroupId)
    gone = {_key(s) for s in _unique(req.Servers)}
    missing = gone - {_key(s) for s in group.servers}
    if missing:
        listed = ", ".join(f"{ip}:{port}" for ip, port in sorted(missing))
        raise errors.InvalidParameter(f"not in server group {group.id}: {listed}")
    group.servers = [s for s in group.servers if _key(s) not in gone]
    ctx.session.add(group)
    return {}


def _listener_ids(session: Session, column: Any, value: str) -> list[str]:
    """The ids of the listeners whose `column` is `value`, oldest first."""
    query = select(Listener.id).where(column == value)
    return list(session.exec(query.order_by(col(Listener.created_at), col(Listener.id))))


def _listeners_by(session: Session, column: Any) -> dict[str, list[str]]:
    """Listener ids (oldest first) by their `column`, in one query for a whole listing."""
    grouped: dict[str, list[str]] = defaultdict(list)
    query = select(column, Listener.id).order_by(col(Listener.created_at), col(Listener.id))
    for owner, listener_id in session.exec(query):
        grouped[owner].append(listener_id)
    return grouped


class ListLoadBalancersRequest(Request):
    """ListLoadBalancers takes no parameters."""


@action("ListLoadBalancers", ListLoadBalancersRequest, changing=False)
def list_load_balancers(ctx: ActionContext, req: ListLoadBalancersRequest) -> dict[str, Any]:
    """List load balancers, oldest first, each with the listeners it holds."""
    rows = ctx.session.exec(
        select(LoadBalancer).order_by(col(LoadBalancer.created_at), col(LoadBalancer.id))
    )
    listeners = _listeners_by(ctx.session, Listener.load_balancer_id)
    return {
        "LoadBalancers": [
            {
                "LoadBalancerId": row.id,
                "LoadBalancerName": row.name,
                "CreatedAt": rfc3339(row.created_at),
                "ListenerIds": listeners.get(row.id, []),
            }
            for row in rows
        ]
    }


class ListServerGroupsRequest(Request):
    """ListServerGroups takes no parameters."""


@action("ListServerGroups", ListServerGroupsRequest, changing=False)
def list_server_groups(ctx: ActionContext, req: ListServerGroupsRequest) -> dict[str, Any]:
    """List server groups, oldest first, each with its servers and the listeners using it."""
    rows = ctx.session.exec(
        select(ServerGroup).order_by(col(ServerGroup.created_at), col(ServerGroup.id))
    )
    listeners = _listeners_by(ctx.session, Listener.server_group_id)
    return {
        "ServerGroups": [
            {
                "ServerGroupId": row.id,
                "ServerGroupName": row.name,
                "Servers": list(row.servers),
                "HealthCheckConfig": dict(row.health_check or HEALTH_CHECK_DEFAULTS),
                "CreatedAt": rfc3339(row.created_at),
                "ListenerIds": listeners.get(row.id, []),
            }
            for row in rows
        ]
    }


class DeleteLoadBalancerRequest(ChangeRequest):
    """DeleteLoadBalancer parameters."""

    LoadBalancerId: str


@action(
    "DeleteLoadBalancer",
    DeleteLoadBalancerRequest,
    changing=True,
    codes=("LoadBalancerNotFound", "ResourceInUse"),
)
def delete_load_balancer(ctx: ActionContext, req: DeleteLoadBalancerRequest) -> dict[str, Any]:
    """Delete a load balancer that holds no listener."""
    row = get_load_balancer(ctx.session, req.LoadBalancerId)
    users = _listener_ids(ctx.session, Listener.load_balancer_id, row.id)
    if users:
        raise errors.ResourceInUse(
            f"load balancer {row.id} holds listener(s) {', '.join(users)}: delete them first"
        )
    ctx.session.delete(row)
    return {}


class DeleteServerGroupRequest(ChangeRequest):
    """DeleteServerGroup parameters."""

    ServerGroupId: str


@action(
    "DeleteServerGroup",
    DeleteServerGroupRequest,
    changing=True,
    codes=("ServerGroupNotFound", "ResourceInUse"),
)
def delete_server_group(ctx: ActionContext, req: DeleteServerGroupRequest) -> dict[str, Any]:
    """Delete a server group that no listener uses."""
    row = get_server_group(ctx.session, req.ServerGroupId)
    users = _listener_ids(ctx.session, Listener.server_group_id, row.id)
    if users:
        raise errors.ResourceInUse(
            f"server group {row.id} is used by listener(s) {', '.join(users)}: point them at "
            "another group or delete them first"
        )
    ctx.session.delete(row)
    return {}
