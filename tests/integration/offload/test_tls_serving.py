"""What a TLS client sees: full chain, SNI selection, security policies, the ssl traps."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from offload.spec import Backend, ListenerSpec
from offload.workers import ProxyControl
from tests.certfactory import Issued, Pki
from tests.integration.offload.conftest import (
    chain,
    client_context,
    echo_roundtrip,
    leaf_fingerprint,
    listener,
    snapshot,
    tls_connect,
)

V = ssl.TLSVersion
STRONG = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA256:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:"
    "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
).split(":")
LEGACY = (
    "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA:"
    "DES-CBC3-SHA"
).split(":")
SUITES = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
]
POLICIES = {
    "tls_cipher_policy_1_0": (("TLSv1.0", "TLSv1.1", "TLSv1.2"), STRONG + LEGACY),
    "tls_cipher_policy_1_1": (("TLSv1.1", "TLSv1.2"), STRONG + LEGACY),
    "tls_cipher_policy_1_2": (("TLSv1.2",), STRONG + LEGACY),
    "tls_cipher_policy_1_2_strict": (("TLSv1.2",), STRONG),
    "tls_cipher_policy_1_2_strict_with_1_3": (("TLSv1.2", "TLSv1.3"), STRONG + SUITES),
}
OLD = "DEFAULT:@SECLEVEL=0"


@pytest.fixture(scope="module")
def rsa_leaf(pki: Pki) -> Issued:
    """An RSA server leaf, so the ECDHE-RSA and plain RSA ciphers can be negotiated."""
    return pki.leaf("policy.example.com", key="rsa2048")


def _serve(control: ProxyControl, *specs: ListenerSpec) -> None:
    control.apply(snapshot(*specs))


def _works(port: int, ctx: ssl.SSLContext, server_name: str | None = None) -> str | None:
    """The negotiated version when a handshake and echo succeed, else None."""
    try:
        with tls_connect(port, ctx, server_name) as sock:
            return sock.version() if echo_roundtrip(sock) == b"ping" else None
    except (ssl.SSLError, OSError):
        return None


def test_full_chain_is_sent(control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]) -> None:
    """A client that trusts only the root verifies the served leaf through the intermediate."""
    leaf = pki.leaf("chain.example.com")
    spec = listener(leaf, backends)
    _serve(control, spec)
    with tls_connect(spec.port, client_context(pki.root_pem), "chain.example.com") as sock:
        assert leaf_fingerprint(sock) == leaf.fingerprint
        assert echo_roundtrip(sock, b"hello") == b"hello"


def test_full_chain_with_openssl_s_client(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...], tmp_path: Path
) -> None:
    """`openssl s_client` with only the root as CA file verifies and sees two certificates."""
    leaf = pki.leaf("sclient.example.com")
    spec = listener(leaf, backends)
    _serve(control, spec)
    root = tmp_path / "root.pem"
    root.write_text(pki.root_pem)
    out = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{spec.port}",
            "-servername",
            "sclient.example.com",
            "-CAfile",
            str(root),
            "-verify_return_error",
            "-showcerts",
        ],
        input=b"",
        capture_output=True,
        timeout=10,
        check=False,
    )
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()
    assert "Verify return code: 0 (ok)" in text
    assert text.count("-----BEGIN CERTIFICATE-----") == 2


@pytest.fixture(scope="module")
def sni_certs(pki: Pki) -> dict[str, Issued]:
    """A default, an exact-name, a wildcard and an unrelated certificate."""
    return {
        "default": pki.leaf("default.example.com"),
        "exact": pki.leaf("www.example.com"),
        "wild": pki.leaf("*.example.com"),
        "org": pki.leaf("a.example.org"),
    }


@pytest.mark.parametrize(
    ("server_name", "served"),
    [
        ("www.example.com", "exact"),
        ("WWW.example.com", "exact"),
        ("api.example.com", "wild"),
        ("a.example.org", "org"),
        ("a.b.example.com", "default"),
        ("example.com", "default"),
        ("unknown.test", "default"),
        (None, "default"),
    ],
)
def test_sni_selects_certificate(
    control: ProxyControl,
    sni_certs: dict[str, Issued],
    backends: tuple[Backend, ...],
    server_name: str | None,
    served: str,
) -> None:
    """Exact beats wildcard, a wildcard covers one label only, anything else gets the default."""
    spec = listener(
        sni_certs["default"],
        backends,
        additional_certs=(
            chain(sni_certs["wild"]),
            chain(sni_certs["exact"]),
            chain(sni_certs["org"]),
        ),
    )
    _serve(control, spec)
    with tls_connect(spec.port, client_context(), server_name) as sock:
        assert leaf_fingerprint(sock) == sni_certs[served].fingerprint


POLICY_CASES = [
    ("tls_cipher_policy_1_0", (V.TLSv1, V.TLSv1), OLD, "TLSv1"),
    ("tls_cipher_policy_1_0", (V.TLSv1_1, V.TLSv1_1), OLD, "TLSv1.1"),
    ("tls_cipher_policy_1_0", (V.TLSv1_2, V.TLSv1_2), "AES128-SHA", "TLSv1.2"),
    ("tls_cipher_policy_1_0", (V.TLSv1_3, V.TLSv1_3), None, None),
    ("tls_cipher_policy_1_1", (V.TLSv1_1, V.TLSv1_1), OLD, "TLSv1.1"),
    ("tls_cipher_policy_1_1", (V.TLSv1, V.TLSv1), OLD, None),
    ("tls_cipher_policy_1_2", (V.TLSv1_2, V.TLSv1_2), "AES256-GCM-SHA384", "TLSv1.2"),
    ("tls_cipher_policy_1_2", (V.TLSv1_1, V.TLSv1_1), OLD, None),
    ("tls_cipher_policy_1_2", (V.TLSv1_3, V.TLSv1_3), None, None),
    ("tls_cipher_policy_1_2", (V.TLSv1_2, V.TLSv1_2), "CHACHA20", None),
    ("tls_cipher_policy_1_2_strict", (V.TLSv1_2, V.TLSv1_2), "ECDHE-RSA-AES128-SHA", "TLSv1.2"),
    ("tls_cipher_policy_1_2_strict", (V.TLSv1_2, V.TLSv1_2), "AES128-GCM-SHA256", None),
    ("tls_cipher_policy_1_2_strict", (V.TLSv1_3, V.TLSv1_3), None, None),
    ("tls_cipher_policy_1_2_strict_with_1_3", (V.TLSv1_3, V.TLSv1_3), None, "TLSv1.3"),
    ("tls_cipher_policy_1_2_strict_with_1_3", (V.TLSv1_2, V.TLSv1_2), None, "TLSv1.2"),
    ("tls_cipher_policy_1_2_strict_with_1_3", (V.TLSv1_2, V.TLSv1_2), "AES256-SHA", None),
    ("tls_cipher_policy_1_2_strict_with_1_3", (V.TLSv1_1, V.TLSv1_1), OLD, None),
]


@pytest.mark.parametrize(("policy", "versions", "ciphers", "expected"), POLICY_CASES)
def test_security_policy(
    control: ProxyControl,
    rsa_leaf: Issued,
    backends: tuple[Backend, ...],
    policy: str,
    versions: tuple[ssl.TLSVersion, ssl.TLSVersion],
    ciphers: str | None,
    expected: str | None,
) -> None:
    """Each system policy accepts its versions and ciphers and refuses the others."""
    tls_versions, policy_ciphers = POLICIES[policy]
    spec = listener(rsa_leaf, backends, tls_versions=tls_versions, ciphers=tuple(policy_ciphers))
    _serve(control, spec)
    ctx = client_context(versions=versions, ciphers=ciphers)
    assert _works(spec.port, ctx, "policy.example.com") == expected


def test_tls_1_0_with_openssl_s_client(
    control: ProxyControl, rsa_leaf: Issued, backends: tuple[Backend, ...]
) -> None:
    """`openssl s_client -tls1` really negotiates TLS 1.0 with the 1_0 policy."""
    tls_versions, ciphers = POLICIES["tls_cipher_policy_1_0"]
    spec = listener(rsa_leaf, backends, tls_versions=tls_versions, ciphers=tuple(ciphers))
    _serve(control, spec)
    out = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{spec.port}",
            "-tls1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-brief",
        ],
        input=b"",
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert "Protocol version: TLSv1\n" in out.stderr.decode()


def test_sni_client_is_refused_a_disallowed_version(
    control: ProxyControl, pki: Pki, rsa_leaf: Issued, backends: tuple[Backend, ...]
) -> None:
    """A client whose SNI selects an additional certificate still gets the policy's versions."""
    extra = pki.leaf("sni.example.com", key="rsa2048")
    tls_versions, ciphers = POLICIES["tls_cipher_policy_1_2"]
    spec = listener(
        rsa_leaf,
        backends,
        tls_versions=tls_versions,
        ciphers=tuple(ciphers),
        additional_certs=(chain(extra),),
    )
    _serve(control, spec)
    with tls_connect(spec.port, client_context(), "sni.example.com") as sock:
        assert leaf_fingerprint(sock) == extra.fingerprint
    for versions, ciphers_ in (((V.TLSv1_1, V.TLSv1_1), OLD), ((V.TLSv1_3, V.TLSv1_3), None)):
        ctx = client_context(versions=versions, ciphers=ciphers_)
        assert _works(spec.port, ctx, "sni.example.com") is None
