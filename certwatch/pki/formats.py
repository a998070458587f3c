"""Certificates from other tools, as the PEM the upload rules read: PKCS#12 (PFX) and DER.

`to_pem` turns an upload's `Certificate` (and `PrivateKey`) in one of the `CertificateFormat`s
into a PEM chain, leaf first, and a PEM key; the upload rules (key match, chain links, CA)
then judge it as they judge PEM. Binary bodies travel as base64 text. A refusal is a
`CertificateError` with the API's Code; no message carries the password or the key.

Only `cryptography` here (no `pki.x509`), so `pki.x509` can name a PFX it was sent as PEM.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

CertificateFormat = Literal["PEM", "PKCS12", "DER"]
_ID_DATA = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1, PKCS#7 data


class FormatError(ValueError):
    """A PKCS#12 or DER input that cannot be read as an upload, with the API's Code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PemUpload:
    """An upload as PEM: the chain, leaf first, and the key when there is one."""

    chain_pem: str
    key_pem: str | None


def looks_like_pfx(raw: bytes) -> bool:
    """Whether `raw` starts like a PFX: SEQUENCE { INTEGER 3, ContentInfo (id-data) … }."""
    return raw[:1] == b"\x30" and b"\x02\x01\x03" in raw[2:8] and _ID_DATA in raw[:40]


def decode_base64(text: str, what: str) -> bytes:
    """The bytes of a base64 body (whitespace allowed); InvalidCertificate naming `what`."""
    if "-----BEGIN" in text:
        raise FormatError(
            "InvalidCertificate", f"{what} is PEM text; send it with CertificateFormat PEM"
        )
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError("InvalidCertificate", f"{what} is not base64 text") from exc
    if not raw:
        raise FormatError("InvalidCertificate", f"{what} is empty")
    return raw


def _name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = cns[0].value if cns else cert.subject.rfc4514_string()
    return f"CN={value.decode() if isinstance(value, bytes) else value}"


def _pem(certs: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _spki(cert_or_key: x509.Certificate | PrivateKeyTypes) -> bytes:
    public = cert_or_key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def order_chain(
    leaf: x509.Certificate, others: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """`leaf` then its issuers among `others`, by name, up to a self-signed one or the last
    found; FormatError("MultipleLeafCertificates") when some of `others` are not on that path."""
    chain, rest = [leaf], list(others)
    while chain[-1].issuer != chain[-1].subject:
        parent = next((c for c in rest if c.subject == chain[-1].issuer), None)
        if parent is None:
            break
        chain.append(parent)
        rest.remove(parent)
    if rest:
        raise FormatError(
            "MultipleLeafCertificates",
            f"the PKCS#12 holds certificates that are not on the chain of {_name(leaf)}: "
            f"{', '.join(_name(c) for c in rest)}; export one certificate with its chain",
        )
    return chain


def _bottom(certs: Sequence[x509.Certificate]) -> x509.Certificate:
    """The one certificate that issues no other of `certs` (the leaf of a key-less bundle)."""
    bottoms = [
        c for c in certs if not any(o.issuer == c.subject and o is not c for o in certs)
    ]
    if len(bottoms) != 1:
        raise FormatError(
            "MultipleLeafCertificates",
            f"the PKCS#12 holds no private key and {len(bottoms)} end certificates "
            f"({', '.join(_name(c) for c in bottoms) or 'a loop'}); export one certificate "
            "with its chain",
        )
    return bottoms[0]


def from_pkcs12(raw: bytes, password: str | None) -> PemUpload:
    """A PFX's certificate, chain and key as PEM. InvalidPassword when the password does not
    open it (none given for an encrypted one, too); InvalidCertificate when it is no PFX."""
    secret = password.encode() if password else None
    try:
        bundle = pkcs12.load_pkcs12(raw, secret)
    except ValueError as exc:
        if looks_like_pfx(raw):
            given = "the password given" if password else "no password (Password not given)"
            raise FormatError(
                "InvalidPassword", f"the PKCS#12 (PFX) cannot be opened with {given}"
            ) from exc
        raise FormatError(
            "InvalidCertificate", "the input is not a PKCS#12 (PFX) file"
        ) from exc
    except UnsupportedAlgorithm as exc:
        raise FormatError(
            "InvalidCertificate", f"the PKCS#12 uses an algorithm this OpenSSL lacks: {exc}"
        ) from exc
    held = ([bundle.cert] if bundle.cert else []) + bundle.additional_certs
    certs = [c.certificate for c in held]
    if not certs:
        raise FormatError("InvalidCertificate", "the PKCS#12 holds no certificate")
    key = bundle.key
    if key is None:
        leaf = _bottom(certs)
        return PemUpload(_pem(order_chain(leaf, [c for c in certs if c is not leaf])), None)
    mine = next((c for c in certs if _spki(c) == _spki(key)), None)
    if mine is None:
        raise FormatError(
            "KeyCertificateMismatch",
            "the PKCS#12's private key belongs to none of its certificates",
        )
    chain = order_chain(mine, [c for c in certs if c is not mine])
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return PemUpload(_pem(chain), key_pem)


def from_der(raw: bytes) -> str:
    """One DER certificate as PEM; InvalidCertificate (saying what it is) when it is not."""
    if looks_like_pfx(raw):
        raise FormatError(
            "InvalidCertificate",
            "the input is a PKCS#12 (PFX); send it as CertificateFormat PKCS12",
        )
    try:
        cert = x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise FormatError("InvalidCertificate", "the input is not a DER certificate") from exc
    return _pem([cert])


def der_key_to_pem(raw: bytes) -> str:
    """An unencrypted DER private key (PKCS#8 or traditional) as PEM; InvalidPrivateKey."""
    try:
        key = serialization.load_der_private_key(raw, None)
    except TypeError as exc:
        raise FormatError(
            "InvalidPrivateKey", "the private key is encrypted; send it unencrypted"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise FormatError("InvalidPrivateKey", "the private key is not a DER key") from exc
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def to_pem(
    fmt: CertificateFormat, certificate: str, private_key: str | None, password: str | None
) -> PemUpload:
    """An upload in `fmt` as PEM. PKCS12: `certificate` is the base64 PFX, which carries the
    key (a `private_key` besides is refused). DER: `certificate` is the base64 DER leaf;
    `private_key` PEM, or base64 DER. `password` is for PKCS12 only."""
    if password is not None and fmt != "PKCS12":
        raise FormatError("InvalidParameter", "Password is only for CertificateFormat PKCS12")
    if fmt == "PEM":
        return PemUpload(certificate, private_key)
    if fmt == "PKCS12":
        if private_key:
            raise FormatError(
                "InvalidParameter",
                "PrivateKey is refused with CertificateFormat PKCS12: the PFX carries the key",
            )
        return from_pkcs12(decode_base64(certificate, "Certificate"), password)
    key = private_key
    if key and key.strip() and "-----BEGIN" not in key:
        try:
            raw_key = decode_base64(key, "PrivateKey")
        except FormatError as exc:
            raise FormatError("InvalidPrivateKey", exc.message) from exc
        key = der_key_to_pem(raw_key)
    return PemUpload(from_der(decode_base64(certificate, "Certificate")), key)
