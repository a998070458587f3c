"""Unit tests for certwatch.x509: parsing, key matching, chains, description, warnings, status."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from certwatch.pki import x509 as cx
from tests.certfactory import Issued, Pki, issue, make_pki

NOW = dt.datetime(2026, 11, 27, 0, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
AT = dt.datetime.now(dt.UTC)  # inside the validity of certificates issued by the fixtures


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def rsa_pki() -> Pki:
    return make_pki("rsa test", key="rsa2048")


def _sha1_resign(leaf: Issued, issuer: Issued) -> x509.Certificate:
    """The leaf re-signed with sha1WithRSAEncryption (cryptography refuses to build SHA-1 certs)."""
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    sha256_rsa = bytes.fromhex("06092a864886f70d01010b")
    sha1_rsa = bytes.fromhex("06092a864886f70d010105")
    assert der.count(sha256_rsa) == 2
    swapped = x509.load_der_x509_certificate(der.replace(sha256_rsa, sha1_rsa))
    assert isinstance(issuer.key, rsa.RSAPrivateKey)
    signature = issuer.key.sign(swapped.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1())
    raw = swapped.public_bytes(serialization.Encoding.DER)
    assert raw.endswith(swapped.signature) and len(signature) == len(swapped.signature)
    return x509.load_der_x509_certificate(raw[: -len(signature)] + signature)


# --- describe -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kind", "algorithm", "size"),
    [("rsa2048", "RSA", 2048), ("ec256", "EC", 256), ("ec384", "EC", 384),
     ("ed25519", "Ed25519", 256)],
)
def test_describe_fills_every_field(pki: Pki, kind: str, algorithm: str, size: int) -> None:
    """describe() reports names, SANs, serial, fingerprint, validity, key and signature info."""
    start = NOW - DAY
    end = NOW + 10 * DAY
    leaf = pki.leaf("a.example.com", "b.example.com", "192.0.2.7", key=kind,
                    not_before=start, not_after=end)
    info = cx.describe(leaf.cert)
    assert info.common_name == "a.example.com"
    assert info.sans == ("a.example.com", "b.example.com", "192.0.2.7")
    assert info.issuer == "CN=certwatch test intermediate CA"
    assert info.subject == "CN=a.example.com"
    assert info.serial_number == format(leaf.cert.serial_number, "x")
    assert info.serial_number == info.serial_number.lower()
    assert info.fingerprint == leaf.fingerprint
    assert info.not_before == start and info.not_before.tzinfo is not None
    assert info.not_after == end and info.not_after.utcoffset() == dt.timedelta(0)
    assert info.key_algorithm == algorithm
    assert info.key_size == size
    assert info.signature_algorithm == "ecdsa-with-SHA256"  # signed by the EC intermediate
    assert info.is_ca is False
    assert info.self_signed is False


def test_describe_signature_names_for_rsa_and_ed25519_issuers(rsa_pki: Pki) -> None:
    """The signature algorithm is the OID's name for RSA and Ed25519 signers."""
    assert cx.describe(rsa_pki.leaf("r.example.com").cert).signature_algorithm == (
        "sha256WithRSAEncryption"
    )
    ed_root = issue(common_name="ed root", key="ed25519", ca=True)
    assert cx.describe(ed_root.cert).signature_algorithm == "ed25519"


def test_describe_ca_and_self_signed(pki: Pki) -> None:
    """A root is a self-signed CA; an intermediate is a CA but not self-signed."""
    root = cx.describe(pki.root.cert)
    assert root.is_ca and root.self_signed
    inter = cx.describe(pki.intermediate.cert)
    assert inter.is_ca and not inter.self_signed


def test_fingerprint_matches_factory(pki: Pki) -> None:
    """fingerprint() is the lower-case hex SHA-256 of the DER certificate."""
    leaf = pki.leaf("a.example.com")
    assert cx.fingerprint(leaf.cert) == leaf.fingerprint
    assert len(cx.fingerprint(leaf.cert)) == 64


