/*
 * loadgen: TLS load generator for the proxy benchmark (127.0.0.1 only).
 *
 * Modes (each prints one JSON object on stdout; diagnostics go to stderr):
 *   conn     --concurrency N --threads T --seconds S [--max-conns M]
 *            [--resume 0|1] [--prime-wait 0|1]
 *            N connections in flight, spread over T epoll threads; each does
 *            connect -> TLS handshake -> write 64 B -> read the 64 B echo ->
 *            close. Default: full handshakes (no tickets, no session cache,
 *            no resumption). --resume 1: each of the N slots is one client
 *            that keeps the newest session it was given (TLS 1.3 ticket, TLS
 *            1.2 ticket or session id) and offers it on its next connection
 *            (SSL_set_session); a priming pass first makes one full handshake
 *            per slot, outside the measured run. --prime-wait 1: after the
 *            priming pass print a {"primed":...} line and start the measured
 *            run once stdin has a line (or EOF), so the caller can start its
 *            own clock there. "resumed" counts successful connections whose
 *            handshake resumed (SSL_session_reused).
 *   bulk     --direction up|down --seconds S [--max-mb M]
 *            one connection; up: send whole MiBs to a "discard" backend and
 *            wait for its per-MiB acks; down: read a "stream" backend.
 *   latency  --count K --seconds S
 *            one connection; 64-byte ping-pong through an echo backend.
 *   idle     --conns N --hold-seconds H
 *            open N connections (handshake + one 64 B echo each), print a
 *            "ready" JSON line, hold them until stdin has a line / EOF or H
 *            seconds pass, then close them and print the final JSON.
 * Common: --port P (required) --tls 1.2|1.3 --ciphers LIST (TLS 1.2)
 *         --ciphersuites LIST (TLS 1.3) --groups LIST --sni NAME
 *         --cafile PEM (verify chain + name; default: no verification and no
 *         chain building) --legacy-pkey 0|1 (default 1, see legacy_pkey_engine)
 * Every loop is bounded by a count and by time; a watchdog alarm ends the
 * process if anything still hangs.
 */
#define _GNU_SOURCE
#define OPENSSL_SUPPRESS_DEPRECATED /* ENGINE API: see legacy_pkey_engine() */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)
#define MSG_LEN 64
#define MAX_SAMPLES 2000000L

/* ---- options ---------------------------------------------------------- */
static struct {
    const char *mode;
    int port;
    const char *tls;
    const char *ciphers;
    const char *ciphersuites;
    const char *groups;
    const char *sni;
    const char *cafile;
    int concurrency;
    int threads;
    double seconds;
    long max_conns;
    const char *direction;
    long max_mb;
    long count;
    long conns;
    double hold_seconds;
    double conn_timeout;
    int legacy_pkey;
    int resume;
    int prime_wait;
} opt = {
    .mode = NULL, .port = 0, .tls = "1.3", .ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256",
    .ciphersuites = "TLS_AES_128_GCM_SHA256", .groups = "X25519", .sni = "bench.example",
    .cafile = NULL, .concurrency = 32, .threads = 2, .seconds = 10.0, .max_conns = 10000000L,
    .direction = "up", .max_mb = 100000L, .count = 20000L, .conns = 1000L,
    .hold_seconds = 120.0, .conn_timeout = 5.0, .legacy_pkey = 1, .resume = 0, .prime_wait = 0,
};

