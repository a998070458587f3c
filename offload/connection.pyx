# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""One spliced connection, client side and backend side, compiled, with TLS driven through
OpenSSL directly.

Why compiled: at thousands of handshakes a second the proxy's CPU per connection is
OpenSSL's and the kernel's work plus the cost of every event that reaches Python code.
Here an event costs a C call: no interpreted frames, no `ssl.SSLObject`/`MemoryBIO`
wrappers, no exception raised per handshake flight. What stays in Python is what happens
once per connection or less: the backend connect (a task), deadlines, SNI name lookup.

Rules of a connection (all on one loop, no locks):
- TLS runs over uvloop's plain TCP transport: an `SSL` between two memory BIOs, made
  from the listener's *current* `TlsContext` at accept time, so a swap affects only
  later connections. A client's close_notify is a half-close: the backend gets EOF and
  its answer still reaches the client (TLS 1.3 allows it; OpenSSL writes after a
  received close_notify for TLS 1.2 too).
- After the handshake a task connects to a backend (each attempt bounded by the
  listener's connect timeout, then the next candidate); client bytes that arrive
  meanwhile are held, and the client is paused only once they pass `PENDING_LIMIT`.
- Bytes are read into the worker's shared buffers (`proxy.ReadBuffers`, reached through
  the listener): `raw` for TLS records, `buffer` for plaintext. A transport that could
  not send at once may keep a view of `buffer`, so then a new one replaces it.
- Relaying is protocol to protocol: each side's `pause_writing`/`resume_writing`
  pauses/resumes reading on the other side.
- Half-close both ways: the end of one direction (close_notify or FIN from the client,
  FIN from the backend) is passed on as the end of that direction only; once both
  directions ended, both connections close.
- Timeouts: every read stamps the loop time. Handshake, connect and idle deadlines go
  to the worker's `Deadlines`; a connection re-registers for its next deadline when one
  passes early.
- Accounting is exactly once per connection: `finish()` is idempotent.
- An ACME tls-alpn-01 handshake (acme-tls/1 selected, offload.tlscontext) is closed with
  close_notify as soon as it completes; no backend is connected.
- With the listener's `proxy_protocol` (as it was at accept time) the backend's first bytes
  are a PROXY v2 header (offload.proxyproto): client address, listener address, SNI name.
"""

import asyncio

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.memoryview cimport PyMemoryView_GET_BUFFER

from offload.openssl cimport (
    BIO,
    BIO_ctrl_pending,
    BIO_new,
    BIO_read,
    BIO_s_mem,
    BIO_set_mem_eof_return,
    BIO_write,
    ERR_clear_error,
    ERR_GET_REASON,
    ERR_peek_last_error,
    SSL,
    SSL_do_handshake,
    SSL_ERROR_WANT_READ,
    SSL_ERROR_ZERO_RETURN,
    SSL_free,
    SSL_get_error,
    SSL_new,
    SSL_pending,
    SSL_R_CERTIFICATE_VERIFY_FAILED,
    SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE,
    SSL_read_ex,
    SSL_session_reused,
    SSL_set_accept_state,
    SSL_set_bio,
    SSL_shutdown,
    SSL_write_ex,
    SSL_get_servername,
    TLSEXT_NAMETYPE_host_name,
    cw_is_acme,
)
from offload.tlscontext cimport TlsContext

from offload import proxyproto


cdef enum:
    _READ_BUFFER_SIZE = 256 * 1024
    PENDING_LIMIT = 64 * 1024

READ_BUFFER_SIZE = _READ_BUFFER_SIZE


cdef str _failure():
    """The `handshake_failures_total` reason of a handshake OpenSSL gave up on."""
    cdef int reason = ERR_GET_REASON(ERR_peek_last_error())
    if (
        reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE
        or reason == SSL_R_CERTIFICATE_VERIFY_FAILED
    ):
        return "client_cert"
    return "tls_error"


cdef inline char *_data(object view):
    return <char *>PyMemoryView_GET_BUFFER(view).buf


cdef class BackendSide:
    """The backend half of a spliced connection; reads into the listener's shared buffer."""

    cdef ClientSide _client
    cdef object _listener

    def __cinit__(self, ClientSide client):
        self._client = client
        self._listener = client.listener

    def connection_made(self, transport):
        pass

    def get_buffer(self, sizehint):
        return self._listener.buffer

    def buffer_updated(self, Py_ssize_t nbytes):
        self._client.send(self._listener.buffer, nbytes)

    def eof_received(self):
        self._client.backend_ended()
        return True

    def pause_writing(self):
        self._client.pause_client(True)

    def resume_writing(self):
        self._client.pause_client(False)

    def connection_lost(self, exc):
        self._client.close()


