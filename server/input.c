/* server/input.c - wsgi.input: the request body as a file-like object.
 *
 * Reads come from the connection's buffer first (body bytes that arrived
 * with the head) and then from the socket, parking the green thread with
 * the GIL released while nothing has arrived. Bytes past the end of the
 * body - a pipelined next request - stay in the connection buffer for it:
 * the object never returns them (PEP 3333's "never read past the body").
 *
 * Content-Length bodies: body bytes in the buffer are c->buf[c->off ..
 * c->off + min(c->len - c->off, remaining)). Chunked bodies are decoded in
 * place: c->buf[c->off .. dec_end) holds decoded bytes not yet handed out,
 * c->buf[dec_end .. c->len) raw bytes not yet decoded.
 *
 * "Expect: 100-continue" is answered on the first read that needs bytes
 * from the socket, so an app that refuses the body never invites it.
 *
 * A body that fails through the client's fault (malformed chunks, cut
 * short, too slow, too large) raises in the app as usual, and is also
 * noted (in->bad), so that an app letting the error escape makes the
 * server answer 400/408/413 rather than blame itself with a 500. Chunked
 * bytes that arrived with the head are checked before the app runs.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "server/py.h"

#define SRV_DRAIN_MAX (256 * 1024) /* unread body drained for keep-alive */

struct srv_input {
    PyObject_HEAD
    struct srv_conn *c;   /* NULL once the request is over */
    int chunked;
    int done;             /* the whole body has been received */
    int expect_continue;  /* 100 Continue still owed */
    int failed;           /* a read failed: the connection must close */
    int bad;              /* 400, 408 or 413 when the client is at fault
                             (malformed chunked framing, body cut short,
                             too slow, over max_body_size); 0 otherwise */
    const char *bad_why;  /* text for that answer (static, or why_buf) */
    char why_buf[160];
    uint64_t remaining;   /* Content-Length bytes not yet taken from buf */
    uint64_t total;       /* body bytes handed out or buffered, chunked */
    uint64_t max_body;    /* 0 = unlimited */
    size_t dec_end;
    struct srv_chunked dec;
};

/* Body bytes ready in the buffer. */
static size_t in_avail(struct srv_input *in)
{
    struct srv_conn *c = in->c;

    if (in->chunked)
        return in->dec_end - c->off;
    {
        size_t have = c->len - c->off;
        return (uint64_t)have < in->remaining ? have : (size_t)in->remaining;
    }
}

static void in_consume(struct srv_input *in, size_t n)
{
    in->c->off += n;
    if (!in->chunked) {
        in->remaining -= n;
        if (in->remaining == 0)
            in->done = 1;
    }
}

static PyObject *in_fail(struct srv_input *in, const char *msg)
{
    in->failed = 1;
    if (errno == ETIMEDOUT) {
        /* the client's fault: 408 if the app lets this escape */
        in->bad = 408;
        in->bad_why = "the request body did not arrive in time (body_timeout)";
        char msg_buf[128];
        /* snprintf: PyErr_Format knows no floating-point conversions */
        snprintf(msg_buf, sizeof msg_buf,
                 "the client sent no request body bytes for %g s "
                 "(body_timeout)", in->c->srv->opt.body_timeout);
        PyErr_SetString(PyExc_TimeoutError, msg_buf);
    } else {
        PyErr_SetString(PyExc_OSError, msg);
    }
    return NULL;
}

/* Decodes the raw chunked bytes buffered at c->buf[dec_end .. c->len) in
 * place. Never touches bytes before dec_end, so it may run while the
 * request head (which the request's strings point into) is still there.
 * Returns 0, or -1 with an exception set and in->bad saying how to
 * answer the client. */
