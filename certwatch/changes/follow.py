"""Keep a node's proxy on the store's newest snapshot, whatever happens to the store.

Rules:
- Every `interval` the node compares the store's revision with what it serves and syncs;
  on PostgreSQL a `NOTIFY` wakes it at once.
- No store error ends the loop: a failed sync is logged (once per outage) and retried at the
  next tick; a lost `LISTEN` connection (terminated backend, restarted server) is reopened
  with backoff while polling goes on, so a node never freezes on its last snapshot.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine

from certwatch.changes.commit import Pipeline
from certwatch.store.cluster import Notifications, is_postgres

log = logging.getLogger(__name__)
MAX_RECONNECT_DELAY = 30.0


class _Listening:
    """The LISTEN connection, reopened with backoff after it breaks."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Notifications | None = None
        self._delay = 0.0
        self._next_try = 0.0

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Until a notification, `seconds`, or `stop`; polling time when not listening."""
        if self._connection is None and time.monotonic() >= self._next_try:
            try:
                self._connection = Notifications(self._engine)
                if self._delay:
                    log.info("listening for changes again")
                self._delay = 0.0
            except Exception as exc:
                self._retry_later(f"cannot listen for changes ({exc}); polling meanwhile")
        if self._connection is None:
            stop.wait(seconds)
            return
        try:
            self._connection.wait(seconds, stop)
        except Exception as exc:
            self.close()
            self._retry_later(f"lost the change notifications ({exc}); polling meanwhile")

    def _retry_later(self, why: str) -> None:
        if not self._delay:
            log.warning("%s", why)
        self._delay = min(max(self._delay * 2, 1.0), MAX_RECONNECT_DELAY)
        self._next_try = time.monotonic() + self._delay

    def close(self) -> None:
        """Stop listening."""
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                log.debug("closing a broken LISTEN connection failed", exc_info=True)
            self._connection = None


def follow(pipeline: Pipeline, engine: Engine, interval: float, stop: threading.Event) -> None:
    """Sync the proxy with the store until `stop` is set."""
    listening = _Listening(engine) if is_postgres(engine) else None
    failing = False
    try:
        while not stop.is_set():
            try:
                pipeline.sync()
                if failing:
                    log.info("the store's snapshot is applied again")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("could not apply the store's snapshot (%s); retrying", exc)
                failing = True
            if listening is not None:
                listening.wait(interval, stop)
            else:
                stop.wait(interval)
    finally:
        if listening is not None:
            listening.close()
