"""The certificate rules every path obeys: the upload checks, storing a chain and its key
(from PEM, PKCS#12 or DER), and the trusted roots."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509 as cx509
from sqlmodel import Session, select

from certwatch import errors
from certwatch.ids import new_id
from certwatch.inventory.change import Change
from certwatch.pki import formats, x509
from certwatch.store.db import KeyBox
from certwatch.store.models import Certificate, ChainEntry


def trusted_roots(session: Session, trusted_ca_file: str | None) -> list[cx509.Certificate]:
    """System roots, every uploaded Ca certificate, and `trusted_ca_file` when set."""
    roots = list(x509.system_roots())
    for row in session.exec(select(Certificate).where(Certificate.type == "Ca")):
        roots.extend(x509.parse_chain(row.chain_pem))
    if trusted_ca_file:
        roots.extend(x509.load_bundle(trusted_ca_file))
    return roots


def store_upload(
    change: Change,
    keybox: KeyBox,
    roots: Sequence[cx509.Certificate],
    name: str,
    cert_type: str,
    certificate: str,
    key: str | None,
    fmt: formats.CertificateFormat = "PEM",
    password: str | None = None,
) -> Certificate:
    """An upload in any `CertificateFormat`, turned into PEM, then checked and stored by the
    same rules as PEM (`store_certificate`)."""
    try:
        pem = formats.to_pem(fmt, certificate, key, password)
    except formats.FormatError as exc:
        raise errors.BadRequest(exc.message, code=exc.code) from exc
    return store_certificate(change, keybox, roots, name, cert_type, pem.chain_pem, pem.key_pem)


def store_certificate(
    change: Change,
    keybox: KeyBox,
    roots: Sequence[cx509.Certificate],
    name: str,
    cert_type: str,
    chain_pem: str,
    key_pem: str | None,
) -> Certificate:
    """Check a PEM chain (and key) by the upload rules and add it to the inventory; its
    warnings are judged against `roots`."""
    try:
        chain = x509.parse_chain(chain_pem)
        x509.check_chain_links(chain)
        key = None
        if cert_type == "Server" and not (key_pem and key_pem.strip()):
            raise errors.MissingPrivateKey(
                "a Server certificate needs its PrivateKey (PEM) so listeners can serve it"
            )
        if cert_type == "Ca":
            if key_pem:
                raise errors.InvalidParameter(
                    "PrivateKey is refused for a Ca certificate: certwatch stores CA "
                    "certificates only to verify clients and chains"
                )
            if not x509.describe(chain[0]).is_ca:
                raise errors.BadRequest(
                    f"{x509.common_name(chain[0])!r} is not a CA certificate "
                    "(its basicConstraints do not say CA:TRUE)",
                    code="NotACaCertificate",
                )
        if key_pem and key_pem.strip():
            key = x509.parse_private_key(key_pem)
            if not x509.key_matches(chain[0], key):
                raise errors.BadRequest(
                    f"the private key does not belong to the certificate "
                    f"{x509.common_name(chain[0])!r}",
                    code="KeyCertificateMismatch",
                )
    except x509.CertificateError as exc:
        raise errors.BadRequest(str(exc), code=exc.code) from exc
    info = x509.describe(chain[0])
    row = Certificate(
        id=new_id("cert"),
        name=name,
        type=cert_type,
        chain_pem=x509.to_pem(chain),
        key_encrypted=keybox.seal(x509.key_to_pem(key)) if key else None,
        fingerprint=info.fingerprint,
        common_name=info.common_name,
        sans=list(info.sans),
        issuer=info.issuer,
        serial_number=info.serial_number,
        not_before=info.not_before,
        not_after=info.not_after,
        key_algorithm=info.key_algorithm,
        key_size=info.key_size,
        signature_algorithm=info.signature_algorithm,
        chain_length=len(chain),
        warnings=x509.cert_warnings(chain, roots, change.now),
        created_at=change.now,
    )
    change.session.add(row)
    change.session.flush()
    for position, parent in enumerate(chain[1:], start=1):
        parent_info = x509.describe(parent)
        change.session.add(
            ChainEntry(
                certificate_id=row.id,
                position=position,
                common_name=parent_info.common_name,
                fingerprint=parent_info.fingerprint,
                not_before=parent_info.not_before,
                not_after=parent_info.not_after,
            )
        )
    return row
