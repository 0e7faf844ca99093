/* server/conn.c - a client connection: its read buffer and its life on
 * the hub between requests.
 *
 * Connections live on the hub with no green thread and no Python state
 * while they wait for a request head (state SRV_READING): a struct, a
 * read buffer, one ev_io and one ev_timer. Bytes are read in the hub
 * context and a head that is not yet whole is judged there by the
 * parser (srv_conn_try_parse); only a complete head gets a green thread
 * (SRV_BUSY), which runs the request with the GIL and hands the
 * connection back (srv_conn_resume) or closes it. With max_size requests
 * running, a complete head waits in a FIFO (SRV_QUEUED) until one ends.
 *
 * The timer of a reading connection is the keep-alive timeout while its
 * buffer is empty and the header timeout once a request has started to
 * arrive; on expiry an idle connection is closed silently and a partial
 * request gets 408.
 *
 * The read buffer grows in one place, srv_conn_room, and never past
 * max_head_size plus SRV_BUF_SLACK: the parser gives its verdict once it
 * holds max_head_size bytes, and body reads (input.c) hand out every
 * buffered byte before asking for more, so neither needs a bigger
 * buffer. It is made when bytes arrive, SRV_BUF_HEAD bytes for a head
 * (most are shorter) and at least SRV_BUF_BODY for a body, and freed
 * whenever the connection goes back to waiting with nothing buffered:
 * an idle keep-alive connection is its struct and watchers, a few
 * hundred bytes (it was 4.3 KiB with an 8 KiB buffer kept).
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "server/debug.h"
#include "server/py.h"

#define SRV_BUF_HEAD 1024  /* malloc's per-thread cache still serves it */
#define SRV_BUF_BODY 8192  /* body reads: fewer, larger recv calls */
#define SRV_BUF_SLACK 8192 /* room past max_head_size */

/* ---- the read buffer ------------------------------------------------ */

/* Room for at least one more byte at the end of c->buf, in a buffer of
 * `least` bytes or more, growing it as needed: doubling from least (or
 * SRV_BUF_HEAD), never past max_head_size + SRV_BUF_SLACK. Returns 0, or
 * -1 with errno ENOBUFS (full at that bound) or ENOMEM. Either context;
 * allocates with PyMem_Raw (no GIL needed). */
static int srv_conn_room(struct srv_conn *c, size_t least)
{
    size_t limit = c->srv->opt.limits.max_head_size, cap;
    char *b;

    if (c->len < c->cap && c->cap >= least)
        return 0;
    if (limit == 0 || limit > INT_MAX) /* as the parser reads it */
        limit = limit ? INT_MAX : SRV_DEFAULT_MAX_HEAD_SIZE;
    limit += SRV_BUF_SLACK;
    if (c->cap >= limit) {
        errno = ENOBUFS;
        return -1;
    }
    cap = c->cap ? c->cap * 2 : SRV_BUF_HEAD;
    if (cap < least)
        cap = least;
    if (cap > limit)
        cap = limit;
    b = PyMem_RawRealloc(c->buf, cap);
    if (!b) {
        errno = ENOMEM;
        return -1;
    }
    c->buf = b;
    c->cap = cap;
    return 0;
}

/* Reads more bytes into c->buf. Green thread, GIL held (released while
 * parked). Returns bytes read, 0 at EOF, -1 with errno (ETIMEDOUT,
 * ENOBUFS from srv_conn_room, or the socket's error). */
int srv_conn_fill(struct srv_conn *c, double timeout)
{
    ssize_t n;

    if (srv_conn_room(c, SRV_BUF_BODY) < 0)
        return -1;
    for (;;) {
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
        if (n >= 0) {
            c->len += (size_t)n;
            return (int)n;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -1;
        if (srv_wait(c->fd, GREEN_READ, timeout) < 0)
            return -1;
    }
}

/* ---- the connection list and the queue ------------------------------ */

static void srv_queue_remove(struct srv_conn *c)
{
    struct srv_server *srv = c->srv;
    struct srv_conn **pp = &srv->queue_head, *prev = NULL;

    while (*pp && *pp != c) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp)
        return;
    *pp = c->qnext;
    if (srv->queue_tail == c)
        srv->queue_tail = prev;
    c->qnext = NULL;
}

