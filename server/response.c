/* server/response.c - the response of one request: start_response,
 * write(), and the status line, headers and body on the wire.
 *
 * Response framing: the head is held back until the first non-empty body
 * chunk (so an app that fails before producing anything still gets a
 * clean 500), then sent with that chunk in one writev. With no
 * Content-Length from the app, a single-item list gets one computed; else
 * HTTP/1.1 responses are chunked and HTTP/1.0 ones end by closing. A body
 * that does not match its Content-Length, or an error after the head was
 * sent, closes the connection: never a short body passed off as whole.
 * What a status or header may hold and the bytes of the head and of each
 * chunk are server/frame.c's (no Python there, so it is fuzzed).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#include "server/frame.h"
#include "server/py.h"
#include "server/response.h"

/* ---- the response ----------------------------------------------------- */

/* Attribute names looked up on every request, made once
 * (srv_request_types_init): a name given as a C string is a new str
 * object, hashed afresh, at every lookup. */
static PyObject *srv_s_write, *srv_s_start_response, *srv_s_close;

/* Latin-1 bytes of a str, or NULL with ValueError naming what. */
static const char *srv_str_bytes(PyObject *s, Py_ssize_t *len, const char *what)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what,
                     Py_TYPE(s)->tp_name);
        return NULL;
    }
    if (PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) {
        PyErr_Format(PyExc_ValueError,
                     "%s %R has characters outside latin-1", what, s);
        return NULL;
    }
    *len = PyUnicode_GET_LENGTH(s);
    return (const char *)PyUnicode_1BYTE_DATA(s);
}

/* The code of a status str like "200 OK", or -1 with an exception. */
static int srv_check_status(PyObject *status)
{
    Py_ssize_t slen;
    const char *s = srv_str_bytes(status, &slen, "the status");
    int code;

    if (!s)
        return -1;
    code = srv_status_check(s, (size_t)slen);
    if (code == SRV_STATUS_FORM)
        PyErr_Format(PyExc_ValueError,
                     "the status must be a 3-digit code, a space and a "
                     "reason phrase, like '200 OK' (got %R)", status);
    else if (code == SRV_STATUS_CTL)
        PyErr_Format(PyExc_ValueError,
                     "the status %R holds a control character", status);
    return code < 0 ? -1 : code;
}

/* What start_response's arguments say, kept aside until all of them
 * passed: a refused call changes nothing in the response. */
struct srv_start {
    int code;
    struct srv_head_info h;
};

/* Raises the ValueError for srv_field_check's verdict on header t. */
static void srv_field_error(int verdict, PyObject *t)
{
    PyObject *name = PyTuple_GET_ITEM(t, 0);

    switch (verdict) {
    case SRV_FIELD_EMPTY_NAME:
        PyErr_SetString(PyExc_ValueError, "a response header name is empty");
        break;
    case SRV_FIELD_BAD_NAME:
        PyErr_Format(PyExc_ValueError,
                     "response header name %R is not a valid token", name);
        break;
    case SRV_FIELD_CTL_VALUE:
        PyErr_Format(PyExc_ValueError,
                     "response header %R has a control character "
                     "(CR, LF, NUL...) in its value: refusing to send "
                     "it", name);
        break;
    case SRV_FIELD_BAD_LENGTH:
        PyErr_Format(PyExc_ValueError, "response Content-Length %R is "
                     "not a non-negative integer", PyTuple_GET_ITEM(t, 1));
        break;
    case SRV_FIELD_LENGTH_CONFLICT:
        PyErr_Format(PyExc_ValueError, "response Content-Length %R "
                     "contradicts an earlier Content-Length: send one "
                     "(a client could frame the body by either)",
                     PyTuple_GET_ITEM(t, 1));
        break;
    default:
        PyErr_Format(PyExc_ValueError,
                     "response header %R is hop-by-hop: a WSGI app may "
                     "not set it (PEP 3333); the server frames the "
                     "response itself", name);
    }
}

/* Item i of the app's header list: a (str, str) tuple, checked and noted
 * in st. Returns 0, or -1 with an exception. */
