"""The worker's timing wheel: deadlines fire once, never early, at most a tick late."""

from __future__ import annotations

import asyncio

import uvloop

from offload.deadlines import TICK, Deadlines


class Recorder:
    """Notes when its deadline fired; optionally registers once more."""

    def __init__(self, deadlines: Deadlines, again_after: float | None = None) -> None:
        self.deadlines = deadlines
        self.fired: list[float] = []
        self.again_after = again_after

    def on_deadline(self, now: float) -> None:
        self.fired.append(now)
        if self.again_after is not None:
            self.deadlines.add(self, now + self.again_after)
            self.again_after = None


def _run(body: object) -> None:
    uvloop.run(body)  # type: ignore[arg-type]


def test_deadlines_fire_in_order_not_early_at_most_a_tick_late() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        start = loop.time()
        items = {delay: Recorder(deadlines) for delay in (0.3, 0.05, 0.2, 0.0)}
        for delay, item in items.items():
            deadlines.add(item, start + delay)
        await asyncio.sleep(0.5)
        for delay, item in items.items():
            assert len(item.fired) == 1, delay
            assert start + delay <= item.fired[0] <= start + delay + TICK + 0.05, delay
        assert len(deadlines) == 0

    _run(body())


def test_discarded_deadline_never_fires_and_frees_its_slot() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        kept, dropped = Recorder(deadlines), Recorder(deadlines)
        when = loop.time() + 0.1
        deadlines.add(kept, when)
        key = deadlines.add(dropped, when)
        deadlines.discard(dropped, key)
        assert len(deadlines) == 1
        await asyncio.sleep(0.1 + 2 * TICK)
        assert len(kept.fired) == 1
        assert dropped.fired == []
        deadlines.discard(dropped, key)  # after the slot fired: harmless

    _run(body())


def test_an_item_may_register_again_from_its_callback() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        item = Recorder(deadlines, again_after=0.15)
        start = loop.time()
        deadlines.add(item, start + 0.05)
        await asyncio.sleep(0.05 + 0.15 + 3 * TICK)
        assert len(item.fired) == 2
        assert item.fired[1] - item.fired[0] >= 0.15

    _run(body())


def test_an_earlier_deadline_added_later_rearms_the_timer() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        late, early = Recorder(deadlines), Recorder(deadlines)
        start = loop.time()
        deadlines.add(late, start + 5.0)
        deadlines.add(early, start + 0.05)
        await asyncio.sleep(0.05 + 2 * TICK)
        assert len(early.fired) == 1
        assert late.fired == []

    _run(body())