static SSL_CTX *ctx;
static struct sockaddr_in target;
static char payload[MSG_LEN];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cpu_times(double *user, double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void on_alarm(int sig) {
    (void)sig;
    static const char m[] = "loadgen: watchdog expired\n";
    ssize_t r = write(2, m, sizeof m - 1);
    (void)r;
    _exit(3);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *sorted, long n, double p) {
    if (n <= 0) return 0.0;
    long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
    if (i >= n) i = n - 1;
    return sorted[i];
}

/*
 * OpenSSL 3.0 decodes every certificate's public key through the provider
 * decoder machinery (~100 us per certificate here), which made this client
 * cost more per handshake than the servers it measures. Registering the
 * built-in legacy EC, RSA and X25519 EVP_PKEY_METHODs through an in-process
 * ENGINE makes libcrypto take its pre-3.0 code path for those keys (parse,
 * verify, key share), with the same math. Client side only; the proxies are
 * untouched. --legacy-pkey 0 turns it off.
 */
static int legacy_meths(ENGINE *e, EVP_PKEY_METHOD **pm, const int **nids, int nid) {
    static const int ids[] = {EVP_PKEY_EC, EVP_PKEY_RSA, EVP_PKEY_X25519};
    (void)e;
    if (pm == NULL) {
        *nids = ids;
        return 3;
    }
    *pm = (EVP_PKEY_METHOD *)EVP_PKEY_meth_find(nid);
    return *pm != NULL;
}

static int legacy_pkey_engine(void) {
    ENGINE *e = ENGINE_new();
    if (e == NULL || !ENGINE_set_id(e, "loadgen-legacy-pkey") ||
        !ENGINE_set_name(e, "built-in legacy EC/RSA/X25519 pkey methods") ||
        !ENGINE_set_pkey_meths(e, legacy_meths) || !ENGINE_init(e) ||
        !ENGINE_register_pkey_meths(e))
        return -1;
    return 0;
}

static int accept_any_chain(X509_STORE_CTX *x, void *arg) {
    (void)x;
    (void)arg;
    return 1;
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess);

static SSL_CTX *make_ctx(void) {
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (c == NULL) return NULL;
    int v = strcmp(opt.tls, "1.2") == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(c, v);
    SSL_CTX_set_max_proto_version(c, v);
    if (opt.resume) {
        /* sessions reach on_new_session (it needs client caching on); each slot keeps its own */
        SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION);
        SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(c, on_new_session);
    } else {
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
        SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    }
    if (v == TLS1_2_VERSION && SSL_CTX_set_cipher_list(c, opt.ciphers) != 1) return NULL;
    if (SSL_CTX_set_ciphersuites(c, opt.ciphersuites) != 1) return NULL;
    if (SSL_CTX_set1_groups_list(c, opt.groups) != 1) return NULL;
    if (opt.cafile != NULL) {
        if (SSL_CTX_load_verify_locations(c, opt.cafile, NULL) != 1) return NULL;
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    } else {
        /* no chain building at all: OpenSSL would otherwise still run X509_verify_cert */
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_cert_verify_callback(c, accept_any_chain, NULL);
    }
    return c;
}

static int tcp_socket(int nonblock) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* ---- conn / idle: epoll engine ---------------------------------------- */
enum { S_FREE, S_CONNECTING, S_HANDSHAKE, S_WRITE, S_READ, S_HOLD };

typedef struct {
    int fd;
    int state;
    uint32_t events;
    SSL *ssl;
    double t0;
    int got;
    int reused;          /* this connection's handshake resumed a session */
    SSL_SESSION *sess;   /* --resume: the newest session this slot (client) was given */
} slot_t;

/* --resume: keep the newest session per slot (the SSL's app data); 1 = we keep the reference */
static int on_new_session(SSL *ssl, SSL_SESSION *sess) {
    slot_t *s = SSL_get_app_data(ssl);
    if (s == NULL) return 0;
    if (s->sess != NULL) SSL_SESSION_free(s->sess);
    s->sess = sess;
    return 1;
}

/* `slot` is NULL for the single-connection modes (never resumed) */
static SSL *new_ssl(int fd, slot_t *slot) {
    SSL *s = SSL_new(ctx);
    if (s == NULL) return NULL;
    SSL_set_fd(s, fd);
    SSL_set_tlsext_host_name(s, opt.sni);
    if (opt.cafile != NULL) SSL_set1_host(s, opt.sni);
    SSL_set_app_data(s, slot);
    if (slot != NULL && slot->sess != NULL && SSL_set_session(s, slot->sess) != 1) {
        SSL_free(s);
        return NULL;
    }
    SSL_set_connect_state(s);
    return s;
}

