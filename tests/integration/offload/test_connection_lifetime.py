"""A finished connection is freed by reference counting, not left for the cycle collector.

At thousands of handshakes a second, objects kept alive by reference cycles make the
cycle collector run and walk them all; this test would catch such a cycle coming back.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

import uvloop

from offload.deadlines import Deadlines
from offload.proxy import Listener, ReadBuffers, bind
from offload.spec import Backend
from offload.stats import ListenerStats
from offload.tls import build_context
from tests.certfactory import Pki
from tests.integration.offload.conftest import (
    client_context,
    echo_roundtrip,
    listener,
    tls_connect,
)

CONNECTIONS = 5


def test_finished_connections_leave_no_cyclic_garbage(
    pki: Pki, backends: tuple[Backend, ...]
) -> None:
    spec = listener(pki.leaf("gc.example.com"), backends)

    def clients() -> None:
        for _ in range(CONNECTIONS):
            with tls_connect(spec.port, client_context()) as sock:
                assert echo_roundtrip(sock) == b"ping"

    async def serve_and_collect() -> Counter[str]:
        loop = asyncio.get_running_loop()
        stats = ListenerStats()
        proxy = Listener(spec, build_context(spec), stats, Deadlines(loop), ReadBuffers())
        await proxy.listen(bind(spec))
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await loop.run_in_executor(None, clients)
            for _ in range(100):  # until every connection is accounted as closed
                if stats.active == 0:
                    break
                await asyncio.sleep(0.02)
            gc.collect()
            return Counter(
                type(o).__module__ + "." + type(o).__qualname__
                for o in gc.garbage
                if type(o).__module__.startswith(("offload.", "uvloop", "ssl"))
            )
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
            proxy.close()

    leftovers = uvloop.run(serve_and_collect())
    assert leftovers == Counter()
