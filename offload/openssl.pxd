# What the compiled offload modules use of OpenSSL (libssl, libcrypto), and the SSL_CTX
# inside CPython's `ssl.SSLContext`.

cdef extern from "openssl/ssl.h" nogil:
    ctypedef struct SSL_CTX
    ctypedef struct SSL
    ctypedef struct BIO
    ctypedef struct BIO_METHOD
    const BIO_METHOD *BIO_s_mem()
    BIO *BIO_new(const BIO_METHOD *method)
    int BIO_write(BIO *b, const void *data, int dlen)
    int BIO_read(BIO *b, void *data, int dlen)
    size_t BIO_ctrl_pending(BIO *b)
    long BIO_set_mem_eof_return(BIO *b, int v)
    SSL *SSL_new(SSL_CTX *ctx)
    void SSL_free(SSL *s)
    void SSL_set_bio(SSL *s, BIO *rbio, BIO *wbio)
    void SSL_set_accept_state(SSL *s)
    int SSL_do_handshake(SSL *s)
    int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
    int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
    int SSL_pending(const SSL *s)
    int SSL_shutdown(SSL *s)
    int SSL_get_error(const SSL *s, int ret)
    const char *SSL_get_servername(const SSL *s, int type)
    SSL_CTX *SSL_set_SSL_CTX(SSL *s, SSL_CTX *ctx)
    unsigned long SSL_CTX_get_options(const SSL_CTX *ctx)
    int SSL_CTX_get_verify_mode(const SSL_CTX *ctx)
    long SSL_CTX_set_tlsext_servername_callback(SSL_CTX *ctx, int (*cb)(SSL *, int *, void *))
    long SSL_CTX_set_tlsext_servername_arg(SSL_CTX *ctx, void *arg)
    enum:
        SSL_ERROR_WANT_READ
        SSL_ERROR_ZERO_RETURN
        TLSEXT_NAMETYPE_host_name
        SSL_TLSEXT_ERR_OK
        SSL_TLSEXT_ERR_ALERT_FATAL
        SSL_AD_INTERNAL_ERROR
        SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE
        SSL_R_CERTIFICATE_VERIFY_FAILED


cdef extern from "openssl/err.h" nogil:
    unsigned long ERR_peek_last_error()
    int ERR_GET_REASON(unsigned long e)
    void ERR_clear_error()


cdef extern from *:
    """
    /* CPython's ssl.SSLContext object: the SSL_CTX pointer follows the object header
       (Modules/_ssl.c, PySSLContext). TlsContext checks it against the Python object. */
    typedef struct { PyObject_HEAD SSL_CTX *ctx; } certwatch_PySSLContext;
    #define certwatch_ssl_ctx(o) (((certwatch_PySSLContext *)(o))->ctx)
    """
    SSL_CTX *certwatch_ssl_ctx(object context)

