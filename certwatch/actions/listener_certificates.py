"""A listener's additional (SNI) certificates: associate, disassociate, and list all it uses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sqlmodel import col, select

from certwatch import errors
from certwatch.actions.certificates import get_certificate_row
from certwatch.actions.listeners import (
    MAX_PER_CALL,
    get_listener,
    role_ids,
    server_certificate,
    set_role,
)
from certwatch.actions.registry import ActionContext, ChangeRequest, Request, action
from certwatch.clock import rfc3339
from certwatch.pki import x509
from certwatch.store.models import Listener, ListenerCertificate

MAX_ADDITIONAL_PER_INSTANCE = 25


class AdditionalCertificatesRequest(ChangeRequest):
    """Associate/Disassociate parameters."""

    ListenerId: str
    AdditionalCertificateIds: list[str] = Field(min_length=1)


def _batch(req: AdditionalCertificatesRequest) -> list[str]:
    ids = list(dict.fromkeys(req.AdditionalCertificateIds))
    if len(ids) > MAX_PER_CALL:
        raise errors.TooManyCertificates(
            f"one call adds or removes at most {MAX_PER_CALL} certificates; got {len(ids)}"
        )
    return ids


@action("AssociateAdditionalCertificatesWithListener", AdditionalCertificatesRequest, changing=True)
def associate(ctx: ActionContext, req: AdditionalCertificatesRequest) -> dict[str, Any]:
    """Serve more certificates on a listener, chosen by SNI."""
    listener = get_listener(ctx.session, req.ListenerId)
    ids = _batch(req)
    default = role_ids(ctx, listener.id, "default")
    for certificate_id in ids:
        server_certificate(ctx, certificate_id, "an additional certificate")
        if certificate_id in default:
            raise errors.InvalidParameter(
                f"{certificate_id} is already the default certificate of {listener.id}"
            )
    current = role_ids(ctx, listener.id, "additional")
    new = [c for c in ids if c not in current]
    in_instance = ctx.session.exec(
        select(ListenerCertificate)
        .join(Listener, col(Listener.id) == col(ListenerCertificate.listener_id))
        .where(
            Listener.load_balancer_id == listener.load_balancer_id,
            ListenerCertificate.role == "additional",
        )
    ).all()
    if len(in_instance) + len(new) > MAX_ADDITIONAL_PER_INSTANCE:
        raise errors.QuotaExceeded(
            f"load balancer {listener.load_balancer_id} holds {len(in_instance)} additional "
            f"certificates; adding {len(new)} would exceed its limit of "
            f"{MAX_ADDITIONAL_PER_INSTANCE}"
        )
    set_role(ctx, listener, "additional", current + new)
    return {}


@action(
    "DisassociateAdditionalCertificatesWithListener", AdditionalCertificatesRequest, changing=True
)
def disassociate(ctx: ActionContext, req: AdditionalCertificatesRequest) -> dict[str, Any]:
    """Stop serving some additional certificates."""
    listener = get_listener(ctx.session, req.ListenerId)
    ids = _batch(req)
    current = role_ids(ctx, listener.id, "additional")
    missing = [c for c in ids if c not in current]
    if missing:
        raise errors.InvalidParameter(
            f"not additional certificates of {listener.id}: {', '.join(missing)}"
        )
    set_role(ctx, listener, "additional", [c for c in current if c not in ids])
    return {}


class ListListenerCertificatesRequest(Request):
    """ListListenerCertificates parameters."""

    ListenerId: str
    CertificateType: Literal["Server", "Ca"] | None = None


@action("ListListenerCertificates", ListListenerCertificatesRequest, changing=False)
def list_listener_certificates(
    ctx: ActionContext, req: ListListenerCertificatesRequest
) -> dict[str, Any]:
    """The certificates a listener uses: default and additional (Server), and CA."""
    listener = get_listener(ctx.session, req.ListenerId)
    roles = {
        "Server": ("default", "additional"),
        "Ca": ("ca",),
        None: ("default", "additional", "ca"),
    }
    out = []
    for role in roles[req.CertificateType]:
        for certificate_id in role_ids(ctx, listener.id, role):
            row = get_certificate_row(ctx.session, certificate_id)
            out.append(
                {
                    "CertificateId": row.id,
                    "CertificateType": row.type,
                    "IsDefault": role == "default",
                    "Role": role,
                    "Status": x509.status(
                        row.not_before, row.not_after, ctx.now, ctx.service.expiring_days
                    ),
                    "CommonName": row.common_name,
                    "NotAfter": rfc3339(row.not_after),
                    "DaysRemaining": x509.days_remaining(row.not_after, ctx.now),
                }
            )
    return {"Certificates": out}
