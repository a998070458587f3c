# cython: language_level=3
"""The TLS contexts a listener's handshakes start from, as the compiled connection path
(offload/connection.pyx) uses them: the SSL_CTX of each `ssl.SSLContext`, SNI as an
OpenSSL servername callback, and session tickets under keys shared by every worker.

Resumption rules:
- Ticket keys live in one `TicketKeys` ring per worker, shared by all its contexts and
  updated in place, so a key rotation rebuilds nothing and a rebuilt context (a certificate
  swap) still accepts the tickets issued before it. The ticket callback is C
  (offload/openssl.pxd): the first key encrypts, any key of the ring decrypts, and a ticket
  under an older key is renewed.
- Every context of a listener has the listener's session id context: a session resumes only
  on the listener, CA bundle and policy it was made under (offload.tls derives it).

ALPN and ACME tls-alpn-01 rules:
- A listener's ALPN preference list (wire format) is installed on every one of its contexts
  (after SNI switches the context, OpenSSL asks the new one); no list, no callback: offers
  are ignored. No protocol in common: none is selected, the handshake goes on.
- The worker's `Challenges` (name -> challenge context) are shared by all its listeners and
  replaced in place. A client hello callback notes whether acme-tls/1 is offered; the
  servername callback, installed on every base context given them,
  switches a handshake whose SNI is a pending name *and* that offers acme-tls/1 to that
  name's challenge context (which selects only acme-tls/1) and stops asking for a client
  certificate; the connection layer closes it after the handshake. Nothing else changes.
"""

import ssl

from libc.string cimport memcpy

from offload.openssl cimport (
    CW_TICKET_KEY_SIZE,
    CW_TICKET_KEYS_MAX,
    SSL,
    SSL_AD_INTERNAL_ERROR,
    SSL_CTX,
    SSL_CTX_get_options,
    SSL_CTX_get_verify_mode,
    SSL_CTX_set_ciphersuites,
    SSL_CTX_set_session_id_context,
    SSL_CTX_set_tlsext_servername_arg,
    SSL_CTX_set_tlsext_servername_callback,
    SSL_CTX_add_client_CA,
    SSL_get_servername,
    SSL_set_verify,
    SSL_VERIFY_NONE,
    BIO,
    BIO_free,
    BIO_new_mem_buf,
    PEM_read_bio_X509,
    X509,
    X509_free,
    CW_ALPN_MAX,
    cw_acme_prefs,
    cw_alpn_install,
    cw_offers_acme,
    cw_acme_install,
    cw_acme_setup,
    SSL_set_SSL_CTX,
    SSL_TLSEXT_ERR_ALERT_FATAL,
    SSL_TLSEXT_ERR_OK,
    TLSEXT_NAMETYPE_host_name,
    SSL_MAX_SID_CTX_LENGTH,
    ERR_clear_error,
    certwatch_ssl_ctx,
    cw_ring_install,
    cw_ring_setup,
)

if cw_ring_setup() < 0:
    raise ImportError("OpenSSL gave no SSL_CTX ex_data index for the ticket keys")
if cw_acme_setup() < 0:
    raise ImportError("OpenSSL gave no SSL ex_data index for the ACME offer")


cdef SSL_CTX *_ctx_of(object context) except NULL:
    """The SSL_CTX of an `ssl.SSLContext`, checked against what Python reports of it."""
    if type(context) is not ssl.SSLContext:
        raise TypeError(f"expected ssl.SSLContext, not {type(context).__name__}")
    cdef SSL_CTX *ctx = certwatch_ssl_ctx(context)
    if (
        ctx == NULL
        or SSL_CTX_get_options(ctx) != <unsigned long>context.options
        or (SSL_CTX_get_verify_mode(ctx) != 0) != (context.verify_mode != ssl.CERT_NONE)
    ):
        raise RuntimeError("ssl.SSLContext layout is not the one this module was built for")
    return ctx


