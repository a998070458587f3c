"""Run one API action: validated parameters, DryRun and ClientToken, then the one pipeline.

A changing action runs inside `changes.commit.Pipeline.run`: one transaction that commits
only after every proxy worker has taken the new snapshot, so a failed call changes nothing
anywhere. Reading actions run in a transaction of their own.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlmodel import Session

from certwatch import clock, errors
from certwatch.api.registry import Action, ActionContext, Request
from certwatch.changes.commit import store_faults
from certwatch.inventory.change import Change
from certwatch.node import Node
from certwatch.scan.run import Scanner
from certwatch.store.db import transaction
from certwatch.store.models import IdempotencyRecord


def _digest(req: Request) -> str:
    params = req.model_dump(mode="json", exclude={"ClientToken", "DryRun"})
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


class Dispatcher:
    """Runs actions for one node."""

    def __init__(self, node: Node, scanner: Scanner) -> None:
        self._node = node
        self._scanner = scanner

    def __call__(
        self, action: Action[Any], req: Request, actor: str = "api", record_history: bool = True
    ) -> dict[str, Any]:
        """Run `action` with validated parameters; raise `errors.ApiError` to refuse."""
        node = self._node
        if not action.changing:
            with store_faults(), transaction(node.engine) as session:
                change = Change(session, clock.now(), actor)
                return action.handler(ActionContext.of(change, node, self._scanner), req)
        dry_run = bool(getattr(req, "DryRun", False))
        token = getattr(req, "ClientToken", None)
        if action.own_transactions:
            with store_faults():
                return self._own_transactions(action, req, actor, dry_run, token)

        def work(change: Change) -> dict[str, Any]:
            replay = _replay(change.session, action, req, token, dry_run)
            if replay is not None:
                change.discard = True
                return replay
            result = action.handler(ActionContext.of(change, node, self._scanner), req)
            if dry_run:
                return {"DryRun": True}
            _remember(change, action, req, token, result)
            return result

        return node.changes.run(
            work, actor=actor, dry_run=dry_run, record_history=record_history
        )

    def _own_transactions(
        self, action: Action[Any], req: Request, actor: str, dry_run: bool, token: str | None
    ) -> dict[str, Any]:
        """Run an action that commits its own steps through the pipeline (a rotation: swap,
        live check, settle); replay and record its `ClientToken` here."""
        with transaction(self._node.engine) as session:
            replay = _replay(session, action, req, token, dry_run)
            if replay is not None:
                return replay
            change = Change(session, clock.now(), actor, dry_run)
            result = action.handler(ActionContext.of(change, self._node, self._scanner), req)
        if not dry_run:
            with transaction(self._node.engine) as session:
                _remember(Change(session, clock.now(), actor), action, req, token, result)
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
    change: Change,
    action: Action[Any],
    req: Request,
    token: str | None,
    result: dict[str, Any],
) -> None:
    """Keep the answer of a first `ClientToken` call, in the change's transaction."""
    if token:
        change.session.add(
            IdempotencyRecord(
                token=token,
                action=action.name,
                params_digest=_digest(req),
                response=result,
                created_at=change.now,
            )
        )
