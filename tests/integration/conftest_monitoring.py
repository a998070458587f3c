"""Helpers for the monitoring tests: a service on a fresh store, real receivers on loopback.

Real servers only: an aiosmtpd SMTP sink, an `http.server` webhook receiver, TLS servers.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from certwatch.app.service import DataPlane, Service
from certwatch.config import Config
from tests.certfactory import Issued
from tests.support import free_port


def make_service(data_dir: Path, data_plane: DataPlane | None = None, **sections: Any) -> Service:
    """A Service on a fresh SQLite store in `data_dir`; `sections` are config sections."""
    config = Config.model_validate({"data_dir": str(data_dir), **sections})
    return Service(config, data_plane=data_plane)


def upload(service: Service, issued: Issued, cert_type: str = "Server", chain: bool = True) -> str:
    """Upload a certificate (with its chain, and its key when Server); its id."""
    params = issued.upload_params(f"test {cert_type}", cert_type, chain)
    return str(service.call("UploadCertificate", params)["CertificateId"])


def add_listener(
    service: Service, certificate_id: str, port: int, backend_port: int = 9, **fields: Any
) -> str:
    """A TCPSSL listener on 127.0.0.1:`port` with its own load balancer and server group."""
    lb = service.call("CreateLoadBalancer", {"LoadBalancerName": f"lb{port}"})
    group = service.call(
        "CreateServerGroup",
        {
            "ServerGroupName": f"sg{port}",
            "Servers": [{"ServerIp": "127.0.0.1", "Port": backend_port, "Weight": 1}],
        },
    )
    params = {
        "LoadBalancerId": lb["LoadBalancerId"],
        "ListenerProtocol": "TCPSSL",
        "ListenerPort": port,
        "ServerGroupId": group["ServerGroupId"],
        "CertificateIds": [certificate_id],
        **fields,
    }
    return str(service.call("CreateListener", params)["ListenerId"])


class HttpReceiver:
    """A webhook receiver answering with queued statuses (then `otherwise`, which a test may
    change), recording JSON bodies."""

    def __init__(self, statuses: tuple[int, ...] = (), otherwise: int = 200) -> None:
        self.statuses: deque[int] = deque(statuses)
        self.otherwise = otherwise
        self.received: list[tuple[int, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
                status = receiver.statuses.popleft() if receiver.statuses else receiver.otherwise
                receiver.received.append((status, payload))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "hook") -> str:
        """The apprise URL for this receiver."""
        return f"json://127.0.0.1:{self.port}/{path}"

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Bodies answered with a 2xx status."""
        return [payload for status, payload in self.received if status < 300]

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _Collect:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_sink() -> Iterator[tuple[str, list[Message]]]:
    """A plain SMTP server (no TLS, no auth) on loopback: its apprise URL and messages."""
    handler = _Collect()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = (
            f"mailto://localhost?smtp=127.0.0.1&port={port}&mode=insecure"
            "&from=certwatch@example.com&to=ops@example.com"
        )
        yield url, handler.messages
    finally:
        controller.stop()


@contextmanager
def tls_server(issued: Issued, tmp_dir: Path, port: int = 0) -> Iterator[int]:
    """A bare TLS server on loopback serving `issued` (leaf + chain); yields its port."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = tmp_dir / "srv.pem", tmp_dir / "srv.key"
    cert_file.write_text(issued.chain_pem)
    key_file.write_text(issued.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except OSError:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()
