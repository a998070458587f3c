"""A real service with a real proxy for the rotation tests, and a real TLS client."""

from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certwatch.app.service import Service
from certwatch.config import Config, RotationConfig
from offload.echo import EchoServer
from offload.workers import ProxyControl
from tests.certfactory import Issued, Pki, make_pki
from tests.integration.offload.conftest import echo_roundtrip
from tests.support import free_port

NAMES = ("a.example.com", "b.example.com")


def served_fingerprint(port: int, server_name: str, root_pem: str, payload: bytes = b"") -> str:
    """Handshake as a client trusting only `root_pem` (name checked), echo `payload`, and
    return the SHA-256 fingerprint of the served leaf."""
    ctx = ssl.create_default_context(cadata=root_pem)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        if payload and (received := echo_roundtrip(tls, payload)) != payload:
            raise AssertionError(f"echo returned {received!r}, not {payload!r}")
    assert der is not None
    return hashlib.sha256(der).hexdigest()


@dataclass
class Env:
    """A service on `tmp_path` serving one listener whose default is `old`."""

    service: Service
    proxy: ProxyControl
    echo: EchoServer
    pki: Pki
    old: Issued
    old_id: str
    listener_id: str
    port: int

    def call(self, action: str, **params: Any) -> dict[str, Any]:
        """Run an API action as the API would."""
        return self.service.call(action, params)

    def stage(self, issued: Issued, **params: Any) -> dict[str, Any]:
        """StageCertificate for `issued` (chain and key)."""
        return self.call(
            "StageCertificate", Certificate=issued.chain_pem, PrivateKey=issued.key_pem, **params
        )

    def served(self, server_name: str = NAMES[0]) -> str:
        """The fingerprint of the leaf the listener serves for `server_name`."""
        return served_fingerprint(self.port, server_name, self.pki.root_pem, b"ping")

    def default_id(self) -> str:
        """The listener's default certificate id, as the API reports it."""
        answer = self.call("GetListenerAttribute", ListenerId=self.listener_id)
        ids: list[str] = answer["CertificateIds"]
        return ids[0]

    def events(self) -> list[dict[str, Any]]:
        """The listener's history, newest first."""
        answer = self.call("ListRotationEvents", ListenerId=self.listener_id)
        events: list[dict[str, Any]] = answer["RotationEvents"]
        return events

    def close(self) -> None:
        """Stop the proxy, the backend and the store."""
        self.service.close()
        self.proxy.stop(5)
        self.echo.stop()


def make_env(
    tmp_path: Path, old_days: float = 10, pki: Pki | None = None, **rotation: Any
) -> Env:
    """Start a proxy, an echo backend and a service; upload the root CA of `pki` (default: a
    fresh one); create a listener."""
    pki = pki or make_pki("rotation")
    echo = EchoServer()
    echo_port = echo.start()
    proxy = ProxyControl(1)
    proxy.start()
    config = Config(data_dir=str(tmp_path / "data"), rotation=RotationConfig(**rotation))
    service = Service(config, data_plane=proxy)
    call = service.call
    call(
        "UploadCertificate",
        {"CertificateName": "root", "CertificateType": "Ca", "Certificate": pki.root_pem},
    )
    old = pki.leaf(*NAMES, days=old_days)
    old_id = call(
        "UploadCertificate",
        {
            "CertificateName": "old",
            "CertificateType": "Server",
            "Certificate": old.chain_pem,
            "PrivateKey": old.key_pem,
        },
    )["CertificateId"]
    lb = call("CreateLoadBalancer", {"LoadBalancerName": "lb"})["LoadBalancerId"]
    group = call(
        "CreateServerGroup",
        {
            "ServerGroupName": "echo",
            "Servers": [{"ServerIp": "127.0.0.1", "Port": echo_port, "Weight": 100}],
        },
    )["ServerGroupId"]
    port = free_port()
    listener_id = call(
        "CreateListener",
        {
            "LoadBalancerId": lb,
            "ListenerProtocol": "TCPSSL",
            "ListenerPort": port,
            "ServerGroupId": group,
            "CertificateIds": [old_id],
        },
    )["ListenerId"]
    return Env(service, proxy, echo, pki, old, old_id, listener_id, port)
