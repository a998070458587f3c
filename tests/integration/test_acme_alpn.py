"""tls-alpn-01 against a real Pebble, answered by `certwatch serve`'s own proxy on the
listener's port (Pebble's `tlsPort`), while real TLS clients use the same listener; and a
challenge a killed order left behind, removed by the next start."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from sqlalchemy import create_engine, text

from certwatch.acme.alpn import STALE_AFTER, StoreChallenges
from certwatch.acme.challenges import ACME_IDENTIFIER, tls_alpn_cert
from certwatch.app.service import Service
from certwatch.inventory.change import Change
from certwatch.pki.devpki import make_pki
from certwatch.store.models import AcmeChallenge
from offload.echo import EchoServer
from tests.conftest import make_config
from tests.integration.pebble import Pebble
from tests.integration.postgres import Postgres
from tests.integration.servers import ServeProcess
from tests.support import eventually, free_port

NAME = "a.test"
LOOP_HANDSHAKES = 2000
LOOP_SECONDS = 60.0
LOOP_PAUSE = 0.02


@dataclass
class ClientLoop:
    """Verified TLS handshakes for NAME plus a byte echo, one after another on a thread, until
    stopped or LOOP_HANDSHAKES / LOOP_SECONDS are reached."""

    port: int
    cadata: str
    done: int = 0
    failures: list[str] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> ClientLoop:
        """Start the loop."""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> bool:
        """Stop the loop; True when it was still running (no bound reached)."""
        assert self.thread is not None
        running = self.thread.is_alive()
        self.stopped.set()
        self.thread.join(10)
        return running

    def _run(self) -> None:
        ctx = ssl.create_default_context(cadata=self.cadata)
        deadline = time.monotonic() + LOOP_SECONDS
        while (
            not self.stopped.is_set()
            and self.done < LOOP_HANDSHAKES
            and time.monotonic() < deadline
        ):
            payload = f"ping {self.done}".encode()
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
                    ctx.wrap_socket(raw, server_hostname=NAME) as tls,
                ):
                    tls.sendall(payload)
                    echoed = tls.recv(len(payload))
                if echoed != payload:
                    self.failures.append(f"echo {echoed!r} for {payload!r}")
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.done += 1
            time.sleep(LOOP_PAUSE)


def _call(serve: ServeProcess, action: str, **params: Any) -> dict[str, Any]:
    answer = httpx.post(f"{serve.url}/v1/{action}", json=params, timeout=30)
    assert answer.status_code == 200, (action, answer.text)
    body: dict[str, Any] = answer.json()
    return body


def _settled(serve: ServeProcess, request_id: str, limit: float = 90) -> dict[str, Any]:
    """The request once it is no longer Pending (its last view after `limit` seconds)."""
    deadline = time.monotonic() + limit
    while True:
        request: dict[str, Any] = _call(
            serve, "GetCertificateRequest", CertificateRequestId=request_id
        )["CertificateRequest"]
        if request["Status"] != "Pending" or time.monotonic() > deadline:
            return request
        time.sleep(0.2)


def _challenge_rows(store_url: str) -> int:
    engine = create_engine(store_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT count(*) FROM acme_challenges"))
            return int(rows.scalar_one())
    finally:
        engine.dispose()


def _acme_tls_handshake(port: int) -> tuple[str | None, x509.Certificate]:
    """The ALPN protocol selected and the certificate served to a handshake for NAME that
    offers only `acme-tls/1`, as Pebble's validator makes it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["acme-tls/1"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return tls.selected_alpn_protocol(), x509.load_der_x509_certificate(der)


def _acme_toml(pebble: Pebble, root_file: Path) -> str:
    root_file.write_text(pebble.root_pem)
    return (
        f'[scan]\ntrusted_ca_file = "{root_file}"\n'
        f'[acme]\ndirectory_url = "{pebble.directory_url}"\nemail = "ops@example.com"\n'
        f'ca_bundle = "{pebble.ca_bundle}"\nchallenge = "tls-alpn-01"\n'
    )


def _issue_on_the_listener(
    control: ServeProcess, pebble: Pebble, store_url: str, echo: EchoServer
) -> None:
    """Through `control`, a listener on Pebble's tlsPort (backend: `echo`) and a tls-alpn-01
    request for NAME on it, with a client loop on the listener all along; check everything
    the order leaves."""
    demo = make_pki("alpn-test")
    first = demo.leaf(NAME, days=30)
    cert_id = _call(
        control, "UploadCertificate", CertificateName="first", CertificateType="Server",
        Certificate=first.chain_pem, PrivateKey=first.key_pem,
    )["CertificateId"]
    lb = _call(control, "CreateLoadBalancer", LoadBalancerName="lb")
    group = _call(
        control, "CreateServerGroup", ServerGroupName="echo",
        Servers=[{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 100}],
    )
    listener = _call(
        control, "CreateListener", LoadBalancerId=lb["LoadBalancerId"],
        ServerGroupId=group["ServerGroupId"], ListenerPort=pebble.tls_port,
        CertificateIds=[cert_id],
    )["ListenerId"]
    served = ssl.create_default_context(cadata=demo.root_pem)
    assert eventually(lambda: _handshakes(pebble.tls_port, served), 15)
    loop = ClientLoop(pebble.tls_port, demo.root_pem + pebble.root_pem).start()
    answer = _call(control, "RequestCertificate", DomainNames=[NAME], ListenerId=listener)
    request = _settled(control, answer["CertificateRequestId"])
    still_running = loop.stop()
    assert request["Status"] == "Issued", (request, control.output())
    assert still_running, f"the client loop ended early after {loop.done} handshakes"
    assert loop.done > 0 and loop.failures == [], (loop.done, loop.failures[:5])

    verify = ssl.create_default_context(cadata=pebble.root_pem)
    assert eventually(lambda: _handshakes(pebble.tls_port, verify), 15)
    assert _challenge_rows(store_url) == 0
    protocol, leaf = _acme_tls_handshake(pebble.tls_port)
    assert protocol != "acme-tls/1"
    assert ACME_IDENTIFIER not in [ext.oid for ext in leaf.extensions]


