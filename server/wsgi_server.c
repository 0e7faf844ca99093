/* server/wsgi_server.c - libgreen.wsgi.server(sock, app, **options): from
 * Python's arguments to a struct srv_server, then serve (server/serve.c).
 * sock is one listening socket or a list or tuple of them (the `libgreen`
 * command's several --bind); each gets its own SERVER_NAME and
 * SERVER_PORT.
 *
 * The options are not spelled out here: they come from the table of
 * server/options.def (converted and checked by server/options.c), and
 * so does this function's docstring.
 */
#include <stdio.h>
#include <string.h>

#include "server/py.h"

static const char srv_server_summary[] =
    "Serve the WSGI app on the listening socket (or list of sockets) until\n"
    "SIGINT or SIGTERM, then close the listening sockets (new connections\n"
    "are refused), finish the requests in progress (up to graceful_timeout\n"
    "seconds) and return.";

const char *srv_wsgi_server_doc(void)
{
    static char *doc; /* built once, kept for the life of the process */

    if (!doc)
        doc = srv_options_doc("server(sock, app", srv_server_summary);
    return doc;
}

/* Sorts server()'s arguments: sock and app, by position or by name, and
 * the value of each option given into given[] (borrowed references). */
static int srv_server_args(PyObject *args, PyObject *kw, PyObject **sock,
                           PyObject **app, PyObject *given[SRV_NOPTIONS])
{
    Py_ssize_t nargs = PyTuple_GET_SIZE(args), pos = 0;
    PyObject *key, *value;

    *sock = nargs > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
    *app = nargs > 1 ? PyTuple_GET_ITEM(args, 1) : NULL;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "libgreen.wsgi.server() takes 2 "
                     "positional arguments (sock, app) but %zd were given; "
                     "the options are keyword-only", nargs);
        return -1;
    }
    for (int i = 0; i < SRV_NOPTIONS; i++)
        given[i] = NULL;
    while (kw && PyDict_Next(kw, &pos, &key, &value)) {
        PyObject **slot;
        int i;
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "keywords must be strings");
            return -1;
        }
        if (PyUnicode_CompareWithASCIIString(key, "sock") == 0)
            slot = sock;
        else if (PyUnicode_CompareWithASCIIString(key, "app") == 0)
            slot = app;
        else if ((i = srv_options_find(key)) >= 0)
            slot = &given[i];
        else
            return srv_options_unknown(key);
        if (*slot) {
            PyErr_Format(PyExc_TypeError, "libgreen.wsgi.server() got "
                         "multiple values for argument %R", key);
            return -1;
        }
        *slot = value;
    }
    if (!*sock || !*app) {
        PyErr_Format(PyExc_TypeError, "libgreen.wsgi.server() missing "
                     "required argument '%s' (pos %d)", *sock ? "app" : "sock",
                     *sock ? 2 : 1);
        return -1;
    }
    return 0;
}

/* The listening fd, and SERVER_NAME, SERVER_PORT and the start-up URL
 * from the address the socket is bound to. */
static int srv_listener_address(struct srv_listener *l, PyObject *sock)
{
    PyObject *fileno = PyObject_CallMethod(sock, "fileno", NULL), *name;

    if (!fileno)
        return -1;
    l->fd = (int)PyLong_AsLong(fileno);
    Py_DECREF(fileno);
    if (l->fd < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "the socket is closed");
        return -1;
    }
    name = PyObject_CallMethod(sock, "getsockname", NULL);
    if (!name)
        return -1;
    if (PyUnicode_Check(name) || PyBytes_Check(name)) {
        PyObject *s = PyUnicode_Check(name) ? Py_NewRef(name)
                                            : PyUnicode_DecodeFSDefaultAndSize(
                                                  PyBytes_AS_STRING(name),
                                                  PyBytes_GET_SIZE(name));
        snprintf(l->host, sizeof l->host, "%s", s ? PyUnicode_AsUTF8(s) : "");
        Py_XDECREF(s);
        snprintf(l->port, sizeof l->port, "%s", "");
        snprintf(l->url, sizeof l->url, "unix:%s", l->host);
    } else if (PyTuple_Check(name) && PyTuple_GET_SIZE(name) >= 2) {
        const char *h = PyUnicode_AsUTF8(PyTuple_GET_ITEM(name, 0));
        long p = PyLong_AsLong(PyTuple_GET_ITEM(name, 1));
        snprintf(l->host, sizeof l->host, "%s", h ? h : "");
        snprintf(l->port, sizeof l->port, "%ld", p);
        snprintf(l->url, sizeof l->url,
                 strchr(l->host, ':') ? "http://[%s]:%s" : "http://%s:%s",
                 l->host, l->port);
    }
    Py_DECREF(name);
    return PyErr_Occurred() ? -1 : 0;
}

