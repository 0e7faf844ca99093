/* server/mainrun.c - running the hub from the main program.
 *
 * When the main program (not a green thread) waits in libgreen -
 * libgreen.sleep(), GreenThread.wait() - there is nothing to park: it
 * runs the hub itself, with the GIL released, until what it waits for has
 * happened. Signals still have to reach Python there (hard rule 7): the
 * hub's tick re-attaches the caller's thread state every
 * SRV_SIGNAL_PERIOD seconds and runs PyErr_CheckSignals, so Ctrl+C ends
 * the wait with KeyboardInterrupt as it would end time.sleep().
 * libgreen.wsgi.server() runs the hub the same way (server/serve.c).
 *
 * Waiting for a green thread from the main program (srv_main_run_heir)
 * makes that green thread the main program's continuation, its "heir":
 * on the main OS thread it holds the hub's main role (docs/DESIGN.md,
 * "The main thread under libgreen"), so to Python it is the main thread:
 * signal.signal() works in it, its blocking calls end with EINTR for a
 * signal, and Python's handlers run in it, where their exceptions belong.
 * The tick then leaves the handlers to it.
 */
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "server/py.h"

struct srv_main_run {
    int (*done)(void *);
    void *arg;
    PyThreadState *ts;   /* the caller's, while the hub runs */
    int heir;            /* a green thread holds the main role */
    PyObject *exc;       /* raised by a signal handler */
};

static void srv_main_tick(void *arg)
{
    struct srv_main_run *mr = arg;

    if (mr->heir && !(mr->done && mr->done(mr->arg)))
        return; /* the heir runs the handlers, in its own frames */
    PyEval_RestoreThread(mr->ts);
    if (PyErr_CheckSignals() < 0 && !mr->exc)
        mr->exc = srv_fetch_exc();
    PyErr_Clear(); /* a second handler's exception: the first one wins */
    mr->ts = PyEval_SaveThread();
}

static int srv_main_done(void *arg)
{
    struct srv_main_run *mr = arg;

    return mr->exc || (mr->done && mr->done(mr->arg));
}

/* Runs the hub until done(arg) (NULL: never), timeout seconds (< 0:
 * none) or a signal handler raises. GIL held on entry and exit. Returns 1
 * when done, 0 on timeout, -1 with an exception set (the handler's, or
 * RuntimeError for a deadlock). */
int srv_main_run(int (*done)(void *), void *arg, double timeout)
{
    return srv_main_run_heir(done, arg, timeout, NULL);
}

/* The main OS thread, where the interpreter's main thread lives (after
 * fork() the child's only thread is both). */
static int srv_on_main_os_thread(void)
{
    return syscall(SYS_gettid) == getpid();
}

/* srv_main_run, with heir (if not NULL, and the caller is the main OS
 * thread) holding the main role until the wait ends - unless it already
 * uses an identity of its own (green_set_main): then the tick runs the
 * handlers here, as for any wait. */
int srv_main_run_heir(int (*done)(void *), void *arg, double timeout,
                      struct green *heir)
{
    struct srv_main_run mr = {.done = done, .arg = arg};
    struct srv_maints maints;
    struct green *prev = NULL;
    int rc, err;

    if (heir && srv_on_main_os_thread())
        mr.heir = G.set_main(heir, &prev);
    if (mr.heir)
        srv_maints_wait_begin(&maints, heir);
    mr.ts = PyEval_SaveThread();
    rc = G.hub_run_until(srv_main_done, &mr, timeout, srv_main_tick,
                         SRV_SIGNAL_PERIOD);
    err = errno;
    PyEval_RestoreThread(mr.ts);
    if (mr.heir) {
        G.set_main(prev, NULL);
        srv_maints_wait_end(&maints);
    }
    if (mr.exc) {
        srv_restore_exc(mr.exc);
        return -1;
    }
    if (rc == 0)
        return 1;
    if (err == ETIMEDOUT)
        return 0;
    if (err == EDEADLK)
        PyErr_SetString(PyExc_RuntimeError,
                        "deadlock: every green thread is waiting and "
                        "nothing can wake them");
    else {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    return -1;
}