def test_dns_names_from_san_or_host_like_cn(pki: Pki) -> None:
    """dns_names() gives SAN DNS names; without SANs the CN only if it looks like a host."""
    assert cx.dns_names(pki.leaf("a.example.com", "*.b.example.com").cert) == (
        "a.example.com", "*.b.example.com")
    assert cx.dns_names(issue(common_name="host.example.com").cert) == ("host.example.com",)
    assert cx.dns_names(pki.root.cert) == ()  # "certwatch test root CA" is no host name
    assert cx.common_name(pki.root.cert) == "certwatch test root CA"


# --- key matching ---------------------------------------------------------------------------

KINDS = ["rsa2048", "ec256", "ec384", "ed25519"]


@pytest.mark.parametrize("kind", KINDS)
def test_key_matches_own_key(pki: Pki, kind: str) -> None:
    """key_matches() is True for the certificate's own key (after a PEM round trip too)."""
    leaf = pki.leaf("a.example.com", key=kind)
    assert cx.key_matches(leaf.cert, leaf.key)
    assert cx.key_matches(leaf.cert, cx.parse_private_key(leaf.key_pem))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("other", KINDS)
def test_key_matches_rejects_other_key(pki: Pki, kind: str, other: str) -> None:
    """key_matches() is False for another key of the same or a different type."""
    leaf = pki.leaf("a.example.com", key=kind)
    stranger = pki.leaf("a.example.com", key=other)
    assert not cx.key_matches(leaf.cert, stranger.key)


def test_parse_private_key_round_trip(pki: Pki) -> None:
    """key_to_pem() writes unencrypted PKCS#8 that parse_private_key() reads back."""
    leaf = pki.leaf("a.example.com", key="ec384")
    pem = cx.key_to_pem(leaf.key)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert cx.key_matches(leaf.cert, cx.parse_private_key(pem))