/* The keys every request's environ on listener l starts from (new
 * reference). */
/* Keys a request adds to its copy of the base environ: the request
 * line's nine (environ.c) and room for the header fields of a browser's
 * request. */
#define SRV_ENVIRON_ADDED 24

/* base, moved into a dict whose table has room for SRV_ENVIRON_ADDED more
 * keys. PyDict_Copy clones the table it is given, so every request's
 * environ (srv_build_environ) then takes its keys without growing: with
 * the table Py_BuildValue leaves, each one was resized once, a tenth of
 * building it. Steals base. */
static PyObject *srv_environ_roomy(PyObject *base)
{
    PyObject *env = _PyDict_NewPresized(PyDict_GET_SIZE(base) + SRV_ENVIRON_ADDED);
    PyObject *k, *v;
    Py_ssize_t pos = 0;

    while (env && PyDict_Next(base, &pos, &k, &v))
        if (PyDict_SetItem(env, k, v) < 0)
            Py_CLEAR(env);
    Py_DECREF(base);
    return env;
}

static PyObject *srv_listener_environ(const struct srv_server *srv,
                                      const struct srv_listener *l)
{
    PyObject *stderr_obj, *env = Py_BuildValue(
        "{s:(ii),s:s,s:O,s:O,s:O,s:O,s:O,s:s,s:s,s:s,s:s}", "wsgi.version", 1, 0,
        "wsgi.url_scheme", "http", "wsgi.multithread", Py_True,
        "wsgi.multiprocess", Py_False, "wsgi.run_once", Py_False,
        "wsgi.input_terminated", Py_True, "wsgi.file_wrapper",
        (PyObject *)&srv_filewrapper_type, "SCRIPT_NAME", "", "SERVER_NAME",
        l->host, "SERVER_PORT", l->port, "SERVER_SOFTWARE", "libgreen");

    if (!env)
        return NULL;
    stderr_obj = PySys_GetObject("stderr"); /* borrowed */
    if (PyDict_SetItemString(env, "wsgi.errors", stderr_obj ? stderr_obj : Py_None) < 0 ||
        (srv->opt.environ && PyDict_Update(env, srv->opt.environ) < 0))
        Py_CLEAR(env);
    return env ? srv_environ_roomy(env) : NULL;
}

static void srv_listeners_free(struct srv_server *srv)
{
    for (size_t i = 0; i < srv->nlisteners; i++)
        Py_XDECREF(srv->listeners[i].base_environ);
    PyMem_Free(srv->listeners);
    srv->listeners = NULL;
    srv->nlisteners = 0;
}

/* srv->listeners from sock: one socket, or a list or tuple of them. */
static int srv_listeners_new(struct srv_server *srv, PyObject *sock)
{
    int many = PyList_Check(sock) || PyTuple_Check(sock);
    PyObject *seq = many ? PySequence_Fast(sock, "") : NULL;
    Py_ssize_t n = many ? (seq ? PySequence_Fast_GET_SIZE(seq) : -1) : 1;

    if (n <= 0) {
        if (n == 0)
            PyErr_SetString(PyExc_ValueError, "libgreen.wsgi.server(): the list "
                            "of listening sockets is empty");
        Py_XDECREF(seq);
        return -1;
    }
    srv->listeners = PyMem_Calloc((size_t)n, sizeof *srv->listeners);
    if (!srv->listeners) {
        Py_XDECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        struct srv_listener *l = &srv->listeners[i];
        srv->nlisteners++;
        l->srv = srv;
        if (srv_listener_address(l, many ? PySequence_Fast_GET_ITEM(seq, i) : sock) < 0 ||
            !(l->base_environ = srv_listener_environ(srv, l))) {
            Py_XDECREF(seq);
            srv_listeners_free(srv);
            return -1;
        }
    }
    Py_XDECREF(seq);
    return 0;
}

PyObject *srv_wsgi_server(PyObject *self, PyObject *args, PyObject *kw)
{
    PyObject *given[SRV_NOPTIONS], *sock, *app, *ret;
    struct srv_server srv;

    memset(&srv, 0, sizeof srv);
    if (srv_server_args(args, kw, &sock, &app, given) < 0)
        return NULL;
    if (!PyCallable_Check(app)) {
        PyErr_SetString(PyExc_TypeError, "app must be a WSGI callable");
        return NULL;
    }
    if (srv_options_set(given, &srv.opt) < 0 || srv_listeners_new(&srv, sock) < 0)
        return NULL;
    srv.app = Py_NewRef(app);
    ret = srv_serve(&srv);
    Py_DECREF(srv.app);
    srv_listeners_free(&srv);
    return ret;
}