typedef struct {
    int ep;
    int nslots;
    int next_slot; /* idle mode: next slot to open */
    int hold;
    slot_t *slots;
    long started, limit, ok, in_flight;
    long fail_connect, fail_tls, fail_io, fail_timeout;
    long stalled; /* still in flight at the end and older than 1 s */
    long resumed; /* successful connections that resumed a session (0 without --resume) */
    double deadline;
    double *samples;
    long nsamples, cap;
    pthread_t th;
} worker_t;

static void slot_release(worker_t *w, slot_t *s, int clean) {
    if (s->ssl != NULL) {
        if (clean) SSL_shutdown(s->ssl); /* one non-blocking close_notify */
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    if (s->state != S_FREE && s->state != S_HOLD) w->in_flight--;
    s->state = S_FREE;
    s->events = 0;
}

static void set_events(worker_t *w, slot_t *s, uint32_t ev) {
    if (s->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = s};
    epoll_ctl(w->ep, s->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s->fd, &e);
    s->events = ev;
}

static void step(worker_t *w, slot_t *s);

static void start_conn(worker_t *w, slot_t *s) {
    if (now_s() >= w->deadline || w->started >= w->limit) return;
    w->started++;
    s->fd = tcp_socket(1);
    s->t0 = now_s();
    s->got = 0;
    s->reused = 0;
    s->events = 0;
    s->ssl = NULL;
    w->in_flight++;
    if (s->fd < 0) {
        s->state = S_CONNECTING;
        w->fail_connect++;
        slot_release(w, s, 0);
        return;
    }
    int r = connect(s->fd, (struct sockaddr *)&target, sizeof target);
    if (r < 0 && errno != EINPROGRESS) {
        s->state = S_CONNECTING;
        w->fail_connect++;
        slot_release(w, s, 0);
        return;
    }
    s->state = S_CONNECTING;
    set_events(w, s, EPOLLOUT);
}

static void start_next(worker_t *w, slot_t *s) {
    if (w->hold) {
        if (w->next_slot < w->nslots) start_conn(w, &w->slots[w->next_slot++]);
    } else {
        start_conn(w, s);
    }
}

/* Map an SSL result to epoll interest; returns 0 if we should wait, -1 on error. */
static int want(worker_t *w, slot_t *s, int r) {
    switch (SSL_get_error(s->ssl, r)) {
    case SSL_ERROR_WANT_READ: set_events(w, s, EPOLLIN); return 0;
    case SSL_ERROR_WANT_WRITE: set_events(w, s, EPOLLOUT); return 0;
    default: return -1;
    }
}

static void fail(worker_t *w, slot_t *s, long *counter) {
    (*counter)++;
    ERR_clear_error();
    slot_release(w, s, 0);
    start_next(w, s);
}

static void step(worker_t *w, slot_t *s) {
    int r;
    switch (s->state) {
    case S_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            fail(w, s, &w->fail_connect);
            return;
        }
        s->ssl = new_ssl(s->fd, s);
        if (s->ssl == NULL) { fail(w, s, &w->fail_tls); return; }
        s->state = S_HANDSHAKE;
    }
    /* fall through */
    case S_HANDSHAKE:
        r = SSL_do_handshake(s->ssl);
        if (r != 1) {
            if (want(w, s, r) < 0) fail(w, s, &w->fail_tls);
            return;
        }
        s->reused = SSL_session_reused(s->ssl);
        s->state = S_WRITE;
    /* fall through */
    case S_WRITE:
        r = SSL_write(s->ssl, payload, MSG_LEN);
        if (r <= 0) {
            if (want(w, s, r) < 0) fail(w, s, &w->fail_io);
            return;
        }
        s->state = S_READ;
    /* fall through */
    case S_READ: {
        char buf[MSG_LEN];
        while (s->got < MSG_LEN) {
            r = SSL_read(s->ssl, buf, MSG_LEN - s->got);
            if (r <= 0) {
                if (want(w, s, r) < 0) fail(w, s, &w->fail_io);
                return;
            }
            s->got += r;
        }
        double dt = now_s() - s->t0;
        w->ok++;
        w->resumed += s->reused;
        if (w->nsamples < w->cap) w->samples[w->nsamples++] = dt * 1e6;
        if (w->hold) {
            w->in_flight--;
            s->state = S_HOLD;
            set_events(w, s, EPOLLIN);
            start_next(w, s);
        } else {
            slot_release(w, s, 1);
            start_next(w, s);
        }
        return;
    }
    case S_HOLD: {
        char buf[256];
        r = SSL_read(s->ssl, buf, sizeof buf);
        if (r <= 0 && want(w, s, r) < 0) { /* the proxy closed a held connection */
            w->ok--;
            w->fail_io++;
            ERR_clear_error();
            slot_release(w, s, 0);
        }
        return;
    }
    default: return;
    }
}

