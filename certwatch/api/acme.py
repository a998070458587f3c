"""Certificate requests through ACME: request, renew, get, list."""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import and_, func, or_
from sqlmodel import col, select

from certwatch import errors
from certwatch.acme import requests
from certwatch.api.registry import ActionContext, ChangeRequest, Request, action
from certwatch.clock import rfc3339
from certwatch.config import KeyType as KeyTypeName
from certwatch.store.models import CertificateRequest, RequestStatus, Role


def request_view(row: CertificateRequest) -> dict[str, Any]:
    """The CertificateRequest object."""
    view: dict[str, Any] = {
        "CertificateRequestId": row.id,
        "DomainNames": list(row.domain_names),
        "CertificateName": row.certificate_name,
        "KeyType": row.key_type,
        "ListenerId": row.listener_id,
        "Role": row.role,
        "Renewal": row.renews_certificate_id is not None,
        "RenewsCertificateId": row.renews_certificate_id,
        "Status": row.status,
        "CreatedAt": rfc3339(row.created_at),
        "UpdatedAt": rfc3339(row.updated_at),
    }
    if row.status == RequestStatus.ISSUED:
        view["CertificateId"] = row.certificate_id
    if row.status == RequestStatus.FAILED:
        view["Reason"] = row.reason
        view["NextAttemptAt"] = rfc3339(row.next_attempt_at)
    return view


class RequestCertificateRequest(ChangeRequest):
    """RequestCertificate parameters."""

    DomainNames: list[str] = Field(min_length=1, max_length=requests.MAX_NAMES)
    CertificateName: str | None = Field(default=None, min_length=1, max_length=128)
    KeyType: KeyTypeName | None = None
    ListenerId: str | None = None
    Role: Literal["default", "additional"] = "default"


@action(
    "RequestCertificate",
    RequestCertificateRequest,
    changing=True,
    codes=("AcmeNotConfigured", "UnsupportedChallenge", "ListenerNotFound"),
)
def request_certificate(ctx: ActionContext, req: RequestCertificateRequest) -> dict[str, Any]:
    """Order a certificate from the ACME server, in the background."""
    row = requests.place(
        ctx,
        ctx.node.config.acme,
        req.DomainNames,
        certificate_name=req.CertificateName,
        key_type=req.KeyType,
        listener_id=req.ListenerId,
        role=Role(req.Role),
    )
    return {"CertificateRequestId": row.id, "Status": row.status}


class RenewCertificateRequest(ChangeRequest):
    """RenewCertificate parameters."""

    CertificateId: str


@action(
    "RenewCertificate",
    RenewCertificateRequest,
    changing=True,
    codes=("AcmeNotConfigured", "UnsupportedChallenge", "CertificateNotFound"),
)
def renew_certificate(ctx: ActionContext, req: RenewCertificateRequest) -> dict[str, Any]:
    """Renew a managed certificate now."""
    row = requests.renew(ctx, ctx.node.config.acme, req.CertificateId)
    return {"CertificateRequestId": row.id, "Status": row.status}


class GetCertificateRequestRequest(Request):
    """GetCertificateRequest parameters."""

    CertificateRequestId: str


@action(
    "GetCertificateRequest",
    GetCertificateRequestRequest,
    changing=False,
    codes=("CertificateRequestNotFound",),
)
def get_certificate_request(
    ctx: ActionContext, req: GetCertificateRequestRequest
) -> dict[str, Any]:
    """Describe one certificate request."""
    row = ctx.session.get(CertificateRequest, req.CertificateRequestId)
    if row is None:
        raise errors.NotFound("CertificateRequest", req.CertificateRequestId)
    return {"CertificateRequest": request_view(row)}


class ListCertificateRequestsRequest(Request):
    """ListCertificateRequests parameters."""

    Status: Literal["Pending", "Issued", "Failed"] | None = None
    MaxResults: int = Field(default=50, ge=1, le=100)
    NextToken: str | None = None


def _encode_token(row: CertificateRequest) -> str:
    """The token for the page after `row` (its time and id: the order is newest first)."""
    marker = f"after:{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(marker.encode()).decode()


def _decode_token(token: str) -> tuple[dt.datetime, str]:
    try:
        decoded = base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError:
        decoded = ""
    match = re.fullmatch(r"after:([0-9T:.+-]+)\|(crq-[0-9a-f]{16})", decoded)
    try:
        if match is not None:
            return dt.datetime.fromisoformat(match.group(1)), match.group(2)
    except ValueError:
        pass
    raise errors.InvalidParameter(f"NextToken {token!r} is not a token this API issued")


@action("ListCertificateRequests", ListCertificateRequestsRequest, changing=False)
def list_certificate_requests(
    ctx: ActionContext, req: ListCertificateRequestsRequest
) -> dict[str, Any]:
    """List certificate requests, newest first, paged."""
    query = select(CertificateRequest)
    if req.Status:
        query = query.where(CertificateRequest.status == req.Status)
    total = ctx.session.exec(select(func.count()).select_from(query.subquery())).one()
    if req.NextToken:
        created, last_id = _decode_token(req.NextToken)
        query = query.where(
            or_(
                col(CertificateRequest.created_at) < created,
                and_(
                    col(CertificateRequest.created_at) == created,
                    col(CertificateRequest.id) > last_id,
                ),
            )
        )
    rows = ctx.session.exec(
        query.order_by(col(CertificateRequest.created_at).desc(), col(CertificateRequest.id))
        .limit(req.MaxResults + 1)
    ).all()
    page = rows[: req.MaxResults]
    return {
        "CertificateRequests": [request_view(row) for row in page],
        "NextToken": _encode_token(page[-1]) if len(rows) > req.MaxResults else None,
        "TotalCount": total,
    }
