"""Many connections' deadlines on one loop timer per worker (a hashed timing wheel).

A loop timer per connection costs a timer handle to arm and one to cancel for every
connection; at thousands of handshakes a second that is a visible share of the
proxy's CPU. Here a deadline only puts the connection in the slot of its `TICK`;
one loop timer fires at the earliest slot in use and tells each connection there
that its deadline passed (it may register again, e.g. an idle connection that saw
traffic meanwhile). Deadlines fire at most one tick late, never early.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Protocol

TICK = 0.05


class Expiring(Protocol):
    """Something with a deadline."""

    def on_deadline(self, now: float) -> None:
        """Called once a deadline registered with `Deadlines.add` has passed."""


class Deadlines:
    """The deadlines of one loop."""

    __slots__ = ("loop", "_slots", "_keys", "_timer", "_timer_key")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._slots: dict[int, set[Expiring]] = {}
        self._keys: list[int] = []  # heap of the keys of `_slots`
        self._timer: asyncio.TimerHandle | None = None
        self._timer_key = 0

    def add(self, item: Expiring, when: float) -> int:
        """Call `item.on_deadline` once loop time `when` has passed; returns the key that
        `discard` needs. Each call registers once more."""
        key = int(when / TICK) + 1
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = set()
            heapq.heappush(self._keys, key)
            if self._timer is None or key < self._timer_key:
                self._arm(key)
        slot.add(item)
        return key

    def discard(self, item: Expiring, key: int) -> None:
        """Forget `item`'s registration under `key` (a no-op when it already fired)."""
        slot = self._slots.get(key)
        if slot is not None:
            slot.discard(item)

    def pending(self) -> list[Expiring]:
        """Everything registered now, each once."""
        return list({item for slot in self._slots.values() for item in slot})

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())

    def _arm(self, key: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_key = key
        self._timer = self.loop.call_at(key * TICK, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.loop.time()
        keys = self._keys
        while keys and keys[0] * TICK <= now:
            for item in self._slots.pop(heapq.heappop(keys)):
                item.on_deadline(now)
        if keys and (self._timer is None or keys[0] != self._timer_key):
            self._arm(keys[0])