static int in_decode(struct srv_input *in)
{
    struct srv_conn *c = in->c;
    size_t raw = c->len - in->dec_end, out = raw;
    ssize_t r = srv_chunked_decode(&in->dec, c->buf + in->dec_end, &out);

    if (r == -1) {
        in->failed = 1;
        in->bad = 400;
        snprintf(in->why_buf, sizeof in->why_buf,
                 "malformed chunked request body (%s)",
                 in->dec.error ? in->dec.error : "bad framing");
        in->bad_why = in->why_buf;
        PyErr_Format(PyExc_ValueError, "bad chunked request body: %s",
                     in->dec.error ? in->dec.error : "malformed");
        return -1;
    }
    if (r >= 0) { /* body complete: r bytes of the next request follow */
        memmove(c->buf + in->dec_end + out,
                c->buf + in->dec_end + raw - (size_t)r, (size_t)r);
        in->done = 1;
    }
    c->len = in->dec_end + out + (r > 0 ? (size_t)r : 0);
    in->dec_end += out;
    in->total += out;
    if (in->max_body && in->total > in->max_body) {
        in->failed = 1;
        in->bad = 413;
        in->bad_why = "the request body is larger than max_body_size";
        PyErr_Format(PyExc_ValueError,
                     "request body larger than max_body_size (%llu bytes)",
                     (unsigned long long)in->max_body);
        return -1;
    }
    return 0;
}

/* Makes more body bytes available. Returns 1 if there are some, 0 at the
 * end of the body, -1 with an exception set. */
static int in_fill(struct srv_input *in)
{
    struct srv_conn *c = in->c;
    int n;

    for (;;) {
        if (in_avail(in))
            return 1;
        if (in->done || in->failed)
            return in->failed ? (errno = 0, in_fail(in, "request body unreadable"), -1) : 0;
        if (in->expect_continue) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            struct iovec iov = {(void *)cont, sizeof cont - 1};
            in->expect_continue = 0;
            if (srv_send_all(c, &iov, 1, c->srv->opt.body_timeout) < 0)
                return in_fail(in, "client disconnected"), -1;
        }
        /* Compact: drop what was consumed so the buffer does not grow. */
        if (c->off) {
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
            in->dec_end -= c->off;
            c->off = 0;
        }
        if (in->chunked && in->dec_end < c->len) {
            if (in_decode(in) < 0)
                return -1;
            continue;
        }
        n = srv_conn_fill(c, c->srv->opt.body_timeout);
        if (n == 0) {
            errno = 0;
            in_fail(in, "client disconnected before sending the whole "
                        "request body");
            /* A client that only shut down its sending side still reads
             * the answer: 400, not an app error. */
            in->bad = 400;
            in->bad_why = "the client closed the connection before sending "
                          "the whole request body";
            return -1;
        }
        if (n < 0) {
            /* ENOBUFS cannot happen: the buffer was compacted and every
             * buffered body byte handed out before this read. */
            in_fail(in, errno == ENOBUFS ? "request body unreadable: the "
                        "connection's read buffer is full" : strerror(errno));
            return -1;
        }
    }
}

/* ---- the Python methods ---------------------------------------------- */

/* read(size): exactly size bytes unless the body ends first (like a
 * buffered file); size < 0 reads to the end. A Content-Length body's
 * result is allocated once at its final size; a chunked one grows. */
