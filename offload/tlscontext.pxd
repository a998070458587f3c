from offload.openssl cimport SSL_CTX, cw_alpn_prefs, cw_ticket_ring


cdef class TicketKeys:
    cdef cw_ticket_ring ring


cdef class Challenges:
    cdef dict _contexts


cdef class TlsContext:
    cdef readonly object base
    cdef readonly tuple additional
    cdef readonly TicketKeys tickets
    cdef readonly Challenges challenges
    cdef cw_alpn_prefs _alpn
    cdef bint _has_alpn
    cdef object _lookup
    cdef SSL_CTX *_base
    cdef bint _sni
