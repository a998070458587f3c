"""Real revocation sources on 127.0.0.1 for the tests: a CRL web server and OpenSSL's OCSP
responder (`openssl ocsp -index …`), each bounded in time and stopped at exit."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.certfactory import Issued

STARTUP_SECONDS = 10.0


class CrlServer:
    """Serves CRLs (DER) by path over HTTP on 127.0.0.1 (ephemeral port); counts requests."""

    def __init__(self) -> None:
        self.crls: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.crls.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        """The HTTP URL of the CRL at `path` (e.g. `/ca.crl`)."""
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> CrlServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _openssl_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")


def index_line(
    cert: x509.Certificate, revoked_at: dt.datetime | None = None, reason: str | None = None
) -> str:
    """A line of OpenSSL's CA database (`index.txt`) for `cert`: valid, or revoked."""
    serial = format(cert.serial_number, "X")
    serial = serial if len(serial) % 2 == 0 else "0" + serial
    subject = "/" + "/".join(cert.subject.rfc4514_string().split(","))
    expiry = _openssl_time(cert.not_valid_after_utc)
    if revoked_at is None:
        return f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n"
    when = _openssl_time(revoked_at) + (f",{reason}" if reason else "")
    return f"R\t{expiry}\t{when}\t{serial}\tunknown\t{subject}\n"


class OcspResponder:
    """`openssl ocsp` answering for `issuer` from an index file, signed by the issuer itself.

    It listens on an ephemeral port (`-port 0` the first time, the same port after a
    `restart`), is reached at 127.0.0.1, and is killed at exit. OpenSSL 3.0's responder reads
    its index once, so `write_index` restarts it."""

    def __init__(self, issuer: Issued, folder: Path, max_requests: int = 50) -> None:
        self.folder = folder
        self.index = folder / "index.txt"
        self.index.write_text("")
        (folder / "index.txt.attr").write_text("unique_subject = no\n")
        (folder / "ca.pem").write_text(issuer.cert_pem)
        (folder / "ca.key").write_text(issuer.key_pem)
        self._max_requests = max_requests
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The responder's URL."""
        return f"http://127.0.0.1:{self.port}/"

    def write_index(self, *lines: str) -> None:
        """Replace the index, and restart a running responder so that it reads it."""
        staged = self.folder / "index.txt.new"
        staged.write_text("".join(lines))
        staged.replace(self.index)
        if self._process is not None:
            self._stop()
            self._start()

    def __enter__(self) -> OcspResponder:
        self._start()
        return self

    def _start(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("openssl is not installed")
        self._process = subprocess.Popen(
            [
                openssl, "ocsp", "-index", str(self.index), "-CA", "ca.pem",
                "-rsigner", "ca.pem", "-rkey", "ca.key", "-port", str(self.port),
                "-nrequest", str(self._max_requests), "-nmin", "10",
            ],
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            found = re.search(r"ACCEPT .*:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                return
            if not line and self._process.poll() is not None:
                break
        self._stop()
        raise RuntimeError("openssl ocsp did not start")

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None
