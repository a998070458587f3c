from offload.openssl cimport SSL_CTX, cw_ticket_ring


cdef class TicketKeys:
    cdef cw_ticket_ring ring


cdef class TlsContext:
    cdef readonly object base
    cdef readonly tuple additional
    cdef readonly TicketKeys tickets
    cdef object _lookup
    cdef SSL_CTX *_base
    cdef bint _sni
