/* server/module.c - the `libgreen` Python module and `libgreen.wsgi`:
 * what they contain, and their creation at import.
 *
 *   libgreen.listen(address, backlog=1024) -> socket.socket  (listen.py)
 *   libgreen.spawn(fn, *args, **kw) -> GreenThread            (greenthread.c)
 *   libgreen.sleep(seconds), libgreen.stats()                 (greenthread.c)
 *   libgreen.wsgi.server(sock, app, **options)                (wsgi_server.c)
 *   libgreen.wsgi.options() -> [dict, ...]                    (options.c)
 *   libgreen.wsgi.FileWrapper                                 (filewrapper.c)
 *
 * Shaped like eventlet's API so its deployment docs carry over. Python
 * code runs in green threads (spawn, requests) each with its own thread
 * state; code in the main context that waits (sleep, wait, server) runs
 * the hub with the GIL released (mainrun.c).
 */

#include "server/debug.h"
#include "server/py.h"

/* server/listen.py, as the bytes the Makefile generated from it. */
static const unsigned char srv_listen_py[] = {
#include "server/listen.py.inc"
    0};

static PyMethodDef mod_methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))srv_spawn, METH_VARARGS | METH_KEYWORDS,
     "spawn(fn, *args, **kw) -> GreenThread: run fn in a new green thread"},
    {"stats", srv_stats, METH_NOARGS,
     "stats() -> dict: green threads spawned, live, parked and ready,\n"
     "switches, parks per kind of call, pooled stacks, (with\n"
     "LIBGREEN_STACK_STATS=1) the deepest stack use, and the server's\n"
     "connections open and requests answered"},
    {"sleep", srv_sleep, METH_O,
     "sleep(seconds): park this green thread (or run the hub) for seconds"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef wsgi_methods[] = {
    /* its docstring is made from server/options.def at import */
    {"server", (PyCFunction)(void (*)(void))srv_wsgi_server,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"options", srv_options_list, METH_NOARGS,
     "options() -> list of dicts: every option of server() with its kind,\n"
     "default, range, command-line flag, environment variable and help\n"
     "(from server/options.def), for tools that build on server()"},
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

/* Runs listen.py in the namespace of module m. */
static int srv_run_listen_py(PyObject *m)
{
    PyObject *dict = PyModule_GetDict(m); /* borrowed */
    PyObject *code, *ret;

    if (PyDict_SetItemString(dict, "__builtins__", PyEval_GetBuiltins()) < 0)
        return -1;
    code = Py_CompileString((const char *)srv_listen_py, "<libgreen server/listen.py>",
                            Py_file_input);
    if (!code)
        return -1;
    ret = PyEval_EvalCode(code, dict, dict);
    Py_DECREF(code);
    Py_XDECREF(ret);
    return ret ? 0 : -1;
}

__attribute__((visibility("default"))) PyObject *PyInit_libgreen(void);

PyObject *PyInit_libgreen(void)
{
    PyObject *m = NULL, *wsgi = NULL;

    if (srv_api_init() < 0 || srv_environ_init() < 0 ||
        srv_request_types_init(NULL) < 0 || PyType_Ready(&srv_gt_type) < 0)
        return NULL;
    srv_park_hooks_init();
    srv_debug_init();
    wsgi_methods[0].ml_doc = srv_wsgi_server_doc();
    if (!wsgi_methods[0].ml_doc)
        return PyErr_NoMemory();
    m = PyModule_Create(&mod_def);
    wsgi = PyModule_Create(&wsgi_def);
    if (!m || !wsgi)
        goto error;
    if (PyModule_AddObjectRef(wsgi, "FileWrapper", (PyObject *)&srv_filewrapper_type) < 0 ||
        PyModule_AddObjectRef(m, "GreenThread", (PyObject *)&srv_gt_type) < 0 ||
        PyModule_AddObjectRef(m, "wsgi", wsgi) < 0 ||
        PyModule_AddObject(m, "__path__", PyList_New(0)) < 0 ||
        PyDict_SetItemString(PyImport_GetModuleDict(), "libgreen.wsgi", wsgi) < 0 ||
        srv_run_listen_py(m) < 0)
        goto error;
    Py_DECREF(wsgi);
    return m;

error:
    Py_XDECREF(wsgi);
    Py_XDECREF(m);
    return NULL;
}
