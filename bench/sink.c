/*
 * sink: the benchmark's plain-TCP backend (what both proxies forward to).
 *
 * One epoll thread, three listeners on 127.0.0.1 (ephemeral ports, printed
 * on stdout as "echo P" / "discard P" / "stream P"):
 *   echo     returns every byte it receives;
 *   discard  throws received bytes away and writes one ack byte per full
 *            MiB received, so a client can time an upload end to end;
 *   stream   writes an endless stream of bytes (and discards any input).
 * Exits on SIGTERM/SIGINT, or after --max-seconds (default 3600).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)
#define BUFSZ 65536

enum { M_ECHO, M_DISCARD, M_STREAM, M_COUNT };
static const char *mode_names[M_COUNT] = {"echo", "discard", "stream"};

struct conn {
    int fd;
    int mode;
    int listener;
    uint32_t events;
    size_t off, len;           /* echo: pending bytes buf[off..len) */
    unsigned long long count;  /* discard: bytes received */
    unsigned long long acked;  /* discard: ack bytes owed so far (sent + pending) */
    size_t ack_pending;
    char *buf;
};

static volatile sig_atomic_t stop_flag;
static char stream_buf[BUFSZ];
static char ack_buf[4096];
static int ep;

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_events(struct conn *c, uint32_t ev) {
    if (c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
}

static void conn_close(struct conn *c) {
    close(c->fd);
    free(c->buf);
    free(c);
}

/* Returns 0 to keep the connection, -1 to close it. */
static int flush_echo(struct conn *c) {
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(c, EPOLLOUT);
                return 0;
            }
            return -1;
        }
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    set_events(c, EPOLLIN);
    return 0;
}

static int flush_acks(struct conn *c) {
    while (c->ack_pending > 0) {
        size_t k = c->ack_pending < sizeof ack_buf ? c->ack_pending : sizeof ack_buf;
        ssize_t n = send(c->fd, ack_buf, k, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(c, EPOLLIN | EPOLLOUT);
                return 0;
            }
            return -1;
        }
        c->ack_pending -= (size_t)n;
    }
    set_events(c, EPOLLIN);
    return 0;
}

static int handle(struct conn *c, uint32_t ev) {
    if (c->mode == M_ECHO) {
        if (c->len > 0) return flush_echo(c);
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            ssize_t n = recv(c->fd, c->buf, BUFSZ, 0);
            if (n == 0) return -1;
            if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
            c->off = 0;
            c->len = (size_t)n;
            return flush_echo(c);
        }
        return 0;
    }
    if (c->mode == M_DISCARD) {
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            for (int i = 0; i < 16; i++) {
                ssize_t n = recv(c->fd, c->buf, BUFSZ, 0);
                if (n == 0) return -1;
                if (n < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    return -1;
                }
                c->count += (unsigned long long)n;
            }
            unsigned long long owed = c->count / MIB;
            if (owed > c->acked) {
                c->ack_pending += (size_t)(owed - c->acked);
                c->acked = owed;
            }
        }
        return flush_acks(c);
    }
    /* M_STREAM */
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t n = recv(c->fd, c->buf, BUFSZ, 0);
        if (n == 0) return -1;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    }
    if (ev & EPOLLOUT) {
        for (int i = 0; i < 16; i++) {
            ssize_t n = send(c->fd, stream_buf, BUFSZ, MSG_NOSIGNAL);
            if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
    }
    return 0;
}

static void accept_all(struct conn *l) {
    for (int i = 0; i < 64; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL || (c->buf = malloc(BUFSZ)) == NULL) {
            free(c);
            close(fd);
            return;
        }
        c->fd = fd;
        c->mode = l->mode;
        c->events = c->mode == M_STREAM ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
        struct epoll_event e = {.events = c->events, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) conn_close(c);
    }
}

int main(int argc, char **argv) {
    double max_seconds = 3600.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--max-seconds") == 0 && i + 1 < argc) {
            max_seconds = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--max-seconds S]\n", argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    memset(stream_buf, 'x', sizeof stream_buf);
    memset(ack_buf, 'A', sizeof ack_buf);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) { perror("epoll_create1"); return 1; }

    static struct conn listeners[M_COUNT];
    for (int m = 0; m < M_COUNT; m++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t alen = sizeof a;
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0 ||
            getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
            perror("listen");
            return 1;
        }
        listeners[m] = (struct conn){.fd = fd, .mode = m, .listener = 1, .events = EPOLLIN};
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &listeners[m]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        printf("%s %d\n", mode_names[m], ntohs(a.sin_port));
    }
    fflush(stdout);

    double deadline = now_s() + max_seconds;
    struct epoll_event evs[256];
    while (!stop_flag && now_s() < deadline) {
        int n = epoll_wait(ep, evs, 256, 500);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->listener) {
                accept_all(c);
            } else if (handle(c, evs[i].events) < 0) {
                conn_close(c);
            }
        }
    }
    return 0;
}
