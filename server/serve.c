/* server/serve.c - libgreen.wsgi.server's run: set up, run the hub until
 * a stop, shut down gracefully, tear down.
 *
 * The listening socket is accept.c's, connections between requests are
 * conn.c's, and each request runs in its own green thread (request.c).
 *
 * Shutdown: SIGINT and SIGTERM set a flag and poke the hub. The server
 * then stops accepting, closes idle connections, lets running requests
 * finish (their connections close after the response) for up to
 * graceful_timeout seconds, and returns. Other signals reach their Python
 * handlers through a periodic tick that attaches the main thread state.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server/py.h"


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

static void srv_begin_stop(struct srv_server *srv, int sig)
{
    if (srv->stopping)
        return;
    srv->stopping = sig ? sig : -1;
    srv->stop_deadline = ev_time() + srv->opt.graceful_timeout;
    srv_accept_update(srv);
    srv_listener_close(srv);
    srv_conns_close_idle(srv);
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
    if (srv->active == 0 && !srv->conns) /* conn.c may keep a few a moment */
        return 1;
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

static void srv_signals_atfork(void)
{
    pthread_atfork(NULL, NULL, srv_signals_restore);
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
                (long)getpid(), srv->active, srv->opt.graceful_timeout);
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

/* Runs the server until a signal or an exception from a signal handler
 * stops it. Called with the GIL held from libgreen.wsgi.server(); returns
 * None, or NULL with the handler's exception set (KeyboardInterrupt is
 * taken as a stop request and not re-raised). */
PyObject *srv_serve(struct srv_server *srv)
{
    int rc;

    if (srv_setup(srv) < 0)
        return NULL;
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
    return srv_result(srv, rc);
}