static PyObject *in_read_n(struct srv_input *in, Py_ssize_t size)
{
    PyObject *out;
    Py_ssize_t cap, got = 0;

    if (!in->c || size == 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    if (size < 0)
        size = PY_SSIZE_T_MAX;
    if (!in->chunked && (uint64_t)size > in->remaining)
        size = (Py_ssize_t)in->remaining;
    cap = in->chunked && size > 8192 ? 8192 : size;
    out = PyBytes_FromStringAndSize(NULL, cap);
    if (!out)
        return NULL;
    while (got < size) {
        int r = in_fill(in);
        size_t a;
        if (r < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (r == 0)
            break;
        a = in_avail(in);
        if ((Py_ssize_t)a > size - got)
            a = (size_t)(size - got);
        if (got + (Py_ssize_t)a > cap) {
            cap = (got + (Py_ssize_t)a) > size / 2 ? size : (got + (Py_ssize_t)a) * 2;
            if (_PyBytes_Resize(&out, cap) < 0)
                return NULL;
        }
        memcpy(PyBytes_AS_STRING(out) + got, in->c->buf + in->c->off, a);
        got += (Py_ssize_t)a;
        in_consume(in, a);
    }
    if (got != cap && _PyBytes_Resize(&out, got) < 0)
        return NULL;
    return out;
}

static int in_size_arg(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *size)
{
    *size = -1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "expected at most one argument");
        return -1;
    }
    if (nargs == 1 && args[0] != Py_None) {
        *size = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
        if (*size == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *in_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;

    if (in_size_arg(args, nargs, &size) < 0)
        return NULL;
    return in_read_n((struct srv_input *)self, size);
}

static PyObject *in_readline_n(struct srv_input *in, Py_ssize_t size)
{
    PyObject *out = NULL;
    Py_ssize_t got = 0;

    if (!in->c || size == 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    for (;;) {
        int r = in_fill(in);
        size_t a, take;
        const char *start, *nl;
        if (r < 0) {
            Py_XDECREF(out);
            return NULL;
        }
        if (r == 0)
            break;
        a = in_avail(in);
        if (size > 0 && (Py_ssize_t)a > size - got)
            a = (size_t)(size - got);
        start = in->c->buf + in->c->off;
        nl = memchr(start, '\n', a);
        take = nl ? (size_t)(nl - start) + 1 : a;
        if (!out) {
            out = PyBytes_FromStringAndSize(start, (Py_ssize_t)take);
            if (!out)
                return NULL;
        } else {
            Py_ssize_t old = PyBytes_GET_SIZE(out);
            if (_PyBytes_Resize(&out, old + (Py_ssize_t)take) < 0)
                return NULL;
            memcpy(PyBytes_AS_STRING(out) + old, start, take);
        }
        got += (Py_ssize_t)take;
        in_consume(in, take);
        if (nl || (size > 0 && got >= size))
            break;
    }
    return out ? out : PyBytes_FromStringAndSize(NULL, 0);
}

static PyObject *in_readline(PyObject *self, PyObject *const *args,
                             Py_ssize_t nargs)
{
    Py_ssize_t size;

    if (in_size_arg(args, nargs, &size) < 0)
        return NULL;
    return in_readline_n((struct srv_input *)self, size);
}

static PyObject *in_readlines(PyObject *self, PyObject *const *args,
                              Py_ssize_t nargs)
{
    Py_ssize_t hint, total = 0;
    PyObject *list = PyList_New(0);

    if (!list || in_size_arg(args, nargs, &hint) < 0) {
        Py_XDECREF(list);
        return NULL;
    }
    for (;;) {
        PyObject *line = in_readline_n((struct srv_input *)self, -1);
        if (!line) {
            Py_DECREF(list);
            return NULL;
        }
        if (PyBytes_GET_SIZE(line) == 0) {
            Py_DECREF(line);
            break;
        }
        total += PyBytes_GET_SIZE(line);
        if (PyList_Append(list, line) < 0) {
            Py_DECREF(line);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(line);
        if (hint > 0 && total >= hint)
            break;
    }
    return list;
}

static PyObject *in_iternext(PyObject *self)
{
    PyObject *line = in_readline_n((struct srv_input *)self, -1);

    if (line && PyBytes_GET_SIZE(line) == 0) {
        Py_DECREF(line);
        return NULL; /* StopIteration */
    }
    return line;
}

static void in_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    tp->tp_free(self);
}

static PyMethodDef in_methods[] = {
    {"read", (PyCFunction)(void (*)(void))in_read, METH_FASTCALL,
     "read(size=-1) -> bytes: up to size bytes of the body, all if < 0."},
    {"readline", (PyCFunction)(void (*)(void))in_readline, METH_FASTCALL,
     "readline(size=-1) -> bytes: one line, at most size bytes."},
    {"readlines", (PyCFunction)(void (*)(void))in_readlines, METH_FASTCALL,
     "readlines(hint=-1) -> list of lines."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject srv_input_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "libgreen.wsgi.Input",
    .tp_basicsize = sizeof(struct srv_input),
    .tp_dealloc = in_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.input: the request body (PEP 3333).",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = in_iternext,
    .tp_methods = in_methods,
};

/* ---- the server's side ------------------------------------------------ */

PyObject *srv_input_new(struct srv_conn *c, const struct srv_request *req,
                        size_t head_len)
{
    struct srv_input *in = PyObject_New(struct srv_input, &srv_input_type);

    if (!in)
        return NULL;
    in->c = c;
    c->off = head_len;
    in->chunked = req->chunked;
    in->remaining = req->content_length > 0 ? (uint64_t)req->content_length : 0;
    in->done = !req->chunked && in->remaining == 0;
    /* A client that sent body bytes without waiting needs no invitation. */
    in->expect_continue = req->expect_continue && !in->done && c->len == head_len;
    in->failed = 0;
    in->bad = 0;
    in->bad_why = NULL;
    in->total = 0;
    in->max_body = c->srv->opt.max_body_size;
    in->dec_end = head_len;
    srv_chunked_init(&in->dec);
    return (PyObject *)in;
}

/* Before the app runs: decodes the chunked body bytes that came with the
 * head, so a body already known to be malformed (or over max_body_size)
 * is refused without calling the app. Returns 0, or the status to answer
 * (400, 413) with *why set. GIL held; no exception is left set. */
int srv_input_check(PyObject *obj, const char **why)
{
    struct srv_input *in = (struct srv_input *)obj;

    if (!in->chunked || in->dec_end >= in->c->len)
        return 0;
    if (in_decode(in) < 0) {
        PyErr_Clear();
        *why = in->bad_why;
        return in->bad;
    }
    return 0;
}

/* 400, 408 or 413 if reading the body failed through the client's fault
 * (the answer to give if the app let that error escape), else 0. */
int srv_input_bad(PyObject *obj, const char **why)
{
    struct srv_input *in = (struct srv_input *)obj;

    *why = in->bad_why;
    return in->bad;
}

/* While the app runs: a request with no body and nothing sent after its
 * head gives its connection's read buffer back. The environ holds copies
 * of all the head said and the access log its own, so a request parked
 * for long (a long poll, a slow query) keeps no buffer: 1 KiB less for
 * every request in flight. The next request's bytes get a new one. */
void srv_input_release(PyObject *obj)
{
    struct srv_input *in = (struct srv_input *)obj;
    struct srv_conn *c = in->c;

    if (!c || !in->done || c->len != c->off)
        return;
    srv_conn_buf_free(c);
    in->dec_end = 0;
}

/* Ends the request's use of the body: drains an unread remainder (up to
 * SRV_DRAIN_MAX) so the connection can serve the next request, and
 * compacts the buffer so the next request starts at c->buf[0]. Returns 1
 * if the connection can be kept, 0 if it must close. GIL held. */
int srv_input_finish(PyObject *obj)
{
    struct srv_input *in = (struct srv_input *)obj;
    struct srv_conn *c = in->c;
    size_t drained = 0;
    int keep = 1;

    if (!c)
        return 0;
    if (in->expect_continue && !in->done && !in_avail(in)) {
        keep = 0; /* we never asked for the body: it may never come */
    } else {
        while (!in->failed) {
            size_t a = in_avail(in);
            int r;
            if (a) {
                in_consume(in, a);
                drained += a;
                continue;
            }
            if (in->done)
                break;
            if (drained >= SRV_DRAIN_MAX) {
                keep = 0; /* a large unread body: cheaper to close */
                break;
            }
            r = in_fill(in);
            if (r < 0) {
                PyErr_Clear();
                keep = 0;
                break;
            }
            if (r == 0)
                break;
        }
    }
    if (in->failed)
        keep = 0;
    if (keep) {
        if (c->off) { /* none after srv_input_release: no buffer either */
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
        }
    } else {
        c->len = 0;
    }
    c->off = 0;
    in->c = NULL;
    return keep;
}
