"""Load balancers, server groups, listeners, additional certificates and policies via the API."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from certwatch.api.http import create_app
from certwatch.app.service import Service
from tests.certfactory import Issued, issue, make_pki
from tests.conftest import Api, make_config
from tests.support import free_port

NOW = dt.datetime.now(dt.UTC)


def server_cert(api: Api, leaf: Issued | None = None, name: str = "srv") -> str:
    """Upload a Server certificate (a fresh one by default); return its id."""
    leaf = leaf or issue(f"{name}.example.com")
    return str(api.ok("UploadCertificate", **leaf.upload_params(name))["CertificateId"])


def ca_cert(api: Api) -> str:
    """Upload a CA certificate; return its id."""
    return str(
        api.ok(
            "UploadCertificate",
            CertificateName="ca",
            CertificateType="Ca",
            Certificate=make_pki().root_pem,
        )["CertificateId"]
    )


@pytest.fixture
def base(api: Api) -> dict[str, str]:
    """A load balancer, a server group and a default certificate."""
    return make_base(api)


def make_base(api: Api) -> dict[str, str]:
    """Create a load balancer, a server group and a default certificate; return their ids."""
    return {
        "LoadBalancerId": api.ok("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"],
        "ServerGroupId": api.ok(
            "CreateServerGroup",
            ServerGroupName="sg",
            Servers=[{"ServerIp": "127.0.0.1", "Port": 9000, "Weight": 50}],
        )["ServerGroupId"],
        "CertificateId": server_cert(api),
    }


def create(api: Api, base: dict[str, str], **extra: Any) -> str:
    """Create a TCPSSL listener on a free port; return its id."""
    params = {
        "LoadBalancerId": base["LoadBalancerId"],
        "ServerGroupId": base["ServerGroupId"],
        "ListenerPort": free_port(),
        "CertificateIds": [base["CertificateId"]],
        **extra,
    }
    return str(api.ok("CreateListener", **params)["ListenerId"])


def test_create_listener_with_defaults(api: Api, base: dict[str, str]) -> None:
    """A new listener runs on 127.0.0.1 with policy tls_cipher_policy_1_2 and 900 s idle timeout."""
    lid = create(api, base, ListenerDescription="web")
    got = api.ok("GetListenerAttribute", ListenerId=lid)
    assert lid.startswith("lsn-")
    assert got["ListenerAddress"] == "127.0.0.1"
    assert got["SecurityPolicyId"] == "tls_cipher_policy_1_2"
    assert (got["IdleTimeout"], got["CaEnabled"], got["ListenerStatus"]) == (900, False, "Running")
    assert got["CertificateIds"] == [base["CertificateId"]]
    assert got["ListenerDescription"] == "web"
    assert [x["ListenerId"] for x in api.ok("ListListeners")["Listeners"]] == [lid]
    listed = api.ok("ListListeners", LoadBalancerId=base["LoadBalancerId"])["Listeners"]
    assert [x["ListenerId"] for x in listed] == [lid]


def test_proxy_timeouts_from_config_reach_the_listener_spec(tmp_path: Path) -> None:
    """`proxy.handshake_timeout` and `proxy.connect_timeout` are what the data plane gets,
    next to the listener's own IdleTimeout."""
    proxy = {"handshake_timeout": "3s", "connect_timeout": 0.75}
    svc = Service(make_config(tmp_path, proxy=proxy))
    try:
        with TestClient(create_app(svc)) as client:
            api = Api(client)
            create(api, make_base(api), IdleTimeout=120)
        assert svc.applied_snapshot is not None
        (spec,) = svc.applied_snapshot.listeners
        assert (spec.handshake_timeout, spec.connect_timeout, spec.idle_timeout) == (3, 0.75, 120)
    finally:
        svc.close()