/* Takes c off srv->conns (its memory stays). */
static void srv_conn_unlink(struct srv_conn *c)
{
    struct srv_server *srv = c->srv;

    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

void srv_conn_close(struct srv_conn *c)
{
    struct srv_server *srv = c->srv;

    if (c->state == SRV_QUEUED)
        srv_queue_remove(c);
    ev_io_stop(srv->loop, &c->io);
    ev_timer_stop(srv->loop, &c->timer);
    srv_conn_unlink(c);
    if (c->reset) {
        struct linger now = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &now, sizeof now);
    }
    close(c->fd);
    PyMem_RawFree(c->buf);
    PyMem_RawFree(c);
    srv_dbg_conns--;
}

/* A connection waiting for a request head that is owed an answer: one
 * that never had a request (its client connected to send one), or whose
 * next request has begun to arrive (buffered, or still in the socket). */
static int srv_conn_owed(struct srv_conn *c)
{
    char byte;

    return c->requests == 0 || c->len > 0 ||
           recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Seconds an idle keep-alive connection in use just before a stop stays
 * open for its next request (srv_conn_linger). */
#define SRV_STOP_LINGER 0.5

/* An idle keep-alive connection when a stop begins. Closing it at once
 * races with a client that sends its next request on it at that moment
 * (a proxy's pool does so all the time): the request meets a reset, and
 * a proxy may not send a POST on to another server. A connection used
 * in the last SRV_STOP_LINGER seconds is therefore kept until it has
 * been idle that long, and a request that comes meanwhile is served
 * with Connection: close; one idle for longer is closed now. */
static void srv_conn_linger(struct srv_conn *c)
{
    struct ev_loop *loop = c->srv->loop;
    double idle = c->srv->opt.keepalive - ev_timer_remaining(loop, &c->timer);

    if (!ev_is_active(&c->timer) || idle >= SRV_STOP_LINGER) {
        srv_conn_close(c);
        return;
    }
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, SRV_STOP_LINGER - idle, 0.);
    ev_timer_start(loop, &c->timer);
}

/* A stop began: queued requests (never started) get 503 and their
 * connections close; running requests keep theirs until they finish;
 * connections owed a request are kept so it is served (with
 * Connection: close) rather than reset - with the listener gone,
 * nothing new arrives, and srv_conns_owed bounds how long they may
 * take - and idle keep-alive connections linger or close
 * (srv_conn_linger). */
void srv_conns_close_idle(struct srv_server *srv)
{
    struct srv_conn *c, *next;

    for (c = srv->conns; c; c = next) {
        next = c->next;
        if (c->state == SRV_QUEUED) {
            srv_send_error(c, 503, "the server is shutting down");
            srv_conn_close(c);
        } else if (c->state == SRV_READING && !srv_conn_owed(c)) {
            srv_conn_linger(c);
        }
    }
}

/* Waiting for its next request, with none of it buffered. */
static int srv_conn_idle(const struct srv_conn *c)
{
    return c->state == SRV_READING && c->requests > 0 && c->len == 0;
}

/* The server ran out of fds (accept.c): up to max idle keep-alive
 * connections close, those idle longest, as at a stop or their timeout
 * (a client must expect that between requests); one whose next request
 * is already in the socket is kept. Their timers all started from the
 * same keep-alive timeout, so the least time left is the longest idle.
 * One pass keeps the max oldest seen so far (at most ten times a
 * second: the accept pause). */
size_t srv_conns_drain_idle(struct srv_server *srv, size_t max)
{
    struct srv_conn *pick[64];
    double left[64];
    size_t n = 0, worst = 0, closed = 0;

    if (max > 64)
        max = 64;
    for (struct srv_conn *c = srv->conns; max && c; c = c->next) {
        double t;
        if (!srv_conn_idle(c))
            continue;
        t = ev_is_active(&c->timer) ? ev_timer_remaining(srv->loop, &c->timer) : 0;
        if (n == max && t >= left[worst])
            continue;
        if (n < max)
            worst = n++;
        pick[worst] = c;
        left[worst] = t;
        if (n == max) /* full: find the youngest kept, next to replace */
            for (size_t i = 0; i < n; i++)
                if (left[i] > left[worst])
                    worst = i;
    }
    for (size_t i = 0; i < n; i++)
        if (!srv_conn_owed(pick[i])) {
            srv_conn_close(pick[i]);
            closed++;
        }
    return closed;
}

