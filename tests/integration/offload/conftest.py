"""Fixtures for the offload integration tests: a PKI, echo backends, a running proxy, clients."""

from __future__ import annotations

import hashlib
import itertools
import socket
import ssl
import warnings
from collections.abc import Iterator

import pytest

from offload.echo import EchoServer
from offload.spec import Backend, CertChain, ListenerSpec, Snapshot
from offload.workers import ProxyControl
from tests.certfactory import Issued, Pki, make_pki
from tests.support import free_port

_revisions = itertools.count(1)
_listener_ids = itertools.count(1)


def chain(issued: Issued, *names: str) -> CertChain:
    """The `CertChain` a listener serves for `issued` (names default to its SANs)."""
    return CertChain(issued.chain_pem, issued.key_pem, names or _sans(issued))


def _sans(issued: Issued) -> tuple[str, ...]:
    from cryptography import x509

    ext = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return tuple(ext.value.get_values_for_type(x509.DNSName))


def listener(default: Issued, backends: tuple[Backend, ...], **fields: object) -> ListenerSpec:
    """A TLS listener on a fresh port with a unique id; `fields` override the rest."""
    values: dict[str, object] = {
        "listener_id": f"lsn-{next(_listener_ids):016x}",
        "address": "127.0.0.1",
        "port": free_port(),
        "default_cert": chain(default),
        "backends": backends,
        "tls_versions": ("TLSv1.2", "TLSv1.3"),
    }
    values.update(fields)
    return ListenerSpec(**values)  # type: ignore[arg-type]


def snapshot(*specs: ListenerSpec) -> Snapshot:
    """A snapshot with the next revision number."""
    return Snapshot(next(_revisions), specs)


def client_context(
    root_pem: str | None = None,
    *,
    cert: Issued | None = None,
    versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
    ciphers: str | None = None,
    tmp_dir: str | None = None,
) -> ssl.SSLContext:
    """A client context trusting only `root_pem` (or nothing checked when None)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if root_pem is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=root_pem)
    if versions is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version, ctx.maximum_version = versions
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if cert is not None:
        assert tmp_dir is not None
        cert_path, key_path = f"{tmp_dir}/client.pem", f"{tmp_dir}/client.key"
        with open(cert_path, "w") as f:
            f.write(cert.chain_pem)
        with open(key_path, "w") as f:
            f.write(cert.key_pem)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


def tls_connect(
    port: int, ctx: ssl.SSLContext, server_name: str | None = None, timeout: float = 5.0
) -> ssl.SSLSocket:
    """A completed TLS connection to the proxy on 127.0.0.1."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise


def leaf_fingerprint(sock: ssl.SSLSocket) -> str:
    """SHA-256 of the certificate the server presented."""
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def echo_roundtrip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    """Send `payload` and read the same number of bytes back."""
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@pytest.fixture(scope="session")
def pki() -> Pki:
    """A root → intermediate PKI for server leaves."""
    return make_pki("offload test")


@pytest.fixture(scope="session")
def echo() -> Iterator[EchoServer]:
    """An echo backend shared by the tests."""
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="session")
def backends(echo: EchoServer) -> tuple[Backend, ...]:
    """The shared echo server as a one-backend server group."""
    return (Backend("127.0.0.1", echo.port),)


@pytest.fixture(scope="session")
def control() -> Iterator[ProxyControl]:
    """Two proxy workers shared by the tests; each test applies its own snapshot."""
    with ProxyControl(workers=2) as proxy:
        yield proxy
