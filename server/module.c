/* server/module.c - the `libgreen` Python module and `libgreen.wsgi`.
 *
 *   libgreen.listen(address, backlog=1024) -> socket.socket
 *   libgreen.spawn(fn, *args, **kw) -> GreenThread (.wait(timeout=None))
 *   libgreen.sleep(seconds)
 *   libgreen.wsgi.server(sock, app, **options)
 *   libgreen.wsgi.FileWrapper
 *
 * Shaped like eventlet's API so its deployment docs carry over. Python
 * code runs in green threads (spawn, requests) each with its own thread
 * state; code in the main context that waits (sleep, wait, server) runs
 * the hub with the GIL released.
 */
#include <stdio.h>
#include <string.h>

#include "server/py.h"

/* ---- listen(): plain Python, it only configures a socket ------------- */

static const char srv_py_source[] =
    "import os as _os, socket as _socket, stat as _stat\n"
    "def listen(address, backlog=1024):\n"
    "    '''A listening socket for libgreen.wsgi.server().\n"
    "\n"
    "    address is (host, port) - IPv4 or IPv6, port 0 picks a free port -\n"
    "    or a filesystem path for a Unix socket (a stale socket file left\n"
    "    there by an earlier run is removed; any other file is an error).'''\n"
    "    if isinstance(address, (str, bytes, _os.PathLike)):\n"
    "        path = _os.fspath(address)\n"
    "        try:\n"
    "            if _stat.S_ISSOCK(_os.stat(path).st_mode):\n"
    "                _os.unlink(path)\n"
    "        except FileNotFoundError:\n"
    "            pass\n"
    "        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
    "        try:\n"
    "            sock.bind(path)\n"
    "            sock.listen(backlog)\n"
    "        except BaseException:\n"
    "            sock.close()\n"
    "            raise\n"
    "        return sock\n"
    "    try:\n"
    "        host, port = address\n"
    "    except (TypeError, ValueError):\n"
    "        raise TypeError('address must be (host, port) or a Unix socket '\n"
    "                        'path, not %r' % (address,)) from None\n"
    "    family = _socket.AF_INET6 if ':' in host else _socket.AF_INET\n"
    "    sock = _socket.socket(family, _socket.SOCK_STREAM)\n"
    "    try:\n"
    "        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)\n"
    "        sock.bind((host, port))\n"
    "        sock.listen(backlog)\n"
    "    except BaseException:\n"
    "        sock.close()\n"
    "        raise\n"
    "    return sock\n";

/* ---- running the hub from the main program ---------------------------- */

/* The main program waiting in libgreen (sleep, GreenThread.wait) runs the
 * hub with the GIL released. Signals still have to reach Python there
 * (hard rule 7): a tick re-attaches the caller's thread state every 0.1 s
 * and runs PyErr_CheckSignals, so Ctrl+C interrupts the wait with
 * KeyboardInterrupt as it would interrupt time.sleep(). */
struct srv_main_run {
    int (*done)(void *);
    void *arg;
    PyThreadState *ts;
    PyObject *exc;       /* raised by a signal handler */
    int timed_out;
    ev_timer tick, deadline;
};

static void srv_main_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct srv_main_run *mr = w->data;

    PyEval_RestoreThread(mr->ts);
    if (PyErr_CheckSignals() < 0 && !mr->exc)
        mr->exc = srv_fetch_exc();
    mr->ts = PyEval_SaveThread();
}

static void srv_main_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    ((struct srv_main_run *)w->data)->timed_out = 1;
}

static int srv_main_done(void *arg)
{
    struct srv_main_run *mr = arg;

    return mr->exc || mr->timed_out || (mr->done && mr->done(mr->arg));
}

/* Runs the hub until done(arg) (NULL: never), timeout seconds (< 0: none)
 * or a signal handler raises. GIL held on entry and exit. Returns 1 when
 * done, 0 on timeout, -1 with an exception set (the handler's, or
 * RuntimeError for a deadlock). */
