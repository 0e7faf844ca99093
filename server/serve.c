/* server/serve.c - libgreen.wsgi.server's run: set up, run the hub until
 * a stop, shut down gracefully, tear down.
 *
 * The listening socket is accept.c's, connections between requests are
 * conn.c's, and each request runs in its own green thread (request.c).
 *
 * Shutdown: SIGINT and SIGTERM set a flag and poke the hub; reaching
 * max_requests stops the same way. The server then stops accepting (on
 * a signal, once it has accepted what waits in the backlog), closes idle
 * connections (srv_conns_close_idle: some linger a moment for a request
 * on its way), serves the connections owed a request, lets running
 * requests finish (their connections close after the response) for up
 * to graceful_timeout seconds, and returns. Other signals reach their
 * Python handlers through a periodic tick that attaches the main thread
 * state; the same tick calls the heartbeat once a second and flushes the
 * access log. An exception from a handler or the heartbeat stops the
 * server at once - requests in progress are abandoned - and server()
 * raises it: Python code that raises wants out now, and a graceful stop
 * is what SIGTERM is for (gunicorn's worker turns SIGQUIT into such an
 * exception).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "server/log.h"
#include "server/py.h"

#define SRV_HEARTBEAT_PERIOD 1.0 /* seconds between heartbeat calls */
/* Seconds a connection accepted before a stop gets to start sending the
 * request it was opened for, once nothing else holds the stop up. */
#define SRV_STOP_FIRST_BYTES 1.0


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

/* ---- shutdown and signals ------------------------------------------- */

/* Stops accepting and gives requests in progress grace seconds; a stop
 * already under way keeps the shorter of the two deadlines. why, if not
 * NULL, says what stopped the server in the stopping line. */
static void srv_begin_stop(struct srv_server *srv, int sig, double grace,
                           const char *why)
{
    if (srv->stopping) {
        if (ev_time() + grace < srv->stop_deadline) {
            srv->stop_deadline = ev_time() + grace;
            srv->stop_grace = grace;
        }
        return;
    }
    srv->stopping = sig ? sig : -1;
    srv->stop_began = ev_time();
    srv->stop_deadline = ev_time() + grace;
    srv->stop_grace = grace;
    srv_accept_update(srv);
    /* A signal's graceful stop serves the backlog; max_requests leaves it
     * to the workers that share the socket (and stops at its count). */
    srv_listener_close(srv, sig && grace > 0);
    srv_conns_close_idle(srv);
    if (srv->active && grace > 0)
        fprintf(stderr, "(%ld) wsgi stopping%s%s: waiting up to %g s for %zu "
                "request(s) in progress\n", (long)getpid(), why ? " " : "",
                why ? why : "", grace, srv->active);
    else if (why)
        fprintf(stderr, "(%ld) wsgi stopping %s\n", (long)getpid(), why);
}

