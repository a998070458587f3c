"""Several nodes on one PostgreSQL store: one leader (a lease), change notifications.

The leader runs scans, alerts and rotations, so no alert is sent twice. A change announces
its revision with `NOTIFY` (on commit); `Notifications` is the `LISTEN` side that
`certwatch.changes.follow` waits on. On SQLite there is one node, always the leader.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from certwatch import clock
from certwatch.store.models import NodeState

log = logging.getLogger(__name__)
LOCK_KEY = 0x63657274  # "cert"; the second key is the schema, so deployments do not contend
LEASE_SECONDS = 6.0  # a leader that stops renewing loses the lock within this
LEASE_MARGIN = 2.0  # ...and stops calling itself leader this much before
RENEW_SECONDS = 1.5
CHANNEL = "certwatch_changes"


def is_postgres(engine: Engine) -> bool:
    """Whether the store is PostgreSQL (shared by several nodes)."""
    return engine.dialect.name == "postgresql"


class Leadership:
    """Leadership as a lease: the advisory lock, held on a connection of its own.

    Rules:
    - The lock lives on a dedicated autocommit connection with TCP keepalives and
      `tcp_user_timeout`, and with the server's `idle_session_timeout` at `LEASE_SECONDS`: a
      leader that stops renewing (killed, frozen, cut off) loses its session, and with it the
      lock, within the lease, so another node can take it.
    - `tick()` (every `RENEW_SECONDS`, from the node's own thread) renews the lease with a
      query, or tries to take the lock when this node does not hold it.
    - `is_leader()` is true only while the last renewal is younger than the lease minus a
      margin, by the monotonic clock: a node that was frozen or lost its connection stops
      leading at once, before any renewal fails.
    - `on_lead` callbacks run when this node becomes the leader (e.g. a scan at once).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Any = None
        self._valid_until = 0.0
        self._lock = threading.Lock()
        self.on_lead: list[Callable[[], None]] = []

    def is_leader(self) -> bool:
        """True while this node holds a lease that has not run out (renewed, or taken when
        free, here if it has)."""
        if not is_postgres(self._engine):
            return True
        if not self._valid():
            self.tick()
        return self._valid()

    def _valid(self) -> bool:
        return self._connection is not None and time.monotonic() < self._valid_until

    def tick(self) -> None:
        """Renew the lease, or try to take it; never raises."""
        if not is_postgres(self._engine):
            return
        with self._lock:
            gained = False
            if self._connection is not None and not self._renew():
                self._release()
                log.warning("lost the leader lease; another node may lead now")
            if self._connection is None:
                gained = self._acquire()
        if gained:
            log.info("this node now leads scans, alerts and rotations")
            for callback in list(self.on_lead):
                try:
                    callback()
                except Exception:
                    log.exception("a callback on gaining leadership failed")

    def _renew(self) -> bool:
        started = time.monotonic()
        try:
            self._connection.execute("SELECT 1")
        except Exception:
            return False
        self._valid_until = started + LEASE_SECONDS - LEASE_MARGIN
        return True

    def _acquire(self) -> bool:
        started = time.monotonic()
        try:
            connection = _lease_connection(self._engine)
        except Exception as exc:
            log.debug("cannot reach the store to lead: %s", exc)
            return False
        try:
            row = connection.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (LOCK_KEY,)
            ).fetchone()
        except Exception as exc:
            log.debug("cannot take the leader lock: %s", exc)
            connection.close()
            return False
        if not (row and row[0]):
            connection.close()
            return False
        self._connection = connection
        self._valid_until = started + LEASE_SECONDS - LEASE_MARGIN
        return True

    def _release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                log.debug("closing a broken leader connection failed", exc_info=True)
            self._connection = None
            self._valid_until = 0.0

    def close(self) -> None:
        """Give up leadership (the lock goes with the connection)."""
        with self._lock:
            self._release()


def _lease_connection(engine: Engine) -> Any:
    """An autocommit connection that the server ends when it idles past the lease."""
    import psycopg

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=max(1, int(LEASE_SECONDS / 2)),
        keepalives=1,
        keepalives_idle=1,
        keepalives_interval=1,
        keepalives_count=2,
        tcp_user_timeout=int(LEASE_MARGIN * 1000),
    )
    idle = int(LEASE_SECONDS * 1000)
    connection.execute(f"SET idle_session_timeout = {idle}")
    connection.execute("SET tcp_keepalives_idle = 1; SET tcp_keepalives_interval = 1")
    return connection


def record_serving(session: Session, node_id: str, revision: int, serves: bool) -> None:
    """Say, in the caller's transaction, which revision this node's proxy serves now."""
    row = session.get(NodeState, node_id) or NodeState(node_id=node_id, revision=0, serves=serves)
    row.revision, row.serves, row.heartbeat_at = revision, serves, clock.now()
    session.add(row)


def nodes_behind(session: Session, revision: int, fresh: dt.timedelta) -> list[NodeState]:
    """The serving nodes heard from within `fresh` whose proxy serves less than `revision`."""
    since = clock.now() - fresh
    rows = session.exec(
        select(NodeState).where(
            col(NodeState.serves).is_(True),
            col(NodeState.heartbeat_at) >= since,
            col(NodeState.revision) < revision,
        )
    )
    return list(rows)


def serving_nodes(session: Session, fresh: dt.timedelta) -> int:
    """How many nodes with a proxy were heard from within `fresh`."""
    since = clock.now() - fresh
    rows = session.exec(
        select(NodeState.node_id).where(
            col(NodeState.serves).is_(True), col(NodeState.heartbeat_at) >= since
        )
    )
    return len(rows.all())


def announce(session: Any, revision: int) -> None:
    """Tell the other nodes (on commit) that the snapshot moved to `revision`."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :rev)"), {"channel": CHANNEL, "rev": str(revision)}
        )


class Notifications:
    """A LISTEN connection; `wait` returns on a notification or after the timeout."""

    def __init__(self, engine: Engine) -> None:
        import psycopg

        url = engine.url.set(drivername="postgresql")
        self._conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
        self._conn.execute(f"LISTEN {CHANNEL}")

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Block until a change is announced, `seconds` pass, or `stop` is set."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            for _ in self._conn.notifies(timeout=min(left, 0.5), stop_after=1):
                return

    def close(self) -> None:
        """Stop listening."""
        self._conn.close()
