"""Rotation actions: stage, list staged, rotate, roll back, list a listener's history.

Rotate and rollback run several transactions and a live probe (`certwatch.rotation`), so
they are registered with `own_transactions`: they honour `DryRun` here, and the dispatcher
replays `ClientToken`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sqlmodel import col, select

from certwatch.actions.certificates import store_certificate
from certwatch.actions.listeners import get_listener
from certwatch.actions.registry import ActionContext, ChangeRequest, Request, action
from certwatch.clock import rfc3339
from certwatch.ids import new_id
from certwatch.pki import x509
from certwatch.rotation import rotate as rotation
from certwatch.rotation import staged
from certwatch.rotation.candidates import Offer
from certwatch.store import history
from certwatch.store.models import Certificate, StagedCertificate

StagedStatus = Literal["Pending", "Applied", "Rejected", "Superseded"]
FILE_ACTOR = "staging"


class StageCertificateRequest(ChangeRequest):
    """StageCertificate parameters."""

    Certificate: str = Field(min_length=1)
    PrivateKey: str = Field(min_length=1)
    ListenerId: str | None = None


@action("StageCertificate", StageCertificateRequest, changing=True)
def stage_certificate(ctx: ActionContext, req: StageCertificateRequest) -> dict[str, Any]:
    """Stage a renewed certificate (chain and key); it is judged as a candidate at once."""
    if req.ListenerId is not None:
        get_listener(ctx.session, req.ListenerId)
    row = store_certificate(ctx, "staged", "Server", req.Certificate, req.PrivateKey)
    row.name = f"{row.common_name or row.id} (staged)"
    # store_certificate refused a key that does not match: no need to parse and compare again.
    candidate = Offer(x509.parse_chain(row.chain_pem), key_matches=True)
    reason = staged.first_verdict(
        candidate,
        staged.incumbents_for(ctx.session, req.ListenerId),
        ctx.service.trusted_roots(ctx.session),
        ctx.now,
    )
    entry = StagedCertificate(
        id=new_id("stg"),
        certificate_id=row.id,
        listener_id=req.ListenerId,
        status="Rejected" if reason else "Pending",
        reason=reason,
        source="file" if ctx.actor == FILE_ACTOR else "api",
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    ctx.session.add(entry)
    return {"StagedCertificateId": entry.id, "Status": entry.status, "Reason": reason}


class ListStagedRequest(Request):
    """ListStagedCertificates parameters."""

    Status: StagedStatus | None = None


@action("ListStagedCertificates", ListStagedRequest, changing=False)
def list_staged(ctx: ActionContext, req: ListStagedRequest) -> dict[str, Any]:
    """Staged certificates, oldest first, with their status and reason."""
    query = (
        select(StagedCertificate, Certificate)
        .join(Certificate, col(Certificate.id) == col(StagedCertificate.certificate_id))
        .order_by(col(StagedCertificate.created_at), col(StagedCertificate.id))
    )
    if req.Status is not None:
        query = query.where(StagedCertificate.status == req.Status)
    return {
        "StagedCertificates": [
            {
                "StagedCertificateId": row.id,
                "CertificateId": cert.id,
                "ListenerId": row.listener_id,
                "CommonName": cert.common_name,
                "NotAfter": rfc3339(cert.not_after),
                "Status": row.status,
                "Reason": row.reason,
                "Source": row.source,
                "CreatedAt": rfc3339(row.created_at),
                "UpdatedAt": rfc3339(row.updated_at),
            }
            for row, cert in ctx.session.exec(query)
        ]
    }


def _answer(outcome: rotation.Outcome) -> dict[str, Any]:
    return {
        "RotationEventId": outcome.event_id,
        "Result": outcome.result,
        "Reason": outcome.reason,
    }


class RotateRequest(ChangeRequest):
    """RotateListenerCertificate parameters."""

    ListenerId: str
    StagedCertificateId: str | None = None


@action("RotateListenerCertificate", RotateRequest, changing=True, own_transactions=True)
def rotate_listener_certificate(ctx: ActionContext, req: RotateRequest) -> dict[str, Any]:
    """Rotate a listener's default certificate now; it is checked live and rolled back if bad."""
    if req.DryRun:
        chosen, reason = rotation.preview(ctx.service, req.ListenerId, req.StagedCertificateId)
        return {"DryRun": True, "StagedCertificateId": chosen, "Reason": reason}
    return _answer(rotation.rotate(ctx.service, req.ListenerId, req.StagedCertificateId, ctx.actor))


class RollbackRequest(ChangeRequest):
    """RollbackListenerCertificate parameters."""

    ListenerId: str


@action("RollbackListenerCertificate", RollbackRequest, changing=True, own_transactions=True)
def rollback_listener_certificate(ctx: ActionContext, req: RollbackRequest) -> dict[str, Any]:
    """Restore the default certificate that was in place before the listener's last change."""
    if req.DryRun:
        rotation.rollback_target(ctx.service, req.ListenerId)
        return {"DryRun": True}
    return _answer(rotation.rollback(ctx.service, req.ListenerId, ctx.actor))


class ListRotationEventsRequest(Request):
    """ListRotationEvents parameters."""

    ListenerId: str


@action("ListRotationEvents", ListRotationEventsRequest, changing=False)
def list_rotation_events(ctx: ActionContext, req: ListRotationEventsRequest) -> dict[str, Any]:
    """A listener's certificate history, newest first (kept after the listener is deleted)."""
    found = history.events(ctx.session, req.ListenerId)
    if not found:
        get_listener(ctx.session, req.ListenerId)
    return {"RotationEvents": [history.event_view(event) for event in found]}
