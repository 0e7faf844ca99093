/* server/serve.c - the listening socket, connections, and shutdown.
 *
 * Connections live on the hub with no green thread and no Python state
 * while they wait for a request head (state SRV_READING): a struct, a
 * read buffer, one ev_io and one ev_timer. Bytes are read and the head
 * parsed in the hub context; only a complete head gets a green thread
 * (SRV_BUSY), which runs the request with the GIL and hands the
 * connection back (srv_conn_resume) or closes it. With max_size requests
 * running, a complete head waits in a FIFO (SRV_QUEUED) until one ends.
 *
 * The timer of a reading connection is the keep-alive timeout while its
 * buffer is empty and the header timeout once a request has started to
 * arrive; on expiry an idle connection is closed silently and a partial
 * request gets 408.
 *
 * Shutdown: SIGINT and SIGTERM set a flag and poke the hub. The server
 * then stops accepting, closes idle connections, lets running requests
 * finish (their connections close after the response) for up to
 * graceful_timeout seconds, and returns. Other signals reach their Python
 * handlers through a periodic tick that attaches the main thread state.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "server/py.h"

#define SRV_BUF_INIT 8192
#define SRV_ACCEPT_BATCH 64

static volatile sig_atomic_t srv_signal;
static struct hub *srv_signal_hub;

static void srv_on_signal(int sig)
{
    int saved = errno;

    srv_signal = sig;
    if (srv_signal_hub)
        G.hub_poke(srv_signal_hub);
    errno = saved;
}

/* ---- waiting with the GIL released ---------------------------------- */

int srv_wait(int fd, int events, double timeout)
{
    PyThreadState *ts = PyEval_SaveThread();
    int r = G.wait_fd(fd, events, timeout);
    int saved = errno;

    PyEval_RestoreThread(ts);
    errno = saved;
    return r;
}

/* Reads more bytes into c->buf (growing it up to limit). Green thread,
 * GIL held. Returns bytes read, 0 at EOF, -1 with errno (ETIMEDOUT). */
