from offload.openssl cimport SSL_CTX


cdef class TlsContext:
    cdef readonly object base
    cdef readonly tuple additional
    cdef object _lookup
    cdef SSL_CTX *_base
    cdef bint _sni
