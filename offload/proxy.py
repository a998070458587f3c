"""One worker's listeners and connections: accept, TLS, splice to a backend.

Rules of a connection (all on one loop, no locks):
- Each listener is a uvloop server on its `SO_REUSEPORT` socket (accept in C). Its
  protocol factory reads the listener's *current* context and timeouts, so a swap
  affects only later connections.
- TLS runs here, over uvloop's plain TCP transport: an `ssl.SSLObject` between two
  memory BIOs. This is one layer less per connection than uvloop's TLS transport, and
  it lets a client's close_notify be a half-close: the backend gets EOF and its answer
  still reaches the client (TLS 1.3 allows it; OpenSSL writes after a received
  close_notify for TLS 1.2 too).
- After the handshake a task connects to a backend (each attempt bounded by the
  listener's connect timeout, then the next candidate); client bytes that arrive
  meanwhile are held, and the client is paused only once they pass `PENDING_LIMIT`.
- Bytes are read into per-listener buffers (`BufferedProtocol`): `raw` for TLS
  records, `buffer` for plaintext. A transport that could not send at once may keep
  a view of `buffer`, so then the listener takes a new one.
- Relaying is protocol to protocol: each side's `pause_writing`/`resume_writing`
  pauses/resumes reading on the other side.
- Half-close both ways: the end of one direction (close_notify or FIN from the client,
  FIN from the backend) is passed on as the end of that direction only; once both
  directions ended, both connections close.
- Timeouts: every read stamps the loop time. Handshake, connect and idle deadlines go
  to the worker's `Deadlines` (one loop timer for all connections); a connection
  re-registers for its next deadline when one passes early.
- Accounting is exactly once per connection: `finish()` is idempotent.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from offload.backends import BackendPicker
from offload.deadlines import Deadlines
from offload.spec import ListenerSpec
from offload.stats import ListenerStats

BACKLOG = 1024
READ_BUFFER_SIZE = 256 * 1024
PENDING_LIMIT = 64 * 1024
_CLIENT_CERT_REASONS = frozenset(
    {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED", "NO_CERTIFICATE_RETURNED"}
)


def failure_reason(exc: BaseException) -> str:
    """Map a failed TLS handshake to its `handshake_failures_total` reason label."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError) or (
        isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) in _CLIENT_CERT_REASONS
    ):
        return "client_cert"
    return "tls_error"


