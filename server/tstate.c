/* server/tstate.c - a pool of Python thread states for green threads.
 *
 * Every green thread that runs Python needs a PyThreadState of its own
 * (docs/DESIGN.md, "Verified mechanism"). Making one per request is costly:
 * CPython maps a fresh data stack for each new thread state on its first
 * call and unmaps it when the state is deleted - two system calls and
 * page faults per request, the largest item in a profile of a hello-world
 * app. So finished states are reset and kept for the next green thread.
 *
 * Reset means: what a brand-new thread would not see is gone. The
 * per-thread dict (threading.local data, thread-local caches) is cleared,
 * a trace or profile function a request installed is removed, and no
 * exception or context is left (requests enter and leave their own
 * contextvars.Context). Recursion depth is back at zero by construction.
 *
 * All of it runs on the hub's OS thread only, so the pool needs no lock.
 *
 * fork (hard rule 6): in the child, os.fork() has CPython delete every
 * thread state but the forking one (PyOS_AfterFork_Child), pooled ones
 * included. The child therefore forgets the pool without touching it.
 */
#include <pthread.h>

#include "server/py.h"

#define SRV_TSTATE_POOL 256

static PyThreadState *srv_pool[SRV_TSTATE_POOL];
static size_t srv_pool_len;
static pthread_once_t srv_pool_once = PTHREAD_ONCE_INIT;

static void srv_pool_forget(void) { srv_pool_len = 0; }

static void srv_pool_register(void)
{
    pthread_atfork(NULL, NULL, srv_pool_forget);
}

/* A detached thread state for the calling green thread, or NULL. Does
 * not need the GIL. */
PyThreadState *srv_tstate_get(PyInterpreterState *interp)
{
    PyThreadState *ts = srv_pool_len ? srv_pool[--srv_pool_len]
                                     : PyThreadState_New(interp);

    /* A pooled state still carries the id of the green thread that made
     * it; sys._current_frames() and PyThreadState_SetAsyncExc look states
     * up by it, so it must be this green thread's (pthread_self here is
     * libgreen's per-green-thread identity). */
    if (ts)
        ts->thread_id = PyThread_get_thread_ident();
    return ts;
}

/* Releases the current thread state ts (attached, GIL held): resets it
 * and pools it, or deletes it if the pool is full. Returns with no
 * thread state attached and the GIL released. */
void srv_tstate_put(PyThreadState *ts)
{
    PyObject *dict;

    /* Up to 3.12, threading hangs a lock on the state of a thread it
     * knows (_thread._set_sentinel: the thread that first imported
     * threading becomes its _MainThread), released only when the state
     * is deleted; threading._shutdown waits for that lock at exit, so a
     * pooled state would hang the process there. Delete those. */
#if PY_VERSION_HEX < 0x030D0000
    int sentinel = ts->on_delete != NULL;
#else
    int sentinel = 0;
#endif

    if (srv_pool_len == SRV_TSTATE_POOL || sentinel) {
        PyThreadState_Clear(ts);
        PyThreadState_DeleteCurrent();
        return;
    }
    if (PyErr_Occurred())
        PyErr_Clear();
    if (ts->c_tracefunc)
        PyEval_SetTrace(NULL, NULL);
    if (ts->c_profilefunc)
        PyEval_SetProfile(NULL, NULL);
    dict = PyThreadState_GetDict(); /* borrowed */
    if (dict)
        PyDict_Clear(dict);
    if (PyErr_Occurred())
        PyErr_Clear();
    PyEval_SaveThread();
    pthread_once(&srv_pool_once, srv_pool_register);
    srv_pool[srv_pool_len++] = ts;
}

/* Deletes every pooled state. GIL held, called from the main thread. */
void srv_tstate_drain(void)
{
    while (srv_pool_len) {
        PyThreadState *ts = srv_pool[--srv_pool_len];
        PyThreadState_Clear(ts);
        PyThreadState_Delete(ts);
    }
}
