"""One worker's listeners and connections: accept, TLS handshake, splice to a backend.

Rules of a connection (all on one loop, no locks):
- The listener accepts in a loop reader callback and hands each socket to
  `loop.connect_accepted_socket` with the listener's *current* context (so a swap
  affects only later connections) and handshake timeout; nothing reads the socket
  before the TLS protocol owns it. Plain TCP listeners pass no context.
- After the handshake the same task connects to a backend; client bytes that
  arrive meanwhile are held and the client paused.
- Both sides read (client bytes decrypted) straight into one buffer per listener
  (`BufferedProtocol`) and write on from there; a transport that could not send
  at once may keep a view of it, so then the listener takes a new buffer.
- Relaying is protocol to protocol: each side's `pause_writing`/`resume_writing`
  pauses/resumes reading on the other side. Client EOF → `write_eof` to the backend
  (TLS clients' close_notify makes the TLS transport shut down after flushing);
  backend EOF → close the client after flushing.
- Idle: every read stamps the loop time; one timer per connection fires at
  last stamp + idle timeout and re-arms itself if there was traffic meanwhile.
- Accounting is exactly once per connection: `finish()` is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import cast

from offload.backends import BackendPicker
from offload.spec import ListenerSpec
from offload.stats import ListenerStats

CONNECT_TIMEOUT = 5.0
BACKLOG = 1024
ACCEPT_BATCH = 64
READ_BUFFER_SIZE = 256 * 1024
ACCEPT_RETRY_DELAY = 0.5
log = logging.getLogger(__name__)
_CLIENT_CERT_REASONS = frozenset(
    {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED", "NO_CERTIFICATE_RETURNED"}
)


def failure_reason(exc: BaseException) -> str:
    """Map a failed TLS handshake to its `handshake_failures_total` reason label."""
    if isinstance(exc, TimeoutError | ConnectionAbortedError):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError) or (
        isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) in _CLIENT_CERT_REASONS
    ):
        return "client_cert"
    return "tls_error"


class Listener:
    """What new connections of one listener read at accept time; swapped by attribute."""

    __slots__ = ("spec", "context", "picker", "stats", "sock", "loop", "buffer")

    def __init__(
        self,
        spec: ListenerSpec,
        context: ssl.SSLContext | None,
        stats: ListenerStats,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.spec = spec
        self.context = context
        self.picker = BackendPicker(spec.backends)
        self.stats = stats
        self.sock: socket.socket | None = None
        self.loop = loop
        self.buffer = memoryview(bytearray(READ_BUFFER_SIZE))

    def listen(self, sock: socket.socket) -> None:
        """Start accepting on `sock` (from `bind`), which this listener now owns."""
        self.sock = sock
        self.loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting at once; open connections go on."""
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _accept(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # Out of descriptors or memory: back off instead of spinning on a ready socket.
                log.warning("listener %s: accept failed: %s", self.spec.listener_id, exc)
                self.loop.remove_reader(sock.fileno())
                self.loop.call_later(ACCEPT_RETRY_DELAY, self._resume, sock)
                return
            client = ClientSide(self)
            client.task = self.loop.create_task(client.run(conn))

    def _resume(self, sock: socket.socket) -> None:
        if self.sock is sock:
            self.loop.add_reader(sock.fileno(), self._accept)


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


class BackendSide(asyncio.BufferedProtocol):
    """The backend half of a spliced connection; reads into the listener's shared buffer."""

    __slots__ = ("_client", "_client_transport", "_stats", "_listener")

    def __init__(self, client: ClientSide) -> None:
        self._client = client
        self._client_transport = client.transport
        self._stats = client.stats
        self._listener = client.listener

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._listener.buffer

    def buffer_updated(self, nbytes: int) -> None:
        listener = self._listener
        client = self._client_transport
        client.write(listener.buffer[:nbytes])
        if client.get_write_buffer_size():
            listener.buffer = memoryview(bytearray(READ_BUFFER_SIZE))
        self._stats.bytes_out += nbytes
        self._client.last = self._client.loop_time()

    def eof_received(self) -> bool:
        self._client_transport.close()
        return False

    def pause_writing(self) -> None:
        self._client_transport.pause_reading()

    def resume_writing(self) -> None:
        self._client_transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_transport.close()
        self._client.finish()


class ClientSide(asyncio.BufferedProtocol):
    """The client half of a spliced connection (the application protocol after TLS)."""

    __slots__ = (
        "listener", "stats", "transport", "backend", "last", "loop_time", "task",
        "_idle", "_timer", "_done", "_eof", "_pending", "_started", "_tls",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.stats = listener.stats
        self.backend: asyncio.Transport | None = None
        self.loop_time = listener.loop.time
        self.last = self._started = self.loop_time()
        self._idle = listener.spec.idle_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._done = False
        self._eof = False
        self._pending: list[bytes] | None = None
        self._tls = False
        self.task: asyncio.Task[None] | None = None

    async def run(self, conn: socket.socket) -> None:
        """Handshake on the accepted socket `conn`, then connect a backend."""
        listener = self.listener
        stats = self.stats
        stats.active += 1
        stats.total += 1
        context = listener.context
        self._tls = context is not None
        try:
            if context is None:
                await listener.loop.connect_accepted_socket(lambda: self, conn)
            else:
                await listener.loop.connect_accepted_socket(
                    lambda: self, conn, ssl=context,
                    ssl_handshake_timeout=listener.spec.handshake_timeout,
                )
        except Exception as exc:
            if context is not None:
                stats.failures[failure_reason(exc)] += 1
            self.finish()
            return
        if not self._done:
            await self._connect(listener)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self._tls:
            self.stats.observe_handshake(self.loop_time() - self._started)

    async def _connect(self, listener: Listener) -> None:
        loop = listener.loop
        for index, backend in listener.picker.candidates():
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    transport, _ = await loop.create_connection(
                        lambda: BackendSide(self), backend.host, backend.port
                    )
            except OSError:
                listener.picker.mark_down(index)
                if self._done:
                    return
                continue
            listener.picker.mark_up(index)
            self._splice(transport)
            return
        self.stats.failures["backend_unavailable"] += 1
        self.transport.close()
        self.finish()

    def _splice(self, backend: asyncio.Transport) -> None:
        if self._done:
            backend.close()
            return
        self.backend = backend
        if self._pending is not None:
            backend.writelines(self._pending)
            self._pending = None
        if self._eof:
            backend.write_eof()
        self.last = self.loop_time()
        self._timer = self.listener.loop.call_at(self.last + self._idle, self._check_idle)
        self.transport.resume_reading()

    def _check_idle(self) -> None:
        deadline = self.last + self._idle
        if self.loop_time() >= deadline:
            self._timer = None
            self.transport.close()
            if self.backend is not None:
                self.backend.close()
        else:
            self._timer = self.listener.loop.call_at(deadline, self._check_idle)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.listener.buffer

    def buffer_updated(self, nbytes: int) -> None:
        listener = self.listener
        data = listener.buffer[:nbytes]
        backend = self.backend
        if backend is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(bytes(data))
            self.transport.pause_reading()
        else:
            backend.write(data)
            if backend.get_write_buffer_size():
                # The transport may hold a view of the shared buffer: stop reusing it.
                listener.buffer = memoryview(bytearray(READ_BUFFER_SIZE))
        self.stats.bytes_in += nbytes
        self.last = self.loop_time()

    def eof_received(self) -> bool:
        backend = self.backend
        if backend is None:
            self._eof = True
        elif backend.can_write_eof():
            backend.write_eof()
        return self.transport.can_write_eof()

    def pause_writing(self) -> None:
        if self.backend is not None:
            self.backend.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None:
            self.backend.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.backend is not None:
            self.backend.close()
        self.finish()

    def finish(self) -> None:
        """Account the end of this connection once, and stop its idle timer."""
        if self._done:
            return
        self._done = True
        self.stats.active -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