/* Runs until the deadline (conn) or until every slot is open/failed (idle). */
static void *worker_run(void *arg) {
    worker_t *w = arg;
    struct epoll_event evs[256];
    if (w->hold) {
        int first = opt.concurrency < w->nslots ? opt.concurrency : w->nslots;
        for (int i = 0; i < first; i++) start_next(w, NULL);
    } else {
        for (int i = 0; i < w->nslots; i++) start_conn(w, &w->slots[i]);
    }
    double last_scan = now_s();
    for (;;) {
        int n = epoll_wait(w->ep, evs, 256, 20);
        for (int i = 0; i < n; i++) step(w, evs[i].data.ptr);
        double t = now_s();
        if (!w->hold && t >= w->deadline) break;
        if (w->hold && t >= w->deadline + opt.conn_timeout) break;
        if (t - last_scan > 0.1) {
            last_scan = t;
            for (int i = 0; i < w->nslots; i++) {
                slot_t *s = &w->slots[i];
                if (s->state != S_FREE && s->state != S_HOLD && t - s->t0 > opt.conn_timeout)
                    fail(w, s, &w->fail_timeout);
                else if (!w->hold && s->state == S_FREE)
                    start_conn(w, s); /* a slot whose socket()/connect() failed at once */
            }
        }
        if (w->in_flight == 0 && (w->hold ? w->next_slot >= w->nslots
                                          : (w->started >= w->limit || t >= w->deadline)))
            break;
    }
    double t_end = now_s();
    for (int i = 0; i < w->nslots; i++) {
        slot_t *s = &w->slots[i];
        if (s->state != S_FREE && s->state != S_HOLD && t_end - s->t0 > 1.0) w->stalled++;
    }
    return NULL;
}

static worker_t *make_worker(int nslots, long limit, double deadline, int hold) {
    worker_t *w = calloc(1, sizeof *w);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->nslots = nslots;
    w->slots = calloc((size_t)nslots, sizeof(slot_t));
    for (int i = 0; i < nslots; i++) w->slots[i].fd = -1;
    w->limit = limit;
    w->deadline = deadline;
    w->hold = hold;
    w->cap = MAX_SAMPLES;
    w->samples = malloc(sizeof(double) * (size_t)w->cap);
    if (w->ep < 0 || w->slots == NULL || w->samples == NULL) {
        fprintf(stderr, "loadgen: out of resources\n");
        exit(1);
    }
    return w;
}

