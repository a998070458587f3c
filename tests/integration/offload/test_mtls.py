"""Mutual TLS: who gets in, live switching, and the SNI trap."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from offload.spec import Backend, ListenerSpec
from offload.workers import ProxyControl
from tests.certfactory import Issued, Pki, make_pki
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


@pytest.fixture(scope="module")
def client_pki() -> Pki:
    """The CA that issues the accepted client certificates."""
    return make_pki("clients")


@pytest.fixture(scope="module")
def good_client(client_pki: Pki) -> Issued:
    """A client certificate from the listener's CA (via its intermediate)."""
    return client_pki.leaf("alice", client=True)


@pytest.fixture(scope="module")
def stranger_pki() -> Pki:
    """Another CA, not trusted by the listener at first."""
    return make_pki("strangers")


@pytest.fixture(scope="module")
def stranger(stranger_pki: Pki) -> Issued:
    """A client certificate from a CA the listener does not trust."""
    return stranger_pki.leaf("mallory", client=True)


def _echoes(
    port: int,
    pki: Pki,
    tmp_path: Path,
    cert: Issued | None,
    server_name: str | None = None,
    version: ssl.TLSVersion | None = None,
) -> bool:
    """True when the client gets through the handshake and its bytes come back."""
    ctx = client_context(
        pki.root_pem if server_name else None,
        cert=cert,
        tmp_dir=str(tmp_path),
        versions=(version, version) if version else None,
    )
    try:
        with tls_connect(port, ctx, server_name) as sock:
            return echo_roundtrip(sock) == b"ping"
    except (ssl.SSLError, OSError):
        return False


def _mtls(pki: Pki, client_pki: Pki, backends: tuple[Backend, ...], **kw: object) -> ListenerSpec:
    return listener(pki.leaf("mtls.example.com"), backends, ca_pem=client_pki.root_pem, **kw)


def test_client_certificate_from_the_ca_is_accepted(
    control: ProxyControl,
    pki: Pki,
    client_pki: Pki,
    good_client: Issued,
    backends: tuple[Backend, ...],
    tmp_path: Path,
) -> None:
    """With a CA set, a client presenting a certificate chaining to it gets through."""
    spec = _mtls(pki, client_pki, backends)
    control.apply(snapshot(spec))
    assert _echoes(spec.port, pki, tmp_path, good_client)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_client_without_or_with_foreign_certificate_is_refused(
    control: ProxyControl,
    pki: Pki,
    client_pki: Pki,
    stranger: Issued,
    backends: tuple[Backend, ...],
    tmp_path: Path,
    version: ssl.TLSVersion,
) -> None:
    """No client certificate, or one from another CA, fails and is counted as client_cert."""
    spec = _mtls(pki, client_pki, backends)
    control.apply(snapshot(spec))
    for cert in (None, stranger):
        assert not _echoes(spec.port, pki, tmp_path, cert, version=version)
    assert eventually(
        lambda: control.stats().get(spec.listener_id).failure("client_cert") >= 2, timeout=5
    )


def test_switching_mtls_on_and_off_applies_to_new_connections(
    control: ProxyControl,
    pki: Pki,
    client_pki: Pki,
    good_client: Issued,
    backends: tuple[Backend, ...],
    tmp_path: Path,
) -> None:
    """Turning mTLS on refuses anonymous clients from then on; off lets them in again."""
    plain = listener(pki.leaf("switch.example.com"), backends)
    control.apply(snapshot(plain))
    assert _echoes(plain.port, pki, tmp_path, None)
    on = ListenerSpec(**{**plain.__dict__, "ca_pem": client_pki.root_pem})
    control.apply(snapshot(on))
    assert not _echoes(plain.port, pki, tmp_path, None)
    assert _echoes(plain.port, pki, tmp_path, good_client)
    control.apply(snapshot(plain))
    assert _echoes(plain.port, pki, tmp_path, None)


def test_replacing_the_ca_applies_to_new_connections(
    control: ProxyControl,
    pki: Pki,
    client_pki: Pki,
    good_client: Issued,
    stranger: Issued,
    stranger_pki: Pki,
    backends: tuple[Backend, ...],
    tmp_path: Path,
) -> None:
    """After the CA is replaced, the old CA's clients are refused and the new CA's accepted."""
    spec = _mtls(pki, client_pki, backends)
    control.apply(snapshot(spec))
    assert _echoes(spec.port, pki, tmp_path, good_client)
    replaced = ListenerSpec(**{**spec.__dict__, "ca_pem": stranger_pki.root_pem})
    control.apply(snapshot(replaced))
    assert not _echoes(spec.port, pki, tmp_path, good_client)
    assert _echoes(spec.port, pki, tmp_path, stranger)


def test_sni_client_is_still_asked_for_its_certificate(
    control: ProxyControl,
    pki: Pki,
    client_pki: Pki,
    good_client: Issued,
    backends: tuple[Backend, ...],
    tmp_path: Path,
) -> None:
    """A client whose SNI selects an additional certificate must still present a client cert."""
    extra = pki.leaf("extra.example.com")
    spec = _mtls(pki, client_pki, backends, additional_certs=(chain(extra),))
    control.apply(snapshot(spec))
    assert not _echoes(spec.port, pki, tmp_path, None, "extra.example.com")
    ctx = client_context(pki.root_pem, cert=good_client, tmp_dir=str(tmp_path))
    with tls_connect(spec.port, ctx, "extra.example.com") as sock:
        assert leaf_fingerprint(sock) == extra.fingerprint
        assert echo_roundtrip(sock) == b"ping"