static int srv_main_run(int (*done)(void *), void *arg, double timeout)
{
    struct srv_main_run mr = {.done = done, .arg = arg};
    struct hub *hub = G.hub();
    struct ev_loop *loop;
    int rc, err;

    if (!hub) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    loop = G.hub_loop(hub);
    ev_timer_init(&mr.tick, srv_main_tick, 0.1, 0.1);
    mr.tick.data = &mr;
    ev_timer_init(&mr.deadline, srv_main_deadline, timeout < 0 ? 0 : timeout, 0.);
    mr.deadline.data = &mr;
    mr.ts = PyEval_SaveThread();
    ev_now_update(loop);
    ev_timer_start(loop, &mr.tick);
    ev_unref(loop); /* the tick alone is no reason to wait */
    if (timeout >= 0)
        ev_timer_start(loop, &mr.deadline);
    rc = G.hub_run(srv_main_done, &mr);
    err = errno;
    ev_ref(loop);
    ev_timer_stop(loop, &mr.tick);
    ev_timer_stop(loop, &mr.deadline);
    PyEval_RestoreThread(mr.ts);
    if (mr.exc) {
        srv_restore_exc(mr.exc);
        return -1;
    }
    if (rc < 0) {
        if (err == EDEADLK)
            PyErr_SetString(PyExc_RuntimeError,
                            "deadlock: every green thread is waiting and "
                            "nothing can wake them");
        else
            PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return done && done(arg) ? 1 : 0;
}

/* ---- sleep ------------------------------------------------------------ */

static PyObject *mod_sleep(PyObject *self, PyObject *arg)
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

static PyObject *mod_stats(PyObject *self, PyObject *unused)
{
    struct green_stats st;

    G.get_stats(&st);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:n}", "spawned",
                         (unsigned long long)st.spawned, "live",
                         (unsigned long long)st.live, "switches",
                         (unsigned long long)st.switches, "stacks_pooled",
                         (unsigned long long)st.stacks_pooled,
                         "stack_high_water",
                         (unsigned long long)st.stack_high_water, "stack_size",
                         (Py_ssize_t)G.default_stack_size());
}

/* ---- spawn and GreenThread ------------------------------------------- */

struct srv_gt {
    PyObject_HEAD
    PyObject *fn, *args, *kwargs;
    PyObject *result, *exc;
    PyInterpreterState *interp;
    struct green_wq waiters;
    int done;
};

static PyTypeObject srv_gt_type;

static void srv_gt_run(void *arg)
{
    struct srv_gt *gt = arg;
    PyThreadState *ts = srv_tstate_get(gt->interp);

    if (!ts) {
        gt->done = 1; /* cannot run without a thread state */
        G.wq_wake_all(&gt->waiters);
        return;
    }
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
    srv_tstate_put(ts);
}

static PyObject *mod_spawn(PyObject *self, PyObject *args, PyObject *kwargs)
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
        if (srv_main_run(srv_gt_is_done, gt, timeout) < 0)
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

static PyTypeObject srv_gt_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "libgreen.GreenThread",
    .tp_basicsize = sizeof(struct srv_gt),
    .tp_dealloc = srv_gt_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A function running in its own green thread (libgreen.spawn).",
    .tp_methods = srv_gt_methods,
    .tp_getset = srv_gt_getset,
};

/* ---- wsgi.server ------------------------------------------------------ */

static int srv_opt_double(PyObject *o, double *out, const char *name)
{
    if (!o)
        return 0;
    if (o == Py_None) {
        *out = 0;
        return 0;
    }
    *out = PyFloat_AsDouble(o);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    if (*out < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0 seconds", name);
        return -1;
    }
    return 0;
}

