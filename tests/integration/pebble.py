"""A real Pebble (the ACME test server) with pebble-challtestsrv as its DNS, and helpers to
drive a `certwatch serve` that orders from it; shared by the ACME test modules."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.conftest import require
from tests.integration.servers import ServeProcess
from tests.support import eventually, free_port

HOOK = """#!{python}
import json, sys, urllib.request
verb, name, value = sys.argv[1:4]
path, body = ("/set-txt", {{"host": name + ".", "value": value}}) if verb == "set" else (
    "/clear-txt", {{"host": name + "."}})
request = urllib.request.Request("{url}" + path, data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(request, timeout=10).read()
"""


@dataclass
class Pebble:
    """A running Pebble with challtestsrv as its DNS; the ports certwatch must answer on
    (Pebble's VA checks http-01 on `http_port` and tls-alpn-01 on `tls_port`)."""

    directory_url: str
    ca_bundle: Path
    root_pem: str
    http_port: int
    tls_port: int
    challtestsrv_url: str


def _start(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


class PebbleRun:
    """Pebble and pebble-challtestsrv on free loopback ports (kept across a restart), Pebble's
    HTTPS from a test CA. Pebble keeps its accounts and its root in memory only: a restart
    forgets every account and issues under a new root."""

    def __init__(self, tmp: Path) -> None:
        require(shutil.which("pebble") is not None, "pebble is not installed")
        require(shutil.which("pebble-challtestsrv") is not None, "pebble-challtestsrv is missing")
        self.tmp = tmp
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        server.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
        server.private_key_pem.write_to_path(str(tmp / "key.pem"))
        ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
        self.acme_port, self.mgmt_port, self.dns_port, self.chall_port = (
            free_port() for _ in range(4)
        )
        self.http_port, self.tls_port = free_port(), free_port()
        (tmp / "pebble.json").write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.acme_port}",
                        "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
                        "certificate": str(tmp / "cert.pem"),
                        "privateKey": str(tmp / "key.pem"),
                        "httpPort": self.http_port,
                        "tlsPort": self.tls_port,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> Pebble:
        """Start both servers; the running Pebble once its directory answers."""
        tmp = self.tmp
        chall = _start(
            [
                "pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
                "-tlsalpn01", "", "-management", f"127.0.0.1:{self.chall_port}",
            ],
            tmp / "challtestsrv.log",
        )
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        ca_server = _start(
            [
                "pebble", "-config", str(tmp / "pebble.json"),
                "-dnsserver", f"127.0.0.1:{self.dns_port}",
            ],
            tmp / "pebble.log",
            env,
        )
        self._processes = [ca_server, chall]
        verify = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
        directory = f"https://127.0.0.1:{self.acme_port}/dir"

        def answers() -> bool:
            try:
                return httpx.get(directory, verify=verify, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert eventually(answers, 20), (tmp / "pebble.log").read_text()
        root = httpx.get(f"https://127.0.0.1:{self.mgmt_port}/roots/0", verify=verify, timeout=5)
        return Pebble(
            directory, tmp / "ca.pem", root.text, self.http_port, self.tls_port,
            f"http://127.0.0.1:{self.chall_port}",
        )

    def stop(self) -> None:
        """Stop both servers."""
        for process in self._processes:
            process.terminate()
            process.wait(10)
        self._processes = []


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """A running Pebble for the tests of one module."""
    run = PebbleRun(tmp_path_factory.mktemp("pebble"))
    try:
        yield run.start()
    finally:
        run.stop()


def serve_acme(tmp_path: Path, pebble: Pebble, challenge: str, **acme: str) -> ServeProcess:
    """A `certwatch serve` whose [acme] orders from `pebble` with `challenge` (and `acme` keys)."""
    (tmp_path / "pebble-root.pem").write_text(pebble.root_pem)
    extra = "".join(f'{key} = "{value}"\n' for key, value in acme.items())
    toml = (
        f'[scan]\ntrusted_ca_file = "{tmp_path / "pebble-root.pem"}"\n'
        f'[acme]\ndirectory_url = "{pebble.directory_url}"\nemail = "ops@example.com"\n'
        f'ca_bundle = "{pebble.ca_bundle}"\nchallenge = "{challenge}"\n'
        f'http_listen = "127.0.0.1:{pebble.http_port}"\n{extra}'
    )
    return ServeProcess(tmp_path, toml).start()


def call(serve: ServeProcess, action: str, **params: Any) -> httpx.Response:
    """POST one action to a serve's API."""
    return httpx.post(f"{serve.url}/v1/{action}", json=params, timeout=30)


def issued(serve: ServeProcess, request_id: str, limit: float = 60) -> dict[str, Any]:
    """The request once it is no longer Pending (its last view after `limit` seconds)."""
    deadline = time.monotonic() + limit
    while True:
        view = call(serve, "GetCertificateRequest", CertificateRequestId=request_id).json()
        request: dict[str, Any] = view["CertificateRequest"]
        if request["Status"] != "Pending" or time.monotonic() > deadline:
            return request
        time.sleep(0.2)


def served_leaf(port: int, root_pem: str, name: str) -> dict[str, Any]:
    """The peer certificate (dict) a verifying client got from 127.0.0.1:port for `name`."""
    ctx = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            return dict(tls.getpeercert() or {})
