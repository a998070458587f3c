"""Certificate actions: upload, get, list (paged), delete."""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import func
from sqlmodel import Session, col, select

from certwatch import errors
from certwatch.actions.registry import ActionContext, ChangeRequest, Request, action
from certwatch.clock import rfc3339
from certwatch.ids import new_id
from certwatch.pki import x509
from certwatch.store.models import Certificate, ChainEntry, ListenerCertificate, StagedCertificate

CertType = Literal["Server", "Ca", "Client"]


def certificate_view(row: Certificate, now: dt.datetime, expiring_days: int) -> dict[str, Any]:
    """The SPEC's Certificate object (never the key)."""
    return {
        "CertificateId": row.id,
        "CertificateName": row.name,
        "CertificateType": row.type,
        "CommonName": row.common_name,
        "SubjectAlternativeNames": list(row.sans),
        "Issuer": row.issuer,
        "SerialNumber": row.serial_number,
        "Fingerprint": row.fingerprint,
        "NotBefore": rfc3339(row.not_before),
        "NotAfter": rfc3339(row.not_after),
        "DaysRemaining": x509.days_remaining(row.not_after, now),
        "KeyAlgorithm": row.key_algorithm,
        "KeySize": row.key_size,
        "SignatureAlgorithm": row.signature_algorithm,
        "ChainLength": row.chain_length,
        "Status": x509.status(row.not_before, row.not_after, now, expiring_days),
        "Warnings": list(row.warnings),
    }


def get_certificate_row(session: Session, certificate_id: str) -> Certificate:
    """The certificate with this id, or 404 CertificateNotFound."""
    row = session.get(Certificate, certificate_id)
    if row is None:
        raise errors.NotFound("Certificate", certificate_id)
    return row


def store_certificate(
    ctx: ActionContext, name: str, cert_type: str, chain_pem: str, key_pem: str | None
) -> Certificate:
    """Check a PEM chain (and key) by the upload rules and add it to the inventory."""
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
        key_encrypted=ctx.service.keybox.seal(x509.key_to_pem(key)) if key else None,
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
        warnings=x509.cert_warnings(chain, ctx.service.trusted_roots(ctx.session)),
        created_at=ctx.now,
    )
    ctx.session.add(row)
    ctx.session.flush()
    for position, parent in enumerate(chain[1:], start=1):
        parent_info = x509.describe(parent)
        ctx.session.add(
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


class UploadCertificateRequest(ChangeRequest):
    """UploadCertificate parameters."""

    CertificateName: str = Field(min_length=1, max_length=128)
    CertificateType: CertType
    Certificate: str = Field(min_length=1)
    PrivateKey: str | None = None


@action("UploadCertificate", UploadCertificateRequest, changing=True)
def upload_certificate(ctx: ActionContext, req: UploadCertificateRequest) -> dict[str, Any]:
    """Add a certificate (with its chain, and its key for Server) to the inventory."""
    row = store_certificate(
        ctx, req.CertificateName, req.CertificateType, req.Certificate, req.PrivateKey
    )
    return {"CertificateId": row.id}


class CertificateIdRequest(Request):
    """An action on one certificate."""

    CertificateId: str


@action("GetCertificate", CertificateIdRequest, changing=False)
def get_certificate(ctx: ActionContext, req: CertificateIdRequest) -> dict[str, Any]:
    """Describe one certificate."""
    row = get_certificate_row(ctx.session, req.CertificateId)
    return {"Certificate": certificate_view(row, ctx.now, ctx.service.expiring_days)}


class ListCertificatesRequest(Request):
    """ListCertificates parameters."""

    CertificateType: CertType | None = None
    ExpiringWithinDays: int | None = Field(default=None, ge=0, le=36500)
    MaxResults: int = Field(default=50, ge=1, le=100)
    NextToken: str | None = None


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode()


def _decode_token(token: str) -> str:
    try:
        decoded = base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError:
        decoded = ""
    match = re.fullmatch(r"after:(cert-[0-9a-f]{16})", decoded)
    if match is None:
        raise errors.InvalidParameter(f"NextToken {token!r} is not a token this API issued")
    return match.group(1)


@action("ListCertificates", ListCertificatesRequest, changing=False)
def list_certificates(ctx: ActionContext, req: ListCertificatesRequest) -> dict[str, Any]:
    """List certificates, filtered and paged by id."""
    query = select(Certificate)
    if req.CertificateType:
        query = query.where(Certificate.type == req.CertificateType)
    if req.ExpiringWithinDays is not None:
        horizon = ctx.now + dt.timedelta(days=req.ExpiringWithinDays)
        query = query.where(col(Certificate.not_after) <= horizon)
    total = ctx.session.exec(select(func.count()).select_from(query.subquery())).one()
    if req.NextToken:
        query = query.where(col(Certificate.id) > _decode_token(req.NextToken))
    rows = ctx.session.exec(query.order_by(col(Certificate.id)).limit(req.MaxResults + 1)).all()
    page = rows[: req.MaxResults]
    next_token = _encode_token(page[-1].id) if len(rows) > req.MaxResults else None
    return {
        "Certificates": [certificate_view(r, ctx.now, ctx.service.expiring_days) for r in page],
        "NextToken": next_token,
        "TotalCount": total,
    }


class DeleteCertificateRequest(ChangeRequest):
    """DeleteCertificate parameters."""

    CertificateId: str


@action("DeleteCertificate", DeleteCertificateRequest, changing=True)
def delete_certificate(ctx: ActionContext, req: DeleteCertificateRequest) -> dict[str, Any]:
    """Remove a certificate that no listener or pending rotation uses."""
    row = get_certificate_row(ctx.session, req.CertificateId)
    users = ctx.session.exec(
        select(ListenerCertificate).where(ListenerCertificate.certificate_id == row.id)
    ).all()
    if users:
        names = ", ".join(sorted(f"{u.listener_id} ({u.role})" for u in users))
        raise errors.ResourceInUse(f"certificate {row.id} is used by listener(s) {names}")
    staged = ctx.session.exec(
        select(StagedCertificate).where(
            StagedCertificate.certificate_id == row.id, StagedCertificate.status == "Pending"
        )
    ).first()
    if staged is not None:
        raise errors.ResourceInUse(f"certificate {row.id} is staged for rotation as {staged.id}")
    for dependent in [
        *ctx.session.exec(select(ChainEntry).where(ChainEntry.certificate_id == row.id)),
        *ctx.session.exec(
            select(StagedCertificate).where(StagedCertificate.certificate_id == row.id)
        ),
    ]:
        ctx.session.delete(dependent)
    ctx.session.flush()
    ctx.session.delete(row)
    return {}
