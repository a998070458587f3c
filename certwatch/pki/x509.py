"""The x509 layer: parse PEM, check keys and chains, describe certificates, warn, verify.

Pure functions over `cryptography` objects; anything time-dependent takes `now`.
Roots live in `certwatch.pki.truststore` and are re-exported; the chain rule is `pki.verify`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from certwatch.pki.formats import looks_like_pfx
from certwatch.pki.truststore import load_bundle, system_roots
from certwatch.pki.verify import verify_chain

__all__ = [
    "CertInfo",
    "CertificateError",
    "PrivateKey",
    "cert_warnings",
    "check_chain_links",
    "common_name",
    "days_remaining",
    "describe",
    "dns_names",
    "fingerprint",
    "is_weak",
    "key_matches",
    "key_to_pem",
    "load_bundle",
    "parse_chain",
    "parse_private_key",
    "signed_by",
    "status",
    "system_roots",
    "to_pem",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}\.?$", re.IGNORECASE)
_SIG_NAMES = {
    SignatureAlgorithmOID.RSA_WITH_MD5: "md5WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "sha1WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA224: "sha224WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "sha256WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "sha384WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "sha512WithRSAEncryption",
    SignatureAlgorithmOID.RSASSA_PSS: "RSASSA-PSS",
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "ecdsa-with-SHA1",
    SignatureAlgorithmOID.ECDSA_WITH_SHA224: "ecdsa-with-SHA224",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
    SignatureAlgorithmOID.ED25519: "ed25519",
    SignatureAlgorithmOID.ED448: "ed448",
}


class CertificateError(ValueError):
    """A certificate/key problem with the SPEC's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _describe_non_pem(text: str) -> str:
    """What a blob without PEM certificates most likely is, for the error message."""
    raw: bytes | None = None
    if any(ord(ch) > 0x7E or (ord(ch) < 0x20 and ch not in "\r\n\t") for ch in text):
        raw = text.encode("latin-1", errors="replace")
    else:
        compact = "".join(text.split())
        if len(compact) >= 64 and re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", compact):
            try:
                raw = base64.b64decode(compact, validate=True)
            except (binascii.Error, ValueError):
                raw = None
    if raw is not None and looks_like_pfx(raw):
        return "input is a PKCS#12 (PFX) blob; send it base64 with CertificateFormat PKCS12"
    if raw is not None and raw[:1] == b"\x30":
        return "input looks like DER (binary) data; send it base64 with CertificateFormat DER"
    if raw is not None:
        return "input is binary (non-ASCII) data, not PEM"
    if "PRIVATE KEY-----" in text:
        return "input is a private key where a certificate was expected"
    if "-----BEGIN" in text:
        kinds = sorted(set(re.findall(r"-----BEGIN ([A-Z0-9 #]+)-----", text)))
        return f"no CERTIFICATE block in the PEM (found: {', '.join(kinds)})"
    return "input is not PEM (no -----BEGIN CERTIFICATE----- block)"


def parse_chain(pem: str) -> list[x509.Certificate]:
    """Certificates of a PEM chain, leaf first; CertificateError("InvalidCertificate") if not."""
    if not pem or not pem.strip():
        raise CertificateError("InvalidCertificate", "certificate is empty")
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise CertificateError("InvalidCertificate", _describe_non_pem(pem))
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("utf-8", errors="replace"))
    except ValueError as exc:
        raise CertificateError("InvalidCertificate", f"unreadable certificate PEM: {exc}") from exc
    return certs


def parse_private_key(pem: str) -> PrivateKey:
    """An unencrypted RSA, EC (P-256/384/521) or Ed25519 key; else CertificateError."""

    def fail(why: str) -> CertificateError:
        return CertificateError("InvalidPrivateKey", why)

    if not pem or not pem.strip():
        raise fail("private key is empty")
    if "-----BEGIN CERTIFICATE-----" in pem and "PRIVATE KEY-----" not in pem:
        raise fail("input is a certificate where a private key was expected")
    if "PRIVATE KEY-----" not in pem:
        raise fail("input is not a PEM private key (no -----BEGIN ... PRIVATE KEY----- block)")
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8", errors="replace"), None)
    except TypeError as exc:
        raise fail("private key is encrypted; upload it unencrypted") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise fail(f"unreadable private key: {exc}") from exc
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, _CURVES):
            return key
        raise fail(f"unsupported EC curve {key.curve.name}; use P-256 or P-384")
    raise fail(
        f"unsupported key type {type(key).__name__.removesuffix('PrivateKey')}; "
        "use RSA, EC P-256/P-384 or Ed25519"
    )


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """True when `key` is the private half of the certificate's public key."""
    return _spki(cert.public_key()) == _spki(key.public_key())


