"""Live changes through the API on a two-worker proxy: no new connection fails, ever."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from certwatch.api.http import create_app
from certwatch.app.service import Service
from offload.echo import EchoServer
from offload.workers import ProxyControl
from tests.certfactory import make_pki
from tests.conftest import Api, make_config
from tests.integration.offload.conftest import (
    client_context,
    echo_roundtrip,
    leaf_fingerprint,
    tls_connect,
)
from tests.support import free_port

NAME = "swap.example.com"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The API of a service whose data plane is a real two-worker proxy."""
    with ProxyControl(2) as proxy:
        service = Service(make_config(tmp_path), data_plane=proxy)
        with TestClient(create_app(service)) as client:
            yield Api(client)
        service.close()


def test_twenty_default_swaps_and_a_policy_change_under_load(api: Api) -> None:
    """Four clients handshake in a loop while the default is replaced 20 times and the policy
    once: zero failures, the first handshake after each call sees the change, and a connection
    opened before the first swap still echoes after the last."""
    pki = make_pki()
    leaves = [pki.leaf(NAME, days=30 + i) for i in range(21)]
    ids = [
        api.ok("UploadCertificate", **leaf.upload_params(f"c{i}"))["CertificateId"]
        for i, leaf in enumerate(leaves)
    ]
    with EchoServer() as echo:
        lb = api.ok("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
        sg = api.ok(
            "CreateServerGroup",
            ServerGroupName="g",
            Servers=[{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 100}],
        )["ServerGroupId"]
        port = free_port()
        lid = api.ok(
            "CreateListener",
            LoadBalancerId=lb,
            ServerGroupId=sg,
            ListenerPort=port,
            CertificateIds=[ids[0]],
        )["ListenerId"]
        stop = threading.Event()
        failures: list[str] = []
        done = [0] * 4

        def hammer(slot: int) -> None:
            ctx = client_context(pki.root_pem)
            while not stop.is_set():
                try:
                    with tls_connect(port, ctx, NAME) as sock:
                        if echo_roundtrip(sock) != b"ping":
                            failures.append("no echo")
                    done[slot] += 1
                except (OSError, ssl.SSLError) as exc:
                    failures.append(repr(exc))

        early = tls_connect(port, client_context(pki.root_pem), NAME)
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            for leaf, cert_id in zip(leaves[1:], ids[1:], strict=True):
                api.ok("UpdateListenerAttribute", ListenerId=lid, CertificateIds=[cert_id])
                for _ in range(2):  # both workers: each handshake may land on either
                    with tls_connect(port, client_context(pki.root_pem), NAME) as sock:
                        assert leaf_fingerprint(sock) == leaf.fingerprint
            api.ok(
                "UpdateListenerAttribute",
                ListenerId=lid,
                SecurityPolicyId="tls_cipher_policy_1_2_strict_with_1_3",
            )
            with tls_connect(port, client_context(pki.root_pem), NAME) as sock:
                assert sock.version() == "TLSv1.3"
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        with early:
            assert leaf_fingerprint(early) == leaves[0].fingerprint
            assert echo_roundtrip(early, b"still here") == b"still here"
    assert failures == []
    assert all(n > 0 for n in done)
    history = api.ok("ListRotationEvents", ListenerId=lid)["RotationEvents"]
    assert [e["NewCertificateId"] for e in history[:20]] == list(reversed(ids[1:]))
