"""An HTTPS front for a Pebble that lacks RFC 9773: it relays every ACME request to Pebble, adds
`renewalInfo` to the directory, answers the renewal-information GETs itself (a window and
Retry-After the test sets), keeps the payload of every newOrder it relayed, and can refuse a
newOrder that names what it `replaces` as `alreadyReplaced`."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from certwatch.clock import rfc3339

ARI_PATH = "/renewal-info/"
ALREADY_REPLACED = "urn:ietf:params:acme:error:alreadyReplaced"
HOP_HEADERS = {"connection", "content-length", "transfer-encoding", "keep-alive"}


class AriFront:
    """HTTPS on a free loopback port (its certificate from `cert`/`key`), relaying to `pebble`
    (whose HTTPS `ca` verifies). Pebble names its URLs after the Host header, which is kept, so
    every URL it hands out points back here."""

    def __init__(self, pebble: str, ca: Path, cert: Path, key: Path) -> None:
        self.window: tuple[dt.datetime, dt.datetime] | None = None
        self.retry_after = "3600"
        self.asked: list[str] = []
        self.orders: list[dict[str, Any]] = []
        self.refuse_replaces = False
        upstream = httpx.Client(base_url=pebble, verify=ssl.create_default_context(cafile=ca))
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length) if length else b""
                if self.command == "POST" and self.path.endswith("order-plz"):
                    front.orders.append(json.loads(_b64(json.loads(body)["payload"])))
                    if front.refuse_replaces and "replaces" in front.orders[-1]:
                        problem = {"type": ALREADY_REPLACED, "detail": "replaced already"}
                        self._reply(
                            409,
                            [("Content-Type", "application/problem+json")],
                            json.dumps(problem).encode(),
                        )
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                answer = upstream.request(self.command, self.path, headers=headers, content=body)
                content = answer.content
                if self.path == "/dir":
                    directory = answer.json()
                    directory["renewalInfo"] = f"https://{self.headers['Host']}{ARI_PATH[:-1]}"
                    content = json.dumps(directory).encode()
                self._reply(answer.status_code, list(answer.headers.multi_items()), content)

            def do_GET(self) -> None:
                if not self.path.startswith(ARI_PATH):
                    self._relay()
                    return
                front.asked.append(self.path.removeprefix(ARI_PATH))
                if front.window is None:
                    self._reply(404, [("Content-Type", "application/problem+json")], b"{}")
                    return
                start, end = front.window
                window = {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}
                self._reply(
                    200,
                    [("Content-Type", "application/json"), ("Retry-After", front.retry_after)],
                    json.dumps(window).encode(),
                )

            do_HEAD = _relay
            do_POST = _relay

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self.directory_url = f"https://127.0.0.1:{self.port}/dir"
        self._upstream = upstream
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AriFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()
        self._thread.join(timeout=10)


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
