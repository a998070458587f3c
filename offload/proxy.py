"""One worker's listeners: accept on a shared socket and hand each connection to a
`ClientSide` (offload/connection.pyx, where the rules of a connection are).

Each listener is a uvloop server on its `SO_REUSEPORT` socket (accept in C). The
protocol factory reads the listener's *current* context, picker and timeouts, so a
swap (by attribute) affects only later connections. A connection beyond the listener's
limits (offload.limits, shared by every worker) is closed at once and counted as
`rate_limited`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from offload.backends import BackendPicker
from offload.connection import READ_BUFFER_SIZE, ClientSide
from offload.deadlines import Deadlines
from offload.health import BackendHealth
from offload.limits import SharedLimits
from offload.spec import ListenerSpec
from offload.stats import ListenerStats
from offload.tlscontext import TlsContext

BACKLOG = 1024


class ReadBuffers:
    """The read buffers every connection of a worker shares: `raw` for TLS records, `buffer`
    for plaintext. One thread fills and consumes a buffer within one callback, so one pair
    serves every listener (a pair per listener would hold 512 KiB each); `buffer` is
    replaced when a transport keeps a view of it."""

    __slots__ = ("buffer", "raw")

    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(READ_BUFFER_SIZE))
        self.raw = memoryview(bytearray(READ_BUFFER_SIZE))


class Listener:
    """What new connections of one listener read at accept time; swapped by attribute."""

    __slots__ = (
        "spec", "context", "picker", "stats", "server", "loop", "deadlines", "buffers",
        "limits", "limit_slot", "limit_generation", "worker",
    )

    def __init__(
        self,
        spec: ListenerSpec,
        context: TlsContext | None,
        stats: ListenerStats,
        deadlines: Deadlines,
        buffers: ReadBuffers,
        health: Sequence[BackendHealth | None] = (),
        limits: tuple[SharedLimits, int, int, int] | None = None,
    ) -> None:
        """`limits`: the shared limits, this listener's slot and generation in them, and the
        worker's column; None (or slot -1) gives the listener limits of its own."""
        self.spec = spec
        self.context = context
        self.picker = BackendPicker(spec.backends, health)
        self.stats = stats
        self.server: asyncio.AbstractServer | None = None
        self.deadlines = deadlines
        self.loop = deadlines.loop
        self.buffers = buffers
        if limits is None or limits[1] < 0:
            own = SharedLimits(1, 1)
            limits = (own, 0, own.assign(0), 0)
        self.limits, self.limit_slot, self.limit_generation, self.worker = limits

    @property
    def buffer(self) -> memoryview:
        """The worker's plaintext read buffer."""
        return self.buffers.buffer

    @buffer.setter
    def buffer(self, value: memoryview) -> None:
        self.buffers.buffer = value

    @property
    def raw(self) -> memoryview:
        """The worker's TLS record read buffer."""
        return self.buffers.raw

    async def listen(self, sock: socket.socket) -> None:
        """Start accepting on `sock` (from `bind`), which this listener now owns."""
        try:
            self.server = await self.loop.create_server(
                self._accepted, sock=sock, backlog=BACKLOG
            )
        except BaseException:
            sock.close()
            raise

    def _accepted(self) -> asyncio.BaseProtocol:
        spec = self.spec
        if not self.limits.admit(
            self.limit_slot, self.limit_generation, self.worker, spec.max_connections, spec.cps
        ):
            self.stats.failures["rate_limited"] += 1
            return _Refused()
        return ClientSide(self)

    def close(self) -> None:
        """Stop accepting at once; open connections go on."""
        if self.server is not None:
            self.server.close()
            self.server = None


class _Refused(asyncio.Protocol):
    """A connection beyond the listener's limits: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def bind(spec: ListenerSpec) -> socket.socket:
    """A listening socket shared with the other workers (SO_REUSEPORT); raises OSError."""
    family = socket.AF_INET6 if ":" in spec.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((spec.address, spec.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
