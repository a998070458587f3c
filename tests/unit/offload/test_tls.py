"""Policy contexts and what this machine's OpenSSL cannot enforce."""

from __future__ import annotations

import ssl

import pytest

from offload.spec import Backend, CertChain, ListenerSpec
from offload.tls import build_context, policy_context, unenforceable
from tests.certfactory import make_pki

STRONG = [
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
]
LEGACY = [
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA256", "AES256-SHA256", "AES128-SHA",
    "AES256-SHA", "DES-CBC3-SHA",
]
SUITES = [
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256",
]


@pytest.mark.parametrize(
    ("versions", "ciphers", "expected"),
    [
        (["TLSv1.0", "TLSv1.1", "TLSv1.2"], STRONG + LEGACY, ["DES-CBC3-SHA"]),
        (["TLSv1.1", "TLSv1.2"], STRONG + LEGACY, ["DES-CBC3-SHA"]),
        (["TLSv1.2"], STRONG + LEGACY, ["DES-CBC3-SHA"]),
        (["TLSv1.2"], STRONG, []),
        (["TLSv1.2", "TLSv1.3"], STRONG + SUITES, []),
        (["TLSv1.3"], ["TLS_AES_128_GCM_SHA256"], []),
        (["TLSv1.3"], ["TLS_AES_128_CCM_8_SHA256"], []),
        (["TLSv1.0"], ["ECDHE-RSA-AES128-GCM-SHA256"], ["TLSv1.0"]),
        (["TLSv1.2"], ["DES-CBC3-SHA"], ["TLSv1.2", "DES-CBC3-SHA"]),
    ],
)
def test_unenforceable_on_this_openssl(
    versions: list[str], ciphers: list[str], expected: list[str]
) -> None:
    """Only 3DES and versions without a usable cipher are reported: every TLS 1.3 suite,
    CCM ones included, is set."""
    assert unenforceable(versions, ciphers) == expected


def test_policy_context_sets_versions_and_ciphers() -> None:
    """A 1.0-1.2 policy spans TLSv1..TLSv1.2 and offers exactly its TLS<=1.2 ciphers."""
    ctx = policy_context(["TLSv1.0", "TLSv1.2", "TLSv1.1"], ["ECDHE-RSA-AES128-SHA"])
    assert (ctx.minimum_version, ctx.maximum_version) == (
        ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_2,
    )
    legacy = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    assert legacy == ["ECDHE-RSA-AES128-SHA"]


def test_policy_context_refuses_unknown_versions() -> None:
    """An empty or unknown version list is an error, not a silent default."""
    with pytest.raises(ValueError):
        policy_context([], [])
    with pytest.raises(ValueError):
        policy_context(["SSLv3"], [])


def test_build_context_refuses_a_key_of_another_certificate() -> None:
    """A chain with a key that is not its own fails to build (and nothing is swapped)."""
    pki = make_pki()
    leaf, other = pki.leaf("a.example.com"), pki.leaf("b.example.com")
    spec = ListenerSpec(
        "lsn-1", "127.0.0.1", 1, CertChain(leaf.chain_pem, other.key_pem), (Backend("h", 1),)
    )
    with pytest.raises(ssl.SSLError):
        build_context(spec)


def test_build_context_plain_tcp_has_none() -> None:
    """A plain TCP listener has no TLS context."""
    pki = make_pki()
    leaf = pki.leaf("a.example.com")
    spec = ListenerSpec(
        "lsn-1", "127.0.0.1", 1, CertChain(leaf.chain_pem, leaf.key_pem), (), protocol="TCP"
    )
    assert build_context(spec) is None


def test_policy_context_offers_exactly_the_policy_suites() -> None:
    """The TLS 1.3 suites offered are the policy's, CCM included, and no default one."""
    ctx = policy_context(["TLSv1.3"], ["TLS_AES_128_CCM_8_SHA256", "TLS_AES_256_GCM_SHA384"])
    suites = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
    assert sorted(suites) == ["TLS_AES_128_CCM_8_SHA256", "TLS_AES_256_GCM_SHA384"]
