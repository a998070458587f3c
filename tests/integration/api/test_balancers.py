"""ListLoadBalancers / ListServerGroups and their Delete actions (SPEC §3)."""

from __future__ import annotations

from tests.certfactory import issue
from tests.conftest import Api
from tests.support import free_port


def _setup(api: Api) -> tuple[str, str, str]:
    """A load balancer, a server group and a listener using both; their ids."""
    cert = api.ok("UploadCertificate", **issue("lb.example.com").upload_params("lb"))
    lb = api.ok("CreateLoadBalancer", LoadBalancerName="web")["LoadBalancerId"]
    sg = api.ok(
        "CreateServerGroup",
        ServerGroupName="app",
        Servers=[{"ServerIp": "127.0.0.1", "Port": 8080, "Weight": 50}],
    )["ServerGroupId"]
    listener = api.ok(
        "CreateListener",
        LoadBalancerId=lb,
        ListenerPort=free_port(),
        ServerGroupId=sg,
        CertificateIds=[cert["CertificateId"]],
    )["ListenerId"]
    return lb, sg, listener


def test_lists_show_fields_and_the_listeners_using_each(api: Api) -> None:
    """Each list entry carries its id, name, creation time (and servers) and its listeners."""
    lb, sg, listener = _setup(api)
    spare = api.ok("CreateLoadBalancer", LoadBalancerName="spare")["LoadBalancerId"]
    balancers = api.ok("ListLoadBalancers")["LoadBalancers"]
    assert [(b["LoadBalancerId"], b["ListenerIds"]) for b in balancers] == [
        (lb, [listener]),
        (spare, []),
    ]
    assert balancers[0]["LoadBalancerName"] == "web" and balancers[0]["CreatedAt"].endswith("Z")
    (group,) = api.ok("ListServerGroups")["ServerGroups"]
    assert group["ServerGroupId"] == sg and group["ListenerIds"] == [listener]
    assert group["Servers"] == [{"ServerIp": "127.0.0.1", "Port": 8080, "Weight": 50}]


def test_delete_is_refused_while_a_listener_uses_it(api: Api) -> None:
    """DeleteLoadBalancer / DeleteServerGroup are ResourceInUse (naming the listener) while a
    listener uses them, honour DryRun, and succeed once the listener is gone."""
    lb, sg, listener = _setup(api)
    assert listener in api.fails("DeleteLoadBalancer", "ResourceInUse", LoadBalancerId=lb)
    assert listener in api.fails("DeleteServerGroup", "ResourceInUse", ServerGroupId=sg)
    api.ok("DeleteListener", ListenerId=listener)
    assert api.ok("DeleteServerGroup", ServerGroupId=sg, DryRun=True)["DryRun"] is True
    assert len(api.ok("ListServerGroups")["ServerGroups"]) == 1
    api.ok("DeleteServerGroup", ServerGroupId=sg)
    api.ok("DeleteLoadBalancer", LoadBalancerId=lb)
    assert api.ok("ListLoadBalancers")["LoadBalancers"] == []
    assert api.ok("ListServerGroups")["ServerGroups"] == []
    api.fails("DeleteLoadBalancer", "LoadBalancerNotFound", status=404, LoadBalancerId=lb)
    api.fails("DeleteServerGroup", "ServerGroupNotFound", status=404, ServerGroupId=sg)