int srv_conn_fill(struct srv_conn *c, double timeout)
{
    ssize_t n;

    if (c->len == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : SRV_BUF_INIT;
        char *b = PyMem_RawRealloc(c->buf, cap);
        if (!b) {
            errno = ENOMEM;
            return -1;
        }
        c->buf = b;
        c->cap = cap;
    }
    for (;;) {
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
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

/* Writes every byte of iov. Green thread, GIL held. Returns 0 or -1 with
 * errno (EPIPE, ECONNRESET: the client left; ETIMEDOUT). */
int srv_send_all(struct srv_conn *c, struct iovec *iov, int cnt, double timeout)
{
    while (cnt > 0) {
        ssize_t n = writev(c->fd, iov, cnt > IOV_MAX ? IOV_MAX : cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -1;
            if (srv_wait(c->fd, GREEN_WRITE, timeout) < 0)
                return -1;
            continue;
        }
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

static const char *srv_reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* An error response on a connection that closes after it, with text as
 * its body. From the hub context it is one best-effort send (the socket
 * buffer is empty then); from a green thread it waits as needed. */
void srv_send_error_text(struct srv_conn *c, int status, const char *text,
                         size_t len)
{
    char head[512];
    int hlen;
    struct iovec iov[2];

    hlen = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nServer: libgreen\r\nDate: %s\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    status, srv_reason(status), srv_http_date(), len);
    iov[0].iov_base = head;
    iov[0].iov_len = (size_t)hlen;
    iov[1].iov_base = (void *)text;
    iov[1].iov_len = len;
    if (G.current())
        srv_send_all(c, iov, 2, c->srv->opt.body_timeout);
    else
        (void)!writev(c->fd, iov, 2);
}

/* The same with a one-line body: "<status> <reason>: <detail>". */
void srv_send_error(struct srv_conn *c, int status, const char *detail)
{
    char body[512];
    int blen;

    blen = snprintf(body, sizeof body, "%d %s%s%s\n", status, srv_reason(status),
                    detail ? ": " : "", detail ? detail : "");
    if (blen < 0 || (size_t)blen >= sizeof body)
        blen = (int)strlen(body);
    srv_send_error_text(c, status, body, (size_t)blen);
}

/* ---- connections in the hub context --------------------------------- */

static void srv_conn_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void srv_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void srv_accept_update(struct srv_server *srv);

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

void srv_conn_close(struct srv_conn *c)
{
    struct srv_server *srv = c->srv;

    if (c->state == SRV_QUEUED)
        srv_queue_remove(c);
    ev_io_stop(srv->loop, &c->io);
    ev_timer_stop(srv->loop, &c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    close(c->fd);
    PyMem_RawFree(c->buf);
    PyMem_RawFree(c);
    srv->nconns--;
}

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

/* Back to waiting for a request head in the hub context (from a green
 * thread that finished a response on a keep-alive connection). */
void srv_conn_resume(struct srv_conn *c)
{
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

/* Parses what the buffer holds. Returns 1 if a request was dispatched,
 * queued or the connection closed, 0 if more bytes are needed. */
static int srv_conn_try_parse(struct srv_conn *c)
{
    struct srv_server *srv = c->srv;
    struct srv_request req;
    int n;

    /* The green thread parses again into its own array: here only the
     * verdict matters (complete, partial, refused). */
    memset(&req, 0, sizeof req);
    req.headers = srv->scratch;
    req.nheaders = srv->nscratch;
    n = srv_parse_request(c->buf, c->len, &req, &srv->opt.limits);
    if (n == -2)
        return 0;
    if (n < 0 && req.status != 431) {
        srv_send_error(c, req.status, req.error);
        srv_conn_close(c);
        return 1;
    }
    if (n < 0) {
        srv_send_error(c, 431, req.error);
        srv_conn_close(c);
        return 1;
    }
    if (srv->active >= srv->opt.max_size)
        srv_enqueue(c);
    else
        srv_dispatch(c);
    return 1;
}

static void srv_conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct srv_conn *c = w->data;
    size_t had = c->len;
    ssize_t n;

    if (c->len == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : SRV_BUF_INIT;
        size_t max_head = c->srv->opt.limits.max_head_size
                              ? c->srv->opt.limits.max_head_size
                              : SRV_DEFAULT_MAX_HEAD_SIZE; /* 0: the default */
        char *b;
        if (c->cap > max_head + SRV_BUF_INIT) {
            /* The parser refuses long heads itself; this only bounds a
             * client that sends garbage the parser never finishes. */
            srv_send_error(c, 431, "request head too large");
            srv_conn_close(c);
            return;
        }
        b = PyMem_RawRealloc(c->buf, cap);
        if (!b) {
            srv_conn_close(c);
            return;
        }
        c->buf = b;
        c->cap = cap;
    }
    n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        srv_conn_close(c); /* EOF or reset between requests: nothing lost */
        return;
    }
    c->len += (size_t)n;
    if (srv_conn_try_parse(c))
        return;
    if (had == 0)
        srv_conn_arm_timer(c); /* a request started: header timeout now */
}

static void srv_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct srv_conn *c = w->data;

    if (c->len)
        srv_send_error(c, 408, "the request head did not arrive in time");
    srv_conn_close(c);
}

static void srv_conn_new(struct srv_server *srv, int fd,
                         const struct sockaddr_storage *ss)
{
    struct srv_conn *c = PyMem_RawCalloc(1, sizeof *c);

    if (!c) {
        close(fd);
        return;
    }
    c->srv = srv;
    c->fd = fd;
    c->state = SRV_READING;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, c->remote_addr, sizeof c->remote_addr);
        snprintf(c->remote_port, sizeof c->remote_port, "%u", ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, c->remote_addr, sizeof c->remote_addr);
        snprintf(c->remote_port, sizeof c->remote_port, "%u", ntohs(a->sin6_port));
    }
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
    srv->nconns++;
    ev_io_start(srv->loop, &c->io);
    srv_conn_arm_timer(c);
}

