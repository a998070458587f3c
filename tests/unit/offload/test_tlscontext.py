"""`TlsContext` (offload/tlscontext.pyx): what it accepts, and its SNI callback.

The SNI callback sits on the base context's SSL_CTX, so a handshake driven by Python's own
`ssl` over memory BIOs (server side on the base `ssl.SSLContext`) goes through it too.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from offload.tlscontext import TicketKeys, TlsContext
from tests.certfactory import Issued, Pki, make_pki


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture()
def contexts(pki: Pki, tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Fresh server contexts for default.example (the base) and other.example."""

    def context(cert: Issued) -> ssl.SSLContext:
        chain, key = tmp_path / f"{id(cert)}.pem", tmp_path / f"{id(cert)}.key"
        chain.write_text(cert.chain_pem)
        key.write_text(cert.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key)
        return ctx

    return context(pki.leaf("default.example")), context(pki.leaf("other.example"))


def _handshake(base: ssl.SSLContext, pki: Pki, server_name: str | None) -> ssl.SSLObject:
    """A client (sending `server_name`) completes a handshake with a server on `base`."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=pki.root_pem)
    client_ctx.check_hostname = False
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = base.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if client.version() and server.version():
            return client
    raise AssertionError("the handshake did not complete")


def _served_name(base: ssl.SSLContext, pki: Pki, server_name: str | None) -> str:
    """The common name of the certificate a client sending `server_name` is served."""
    cert = _handshake(base, pki, server_name).getpeercert()
    assert cert
    return str(dict(x[0] for x in cert["subject"])["commonName"])


def test_refuses_what_is_not_an_ssl_context() -> None:
    with pytest.raises(TypeError):
        TlsContext(object())  # type: ignore[arg-type]


def test_additional_contexts_need_a_lookup(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    base, other = contexts
    with pytest.raises(ValueError):
        TlsContext(base, [other])


def test_sni_callback_switches_to_the_looked_up_context(
    pki: Pki, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Index 0 → the additional certificate; None and -1 → the base one."""
    base, other = contexts
    names = {"other.example": 0, "default.example": -1}
    tls = TlsContext(base, [other], names.get)
    assert _served_name(base, pki, "other.example") == "other.example"
    assert _served_name(base, pki, "default.example") == "default.example"
    assert _served_name(base, pki, "unknown.example") == "default.example"
    assert _served_name(base, pki, None) == "default.example"
    del tls


def test_a_failing_lookup_refuses_the_handshake(
    pki: Pki, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """An exception in the lookup ends the handshake with an alert, not a wrong certificate."""
    base, other = contexts

    def broken(name: str | None) -> int | None:
        raise KeyError(name)

    lookup: Callable[[str | None], int | None] = broken
    tls = TlsContext(base, [other], lookup)
    with pytest.raises(ssl.SSLError):
        _served_name(base, pki, "other.example")
    del tls


def test_dropping_it_unhooks_the_callback(
    pki: Pki, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Once the TlsContext is gone, the base context serves its own certificate again."""
    base, other = contexts
    tls = TlsContext(base, [other], {"other.example": 0}.get)
    del tls
    assert _served_name(base, pki, "other.example") == "default.example"



@pytest.mark.parametrize(
    "keys",
    [[b"x" * 79], [b"x" * 80] * 2, [bytes([i]) * 80 for i in range(5)]],
    ids=["short", "same-name", "too-many"],
)
def test_ticket_keys_refuse_bad_material(keys: list[bytes]) -> None:
    """A key of the wrong size, two keys of one name or more than four keys are refused, and
    the ring keeps what it had."""
    ring = TicketKeys()
    ring.set([b"k" * 80])
    with pytest.raises(ValueError):
        ring.set(keys)
    assert len(ring) == 1


def test_session_id_context_longer_than_openssl_allows_is_refused(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A session id context over 32 bytes is an error, not silently cut."""
    with pytest.raises(ValueError):
        TlsContext(contexts[0], session_id_context=b"s" * 33)