size_t srv_conns_owed(const struct srv_server *srv, int *arriving)
{
    size_t n = 0;

    *arriving = 0;
    for (const struct srv_conn *c = srv->conns; c; c = c->next)
        if (c->state == SRV_READING) {
            n++;
            *arriving |= c->len > 0;
        }
    return n;
}

/* The server returns: nobody serves any connection now. A connection
 * whose (abandoned) green thread still points at it is only unlinked. */
void srv_conns_close_all(struct srv_server *srv)
{
    while (srv->conns) {
        struct srv_conn *c = srv->conns;
        if (c->state == SRV_BUSY)
            srv_conn_unlink(c);
        else
            srv_conn_close(c);
    }
}

/* ---- waiting for a request head in the hub context ------------------ */

static void srv_conn_arm_timer(struct srv_conn *c)
{
    struct srv_server *srv = c->srv;
    double t = c->len ? srv->opt.header_timeout : srv->opt.keepalive;

    if (c->requests == 0 && !c->len)
        t = srv->opt.header_timeout; /* a new connection owes us a request */
    ev_timer_stop(srv->loop, &c->timer);
    if (t > 0) {
        ev_timer_set(&c->timer, t, 0.);
        ev_timer_start(srv->loop, &c->timer);
    }
}

void srv_conn_buf_free(struct srv_conn *c)
{
    PyMem_RawFree(c->buf);
    c->buf = NULL;
    c->cap = c->off = c->len = 0;
}

/* Back to waiting for a request head in the hub context (from a green
 * thread that finished a response on a keep-alive connection). */
void srv_conn_resume(struct srv_conn *c)
{
    if (!c->len) /* nothing of the next request yet: idle, no buffer */
        srv_conn_buf_free(c);
    c->state = SRV_READING;
    ev_io_start(c->srv->loop, &c->io);
    srv_conn_arm_timer(c);
}

static void srv_dispatch(struct srv_conn *c)
{
    struct srv_server *srv = c->srv;
    struct green_attr attr = {0, "wsgi-request"};
    struct green *g;

    ev_io_stop(srv->loop, &c->io);
    ev_timer_stop(srv->loop, &c->timer);
    c->state = SRV_BUSY;
    g = G.spawn(srv_request_green, c, &attr);
    if (!g) {
        srv_send_error(c, 503, "no memory for another request");
        srv_conn_close(c);
        return;
    }
    G.detach(g);
    srv->active++;
    srv_accept_update(srv);
}

/* A complete request when max_size requests are already running: it
 * waits, in arrival order, for srv_request_done to make room. Its bytes
 * stay buffered; the client meanwhile sees a slow answer, not a refusal
 * (the same as eventlet's pool of max_size green threads). */
static void srv_enqueue(struct srv_conn *c)
{
    struct srv_server *srv = c->srv;

    ev_io_stop(srv->loop, &c->io);
    ev_timer_stop(srv->loop, &c->timer);
    c->state = SRV_QUEUED;
    c->qnext = NULL;
    if (srv->queue_tail)
        srv->queue_tail->qnext = c;
    else
        srv->queue_head = c;
    srv->queue_tail = c;
}

/* Called by a request's green thread when it is done. */
void srv_request_done(struct srv_server *srv)
{
    srv->active--;
    /* Room for a queued request: it starts now (spawning does not switch,
     * so this is safe from the finishing green thread). */
    while (srv->queue_head && srv->active < srv->opt.max_size && !srv->stopping) {
        struct srv_conn *c = srv->queue_head;
        srv->queue_head = c->qnext;
        if (!srv->queue_head)
            srv->queue_tail = NULL;
        c->qnext = NULL;
        srv_dispatch(c);
    }
    srv_accept_update(srv);
}

/* Whether buf[0..len) holds a blank line (CRLF CRLF): the end of a head.
 * Usually the head is all a read brought, so its end is looked at first;
 * glibc's memmem cost 500 instructions of every request. */
static int srv_head_whole(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;

    if (len >= 4 && memcmp(end - 4, "\r\n\r\n", 4) == 0)
        return 1;
    while (end - p >= 4 && (p = memchr(p + 1, '\n', (size_t)(end - p - 3)))) {
        if (p[-1] == '\r' && p[1] == '\r' && p[2] == '\n')
            return 1;
    }
    return 0;
}

/* Parses what the buffer holds. Returns 1 if a request was dispatched,
 * queued or the connection closed, 0 if more bytes are needed. */