cdef class ClientSide:
    """The client half of a spliced connection, TLS included."""

    cdef readonly object listener
    cdef object stats
    cdef object transport
    cdef readonly object backend
    cdef object task
    cdef object loop_time
    cdef TlsContext _context
    cdef SSL *_tls
    cdef BIO *_incoming
    cdef BIO *_outgoing
    cdef object _raw
    cdef bint _handshaking, _done, _client_ended, _backend_ended, _connect_expired
    cdef bint _proxy_protocol
    cdef double last, _started, _handshake_by, _connect_by, _idle, _wake_at
    cdef object _slot
    cdef list _pending
    cdef Py_ssize_t _pending_size

    def __cinit__(self, listener):
        self.listener = listener
        self.stats = listener.stats
        self.loop_time = listener.loop.time
        self._idle = listener.spec.idle_timeout
        self._proxy_protocol = listener.spec.proxy_protocol
        context = listener.context
        if context is not None:
            self._context = <TlsContext?>context
            self._raw = listener.raw
            self._tls = SSL_new(self._context._base)
            if self._tls == NULL:
                raise MemoryError("SSL_new failed")
            self._incoming = BIO_new(BIO_s_mem())
            self._outgoing = BIO_new(BIO_s_mem())
            # An empty read BIO means "wait for more", not end of file.
            BIO_set_mem_eof_return(self._incoming, -1)
            BIO_set_mem_eof_return(self._outgoing, -1)
            SSL_set_bio(self._tls, self._incoming, self._outgoing)
            SSL_set_accept_state(self._tls)
            self._handshaking = True

    def __dealloc__(self):
        if self._tls != NULL:
            SSL_free(self._tls)  # frees both BIOs

    # -- client transport callbacks ---------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        stats = self.stats
        stats.active += 1
        stats.total += 1
        spec = self.listener.spec
        now = self.loop_time()
        self.last = self._started = now
        self._handshake_by = now + spec.handshake_timeout
        # The earliest any first deadline can be; later ones register when they start.
        self._wake_by(now + min(spec.handshake_timeout, spec.connect_timeout, self._idle))
        if self._tls == NULL:
            self._start_backend()

    def get_buffer(self, sizehint):
        return self.listener.buffer if self._tls == NULL else self._raw

    def buffer_updated(self, Py_ssize_t nbytes):
        self.last = self.loop_time()
        if self._tls == NULL:
            self._forward(self.listener.buffer, nbytes)
            return
        BIO_write(self._incoming, _data(self._raw), <int>nbytes)
        if self._handshaking and not self._handshake():
            return
        self._decrypt()

    def eof_received(self):
        if self._handshaking:
            return False
        self._end_client()
        return True

    def pause_writing(self):
        if self.backend is not None:
            self.backend.pause_reading()

    def resume_writing(self):
        if self.backend is not None:
            self.backend.resume_reading()

    def connection_lost(self, exc):
        if self._handshaking and not self._done:
            self.stats.failures["tls_error"] += 1  # the client left mid-handshake
        if self.backend is not None:
            self.backend.close()
        self.finish()

    # -- TLS ------------------------------------------------------------------------

    cdef bint _handshake(self) except -1:
        """Go on with the handshake; True once it is complete."""
        ERR_clear_error()
        cdef int done = SSL_do_handshake(self._tls)
        if done != 1:
            error = SSL_get_error(self._tls, done)
            if error == SSL_ERROR_WANT_READ:
                self._flush()
                return False
            reason = _failure()
            ERR_clear_error()
            self._flush()  # the alert
            self._fail(reason)
            return False
        self._handshaking = False
        self._flush()
        stats = self.stats
        stats.observe_handshake(self.loop_time() - self._started)
        if SSL_session_reused(self._tls):
            stats.resumptions += 1
        if cw_is_acme(self._tls):  # an ACME validation: the handshake was all it wanted
            ERR_clear_error()
            SSL_shutdown(self._tls)
            ERR_clear_error()
            self._flush()
            self.transport.close()
            return False
        self._start_backend()
        return True

    cdef int _decrypt(self) except -1:
        """Pass on the plaintext of every complete record, gathered into one write per
        buffer; notice close_notify."""
        cdef SSL *tls = self._tls
        cdef size_t filled = 0, count = 0
        cdef bint ended = False, broken = False
        cdef int error
        listener = self.listener
        buffer = listener.buffer
        cdef char *data = _data(buffer)
        ERR_clear_error()
        while (BIO_ctrl_pending(self._incoming) or SSL_pending(tls)) and not self._client_ended:
            if filled == _READ_BUFFER_SIZE:
                self._forward(buffer, filled)
                buffer = listener.buffer
                data = _data(buffer)
                filled = 0
            if SSL_read_ex(tls, data + filled, _READ_BUFFER_SIZE - filled, &count):
                filled += count
                continue
            error = SSL_get_error(tls, 0)
            if error == SSL_ERROR_WANT_READ:
                break
            if error == SSL_ERROR_ZERO_RETURN:  # close_notify
                ended = True
            else:  # a bad record: what came before it still goes on
                broken = True
            ERR_clear_error()
            break
        if filled:
            self._forward(buffer, filled)
        self._flush()  # tickets, key updates, alerts
        if broken:
            self.close()
        elif ended:
            self._end_client()
        return 0

    cdef int _flush(self) except -1:
        cdef size_t size = BIO_ctrl_pending(self._outgoing)
        if size:
            data = PyBytes_FromStringAndSize(NULL, size)
            BIO_read(self._outgoing, PyBytes_AS_STRING(data), <int>size)
            self.transport.write(data)
        return 0

    cdef int _fail(self, str reason) except -1:
        """A handshake that cannot complete: count it once and close the client."""
        self._handshaking = False
        self.stats.failures[reason] += 1
        self.transport.close()
        return 0

    # -- relaying -------------------------------------------------------------------

    cdef int _forward(self, object buffer, Py_ssize_t size) except -1:
        """The first `size` plaintext bytes of `buffer` to the backend, or held until it
        is connected."""
        self.stats.bytes_in += size
        backend = self.backend
        if backend is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(PyBytes_FromStringAndSize(_data(buffer), size))
            self._pending_size += size
            if self._pending_size > PENDING_LIMIT:
                self.transport.pause_reading()
            return 0
        backend.write(buffer[:size])
        if backend.get_write_buffer_size():
            # The transport may hold a view of the shared buffer: stop reusing it.
            self.listener.buffer = memoryview(bytearray(_READ_BUFFER_SIZE))
        return 0

    cdef int send(self, object buffer, Py_ssize_t size) except -1:
        """The first `size` backend bytes of `buffer` to the client (encrypted for TLS)."""
        cdef size_t written = 0
        self.stats.bytes_out += size
        self.last = self.loop_time()
        if self._done:
            return 0
        if self._tls == NULL:
            self.transport.write(buffer[:size])
            if self.transport.get_write_buffer_size():
                self.listener.buffer = memoryview(bytearray(_READ_BUFFER_SIZE))
            return 0
        ERR_clear_error()
        if not SSL_write_ex(self._tls, _data(buffer), size, &written):
            ERR_clear_error()
            self.close()
            return 0
        self._flush()
        return 0

    cdef int _end_client(self) except -1:
        """The client will send no more: tell the backend (once connected)."""
        if self._client_ended:
            return 0
        self._client_ended = True
        if self._backend_ended:
            self.close()
        elif self.backend is not None:
            self.backend.write_eof()
        return 0

    cdef int backend_ended(self) except -1:
        """The backend will send no more: end the client's direction too."""
        self._backend_ended = True
        if self._done:
            return 0
        if self._tls != NULL:
            ERR_clear_error()
            SSL_shutdown(self._tls)  # close_notify
            ERR_clear_error()
            self._flush()
        if self._client_ended:
            self.close()
        else:
            self.transport.write_eof()
        return 0

    cdef int pause_client(self, bint pause) except -1:
        """Stop or resume reading the client (the backend's buffer is full or drained)."""
        if not self._done:
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()
        return 0

    cpdef cut(self):
        """The drain deadline passed: end a TLS client with close_notify (so it sees a
        clean end, not a truncation), then close both connections."""
        if self._done:
            return
        if self._tls != NULL and not self._handshaking:
            ERR_clear_error()
            SSL_shutdown(self._tls)
            ERR_clear_error()
            self._flush()
        self.close()

    cpdef close(self):
        """Close both connections (after flushing what is buffered)."""
        if not self._done:
            self.transport.close()
        if self.backend is not None:
            self.backend.close()

    # -- backend connection ----------------------------------------------------------

    cdef int _start_backend(self) except -1:
        self.task = self.listener.loop.create_task(self._connect())
        return 0

    async def _connect(self):
        """Connect a backend: each attempt bounded by the connect timeout, the next
        candidate tried when one fails."""
        listener = self.listener
        picker = listener.picker
        timeout = listener.spec.connect_timeout
        try:
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
                    self.task.uncancel()
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
        finally:
            self.task = None

    cdef int _splice(self, backend) except -1:
        if self._done:
            backend.close()
            return 0
        self.backend = backend
        if self._proxy_protocol:
            backend.write(self._proxy_header())
        if self._pending is not None:
            backend.writelines(self._pending)
            self._pending = None
            if self._pending_size > PENDING_LIMIT:
                self.transport.resume_reading()
        if self._client_ended:
            backend.write_eof()
        self.last = self.loop_time()
        self._wake_by(self.last + self._idle)
        return 0

    cdef bytes _proxy_header(self):
        """The PROXY v2 header of this connection."""
        cdef const char *name = NULL
        if self._tls != NULL:
            name = SSL_get_servername(self._tls, TLSEXT_NAMETYPE_host_name)
        return proxyproto.header(
            self.transport.get_extra_info("peername"),
            self.transport.get_extra_info("sockname"),
            name.decode("ascii") if name != NULL else None,
        )

    # -- deadlines ------------------------------------------------------------------

    cdef int _wake_by(self, double when) except -1:
        """Make sure `on_deadline` runs no later than `when`."""
        deadlines = self.listener.deadlines
        if self._slot is not None:
            if self._wake_at <= when:
                return 0
            deadlines.discard(self, self._slot)
        self._wake_at = when
        self._slot = deadlines.add(self, when)
        return 0

    def on_deadline(self, double now):
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
        cdef double deadline = self.last + self._idle
        if now < deadline:
            self._wake_by(deadline)
        else:
            self.close()

    cpdef finish(self):
        """Account the end of this connection once (in the shared limits too), and drop its
        deadline."""
        if self._done:
            return
        self._done = True
        self.stats.active -= 1
        listener = self.listener
        listener.limits.release(listener.limit_slot, listener.limit_generation, listener.worker)
        if self._slot is not None:
            self.listener.deadlines.discard(self, self._slot)
            self._slot = None