def test_default_certificate_rules(api: Api, base: dict[str, str]) -> None:
    """The default must be exactly one valid Server certificate."""
    expired = server_cert(
        api,
        issue(
            "old.example.com",
            not_before=NOW - dt.timedelta(days=9),
            not_after=NOW - dt.timedelta(days=1),
        ),
        "old",
    )
    future = server_cert(
        api, issue("new.example.com", not_before=NOW + dt.timedelta(days=1), days=30), "future"
    )
    ca = ca_cert(api)
    port = free_port()
    common = {
        "LoadBalancerId": base["LoadBalancerId"],
        "ServerGroupId": base["ServerGroupId"],
        "ListenerPort": port,
    }
    api.fails("CreateListener", "CertificateExpired", CertificateIds=[expired], **common)
    api.fails("CreateListener", "CertificateNotYetValid", CertificateIds=[future], **common)
    api.fails("CreateListener", "IncorrectCertificateType", CertificateIds=[ca], **common)
    api.fails("CreateListener", "InvalidParameter", CertificateIds=[], **common)
    api.fails(
        "CreateListener",
        "InvalidParameter",
        CertificateIds=[base["CertificateId"], base["CertificateId"]],
        **common,
    )
    api.fails("CreateListener", "InvalidParameter", **common)
    api.fails(
        "CreateListener",
        "CertificateNotFound",
        404,
        CertificateIds=["cert-0000000000000000"],
        **common,
    )
    assert api.ok("ListListeners")["Listeners"] == []


def test_unknown_ids_are_404(api: Api, base: dict[str, str]) -> None:
    """Each unknown object id is a 404 named after its object."""
    common = {"ListenerPort": free_port(), "CertificateIds": [base["CertificateId"]]}
    api.fails(
        "CreateListener",
        "LoadBalancerNotFound",
        404,
        LoadBalancerId="nlb-0000000000000000",
        ServerGroupId=base["ServerGroupId"],
        **common,
    )
    api.fails(
        "CreateListener",
        "ServerGroupNotFound",
        404,
        LoadBalancerId=base["LoadBalancerId"],
        ServerGroupId="sgp-0000000000000000",
        **common,
    )
    api.fails(
        "CreateListener",
        "SecurityPolicyNotFound",
        404,
        LoadBalancerId=base["LoadBalancerId"],
        ServerGroupId=base["ServerGroupId"],
        SecurityPolicyId="spy-0000000000000000",
        **common,
    )
    for action in ("GetListenerAttribute", "StartListener", "StopListener", "DeleteListener"):
        api.fails(action, "ListenerNotFound", 404, ListenerId="lsn-0000000000000000")
    api.fails(
        "AddServersToServerGroup",
        "ServerGroupNotFound",
        404,
        ServerGroupId="sgp-0000000000000000",
        Servers=[{"ServerIp": "127.0.0.1", "Port": 1}],
    )


def test_mutual_tls_needs_a_ca(api: Api, base: dict[str, str]) -> None:
    """CaEnabled without a CA is MissingCaCertificate; a Server cert as CA is refused."""
    api.fails(
        "CreateListener",
        "MissingCaCertificate",
        LoadBalancerId=base["LoadBalancerId"],
        ServerGroupId=base["ServerGroupId"],
        ListenerPort=free_port(),
        CertificateIds=[base["CertificateId"]],
        CaEnabled=True,
    )
    api.fails(
        "CreateListener",
        "IncorrectCertificateType",
        LoadBalancerId=base["LoadBalancerId"],
        ServerGroupId=base["ServerGroupId"],
        ListenerPort=free_port(),
        CertificateIds=[base["CertificateId"]],
        CaEnabled=True,
        CaCertificateIds=[base["CertificateId"]],
    )
    ca = ca_cert(api)
    lid = create(api, base, CaEnabled=True, CaCertificateIds=[ca])
    api.fails(
        "UpdateListenerAttribute", "MissingCaCertificate", ListenerId=lid, CaCertificateIds=[]
    )
    got = api.ok("GetListenerAttribute", ListenerId=lid)
    assert (got["CaEnabled"], got["CaCertificateIds"]) == (True, [ca])
    api.ok("UpdateListenerAttribute", ListenerId=lid, CaEnabled=False, CaCertificateIds=[])
    assert api.ok("GetListenerAttribute", ListenerId=lid)["CaEnabled"] is False


def test_port_in_use(api: Api, base: dict[str, str]) -> None:
    """A port of another listener, or one held by another program, is PortInUse."""
    port = free_port()
    create(api, base, ListenerPort=port)
    message = api.fails(
        "CreateListener",
        "PortInUse",
        LoadBalancerId=base["LoadBalancerId"],
        ServerGroupId=base["ServerGroupId"],
        ListenerPort=port,
        CertificateIds=[base["CertificateId"]],
    )
    assert str(port) in message
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        api.fails(
            "CreateListener",
            "PortInUse",
            LoadBalancerId=base["LoadBalancerId"],
            ServerGroupId=base["ServerGroupId"],
            ListenerPort=taken,
            CertificateIds=[base["CertificateId"]],
        )
    assert len(api.ok("ListListeners")["Listeners"]) == 1


