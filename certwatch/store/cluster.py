"""Several nodes on one PostgreSQL store: one leader (advisory lock), change notifications.

The leader runs scans, alerts and rotations, so no alert is sent twice. A change announces
its revision with `NOTIFY` (on commit); `Notifications` is the `LISTEN` side that
`certwatch.changes.follow` waits on. On SQLite there is one node, always the leader.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import Engine, text

log = logging.getLogger(__name__)
LOCK_KEY = 0x63657274  # "cert"; the second key is the schema, so deployments do not contend
CHANNEL = "certwatch_changes"


def is_postgres(engine: Engine) -> bool:
    """Whether the store is PostgreSQL (shared by several nodes)."""
    return engine.dialect.name == "postgresql"


class Leadership:
    """Holds the advisory lock on a dedicated connection while this node leads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Any = None
        self._lock = threading.Lock()

    def is_leader(self) -> bool:
        """True while this node holds the lock; tries to take it when it does not."""
        if not is_postgres(self._engine):
            return True
        with self._lock:
            if self._connection is not None and self._alive():
                return True
            self._release()
            connection = self._engine.raw_connection()
            connection.detach()  # closing must really end the session, and with it the lock
            cursor = connection.cursor()
            cursor.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (LOCK_KEY,)
            )
            row = cursor.fetchone()
            won = bool(row and row[0])
            connection.commit()
            if won:
                self._connection = connection
                log.info("this node now leads scans, alerts and rotations")
            else:
                connection.close()
            return won

    def _alive(self) -> bool:
        try:
            cursor = self._connection.cursor()
            cursor.execute("SELECT 1")
            self._connection.commit()
            return True
        except Exception:
            log.warning("lost the leader connection; will try to lead again")
            return False

    def _release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                log.debug("closing a broken leader connection failed", exc_info=True)
            self._connection = None

    def close(self) -> None:
        """Give up leadership (the lock goes with the connection)."""
        with self._lock:
            self._release()


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
