/* server/accept.c - the listening sockets: accepting connections, pausing
 * while there is no room for another request or no fd to accept into,
 * and closing them when the server stops.
 *
 * Each socket has its own watcher; pausing stops them all. Accepting
 * pauses while max_size requests run, so the kernel's backlog, not our
 * memory, holds the excess; and for 0.1 s after accept failed for lack
 * of fds, so the readable backlog does not spin the loop. That pause is
 * one stop of the watchers and one timer that starts them again: while
 * the fds stay exhausted the server tries accept about ten times a
 * second, not in a loop. Each failure also closes a few of the idle
 * keep-alive connections (conn.c), so new clients are not kept waiting
 * for descriptors that idle ones hold.
 *
 * Before the first accept, the soft limit on open files is raised to the
 * hard one (as Go's runtime does): every connection is a descriptor, and
 * the soft limit systemd and most shells give (1024) is meant to be
 * raised by the programs that need more. `ulimit -n` sets both limits,
 * so it still caps the server.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/py.h"

#define SRV_ACCEPT_BATCH 64
#define SRV_ACCEPT_PAUSE 0.1 /* seconds without accepting after EMFILE */
/* Idle keep-alive connections closed per failed accept (nginx reuses 32
 * of its idle ones when it runs out of connections). */
#define SRV_ACCEPT_DRAIN 32
/* Connections a graceful stop accepts from a listener's backlog at most
 * (Linux's default somaxconn). */
#define SRV_STOP_DRAIN 4096

/* Accept only while there is room for another request. */
void srv_accept_update(struct srv_server *srv)
{
    int room = !srv->stopping && !srv->accept_backoff &&
               srv->active < srv->opt.max_size;

    if (room == !srv->accept_paused)
        return;
    for (size_t i = 0; i < srv->nlisteners; i++) {
        if (room)
            ev_io_start(srv->loop, &srv->listeners[i].w);
        else
            ev_io_stop(srv->loop, &srv->listeners[i].w);
    }
    srv->accept_paused = !room;
}

static void srv_accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct srv_server *srv = w->data;

    srv->accept_backoff = 0;
    srv_accept_update(srv);
}

/* accept failed for lack of fds or memory: make room by closing the
 * connections idle longest, say so (at most every 10 s) and pause. */
static void srv_accept_backoff(struct srv_server *srv)
{
    static double last;
    int err = errno;
    size_t drained = srv_conns_drain_idle(srv, SRV_ACCEPT_DRAIN);

    if (ev_time() - last > 10) {
        last = ev_time();
        fprintf(stderr,
                "libgreen: cannot accept connections (%s); closed %zu idle "
                "keep-alive connection(s) and pausing accepts for 0.1 s - "
                "raise 'ulimit -n' or lower max_size\n", strerror(err),
                drained);
    }
    /* The backlog stays readable: without a pause the loop would spin on
     * the same failure. A timer that has run once holds its expiry
     * relative to that run (libev), which is now in the past: set it
     * again, or it would fire at once and the pause would not hold. */
    srv->accept_backoff = 1;
    srv_accept_update(srv);
    if (!ev_is_active(&srv->accept_retry)) {
        ev_timer_set(&srv->accept_retry, SRV_ACCEPT_PAUSE, 0.);
        ev_timer_start(srv->loop, &srv->accept_retry);
    }
}

/* Accepts one connection from l's backlog into a new srv_conn. Returns 0,
 * or -1 with errno (EAGAIN: the backlog is empty). */
static int srv_accept_one(struct srv_listener *l)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = accept4(l->fd, (struct sockaddr *)&ss, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd < 0)
        return -1;
    if (len == 0 || ss.ss_family == AF_UNSPEC)
        ss.ss_family = AF_UNIX;
    srv_conn_new(l, fd, &ss);
    return 0;
}

static void srv_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct srv_listener *l = w->data;

    for (int i = 0; i < SRV_ACCEPT_BATCH; i++)
        if (srv_accept_one(l) < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                srv_accept_backoff(l->srv);
            return; /* EAGAIN, or retry on the next readiness */
        }
}

/* The soft RLIMIT_NOFILE up to the hard one (the kernel refuses more
 * than fs.nr_open, 1 << 20 by default, for an unlimited hard limit).
 * Failing changes nothing: the server then runs within the soft limit. */
static void srv_nofile_raise(void)
{
    struct rlimit rl;
    rlim_t soft;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    soft = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0 || rl.rlim_max != RLIM_INFINITY ||
        soft >= (rlim_t)1 << 20)
        return;
    rl.rlim_cur = (rlim_t)1 << 20;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
}

/* Starts accepting on every listener (already non-blocking). */
void srv_accept_start(struct srv_server *srv)
{
    srv_nofile_raise();
    ev_init(&srv->accept_retry, srv_accept_retry_cb);
    srv->accept_retry.data = srv;
    for (size_t i = 0; i < srv->nlisteners; i++) {
        struct srv_listener *l = &srv->listeners[i];
        ev_io_init(&l->w, srv_accept_cb, l->fd, EV_READ);
        l->w.data = l;
        ev_io_start(srv->loop, &l->w);
    }
}

/* Stops the watchers srv_accept_start started. */
void srv_accept_stop(struct srv_server *srv)
{
    for (size_t i = 0; !srv->accept_paused && i < srv->nlisteners; i++)
        ev_io_stop(srv->loop, &srv->listeners[i].w);
    ev_timer_stop(srv->loop, &srv->accept_retry);
}

/* Stops listening at once, so that new connections are refused rather
 * than left in the backlog of a server that will never accept them
 * (until the process exits and resets them). With drain, the backlog is
 * accepted first: its clients have connected and may have sent their
 * request, so they are served (conn.c keeps connections owed a request
 * through the stop) instead of reset - at most SRV_STOP_DRAIN of them,
 * the backlog's usual bound, so a flood cannot hold the stop up.
 *
 * The fd number stays valid for the Python socket object that owns it:
 * an unbound socket takes its place (dup3 keeps it close-on-exec) and
 * Python closes that later, as eventlet's server closes its socket. Only
 * this process's reference goes: worker processes sharing the listening
 * socket keep serving. */
static void srv_listener_close_one(struct srv_listener *l, int drain)
{
    int domain = AF_INET, s;
    socklen_t len = sizeof domain;

    for (int i = 0; drain && i < SRV_STOP_DRAIN; i++)
        if (srv_accept_one(l) < 0)
            break;
    if (getsockopt(l->fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
        domain = AF_INET;
    s = socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return; /* keep listening unserved: no worse than before */
    if (dup3(s, l->fd, O_CLOEXEC) < 0)
        fprintf(stderr, "libgreen: could not close the listening socket "
                "(%s); new connections wait until the process exits\n",
                strerror(errno));
    close(s);
}

/* Closes every listener of srv (as above). */
void srv_listener_close(struct srv_server *srv, int drain)
{
    for (size_t i = 0; i < srv->nlisteners; i++)
        srv_listener_close_one(&srv->listeners[i], drain);
}