static void print_conn_stats(const char *mode, worker_t **ws, int nw, double elapsed,
                             double cu0, double cs0, const char *extra) {
    long ok = 0, fc = 0, ft = 0, fi = 0, fto = 0, ns = 0, st = 0, rs = 0;
    for (int i = 0; i < nw; i++) {
        st += ws[i]->stalled;
        rs += ws[i]->resumed;
        ok += ws[i]->ok; fc += ws[i]->fail_connect; ft += ws[i]->fail_tls;
        fi += ws[i]->fail_io; fto += ws[i]->fail_timeout; ns += ws[i]->nsamples;
    }
    double *all = malloc(sizeof(double) * (size_t)(ns > 0 ? ns : 1));
    long k = 0;
    for (int i = 0; i < nw; i++) {
        memcpy(all + k, ws[i]->samples, sizeof(double) * (size_t)ws[i]->nsamples);
        k += ws[i]->nsamples;
    }
    qsort(all, (size_t)ns, sizeof(double), cmp_double);
    double cu, cs;
    cpu_times(&cu, &cs);
    double cpu = (cu - cu0) + (cs - cs0);
    printf("{\"mode\":\"%s\",\"ok\":%ld,\"failures\":%ld,\"fail_connect\":%ld,\"fail_tls\":%ld,"
           "\"fail_io\":%ld,\"fail_timeout\":%ld,\"stalled\":%ld,\"resumed\":%ld,\"elapsed_s\":%.4f,\"conns_per_s\":%.1f,"
           "\"conn_p50_us\":%.1f,\"conn_p99_us\":%.1f,\"cpu_s\":%.4f,"
           "\"cpu_us_per_conn\":%.1f%s}\n",
           mode, ok, fc + ft + fi + fto, fc, ft, fi, fto, st, rs, elapsed,
           elapsed > 0 ? (double)ok / elapsed : 0.0, pct(all, ns, 50), pct(all, ns, 99), cpu,
           ok > 0 ? cpu * 1e6 / (double)ok : 0.0, extra);
    fflush(stdout);
    free(all);
}

/* Start every worker's thread and wait for all of them. */
static void run_workers(worker_t **ws, int nt) {
    for (int i = 0; i < nt; i++) pthread_create(&ws[i]->th, NULL, worker_run, ws[i]);
    for (int i = 0; i < nt; i++) pthread_join(ws[i]->th, NULL);
}

/* Clear a worker's counters for the next phase; slots and their sessions stay. */
static void reset_worker(worker_t *w, long limit, double deadline) {
    w->started = w->ok = w->in_flight = 0;
    w->fail_connect = w->fail_tls = w->fail_io = w->fail_timeout = 0;
    w->stalled = w->resumed = w->nsamples = 0;
    w->limit = limit;
    w->deadline = deadline;
    for (int i = 0; i < w->nslots; i++)
        if (w->slots[i].state != S_FREE) slot_release(w, &w->slots[i], 0);
    w->in_flight = 0;
}

/* --resume: one full handshake per slot, so that every slot holds a session. */
static void prime_sessions(worker_t **ws, int nt, long *primed, long *failed) {
    double deadline = now_s() + 2 * opt.conn_timeout;
    for (int i = 0; i < nt; i++) reset_worker(ws[i], ws[i]->nslots, deadline);
    run_workers(ws, nt);
    *primed = *failed = 0;
    for (int i = 0; i < nt; i++) {
        for (int j = 0; j < ws[i]->nslots; j++) *primed += ws[i]->slots[j].sess != NULL;
        *failed += ws[i]->fail_connect + ws[i]->fail_tls + ws[i]->fail_io + ws[i]->fail_timeout;
    }
}

static int run_conn(void) {
    int nt = opt.threads < 1 ? 1 : opt.threads;
    if (nt > opt.concurrency) nt = opt.concurrency;
    worker_t **ws = calloc((size_t)nt, sizeof *ws);
    long lims[nt];
    for (int i = 0; i < nt; i++) {
        int slots = opt.concurrency / nt + (i < opt.concurrency % nt ? 1 : 0);
        lims[i] = opt.max_conns / nt + (i < opt.max_conns % nt ? 1 : 0);
        ws[i] = make_worker(slots, lims[i], 0.0, 0);
    }
    long primed = 0, prime_failed = 0;
    if (opt.resume) {
        prime_sessions(ws, nt, &primed, &prime_failed);
        if (opt.prime_wait) {
            printf("{\"primed\":%ld,\"prime_failures\":%ld}\n", primed, prime_failed);
            fflush(stdout);
            struct pollfd p = {.fd = 0, .events = POLLIN};
            poll(&p, 1, 60000); /* the caller's go line, EOF, or 60 s */
        }
    }
    double cu0, cs0;
    cpu_times(&cu0, &cs0);
    double t0 = now_s(), deadline = t0 + opt.seconds;
    for (int i = 0; i < nt; i++) reset_worker(ws[i], lims[i], deadline);
    run_workers(ws, nt);
    double elapsed = now_s() - t0;
    if (elapsed > opt.seconds) elapsed = opt.seconds; /* in-flight at the deadline are dropped */
    char extra[96];
    snprintf(extra, sizeof extra, ",\"primed\":%ld,\"prime_failures\":%ld", primed, prime_failed);
    print_conn_stats("conn", ws, nt, elapsed, cu0, cs0, extra);
    return 0;
}

