"""Load balancer and server group actions."""

from __future__ import annotations

from typing import Any

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


@action("CreateServerGroup", CreateServerGroupRequest, changing=True)
def create_server_group(ctx: ActionContext, req: CreateServerGroupRequest) -> dict[str, Any]:
    """Create a group of backend servers."""
    row = ServerGroup(
        id=new_id("sgp"), name=req.ServerGroupName, servers=_unique(req.Servers), created_at=ctx.now
    )
    ctx.session.add(row)
    return {"ServerGroupId": row.id}


class ServersChangeRequest(ChangeRequest):
    """Add or remove servers of a group."""

    ServerGroupId: str
    Servers: list[Server] = Field(min_length=1, max_length=MAX_SERVERS)


@action("AddServersToServerGroup", ServersChangeRequest, changing=True)
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


@action("RemoveServersFromServerGroup", ServersChangeRequest, changing=True)
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


class ListLoadBalancersRequest(Request):
    """ListLoadBalancers takes no parameters."""


@action("ListLoadBalancers", ListLoadBalancersRequest, changing=False)
def list_load_balancers(ctx: ActionContext, req: ListLoadBalancersRequest) -> dict[str, Any]:
    """List load balancers, oldest first, each with the listeners it holds."""
    rows = ctx.session.exec(
        select(LoadBalancer).order_by(col(LoadBalancer.created_at), col(LoadBalancer.id))
    )
    return {
        "LoadBalancers": [
            {
                "LoadBalancerId": row.id,
                "LoadBalancerName": row.name,
                "CreatedAt": rfc3339(row.created_at),
                "ListenerIds": _listener_ids(ctx.session, Listener.load_balancer_id, row.id),
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
    return {
        "ServerGroups": [
            {
                "ServerGroupId": row.id,
                "ServerGroupName": row.name,
                "Servers": list(row.servers),
                "CreatedAt": rfc3339(row.created_at),
                "ListenerIds": _listener_ids(ctx.session, Listener.server_group_id, row.id),
            }
            for row in rows
        ]
    }


class DeleteLoadBalancerRequest(ChangeRequest):
    """DeleteLoadBalancer parameters."""

    LoadBalancerId: str


@action("DeleteLoadBalancer", DeleteLoadBalancerRequest, changing=True)
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


@action("DeleteServerGroup", DeleteServerGroupRequest, changing=True)
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