def test_parse_private_key_errors(pki: Pki) -> None:
    """Empty, encrypted, DSA, certificate-instead-of-key and garbage keys are InvalidPrivateKey."""
    leaf = pki.leaf("a.example.com")
    encrypted = leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()
    dsa_pem = dsa.generate_private_key(2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    p192 = ec.generate_private_key(ec.SECP192R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    broken = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    cases = {"": "empty", encrypted: "encrypted", dsa_pem: "DSA", p192: "curve",
             leaf.cert_pem: "certificate", "garbage": "not a PEM private key",
             broken: "unreadable"}
    for pem, why in cases.items():
        with pytest.raises(cx.CertificateError) as err:
            cx.parse_private_key(pem)
        assert err.value.code == "InvalidPrivateKey"
        assert why in str(err.value)


# --- parsing and chain links ----------------------------------------------------------------

def test_parse_chain_leaf_first(pki: Pki) -> None:
    """parse_chain() returns every certificate of the PEM in order, leaf first."""
    leaf = pki.leaf("a.example.com")
    assert cx.parse_chain(leaf.chain_pem) == [leaf.cert, pki.intermediate.cert]
    assert cx.to_pem(cx.parse_chain(leaf.chain_pem)) == leaf.chain_pem


def _parse_error(text: str) -> str:
    with pytest.raises(cx.CertificateError) as err:
        cx.parse_chain(text)
    assert err.value.code == "InvalidCertificate"
    assert isinstance(err.value, ValueError)
    return str(err.value)


def test_parse_chain_empty_and_garbage() -> None:
    """Empty input and garbage are InvalidCertificate with a message saying which."""
    assert "empty" in _parse_error("")
    assert "empty" in _parse_error("  \n")
    assert "not PEM" in _parse_error("hello, this is not a certificate")
    bad_body = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert "unreadable certificate PEM" in _parse_error(bad_body)


def test_parse_chain_der_is_named(pki: Pki) -> None:
    """DER bytes (decoded latin-1, or base64 without headers) are reported as DER."""
    der = pki.leaf("a.example.com").cert.public_bytes(serialization.Encoding.DER)
    assert "looks like DER" in _parse_error(der.decode("latin-1"))
    assert "looks like DER" in _parse_error(base64.b64encode(der).decode())


def test_parse_chain_pkcs12_is_named(pki: Pki) -> None:
    """A PKCS#12 blob, raw or base64, is reported as PKCS#12."""
    leaf = pki.leaf("a.example.com")
    for encryption in (serialization.NoEncryption(),
                       serialization.BestAvailableEncryption(b"pw")):
        blob = pkcs12.serialize_key_and_certificates(
            b"a", leaf.key, leaf.cert, [pki.intermediate.cert], encryption)
        assert "PKCS#12" in _parse_error(blob.decode("latin-1"))
        assert "PKCS#12" in _parse_error(base64.encodebytes(blob).decode())


def test_parse_chain_private_key_is_named(pki: Pki) -> None:
    """A private key PEM given as the certificate is reported as a private key."""
    assert "private key" in _parse_error(pki.leaf("a.example.com").key_pem)


def test_chain_links_ok(pki: Pki) -> None:
    """Leaf → intermediate → root, each signed by the next, passes."""
    leaf = pki.leaf("a.example.com")
    cx.check_chain_links([leaf.cert, pki.intermediate.cert, pki.root.cert])
    cx.check_chain_links([leaf.cert])


def test_chain_links_wrong_order_names_position(pki: Pki) -> None:
    """A chain out of order is InvalidChain naming the positions and CNs that do not link."""
    leaf = pki.leaf("a.example.com")
    with pytest.raises(cx.CertificateError) as err:
        cx.check_chain_links([leaf.cert, pki.root.cert, pki.intermediate.cert])
    assert err.value.code == "InvalidChain"
    assert str(err.value) == (
        "certificate 1 (CN=a.example.com) is not signed by certificate 2 "
        "(CN=certwatch test root CA)"
    )
    with pytest.raises(cx.CertificateError, match=r"certificate 2 \(CN=certwatch test inter"):
        cx.check_chain_links([leaf.cert, pki.intermediate.cert, leaf.cert])


def test_chain_links_same_name_wrong_key(pki: Pki) -> None:
    """An issuer with the right name but another key fails: the signature is checked."""
    impostor = issue(common_name="certwatch test intermediate CA", ca=True)
    with pytest.raises(cx.CertificateError, match="certificate 1 .* certificate 2"):
        cx.check_chain_links([pki.leaf("a.example.com").cert, impostor.cert])


def test_chain_links_accept_sha1_signed_link(rsa_pki: Pki) -> None:
    """A SHA-1-signed leaf still links to its issuer (verified by hand, not refused)."""
    sha1_leaf = _sha1_resign(rsa_pki.leaf("old.example.com"), rsa_pki.intermediate)
    cx.check_chain_links([sha1_leaf, rsa_pki.intermediate.cert])


# --- warnings -------------------------------------------------------------------------------

def test_warning_weak_key(pki: Pki) -> None:
    """An RSA-1024 leaf gives WeakKey; is_weak() agrees."""
    leaf = pki.leaf("a.example.com", key="rsa1024")
    assert cx.is_weak(leaf.cert)
    assert not cx.is_weak(pki.leaf("a.example.com", key="rsa2048").cert)
    assert cx.cert_warnings([leaf.cert, pki.intermediate.cert], [pki.root.cert], AT) == ["WeakKey"]


def test_warning_sha1_signature(rsa_pki: Pki) -> None:
    """A SHA-1-signed (non-root) certificate gives Sha1Signature."""
    sha1_leaf = _sha1_resign(rsa_pki.leaf("old.example.com"), rsa_pki.intermediate)
    assert cx.describe(sha1_leaf).signature_algorithm == "sha1WithRSAEncryption"
    chain = [sha1_leaf, rsa_pki.intermediate.cert]
    assert cx.cert_warnings(chain, [rsa_pki.root.cert], AT) == ["Sha1Signature"]


def test_warning_incomplete_chain(pki: Pki) -> None:
    """A leaf without its intermediate is IncompleteChain even when the root is known."""
    leaf = pki.leaf("a.example.com")
    assert cx.cert_warnings([leaf.cert], [pki.root.cert], AT) == ["IncompleteChain"]
    assert cx.cert_warnings([leaf.cert], [], AT) == ["IncompleteChain"]


def test_warning_complete_chain(pki: Pki) -> None:
    """Leaf + intermediate with the root known, a full chain, or a self-signed cert: no warning."""
    leaf = pki.leaf("a.example.com")
    assert cx.cert_warnings([leaf.cert, pki.intermediate.cert], [pki.root.cert], AT) == []
    assert cx.cert_warnings([leaf.cert, pki.intermediate.cert, pki.root.cert], [], AT) == []
    assert cx.cert_warnings([issue("self.example.com").cert], [], AT) == []


def test_warning_not_strictly_compliant_without_aki() -> None:
    """A chain without AKIs is complete but NotStrictlyCompliant, saying why."""
    lax = make_pki("lax", aki=False)
    chain = [lax.leaf("a.example.com").cert, lax.intermediate.cert]
    assert cx.cert_warnings(chain, [lax.root.cert], AT) == [
        "NotStrictlyCompliant: certificate 1 (CN=a.example.com): Missing Authority Key Identifier",
        "NotStrictlyCompliant: certificate 2 (CN=lax intermediate CA): "
        "Missing Authority Key Identifier",
    ]


def test_warning_expired_chain_is_not_incomplete(pki: Pki) -> None:
    """An expired upload with its intermediate is not called IncompleteChain."""
    chain = [pki.leaf("a.example.com", days=1).cert, pki.intermediate.cert]
    assert cx.cert_warnings(chain, [pki.root.cert], AT + 2 * DAY) == []


def test_warning_root_matched_by_signature_not_only_name(pki: Pki) -> None:
    """A known root with the issuer's name but another key does not complete the chain."""
    fake_root = issue(common_name="certwatch test root CA", ca=True)
    chain = [pki.leaf("a.example.com").cert, pki.intermediate.cert]
    assert cx.cert_warnings(chain, [fake_root.cert], AT) == ["IncompleteChain"]


def test_warnings_sorted_unique(pki: Pki) -> None:
    """Several problems give each code once, sorted."""
    weak = pki.leaf("a.example.com", key="rsa1024")
    weak2 = weak.issue("b.example.com", key="rsa1024")
    assert cx.cert_warnings([weak2.cert, weak.cert], [], AT) == ["IncompleteChain", "WeakKey"]


# --- status and days ------------------------------------------------------------------------

def test_status_boundaries() -> None:
    """Expired at not_after exactly; Expiring at exactly N days; Valid at N days + 1 s."""
    start = NOW - 100 * DAY
    assert cx.status(start, NOW, NOW, 30) == "Expired"
    assert cx.status(start, NOW - dt.timedelta(seconds=1), NOW, 30) == "Expired"
    assert cx.status(start, NOW + 30 * DAY, NOW, 30) == "Expiring"
    assert cx.status(start, NOW + 30 * DAY + dt.timedelta(seconds=1), NOW, 30) == "Valid"
    assert cx.status(NOW + dt.timedelta(seconds=1), NOW + 90 * DAY, NOW, 30) == "NotYetValid"
    assert cx.status(NOW, NOW + 90 * DAY, NOW, 30) == "Valid"


def test_days_remaining_floors() -> None:
    """days_remaining() floors: 6.5 d → 6, 30 d → 30, 0 → 0, -0.5 d → -1."""
    assert cx.days_remaining(NOW + 6.5 * DAY, NOW) == 6
    assert cx.days_remaining(NOW + 30 * DAY, NOW) == 30
    assert cx.days_remaining(NOW, NOW) == 0
    assert cx.days_remaining(NOW - 0.5 * DAY, NOW) == -1
    assert cx.days_remaining(NOW - 2 * DAY, NOW) == -2


# --- trust roots ----------------------------------------------------------------------------

def test_load_bundle_and_system_roots(tmp_path: object, pki: Pki) -> None:
    """load_bundle() reads every certificate of a PEM file; system_roots() returns a list."""
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "bundle.pem"
    path.write_text(cx.to_pem([pki.root.cert, pki.intermediate.cert]) + "junk\n")
    assert cx.load_bundle(str(path)) == [pki.root.cert, pki.intermediate.cert]
    roots = cx.system_roots()
    assert isinstance(roots, list)
    assert all(isinstance(c, x509.Certificate) for c in roots)
    assert cx.system_roots() == roots
