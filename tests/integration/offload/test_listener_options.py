"""Listener options served for real: ALPN policies, ACME tls-alpn-01 challenges, the PROXY v2
header, connection limits, and the client CA names of mutual TLS."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import math
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from offload.spec import Backend, ChallengeCert, Snapshot
from offload.workers import ProxyControl
from tests.certfactory import Pki, make_pki
from tests.conftest import require
from tests.integration.offload.conftest import (
    chain,
    client_context,
    echo_roundtrip,
    leaf_fingerprint,
    listener,
    snapshot,
    tls_connect,
)
from tests.support import eventually

ACME_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def _alpn_connect(
    port: int, offers: list[str] | None, server_name: str | None = None
) -> ssl.SSLSocket:
    ctx = client_context()
    if offers:
        ctx.set_alpn_protocols(offers)
    return tls_connect(port, ctx, server_name)


@pytest.mark.parametrize(
    ("policy", "offers", "selected"),
    [
        (None, ["h2", "http/1.1"], None),
        ("HTTP1Only", ["h2", "http/1.1"], "http/1.1"),
        ("HTTP1Only", ["h2"], None),
        ("HTTP2Only", ["http/1.1", "h2"], "h2"),
        ("HTTP2Only", ["http/1.1"], None),
        ("HTTP2Optional", ["h2", "http/1.1"], "http/1.1"),
        ("HTTP2Optional", ["h2"], "h2"),
        ("HTTP2Preferred", ["http/1.1", "h2"], "h2"),
        ("HTTP2Preferred", ["http/1.0"], "http/1.0"),
    ],
)
def test_alpn_policy_selects_in_the_listener_order_and_never_refuses(
    control: ProxyControl,
    pki: Pki,
    backends: tuple[Backend, ...],
    policy: str | None,
    offers: list[str],
    selected: str | None,
) -> None:
    """The policy's most preferred protocol the client offers is selected; with none in
    common (or ALPN off) nothing is, and the connection still carries bytes."""
    spec = listener(pki.leaf("alpn.example.com"), backends, alpn_policy=policy)
    control.apply(snapshot(spec))
    with _alpn_connect(spec.port, offers) as sock:
        assert sock.selected_alpn_protocol() == selected
        assert echo_roundtrip(sock) == b"ping"


def test_alpn_applies_after_sni_selects_an_additional_certificate(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """A client whose SNI picks an additional certificate gets the listener's ALPN choice."""
    extra = pki.leaf("extra-alpn.example.com")
    spec = listener(
        pki.leaf("base-alpn.example.com"), backends, additional_certs=(chain(extra),),
        alpn_policy="HTTP2Preferred",
    )
    control.apply(snapshot(spec))
    with _alpn_connect(spec.port, ["http/1.1", "h2"], "extra-alpn.example.com") as sock:
        assert leaf_fingerprint(sock) == extra.fingerprint
        assert sock.selected_alpn_protocol() == "h2"


def _challenge(name: str) -> tuple[ChallengeCert, str]:
    """An RFC 8737 challenge certificate for `name` and its SHA-256 fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"acme challenge {name}")])
    now = dt.datetime.now(dt.UTC)
    digest = hashlib.sha256(b"token.thumbprint").digest()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(ACME_OID, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ChallengeCert(name, pem, key_pem), fingerprint


def _s_client(port: int, *args: str) -> str:
    """What `openssl s_client` prints connecting to the proxy with `args` (stdin empty)."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=b"", capture_output=True, timeout=10, check=False,
    )
    return done.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def _openssl() -> None:
    require(shutil.which("openssl") is not None, "the openssl command is not installed")