/* heartbeat(), when a second has passed. Returns -1 if it raised. */
static int srv_heartbeat(struct srv_server *srv)
{
    PyObject *r;

    if (!srv->opt.heartbeat || ev_time() < srv->heartbeat_at)
        return 0;
    srv->heartbeat_at = ev_time() + SRV_HEARTBEAT_PERIOD;
    r = PyObject_CallNoArgs(srv->opt.heartbeat);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static void srv_tick(void *arg)
{
    struct srv_server *srv = arg;

    srv_alog_tick(srv);
    /* The hub context is the main thread: it may run signal handlers. */
    PyEval_RestoreThread(srv->main_ts);
    if (PyErr_CheckSignals() < 0 || srv_heartbeat(srv) < 0) {
        if (!srv->stop_exc)
            srv->stop_exc = srv_fetch_exc();
        else
            PyErr_Clear();
        srv_begin_stop(srv, 0, 0, NULL); /* at once: see the top of this file */
    }
    srv->main_ts = PyEval_SaveThread();
}

static int srv_done(void *arg)
{
    struct srv_server *srv = arg;

    if (srv_signal && !srv->stopping)
        srv_begin_stop(srv, srv_signal, srv->opt.graceful_timeout, NULL);
    if (!srv->stopping && srv->max_served && srv->served >= srv->max_served) {
        char why[64];
        snprintf(why, sizeof why, "after %zu requests (max_requests)", srv->served);
        srv_begin_stop(srv, 0, srv->opt.graceful_timeout, why);
    }
    if (!srv->stopping)
        return 0;
    if (srv->active == 0) {
        int arriving;
        /* Connections owed a request hold the stop while it arrives. */
        if (!srv_conns_owed(srv, &arriving))
            return 1;
        if (!arriving && ev_time() > srv->stop_began + SRV_STOP_FIRST_BYTES)
            return 1;
    }
    return ev_time() > srv->stop_deadline;
}

/* SIGINT and SIGTERM stop the server while it runs; the caller's
 * handlers are kept in srv_signal_old and come back when it returns.
 *
 * A process forked while the server runs (os.fork() in a request) is not
 * the server: its hub is not ours to poke (the eventfd is shared with
 * us), and SIGTERM must not be swallowed by a stop flag nobody reads.
 * The child therefore gets the caller's handlers back (hard rule 6). */
static struct sigaction srv_signal_old[2];

static void srv_signals_restore(void)
{
    if (!srv_signal_hub)
        return;
    sigaction(SIGINT, &srv_signal_old[0], NULL);
    sigaction(SIGTERM, &srv_signal_old[1], NULL);
    srv_signal_hub = NULL;
}

/* Until the child has the caller's handlers back, a SIGINT or SIGTERM
 * sent to it (its parent may answer with its pid before the child ran
 * a line) must wait, or our handler would swallow it: both are blocked
 * across the fork, in the forking thread only. */
static __thread sigset_t srv_fork_mask;
static __thread int srv_fork_blocked;

static void srv_signals_prepare(void)
{
    sigset_t stop;

    srv_fork_blocked = srv_signal_hub != NULL;
    if (!srv_fork_blocked)
        return;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, &srv_fork_mask);
}

static void srv_signals_parent(void)
{
    if (srv_fork_blocked)
        pthread_sigmask(SIG_SETMASK, &srv_fork_mask, NULL);
}

static void srv_signals_child(void)
{
    srv_signals_restore();
    srv_signals_parent(); /* a pending SIGTERM now meets the old handler */
}

static void srv_signals_atfork(void)
{
    pthread_atfork(srv_signals_prepare, srv_signals_parent, srv_signals_child);
}

static void srv_signals_install(struct srv_server *srv)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct sigaction sa;

    pthread_once(&once, srv_signals_atfork);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = srv_on_signal;
    sigemptyset(&sa.sa_mask);
    srv_signal = 0;
    sigaction(SIGINT, &sa, &srv_signal_old[0]);
    sigaction(SIGTERM, &sa, &srv_signal_old[1]);
    srv_signal_hub = srv->hub;
}

/* ---- the serve loop ------------------------------------------------- */

/* The listeners made non-blocking (their flags before that kept in
 * l->fl), or -1 with OSError set and every flag restored. */
static int srv_listeners_nonblock(struct srv_server *srv)
{
    for (size_t i = 0; i < srv->nlisteners; i++) {
        struct srv_listener *l = &srv->listeners[i];
        l->fl = fcntl(l->fd, F_GETFL);
        if (l->fl < 0 || fcntl(l->fd, F_SETFL, l->fl | O_NONBLOCK) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            while (i--)
                fcntl(srv->listeners[i].fd, F_SETFL, srv->listeners[i].fl);
            return -1;
        }
    }
    return 0;
}

/* Everything the run needs: the hub, the parse scratch array, the
 * listeners made non-blocking, the accept watchers. Returns 0, or -1
 * with an exception set. */