def test_additional_certificates_and_limits(api: Api, base: dict[str, str]) -> None:
    """Up to 15 per call and 25 per load balancer; more is refused and nothing changes."""
    first, second = create(api, base), create(api, base)
    certs = [server_cert(api, name=f"n{i}") for i in range(27)]
    api.fails(
        "AssociateAdditionalCertificatesWithListener",
        "TooManyCertificates",
        ListenerId=first,
        AdditionalCertificateIds=certs[:16],
    )
    api.ok(
        "AssociateAdditionalCertificatesWithListener",
        ListenerId=first,
        AdditionalCertificateIds=certs[:15],
    )
    api.ok(
        "AssociateAdditionalCertificatesWithListener",
        ListenerId=second,
        AdditionalCertificateIds=certs[15:25],
    )
    message = api.fails(
        "AssociateAdditionalCertificatesWithListener",
        "QuotaExceeded.AdditionalCertificates",
        ListenerId=second,
        AdditionalCertificateIds=certs[25:27],
    )
    assert "25" in message
    listed = api.ok("ListListenerCertificates", ListenerId=second, CertificateType="Server")
    assert [c["IsDefault"] for c in listed["Certificates"]] == [True] + [False] * 10
    api.ok(
        "DisassociateAdditionalCertificatesWithListener",
        ListenerId=second,
        AdditionalCertificateIds=certs[15:17],
    )
    api.ok(
        "AssociateAdditionalCertificatesWithListener",
        ListenerId=second,
        AdditionalCertificateIds=certs[25:27],
    )
    api.fails(
        "DisassociateAdditionalCertificatesWithListener",
        "InvalidParameter",
        ListenerId=second,
        AdditionalCertificateIds=certs[15:16],
    )


def test_failed_associate_changes_nothing(api: Api, base: dict[str, str]) -> None:
    """One bad id among good ones refuses the whole call; no certificate is added."""
    lid = create(api, base)
    good = server_cert(api, name="good")
    ca = ca_cert(api)
    api.fails(
        "AssociateAdditionalCertificatesWithListener",
        "IncorrectCertificateType",
        ListenerId=lid,
        AdditionalCertificateIds=[good, ca],
    )
    assert api.ok("GetListenerAttribute", ListenerId=lid)["AdditionalCertificateIds"] == []


def test_certificate_in_use_cannot_be_deleted(api: Api, base: dict[str, str]) -> None:
    """Deleting a certificate in use is ResourceInUse; once the listener is gone, it works."""
    lid = create(api, base)
    message = api.fails("DeleteCertificate", "ResourceInUse", CertificateId=base["CertificateId"])
    assert lid in message
    api.ok("DeleteListener", ListenerId=lid)
    api.ok("DeleteCertificate", CertificateId=base["CertificateId"])


def test_start_stop_and_update(api: Api, base: dict[str, str]) -> None:
    """Stop/Start change the status; an update replaces the default and the other fields."""
    lid = create(api, base)
    api.ok("StopListener", ListenerId=lid)
    assert api.ok("GetListenerAttribute", ListenerId=lid)["ListenerStatus"] == "Stopped"
    api.ok("StartListener", ListenerId=lid)
    new = server_cert(api, name="new")
    api.ok(
        "UpdateListenerAttribute",
        ListenerId=lid,
        CertificateIds=[new],
        IdleTimeout=60,
        AlertThresholdsDays=[7, 30],
    )
    got = api.ok("GetListenerAttribute", ListenerId=lid)
    assert (got["CertificateIds"], got["IdleTimeout"]) == ([new], 60)
    assert got["AlertThresholdsDays"] == [30, 7]
    api.fails(
        "UpdateListenerAttribute", "InvalidParameter", ListenerId=lid, AlertThresholdsDays=[0]
    )
    api.fails("UpdateListenerAttribute", "InvalidParameter", ListenerId=lid, IdleTimeout=0)


