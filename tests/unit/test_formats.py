"""PKCS#12 and DER read into the PEM the upload rules check (`certwatch.pki.formats`)."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certwatch.pki import formats
from tests.certfactory import Issued, make_pki


def _pfx(leaf: Issued | None, extra: list[x509.Certificate], password: bytes | None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(
        b"test",
        leaf.key if leaf else None,
        leaf.cert if leaf else None,
        extra,
        encryption,  # type: ignore[arg-type]
    )


def _certs(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


@pytest.mark.parametrize("password", [b"s3cret", None])
def test_pkcs12_gives_the_leaf_its_chain_in_order_and_the_key(password: bytes | None) -> None:
    """A PFX (with or without a password) holding the root before the intermediate comes out
    leaf, intermediate, root, with the leaf's key."""
    pki = make_pki()
    leaf = pki.leaf("a.example.com")
    raw = _pfx(leaf, [pki.root.cert, pki.intermediate.cert], password)
    pem = formats.from_pkcs12(raw, password.decode() if password else None)
    assert _certs(pem.chain_pem) == [leaf.cert, pki.intermediate.cert, pki.root.cert]
    assert pem.key_pem is not None
    key = serialization.load_pem_private_key(pem.key_pem.encode(), None)
    assert key.public_key() == leaf.key.public_key()


@pytest.mark.parametrize("given", ["wrong", None])
def test_wrong_or_missing_password_is_invalid_password(given: str | None) -> None:
    """A PFX the given password (or none) cannot open is InvalidPassword, password not shown."""
    leaf = make_pki().leaf("a.example.com")
    with pytest.raises(formats.FormatError) as caught:
        formats.from_pkcs12(_pfx(leaf, [], b"right-one"), given)
    assert caught.value.code == "InvalidPassword"
    assert "wrong" not in caught.value.message and "right-one" not in caught.value.message


def test_not_a_pfx_is_invalid_certificate() -> None:
    """Bytes that are no PFX at all are InvalidCertificate, not a password problem."""
    leaf = make_pki().leaf("a.example.com")
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(formats.FormatError) as caught:
        formats.from_pkcs12(der, "x")
    assert caught.value.code == "InvalidCertificate"


def test_pkcs12_without_a_key_gives_the_chain_and_no_key() -> None:
    """A key-less PFX (a CA bundle) gives its certificates, lowest first, and no key."""
    pki = make_pki()
    pem = formats.from_pkcs12(_pfx(None, [pki.root.cert, pki.intermediate.cert], None), None)
    assert _certs(pem.chain_pem) == [pki.intermediate.cert, pki.root.cert]
    assert pem.key_pem is None


def test_pkcs12_with_two_leaves_is_refused() -> None:
    """A PFX with the key's leaf and another end certificate is MultipleLeafCertificates."""
    pki = make_pki()
    leaf, other = pki.leaf("a.example.com"), pki.leaf("b.example.com")
    with pytest.raises(formats.FormatError) as caught:
        formats.from_pkcs12(_pfx(leaf, [pki.intermediate.cert, other.cert], None), None)
    assert caught.value.code == "MultipleLeafCertificates"
    assert "CN=b.example.com" in caught.value.message
    with pytest.raises(formats.FormatError) as keyless:
        formats.from_pkcs12(_pfx(None, [leaf.cert, other.cert], None), None)
    assert keyless.value.code == "MultipleLeafCertificates"


def test_der_leaf_becomes_pem() -> None:
    """A DER certificate comes out as the same certificate in PEM."""
    leaf = make_pki().leaf("a.example.com")
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    assert _certs(formats.from_der(der)) == [leaf.cert]


def test_der_upload_takes_a_pem_or_der_key() -> None:
    """`to_pem` for DER decodes the base64 leaf and accepts the key as PEM or base64 DER."""
    leaf = make_pki().leaf("a.example.com")
    cert_b64 = base64.b64encode(leaf.cert.public_bytes(serialization.Encoding.DER)).decode()
    der_key = leaf.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for key in (leaf.key_pem, base64.b64encode(der_key).decode()):
        pem = formats.to_pem("DER", cert_b64, key, None)
        assert _certs(pem.chain_pem) == [leaf.cert]
        assert pem.key_pem is not None and "PRIVATE KEY" in pem.key_pem


def test_a_pfx_sent_as_der_is_named() -> None:
    """A PFX sent with CertificateFormat DER is refused with a message that names PKCS12."""
    leaf = make_pki().leaf("a.example.com")
    with pytest.raises(formats.FormatError) as caught:
        formats.from_der(_pfx(leaf, [], None))
    assert (caught.value.code, "PKCS12" in caught.value.message) == ("InvalidCertificate", True)


@pytest.mark.parametrize(
    ("fmt", "certificate", "key", "password", "code"),
    [
        ("PEM", "x", None, "pw", "InvalidParameter"),
        ("DER", "not base64!", None, None, "InvalidCertificate"),
        ("PKCS12", "-----BEGIN CERTIFICATE-----", None, None, "InvalidCertificate"),
        ("PKCS12", "AAAA", "-----BEGIN PRIVATE KEY-----", None, "InvalidParameter"),
        ("DER", "MAo=", "%%%", None, "InvalidPrivateKey"),
    ],
)
def test_to_pem_refusals(
    fmt: formats.CertificateFormat, certificate: str, key: str | None, password: str | None,
    code: str,
) -> None:
    """A Password outside PKCS12, bad base64, PEM sent as PKCS12, a key beside a PFX and an
    unreadable DER key each get their Code."""
    with pytest.raises(formats.FormatError) as caught:
        formats.to_pem(fmt, certificate, key, password)
    assert caught.value.code == code