static int srv_check_header(struct srv_start *st, Py_ssize_t i, PyObject *t)
{
    const char *name, *val;
    Py_ssize_t nl, vl;
    int verdict;

    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) {
        PyErr_Format(PyExc_TypeError,
                     "response header %zd must be a (name, value) tuple, "
                     "not %R", i, t);
        return -1;
    }
    name = srv_str_bytes(PyTuple_GET_ITEM(t, 0), &nl, "a header name");
    if (!name)
        return -1;
    val = srv_str_bytes(PyTuple_GET_ITEM(t, 1), &vl, "a header value");
    if (!val)
        return -1;
    verdict = srv_field_check(&st->h, name, (size_t)nl, val, (size_t)vl);
    if (verdict)
        srv_field_error(verdict, t);
    return verdict ? -1 : 0;
}

/* start_response's status and headers, checked and noted in st.
 * Returns 0, or -1 with an exception. */
static int srv_check_start(struct srv_start *st, PyObject *status,
                           PyObject *headers)
{
    st->code = srv_check_status(status);
    st->h.content_length = -1;
    st->h.app_cl = 0;
    st->h.close_after = 0;
    if (st->code < 0)
        return -1;
    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_TypeError,
                     "response headers must be a list of (name, value) "
                     "tuples, not %.100s", Py_TYPE(headers)->tp_name);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++)
        if (srv_check_header(st, i, PyList_GET_ITEM(headers, i)) < 0)
            return -1;
    return 0;
}

static PyObject *srv_start_response(PyObject *self, PyObject *const *args,
                                    Py_ssize_t nargs)
{
    struct srv_resp *r = (struct srv_resp *)self;
    PyObject *exc_info = nargs > 2 ? args[2] : Py_None;
    struct srv_start st;

    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError,
                        "start_response(status, headers, exc_info=None)");
        return NULL;
    }
    if (exc_info != Py_None) {
        if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3) {
            PyErr_SetString(PyExc_TypeError,
                            "exc_info must be a (type, value, traceback) tuple");
            return NULL;
        }
        if (r->head_sent) {
            /* Too late to change the response: re-raise (PEP 3333). */
            PyObject *t = PyTuple_GET_ITEM(exc_info, 0),
                     *v = PyTuple_GET_ITEM(exc_info, 1),
                     *tb = PyTuple_GET_ITEM(exc_info, 2);
            PyErr_Restore(Py_NewRef(t), Py_NewRef(v),
                          tb == Py_None ? NULL : Py_NewRef(tb));
            return NULL;
        }
    } else if (r->started) {
        PyErr_SetString(PyExc_AssertionError,
                        "start_response was already called: call it again "
                        "only with exc_info, to replace the response after "
                        "an error");
        return NULL;
    }
    if (srv_check_start(&st, args[0], args[1]) < 0)
        return NULL;
    r->code = st.code;
    r->fr.content_length = st.h.content_length;
    r->app_cl = st.h.app_cl;
    r->fr.close_after = st.h.close_after;
    Py_XSETREF(r->status, Py_NewRef(args[0]));
    Py_XSETREF(r->headers, Py_NewRef(args[1]));
    r->started = 1;
    return PyObject_GetAttr(self, srv_s_write);
}

/* ---- framing ---------------------------------------------------------- */

/* How the body travels, decided when the head goes out (frame.c):
 * whole body of blen bytes when final. */
static void srv_choose_framing(struct srv_resp *r, size_t blen, int final)
{
    const struct srv_request *req = r->req;
    const struct srv_server *srv = r->c->srv;

    srv_framing_choose(&r->fr, r->code,
                       req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0,
                       req->minor,
                       req->keep_alive && !srv->stopping && srv->opt.keepalive > 0,
                       blen, final);
}

/* ---- the head ----------------------------------------------------------- */

/* The status line and the app's headers, then the server's own fields
 * (frame.c). Returns 0, or -1 with an exception. */
static int srv_head(const struct srv_resp *r, struct srv_buf *b)
{
    Py_ssize_t n = PyList_GET_SIZE(r->headers), slen;
    const char *status = srv_str_bytes(r->status, &slen, "the status");
    unsigned seen = 0;

    if (!status)
        return -1;
    if (srv_head_status(b, r->req->minor, status, (size_t)slen) < 0)
        goto nomem;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(r->headers, i);
        Py_ssize_t nl, vl;
        const char *name = srv_str_bytes(PyTuple_GET_ITEM(t, 0), &nl, "a header name");
        const char *val = srv_str_bytes(PyTuple_GET_ITEM(t, 1), &vl, "a header value");
        if (!name || !val)
            return -1;
        if (srv_head_field(b, name, (size_t)nl, val, (size_t)vl, &seen) < 0)
            goto nomem;
    }
    if (srv_head_end(b, &r->fr, r->code, r->app_cl, r->req->minor, seen,
                     srv_http_date()) < 0)
        goto nomem;
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