static int srv_setup(struct srv_server *srv)
{
    srv->hub = G.hub();
    if (!srv->hub) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    srv->nscratch = srv->opt.limits.max_headers ? srv->opt.limits.max_headers
                                                : SRV_DEFAULT_MAX_HEADERS;
    srv->scratch = PyMem_RawMalloc(srv->nscratch * sizeof *srv->scratch);
    if (!srv->scratch) {
        PyErr_NoMemory();
        return -1;
    }
    srv->loop = G.hub_loop(srv->hub);
    srv->interp = PyThreadState_Get()->interp;
    if (srv_listeners_nonblock(srv) < 0) {
        PyMem_RawFree(srv->scratch);
        srv->scratch = NULL;
        return -1;
    }
    srv_accept_start(srv);
    return 0;
}

/* Undoes srv_setup once the hub has stopped running for us, and closes
 * every connection left. */
static void srv_teardown(struct srv_server *srv)
{
    srv_accept_stop(srv);
    for (size_t i = 0; i < srv->nlisteners; i++)
        fcntl(srv->listeners[i].fd, F_SETFL, srv->listeners[i].fl);

    if (srv->active)
        fprintf(stderr, "(%ld) wsgi exiting: %zu request(s) still running "
                "after the %g s grace period were abandoned\n",
                (long)getpid(), srv->active, srv->stop_grace);
    else
        fprintf(stderr, "(%ld) wsgi exiting\n", (long)getpid());
    /* Idle and abandoned connections alike: nobody serves them now. */
    srv_conns_close_all(srv);
    PyMem_RawFree(srv->scratch);
    srv->scratch = NULL;
}

/* What srv_serve returns after a run that ended with hub_run_until's rc:
 * None, or NULL with the exception that stopped it. */
static PyObject *srv_result(struct srv_server *srv, int rc)
{
    PyObject *exc = srv->stop_exc;

    if (rc < 0 && !exc)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (!exc)
        Py_RETURN_NONE;
    srv->stop_exc = NULL;
    if (PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
        Py_DECREF(exc);
        Py_RETURN_NONE;
    }
    srv_restore_exc(exc);
    return NULL;
}

/* What some options need before the first connection: the networks of
 * forwarded_allow_ips, the access log opened, and this process's draw
 * of max_requests_jitter. Returns 0, or -1 with an exception set. */
static int srv_options_open(struct srv_server *srv)
{
    uint64_t r = 0;

    if (srv_fwd_init(srv) < 0)
        return -1;
    if (srv_alog_open(srv) < 0) {
        srv_fwd_free(srv);
        return -1;
    }
    if (srv->opt.max_requests_jitter &&
        getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = (uint64_t)getpid() * 2654435761u ^ (uint64_t)(ev_time() * 1e6);
    if (srv->opt.max_requests)
        srv->max_served = srv->opt.max_requests +
                          (size_t)(r % (srv->opt.max_requests_jitter + 1));
    return 0;
}

static void srv_options_close(struct srv_server *srv)
{
    srv_alog_close(srv);
    srv_fwd_free(srv);
}

/* Runs the server until a signal, max_requests, or an exception from a
 * signal handler or the heartbeat stops it. Called with the GIL held from
 * libgreen.wsgi.server(); returns None, or NULL with that exception set
 * (KeyboardInterrupt is taken as a stop request and not re-raised). */
PyObject *srv_serve(struct srv_server *srv)
{
    int rc;

    if (srv_options_open(srv) < 0)
        return NULL;
    if (srv_setup(srv) < 0) {
        srv_options_close(srv);
        return NULL;
    }
    srv_signals_install(srv);
    for (size_t i = 0; i < srv->nlisteners; i++)
        fprintf(stderr, "(%ld) wsgi starting up on %s\n", (long)getpid(),
                srv->listeners[i].url);

    srv->main_ts = PyEval_SaveThread();
    rc = G.hub_run_until(srv_done, srv, -1, srv_tick, SRV_SIGNAL_PERIOD);
    PyEval_RestoreThread(srv->main_ts);
    srv->main_ts = NULL;
    if (!srv->active)
        srv_tstate_drain(); /* abandoned requests may still hold some */

    srv_signals_restore();
    srv_teardown(srv);
    srv_options_close(srv);
    return srv_result(srv, rc);
}
