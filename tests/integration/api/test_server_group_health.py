"""A server group's HealthCheckConfig: CreateServerGroup, UpdateServerGroupAttribute and
ListServerGroups (SPEC §3, §4 "Backend health checks")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from certwatch.api.http import create_app
from certwatch.app.service import Service
from offload.echo import EchoServer
from offload.workers import ProxyControl
from tests.certfactory import make_pki
from tests.conftest import Api, make_config
from tests.support import eventually, free_port

SERVERS = [{"ServerIp": "127.0.0.1", "Port": 8080, "Weight": 100}]
DEFAULTS = {
    "HealthCheckEnabled": False,
    "HealthCheckType": "TCP",
    "HealthCheckConnectPort": 0,
    "HealthCheckInterval": 10.0,
    "HealthCheckConnectTimeout": 5.0,
    "HealthyThreshold": 3,
    "UnhealthyThreshold": 3,
}

# (HealthCheckConfig, words the message must contain)
INVALID: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"HealthCheckType": "HTTP"}, ("HealthCheckType", "'TCP'")),
    ({"HealthCheckEnabled": "yes"}, ("HealthCheckEnabled", "boolean")),
    ({"HealthCheckInterval": 0}, ("HealthCheckInterval", "greater than or equal to 0.1")),
    ({"HealthCheckInterval": 301}, ("HealthCheckInterval", "less than or equal to 300")),
    ({"HealthCheckInterval": "10"}, ("HealthCheckInterval", "number")),
    ({"HealthCheckConnectTimeout": 0.05}, ("HealthCheckConnectTimeout", "0.1")),
    ({"HealthCheckConnectPort": 65536}, ("HealthCheckConnectPort", "65535")),
    ({"HealthCheckConnectPort": -1}, ("HealthCheckConnectPort", "greater than or equal to 0")),
    ({"HealthyThreshold": 0}, ("HealthyThreshold", "greater than or equal to 1")),
    ({"UnhealthyThreshold": 11}, ("UnhealthyThreshold", "less than or equal to 10")),
    ({"HealthyThreshold": 2.5}, ("HealthyThreshold", "integer")),
    ({"HealthCheckInterval": 2}, ("HealthCheckConnectTimeout (5 s)", "HealthCheckInterval (2 s)",
                                  "before the next one starts")),
    ({"HealthCheckInterval": 1, "HealthCheckConnectTimeout": 1.5}, ("exceeds",)),
    ({"HealthCheckPath": "/"}, ("unknown parameter", "HealthCheckPath")),
]


def _groups(api: Api) -> list[dict[str, Any]]:
    return list(api.ok("ListServerGroups")["ServerGroups"])


def _config(api: Api, group: str) -> dict[str, Any]:
    (found,) = [g for g in _groups(api) if g["ServerGroupId"] == group]
    return dict(found["HealthCheckConfig"])


@pytest.mark.parametrize(("config", "words"), INVALID)
def test_create_refuses_a_bad_health_check_and_creates_nothing(
    api: Api, config: dict[str, Any], words: tuple[str, ...]
) -> None:
    """CreateServerGroup with a bad HealthCheckConfig is 400 InvalidParameter naming the field
    and the reason, and no group is created."""
    message = api.fails(
        "CreateServerGroup", "InvalidParameter", ServerGroupName="app", Servers=SERVERS,
        HealthCheckConfig=config,
    )
    assert all(word in message for word in words), message
    assert _groups(api) == []


@pytest.mark.parametrize(("config", "words"), INVALID)
def test_update_refuses_a_bad_health_check_and_changes_nothing(
    api: Api, config: dict[str, Any], words: tuple[str, ...]
) -> None:
    """UpdateServerGroupAttribute with a bad HealthCheckConfig is 400 InvalidParameter naming
    the field and the reason; the group (name and checks) is as it was."""
    group = api.ok(
        "CreateServerGroup", ServerGroupName="app", Servers=SERVERS,
        HealthCheckConfig={"HealthyThreshold": 2},
    )["ServerGroupId"]
    before = _groups(api)
    message = api.fails(
        "UpdateServerGroupAttribute", "InvalidParameter", ServerGroupId=group,
        ServerGroupName="renamed", HealthCheckConfig=config,
    )
    assert all(word in message for word in words), message
    assert _groups(api) == before


def test_a_group_without_config_is_not_checked_and_a_given_config_turns_checks_on(
    api: Api,
) -> None:
    """A group created without HealthCheckConfig shows the defaults with checks off; one
    created with a (partial) config is checked, the fields not given at their defaults."""
    plain = api.ok("CreateServerGroup", ServerGroupName="plain", Servers=SERVERS)
    checked = api.ok(
        "CreateServerGroup", ServerGroupName="checked", Servers=SERVERS,
        HealthCheckConfig={"HealthCheckConnectPort": 9000, "HealthCheckInterval": 5},
    )
    assert _config(api, plain["ServerGroupId"]) == DEFAULTS
    assert _config(api, checked["ServerGroupId"]) == {
        **DEFAULTS, "HealthCheckEnabled": True, "HealthCheckConnectPort": 9000,
        "HealthCheckInterval": 5.0,
    }
    off = api.ok(
        "CreateServerGroup", ServerGroupName="off", HealthCheckConfig={"HealthCheckEnabled": False}
    )
    assert _config(api, off["ServerGroupId"])["HealthCheckEnabled"] is False


def test_update_changes_only_what_it_is_given(api: Api) -> None:
    """UpdateServerGroupAttribute changes the fields it is given and keeps the others; it can
    rename, switch checks off and on, and port 0 goes back to each server's own port."""
    group = api.ok(
        "CreateServerGroup", ServerGroupName="app", Servers=SERVERS,
        HealthCheckConfig={"HealthCheckConnectPort": 9000, "UnhealthyThreshold": 2},
    )["ServerGroupId"]
    api.ok(
        "UpdateServerGroupAttribute", ServerGroupId=group,
        HealthCheckConfig={"HealthCheckInterval": 0.5, "HealthCheckConnectTimeout": 0.2},
    )
    expected = {
        **DEFAULTS, "HealthCheckEnabled": True, "HealthCheckConnectPort": 9000,
        "UnhealthyThreshold": 2, "HealthCheckInterval": 0.5, "HealthCheckConnectTimeout": 0.2,
    }
    assert _config(api, group) == expected
    api.ok("UpdateServerGroupAttribute", ServerGroupId=group, ServerGroupName="renamed")
    (row,) = _groups(api)
    assert row["ServerGroupName"] == "renamed" and row["HealthCheckConfig"] == expected
    api.ok(
        "UpdateServerGroupAttribute", ServerGroupId=group,
        HealthCheckConfig={"HealthCheckEnabled": False, "HealthCheckConnectPort": 0},
    )
    assert _config(api, group) == {
        **expected, "HealthCheckEnabled": False, "HealthCheckConnectPort": 0,
    }


