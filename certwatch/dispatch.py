"""Run one API action all-or-nothing: one transaction, DryRun, ClientToken, then the data plane.

A changing action's transaction commits only after every proxy worker has taken the new
snapshot; if the proxy refuses it, the transaction is rolled back and the proxy keeps (or is
given back) the previous snapshot, so a failed call changes nothing anywhere.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from certwatch import clock, errors
from certwatch.actions.registry import ActionContext, Request
from certwatch.changes.snapshot import bump_revision
from certwatch.store.cluster import announce
from certwatch.store.db import transaction
from certwatch.store.models import IdempotencyRecord
from offload.errors import ApplyError, OffloadError

if TYPE_CHECKING:
    from certwatch.actions.registry import Action
    from certwatch.service import Service

log = logging.getLogger(__name__)


def _digest(req: Request) -> str:
    params = req.model_dump(mode="json", exclude={"ClientToken", "DryRun"})
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def dispatch(
    service: Service,
    action: Action[Any],
    req: Request,
    actor: str = "api",
    record_history: bool = True,
) -> dict[str, Any]:
    """Run `action` with validated parameters; raise `errors.ApiError` to refuse."""
    if not action.changing:
        with transaction(service.engine) as session:
            return action.handler(ActionContext(session, clock.now(), service, actor), req)
    dry_run = bool(getattr(req, "DryRun", False))
    token = getattr(req, "ClientToken", None)
    if action.own_transactions:
        return _run_own_transactions(service, action, req, actor, dry_run, token)
    with service.write_lock, transaction(service.engine) as session:
        replay = _replay(session, action, req, token, dry_run)
        if replay is not None:
            return replay
        ctx = ActionContext(session, clock.now(), service, actor, dry_run, record_history)
        result = action.handler(ctx, req)
        if dry_run:
            session.rollback()
            return {"DryRun": True}
        previous = service.applied_snapshot
        revision = bump_revision(session)
        announce(session, revision)
        snapshot = service.snapshots.build(session, revision)
        _apply(service, snapshot)
        _remember(session, action, req, token, result, ctx)
        try:
            session.commit()
        except Exception:
            _restore(service, previous)
            raise
    return result


def _run_own_transactions(
    service: Service,
    action: Action[Any],
    req: Request,
    actor: str,
    dry_run: bool,
    token: str | None,
) -> dict[str, Any]:
    """Run an action that commits its own steps; replay and record its `ClientToken` here."""
    with service.write_lock:
        with transaction(service.engine) as session:
            replay = _replay(session, action, req, token, dry_run)
            if replay is not None:
                return replay
            ctx = ActionContext(session, clock.now(), service, actor, dry_run)
            result = action.handler(ctx, req)
        if not dry_run:
            with transaction(service.engine) as session:
                _remember(session, action, req, token, result, ctx)
    return result


def _replay(
    session: Session, action: Action[Any], req: Request, token: str | None, dry_run: bool
) -> dict[str, Any] | None:
    """The first answer to this `ClientToken`, if it was used already (same parameters)."""
    if not token or dry_run:
        return None
    record = session.get(IdempotencyRecord, (token, action.name))
    if record is None:
        return None
    if record.params_digest != _digest(req):
        raise errors.IdempotentParameterMismatch(
            f"ClientToken {record.token!r} was already used with different parameters"
        )
    return dict(record.response)


def _remember(
    session: Session,
    action: Action[Any],
    req: Request,
    token: str | None,
    result: dict[str, Any],
    ctx: ActionContext,
) -> None:
    """Keep the answer of a first `ClientToken` call, in the caller's transaction."""
    if token:
        session.add(
            IdempotencyRecord(
                token=token,
                action=action.name,
                params_digest=_digest(req),
                response=result,
                created_at=ctx.now,
            )
        )


def _apply(service: Service, snapshot: Any) -> None:
    plane = service.data_plane
    if plane is None:
        service.applied_snapshot = snapshot
        return
    previous = service.applied_snapshot
    try:
        plane.apply(snapshot)
    except ApplyError as exc:
        _restore(service, previous)
        if errno.EADDRINUSE in exc.errnos.values():
            raise errors.PortInUse(f"the proxy cannot bind: {exc}") from exc
        raise errors.BadRequest(
            f"the proxy refused the change: {exc}", code="InvalidListener"
        ) from exc
    except OffloadError as exc:
        _restore(service, previous)
        raise errors.ProxyUnavailable(f"the proxy did not take the change: {exc}") from exc
    service.applied_snapshot = snapshot


def _restore(service: Service, previous: Any) -> None:
    if service.data_plane is None or previous is None:
        return
    try:
        service.data_plane.apply(previous)
        service.applied_snapshot = previous
    except OffloadError:
        log.exception("could not restore the previous proxy snapshot %s", previous.revision)