def set_ciphersuites(context, str suites):
    """Restrict the TLS 1.3 suites of an `ssl.SSLContext` (Python has no call for it before
    3.15): `suites` in OpenSSL's colon-separated form."""
    if not SSL_CTX_set_ciphersuites(_ctx_of(context), suites.encode("ascii")):
        raise ssl.SSLError(f"OpenSSL refuses the TLS 1.3 suites {suites!r}")


def set_client_ca_list(context, str ca_pem):
    """Name the subjects of the certificates in `ca_pem` as acceptable client CAs in the
    CertificateRequest of an `ssl.SSLContext` (Python's `ssl` sends no list)."""
    cdef SSL_CTX *ctx = _ctx_of(context)
    data = ca_pem.encode("ascii")
    cdef BIO *bio = BIO_new_mem_buf(<const char *>data, len(data))
    cdef X509 *cert
    cdef int added = 0
    if bio == NULL:
        raise MemoryError("BIO_new_mem_buf failed")
    try:
        while True:
            cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)
            if cert == NULL:
                break
            ok = SSL_CTX_add_client_CA(ctx, cert)
            X509_free(cert)
            if not ok:
                raise ssl.SSLError("cannot add a client CA name")
            added += 1
    finally:
        BIO_free(bio)
        ERR_clear_error()  # the end of the PEM text
    if not added:
        raise ssl.SSLError("no certificate in the client CA bundle")


def alpn_wire(protocols):
    """ALPN protocol names in the wire format (each a length byte then the name)."""
    out = b"".join(bytes([len(p)]) + p.encode("ascii") for p in protocols)
    if any(not 0 < len(p) < 256 for p in protocols) or len(out) > CW_ALPN_MAX:
        raise ValueError(f"an ALPN list takes names of 1-255 bytes, {CW_ALPN_MAX} in all")
    return out


cdef class Challenges:
    """A worker's pending ACME tls-alpn-01 challenges: by DNS name, the `ssl.SSLContext`
    serving its challenge certificate; shared by every listener, replaced in place."""

    def __cinit__(self):
        self._contexts = {}

    def set(self, contexts):
        """Serve `contexts` ({name: ssl.SSLContext}) from now on; each selects acme-tls/1."""
        contexts = {str(name).lower(): context for name, context in dict(contexts).items()}
        for context in contexts.values():
            cw_alpn_install(_ctx_of(context), &cw_acme_prefs)
        self._contexts = contexts

    def __len__(self):
        return len(self._contexts)


cdef int _on_servername(SSL *tls, int *alert, void *arg) noexcept with gil:
    """SNI: an ACME challenge's context for its name when the client offers acme-tls/1,
    else the context the listener's table names for the client's name."""
    cdef TlsContext owner = <TlsContext>arg
    cdef const char *name = SSL_get_servername(tls, TLSEXT_NAMETYPE_host_name)
    cdef Challenges challenges = owner.challenges
    try:
        if owner._lookup is None and (challenges is None or not challenges._contexts):
            return SSL_TLSEXT_ERR_OK  # the common case: nothing to choose
        server_name = name.decode("ascii") if name != NULL else None
        if challenges is not None and challenges._contexts and server_name is not None:
            challenge = challenges._contexts.get(server_name.lower())
            if challenge is not None and cw_offers_acme(tls):
                SSL_set_SSL_CTX(tls, certwatch_ssl_ctx(challenge))
                SSL_set_verify(tls, SSL_VERIFY_NONE, NULL)
                return SSL_TLSEXT_ERR_OK
        if owner._lookup is None:
            return SSL_TLSEXT_ERR_OK
        index = owner._lookup(server_name)
        if index is not None and index >= 0:
            SSL_set_SSL_CTX(tls, certwatch_ssl_ctx(owner.additional[index]))
    except Exception:
        alert[0] = SSL_AD_INTERNAL_ERROR
        return SSL_TLSEXT_ERR_ALERT_FATAL
    return SSL_TLSEXT_ERR_OK