def test_server_groups(api: Api, base: dict[str, str]) -> None:
    """Servers are added and removed; duplicates, unknown servers and bad IPs are refused."""
    sg = base["ServerGroupId"]
    api.ok(
        "AddServersToServerGroup",
        ServerGroupId=sg,
        Servers=[{"ServerIp": "127.0.0.2", "Port": 9001}],
    )
    api.fails(
        "AddServersToServerGroup",
        "InvalidParameter",
        ServerGroupId=sg,
        Servers=[{"ServerIp": "127.0.0.2", "Port": 9001}],
    )
    api.fails(
        "AddServersToServerGroup",
        "InvalidParameter",
        ServerGroupId=sg,
        Servers=[{"ServerIp": "not-an-ip", "Port": 9001}],
    )
    api.fails(
        "AddServersToServerGroup",
        "InvalidParameter",
        ServerGroupId=sg,
        Servers=[{"ServerIp": "127.0.0.3", "Port": 70000}],
    )
    api.ok(
        "RemoveServersFromServerGroup",
        ServerGroupId=sg,
        Servers=[{"ServerIp": "127.0.0.2", "Port": 9001}],
    )
    api.fails(
        "RemoveServersFromServerGroup",
        "InvalidParameter",
        ServerGroupId=sg,
        Servers=[{"ServerIp": "127.0.0.2", "Port": 9001}],
    )


def test_security_policies(api: Api, base: dict[str, str]) -> None:
    """The five system policies carry their exact versions; custom policies are checked."""
    policies = {
        p["SecurityPolicyId"]: p for p in api.ok("ListSecurityPolicies")["SecurityPolicies"]
    }
    assert policies["tls_cipher_policy_1_0"]["TlsVersions"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2"]
    assert policies["tls_cipher_policy_1_1"]["TlsVersions"] == ["TLSv1.1", "TLSv1.2"]
    assert policies["tls_cipher_policy_1_2_strict"]["TlsVersions"] == ["TLSv1.2"]
    assert "AES128-SHA" not in policies["tls_cipher_policy_1_2_strict"]["Ciphers"]
    assert policies["tls_cipher_policy_1_2_strict_with_1_3"]["TlsVersions"] == [
        "TLSv1.2",
        "TLSv1.3",
    ]
    assert all(p["System"] for p in policies.values())
    assert len(policies["tls_cipher_policy_1_2"]["Ciphers"]) == 19
    assert policies["tls_cipher_policy_1_2_strict_with_1_3"]["Unenforceable"] == []
    assert policies["tls_cipher_policy_1_2"]["Unenforceable"] == ["DES-CBC3-SHA"]
    spy = api.ok(
        "CreateSecurityPolicy",
        SecurityPolicyName="modern",
        TlsVersions=["TLSv1.2"],
        Ciphers=["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"],
    )
    assert spy["SecurityPolicyId"].startswith("spy-")
    api.fails(
        "CreateSecurityPolicy",
        "InvalidParameter",
        SecurityPolicyName="x",
        TlsVersions=["SSLv3"],
        Ciphers=["AES128-SHA"],
    )
    api.fails(
        "CreateSecurityPolicy",
        "InvalidParameter",
        SecurityPolicyName="x",
        TlsVersions=["TLSv1.2"],
        Ciphers=["RC4-MD5"],
    )
    lid = create(api, base, SecurityPolicyId=spy["SecurityPolicyId"])
    assert (
        api.ok("GetListenerAttribute", ListenerId=lid)["SecurityPolicyId"]
        == spy["SecurityPolicyId"]
    )
    listed = api.ok("ListSecurityPolicies")["SecurityPolicies"]
    assert listed[-1]["SecurityPolicyName"] == "modern" and listed[-1]["System"] is False


def test_dry_run_and_token_on_listeners(api: Api, base: dict[str, str]) -> None:
    """A DryRun CreateListener creates nothing; a repeated token creates one listener."""
    port = free_port()
    params = {
        "LoadBalancerId": base["LoadBalancerId"],
        "ServerGroupId": base["ServerGroupId"],
        "ListenerPort": port,
        "CertificateIds": [base["CertificateId"]],
    }
    assert api.ok("CreateListener", DryRun=True, **params)["DryRun"] is True
    assert api.ok("ListListeners")["Listeners"] == []
    first = api.ok("CreateListener", ClientToken="abc", **params)
    assert (
        api.ok("CreateListener", ClientToken="abc", **params)["ListenerId"] == first["ListenerId"]
    )
    assert len(api.ok("ListListeners")["Listeners"]) == 1