static int run_idle(void) {
    double cu0, cs0;
    cpu_times(&cu0, &cs0);
    double t0 = now_s();
    worker_t *w = make_worker((int)opt.conns, opt.conns, t0 + opt.seconds, 1);
    worker_run(w);
    double elapsed = now_s() - t0;
    long held = 0;
    for (int i = 0; i < w->nslots; i++) held += w->slots[i].state == S_HOLD;
    printf("{\"ready\":true,\"held\":%ld,\"open_s\":%.3f}\n", held, elapsed);
    fflush(stdout);
    /* hold: wait for a line / EOF on stdin, bounded by --hold-seconds */
    struct pollfd p = {.fd = 0, .events = POLLIN};
    poll(&p, 1, (int)(opt.hold_seconds * 1000));
    /* count connections the proxy closed while held */
    struct epoll_event evs[256];
    int n;
    while ((n = epoll_wait(w->ep, evs, 256, 0)) > 0)
        for (int i = 0; i < n; i++) step(w, evs[i].data.ptr);
    char extra[64];
    held = 0;
    for (int i = 0; i < w->nslots; i++) held += w->slots[i].state == S_HOLD;
    snprintf(extra, sizeof extra, ",\"held_at_end\":%ld", held);
    for (int i = 0; i < w->nslots; i++)
        if (w->slots[i].state != S_FREE) slot_release(w, &w->slots[i], 1);
    print_conn_stats("idle", &w, 1, elapsed, cu0, cs0, extra);
    return 0;
}

/* ---- single connection: bulk and latency ------------------------------ */
static SSL *open_one(int *fdp) {
    int fd = tcp_socket(0);
    if (fd < 0) return NULL;
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) {
        perror("loadgen: connect");
        close(fd);
        return NULL;
    }
    SSL *s = new_ssl(fd, NULL);
    if (s == NULL || SSL_connect(s) != 1) {
        fprintf(stderr, "loadgen: handshake failed\n");
        ERR_print_errors_fp(stderr);
        if (s) SSL_free(s);
        close(fd);
        return NULL;
    }
    *fdp = fd;
    return s;
}

static void close_one(SSL *s, int fd) {
    SSL_shutdown(s);
    SSL_free(s);
    close(fd);
}

