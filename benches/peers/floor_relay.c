/*
 * floor_relay: the least a user-space TCP relay can do per message, as a floor for
 * `../shared/peers-bench` (issue 16). No TLS, no authorization, no allocation per message:
 * one thread, level-triggered epoll, and per message one read and one write per direction
 * (the same syscalls per request that meshproxy makes, minus the crypto and the runtime).
 * Run as `relay-floor` through `benches/peers/floor-relay.sh`; a chain of two of these shows
 * what any proxy pair costs on this machine before it does any work of its own.
 *
 * Usage: floor_relay LISTEN_PORT:TARGET_PORT [...]   (127.0.0.1 only)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* As large as meshproxy's largest read (copy::MAX_BUF), so bulk transfers are compared fairly. */
#define BUF (256 * 1024)
#define MAX_LISTENERS 8

struct end {
    int fd;
    int listener; /* 1: a listening socket (target in `target`) */
    int target;
    struct end *peer;
    char *pend; /* bytes read from the peer not yet written to this end */
    size_t plen, poff;
    int rd_done; /* EOF read on this end */
    int dead;
};

static int ep;
static char buf[BUF];
static struct end *dead[4096];
static int ndead;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void set_events(struct end *e) {
    struct epoll_event ev = {0};
    ev.data.ptr = e;
    if (!e->rd_done && !(e->peer && e->peer->plen))
        ev.events |= EPOLLIN;
    if (e->plen)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &ev) < 0)
        die("epoll_ctl mod");
}

static void kill_pair(struct end *e) {
    struct end *ends[2] = {e, e->peer};
    for (int i = 0; i < 2; i++) {
        if (ends[i]->dead)
            continue;
        ends[i]->dead = 1;
        close(ends[i]->fd);
        if (ndead < (int)(sizeof dead / sizeof dead[0]))
            dead[ndead++] = ends[i];
    }
}

static int nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int tcp_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    return fd < 0 ? -1 : nodelay(fd);
}

static void add(struct end *e, unsigned events) {
    struct epoll_event ev = {.events = events, .data.ptr = e};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, e->fd, &ev) < 0)
        die("epoll_ctl add");
}

static void on_accept(struct end *l) {
    int c = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK);
    if (c < 0)
        return;
    nodelay(c);
    int u = tcp_socket();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(l->target)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* A blocking connect: on loopback it completes within the call. */
    if (u < 0 || connect(u, (struct sockaddr *)&a, sizeof a) < 0) {
        close(c);
        if (u >= 0)
            close(u);
        return;
    }
    if (fcntl(u, F_SETFL, fcntl(u, F_GETFL) | O_NONBLOCK) < 0) {
        close(c);
        close(u);
        return;
    }
    struct end *x = calloc(2, sizeof *x);
    if (!x)
        die("calloc");
    x[0].fd = c;
    x[1].fd = u;
    x[0].peer = &x[1];
    x[1].peer = &x[0];
    add(&x[0], EPOLLIN);
    add(&x[1], EPOLLIN);
}

static void on_readable(struct end *e) {
    /* Reached through EPOLLHUP while the peer still holds unwritten bytes: read once it drains. */
    if (e->peer->plen)
        return;
    ssize_t n = read(e->fd, buf, BUF);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            kill_pair(e);
        return;
    }
    struct end *p = e->peer;
    if (n == 0) {
        e->rd_done = 1;
        shutdown(p->fd, SHUT_WR);
        if (p->rd_done)
            kill_pair(e);
        else
            set_events(e);
        return;
    }
    ssize_t w = write(p->fd, buf, (size_t)n);
    if (w < 0) {
        if (errno != EAGAIN) {
            kill_pair(e);
            return;
        }
        w = 0;
    }
    if (w < n) { /* keep the rest for the peer, stop reading until it drains */
        p->pend = malloc((size_t)(n - w));
        if (!p->pend)
            die("malloc");
        memcpy(p->pend, buf + w, (size_t)(n - w));
        p->plen = (size_t)(n - w);
        p->poff = 0;
        set_events(p);
        set_events(e);
    }
}

static void on_writable(struct end *e) {
    ssize_t w = write(e->fd, e->pend + e->poff, e->plen - e->poff);
    if (w < 0) {
        if (errno != EAGAIN)
            kill_pair(e);
        return;
    }
    e->poff += (size_t)w;
    if (e->poff == e->plen) {
        free(e->pend);
        e->pend = NULL;
        e->plen = e->poff = 0;
        set_events(e);
        set_events(e->peer);
    }
}

int main(int argc, char **argv) {
    if (argc < 2 || argc - 1 > MAX_LISTENERS) {
        fprintf(stderr, "usage: floor_relay LISTEN_PORT:TARGET_PORT [...] (at most %d)\n",
                MAX_LISTENERS);
        return 2;
    }
    /* A peer that closed turns a write into EPIPE (the pair is closed), not a fatal signal. */
    signal(SIGPIPE, SIG_IGN);
    ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    static struct end listeners[MAX_LISTENERS];
    for (int i = 1; i < argc; i++) {
        int lp, tp;
        if (sscanf(argv[i], "%d:%d", &lp, &tp) != 2 || lp <= 0 || lp > 65535 || tp <= 0 ||
            tp > 65535) {
            fprintf(stderr, "floor_relay: %s is not LISTEN_PORT:TARGET_PORT\n", argv[i]);
            return 2;
        }
        int fd = tcp_socket();
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(lp)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0)
            die("bind/listen");
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        struct end *l = &listeners[i - 1];
        l->fd = fd;
        l->listener = 1;
        l->target = tp;
        add(l, EPOLLIN);
    }
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct end *e = evs[i].data.ptr;
            if (e->dead)
                continue;
            if (e->listener) {
                on_accept(e);
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                on_writable(e);
            if (!e->dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_readable(e);
        }
        /* free pairs only once nothing in this batch can point at them */
        for (int i = 0; i < ndead; i++) {
            struct end *d = dead[i];
            free(d->pend);
            d->pend = NULL;
        }
        for (int i = 0; i < ndead; i++) {
            struct end *d = dead[i];
            struct end *first = d < d->peer ? d : d->peer;
            if (d == first)
                free(first);
        }
        ndead = 0;
    }
}