static int srv_opt_size(Py_ssize_t v, size_t *out, const char *name)
{
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0", name);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

static PyObject *srv_server_fn(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"sock", "app", "log_output", "keepalive",
                            "header_timeout", "body_timeout",
                            "graceful_timeout", "max_size", "max_body_size",
                            "url_length_limit", "max_header_count",
                            "max_header_size", "max_head_size", "environ",
                            "debug", NULL};
    struct srv_server srv;
    PyObject *sock, *app, *keepalive = NULL, *header_to = NULL, *body_to = NULL,
             *grace = NULL, *environ = NULL, *name = NULL, *fileno, *ret = NULL;
    PyObject *stderr_obj;
    Py_ssize_t max_size = 1024, max_body = 0, url_limit = 8190,
               max_hdrs = 100, max_hdr = 8190, max_head = 65536;
    int log_output = 1, debug = 0;

    memset(&srv, 0, sizeof srv);
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$pOOOOnnnnnnOp:server", names,
                                     &sock, &app, &log_output, &keepalive,
                                     &header_to, &body_to, &grace, &max_size,
                                     &max_body, &url_limit, &max_hdrs, &max_hdr,
                                     &max_head, &environ, &debug))
        return NULL;
    if (!PyCallable_Check(app)) {
        PyErr_SetString(PyExc_TypeError, "app must be a WSGI callable");
        return NULL;
    }
    srv.opt.log_output = log_output;
    srv.opt.debug = debug;
    srv.opt.keepalive = 60;
    srv.opt.header_timeout = 30;
    srv.opt.body_timeout = 60;
    srv.opt.graceful_timeout = 30;
    if (keepalive == Py_False)
        srv.opt.keepalive = 0;
    else if (keepalive && keepalive != Py_True &&
             srv_opt_double(keepalive, &srv.opt.keepalive, "keepalive") < 0)
        return NULL;
    if (srv_opt_double(header_to, &srv.opt.header_timeout, "header_timeout") < 0 ||
        srv_opt_double(body_to, &srv.opt.body_timeout, "body_timeout") < 0 ||
        srv_opt_double(grace, &srv.opt.graceful_timeout, "graceful_timeout") < 0 ||
        srv_opt_size(max_size, &srv.opt.max_size, "max_size") < 0 ||
        srv_opt_size(max_body, &srv.opt.max_body_size, "max_body_size") < 0 ||
        srv_opt_size(url_limit, &srv.opt.limits.max_request_line, "url_length_limit") < 0 ||
        srv_opt_size(max_hdrs, &srv.opt.limits.max_headers, "max_header_count") < 0 ||
        srv_opt_size(max_hdr, &srv.opt.limits.max_header_size, "max_header_size") < 0 ||
        srv_opt_size(max_head, &srv.opt.limits.max_head_size, "max_head_size") < 0)
        return NULL;
    if (srv.opt.max_size == 0) {
        PyErr_SetString(PyExc_ValueError, "max_size must be at least 1");
        return NULL;
    }
    if (srv.opt.body_timeout == 0)
        srv.opt.body_timeout = -1; /* no limit */
    if (srv.opt.header_timeout == 0)
        srv.opt.header_timeout = 0;

    fileno = PyObject_CallMethod(sock, "fileno", NULL);
    if (!fileno)
        return NULL;
    srv.fd = (int)PyLong_AsLong(fileno);
    Py_DECREF(fileno);
    if (srv.fd < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "the socket is closed");
        return NULL;
    }
    name = PyObject_CallMethod(sock, "getsockname", NULL);
    if (!name)
        return NULL;
    if (PyUnicode_Check(name) || PyBytes_Check(name)) {
        PyObject *s = PyUnicode_Check(name) ? Py_NewRef(name)
                                            : PyUnicode_DecodeFSDefaultAndSize(
                                                  PyBytes_AS_STRING(name),
                                                  PyBytes_GET_SIZE(name));
        srv.unix_socket = 1;
        snprintf(srv.host, sizeof srv.host, "%s", s ? PyUnicode_AsUTF8(s) : "");
        Py_XDECREF(s);
        snprintf(srv.port, sizeof srv.port, "%s", "");
        snprintf(srv.url, sizeof srv.url, "unix:%s", srv.host);
    } else if (PyTuple_Check(name) && PyTuple_GET_SIZE(name) >= 2) {
        const char *h = PyUnicode_AsUTF8(PyTuple_GET_ITEM(name, 0));
        long p = PyLong_AsLong(PyTuple_GET_ITEM(name, 1));
        snprintf(srv.host, sizeof srv.host, "%s", h ? h : "");
        snprintf(srv.port, sizeof srv.port, "%ld", p);
        snprintf(srv.url, sizeof srv.url, strchr(srv.host, ':') ? "http://[%s]:%s"
                                                                 : "http://%s:%s",
                 srv.host, srv.port);
    }
    Py_DECREF(name);
    if (PyErr_Occurred())
        return NULL;

    srv.base_environ = Py_BuildValue(
        "{s:(ii),s:s,s:O,s:O,s:O,s:O,s:O,s:s,s:s,s:s,s:s}", "wsgi.version", 1, 0,
        "wsgi.url_scheme", "http", "wsgi.multithread", Py_True,
        "wsgi.multiprocess", Py_False, "wsgi.run_once", Py_False,
        "wsgi.input_terminated", Py_True, "wsgi.file_wrapper",
        (PyObject *)&srv_filewrapper_type, "SCRIPT_NAME", "", "SERVER_NAME",
        srv.host, "SERVER_PORT", srv.port, "SERVER_SOFTWARE", "libgreen");
    if (!srv.base_environ)
        return NULL;
    stderr_obj = PySys_GetObject("stderr"); /* borrowed */
    if (PyDict_SetItemString(srv.base_environ, "wsgi.errors",
                             stderr_obj ? stderr_obj : Py_None) < 0)
        goto out;
    if (environ && environ != Py_None && PyDict_Update(srv.base_environ, environ) < 0)
        goto out;
    srv.app = Py_NewRef(app);
    ret = srv_serve(&srv);
