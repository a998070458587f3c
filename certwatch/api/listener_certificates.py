"""A listener's additional (SNI) certificates: associate, disassociate, and list all it uses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from certwatch.api.registry import SERVING_RULES, ActionContext, ChangeRequest, Request, action
from certwatch.clock import rfc3339
from certwatch.inventory.listeners import associate, disassociate, role_ids
from certwatch.inventory.rows import get_certificate, get_listener
from certwatch.pki import x509
from certwatch.store.models import Role


class AdditionalCertificatesRequest(ChangeRequest):
    """Associate/Disassociate parameters."""

    ListenerId: str
    AdditionalCertificateIds: list[str] = Field(min_length=1)


@action(
    "AssociateAdditionalCertificatesWithListener",
    AdditionalCertificatesRequest,
    changing=True,
    codes=(
        "ListenerNotFound", *SERVING_RULES, "QuotaExceeded.AdditionalCertificates",
        "TooManyCertificates",
    ),
)
def associate_certificates(
    ctx: ActionContext, req: AdditionalCertificatesRequest
) -> dict[str, Any]:
    """Serve more certificates on a listener, chosen by SNI."""
    associate(ctx, get_listener(ctx.session, req.ListenerId), req.AdditionalCertificateIds)
    return {}


@action(
    "DisassociateAdditionalCertificatesWithListener",
    AdditionalCertificatesRequest,
    changing=True,
    codes=("ListenerNotFound", "CertificateNotFound"),
)
def disassociate_certificates(
    ctx: ActionContext, req: AdditionalCertificatesRequest
) -> dict[str, Any]:
    """Stop serving some additional certificates."""
    disassociate(ctx, get_listener(ctx.session, req.ListenerId), req.AdditionalCertificateIds)
    return {}


class ListListenerCertificatesRequest(Request):
    """ListListenerCertificates parameters."""

    ListenerId: str
    CertificateType: Literal["Server", "Ca"] | None = None


@action(
    "ListListenerCertificates",
    ListListenerCertificatesRequest,
    changing=False,
    codes=("ListenerNotFound",),
)
def list_listener_certificates(
    ctx: ActionContext, req: ListListenerCertificatesRequest
) -> dict[str, Any]:
    """The certificates a listener uses: default and additional (Server), and CA."""
    listener = get_listener(ctx.session, req.ListenerId)
    roles = {
        "Server": (Role.DEFAULT, Role.ADDITIONAL),
        "Ca": (Role.CA,),
        None: (Role.DEFAULT, Role.ADDITIONAL, Role.CA),
    }
    out = []
    for role in roles[req.CertificateType]:
        for certificate_id in role_ids(ctx.session, listener.id, role):
            row = get_certificate(ctx.session, certificate_id)
            out.append(
                {
                    "CertificateId": row.id,
                    "CertificateType": row.type,
                    "IsDefault": role == Role.DEFAULT,
                    "Role": role,
                    "Status": x509.status(
                        row.not_before, row.not_after, ctx.now, ctx.node.expiring_days
                    ),
                    "CommonName": row.common_name,
                    "NotAfter": rfc3339(row.not_after),
                    "DaysRemaining": x509.days_remaining(row.not_after, ctx.now),
                }
            )
    return {"Certificates": out}