def _handshakes(port: int, ctx: ssl.SSLContext) -> bool:
    """Whether a handshake for NAME verifies with `ctx` (the served leaf names NAME)."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=NAME) as tls,
        ):
            leaf = tls.getpeercert()
    except OSError:
        return False
    return leaf is not None and ("DNS", NAME) in leaf["subjectAltName"]


def test_tls_alpn_01_is_answered_by_the_listener_while_clients_are_served(
    tmp_path: Path, pebble: Pebble
) -> None:
    """A tls-alpn-01 request for a.test on a listener at Pebble's tlsPort ends Issued, the
    listener then serves a leaf that verifies against Pebble's root, clients looping on the
    listener through the whole order never fail, and no challenge is left afterwards."""
    toml = _acme_toml(pebble, tmp_path / "pebble-root.pem")
    store_url = f"sqlite:///{tmp_path / 'data' / 'certwatch.db'}"
    with EchoServer() as echo:
        serve = ServeProcess(tmp_path, toml, workers=2).start()
        try:
            _issue_on_the_listener(serve, pebble, store_url, echo)
        finally:
            serve.stop()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_tls_alpn_01_is_answered_by_a_proxy_node_of_the_same_store(
    tmp_path: Path, pebble: Pebble, store: str
) -> None:
    """The ordering node runs no proxy (`proxy.workers = 0`); a `certwatch proxy` node of the
    same store serves the listener, so Pebble's validation reaches the challenge only through
    the store, and the order still ends Issued with every client served."""
    postgres = Postgres() if store == "postgresql" else None
    try:
        shared = ""
        store_url = f"sqlite:///{tmp_path / 'data' / 'certwatch.db'}"
        if postgres is not None:
            postgres.start()
            store_url = postgres.url
            shared = f'[store]\nurl = "{store_url}"\n'
        toml = "reload_interval = 0.5\n" + shared + _acme_toml(pebble, tmp_path / "root.pem")
        (tmp_path / "edge").mkdir()
        with EchoServer() as echo:
            control = ServeProcess(tmp_path, toml, workers=0, data_dir=tmp_path / "data")
            edge = ServeProcess(tmp_path / "edge", toml, workers=1, data_dir=tmp_path / "data")
            control.start()
            edge.start(wait=False, command="proxy")
            try:
                _issue_on_the_listener(control, pebble, store_url, echo)
            finally:
                edge.stop()
                control.stop()
    finally:
        if postgres is not None:
            postgres.remove()


def test_a_challenge_a_killed_order_left_is_removed_and_no_longer_answered(
    tmp_path: Path,
) -> None:
    """A challenge row older than STALE_AFTER (as a killed order leaves it) is removed by the
    first scan of `certwatch serve`, and the listener then no longer answers it."""
    port = free_port()
    service = Service(make_config(tmp_path / "data", proxy={"reload_interval": 0.01}))
    try:
        leaf = make_pki("stale-test").leaf(NAME, days=30)
        cert_id = service.call("UploadCertificate", leaf.upload_params("site"))["CertificateId"]
        lb = service.call("CreateLoadBalancer", {"LoadBalancerName": "lb"})["LoadBalancerId"]
        group = service.call(
            "CreateServerGroup",
            {"ServerGroupName": "g", "Servers": [{"ServerIp": "127.0.0.1", "Port": 9}]},
        )["ServerGroupId"]
        service.call(
            "CreateListener",
            {"LoadBalancerId": lb, "ServerGroupId": group, "ListenerPort": port,
             "CertificateIds": [cert_id]},
        )
        StoreChallenges(service.node).put(NAME, *tls_alpn_cert(NAME, b"\0" * 32))

        def age(change: Change) -> None:
            row = change.session.get(AcmeChallenge, NAME)
            assert row is not None
            row.created_at = change.now - STALE_AFTER - dt.timedelta(minutes=1)
            change.session.add(row)

        service.node.changes.run(age, actor="test")
    finally:
        service.close()
    store_url = f"sqlite:///{tmp_path / 'data' / 'certwatch.db'}"
    assert _challenge_rows(store_url) == 1
    serve = ServeProcess(tmp_path).start()
    try:
        assert eventually(lambda: _challenge_rows(store_url) == 0, 30), serve.output()

        def not_answered() -> bool:
            protocol, served = _acme_tls_handshake(port)
            return protocol != "acme-tls/1" and ACME_IDENTIFIER not in [
                ext.oid for ext in served.extensions
            ]

        assert eventually(not_answered, 10), serve.output()
        assert "removed 1 stale tls-alpn-01 challenge(s): a.test" in serve.output()
    finally:
        serve.stop()
