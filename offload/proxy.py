"""One worker's listeners and connections: accept, TLS handshake, splice to a backend.

Rules of a connection (all on one loop, no locks):
- The listener accepts in a loop reader callback and hands each socket to
  `loop.connect_accepted_socket` with the listener's *current* context (so a swap
  affects only later connections) and handshake timeout; nothing reads the socket
  before the TLS protocol owns it. Plain TCP listeners pass no context.
- After the handshake the same task connects to a backend (each attempt bounded by
  the listener's connect timeout, then the next candidate); client bytes that arrive
  meanwhile are held, and the client is paused only once they pass `PENDING_LIMIT`.
- Both sides read (client bytes decrypted) straight into one buffer per listener
  (`BufferedProtocol`) and write on from there; a transport that could not send
  at once may keep a view of it, so then the listener takes a new buffer.
- Relaying is protocol to protocol: each side's `pause_writing`/`resume_writing`
  pauses/resumes reading on the other side. Plain TCP client EOF → `write_eof` to
  the backend; a TLS client's close_notify makes uvloop's TLS transport shut down
  after flushing, and the backend is closed with it. Backend EOF → close the client
  after flushing.
- Timeouts: every read stamps the loop time. Connect and idle deadlines go to the
  worker's `Deadlines` (one loop timer for all connections); at the idle deadline a
  connection that saw traffic meanwhile registers again for last stamp + timeout.
- Accounting is exactly once per connection: `finish()` is idempotent.
"""

from __future__ import annotations

import _socket
import asyncio
import logging
import socket
import ssl

from offload.backends import BackendPicker
from offload.deadlines import Deadlines
from offload.spec import ListenerSpec
from offload.stats import ListenerStats

BACKLOG = 1024
ACCEPT_BATCH = 64
READ_BUFFER_SIZE = 256 * 1024
PENDING_LIMIT = 64 * 1024
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


class AcceptedSocket(socket.socket):
    """An accepted connection as uvloop takes it: `family` and `type` are the plain ints of
    `_socket.socket` instead of `socket.socket`'s enum conversions, which uvloop reads
    several times per connection."""

    __slots__ = ()
    family = _socket.socket.family  # type: ignore[assignment]
    type = _socket.socket.type  # type: ignore[assignment]