/* Sends the head with the first body bytes, if any (body may be NULL);
 * final: they are the whole body. Returns 0, or -1 with an exception or
 * with r->failed and none (the client left). */
static int srv_send_head(struct srv_resp *r, const char *body, size_t blen,
                         int final)
{
    struct srv_conn *c = r->c;
    struct srv_buf b;
    int cnt = 1, rc = -1;
    char line[SRV_CHUNK_LINE];
    struct iovec iov[4];

    srv_buf_init(&b);
    srv_choose_framing(r, blen, final);
    if (srv_head(r, &b) < 0)
        goto out;
    iov[0].iov_base = b.p;
    iov[0].iov_len = b.len;
    if (r->fr.no_body)
        blen = 0;
    if (blen)
        cnt += srv_frame_body(r->fr.chunked, iov + 1, line, body, blen);
    r->head_sent = 1;
    rc = srv_send_all(c, iov, cnt, c->srv->opt.body_timeout);
    if (rc < 0)
        r->failed = 1;
    else
        r->body_sent += blen;
out:
    srv_buf_free(&b);
    return rc;
}

/* ---- the body ----------------------------------------------------------- */

/* One body chunk after the head. Returns 0, or -1 when the connection
 * broke (r->failed, no exception) or on a Python error. */
static int srv_send_body(struct srv_resp *r, const char *p, size_t n)
{
    struct iovec iov[3];
    char line[SRV_CHUNK_LINE];
    int cnt;

    if (n == 0 || r->fr.no_body)
        return 0;
    if (r->fr.content_length >= 0 && r->body_sent + n > (uint64_t)r->fr.content_length) {
        fprintf(stderr, "libgreen: the app sent more than its Content-Length "
                "(%lld bytes); the extra bytes were dropped and the "
                "connection closed\n", (long long)r->fr.content_length);
        n = (size_t)((uint64_t)r->fr.content_length - r->body_sent);
        r->fr.close_after = 1;
        if (n == 0)
            return 0;
    }
    cnt = srv_frame_body(r->fr.chunked, iov, line, p, n);
    if (srv_send_all(r->c, iov, cnt, r->c->srv->opt.body_timeout) < 0) {
        r->failed = 1;
        return -1;
    }
    r->body_sent += n;
    return 0;
}

/* After the app's last body bytes: the last chunk of a chunked body; a
 * body short of its Content-Length closes the connection (the client
 * cannot tell it from a cut one anyway). */
void srv_resp_finish(struct srv_resp *r)
{
    if (r->fr.chunked && !r->fr.no_body) {
        struct iovec end = {(void *)SRV_LAST_CHUNK, sizeof SRV_LAST_CHUNK - 1};
        if (srv_send_all(r->c, &end, 1, r->c->srv->opt.body_timeout) < 0)
            r->failed = 1;
    }
    if (r->fr.content_length >= 0 && !r->fr.no_body &&
        r->body_sent < (uint64_t)r->fr.content_length) {
        fprintf(stderr, "libgreen: the app sent %llu of the %lld body bytes "
                "its Content-Length promised; closing the connection\n",
                (unsigned long long)r->body_sent, (long long)r->fr.content_length);
        r->fr.close_after = 1;
    }
}

static int srv_write_bytes(struct srv_resp *r, PyObject *data, int final)
{
    char *p;
    Py_ssize_t n;

    if (PyBytes_AsStringAndSize(data, &p, &n) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "the response body must yield bytes, not %.100s",
                     Py_TYPE(data)->tp_name);
        return -1;
    }
    if (!r->started) {
        PyErr_SetString(PyExc_AssertionError,
                        "the app produced body bytes before calling "
                        "start_response");
        return -1;
    }
    if (!r->head_sent) {
        if (n == 0 && !final)
            return 0; /* hold the head until there is something to send */
        return srv_send_head(r, p, (size_t)n, final);
    }
    return srv_send_body(r, p, (size_t)n);
}

