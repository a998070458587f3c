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
    int SSL_CTX_set_ciphersuites(SSL_CTX *ctx, const char *text)
    int SSL_CTX_set_session_id_context(SSL_CTX *ctx, const unsigned char *sid, unsigned int len)
    int SSL_session_reused(const SSL *s)
    void SSL_get0_alpn_selected(const SSL *s, const unsigned char **data, unsigned int *len)
    void SSL_set_verify(SSL *s, int mode, void *callback)
    ctypedef struct X509
    int SSL_CTX_add_client_CA(SSL_CTX *ctx, X509 *x)
    BIO *BIO_new_mem_buf(const void *buf, int len)
    int BIO_free(BIO *b)
    enum:
        SSL_VERIFY_NONE
        SSL_ERROR_WANT_READ
        SSL_ERROR_ZERO_RETURN
        TLSEXT_NAMETYPE_host_name
        SSL_TLSEXT_ERR_OK
        SSL_TLSEXT_ERR_ALERT_FATAL
        SSL_AD_INTERNAL_ERROR
        SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE
        SSL_R_CERTIFICATE_VERIFY_FAILED
        SSL_MAX_SID_CTX_LENGTH


cdef extern from "openssl/pem.h" nogil:
    X509 *PEM_read_bio_X509(BIO *bp, X509 **x, void *cb, void *u)
    void X509_free(X509 *x)


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



cdef extern from *:
    """
    /* Session ticket keys shared by every context of a worker (offload/tlscontext.pyx): the
       first key encrypts new tickets, every key decrypts, and a ticket under any but the
       first is renewed. A key is 80 bytes: name (16), AES-256-CBC key (32), HMAC-SHA256
       key (32). The ring is found through the SSL_CTX's ex_data. */
    #include <string.h>
    #include <openssl/core_names.h>
    #include <openssl/crypto.h>
    #include <openssl/evp.h>
    #include <openssl/rand.h>
    #include <openssl/ssl.h>

    #define CW_TICKET_KEY_SIZE 80
    #define CW_TICKET_KEYS_MAX 4

    typedef struct {
        int count;
        unsigned char keys[CW_TICKET_KEYS_MAX][CW_TICKET_KEY_SIZE];
    } cw_ticket_ring;

    static int cw_ring_index = -1;

    static int cw_ring_setup(void) {
        if (cw_ring_index < 0)
            cw_ring_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        return cw_ring_index;
    }

    static int cw_mac_key(EVP_MAC_CTX *hctx, unsigned char *key) {
        OSSL_PARAM params[3];
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
        params[2] = OSSL_PARAM_construct_end();
        return EVP_MAC_CTX_set_params(hctx, params);
    }

    static int cw_on_ticket(SSL *s, unsigned char key_name[16], unsigned char *iv,
                            EVP_CIPHER_CTX *ctx, EVP_MAC_CTX *hctx, int enc) {
        cw_ticket_ring *ring = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), cw_ring_index);
        unsigned char *key;
        int i;
        if (ring == NULL || ring->count == 0)
            return 0;  /* no ticket issued, none accepted: a full handshake */
        if (enc) {
            key = ring->keys[0];
            if (RAND_bytes(iv, 16) <= 0)
                return -1;
            memcpy(key_name, key, 16);
            if (!EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key + 16, iv)
                || !cw_mac_key(hctx, key + 48))
                return -1;
            return 1;
        }
        for (i = 0; i < ring->count; i++) {
            key = ring->keys[i];
            if (CRYPTO_memcmp(key_name, key, 16) == 0) {
                if (!cw_mac_key(hctx, key + 48)
                    || !EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key + 16, iv))
                    return -1;
                /* 2: renew the ticket: under an older key, and always in TLS 1.3, where a
                   ticket is for one resumption and OpenSSL sends a new one only on 2 (as
                   nginx does; without it a client resumed every second connection). */
                return (i == 0 && SSL_version(s) != TLS1_3_VERSION) ? 1 : 2;
            }
        }
        return 0;
    }

    static int cw_ring_install(SSL_CTX *ctx, cw_ticket_ring *ring) {
        if (!SSL_CTX_set_ex_data(ctx, cw_ring_index, ring))
            return 0;
        return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ring ? cw_on_ticket : NULL);
    }
    """
    enum:
        CW_TICKET_KEY_SIZE
        CW_TICKET_KEYS_MAX
    ctypedef struct cw_ticket_ring:
        int count
        unsigned char keys[4][80]
    int cw_ring_setup()
    int cw_ring_install(SSL_CTX *ctx, cw_ticket_ring *ring)


