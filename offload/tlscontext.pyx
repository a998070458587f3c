# cython: language_level=3
"""The TLS contexts a listener's handshakes start from, as the compiled connection path
(offload/connection.pyx) uses them: the SSL_CTX of each `ssl.SSLContext`, and SNI as an
OpenSSL servername callback."""

import ssl

from offload.openssl cimport (
    SSL,
    SSL_AD_INTERNAL_ERROR,
    SSL_CTX,
    SSL_CTX_get_options,
    SSL_CTX_get_verify_mode,
    SSL_CTX_set_tlsext_servername_arg,
    SSL_CTX_set_tlsext_servername_callback,
    SSL_get_servername,
    SSL_set_SSL_CTX,
    SSL_TLSEXT_ERR_ALERT_FATAL,
    SSL_TLSEXT_ERR_OK,
    TLSEXT_NAMETYPE_host_name,
    certwatch_ssl_ctx,
)


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


cdef int _on_servername(SSL *tls, int *alert, void *arg) noexcept with gil:
    """SNI: switch to the context the listener's table names for the client's name."""
    cdef TlsContext owner = <TlsContext>arg
    cdef const char *name = SSL_get_servername(tls, TLSEXT_NAMETYPE_host_name)
    try:
        index = owner._lookup(name.decode("ascii") if name != NULL else None)
        if index is not None and index >= 0:
            SSL_set_SSL_CTX(tls, certwatch_ssl_ctx(owner.additional[index]))
    except Exception:
        alert[0] = SSL_AD_INTERNAL_ERROR
        return SSL_TLSEXT_ERR_ALERT_FATAL
    return SSL_TLSEXT_ERR_OK


cdef class TlsContext:
    """What a listener's handshakes start from: the base `ssl.SSLContext` (default
    certificate, policy, client CA) and, by SNI, one context per additional certificate.

    The `ssl.SSLContext` objects are built (and never modified afterwards) by
    `offload.tls`; this keeps them alive and hands their SSL_CTX to each connection.
    `lookup(server_name)` gives the index of the context to switch to, or None/-1 to
    stay on the base one.
    """

    def __cinit__(self, base, additional=(), lookup=None):
        self.base = base
        self.additional = tuple(additional)
        self._lookup = lookup
        self._base = _ctx_of(base)
        for context in self.additional:
            _ctx_of(context)
        if self.additional:
            if lookup is None:
                raise ValueError("additional contexts need a lookup")
            SSL_CTX_set_tlsext_servername_callback(self._base, _on_servername)
            SSL_CTX_set_tlsext_servername_arg(self._base, <void *>self)
            self._sni = True

    def __dealloc__(self):
        if self._sni:
            SSL_CTX_set_tlsext_servername_callback(self._base, NULL)

