"""The one chain rule (`pki.verify.verify_chain`): OpenSSL's default verifier, one rule each."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509 import verification

from certwatch.pki.verify import verify_chain
from tests.certfactory import Pki, issue, make_pki

DAY = dt.timedelta(days=1)
AT = dt.datetime.now(dt.UTC)  # inside the validity of the certificates issued below


@pytest.fixture(scope="module")
def pki() -> Pki:
    """One two-level PKI for the module."""
    return make_pki("verify")


@pytest.fixture(scope="module")
def lax() -> Pki:
    """A two-level PKI whose certificates below the root carry no Authority Key Identifier."""
    return make_pki("lax", aki=False)


def test_leaf_and_intermediate_verify_with_and_without_a_name(pki: Pki) -> None:
    """Leaf + intermediate verify to the root for its DNS name, its IP and no name at all."""
    chain = [pki.leaf("a.example.com", "192.0.2.7").cert, pki.intermediate.cert]
    for name in ("a.example.com", "192.0.2.7", "[192.0.2.7]", None):
        verdict = verify_chain(chain, [pki.root.cert], AT, name)
        assert verdict.verifies and verdict.findings == (), name


def test_missing_aki_verifies_with_a_strict_finding(lax: Pki) -> None:
    """A chain without AKI is what clients accept; the strict profile's complaint is a finding."""
    chain = [lax.leaf("a.example.com").cert, lax.intermediate.cert]
    verdict = verify_chain(chain, [lax.root.cert], AT, "a.example.com")
    assert verdict.problem is None and not verdict.incomplete
    assert verdict.findings == (
        "certificate 1 (CN=a.example.com): Missing Authority Key Identifier",
        "certificate 2 (CN=lax intermediate CA): Missing Authority Key Identifier",
    )


def test_cryptographys_strict_verifier_rejects_what_clients_accept(lax: Pki) -> None:
    """The reason for the rule: cryptography's WebPKI verifier refuses the AKI-less chain."""
    chain = [lax.leaf("a.example.com").cert, lax.intermediate.cert]
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([lax.root.cert]))
        .time(AT)
        .build_server_verifier(x509.DNSName("a.example.com"))
    )
    with pytest.raises(verification.VerificationError):
        verifier.verify(chain[0], chain[1:])
    assert verify_chain(chain, [lax.root.cert], AT, "a.example.com").verifies


def test_missing_intermediate_is_incomplete(pki: Pki) -> None:
    """Without the intermediate no path is built, with or without a name."""
    leaf = pki.leaf("a.example.com").cert
    for name in ("a.example.com", None):
        verdict = verify_chain([leaf], [pki.root.cert], AT, name)
        assert verdict.problem == "unable to build a path to a trusted root"
        assert verdict.incomplete


def test_untrusted_root_and_no_roots(pki: Pki) -> None:
    """A chain to a root that is not trusted fails; so does an empty root list."""
    chain = [pki.leaf("a.example.com").cert, pki.intermediate.cert]
    other = make_pki("other")
    verdict = verify_chain(chain, [other.root.cert], AT, "a.example.com")
    assert verdict.problem == "unable to build a path to a trusted root" and verdict.incomplete
    assert verify_chain(chain, [], AT).problem == "no trusted roots"
    assert verify_chain([], [pki.root.cert], AT).problem == "empty chain"


def test_served_untrusted_root_is_named(pki: Pki) -> None:
    """A chain that carries its own root, which is not trusted, says which certificate it is."""
    chain = [pki.leaf("a.example.com").cert, pki.intermediate.cert, pki.root.cert]
    verdict = verify_chain(chain, [make_pki("other").root.cert], AT)
    assert verdict.incomplete
    assert verdict.problem == (
        "unable to build a path to a trusted root: "
        "certificate 3 (CN=verify root CA) is self-signed, not trusted"
    )


def test_expired_and_not_yet_valid_leaf(pki: Pki) -> None:
    """A leaf outside its validity at `now` is expired or not yet valid, not incomplete."""
    chain = [pki.leaf("a.example.com", days=10).cert, pki.intermediate.cert]
    late = verify_chain(chain, [pki.root.cert], AT + 11 * DAY, "a.example.com")
    assert late.problem == "expired" and not late.incomplete
    future = [pki.leaf("a.example.com", not_before=AT + DAY).cert, pki.intermediate.cert]
    early = verify_chain(future, [pki.root.cert], AT, None)
    assert early.problem == "not yet valid" and not early.incomplete


def test_expired_intermediate_is_named(pki: Pki) -> None:
    """An intermediate that expires before its leaf is what the reason names."""
    short = pki.root.issue(common_name="short intermediate CA", ca=True, days=5)
    leaf = short.issue("a.example.com", days=30)
    verdict = verify_chain([leaf.cert, short.cert], [pki.root.cert], AT + 6 * DAY)
    assert verdict.problem == "certificate 2 (CN=short intermediate CA) expired"


def test_name_mismatch_for_dns_ip_and_wildcards(pki: Pki) -> None:
    """A name the leaf does not cover is a mismatch; a wildcard covers exactly one label."""
    chain = [pki.leaf("a.example.com", "192.0.2.7").cert, pki.intermediate.cert]
    assert verify_chain(chain, [pki.root.cert], AT, "b.example.com").problem == "name mismatch"
    assert verify_chain(chain, [pki.root.cert], AT, "192.0.2.8").problem == "name mismatch"
    wild = [pki.leaf("*.example.com").cert, pki.intermediate.cert]
    assert verify_chain(wild, [pki.root.cert], AT, "b.example.com").verifies
    assert verify_chain(wild, [pki.root.cert], AT, "a.b.example.com").problem == "name mismatch"


def test_intermediates_in_any_order(pki: Pki) -> None:
    """Two intermediates served in the wrong order still verify (OpenSSL builds the path)."""
    second = pki.intermediate.issue(common_name="second intermediate CA", ca=True)
    leaf = second.issue("a.example.com")
    shuffled = [leaf.cert, pki.intermediate.cert, second.cert]
    assert verify_chain(shuffled, [pki.root.cert], AT).verifies


def test_client_only_leaf_is_not_a_server_certificate(pki: Pki) -> None:
    """A leaf whose EKU is clientAuth only fails the TLS server purpose, like clients say."""
    chain = [pki.leaf("a.example.com", client=True).cert, pki.intermediate.cert]
    verdict = verify_chain(chain, [pki.root.cert], AT, "a.example.com")
    assert verdict.problem == "certificate 1 (CN=a.example.com): unsuitable certificate purpose"


def test_signed_by_another_key_with_the_same_name_fails(pki: Pki) -> None:
    """A trusted root with the issuer's name but another key does not complete the path."""
    fake_root = issue(common_name="verify root CA", ca=True)
    chain = [pki.leaf("a.example.com").cert, pki.intermediate.cert]
    assert verify_chain(chain, [fake_root.cert], AT).incomplete


def test_invalid_server_name(pki: Pki) -> None:
    """A server name OpenSSL cannot take is reported, not raised."""
    chain = [pki.leaf("a.example.com").cert, pki.intermediate.cert]
    assert verify_chain(chain, [pki.root.cert], AT, "a\x00b").problem == (
        "invalid server name 'a\\x00b'"
    )