static void srv_accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct srv_server *srv = w->data;

    srv->accept_backoff = 0;
    srv_accept_update(srv);
}

static void srv_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct srv_server *srv = w->data;

    for (int i = 0; i < SRV_ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(srv->fd, (struct sockaddr *)&ss, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                static double last;
                if (ev_time() - last > 10) {
                    last = ev_time();
                    fprintf(stderr,
                            "libgreen: cannot accept connections (%s); "
                            "pausing accepts for 0.1 s - raise 'ulimit -n' "
                            "or lower max_size\n", strerror(errno));
                }
                /* The backlog stays readable: without a pause the loop
                 * would spin on the same failure. */
                srv->accept_backoff = 1;
                srv_accept_update(srv);
                ev_timer_start(srv->loop, &srv->accept_retry);
            }
            return; /* EAGAIN, or retry on the next readiness */
        }
        if (len == 0 || ss.ss_family == AF_UNSPEC)
            ss.ss_family = AF_UNIX;
        srv_conn_new(srv, fd, &ss);
    }
}

/* Accept only while there is room for another request. */
static void srv_accept_update(struct srv_server *srv)
{
    int room = !srv->stopping && !srv->accept_backoff &&
               srv->active < srv->opt.max_size;

    if (room && srv->accept_paused) {
        ev_io_start(srv->loop, &srv->accept_w);
        srv->accept_paused = 0;
    } else if (!room && !srv->accept_paused) {
        ev_io_stop(srv->loop, &srv->accept_w);
        srv->accept_paused = 1;
    }
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

/* ---- shutdown and signals ------------------------------------------- */

/* Stops listening at once, so that new connections are refused rather
 * than left in the backlog of a server that will never accept them
 * (until the process exits and resets them). The fd number stays valid
 * for the Python socket object that owns it: an unbound socket takes its
 * place (dup3 keeps it close-on-exec) and Python closes that later, as
 * eventlet's server closes its socket. Only this process's reference
 * goes: worker processes sharing the listening socket keep serving. */
static void srv_close_listener(struct srv_server *srv)
{
    int domain = AF_INET, s;
    socklen_t len = sizeof domain;

    if (getsockopt(srv->fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
        domain = AF_INET;
    s = socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return; /* keep listening unserved: no worse than before */
    if (dup3(s, srv->fd, O_CLOEXEC) < 0)
        fprintf(stderr, "libgreen: could not close the listening socket "
                "(%s); new connections wait until the process exits\n",
                strerror(errno));
    close(s);
}

static void srv_begin_stop(struct srv_server *srv, int sig)
{
    struct srv_conn *c, *next;

    if (srv->stopping)
        return;
    srv->stopping = sig ? sig : -1;
    srv->stop_deadline = ev_time() + srv->opt.graceful_timeout;
    srv_accept_update(srv);
    srv_close_listener(srv);
    for (c = srv->conns; c; c = next) {
        next = c->next;
        if (c->state == SRV_QUEUED) /* never started: say so, then close */
            srv_send_error(c, 503, "the server is shutting down");
        if (c->state == SRV_READING || c->state == SRV_QUEUED)
            srv_conn_close(c);
    }
    if (srv->active)
        fprintf(stderr, "(%ld) wsgi stopping: waiting up to %g s for %zu "
                "request(s) in progress\n", (long)getpid(),
                srv->opt.graceful_timeout, srv->active);
}

static void srv_tick(void *arg)
{
    struct srv_server *srv = arg;

    /* The hub context is the main thread: it may run signal handlers. */
    PyEval_RestoreThread(srv->main_ts);
    if (PyErr_CheckSignals() < 0) {
        if (!srv->stop_exc)
            srv->stop_exc = srv_fetch_exc();
        else
            PyErr_Clear();
        srv_begin_stop(srv, 0);
    }
    srv->main_ts = PyEval_SaveThread();
}

static int srv_done(void *arg)
{
    struct srv_server *srv = arg;

    if (srv_signal && !srv->stopping)
        srv_begin_stop(srv, srv_signal);
    if (!srv->stopping)
        return 0;
    if (srv->active == 0)
        return 1;
    return ev_time() > srv->stop_deadline;
}

/* ---- the serve loop ------------------------------------------------- */

/* Runs the server until a signal or an exception from a signal handler
 * stops it. Called with the GIL held from libgreen.wsgi.server(); returns
 * None, or NULL with the handler's exception set (KeyboardInterrupt is
 * taken as a stop request and not re-raised). */
PyObject *srv_serve(struct srv_server *srv)
{
    struct sigaction sa, old_int, old_term;
    int fl, rc;

    srv->hub = G.hub();
    if (!srv->hub)
        return PyErr_SetFromErrno(PyExc_OSError);
    srv->nscratch = srv->opt.limits.max_headers ? srv->opt.limits.max_headers
                                                : SRV_DEFAULT_MAX_HEADERS;
    srv->scratch = PyMem_RawMalloc(srv->nscratch * sizeof *srv->scratch);
    if (!srv->scratch)
        return PyErr_NoMemory();
    srv->loop = G.hub_loop(srv->hub);
    srv->interp = PyThreadState_Get()->interp;
    fl = fcntl(srv->fd, F_GETFL);
    if (fl < 0 || fcntl(srv->fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);

    ev_io_init(&srv->accept_w, srv_accept_cb, srv->fd, EV_READ);
    srv->accept_w.data = srv;
    ev_timer_init(&srv->accept_retry, srv_accept_retry_cb, 0.1, 0.);
    srv->accept_retry.data = srv;
    ev_io_start(srv->loop, &srv->accept_w);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = srv_on_signal;
    sigemptyset(&sa.sa_mask);
    srv_signal = 0;
    srv_signal_hub = srv->hub;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    fprintf(stderr, "(%ld) wsgi starting up on %s\n", (long)getpid(), srv->url);

    srv->main_ts = PyEval_SaveThread();
    rc = G.hub_run_until(srv_done, srv, -1, srv_tick, SRV_SIGNAL_PERIOD);
    PyEval_RestoreThread(srv->main_ts);
    srv->main_ts = NULL;
    if (!srv->active)
        srv_tstate_drain(); /* abandoned requests may still hold some */

    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    srv_signal_hub = NULL;
    if (!srv->accept_paused)
        ev_io_stop(srv->loop, &srv->accept_w);
    ev_timer_stop(srv->loop, &srv->accept_retry);
    fcntl(srv->fd, F_SETFL, fl);

    if (srv->active)
        fprintf(stderr, "(%ld) wsgi exiting: %zu request(s) still running "
                "after the %g s grace period were abandoned\n",
                (long)getpid(), srv->active, srv->opt.graceful_timeout);
    else
        fprintf(stderr, "(%ld) wsgi exiting\n", (long)getpid());
    /* Idle and abandoned connections alike: nobody serves them now. */
    while (srv->conns) {
        struct srv_conn *c = srv->conns;
        if (c->state == SRV_BUSY) {
            /* its green thread still points at it: only unlink */
            srv->conns = c->next;
            if (c->next)
                c->next->prev = NULL;
            c->next = c->prev = NULL;
            continue;
        }
        srv_conn_close(c);
    }
    PyMem_RawFree(srv->scratch);
    srv->scratch = NULL;
    if (rc < 0 && !srv->stop_exc)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (srv->stop_exc) {
        PyObject *exc = srv->stop_exc;
        srv->stop_exc = NULL;
        if (PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
            Py_DECREF(exc);
            Py_RETURN_NONE;
        }
        srv_restore_exc(exc);
        return NULL;
    }
    Py_RETURN_NONE;
}