cdef extern from *:
    """
    /* ALPN (offload/tlscontext.pyx): a context selects the first protocol of its preference
       list (wire format) the client offers, else none (never an alert); the ACME challenge
       contexts select only acme-tls/1 (RFC 8737). */
    #include <string.h>
    #include <openssl/ssl.h>

    #define CW_ALPN_MAX 255

    typedef struct {
        unsigned int len;
        unsigned char data[CW_ALPN_MAX];
    } cw_alpn_prefs;

    static cw_alpn_prefs cw_acme_prefs = {
        11, {10, 'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1'}};

    static int cw_alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen,
                              const unsigned char *in, unsigned int inlen, void *arg) {
        cw_alpn_prefs *prefs = arg;
        unsigned char *selected = NULL;
        unsigned char selected_len = 0;
        if (prefs == NULL || SSL_select_next_proto(&selected, &selected_len, prefs->data,
                                                   prefs->len, in, inlen)
                != OPENSSL_NPN_NEGOTIATED)
            return SSL_TLSEXT_ERR_NOACK;
        *out = selected;
        *outlen = selected_len;
        return SSL_TLSEXT_ERR_OK;
    }

    static void cw_alpn_install(SSL_CTX *ctx, cw_alpn_prefs *prefs) {
        SSL_CTX_set_alpn_select_cb(ctx, prefs ? cw_alpn_select : NULL, prefs);
    }

    /* Whether a ClientHello offers acme-tls/1 is noted (SSL ex_data) by a client hello
       callback: by the time the servername callback runs, OpenSSL has consumed the raw
       ALPN extension. */
    static int cw_acme_index = -1;

    static int cw_acme_setup(void) {
        if (cw_acme_index < 0)
            cw_acme_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        return cw_acme_index;
    }

    static int cw_on_client_hello(SSL *s, int *alert, void *arg) {
        const unsigned char *p;
        size_t len, n;
        int offered = 0;
        if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_application_layer_protocol_negotiation,
                                      &p, &len)
                && len >= 2 && (((size_t)p[0] << 8) | p[1]) == len - 2) {
            p += 2;
            len -= 2;
            while (len > 0 && !offered) {
                n = p[0];
                if (n + 1 > len)
                    break;
                offered = n == 10 && memcmp(p + 1, "acme-tls/1", 10) == 0;
                p += n + 1;
                len -= n + 1;
            }
        }
        SSL_set_ex_data(s, cw_acme_index, offered ? (void *)1 : NULL);
        return SSL_CLIENT_HELLO_SUCCESS;
    }

    static void cw_acme_install(SSL_CTX *ctx, int on) {
        SSL_CTX_set_client_hello_cb(ctx, on ? cw_on_client_hello : NULL, NULL);
    }

    static int cw_offers_acme(SSL *s) {
        return SSL_get_ex_data(s, cw_acme_index) != NULL;
    }

    static int cw_is_acme(const SSL *s) {
        const unsigned char *p;
        unsigned int len = 0;
        SSL_get0_alpn_selected(s, &p, &len);
        return len == 10 && memcmp(p, "acme-tls/1", 10) == 0;
    }
    """
    enum:
        CW_ALPN_MAX
    ctypedef struct cw_alpn_prefs:
        unsigned int len
        unsigned char data[255]
    cw_alpn_prefs cw_acme_prefs
    void cw_alpn_install(SSL_CTX *ctx, cw_alpn_prefs *prefs)
    int cw_offers_acme(SSL *s)
    int cw_acme_setup()
    void cw_acme_install(SSL_CTX *ctx, int on)
    int cw_is_acme(const SSL *s)
