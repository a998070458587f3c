"""Rotation actions: stage, list staged, rotate, roll back, list a listener's history.

Rotate and rollback run several transactions and a live probe (`certwatch.rotation`), so
they are registered with `own_transactions`: they honour `DryRun` here, and the dispatcher
replays `ClientToken`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sqlmodel import col, select

from certwatch.api.registry import (
    CERTIFICATE_CHECKS,
    SERVING_RULES,
    ActionContext,
    ChangeRequest,
    Request,
    action,
)
from certwatch.clock import rfc3339
from certwatch.inventory.rows import get_listener
from certwatch.rotation import rotate, staged
from certwatch.store import history
from certwatch.store.models import Certificate, StagedCertificate


class StageCertificateRequest(ChangeRequest):
    """StageCertificate parameters."""

    Certificate: str = Field(min_length=1)
    PrivateKey: str = Field(min_length=1)
    ListenerId: str | None = None


@action(
    "StageCertificate",
    StageCertificateRequest,
    changing=True,
    codes=(*CERTIFICATE_CHECKS, "ListenerNotFound"),
)
def stage_certificate(ctx: ActionContext, req: StageCertificateRequest) -> dict[str, Any]:
    """Stage a renewed certificate (chain and key); it is judged as a candidate at once."""
    entry = staged.stage(ctx.node, ctx, req.Certificate, req.PrivateKey, req.ListenerId)
    return {"StagedCertificateId": entry.id, "Status": entry.status, "Reason": entry.reason}


class ListStagedRequest(Request):
    """ListStagedCertificates parameters."""

    Status: Literal["Pending", "Applied", "Rejected", "Superseded"] | None = None


@action("ListStagedCertificates", ListStagedRequest, changing=False, codes=("ListenerNotFound",))
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


def _answer(outcome: rotate.Outcome) -> dict[str, Any]:
    return {
        "RotationEventId": outcome.event_id,
        "Result": outcome.result,
        "Reason": outcome.reason,
    }


class RotateRequest(ChangeRequest):
    """RotateListenerCertificate parameters."""

    ListenerId: str
    StagedCertificateId: str | None = None


@action(
    "RotateListenerCertificate",
    RotateRequest,
    changing=True,
    own_transactions=True,
    codes=("ListenerNotFound", "StagedCertificateNotFound", *SERVING_RULES),
)
def rotate_listener_certificate(ctx: ActionContext, req: RotateRequest) -> dict[str, Any]:
    """Rotate a listener's default certificate now; it is checked live and rolled back if bad."""
    if req.DryRun:
        chosen, reason = rotate.preview(ctx.node, req.ListenerId, req.StagedCertificateId)
        return {"DryRun": True, "StagedCertificateId": chosen, "Reason": reason}
    return _answer(rotate.rotate(ctx.node, req.ListenerId, req.StagedCertificateId, ctx.actor))


class RollbackRequest(ChangeRequest):
    """RollbackListenerCertificate parameters."""

    ListenerId: str


@action(
    "RollbackListenerCertificate",
    RollbackRequest,
    changing=True,
    own_transactions=True,
    codes=("ListenerNotFound", "NoPreviousCertificate", *SERVING_RULES),
)
def rollback_listener_certificate(ctx: ActionContext, req: RollbackRequest) -> dict[str, Any]:
    """Restore the default certificate that was in place before the listener's last change."""
    if req.DryRun:
        rotate.rollback_target(ctx.node, req.ListenerId)
        return {"DryRun": True}
    return _answer(rotate.rollback(ctx.node, req.ListenerId, ctx.actor))


class ListRotationEventsRequest(Request):
    """ListRotationEvents parameters."""

    ListenerId: str


@action(
    "ListRotationEvents",
    ListRotationEventsRequest,
    changing=False,
    codes=("ListenerNotFound",),
)
def list_rotation_events(ctx: ActionContext, req: ListRotationEventsRequest) -> dict[str, Any]:
    """A listener's certificate history, newest first (kept after the listener is deleted)."""
    found = history.events(ctx.session, req.ListenerId)
    if not found:
        get_listener(ctx.session, req.ListenerId)
    return {"RotationEvents": [history.event_view(event) for event in found]}