/* write(data): the legacy imperative API of PEP 3333. */
static PyObject *srv_resp_write(PyObject *self, PyObject *data)
{
    struct srv_resp *r = (struct srv_resp *)self;

    if (!r->c) {
        PyErr_SetString(PyExc_RuntimeError, "write() after the response ended");
        return NULL;
    }
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "write() takes bytes, not %.100s",
                     Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (!r->head_sent && PyBytes_GET_SIZE(data) == 0)
        Py_RETURN_NONE;
    if (srv_write_bytes(r, data, 0) < 0) {
        if (r->failed && !PyErr_Occurred())
            PyErr_SetString(PyExc_OSError, "client disconnected");
        return NULL;
    }
    Py_RETURN_NONE;
}

static void srv_resp_dealloc(PyObject *self)
{
    struct srv_resp *r = (struct srv_resp *)self;

    Py_XDECREF(r->status);
    Py_XDECREF(r->headers);
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef srv_resp_methods[] = {
    {"start_response", (PyCFunction)(void (*)(void))srv_start_response,
     METH_FASTCALL, "start_response(status, headers, exc_info=None)"},
    {"write", srv_resp_write, METH_O, "write(data): send body bytes now"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject srv_resp_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "libgreen.wsgi.Response",
    .tp_basicsize = sizeof(struct srv_resp),
    .tp_dealloc = srv_resp_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = srv_resp_methods,
};

struct srv_resp *srv_resp_new(struct srv_conn *c, const struct srv_request *req)
{
    struct srv_resp *r = PyObject_New(struct srv_resp, &srv_resp_type);

    if (!r)
        return NULL;
    memset(&r->c, 0, sizeof *r - offsetof(struct srv_resp, c));
    r->c = c;
    r->req = req;
    r->fr.content_length = -1;
    return r;
}

PyObject *srv_resp_start_fn(struct srv_resp *r)
{
    return PyObject_GetAttr((PyObject *)r, srv_s_start_response);
}

int srv_request_types_init(void)
{
    if (!(srv_s_write = PyUnicode_InternFromString("write")) ||
        !(srv_s_start_response = PyUnicode_InternFromString("start_response")) ||
        !(srv_s_close = PyUnicode_InternFromString("close")))
        return -1;
    if (PyType_Ready(&srv_resp_type) < 0 || PyType_Ready(&srv_input_type) < 0 ||
        PyType_Ready(&srv_filewrapper_type) < 0)
        return -1;
    return 0;
}

/* ---- the app's result ------------------------------------------------ */

/* result.close, or NULL with no exception if it has none (or NULL with
 * the exception its lookup raised). Not PyObject_GetAttr: for the usual
 * result, a list, that makes an AttributeError and formats its message
 * only to throw it away - a sixth of a hello-world request. */
static PyObject *srv_close_method(PyObject *result)
{
    PyObject *close = NULL;

    if (PyList_CheckExact(result) || PyTuple_CheckExact(result) ||
        PyBytes_CheckExact(result))
        return NULL; /* built-in sequences have no close() */
#if PY_VERSION_HEX >= 0x030D0000
    (void)PyObject_GetOptionalAttr(result, srv_s_close, &close);
#else
    (void)_PyObject_LookupAttr(result, srv_s_close, &close);
#endif
    return close;
}

/* Calls result.close() if it has one; keeps a pending exception. */
void srv_close_result(PyObject *result)
{
    PyObject *exc = PyErr_Occurred() ? srv_fetch_exc() : NULL;
    PyObject *close = srv_close_method(result);

    if (close) {
        PyObject *r = PyObject_CallNoArgs(close);
        Py_DECREF(close);
        if (r)
            Py_DECREF(r);
        else if (exc)
            PyErr_Clear(); /* the first error is the one to report */
        else
            exc = srv_fetch_exc();
    } else {
        PyErr_Clear();
    }
    if (exc)
        srv_restore_exc(exc);
}

/* sendfile(2) without SIGPIPE (send.c uses MSG_NOSIGNAL, which sendfile
 * lacks). A client's reset met in the middle of one call is swallowed by
 * its partial count, so the next call fails with EPIPE and raises
 * SIGPIPE (over a Unix socket, the first write after the peer left
 * does): deadly for an app that set SIGPIPE back to SIG_DFL. The signal
 * is blocked for the call and one it raised is taken back; the thread is
 * the hub's, and nothing switches in between. */
static ssize_t srv_sendfile_nosig(int out, int in, off_t *off, size_t n)
{
    static const struct timespec now = {0, 0};
    sigset_t pipe, old;
    ssize_t r;
    int err;

    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &old);
    r = sendfile(out, in, off, n);
    err = errno;
    if (r < 0 && err == EPIPE && !sigismember(&old, SIGPIPE))
        while (sigtimedwait(&pipe, NULL, &now) < 0 && errno == EINTR)
            ;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return r;
}

/* wsgi.file_wrapper over a regular file: the head, then sendfile(2)
 * straight from the page cache. Returns 1 if it handled the response, 0
 * if the file is not a plain file (iterate it instead), -1 on error. */
static int srv_sendfile(struct srv_resp *r, struct srv_filewrapper *fw)
{
    struct srv_conn *c = r->c;
    PyObject *res;
    struct stat st;
    long long pos;
    int fd;
    off_t off;
    uint64_t left;

    res = PyObject_CallMethod(fw->filelike, "fileno", NULL);
    if (!res) {
        PyErr_Clear();
        return 0;
    }
    fd = (int)PyLong_AsLong(res);
    Py_DECREF(res);
    /* Size 0 is no proof of emptiness: /proc and /sys files say 0 and
     * have content, which only read() produces. Iterate those. */
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
        PyErr_Clear();
        return 0;
    }
    res = PyObject_CallMethod(fw->filelike, "tell", NULL);
    if (!res) {
        PyErr_Clear();
        pos = 0;
    } else {
        pos = PyLong_AsLongLong(res);
        Py_DECREF(res);
        if (pos < 0) {
            PyErr_Clear();
            return 0;
        }
    }
    left = st.st_size > pos ? (uint64_t)(st.st_size - pos) : 0;
    if (r->fr.content_length >= 0 && (uint64_t)r->fr.content_length < left)
        left = (uint64_t)r->fr.content_length;
    if (r->fr.content_length < 0)
        r->fr.content_length = (int64_t)left;
    if (srv_send_head(r, NULL, 0, 0) < 0)
        return -1;
    if (r->fr.no_body)
        return 1;
    off = (off_t)pos;
    while (left) {
        ssize_t n;
        Py_BEGIN_ALLOW_THREADS
        n = srv_sendfile_nosig(c->fd, fd, &off,
                               left > (1 << 30) ? (1 << 30) : left);
        Py_END_ALLOW_THREADS
        if (n > 0) {
            left -= (uint64_t)n;
            r->body_sent += (uint64_t)n;
            continue;
        }
        if (n == 0) {
            r->fr.close_after = 1; /* the file shrank under us */
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN || srv_wait(c->fd, GREEN_WRITE,
                                        c->srv->opt.body_timeout) < 0) {
            c->reset |= errno == ETIMEDOUT; /* as srv_send_all (send.c) */
            r->failed = 1;
            return -1;
        }
    }
    return 1;
}

