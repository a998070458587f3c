"""ALPN, PROXY protocol and connection limits through CreateListener, UpdateListenerAttribute
and GetListenerAttribute, as the data plane gets them; policies that cannot be served."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from certwatch.api.http import create_app
from certwatch.app.service import Service
from certwatch.store.models import SecurityPolicy
from offload.echo import EchoServer
from offload.export import OffloadCollector
from offload.spec import ListenerSpec
from offload.workers import ProxyControl
from tests.certfactory import make_pki
from tests.conftest import Api, make_config
from tests.integration.api.test_listeners import create, make_base
from tests.integration.offload.conftest import client_context, echo_roundtrip, tls_connect
from tests.support import free_port


@pytest.fixture
def base(api: Api) -> dict[str, str]:
    """A load balancer, a server group and a default certificate."""
    return make_base(api)


OPTIONS = ("AlpnEnabled", "AlpnPolicy", "ProxyProtocolEnabled", "Cps", "MaxConnections")


def _spec(service: Service, lid: str) -> ListenerSpec:
    """The spec the data plane was last handed for listener `lid`."""
    assert service.applied_snapshot is not None
    (spec,) = [s for s in service.applied_snapshot.listeners if s.listener_id == lid]
    return spec


def _options(api: Api, lid: str) -> tuple[object, ...]:
    got = api.ok("GetListenerAttribute", ListenerId=lid)
    return tuple(got[name] for name in OPTIONS)


def test_options_default_off_and_unlimited(
    api: Api, base: dict[str, str], service: Service
) -> None:
    """A listener created without the options has ALPN and PROXY protocol off, no limits."""
    lid = create(api, base)
    assert _options(api, lid) == (False, None, False, 0, 0)
    spec = _spec(service, lid)
    assert (spec.alpn_policy, spec.proxy_protocol, spec.cps, spec.max_connections) == (
        None, False, 0, 0,
    )


def test_options_are_stored_served_and_updated(
    api: Api, base: dict[str, str], service: Service
) -> None:
    """Options given on create are returned and reach the proxy; an update changes only
    what it names, and AlpnEnabled=false stops ALPN while keeping the policy."""
    lid = create(
        api, base, AlpnEnabled=True, AlpnPolicy="HTTP2Preferred", ProxyProtocolEnabled=True,
        Cps=50, MaxConnections=1000,
    )
    assert _options(api, lid) == (True, "HTTP2Preferred", True, 50, 1000)
    spec = _spec(service, lid)
    assert (spec.alpn_policy, spec.proxy_protocol, spec.cps, spec.max_connections) == (
        "HTTP2Preferred", True, 50, 1000,
    )
    api.ok("UpdateListenerAttribute", ListenerId=lid, AlpnPolicy="HTTP1Only", Cps=0)
    assert _options(api, lid) == (True, "HTTP1Only", True, 0, 1000)
    assert (_spec(service, lid).alpn_policy, _spec(service, lid).cps) == ("HTTP1Only", 0)
    api.ok("UpdateListenerAttribute", ListenerId=lid, AlpnEnabled=False,
           ProxyProtocolEnabled=False)
    assert _options(api, lid) == (False, "HTTP1Only", False, 0, 1000)
    assert (_spec(service, lid).alpn_policy, _spec(service, lid).proxy_protocol) == (None, False)


def test_bad_option_values_are_refused(api: Api, base: dict[str, str]) -> None:
    """AlpnEnabled without a policy, an unknown policy, or a negative limit is InvalidParameter
    and changes nothing."""
    message = api.fails("CreateListener", "InvalidParameter", **_create_params(base),
                        AlpnEnabled=True)
    assert "AlpnPolicy" in message
    api.fails("CreateListener", "InvalidParameter", **_create_params(base),
              AlpnEnabled=True, AlpnPolicy="HTTP3Only")
    lid = create(api, base)
    api.fails("UpdateListenerAttribute", "InvalidParameter", ListenerId=lid, Cps=-1)
    api.fails("UpdateListenerAttribute", "InvalidParameter", ListenerId=lid, AlpnEnabled=True)
    assert _options(api, lid) == (False, None, False, 0, 0)
    assert len(api.ok("ListListeners")["Listeners"]) == 1


def _create_params(base: dict[str, str]) -> dict[str, object]:
    return {
        "LoadBalancerId": base["LoadBalancerId"], "ServerGroupId": base["ServerGroupId"],
        "ListenerPort": free_port(), "CertificateIds": [base["CertificateId"]],
    }


def test_impossible_custom_policies_are_refused_with_the_reason(api: Api) -> None:
    """TLSv1.1 or TLSv1.0 with only TLS 1.2 ciphers (AES-GCM, SHA-256) is refused naming the
    version; TLS 1.3 alone with its suites, or TLSv1.0 with a SHA-1 cipher, is accepted."""
    for versions, ciphers in (
        (["TLSv1.1"], ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA256"]),
        (["TLSv1.0"], ["AES128-GCM-SHA256", "AES256-GCM-SHA384"]),
        (["TLSv1.0", "TLSv1.2"], ["ECDHE-ECDSA-AES128-GCM-SHA256"]),
    ):
        message = api.fails("CreateSecurityPolicy", "InvalidParameter",
                            SecurityPolicyName="impossible", TlsVersions=versions,
                            Ciphers=ciphers)
        assert f"{versions[0]} is enabled but none of the listed ciphers works" in message
        assert "need TLS 1.2" in message
    api.ok("CreateSecurityPolicy", SecurityPolicyName="only13", TlsVersions=["TLSv1.3"],
           Ciphers=["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"])
    api.ok("CreateSecurityPolicy", SecurityPolicyName="old", TlsVersions=["TLSv1.0", "TLSv1.2"],
           Ciphers=["ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES128-GCM-SHA256"])
    names = [p["SecurityPolicyName"] for p in api.ok("ListSecurityPolicies")["SecurityPolicies"]]
    assert "impossible" not in names and {"only13", "old"} <= set(names)


def test_a_stored_impossible_policy_is_refused_on_listeners(
    api: Api, base: dict[str, str], service: Service
) -> None:
    """A custom policy stored before the check (TLSv1.1 with only GCM) cannot be put on a
    listener by CreateListener or UpdateListenerAttribute."""
    with Session(service.node.engine) as session:
        session.add(SecurityPolicy(
            id="spy-0000000000000bad", name="legacy", tls_versions=["TLSv1.1"],
            ciphers=["AES128-GCM-SHA256"], created_at=dt.datetime.now(dt.UTC),
        ))
        session.commit()
    message = api.fails("CreateListener", "InvalidParameter", **_create_params(base),
                        SecurityPolicyId="spy-0000000000000bad")
    assert "spy-0000000000000bad cannot be served: TLSv1.1 is enabled" in message
    lid = create(api, base)
    api.fails("UpdateListenerAttribute", "InvalidParameter", ListenerId=lid,
              SecurityPolicyId="spy-0000000000000bad")
    assert api.ok("GetListenerAttribute", ListenerId=lid)["SecurityPolicyId"] == (
        "tls_cipher_policy_1_2"
    )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Api, EchoServer]]:
    """The API of a service whose data plane is a real one-worker proxy (its counters in
    /metrics, as `serve` registers them), and an echo backend."""
    with ProxyControl(1) as proxy, EchoServer() as echo:
        service = Service(make_config(tmp_path), data_plane=proxy)
        service.registry.register(OffloadCollector(proxy))
        with TestClient(create_app(service)) as client:
            yield Api(client), echo
        service.close()


def test_options_set_through_the_api_are_served(live: tuple[Api, EchoServer]) -> None:
    """A listener created with ALPN HTTP2Preferred and MaxConnections 1 selects h2 and closes a
    second concurrent connection (rate_limited in /metrics); turning ALPN off through
    UpdateListenerAttribute stops selecting for the next connection."""
    api, echo = live
    pki = make_pki()
    cert = api.ok("UploadCertificate", **pki.leaf("live.example.com").upload_params("live"))
    lb = api.ok("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
    sg = api.ok("CreateServerGroup", ServerGroupName="g",
                Servers=[{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 100}])
    port = free_port()
    lid = api.ok(
        "CreateListener", LoadBalancerId=lb, ServerGroupId=sg["ServerGroupId"],
        ListenerPort=port, CertificateIds=[cert["CertificateId"]], AlpnEnabled=True,
        AlpnPolicy="HTTP2Preferred", MaxConnections=1,
    )["ListenerId"]
    ctx = client_context(pki.root_pem)
    ctx.set_alpn_protocols(["http/1.1", "h2"])
    with tls_connect(port, ctx, "live.example.com") as held:
        assert held.selected_alpn_protocol() == "h2"
        assert echo_roundtrip(held) == b"ping"
        with pytest.raises((ssl.SSLError, OSError)):
            with tls_connect(port, ctx, "live.example.com") as refused:
                echo_roundtrip(refused)
    metrics = api.client.get("/metrics").text
    assert (
        f'certwatch_offload_handshake_failures_total{{listener_id="{lid}",reason="rate_limited"}}'
        " 1.0" in metrics
    )
    api.ok("UpdateListenerAttribute", ListenerId=lid, AlpnEnabled=False)
    with tls_connect(port, ctx, "live.example.com") as sock:
        assert sock.selected_alpn_protocol() is None
        assert echo_roundtrip(sock) == b"ping"
