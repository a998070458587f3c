"""The node's own beat: renew (or take) the leader lease, and tell the fleet which revision
this node's proxy serves, every `RENEW_SECONDS` until stopped.

A store outage is logged once when it starts and once when it ends; the beat goes on.
"""

from __future__ import annotations

import logging
import threading

from certwatch import errors
from certwatch.node import Node
from certwatch.store.cluster import RENEW_SECONDS

log = logging.getLogger(__name__)


class Heartbeat:
    """A daemon thread beating for one node; `leads` False for proxy-only nodes."""

    def __init__(self, node: Node, leads: bool = True, interval: float = RENEW_SECONDS) -> None:
        self._node = node
        self._leads = leads
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        """Beat from now on."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating (the lease then runs out unless the node closes it)."""
        self._stop.set()
        self._thread.join(self._interval * 4)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            if self._leads:
                self._node.leadership.tick()
            try:
                self._node.changes.heartbeat()
                if failing:
                    log.info("the store answers again")
                failing = False
            except errors.StoreUnavailable as exc:
                if not failing:
                    log.warning("%s; still serving what this node has", exc.message)
                failing = True
            self._stop.wait(self._interval)
