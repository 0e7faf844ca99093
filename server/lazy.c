/* server/lazy.c - attributes of the libgreen module made on first use:
 * libgreen.__getattr__ (PEP 562).
 *
 * libgreen.GunicornWorker is a gunicorn worker class, so it imports
 * gunicorn; `import libgreen` must not (it runs in every program started
 * with the preload that imports us, and must stay cheap). The class's
 * source, server/gunicorn.py, is embedded like listen.py and run the
 * first time the attribute is looked up - which is how gunicorn's
 * loader finds `libgreen.GunicornWorker`: import libgreen, then getattr.
 * It becomes the module libgreen.gunicorn, and the attribute is then set
 * on libgreen so the hook runs once.
 */
#include "server/py.h"

/* server/gunicorn.py, as the bytes the Makefile generated from it. */
static const unsigned char srv_gunicorn_py[] = {
#include "server/gunicorn.py.inc"
    0};

#define SRV_GUNICORN_FILE "<libgreen server/gunicorn.py>"

/* Tracebacks through embedded code show its lines: the source goes into
 * linecache as if read from a file that never changes. Best effort. */
static void srv_linecache_add(const char *filename, const char *src)
{
    PyObject *lc = PyImport_ImportModule("linecache"), *cache = NULL,
             *text = NULL, *lines = NULL, *entry = NULL;

    if (lc && (cache = PyObject_GetAttrString(lc, "cache")) && PyDict_Check(cache) &&
        (text = PyUnicode_FromString(src)) &&
        (lines = PyObject_CallMethod(text, "splitlines", "O", Py_True)) &&
        (entry = Py_BuildValue("(nOOs)", (Py_ssize_t)strlen(src), Py_None,
                               lines, filename)))
        (void)PyDict_SetItemString(cache, filename, entry);
    Py_XDECREF(entry);
    Py_XDECREF(lines);
    Py_XDECREF(text);
    Py_XDECREF(cache);
    Py_XDECREF(lc);
    PyErr_Clear();
}

/* libgreen.gunicorn, run from its embedded source the first time. */
static PyObject *srv_gunicorn_module(void)
{
    PyObject *modules = PyImport_GetModuleDict(), *m, *code, *ret;
    const char *src = (const char *)srv_gunicorn_py;

    m = PyDict_GetItemString(modules, "libgreen.gunicorn"); /* borrowed */
    if (m)
        return Py_NewRef(m);
    m = PyModule_New("libgreen.gunicorn");
    if (!m)
        return NULL;
    code = Py_CompileString(src, SRV_GUNICORN_FILE, Py_file_input);
    if (!code ||
        PyModule_AddStringConstant(m, "__file__", SRV_GUNICORN_FILE) < 0 ||
        PyDict_SetItemString(PyModule_GetDict(m), "__builtins__",
                             PyEval_GetBuiltins()) < 0 ||
        PyDict_SetItemString(modules, "libgreen.gunicorn", m) < 0) {
        Py_XDECREF(code);
        Py_DECREF(m);
        return NULL;
    }
    srv_linecache_add(SRV_GUNICORN_FILE, src);
    ret = PyEval_EvalCode(code, PyModule_GetDict(m), PyModule_GetDict(m));
    Py_DECREF(code);
    if (!ret) {
        /* as a failed import does: no half-made module left behind */
        PyObject *exc = srv_fetch_exc();
        PyDict_DelItemString(modules, "libgreen.gunicorn");
        PyErr_Clear();
        srv_restore_exc(exc);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(ret);
    return m;
}

PyObject *srv_module_getattr(PyObject *self, PyObject *name)
{
    PyObject *m, *value;

    if (!PyUnicode_Check(name) ||
        PyUnicode_CompareWithASCIIString(name, "GunicornWorker") != 0) {
        PyErr_Format(PyExc_AttributeError,
                     "module 'libgreen' has no attribute %R", name);
        return NULL;
    }
    m = srv_gunicorn_module();
    if (!m)
        return NULL;
    value = PyObject_GetAttr(m, name);
    Py_DECREF(m);
    if (value && PyObject_SetAttr(self, name, value) < 0)
        Py_CLEAR(value);
    return value;
}
