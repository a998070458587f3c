"""Is a certificate revoked? Pure checks of a CRL or an OCSP response: no network, no store.

Rules (SPEC §5):

- Sources are read from the certificate: HTTP(S) URIs of its CRL distribution points, and
  HTTP(S) OCSP responders of its Authority Information Access. The CRL is preferred; OCSP is
  used where no CRL is named.
- A CRL counts only when its issuer name is the certificate's issuer, its signature verifies
  with the issuer's key, and it is current at `now` (thisUpdate not in the future beyond
  `CLOCK_SKEW`, nextUpdate not passed).
- An OCSP response counts only when it is `successful`, answers for this certificate (serial
  and issuer name/key hashes), is signed by the issuer itself or by a responder certificate
  the issuer signed with the OCSPSigning extended key usage, and is current at `now`.
- Anything else raises `RevocationUnavailable`: the caller reports a warning, never a
  revocation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from certwatch.pki.x509 import common_name, signed_by

Source = Literal["crl", "ocsp"]
CLOCK_SKEW = dt.timedelta(minutes=5)
UNSPECIFIED = "unspecified"


class RevocationUnavailable(Exception):
    """The revocation source could not tell (unreachable, invalid, stale, wrong signer)."""


@dataclass(frozen=True)
class Verdict:
    """What a valid CRL or OCSP response says of one certificate."""

    source: Source
    revoked: bool
    revoked_at: dt.datetime | None = None
    reason: str | None = None


def _http(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The HTTP(S) CRL distribution points the certificate names, in order."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [
        name.value
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier) and _http(name.value)
    ]


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The HTTP(S) OCSP responders of the certificate's Authority Information Access."""
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        item.access_location.value
        for item in access
        if item.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(item.access_location, x509.UniformResourceIdentifier)
        and _http(item.access_location.value)
    ]


def is_self_signed(cert: x509.Certificate) -> bool:
    """A root (or any self-signed certificate): nothing above it can revoke it."""
    return cert.issuer == cert.subject and signed_by(cert, cert)


def find_issuer(
    cert: x509.Certificate, candidates: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    """The first candidate whose name is the certificate's issuer and whose key signed it."""
    return next((c for c in candidates if signed_by(cert, c)), None)


def _about(cert: x509.Certificate) -> str:
    return common_name(cert) or cert.subject.rfc4514_string()


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from DER or PEM bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise RevocationUnavailable(f"not a CRL: {exc}") from exc


def check_crl(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, now: dt.datetime
) -> None:
    """Raise `RevocationUnavailable` unless `crl` is the issuer's, signed by it, and current."""
    if crl.issuer != issuer.subject:
        raise RevocationUnavailable(
            f"the CRL is issued by {crl.issuer.rfc4514_string()}, not by the certificate's "
            f"issuer {issuer.subject.rfc4514_string()}"
        )
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise RevocationUnavailable(f"the CRL's signature cannot be checked: {exc}") from exc
    if not valid:
        raise RevocationUnavailable(f"the CRL's signature does not verify with {_about(issuer)}")
    if crl.last_update_utc > now + CLOCK_SKEW:
        raise RevocationUnavailable(f"the CRL is not valid yet (thisUpdate {crl.last_update_utc})")
    next_update = crl.next_update_utc
    if next_update is not None and next_update < now:
        raise RevocationUnavailable(f"the CRL is stale (nextUpdate {next_update})")


def _reason_text(reason: x509.ReasonFlags | None) -> str:
    return reason.value if reason is not None else UNSPECIFIED


def crl_verdict(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> Verdict:
    """Whether a (checked) CRL lists the certificate's serial number, and when and why."""
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is None:
        return Verdict("crl", revoked=False)
    try:
        reason: x509.ReasonFlags | None = entry.extensions.get_extension_for_class(
            x509.CRLReason
        ).value.reason
    except x509.ExtensionNotFound:
        reason = None
    return Verdict("crl", True, entry.revocation_date_utc, _reason_text(reason))


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """A DER OCSP request for the certificate (SHA-1 CertID, as every responder understands)."""
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    return request.public_bytes(serialization.Encoding.DER)


def _verify(
    key: CertificatePublicKeyTypes,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | None,
) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _cert_id(
    cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    """(issuer name hash, issuer key hash) of the certificate's OCSP CertID under `algorithm`."""
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return request.issuer_name_hash, request.issuer_key_hash


def _responder_is(cert: x509.Certificate, response: ocsp.OCSPResponse) -> bool:
    if response.responder_name is not None:
        return cert.subject == response.responder_name
    key_hash = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    return response.responder_key_hash == key_hash


def _signer(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    """The issuer, or a delegated responder the issuer signed for OCSP signing."""
    if _responder_is(issuer, response):
        return issuer
    for delegate in response.certificates:
        if not _responder_is(delegate, response) or not signed_by(delegate, issuer):
            continue
        try:
            usages = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in usages:
            return delegate
    raise RevocationUnavailable(
        f"the OCSP response is signed neither by {_about(issuer)} nor by a responder it "
        "authorised (OCSPSigning)"
    )


def _single(
    response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    for single in response.responses:
        expected = _cert_id(cert, issuer, single.hash_algorithm)
        if single.serial_number == cert.serial_number and expected == (
            single.issuer_name_hash,
            single.issuer_key_hash,
        ):
            return single
    raise RevocationUnavailable(f"the OCSP response does not answer for {_about(cert)}")


def ocsp_verdict(
    data: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
) -> Verdict:
    """What a DER OCSP response says of the certificate, once checked (rules above)."""
    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError as exc:
        raise RevocationUnavailable(f"not an OCSP response: {exc}") from exc
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RevocationUnavailable(
            f"the OCSP responder answered {response.response_status.name.lower()}"
        )
    signer = _signer(response, issuer)
    if not _verify(
        signer.public_key(),
        response.signature,
        response.tbs_response_bytes,
        response.signature_hash_algorithm,
    ):
        raise RevocationUnavailable(
            f"the OCSP response's signature does not verify with {_about(signer)}"
        )
    single = _single(response, cert, issuer)
    if single.this_update_utc > now + CLOCK_SKEW:
        raise RevocationUnavailable(
            f"the OCSP response is not valid yet (thisUpdate {single.this_update_utc})"
        )
    next_update = single.next_update_utc
    if next_update is not None and next_update + CLOCK_SKEW < now:
        raise RevocationUnavailable(f"the OCSP response is stale (nextUpdate {next_update})")
    status = single.certificate_status
    if status == ocsp.OCSPCertStatus.GOOD:
        return Verdict("ocsp", revoked=False)
    if status == ocsp.OCSPCertStatus.REVOKED:
        return Verdict(
            "ocsp", True, single.revocation_time_utc, _reason_text(single.revocation_reason)
        )
    raise RevocationUnavailable(f"the OCSP responder does not know {_about(cert)}")


def chain_issuers(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> list[x509.Certificate | None]:
    """For each certificate of a chain (leaf first), its issuer among the certificates above
    it and the trusted roots, or None (self-signed, or the issuer is not at hand)."""
    return [
        None if is_self_signed(cert) else find_issuer(cert, [*chain[index + 1 :], *roots])
        for index, cert in enumerate(chain)
    ]