cdef class TicketKeys:
    """A worker's session ticket keys (80 bytes each: name, AES-256 key, HMAC key), newest
    first; empty, no ticket is issued or accepted."""

    def set(self, keys):
        """Replace the keys in place: every context using this ring sees them at once."""
        keys = [bytes(k) for k in keys]
        if len(keys) > CW_TICKET_KEYS_MAX or any(len(k) != CW_TICKET_KEY_SIZE for k in keys):
            raise ValueError(
                f"at most {CW_TICKET_KEYS_MAX} ticket keys of {CW_TICKET_KEY_SIZE} bytes each"
            )
        if len({k[:16] for k in keys}) != len(keys):
            raise ValueError("two ticket keys have the same name")
        self.ring.count = 0
        for i, key in enumerate(keys):
            memcpy(self.ring.keys[i], <const char *>key, CW_TICKET_KEY_SIZE)
        self.ring.count = len(keys)

    def __len__(self):
        return self.ring.count


cdef class TlsContext:
    """What a listener's handshakes start from: the base `ssl.SSLContext` (default
    certificate, policy, client CA) and, by SNI, one context per additional certificate.

    The `ssl.SSLContext` objects are built (and never modified afterwards) by
    `offload.tls`; this keeps them alive and hands their SSL_CTX to each connection.
    `lookup(server_name)` gives the index of the context to switch to, or None/-1 to
    stay on the base one. With `tickets`, every context issues and accepts tickets under
    those keys, and resumes only sessions of `session_id_context` (at most 32 bytes).
    `alpn`: the ALPN preference list in wire format (`alpn_wire`), None for no ALPN;
    `challenges`: the worker's ACME challenges, answered on this listener.
    """

    def __cinit__(
        self, base, additional=(), lookup=None, TicketKeys tickets=None,
        bytes session_id_context=None, bytes alpn=None, Challenges challenges=None,
    ):
        self.base = base
        self.additional = tuple(additional)
        self._lookup = lookup
        self._base = _ctx_of(base)
        for context in self.additional:
            _ctx_of(context)
        if session_id_context is not None:
            if len(session_id_context) > SSL_MAX_SID_CTX_LENGTH:
                raise ValueError(f"a session id context has at most {SSL_MAX_SID_CTX_LENGTH} bytes")
            for context in (base, *self.additional):
                if not SSL_CTX_set_session_id_context(
                    certwatch_ssl_ctx(context), session_id_context, len(session_id_context)
                ):
                    raise ssl.SSLError("cannot set the session id context")
        if tickets is not None:
            self.tickets = tickets
            for context in (base, *self.additional):
                if not cw_ring_install(certwatch_ssl_ctx(context), &tickets.ring):
                    raise ssl.SSLError("cannot install the session ticket keys")
        if alpn is not None:
            if not 0 < len(alpn) <= CW_ALPN_MAX:
                raise ValueError(f"an ALPN list has 1 to {CW_ALPN_MAX} bytes")
            self._alpn.len = len(alpn)
            memcpy(self._alpn.data, <const char *>alpn, len(alpn))
            for context in (base, *self.additional):
                cw_alpn_install(certwatch_ssl_ctx(context), &self._alpn)
            self._has_alpn = True
        if self.additional and lookup is None:
            raise ValueError("additional contexts need a lookup")
        self.challenges = challenges
        if challenges is not None:
            cw_acme_install(self._base, 1)
        if self.additional or challenges is not None:
            SSL_CTX_set_tlsext_servername_callback(self._base, _on_servername)
            SSL_CTX_set_tlsext_servername_arg(self._base, <void *>self)
            self._sni = True

    def __dealloc__(self):
        if self._sni:
            SSL_CTX_set_tlsext_servername_callback(self._base, NULL)
        if self.challenges is not None:
            cw_acme_install(self._base, 0)
        if self._has_alpn:
            for context in (self.base, *self.additional):
                cw_alpn_install(certwatch_ssl_ctx(context), NULL)
        if self.tickets is not None:
            for context in (self.base, *self.additional):
                cw_ring_install(certwatch_ssl_ctx(context), NULL)

