"""Several nodes on one PostgreSQL store: one leader, and proxy nodes that follow changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwatch.app.service import Service
from certwatch.changes.follow import follow
from offload.echo import EchoServer
from offload.workers import ProxyControl
from tests.certfactory import make_pki
from tests.conftest import make_config
from tests.integration.servers import echo_when_served
from tests.support import free_port


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[tuple[Service, Service]]:
    """Two control planes on the same store and secrets key."""
    config = make_config(tmp_path, pg_url)
    first, second = Service(config), Service(config)
    yield first, second
    first.close()
    second.close()


def test_exactly_one_leader(nodes: tuple[Service, Service]) -> None:
    """One node holds the lock; when it goes, the other takes over."""
    first, second = nodes
    assert first.is_leader() is True
    assert second.is_leader() is False
    assert first.is_leader() is True
    first.leadership.close()
    assert second.is_leader() is True
    assert first.is_leader() is False


def test_proxy_node_follows_changes(tmp_path: Path, pg_url: str) -> None:
    """A listener created on one node is served by another node's proxy within a second."""
    config = make_config(tmp_path, pg_url, proxy={"reload_interval": 30})
    api_node = Service(config)
    stop = threading.Event()
    with ProxyControl(1) as proxy, EchoServer() as echo:
        proxy_node = Service(config, data_plane=proxy)
        thread = threading.Thread(
            target=follow,
            args=(proxy_node.node.changes, proxy_node.engine, 30.0, stop),
            daemon=True,
        )
        thread.start()
        try:
            pki = make_pki()
            leaf = pki.leaf("node.example.com")
            cert = api_node.call(
                "UploadCertificate",
                {
                    "CertificateName": "n",
                    "CertificateType": "Server",
                    "Certificate": leaf.chain_pem,
                    "PrivateKey": leaf.key_pem,
                },
            )["CertificateId"]
            lb = api_node.call("CreateLoadBalancer", {"LoadBalancerName": "lb"})["LoadBalancerId"]
            sg = api_node.call(
                "CreateServerGroup",
                {
                    "ServerGroupName": "g",
                    "Servers": [{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 1}],
                },
            )["ServerGroupId"]
            port = free_port()
            time.sleep(0.3)
            api_node.call(
                "CreateListener",
                {
                    "LoadBalancerId": lb,
                    "ServerGroupId": sg,
                    "ListenerPort": port,
                    "CertificateIds": [cert],
                },
            )
            created = time.monotonic()
            served = echo_when_served(port, pki.root_pem, "node.example.com", b"hi", 5)
            assert served == b"hi"
            assert time.monotonic() - created < 1.5, "NOTIFY should beat the 30 s reload interval"
        finally:
            stop.set()
            thread.join(35)
            proxy_node.close()
            api_node.close()
