"""Load balancer and server group actions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from certwatch import errors
from certwatch.api.registry import PARAMETERS, ActionContext, ChangeRequest, IpAddress, action
from certwatch.ids import new_id
from certwatch.inventory.rows import get_server_group
from certwatch.store.models import LoadBalancer, ServerGroup

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