def _label(index: int, cert: x509.Certificate) -> str:
    cn = common_name(cert)
    return f"certificate {index} ({'CN=' + cn if cn else cert.subject.rfc4514_string()})"


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Issuer name matches and the signature verifies (also for SHA-1, which the API refuses)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (InvalidSignature, TypeError):
        return False
    except (ValueError, UnsupportedAlgorithm):
        pass  # e.g. "Unsupported signature algorithm" (SHA-1/MD5): verify by hand
    pub, sig, tbs = issuer.public_key(), cert.signature, cert.tbs_certificate_bytes
    algo = cert.signature_hash_algorithm
    try:
        if isinstance(pub, rsa.RSAPublicKey) and algo is not None:
            params = cert.signature_algorithm_parameters
            pad = params if isinstance(params, padding.PSS) else padding.PKCS1v15()
            pub.verify(sig, tbs, pad, algo)
        elif isinstance(pub, ec.EllipticCurvePublicKey) and algo is not None:
            pub.verify(sig, tbs, ec.ECDSA(algo))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def check_chain_links(chain: list[x509.Certificate]) -> None:
    """Raise CertificateError("InvalidChain") unless each cert[i] is signed by cert[i+1]."""
    for i in range(len(chain) - 1):
        if not signed_by(chain[i], chain[i + 1]):
            raise CertificateError(
                "InvalidChain",
                f"{_label(i + 1, chain[i])} is not signed by {_label(i + 2, chain[i + 1])}",
            )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(cert: x509.Certificate) -> str:
    """The subject's first CN, or "" when it has none."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        return ""
    value = cns[0].value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The SAN DNS names; without any, the CN when it looks like a host name."""
    san = _san(cert)
    return host_names(
        tuple(san.get_values_for_type(x509.DNSName)) if san else (), common_name(cert)
    )


def host_names(sans: Sequence[str], cn: str) -> tuple[str, ...]:
    """The DNS names among `sans` (IP entries dropped); without any, `cn` if it is a host name."""
    names = tuple(name for name in sans if not is_ip(name))
    if names:
        return names
    return (cn,) if not is_ip(cn) and _HOST.match(cn) and "." in cn.strip(".") else ()


def is_ip(text: str) -> bool:
    """True when `text` is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class CertInfo:
    """The fields of the SPEC's Certificate object that come from the certificate itself."""

    common_name: str
    sans: tuple[str, ...]
    issuer: str
    subject: str
    serial_number: str
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_algorithm: str
    key_size: int
    signature_algorithm: str
    is_ca: bool
    self_signed: bool


def _key_info(cert: x509.Certificate) -> tuple[str, int]:
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        return "RSA", pub.key_size
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return "EC", pub.curve.key_size
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(pub, ed448.Ed448PublicKey):
        return "Ed448", 448
    if isinstance(pub, dsa.DSAPublicKey):
        return "DSA", pub.key_size
    return type(pub).__name__.removesuffix("PublicKey"), 0


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def describe(cert: x509.Certificate) -> CertInfo:
    """Everything the inventory shows about one certificate."""
    san = _san(cert)
    sans = tuple(san.get_values_for_type(x509.DNSName)) if san else ()
    sans += tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress)) if san else ()
    algorithm, size = _key_info(cert)
    oid = cert.signature_algorithm_oid
    return CertInfo(
        common_name=common_name(cert),
        sans=sans,
        issuer=cert.issuer.rfc4514_string(),
        subject=cert.subject.rfc4514_string(),
        serial_number=format(cert.serial_number, "x"),
        fingerprint=fingerprint(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_algorithm=algorithm,
        key_size=size,
        signature_algorithm=_SIG_NAMES.get(oid, oid.dotted_string),
        is_ca=_is_ca(cert),
        self_signed=signed_by(cert, cert),
    )


def is_weak(cert: x509.Certificate) -> bool:
    """True for an RSA/DSA key under 2048 bits or an EC key under 256 bits."""
    algorithm, size = _key_info(cert)
    return (algorithm in ("RSA", "DSA") and size < 2048) or (algorithm == "EC" and size < 256)


def cert_warnings(
    chain: list[x509.Certificate], known_roots: Sequence[x509.Certificate], now: dt.datetime
) -> list[str]:
    """Sorted unique warnings: WeakKey, Sha1Signature (SHA-1 or MD5, non-root), IncompleteChain
    (no path to a known root), `NotStrictlyCompliant: <finding>` (one per strict finding).

    The chain rule is `verify_chain` at `now`; a self-signed certificate the upload carries
    counts as a root (the uploader names it), and an expired chain is not an incomplete one.
    """
    warnings: set[str] = set()
    for cert in chain:
        if is_weak(cert):
            warnings.add("WeakKey")
        weak_hash = isinstance(cert.signature_hash_algorithm, hashes.SHA1 | hashes.MD5)
        if weak_hash and not signed_by(cert, cert):
            warnings.add("Sha1Signature")
    if chain:
        carried = [cert for cert in chain if signed_by(cert, cert)]
        verdict = verify_chain(chain, [*known_roots, *carried], now)
        if verdict.incomplete:
            warnings.add("IncompleteChain")
        warnings.update(f"NotStrictlyCompliant: {finding}" for finding in verdict.findings)
    return sorted(warnings)


def status(
    not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime, expiring_days: int
) -> str:
    """NotYetValid, Expired (now >= not_after), Expiring (<= expiring_days left) or Valid."""
    if now < not_before:
        return "NotYetValid"
    if now >= not_after:
        return "Expired"
    if not_after - now <= dt.timedelta(days=expiring_days):
        return "Expiring"
    return "Valid"


def days_remaining(not_after: dt.datetime, now: dt.datetime) -> int:
    """Whole days left, rounded down (6.5 → 6, -0.5 → -1)."""
    return (not_after - now) // dt.timedelta(days=1)


def to_pem(certs: Sequence[x509.Certificate]) -> str:
    """The certificates as one PEM string, in the order given."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def key_to_pem(key: PrivateKey) -> str:
    """The key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