static int run_bulk_up(SSL *s, int fd, double cu0, double cs0) {
    static char chunk[16384];
    static char rbuf[65536];
    memset(chunk, 'u', sizeof chunk);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return 1;
    unsigned long long target_bytes = (unsigned long long)opt.max_mb * MIB, sent = 0, acks = 0;
    unsigned long long expected = 0;
    int sending = 1;
    double t0 = now_s(), deadline = t0 + opt.seconds, t_end = t0;
    for (;;) {
        double t = now_s();
        if (sending && sent % MIB == 0 && (sent >= target_bytes || t >= deadline)) {
            sending = 0;
            expected = sent / MIB;
        }
        if (!sending && acks >= expected) { t_end = t; break; }
        if (t > deadline + 30.0) { fprintf(stderr, "loadgen: bulk up timed out\n"); return 1; }
        struct pollfd p = {.fd = fd, .events = (short)(POLLIN | (sending ? POLLOUT : 0))};
        if (poll(&p, 1, 100) < 0) return 1;
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            for (int i = 0; i < 64; i++) {
                int r = SSL_read(s, rbuf, sizeof rbuf);
                if (r > 0) { acks += (unsigned long long)r; continue; }
                int e = SSL_get_error(s, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
                fprintf(stderr, "loadgen: bulk up read failed (%d)\n", e);
                return 1;
            }
        }
        if (sending && (p.revents & POLLOUT)) {
            for (int i = 0; i < 64 && (sent % MIB != 0 || now_s() < deadline || i == 0); i++) {
                if (sent >= target_bytes && sent % MIB == 0) break;
                int r = SSL_write(s, chunk, sizeof chunk);
                if (r > 0) { sent += (unsigned long long)r; continue; }
                int e = SSL_get_error(s, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
                fprintf(stderr, "loadgen: bulk up write failed (%d)\n", e);
                return 1;
            }
        }
    }
    double el = t_end - t0, cu, cs;
    cpu_times(&cu, &cs);
    printf("{\"mode\":\"bulk\",\"direction\":\"up\",\"bytes\":%llu,\"elapsed_s\":%.4f,"
           "\"mb_per_s\":%.1f,\"cpu_s\":%.4f}\n",
           sent, el, el > 0 ? (double)sent / 1e6 / el : 0.0, (cu - cu0) + (cs - cs0));
    return 0;
}

static int run_bulk_down(SSL *s, double cu0, double cs0) {
    static char rbuf[65536];
    if (SSL_write(s, "g", 1) != 1) { fprintf(stderr, "loadgen: write failed\n"); return 1; }
    unsigned long long target_bytes = (unsigned long long)opt.max_mb * MIB, got = 0;
    double t_first = 0, t_end = 0, deadline = now_s() + opt.seconds + 5.0;
    int first = 1;
    while (got < target_bytes) {
        int r = SSL_read(s, rbuf, sizeof rbuf);
        if (r <= 0) { fprintf(stderr, "loadgen: bulk down read failed\n"); return 1; }
        double t = now_s();
        if (first) { first = 0; t_first = t; deadline = t + opt.seconds; continue; }
        got += (unsigned long long)r;
        t_end = t;
        if (t >= deadline) break;
    }
    double el = t_end - t_first, cu, cs;
    cpu_times(&cu, &cs);
    printf("{\"mode\":\"bulk\",\"direction\":\"down\",\"bytes\":%llu,\"elapsed_s\":%.4f,"
           "\"mb_per_s\":%.1f,\"cpu_s\":%.4f}\n",
           got, el, el > 0 ? (double)got / 1e6 / el : 0.0, (cu - cu0) + (cs - cs0));
    return 0;
}

static int ping(SSL *s) {
    char buf[MSG_LEN];
    if (SSL_write(s, payload, MSG_LEN) != MSG_LEN) return -1;
    int got = 0;
    while (got < MSG_LEN) {
        int r = SSL_read(s, buf + got, MSG_LEN - got);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

static int run_latency(SSL *s, double cu0, double cs0) {
    long warm = opt.count / 10 < 200 ? opt.count / 10 : 200;
    for (long i = 0; i < warm; i++)
        if (ping(s) < 0) { fprintf(stderr, "loadgen: ping failed\n"); return 1; }
    double *lat = malloc(sizeof(double) * (size_t)(opt.count > 0 ? opt.count : 1));
    long n = 0;
    double deadline = now_s() + opt.seconds;
    while (n < opt.count && now_s() < deadline) {
        double t0 = now_s();
        if (ping(s) < 0) { fprintf(stderr, "loadgen: ping failed\n"); return 1; }
        lat[n++] = (now_s() - t0) * 1e6;
    }
    double sum = 0;
    for (long i = 0; i < n; i++) sum += lat[i];
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    double cu, cs;
    cpu_times(&cu, &cs);
    printf("{\"mode\":\"latency\",\"count\":%ld,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
           "\"max_us\":%.1f,\"mean_us\":%.1f,\"cpu_s\":%.4f}\n",
           n, pct(lat, n, 50), pct(lat, n, 90), pct(lat, n, 99), n ? lat[n - 1] : 0.0,
           n ? sum / (double)n : 0.0, (cu - cu0) + (cs - cs0));
    free(lat);
    return 0;
}

/* ---- main -------------------------------------------------------------- */
static void usage(void) {
    fprintf(stderr,
            "usage: loadgen conn|bulk|latency|idle --port P [--tls 1.2|1.3] [--ciphers L]\n"
            "  [--ciphersuites L] [--groups L] [--sni N] [--cafile F] [--concurrency N]\n"
            "  [--threads T] [--seconds S] [--max-conns M] [--direction up|down] [--max-mb M]\n"
            "  [--count K] [--conns N] [--hold-seconds H] [--conn-timeout S]\n"
            "  [--legacy-pkey 0|1] [--resume 0|1] [--prime-wait 0|1]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    opt.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--tls")) opt.tls = v;
        else if (!strcmp(k, "--ciphers")) opt.ciphers = v;
        else if (!strcmp(k, "--ciphersuites")) opt.ciphersuites = v;
        else if (!strcmp(k, "--groups")) opt.groups = v;
        else if (!strcmp(k, "--sni")) opt.sni = v;
        else if (!strcmp(k, "--cafile")) opt.cafile = v;
        else if (!strcmp(k, "--concurrency")) opt.concurrency = atoi(v);
        else if (!strcmp(k, "--threads")) opt.threads = atoi(v);
        else if (!strcmp(k, "--seconds")) opt.seconds = atof(v);
        else if (!strcmp(k, "--max-conns")) opt.max_conns = atol(v);
        else if (!strcmp(k, "--direction")) opt.direction = v;
        else if (!strcmp(k, "--max-mb")) opt.max_mb = atol(v);
        else if (!strcmp(k, "--count")) opt.count = atol(v);
        else if (!strcmp(k, "--conns")) opt.conns = atol(v);
        else if (!strcmp(k, "--hold-seconds")) opt.hold_seconds = atof(v);
        else if (!strcmp(k, "--conn-timeout")) opt.conn_timeout = atof(v);
        else if (!strcmp(k, "--legacy-pkey")) opt.legacy_pkey = atoi(v);
        else if (!strcmp(k, "--resume")) opt.resume = atoi(v);
        else if (!strcmp(k, "--prime-wait")) opt.prime_wait = atoi(v);
        else usage();
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.concurrency < 1 || opt.seconds <= 0 ||
        opt.conns < 1 || opt.count < 1 || opt.max_mb < 1 || opt.max_conns < 1)
        usage();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(opt.seconds + opt.hold_seconds + 2 * opt.conn_timeout + 60));
    memset(payload, 'p', sizeof payload);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt.port);
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (opt.legacy_pkey && legacy_pkey_engine() < 0) {
        fprintf(stderr, "loadgen: cannot register the legacy pkey engine\n");
        return 2;
    }
    ctx = make_ctx();
    if (ctx == NULL) {
        fprintf(stderr, "loadgen: bad TLS options\n");
        ERR_print_errors_fp(stderr);
        return 2;
    }
    if (!strcmp(opt.mode, "conn")) return run_conn();
    if (!strcmp(opt.mode, "idle")) return run_idle();
    double cu0, cs0;
    cpu_times(&cu0, &cs0);
    int fd;
    int rc = 2;
    if (!strcmp(opt.mode, "bulk")) {
        SSL *s = open_one(&fd);
        if (s == NULL) return 1;
        if (!strcmp(opt.direction, "up")) rc = run_bulk_up(s, fd, cu0, cs0);
        else if (!strcmp(opt.direction, "down")) rc = run_bulk_down(s, cu0, cs0);
        else usage();
        close_one(s, fd);
        return rc;
    }
    if (!strcmp(opt.mode, "latency")) {
        SSL *s = open_one(&fd);
        if (s == NULL) return 1;
        rc = run_latency(s, cu0, cs0);
        close_one(s, fd);
        return rc;
    }
    usage();
    return 2;
}