/* Iterates the app's result and writes the response. Returns 0, or -1
 * with an exception (or with r->failed and none: the client left). */
int srv_send_result(struct srv_resp *r, PyObject *result)
{
    PyObject *it, *item;

    if ((PyList_CheckExact(result) || PyTuple_CheckExact(result)) &&
        PySequence_Fast_GET_SIZE(result) == 1) {
        item = PySequence_Fast_GET_ITEM(result, 0);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError,
                         "the response body must yield bytes, not %.100s",
                         Py_TYPE(item)->tp_name);
            return -1;
        }
        return srv_write_bytes(r, item, !r->head_sent);
    }
    if (Py_IS_TYPE(result, &srv_filewrapper_type) && r->started && !r->head_sent) {
        int rc = srv_sendfile(r, (struct srv_filewrapper *)result);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
    }
    it = PyObject_GetIter(result);
    if (!it)
        return -1;
    while ((item = PyIter_Next(it))) {
        int rc = srv_write_bytes(r, item, 0);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    if (!r->started) {
        PyErr_SetString(PyExc_AssertionError,
                        "the app returned without calling start_response");
        return -1;
    }
    if (!r->head_sent) {
        PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
        int rc = srv_write_bytes(r, empty, 1);
        Py_DECREF(empty);
        return rc;
    }
    return 0;
}
