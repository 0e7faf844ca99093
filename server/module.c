/* server/module.c - the `libgreen` Python module and `libgreen.wsgi`:
 * what they contain, and their creation at import.
 *
 *   libgreen.listen(address, backlog=1024) -> socket.socket  (listen.py)
 *   libgreen.spawn(fn, *args, **kw) -> GreenThread            (greenthread.c)
 *   libgreen.sleep(seconds), libgreen.stats()                 (greenthread.c)
 *   libgreen.wsgi.server(sock, app, **options)                (wsgi_server.c)
 *   libgreen.wsgi.options() -> [dict, ...]                    (options.c)
 *   libgreen.wsgi.FileWrapper                                 (filewrapper.c)
 *   libgreen.GunicornWorker, made on first use   (lazy.c, gunicorn.py)
 *   libgreen._cli_main() -> exit status   the `libgreen` command (cli.py)
 *   libgreen.__version__   debian/changelog's version, baked in by the Makefile
 *
 * Shaped like eventlet's API so its deployment docs carry over. Python
 * code runs in green threads (spawn, requests) each with its own thread
 * state; code in the main context that waits (sleep, wait, server) runs
 * the hub with the GIL released (mainrun.c).
 */

#include "build_id.h"
#include "server/debug.h"
#include "server/py.h"

/* server/listen.py, as the bytes the Makefile generated from it. */
static const unsigned char srv_listen_py[] = {
#include "server/listen.py.inc"
    0};

/* The `libgreen` command's Python modules, libgreen.<name>: compiled
 * only when the command runs, so `import libgreen` stays cheap. In
 * dependency order. */
static const unsigned char srv_appload_py[] = {
#include "server/appload.py.inc"
    0};
static const unsigned char srv_workers_py[] = {
#include "server/workers.py.inc"
    0};
static const unsigned char srv_cli_py[] = {
#include "server/cli.py.inc"
    0};
static const struct {
    const char *name;
    const unsigned char *source;
} srv_cli_modules[] = {
    {"appload", srv_appload_py},
    {"workers", srv_workers_py},
    {"cli", srv_cli_py},
};

static PyObject *srv_cli_main(PyObject *self, PyObject *unused);

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
    {"__getattr__", srv_module_getattr, METH_O,
     "the attributes made on first use (PEP 562): GunicornWorker"},
    {"_cli_main", srv_cli_main, METH_NOARGS,
     "_cli_main() -> exit status: the `libgreen` command on sys.argv, as "
     "its launcher runs it"},
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

/* Runs embedded Python source in the namespace of module m. */
static int srv_run_source(PyObject *m, const unsigned char *source,
                          const char *filename)
{
    PyObject *dict = PyModule_GetDict(m); /* borrowed */
    PyObject *code, *ret;

    if (PyDict_SetItemString(dict, "__builtins__", PyEval_GetBuiltins()) < 0)
        return -1;
    code = Py_CompileString((const char *)source, filename, Py_file_input);
    if (!code)
        return -1;
    ret = PyEval_EvalCode(code, dict, dict);
    Py_DECREF(code);
    Py_XDECREF(ret);
    return ret ? 0 : -1;
}

/* libgreen.<name> from embedded source, in sys.modules as an imported
 * module would be (borrowed reference). */
static PyObject *srv_load_submodule(PyObject *pkg, const char *name,
                                    const unsigned char *source)
{
    char full[64], filename[96];
    PyObject *m;

    snprintf(full, sizeof full, "libgreen.%s", name);
    m = PyDict_GetItemString(PyImport_GetModuleDict(), full);
    if (m)
        return m;
    snprintf(filename, sizeof filename, "<libgreen server/%s.py>", name);
    m = PyImport_AddModule(full); /* borrowed, kept by sys.modules */
    if (!m)
        return NULL;
    if (PyModule_AddStringConstant(m, "__package__", "libgreen") < 0 ||
        srv_run_source(m, source, filename) < 0 ||
        PyModule_AddObjectRef(pkg, name, m) < 0) {
        PyObject *exc = srv_fetch_exc(); /* a half-made module goes */
        if (PyDict_DelItemString(PyImport_GetModuleDict(), full) < 0)
            PyErr_Clear();
        srv_restore_exc(exc);
        return NULL;
    }
    return m;
}

static PyObject *srv_cli_main(PyObject *self, PyObject *unused)
{
    PyObject *cli = NULL;

    for (size_t i = 0; i < sizeof srv_cli_modules / sizeof *srv_cli_modules; i++) {
        cli = srv_load_submodule(self, srv_cli_modules[i].name,
                                 srv_cli_modules[i].source);
        if (!cli)
            return NULL;
    }
    return PyObject_CallMethod(cli, "main", NULL);
}

__attribute__((visibility("default"))) PyObject *PyInit_libgreen(void);

PyObject *PyInit_libgreen(void)
{
    PyObject *m = NULL, *wsgi = NULL;

    if (srv_api_init() < 0 || srv_environ_init() < 0 ||
        srv_request_types_init() < 0 || PyType_Ready(&srv_gt_type) < 0)
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
        PyModule_AddStringConstant(m, "__version__", LIBGREEN_VERSION) < 0 ||
        PyModule_AddObject(m, "__path__", PyList_New(0)) < 0 ||
        PyDict_SetItemString(PyImport_GetModuleDict(), "libgreen.wsgi", wsgi) < 0 ||
        srv_run_source(m, srv_listen_py, "<libgreen server/listen.py>") < 0)
        goto error;
    Py_DECREF(wsgi);
    return m;

error:
    Py_XDECREF(wsgi);
    Py_XDECREF(m);
    return NULL;
}