static int srv_conn_try_parse(struct srv_conn *c)
{
    struct srv_server *srv = c->srv;
    struct srv_request req;
    int n;

    /* A buffer that starts with a request line and holds a blank line
     * is a whole head, or a malformed one: the green thread's parse
     * (request.c), the only one it needs, serves it or answers the
     * error. Parsing here as well cost 15% of a hello request's
     * instructions. Anything else - a head still arriving, leading
     * empty lines - gets the parser's verdict here, so a partial head
     * that already breaks a limit is refused at once, with no green
     * thread. */
    if (c->buf[0] == '\r' || !srv_head_whole(c->buf, c->len)) {
        memset(&req, 0, sizeof req);
        req.headers = srv->scratch;
        req.nheaders = srv->nscratch;
        n = srv_parse_request(c->buf, c->len, &req, &srv->opt.limits);
        if (n == -2)
            return 0;
        if (n < 0) {
            srv_send_error(c, req.status, req.error);
            srv_conn_close(c);
            return 1;
        }
    }
    if (srv->active < srv->opt.max_size)
        srv_dispatch(c);
    else if (!srv->stopping)
        srv_enqueue(c);
    else {   /* the queue is not served while stopping (srv_request_done) */
        srv_send_error(c, 503, "the server is shutting down");
        srv_conn_close(c);
    }
    return 1;
}

static void srv_conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct srv_conn *c = w->data;
    size_t had = c->len;
    ssize_t n;

    if (srv_conn_room(c, 0) < 0) {
        /* The parser refuses long heads itself once it holds
         * max_head_size bytes; this only bounds a client whose garbage
         * it never finishes. Out of memory: close without a word. */
        if (errno == ENOBUFS)
            srv_send_error(c, 431, "request head too large");
        srv_conn_close(c);
        return;
    }
    n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        srv_conn_close(c); /* EOF or reset between requests: nothing lost */
        return;
    }
    c->len += (size_t)n;
    /* A full head buffer may leave bytes waiting: read on, up to a body
     * buffer's worth, so that a body sent with its head is checked
     * before the app runs (input.c), as when every buffer began large. */
    while (c->len == c->cap && c->cap < SRV_BUF_BODY &&
           srv_conn_room(c, SRV_BUF_BODY) == 0) {
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
        if (n <= 0)
            break; /* EAGAIN; an EOF or error shows on the next call */
        c->len += (size_t)n;
    }
    if (srv_conn_try_parse(c))
        return;
    /* A request began on a keep-alive connection: its head now gets the
     * header timeout. A new connection's clock started at accept and
     * keeps running: a slow first byte buys no more time. */
    if (had == 0 && c->requests > 0)
        srv_conn_arm_timer(c);
}

static void srv_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct srv_conn *c = w->data;

    if (c->len)
        srv_send_error(c, 408, "the request head did not arrive in time");
    srv_conn_close(c);
}

/* The peer's address as text for REMOTE_ADDR, REMOTE_PORT and the log
 * (empty for a Unix socket). */
static void srv_conn_peer(struct srv_conn *c, const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, c->remote_addr, sizeof c->remote_addr);
        snprintf(c->remote_port, sizeof c->remote_port, "%u", ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, c->remote_addr, sizeof c->remote_addr);
        snprintf(c->remote_port, sizeof c->remote_port, "%u", ntohs(a->sin6_port));
    }
}

/* A connection accepted on fd starts waiting for its first request head.
 * Closes fd if there is no memory for it. */
void srv_conn_new(struct srv_listener *l, int fd, const struct sockaddr_storage *ss)
{
    struct srv_server *srv = l->srv;
    struct srv_conn *c = PyMem_RawCalloc(1, sizeof *c);

    if (!c) {
        close(fd);
        return;
    }
    srv_dbg_conns++;
    c->srv = srv;
    c->lst = l;
    c->fd = fd;
    c->state = SRV_READING;
    srv_conn_peer(c, ss);
    c->trusted = srv_fwd_trusted(srv, ss);
    if (ss->ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    ev_io_init(&c->io, srv_conn_read_cb, fd, EV_READ);
    c->io.data = c;
    ev_init(&c->timer, srv_conn_timer_cb);
    c->timer.data = c;
    c->next = srv->conns;
    if (c->next)
        c->next->prev = c;
    srv->conns = c;
    ev_io_start(srv->loop, &c->io);
    srv_conn_arm_timer(c);
}
