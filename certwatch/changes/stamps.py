"""Which listeners a change touched, stamped with the change's revision in the store.

A listener's spec is built from its row, its certificate links, its server group's servers
and its security policy. `InputWatch` sees every such object a change adds, alters or
deletes as the session flushes it, and `stamp` writes the change's revision on the
listeners they belong to, in the change's own transaction. So any node's snapshot builder
finds what changed since it last looked by the stamps alone, without reading the inventory;
a rolled-back change rolls its stamps back with it.

Every write of a listener's inputs goes through the ORM session (the inventory's rules),
which is what this relies on; `tests/unit/test_stamps.py` checks each kind of change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import event, update
from sqlmodel import Session, col, select

from certwatch.store.models import Listener, ListenerCertificate, SecurityPolicy, ServerGroup

_IN_CHUNK = 500  # SQLite allows 999 bound parameters in one statement by default


class InputWatch:
    """Collects, while registered on a session, what a change did to listeners' inputs."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.listeners: set[str] = set()
        self.groups: set[str] = set()
        self.policies: set[str] = set()
        event.listen(session, "before_flush", self._seen)

    def close(self) -> None:
        """Stop watching the session."""
        if event.contains(self._session, "before_flush", self._seen):
            event.remove(self._session, "before_flush", self._seen)

    def _seen(self, session: Session, _context: Any, _instances: Any) -> None:
        for row in (*session.new, *session.dirty, *session.deleted):
            if isinstance(row, Listener):
                self.listeners.add(row.id)
            elif isinstance(row, ListenerCertificate):
                self.listeners.add(row.listener_id)
            elif isinstance(row, ServerGroup):
                self.groups.add(row.id)
            elif isinstance(row, SecurityPolicy):
                self.policies.add(row.id)

    def touched(self) -> set[str]:
        """The ids of every listener whose inputs the change may have altered so far."""
        self._session.flush()  # what is still pending passes through `_seen`
        ids = set(self.listeners)
        for column, values in (
            (Listener.server_group_id, self.groups),
            (Listener.security_policy_id, self.policies),
        ):
            for chunk in _chunks(sorted(values)):
                ids.update(self._session.exec(select(Listener.id).where(col(column).in_(chunk))))
        return ids


def stamp(session: Session, revision: int, listener_ids: Iterable[str]) -> None:
    """Mark `listener_ids` as changed at `revision` (ids no longer stored are skipped)."""
    for chunk in _chunks(sorted(listener_ids)):
        session.execute(
            update(Listener).where(col(Listener.id).in_(chunk)).values(revision=revision)
        )


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]