out:
    Py_XDECREF(srv.app);
    Py_XDECREF(srv.base_environ);
    return ret;
}

/* ---- the modules ------------------------------------------------------ */

static PyMethodDef mod_methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))mod_spawn, METH_VARARGS | METH_KEYWORDS,
     "spawn(fn, *args, **kw) -> GreenThread: run fn in a new green thread"},
    {"stats", mod_stats, METH_NOARGS,
     "stats() -> dict: green threads spawned and live, switches, pooled "
     "stacks, and (with LIBGREEN_STACK_STATS=1) the deepest stack use"},
    {"sleep", mod_sleep, METH_O,
     "sleep(seconds): park this green thread (or run the hub) for seconds"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef wsgi_methods[] = {
    {"server", (PyCFunction)(void (*)(void))srv_server_fn,
     METH_VARARGS | METH_KEYWORDS,
     "server(sock, app, *, log_output=True, keepalive=True, header_timeout=30,\n"
     "       body_timeout=60, graceful_timeout=30, max_size=1024,\n"
     "       max_body_size=None, url_length_limit=8190, max_header_count=100,\n"
     "       max_header_size=8190, max_head_size=65536, environ=None,\n"
     "       debug=False)\n\n"
     "Serve the WSGI app on the listening socket until SIGINT or SIGTERM,\n"
     "then close the listening socket (new connections are refused), finish\n"
     "the requests in progress (up to graceful_timeout seconds) and return."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod_def = {
    PyModuleDef_HEAD_INIT, "libgreen",
    "Green threads and a WSGI server, cooperative at the libc level.", -1,
    mod_methods, NULL, NULL, NULL, NULL,
};

static struct PyModuleDef wsgi_def = {
    PyModuleDef_HEAD_INIT, "libgreen.wsgi",
    "A C HTTP/1.1 WSGI server: every request in its own green thread.", -1,
    wsgi_methods, NULL, NULL, NULL, NULL,
};

__attribute__((visibility("default"))) PyObject *PyInit_libgreen(void);

PyObject *PyInit_libgreen(void)
{
    PyObject *m = NULL, *wsgi = NULL, *dict, *code, *modules;

    if (srv_api_init() < 0)
        return NULL;
    if (srv_environ_init() < 0 || srv_request_types_init(NULL) < 0 ||
        PyType_Ready(&srv_gt_type) < 0)
        return NULL;
    srv_compat_init();
    m = PyModule_Create(&mod_def);
    wsgi = PyModule_Create(&wsgi_def);
    if (!m || !wsgi)
        goto error;
    if (PyModule_AddObjectRef(wsgi, "FileWrapper", (PyObject *)&srv_filewrapper_type) < 0 ||
        PyModule_AddObjectRef(m, "GreenThread", (PyObject *)&srv_gt_type) < 0 ||
        PyModule_AddObjectRef(m, "wsgi", wsgi) < 0 ||
        PyModule_AddObject(m, "__path__", PyList_New(0)) < 0)
        goto error;
    modules = PyImport_GetModuleDict(); /* borrowed */
    if (PyDict_SetItemString(modules, "libgreen.wsgi", wsgi) < 0)
        goto error;
    dict = PyModule_GetDict(m); /* borrowed */
    if (PyDict_SetItemString(dict, "__builtins__", PyEval_GetBuiltins()) < 0)
        goto error;
    code = PyRun_String(srv_py_source, Py_file_input, dict, dict);
    if (!code)
        goto error;
    Py_DECREF(code);
    Py_DECREF(wsgi);
    return m;

error:
    Py_XDECREF(wsgi);
    Py_XDECREF(m);
    return NULL;
}