def test_update_dry_run_unknown_group_and_nothing_to_change(api: Api) -> None:
    """DryRun changes nothing; an unknown group is 404 ServerGroupNotFound; a call with
    nothing to change is InvalidParameter saying what to give."""
    group = api.ok("CreateServerGroup", ServerGroupName="app")["ServerGroupId"]
    answer = api.ok(
        "UpdateServerGroupAttribute", ServerGroupId=group, DryRun=True,
        HealthCheckConfig={"HealthCheckEnabled": True},
    )
    assert answer["DryRun"] is True
    assert _config(api, group) == DEFAULTS
    api.fails(
        "UpdateServerGroupAttribute", "ServerGroupNotFound", status=404,
        ServerGroupId="sgp-0000000000000000", ServerGroupName="x",
    )
    message = api.fails("UpdateServerGroupAttribute", "InvalidParameter", ServerGroupId=group)
    assert "ServerGroupName or HealthCheckConfig" in message


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Api, ProxyControl]]:
    """An API whose service drives a real one-worker proxy."""
    with ProxyControl(1) as proxy:
        service = Service(make_config(tmp_path), data_plane=proxy)
        service.sync_data_plane()
        with TestClient(create_app(service)) as client:
            yield Api(client), proxy
        service.close()


def test_the_proxy_checks_a_group_by_its_stored_config(
    served: tuple[Api, ProxyControl],
) -> None:
    """A listener's group with checks on reaches the proxy: a server that refuses is shown
    down (by group id and ip:port), its live peer up; switching checks off through
    UpdateServerGroupAttribute stops them (no state exported)."""
    api, proxy = served
    dead = free_port()
    with EchoServer() as live:
        cert = api.ok("UploadCertificate", **make_pki().leaf("a.example.com").upload_params("a"))
        lb = api.ok("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
        sg = api.ok(
            "CreateServerGroup", ServerGroupName="g",
            Servers=[{"ServerIp": "127.0.0.1", "Port": p} for p in (live.port, dead)],
            HealthCheckConfig={
                "HealthCheckInterval": 0.2, "HealthCheckConnectTimeout": 0.2,
                "HealthyThreshold": 2, "UnhealthyThreshold": 2,
            },
        )["ServerGroupId"]
        api.ok(
            "CreateListener", LoadBalancerId=lb, ServerGroupId=sg, ListenerPort=free_port(),
            CertificateIds=[cert["CertificateId"]],
        )
        expected = {(sg, f"127.0.0.1:{live.port}"): True, (sg, f"127.0.0.1:{dead}"): False}
        assert eventually(lambda: proxy.stats().backends == expected, timeout=5)
        api.ok(
            "UpdateServerGroupAttribute", ServerGroupId=sg,
            HealthCheckConfig={"HealthCheckEnabled": False},
        )
        assert proxy.stats().backends == {}