@pytest.mark.usefixtures("_openssl")
def test_acme_tls_alpn_01_challenge_is_answered_with_openssl_s_client(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """`openssl s_client -alpn acme-tls/1` for a pending name gets the challenge certificate
    with acme-tls/1; the same name without that offer, or another name, is served as usual."""
    challenge, _ = _challenge("pending.example.com")
    spec = listener(pki.leaf("pending.example.com"), backends, alpn_policy="HTTP2Preferred")
    control.apply(Snapshot(snapshot().revision, (spec,), challenges=(challenge,)))
    answer = _s_client(
        spec.port, "-servername", "pending.example.com", "-alpn", "acme-tls/1"
    )
    assert "ALPN protocol: acme-tls/1" in answer
    assert "subject=CN = acme challenge pending.example.com" in answer
    usual = _s_client(spec.port, "-servername", "pending.example.com", "-alpn", "h2")
    assert "ALPN protocol: h2" in usual
    assert "acme challenge" not in usual
    other = _s_client(spec.port, "-servername", "other.example.com", "-alpn", "acme-tls/1")
    assert "No ALPN negotiated" in other
    assert "acme challenge" not in other


def test_acme_challenge_connection_is_closed_after_the_handshake_even_with_mtls(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """On a mutual TLS listener the validator, with no client certificate, gets the challenge
    certificate and then the end of the connection; once the challenge is taken away, the
    same offer gets the listener's certificate (and is refused for want of a client one)."""
    challenge, fingerprint = _challenge("mtls-pending.example.com")
    clients = make_pki("acme clients")
    spec = listener(pki.leaf("mtls-pending.example.com"), backends, ca_pem=clients.root_pem)
    control.apply(Snapshot(snapshot().revision, (spec,), challenges=(challenge,)))
    with _alpn_connect(spec.port, ["acme-tls/1"], "mtls-pending.example.com") as sock:
        assert sock.selected_alpn_protocol() == "acme-tls/1"
        assert leaf_fingerprint(sock) == fingerprint
        assert sock.recv(100) == b""
    control.apply(snapshot(spec))
    with pytest.raises((ssl.SSLError, OSError)):
        with _alpn_connect(spec.port, ["acme-tls/1"], "mtls-pending.example.com") as sock:
            echo_roundtrip(sock)
    assert control.stats().get(spec.listener_id).failure("backend_unavailable") == 0


def test_a_bad_challenge_certificate_is_reported_and_the_rest_served(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """A challenge whose key is not its certificate's fails as `challenge:<name>`; a good one
    in the same snapshot is answered."""
    from offload.errors import ApplyError

    good, fingerprint = _challenge("good-pending.example.com")
    bad, _ = _challenge("bad-pending.example.com")
    bad = replace(bad, key_pem=_challenge("x.example.com")[0].key_pem)
    spec = listener(pki.leaf("mixed.example.com"), backends)
    with pytest.raises(ApplyError) as failed:
        control.apply(Snapshot(snapshot().revision, (spec,), challenges=(good, bad)))
    assert list(failed.value.failures) == ["challenge:bad-pending.example.com"]
    with _alpn_connect(spec.port, ["acme-tls/1"], "good-pending.example.com") as sock:
        assert leaf_fingerprint(sock) == fingerprint


@dataclass
class _ProxyHeaderBackend:
    """A backend that parses a PROXY v2 header (when one comes first), then echoes."""

    headers: list[dict[str, object]] = field(default_factory=list)
    firsts: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _exactly(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                first = self._exactly(conn, 16)
                if first[:12] == b"\r\n\r\n\x00\r\nQUIT\n":
                    self.headers.append(self._parse(first, conn))
                else:
                    self.firsts.append(first[:4])
                    conn.sendall(first)
                while data := conn.recv(65536):
                    conn.sendall(data)
            except (OSError, EOFError):
                return

    def _parse(self, first: bytes, conn: socket.socket) -> dict[str, object]:
        version_command, family, length = first[12], first[13], struct.unpack("!H", first[14:])[0]
        body = self._exactly(conn, length)
        size = 4 if family == 0x11 else 16
        src, dst = body[:size], body[size : 2 * size]
        src_port, dst_port = struct.unpack("!HH", body[2 * size : 2 * size + 4])
        tlvs, rest = {}, body[2 * size + 4 :]
        while rest:
            kind, tlv_len = rest[0], struct.unpack("!H", rest[1:3])[0]
            tlvs[kind] = rest[3 : 3 + tlv_len]
            rest = rest[3 + tlv_len :]
        return {
            "version_command": version_command, "family": family,
            "client": (str(ipaddress.ip_address(src)), src_port),
            "proxy": (str(ipaddress.ip_address(dst)), dst_port),
            "authority": tlvs.get(0x02, b"").decode(),
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()


@pytest.fixture()
def header_backend() -> Iterator[_ProxyHeaderBackend]:
    """A PROXY-protocol-reading backend on a free loopback port."""
    backend = _ProxyHeaderBackend()
    yield backend
    backend.close()


def test_proxy_protocol_v2_header_names_client_listener_and_sni(
    control: ProxyControl, pki: Pki, header_backend: _ProxyHeaderBackend
) -> None:
    """With ProxyProtocolEnabled the backend first reads a v2 PROXY header with the client's
    own address and port, the listener's, and the SNI name as PP2_TYPE_AUTHORITY."""
    spec = listener(
        pki.leaf("pp.example.com"), (Backend("127.0.0.1", header_backend.port),),
        proxy_protocol=True,
    )
    control.apply(snapshot(spec))
    with tls_connect(spec.port, client_context(pki.root_pem), "pp.example.com") as sock:
        assert echo_roundtrip(sock) == b"ping"
        client = sock.getsockname()[:2]
    assert header_backend.headers == [{
        "version_command": 0x21, "family": 0x11, "client": client,
        "proxy": ("127.0.0.1", spec.port), "authority": "pp.example.com",
    }]


def test_without_proxy_protocol_the_backend_gets_the_client_bytes_first(
    control: ProxyControl, pki: Pki, header_backend: _ProxyHeaderBackend
) -> None:
    """A listener without ProxyProtocolEnabled sends no header: the first bytes are the
    client's; switching it on applies to the next connection."""
    spec = listener(pki.leaf("nopp.example.com"), (Backend("127.0.0.1", header_backend.port),))
    control.apply(snapshot(spec))
    with tls_connect(spec.port, client_context(), "nopp.example.com") as sock:
        assert echo_roundtrip(sock, b"0123456789abcdef") == b"0123456789abcdef"
    assert header_backend.firsts == [b"0123"] and header_backend.headers == []
    control.apply(snapshot(replace(spec, proxy_protocol=True)))
    with tls_connect(spec.port, client_context()) as sock:
        assert echo_roundtrip(sock) == b"ping"
    assert [h["authority"] for h in header_backend.headers] == [""]


@pytest.fixture(scope="module")
def one_worker() -> Iterator[ProxyControl]:
    """A single proxy worker, so that a limit's share is the whole limit."""
    with ProxyControl(workers=1) as proxy:
        yield proxy


def _served(port: int, sockets: list[socket.socket]) -> int:
    """How many of the open TCP connections complete TLS and echo."""
    served = 0
    for raw in sockets:
        try:
            with client_context().wrap_socket(raw) as sock:
                served += echo_roundtrip(sock) == b"ping"
        except (ssl.SSLError, OSError):
            pass
    return served


def test_a_burst_beyond_cps_is_closed_and_counted_rate_limited(
    one_worker: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """With Cps 5, a burst of 20 connections gets 5 served (plus what refills while the burst
    lasts, 5 a second) and the rest closed at once, counted as rate_limited."""
    spec = listener(pki.leaf("cps.example.com"), backends, cps=5)
    one_worker.apply(snapshot(spec))
    started = time.monotonic()
    burst = [socket.create_connection(("127.0.0.1", spec.port), timeout=5) for _ in range(20)]
    served = _served(spec.port, burst)
    took = time.monotonic() - started  # every accept happened by now: tokens refilled meanwhile
    assert 5 <= served <= 5 + math.ceil(took * 5)
    assert eventually(
        lambda: one_worker.stats().get(spec.listener_id).failure("rate_limited") == 20 - served,
        timeout=5,
    )
    assert one_worker.stats().get(spec.listener_id).total == served
    time.sleep(0.3)  # 1.5 tokens back
    assert _served(spec.port, [socket.create_connection(("127.0.0.1", spec.port))]) == 1


def test_max_connections_caps_open_connections(
    one_worker: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """With MaxConnections 3, a fourth connection while three are open is closed and counted
    rate_limited; once one closes, a new one is served."""
    spec = listener(pki.leaf("max.example.com"), backends, max_connections=3)
    one_worker.apply(snapshot(spec))
    held = [tls_connect(spec.port, client_context()) for _ in range(3)]
    try:
        for sock in held:
            assert echo_roundtrip(sock) == b"ping"
        assert _served(spec.port, [socket.create_connection(("127.0.0.1", spec.port))]) == 0
        assert one_worker.stats().get(spec.listener_id).failure("rate_limited") == 1
        held.pop().close()
        assert eventually(lambda: one_worker.stats().get(spec.listener_id).active == 2, 5)
        assert _served(spec.port, [socket.create_connection(("127.0.0.1", spec.port))]) == 1
    finally:
        for sock in held:
            sock.close()


def test_cps_holds_for_the_listener_over_two_workers(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """On two workers a listener's Cps 6 admits 6 of a burst of 24 (plus the refill while it
    lasts), however the kernel spreads the burst, and every other connection is counted
    rate_limited."""
    spec = listener(pki.leaf("cps2.example.com"), backends, cps=6)
    control.apply(snapshot(spec))
    started = time.monotonic()
    burst = [socket.create_connection(("127.0.0.1", spec.port), timeout=5) for _ in range(24)]
    served = _served(spec.port, burst)
    took = time.monotonic() - started
    assert 6 <= served <= 6 + math.ceil(took * 6)
    assert eventually(
        lambda: control.stats().get(spec.listener_id).failure("rate_limited") == 24 - served,
        timeout=5,
    )


def test_max_connections_holds_for_the_listener_over_two_workers(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """MaxConnections 1 on two workers: while one connection is open, none of 12 more is
    served, whichever worker takes it; once it closes, one is served again."""
    spec = listener(pki.leaf("max2.example.com"), backends, max_connections=1)
    control.apply(snapshot(spec))
    held = tls_connect(spec.port, client_context())
    try:
        assert echo_roundtrip(held) == b"ping"
        others = [socket.create_connection(("127.0.0.1", spec.port)) for _ in range(12)]
        assert _served(spec.port, others) == 0
    finally:
        held.close()
    assert eventually(lambda: control.stats().get(spec.listener_id).active == 0, 5)
    assert _served(spec.port, [socket.create_connection(("127.0.0.1", spec.port))]) == 1


def test_killed_workers_connections_do_not_hold_max_connections(
    pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """With MaxConnections 2 and two connections open, both workers killed (SIGKILL, so no
    connection is closed by them): once they are replaced, two new connections are served."""
    spec = listener(pki.leaf("maxkill.example.com"), backends, max_connections=2)
    with ProxyControl(workers=2) as proxy:
        proxy.apply(snapshot(spec))
        held = [tls_connect(spec.port, client_context()) for _ in range(2)]
        try:
            assert [echo_roundtrip(sock) for sock in held] == [b"ping"] * 2
            before = proxy.worker_pids()
            for pid in before:
                os.kill(pid, signal.SIGKILL)
            assert eventually(
                lambda: not set(proxy.worker_pids()) & set(before)
                and len(proxy.worker_pids()) == 2 and proxy.healthy(),
                timeout=20,
            )
            fresh = [tls_connect(spec.port, client_context()) for _ in range(2)]
            try:
                assert [echo_roundtrip(sock) for sock in fresh] == [b"ping"] * 2
            finally:
                for sock in fresh:
                    sock.close()
        finally:
            for sock in held:
                sock.close()


@pytest.mark.usefixtures("_openssl")
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_mtls_certificate_request_names_the_listener_cas(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...], version: str
) -> None:
    """`openssl s_client` lists each of the listener's CA certificates under "Acceptable
    client certificate CA names", also when SNI picks an additional certificate."""
    first, second = make_pki("first client ca"), make_pki("second client ca")
    spec = listener(
        pki.leaf("canames.example.com"), backends,
        ca_pem=first.root_pem + second.root_pem,
        additional_certs=(chain(pki.leaf("sni-canames.example.com")),),
    )
    control.apply(snapshot(spec))
    for name in ("canames.example.com", "sni-canames.example.com"):
        answer = _s_client(spec.port, version, "-servername", name)
        names = answer.split("Acceptable client certificate CA names", 1)[1].split("\n---", 1)[0]
        for ca in (first, second):
            cn = ca.root.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            assert f"CN = {cn}" in names