class Listener:
    """What new connections of one listener read at accept time; swapped by attribute."""

    __slots__ = (
        "spec", "context", "picker", "stats", "server", "loop", "deadlines", "buffer", "raw",
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
        self.server: asyncio.AbstractServer | None = None
        self.deadlines = deadlines
        self.loop = deadlines.loop
        self.buffer = memoryview(bytearray(READ_BUFFER_SIZE))
        self.raw = memoryview(bytearray(READ_BUFFER_SIZE))

    async def listen(self, sock: socket.socket) -> None:
        """Start accepting on `sock` (from `bind`), which this listener now owns."""
        try:
            self.server = await self.loop.create_server(
                self._accepted, sock=sock, backlog=BACKLOG
            )
        except BaseException:
            sock.close()
            raise

    def _accepted(self) -> ClientSide:
        return ClientSide(self)

    def close(self) -> None:
        """Stop accepting at once; open connections go on."""
        if self.server is not None:
            self.server.close()
            self.server = None


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

    __slots__ = ("_client", "_listener")

    def __init__(self, client: ClientSide) -> None:
        self._client = client
        self._listener = client.listener

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._listener.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._client.send(self._listener.buffer[:nbytes])

    def eof_received(self) -> bool:
        self._client.backend_ended()
        return True

    def pause_writing(self) -> None:
        self._client.pause_client(True)

    def resume_writing(self) -> None:
        self._client.pause_client(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.close()


class ClientSide(asyncio.BufferedProtocol):
    """The client half of a spliced connection, TLS included."""

    __slots__ = (
        "listener", "stats", "transport", "backend", "last", "loop_time", "task", "_tls",
        "_incoming", "_outgoing", "_handshaking", "_started", "_handshake_by", "_connect_by",
        "_connect_expired", "_idle", "_slot", "_wake_at", "_done", "_client_ended",
        "_backend_ended", "_pending", "_pending_size",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.stats = listener.stats
        context = listener.context
        self._tls: ssl.SSLObject | None = None
        if context is not None:
            self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._handshaking = context is not None
        self.backend: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.loop_time = listener.loop.time
        self._idle = listener.spec.idle_timeout
        self._slot: int | None = None
        self._wake_at = 0.0
        self._connect_by = 0.0
        self._connect_expired = False
        self._done = False
        self._client_ended = False
        self._backend_ended = False
        self._pending: list[bytes] | None = None
        self._pending_size = 0

    # -- client transport callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        stats = self.stats
        stats.active += 1
        stats.total += 1
        spec = self.listener.spec
        self.last = self._started = now = self.loop_time()
        self._handshake_by = now + spec.handshake_timeout
        # The earliest any first deadline can be; later ones register when they start.
        self._wake_by(now + min(spec.handshake_timeout, spec.connect_timeout, self._idle))
        if self._tls is None:
            self._start_backend()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.listener.buffer if self._tls is None else self.listener.raw

    def buffer_updated(self, nbytes: int) -> None:
        self.last = self.loop_time()
        if self._tls is None:
            self._forward(self.listener.buffer[:nbytes])
            return
        self._incoming.write(self.listener.raw[:nbytes])
        if self._handshaking and not self._handshake():
            return
        self._decrypt()

    def eof_received(self) -> bool:
        if self._handshaking:
            return False
        self._end_client()
        return True

    def pause_writing(self) -> None:
        if self.backend is not None:
            self.backend.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None:
            self.backend.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshaking and not self._done:
            self.stats.failures[failure_reason(exc or ConnectionResetError())] += 1
        if self.backend is not None:
            self.backend.close()
        self.finish()

    # -- TLS ------------------------------------------------------------------------

    def _handshake(self) -> bool:
        """Go on with the handshake; True once it is complete."""
        tls = self._tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except Exception as exc:  # SSLError, or an SNI callback that raised
            self._flush()  # the alert
            self._fail(failure_reason(exc))
            return False
        self._handshaking = False
        self._flush()
        self.stats.observe_handshake(self.loop_time() - self._started)
        self._start_backend()
        return True

    def _decrypt(self) -> None:
        """Pass on the plaintext of every complete record, gathered into one write per
        buffer; notice close_notify."""
        tls = self._tls
        assert tls is not None
        incoming, listener = self._incoming, self.listener
        buffer, filled, ended, broken = listener.buffer, 0, False, False
        # Reading only while there are bytes to decrypt spares the SSLWantReadError that
        # ends the loop otherwise (raising it costs more than the check).
        while (incoming.pending or tls.pending()) and not self._client_ended:
            if filled == READ_BUFFER_SIZE:
                self._forward(buffer[:filled])
                buffer, filled = listener.buffer, 0
            try:
                # With a buffer, read() returns the byte count (typeshed says bytes).
                count: int = tls.read(READ_BUFFER_SIZE - filled, buffer[filled:])  # type: ignore[assignment]
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify after we sent ours
                ended = True
                break
            except ssl.SSLError:  # a bad record: what came before it still goes on
                broken = True
                break
            if not count:  # close_notify
                ended = True
                break
            filled += count
        if filled:
            self._forward(buffer[:filled])
        self._flush()  # tickets, key updates, alerts
        if broken:
            self.close()
        elif ended:
            self._end_client()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.transport.write(data)

    def _fail(self, reason: str) -> None:
        """A handshake that cannot complete: count it once and close the client."""
        self._handshaking = False
        self.stats.failures[reason] += 1
        self.transport.close()

    # -- relaying -------------------------------------------------------------------

    def _forward(self, data: memoryview) -> None:
        """Client plaintext to the backend, or held until it is connected."""
        self.stats.bytes_in += len(data)
        backend = self.backend
        if backend is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(bytes(data))
            self._pending_size += len(data)
            if self._pending_size > PENDING_LIMIT:
                self.transport.pause_reading()
            return
        backend.write(data)
        if backend.get_write_buffer_size():
            # The transport may hold a view of the shared buffer: stop reusing it.
            self.listener.buffer = memoryview(bytearray(READ_BUFFER_SIZE))

    def send(self, data: memoryview) -> None:
        """Backend bytes to the client (encrypted for TLS)."""
        self.stats.bytes_out += len(data)
        self.last = self.loop_time()
        if self._done:
            return
        tls = self._tls
        if tls is None:
            self.transport.write(data)
            if self.transport.get_write_buffer_size():
                self.listener.buffer = memoryview(bytearray(READ_BUFFER_SIZE))
            return
        tls.write(data)
        self._flush()

    def _end_client(self) -> None:
        """The client will send no more: tell the backend (once connected)."""
        if self._client_ended:
            return
        self._client_ended = True
        if self._backend_ended:
            self.close()
        elif self.backend is not None:
            self.backend.write_eof()

    def backend_ended(self) -> None:
        """The backend will send no more: end the client's direction too."""
        self._backend_ended = True
        if self._done:
            return
        if self._tls is not None:
            try:
                self._tls.unwrap()  # close_notify
            except ssl.SSLError:  # the client's close_notify has not come yet
                pass
            self._flush()
        if self._client_ended:
            self.close()
        else:
            self.transport.write_eof()

    def pause_client(self, pause: bool) -> None:
        """Stop or resume reading the client (the backend's buffer is full or drained)."""
        if not self._done:
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def close(self) -> None:
        """Close both connections (after flushing what is buffered)."""
        if not self._done:
            self.transport.close()
        if self.backend is not None:
            self.backend.close()

    # -- backend connection ----------------------------------------------------------

    def _start_backend(self) -> None:
        self.task = self.listener.loop.create_task(self._connect())

    async def _connect(self) -> None:
        """Connect a backend: each attempt bounded by the connect timeout, the next
        candidate tried when one fails."""
        listener = self.listener
        picker = listener.picker
        timeout = listener.spec.connect_timeout
        for index, backend in picker.candidates():
            if self._done:
                return
            self._connect_by = self.loop_time() + timeout
            self._wake_by(self._connect_by)
            try:
                transport, _ = await listener.loop.create_connection(
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
            self.stats.failures["backend_unavailable"] += 1
            self.close()

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
        if self._client_ended:
            backend.write_eof()
        self.last = self.loop_time()
        self._wake_by(self.last + self._idle)

    # -- deadlines ------------------------------------------------------------------

    def _wake_by(self, when: float) -> None:
        """Make sure `on_deadline` runs no later than `when`."""
        if self._slot is not None:
            if self._wake_at <= when:
                return
            self.listener.deadlines.discard(self, self._slot)
        self._wake_at = when
        self._slot = self.listener.deadlines.add(self, when)

    def on_deadline(self, now: float) -> None:
        """Close a stuck handshake, give up a connect attempt past its time, or close a
        connection idle for the idle timeout; otherwise wait for the next deadline."""
        self._slot = None
        if self._done:
            return
        if self._handshaking:
            if now >= self._handshake_by:
                self._fail("timeout")
            else:
                self._wake_by(self._handshake_by)
            return
        if self.backend is None:
            if self.task is None:
                return
            if now < self._connect_by:
                self._wake_by(self._connect_by)
            else:
                self._connect_expired = True
                self.task.cancel()
            return
        deadline = self.last + self._idle
        if now < deadline:
            self._wake_by(deadline)
        else:
            self.close()

    def finish(self) -> None:
        """Account the end of this connection once, and drop its deadline."""
        if self._done:
            return
        self._done = True
        self.stats.active -= 1
        if self._slot is not None:
            self.listener.deadlines.discard(self, self._slot)
            self._slot = None
