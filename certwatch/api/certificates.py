"""Certificate actions: upload, get, list (paged), delete."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import func
from sqlmodel import Session, col, select

from certwatch import errors
from certwatch.acme.renewal import due_times
from certwatch.api.registry import CERTIFICATE_CHECKS, ActionContext, ChangeRequest, Request, action
from certwatch.clock import rfc3339
from certwatch.inventory import rows
from certwatch.inventory.certificates import store_upload
from certwatch.pki import x509
from certwatch.pki.formats import CertificateFormat as FormatName
from certwatch.scan.revocation import unavailable
from certwatch.store.models import (
    Certificate,
    ChainEntry,
    ListenerCertificate,
    RevocationState,
    RevocationStatus,
    StagedCertificate,
)

CertType = Literal["Server", "Ca", "Client"]


def revocation_states(session: Session, ids: Sequence[str]) -> dict[str, list[RevocationState]]:
    """The last revocation checks of these certificates (leaf and chain), by certificate id."""
    found: dict[str, list[RevocationState]] = {}
    query = (
        select(RevocationState)
        .where(col(RevocationState.certificate_id).in_(ids))
        .order_by(col(RevocationState.position))
    )
    for state in session.exec(query):
        found.setdefault(state.certificate_id, []).append(state)
    return found


def certificate_view(
    row: Certificate,
    now: dt.datetime,
    expiring_days: int,
    revocations: Sequence[RevocationState] = (),
    renewal_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The SPEC's Certificate object (never the key). `Status` is `Revoked` when the last
    check found the certificate or one of its chain revoked; a source that could not tell is a
    `RevocationUnavailable` warning. `RenewalAt`: when certwatch renews it (managed)."""
    revoked = any(state.status == RevocationStatus.REVOKED for state in revocations)
    status = (
        "Revoked" if revoked else x509.status(row.not_before, row.not_after, now, expiring_days)
    )
    warnings = [
        *row.warnings,
        *(
            unavailable(s.source, s.common_name, s.position, s.error)
            for s in revocations
            if s.error
        ),
    ]
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
        "Status": status,
        "Managed": row.managed,
        "RenewalAt": rfc3339(renewal_at) if renewal_at else None,
        "Warnings": warnings,
    }


def _renewals(ctx: ActionContext, certs: Sequence[Certificate]) -> dict[str, dt.datetime]:
    """When each managed certificate among `certs` is renewed (ARI's pick, else renew_at)."""
    managed = [c for c in certs if c.managed]
    if not managed:
        return {}
    return due_times(ctx.session, managed, ctx.node.config.rotation.before_days)


class UploadCertificateRequest(ChangeRequest):
    """UploadCertificate parameters."""

    CertificateName: str = Field(min_length=1, max_length=128)
    CertificateType: CertType
    Certificate: str = Field(
        min_length=1,
        description="PEM (leaf first, chain may follow); base64 of the PFX for PKCS12, of the "
        "leaf for DER.",
    )
    PrivateKey: str | None = Field(
        default=None,
        description="PEM (or base64 DER with CertificateFormat DER); none with PKCS12, whose "
        "PFX carries the key.",
    )
    CertificateFormat: FormatName = Field(
        default="PEM", description="How Certificate is encoded: PEM (default), PKCS12 or DER."
    )
    Password: str | None = Field(
        default=None,
        max_length=1024,
        description="The PKCS12 password (none for an unencrypted PFX); never stored or shown.",
    )


@action(
    "UploadCertificate",
    UploadCertificateRequest,
    changing=True,
    codes=(*CERTIFICATE_CHECKS, "InvalidPassword", "MultipleLeafCertificates"),
)
def upload_certificate(ctx: ActionContext, req: UploadCertificateRequest) -> dict[str, Any]:
    """Add a certificate (with its chain, and its key for Server) to the inventory; PKCS#12
    and DER are read into PEM first, then meet the same checks."""
    row = store_upload(
        ctx, ctx.node.keybox, ctx.node.trusted_roots(ctx.session), req.CertificateName,
        req.CertificateType, req.Certificate, req.PrivateKey, req.CertificateFormat,
        req.Password,
    )
    return {"CertificateId": row.id}


class CertificateIdRequest(Request):
    """An action on one certificate."""

    CertificateId: str


@action("GetCertificate", CertificateIdRequest, changing=False, codes=("CertificateNotFound",))
def describe_certificate(ctx: ActionContext, req: CertificateIdRequest) -> dict[str, Any]:
    """Describe one certificate."""
    row = rows.get_certificate(ctx.session, req.CertificateId)
    states = revocation_states(ctx.session, [row.id]).get(row.id, [])
    renewal = _renewals(ctx, [row]).get(row.id)
    return {
        "Certificate": certificate_view(row, ctx.now, ctx.node.expiring_days, states, renewal)
    }


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
    states = revocation_states(ctx.session, [r.id for r in page])
    renewals = _renewals(ctx, page)
    return {
        "Certificates": [
            certificate_view(
                r, ctx.now, ctx.node.expiring_days, states.get(r.id, []), renewals.get(r.id)
            )
            for r in page
        ],
        "NextToken": next_token,
        "TotalCount": total,
    }


class DeleteCertificateRequest(ChangeRequest):
    """DeleteCertificate parameters."""

    CertificateId: str


@action(
    "DeleteCertificate",
    DeleteCertificateRequest,
    changing=True,
    codes=("CertificateNotFound", "ResourceInUse"),
)
def delete_certificate(ctx: ActionContext, req: DeleteCertificateRequest) -> dict[str, Any]:
    """Remove a certificate that no listener or pending rotation uses."""
    row = rows.get_certificate(ctx.session, req.CertificateId)
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
            select(RevocationState).where(RevocationState.certificate_id == row.id)
        ),
        *ctx.session.exec(
            select(StagedCertificate).where(StagedCertificate.certificate_id == row.id)
        ),
    ]:
        ctx.session.delete(dependent)
    ctx.session.flush()
    ctx.session.delete(row)
    return {}