class Listener:
    """What new connections of one listener read at accept time; swapped by attribute."""

    __slots__ = (
        "spec", "context", "picker", "stats", "sock", "family", "loop", "deadlines", "buffer",
    )

    def __init__(
        self,
        spec: ListenerSpec,
        context: ssl.SSLContext | None,
        stats: ListenerStats,
        deadlines: Deadlines,
    ) -> None:
        self.spec = spec
        self.context = context
        self.picker = BackendPicker(spec.backends)
        self.stats = stats
        self.sock: socket.socket | None = None
        self.family = socket.AF_INET
        self.deadlines = deadlines
        self.loop = deadlines.loop
        self.buffer = memoryview(bytearray(READ_BUFFER_SIZE))

    def listen(self, sock: socket.socket) -> None:
        """Start accepting on `sock` (from `bind`), which this listener now owns."""
        self.sock = sock
        self.family = sock.family
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
        family = self.family
        for _ in range(ACCEPT_BATCH):
            try:
                fd, _ = sock._accept()  # type: ignore[attr-defined]
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
            conn = AcceptedSocket(family, socket.SOCK_STREAM, 0, fd)
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
        "_idle", "_slot", "_connect_by", "_connect_expired", "_done", "_eof", "_pending",
        "_pending_size", "_started", "_tls",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.stats = listener.stats
        self.backend: asyncio.Transport | None = None
        self.loop_time = listener.loop.time
        self.last = self._started = self.loop_time()
        self._idle = listener.spec.idle_timeout
        self._slot: int | None = None
        self._connect_by = 0.0
        self._connect_expired = False
        self._done = False
        self._eof = False
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        self._tls = False
        self.task: asyncio.Task[None] | None = None

    async def run(self, conn: socket.socket) -> None:
        """Handshake on the accepted socket `conn`, then connect a backend: each attempt
        bounded by the connect timeout, the next candidate tried when one fails."""
        listener = self.listener
        stats = self.stats
        stats.active += 1
        stats.total += 1
        loop = listener.loop
        context = listener.context
        try:
            if context is None:
                await loop.connect_accepted_socket(lambda: self, conn)
            else:
                self._tls = True
                await loop.connect_accepted_socket(
                    lambda: self, conn, ssl=context,
                    ssl_handshake_timeout=listener.spec.handshake_timeout,
                )
        except Exception as exc:
            if context is not None:
                stats.failures[failure_reason(exc)] += 1
            self.finish()
            return
        picker = listener.picker
        timeout = listener.spec.connect_timeout
        for index, backend in picker.candidates():
            if self._done:
                return
            self._connect_by = self.loop_time() + timeout
            if self._slot is None:
                # One registration serves the connect deadline, then the idle ones.
                when = self.loop_time() + min(timeout, self._idle)
                self._slot = listener.deadlines.add(self, when)
            try:
                transport, _ = await loop.create_connection(
                    lambda: BackendSide(self), backend.host, backend.port
                )
            except asyncio.CancelledError:
                if not self._connect_expired:
                    raise
                self._connect_expired = False
                self.task.uncancel()  # type: ignore[union-attr]
            except OSError:
                pass
            else:
                picker.mark_up(index)
                self._splice(transport)
                return
            picker.mark_down(index)
        if not self._done:
            stats.failures["backend_unavailable"] += 1
            self.transport.close()
            self.finish()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        if self._tls:
            self.stats.observe_handshake(self.loop_time() - self._started)

    def on_deadline(self, now: float) -> None:
        """Connecting: give the attempt up once its time is over. Spliced: close if idle
        for the idle timeout, else wait for the next idle deadline."""
        self._slot = None
        if self._done:
            return
        backend = self.backend
        if backend is None:
            if now < self._connect_by:
                self._slot = self.listener.deadlines.add(self, self._connect_by)
            elif self.task is not None:
                self._connect_expired = True
                self.task.cancel()
            return
        deadline = self.last + self._idle
        if now < deadline:
            self._slot = self.listener.deadlines.add(self, deadline)
            return
        self.transport.close()
        backend.close()

    def _splice(self, backend: asyncio.Transport) -> None:
        if self._done:
            backend.close()
            return
        self.backend = backend
        if self._pending is not None:
            backend.writelines(self._pending)
            self._pending = None
            if self._pending_size > PENDING_LIMIT:
                self.transport.resume_reading()
        if self._eof:
            backend.write_eof()
        self.last = self.loop_time()

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
            self._pending_size += nbytes
            if self._pending_size > PENDING_LIMIT:
                self.transport.pause_reading()
        else:
            backend.write(data)
            if backend.get_write_buffer_size():
                # The transport may hold a view of the shared buffer: stop reusing it.
                listener.buffer = memoryview(bytearray(READ_BUFFER_SIZE))
        self.stats.bytes_in += nbytes
        self.last = self.loop_time()

    def eof_received(self) -> bool:
        if self._tls:
            # uvloop's TLS transport closes after a close_notify whatever this returns, and
            # the backend is closed with it (connection_lost): a FIN first would only cost
            # a syscall and a wakeup for the backend's answering FIN.
            return False
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
        # uvloop's TLS protocol keeps bound methods of this protocol after the connection
        # is lost; without this reference to it, the connection is freed by reference
        # counting instead of waiting for (and costing) the cycle collector.
        del self.transport

    def finish(self) -> None:
        """Account the end of this connection once, and drop its deadline."""
        if self._done:
            return
        self._done = True
        self.stats.active -= 1
        if self._slot is not None:
            self.listener.deadlines.discard(self, self._slot)
            self._slot = None
