/* server/wsgi_server.c - libgreen.wsgi.server(sock, app, **options): from
 * Python's arguments to a struct srv_server, then serve (server/serve.c).
 *
 * The options are not spelled out here: they come from the table of
 * server/options.def (converted and checked by server/options.c), and
 * so does this function's docstring.
 */
#include <stdio.h>
#include <string.h>

#include "server/py.h"

static const char srv_server_summary[] =
    "Serve the WSGI app on the listening socket until SIGINT or SIGTERM,\n"
    "then close the listening socket (new connections are refused), finish\n"
    "the requests in progress (up to graceful_timeout seconds) and return.";

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
static int srv_server_address(struct srv_server *srv, PyObject *sock)
{
    PyObject *fileno = PyObject_CallMethod(sock, "fileno", NULL), *name;

    if (!fileno)
        return -1;
    srv->fd = (int)PyLong_AsLong(fileno);
    Py_DECREF(fileno);
    if (srv->fd < 0) {
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
        srv->unix_socket = 1;
        snprintf(srv->host, sizeof srv->host, "%s", s ? PyUnicode_AsUTF8(s) : "");
        Py_XDECREF(s);
        snprintf(srv->port, sizeof srv->port, "%s", "");
        snprintf(srv->url, sizeof srv->url, "unix:%s", srv->host);
    } else if (PyTuple_Check(name) && PyTuple_GET_SIZE(name) >= 2) {
        const char *h = PyUnicode_AsUTF8(PyTuple_GET_ITEM(name, 0));
        long p = PyLong_AsLong(PyTuple_GET_ITEM(name, 1));
        snprintf(srv->host, sizeof srv->host, "%s", h ? h : "");
        snprintf(srv->port, sizeof srv->port, "%ld", p);
        snprintf(srv->url, sizeof srv->url,
                 strchr(srv->host, ':') ? "http://[%s]:%s" : "http://%s:%s",
                 srv->host, srv->port);
    }
    Py_DECREF(name);
    return PyErr_Occurred() ? -1 : 0;
}

/* The keys every request's environ starts from (new reference). */
static PyObject *srv_server_environ(const struct srv_server *srv)
{
    PyObject *stderr_obj, *env = Py_BuildValue(
        "{s:(ii),s:s,s:O,s:O,s:O,s:O,s:O,s:s,s:s,s:s,s:s}", "wsgi.version", 1, 0,
        "wsgi.url_scheme", "http", "wsgi.multithread", Py_True,
        "wsgi.multiprocess", Py_False, "wsgi.run_once", Py_False,
        "wsgi.input_terminated", Py_True, "wsgi.file_wrapper",
        (PyObject *)&srv_filewrapper_type, "SCRIPT_NAME", "", "SERVER_NAME",
        srv->host, "SERVER_PORT", srv->port, "SERVER_SOFTWARE", "libgreen");

    if (!env)
        return NULL;
    stderr_obj = PySys_GetObject("stderr"); /* borrowed */
    if (PyDict_SetItemString(env, "wsgi.errors", stderr_obj ? stderr_obj : Py_None) < 0 ||
        (srv->opt.environ && PyDict_Update(env, srv->opt.environ) < 0))
        Py_CLEAR(env);
    return env;
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
    if (srv_options_set(given, &srv.opt) < 0 || srv_server_address(&srv, sock) < 0)
        return NULL;
    srv.base_environ = srv_server_environ(&srv);
    if (!srv.base_environ)
        return NULL;
    srv.app = Py_NewRef(app);
    ret = srv_serve(&srv);
    Py_DECREF(srv.app);
    Py_DECREF(srv.base_environ);
    return ret;
}
