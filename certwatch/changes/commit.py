"""THE all-or-nothing pipeline every change goes through.

API actions, the console, rotations, rollbacks, crash recovery and staging intake all call
`Pipeline.run` with the work to do. Its rules:

1. One ordinary lock per node: changes on a node run one at a time, none re-enters another.
   Across nodes, every change first takes the store's change lock (the revision row), so
   changes from several nodes run one after the other, each reading what the previous one
   committed: never zero or two defaults.
2. The work runs in one transaction and receives a `Change` (session, now, actor, flags).
3. Unless the work is discarded (dry run, replay), the revision is bumped, the listeners the
   work touched are stamped with it (`changes.stamps`) and it is announced to the other
   nodes; the new snapshot is built from the stamped listeners and every proxy worker must
   acknowledge it; only then is the transaction committed.
4. If the proxy refuses the snapshot or the commit fails, the proxy is given the previous
   snapshot back and the transaction is rolled back: a failed change changes nothing.
5. Store faults are mapped by type in `store_faults`: a lost or refused connection is
   `StoreUnavailable` (503), a broken uniqueness rule (a race the database caught) is
   `ConcurrentModification` (409); both changed nothing and may be retried.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from psycopg.errors import DeadlockDetected, SerializationFailure
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlmodel import Session

from certwatch import clock, errors
from certwatch.changes.snapshot import (
    SnapshotBuilder,
    bump_revision,
    current_revision,
    lock_revision,
)
from certwatch.changes.stamps import InputWatch, stamp
from certwatch.inventory.change import Change
from certwatch.store.cluster import announce, is_postgres, record_serving
from certwatch.store.db import transaction
from offload.errors import ApplyError, OffloadError
from offload.spec import Snapshot

log = logging.getLogger(__name__)
T = TypeVar("T")


class DataPlane(Protocol):
    """What the control plane needs of the proxy (`offload.workers.ProxyControl`)."""

    def apply(self, snapshot: Snapshot) -> None:
        """Serve this snapshot; return once every worker has it."""

    def healthy(self) -> bool:
        """Every worker is up and answering."""


class Pipeline:
    """Runs changes all-or-nothing and keeps the proxy on the store's state."""

    def __init__(
        self,
        engine: Engine,
        snapshots: SnapshotBuilder,
        data_plane: DataPlane | None,
        node_id: str = "",
    ) -> None:
        self._engine = engine
        self._snapshots = snapshots
        self.data_plane = data_plane
        self.node_id = node_id
        self.applied: Snapshot | None = None
        self._lock = threading.Lock()

    def run(
        self,
        work: Callable[[Change], T],
        *,
        actor: str,
        dry_run: bool = False,
        record_history: bool = True,
    ) -> T:
        """Do `work` in one transaction and have the proxy serve it, or change nothing."""
        with self._lock, store_faults(), transaction(self._engine) as session:
            lock_revision(session)
            change = Change(session, clock.now(), actor, dry_run, record_history, dry_run)
            watch = InputWatch(session)
            try:
                result = work(change)
                if change.discard:
                    session.rollback()
                    return result
                touched = watch.touched()
            finally:
                watch.close()
            previous = self.applied
            revision = bump_revision(session)
            stamp(session, revision, touched)
            announce(session, revision)
            try:
                self._apply(self._snapshots.build(session, revision))
                self._record_serving(session)
                session.commit()
            except BaseException:
                self._snapshots.discard_pending()
                self._restore(previous)
                raise
        return result

    def sync(self) -> None:
        """Hand the proxy the store's current state (at start, when another node moved the
        revision, and when the session ticket keys are due to rotate)."""
        if self.data_plane is None:
            return
        with self._lock, store_faults(), transaction(self._engine) as session:
            revision = current_revision(session)
            if (
                self.applied is not None
                and self.applied.revision == revision
                and not self._snapshots.stale()
            ):
                return
            snapshot = self._snapshots.build(session, revision)
            self.data_plane.apply(snapshot)
            self.applied = snapshot
            self._record_serving(session)

    def heartbeat(self) -> None:
        """Say again which revision this node serves (the fleet sees it is alive)."""
        if is_postgres(self._engine):
            with store_faults(), transaction(self._engine) as session:
                self._record_serving(session)

    def _record_serving(self, session: Session) -> None:
        if is_postgres(self._engine):
            record_serving(session, self.node_id, self.revision, self.data_plane is not None)

    @property
    def revision(self) -> int:
        """The revision this node's proxy serves (0 before any)."""
        return self.applied.revision if self.applied is not None else 0

    def _apply(self, snapshot: Snapshot) -> None:
        if self.data_plane is None:
            self.applied = snapshot
            return
        previous = self.applied
        try:
            self.data_plane.apply(snapshot)
        except ApplyError as exc:
            self._restore(previous)
            if errno.EADDRINUSE in exc.errnos.values():
                raise errors.PortInUse(f"the proxy cannot bind: {exc}") from exc
            raise errors.BadRequest(
                f"the proxy refused the change: {exc}", code="InvalidListener"
            ) from exc
        except OffloadError as exc:
            self._restore(previous)
            raise errors.ProxyUnavailable(f"the proxy did not take the change: {exc}") from exc
        self.applied = snapshot

    def _restore(self, previous: Snapshot | None) -> None:
        if self.data_plane is None or previous is None or self.applied is previous:
            return
        try:
            self.data_plane.apply(previous)
            self.applied = previous
        except OffloadError:
            log.exception("could not restore the previous proxy snapshot %s", previous.revision)


@contextmanager
def store_faults() -> Iterator[None]:
    """Turn the store's own errors into the API's: unreachable, or a race it refused."""
    try:
        yield
    except IntegrityError as exc:
        raise errors.ConcurrentModification(
            f"another change won a race on the same object; nothing changed ({exc.orig})"
        ) from exc
    except (OperationalError, InterfaceError) as exc:
        if isinstance(exc.orig, SerializationFailure | DeadlockDetected):
            raise errors.ConcurrentModification(
                f"another change ran at the same time; nothing changed ({exc.orig})"
            ) from exc
        raise errors.StoreUnavailable(
            f"the store cannot be reached; nothing changed ({type(exc.orig).__name__})"
        ) from exc
