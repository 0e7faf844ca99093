/* server/greenthread.c - libgreen.spawn(), GreenThread, sleep() and
 * stats(): green threads as Python sees them.
 *
 * A spawned function runs in a green thread of its own with a Python
 * thread state of its own (server/tstate.c). Waiting for it, or
 * sleeping, parks the calling green thread; from the main program it
 * runs the hub instead (server/mainrun.c), and the green thread waited
 * for is then the main thread to Python.
 */
#include <errno.h>

#include "server/debug.h"
#include "server/py.h"

/* ---- sleep ------------------------------------------------------------ */

PyObject *srv_sleep(PyObject *self, PyObject *arg)
{
    double s = PyFloat_AsDouble(arg);
    int rc;

    if (s == -1 && PyErr_Occurred())
        return NULL;
    if (s < 0) {
        PyErr_SetString(PyExc_ValueError, "sleep length must be non-negative");
        return NULL;
    }
    if (!G.current()) {
        if (srv_main_run(NULL, NULL, s) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = G.sleep(s);
    Py_END_ALLOW_THREADS
    if (rc < 0 && PyErr_CheckSignals() < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- stats ------------------------------------------------------------ */

static const char *const srv_call_names[GREEN_NCALLS] = {
#define SRV_CALL_NAME(kind, name) name,
    GREEN_CALLS(SRV_CALL_NAME)
#undef SRV_CALL_NAME
};

/* {"read": n, "recv": n, ...}: parks so far per kind of call. */
static PyObject *srv_stats_parks(const struct green_stats *st)
{
    PyObject *d = PyDict_New(), *v;

    for (int i = 0; d && i < GREEN_NCALLS; i++) {
        v = PyLong_FromUnsignedLongLong(st->parks[i]);
        if (!v || PyDict_SetItemString(d, srv_call_names[i], v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

PyObject *srv_stats(PyObject *self, PyObject *unused)
{
    struct green_stats st;
    PyObject *parks;

    G.get_stats(&st);
    parks = srv_stats_parks(&st);
    if (!parks)
        return NULL;
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:n,s:N,s:K,s:K}",
        "spawned", (unsigned long long)st.spawned,
        "live", (unsigned long long)st.live,
        "parked", (unsigned long long)st.parked,
        "ready", (unsigned long long)st.ready,
        "switches", (unsigned long long)st.switches,
        "stacks_pooled", (unsigned long long)st.stacks_pooled,
        "stack_high_water", (unsigned long long)st.stack_high_water,
        "stack_size", (Py_ssize_t)G.default_stack_size(),
        "parks", parks,
        "connections", (unsigned long long)srv_dbg_conns,
        "requests", (unsigned long long)srv_dbg_requests);
}

/* ---- spawn and GreenThread ------------------------------------------- */

struct srv_gt {
    PyObject_HEAD
    PyObject *fn, *args, *kwargs;
    PyObject *result, *exc;
    PyInterpreterState *interp;
    struct green *g;     /* valid until done (detached: freed after) */
    struct green_wq waiters;
    int done;
};

static void srv_gt_run(void *arg)
{
    struct srv_gt *gt = arg;
    PyThreadState *ts = srv_tstate_get(gt->interp);
    struct srv_ginfo gi = {ts, NULL, NULL, "libgreen.spawn()"};
    struct green *self = G.current(); /* not after a fork: NULL there */

    if (!ts) {
        gt->done = 1; /* cannot run without a thread state */
        G.wq_wake_all(&gt->waiters);
        return;
    }
    G.set_info(self, &gi);
    srv_maints_enter(self, ts);
    PyEval_RestoreThread(ts);
    gt->result = PyObject_Call(gt->fn, gt->args, gt->kwargs);
    if (!gt->result) {
        gt->exc = srv_fetch_exc();
        if (gt->exc && !PyErr_GivenExceptionMatches(gt->exc, PyExc_SystemExit)) {
            /* Say so now: nobody may ever wait() for it. */
            PySys_WriteStderr("libgreen: exception in a green thread "
                              "(re-raised by .wait()):\n");
            srv_restore_exc(Py_NewRef(gt->exc));
            srv_print_exc();
        }
    }
    Py_CLEAR(gt->fn);
    Py_CLEAR(gt->args);
    Py_CLEAR(gt->kwargs);
    gt->done = 1;
    G.wq_wake_all(&gt->waiters);
    Py_DECREF(gt); /* the reference the green thread held */
    gi.ts = NULL;
    srv_maints_leave(ts);
    srv_tstate_put(ts);
    G.set_info(self, NULL);
}

PyObject *srv_spawn(PyObject *self, PyObject *args, PyObject *kwargs)
{
    struct srv_gt *gt;
    struct green *g;

    if (PyTuple_GET_SIZE(args) < 1 || !PyCallable_Check(PyTuple_GET_ITEM(args, 0))) {
        PyErr_SetString(PyExc_TypeError, "spawn(fn, *args, **kw): fn must be callable");
        return NULL;
    }
    gt = PyObject_New(struct srv_gt, &srv_gt_type);
    if (!gt)
        return NULL;
    gt->fn = Py_NewRef(PyTuple_GET_ITEM(args, 0));
    gt->args = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    gt->kwargs = kwargs ? PyDict_Copy(kwargs) : NULL;
    gt->result = gt->exc = NULL;
    gt->interp = PyThreadState_Get()->interp;
    gt->waiters.head = gt->waiters.tail = NULL;
    gt->done = 0;
    gt->g = NULL;
    if (!gt->args || (kwargs && !gt->kwargs)) {
        Py_DECREF(gt);
        return NULL;
    }
    g = G.spawn(srv_gt_run, gt, NULL);
    if (!g) {
        Py_DECREF(gt);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    G.detach(g);
    gt->g = g;
    Py_INCREF(gt); /* held by the green thread until it finishes */
    return (PyObject *)gt;
}

static int srv_gt_is_done(void *arg) { return ((struct srv_gt *)arg)->done; }

static PyObject *srv_gt_wait(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"timeout", NULL};
    struct srv_gt *gt = (struct srv_gt *)self;
    PyObject *timeout_obj = Py_None;
    double timeout = -1;
    int rc = 0, err = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:wait", names, &timeout_obj))
        return NULL;
    if (timeout_obj != Py_None) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1 && PyErr_Occurred())
            return NULL;
    }
    if (!gt->done && !G.current()) {
        /* it goes on with the main program meanwhile: the main role */
        if (srv_main_run_heir(srv_gt_is_done, gt, timeout, gt->g) < 0)
            return NULL;
    } else if (!gt->done) {
        Py_BEGIN_ALLOW_THREADS
        while (!gt->done && rc == 0)
            rc = G.wq_wait(&gt->waiters, timeout);
        err = errno;
        Py_END_ALLOW_THREADS
        if (!gt->done && err == EINTR && PyErr_CheckSignals() < 0)
            return NULL;
    }
    if (!gt->done) {
        PyErr_SetString(PyExc_TimeoutError, "the green thread is still running");
        return NULL;
    }
    if (gt->exc) {
        srv_restore_exc(Py_NewRef(gt->exc));
        return NULL;
    }
    return Py_NewRef(gt->result ? gt->result : Py_None);
}

static PyObject *srv_gt_dead(PyObject *self, void *unused)
{
    return PyBool_FromLong(((struct srv_gt *)self)->done);
}

static void srv_gt_dealloc(PyObject *self)
{
    struct srv_gt *gt = (struct srv_gt *)self;

    Py_XDECREF(gt->fn);
    Py_XDECREF(gt->args);
    Py_XDECREF(gt->kwargs);
    Py_XDECREF(gt->result);
    Py_XDECREF(gt->exc);
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef srv_gt_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))srv_gt_wait,
     METH_VARARGS | METH_KEYWORDS,
     "wait(timeout=None): the function's result, or its exception re-raised"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef srv_gt_getset[] = {
    {"dead", srv_gt_dead, NULL, "True once the function has returned", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject srv_gt_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "libgreen.GreenThread",
    .tp_basicsize = sizeof(struct srv_gt),
    .tp_dealloc = srv_gt_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A function running in its own green thread (libgreen.spawn).",
    .tp_methods = srv_gt_methods,
    .tp_getset = srv_gt_getset,
};
