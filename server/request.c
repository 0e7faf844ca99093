/* server/request.c - one request in its green thread: environ, the app,
 * start_response, and the response on the wire.
 *
 * The green thread owns a PyThreadState for its whole life (one per
 * green thread, the verified mechanism of DESIGN.md), holds the GIL while
 * it runs Python, and drops it whenever it parks. Each request runs in a
 * fresh contextvars.Context. A connection with pipelined requests is
 * served by the same green thread, one request after another.
 *
 * Response framing: the head is held back until the first non-empty body
 * chunk (so an app that fails before producing anything still gets a
 * clean 500), then sent with that chunk in one writev. With no
 * Content-Length from the app, a single-item list gets one computed; else
 * HTTP/1.1 responses are chunked and HTTP/1.0 ones end by closing. A body
 * that does not match its Content-Length, or an error after the head was
 * sent, closes the connection: never a short body passed off as whole.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#include "server/py.h"

SRV_HIDDEN void srv_request_done(struct srv_server *srv);

/* ---- interned environ keys ------------------------------------------ */

static PyObject *k_method, *k_script, *k_path, *k_query, *k_ctype, *k_clen,
    *k_proto, *k_raddr, *k_rport, *k_raw_uri, *k_req_uri, *k_input,
    *k_input_term, *s_empty, *s_http10, *s_http11, *s_get, *s_post, *s_head;

struct srv_known_header {
    const char *name;
    PyObject *key;
};

static struct srv_known_header srv_known[] = {
    {"Host", NULL}, /* first: srv_build_environ takes HTTP_HOST from [0] */ {"User-Agent", NULL}, {"Accept", NULL},
    {"Accept-Encoding", NULL}, {"Accept-Language", NULL},
    {"Connection", NULL}, {"Cookie", NULL}, {"Referer", NULL},
    {"Cache-Control", NULL}, {"Origin", NULL}, {"Authorization", NULL},
    {"X-Forwarded-For", NULL}, {"X-Forwarded-Proto", NULL},
    {"X-Request-Id", NULL}, {"If-None-Match", NULL},
    {"If-Modified-Since", NULL}, {"Pragma", NULL}, {"Upgrade", NULL},
    {"Expect", NULL}, {"Transfer-Encoding", NULL},
};

static PyObject *srv_intern(const char *s) { return PyUnicode_InternFromString(s); }

int srv_environ_init(void)
{
    char key[64];

    k_method = srv_intern("REQUEST_METHOD");
    k_script = srv_intern("SCRIPT_NAME");
    k_path = srv_intern("PATH_INFO");
    k_query = srv_intern("QUERY_STRING");
    k_ctype = srv_intern("CONTENT_TYPE");
    k_clen = srv_intern("CONTENT_LENGTH");
    k_proto = srv_intern("SERVER_PROTOCOL");
    k_raddr = srv_intern("REMOTE_ADDR");
    k_rport = srv_intern("REMOTE_PORT");
    k_raw_uri = srv_intern("RAW_URI");
    k_req_uri = srv_intern("REQUEST_URI");
    k_input = srv_intern("wsgi.input");
    k_input_term = srv_intern("wsgi.input_terminated");
    s_empty = srv_intern("");
    s_http10 = srv_intern("HTTP/1.0");
    s_http11 = srv_intern("HTTP/1.1");
    s_get = srv_intern("GET");
    s_post = srv_intern("POST");
    s_head = srv_intern("HEAD");
    for (size_t i = 0; i < sizeof srv_known / sizeof srv_known[0]; i++) {
        size_t n = 0;
        const char *p = srv_known[i].name;
        memcpy(key, "HTTP_", 5);
        for (n = 5; *p; p++, n++)
            key[n] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        key[n] = 0;
        srv_known[i].key = srv_intern(key);
        if (!srv_known[i].key)
            return -1;
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* The environ key for a header name: HTTP_ + upper case, '-' -> '_'.
 * Returns a new reference, or NULL (and no exception) if the name holds
 * '_': such headers are dropped, so "X_Forwarded_For" cannot pose as
 * "X-Forwarded-For" (the same rule gunicorn and nginx apply). */
static PyObject *srv_header_key(const char *name, size_t len)
{
    char buf[512];

    for (size_t i = 0; i < sizeof srv_known / sizeof srv_known[0]; i++)
        if (strlen(srv_known[i].name) == len &&
            strncasecmp(srv_known[i].name, name, len) == 0)
            return Py_NewRef(srv_known[i].key);
    if (memchr(name, '_', len))
        return NULL;
    if (len + 5 > sizeof buf) {
        PyObject *s = PyUnicode_New((Py_ssize_t)len + 5, 127);
        Py_UCS1 *d;
        if (!s)
            return NULL;
        d = PyUnicode_1BYTE_DATA(s);
        memcpy(d, "HTTP_", 5);
        for (size_t i = 0; i < len; i++) {
            char ch = name[i];
            d[5 + i] = (Py_UCS1)(ch == '-' ? '_' : (ch >= 'a' && ch <= 'z' ? ch - 32 : ch));
        }
        return s;
    }
    memcpy(buf, "HTTP_", 5);
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        buf[5 + i] = ch == '-' ? '_' : (ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch);
    }
    return PyUnicode_FromStringAndSize(buf, (Py_ssize_t)len + 5);
}

static int srv_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* PATH_INFO: the path percent-decoded, as latin-1 (PEP 3333). */
static PyObject *srv_path_info(const char *p, size_t n)
{
    char local[1024], *buf = n <= sizeof local ? local : PyMem_Malloc(n);
    size_t o = 0;
    PyObject *s;

    if (!buf)
        return PyErr_NoMemory();
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n &&
            (hi = srv_hexval(p[i + 1])) >= 0 && (lo = srv_hexval(p[i + 2])) >= 0) {
            buf[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            buf[o++] = p[i];
        }
    }
    s = PyUnicode_DecodeLatin1(buf, (Py_ssize_t)o, NULL);
    if (buf != local)
        PyMem_Free(buf);
    return s;
}

static PyObject *srv_latin1(const char *p, size_t n)
{
    return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
}

static int srv_set(PyObject *d, PyObject *k, PyObject *v)
{
    int r;

    if (!v)
        return -1;
    r = PyDict_SetItem(d, k, v);
    Py_DECREF(v);
    return r;
}

static PyObject *srv_build_environ(struct srv_conn *c, const struct srv_request *req,
                                   PyObject *input)
{
    struct srv_server *srv = c->srv;
    PyObject *env = PyDict_Copy(srv->base_environ), *method;
    const char *path = req->path, *authority = NULL;
    size_t path_len = req->path_len, authority_len = 0;

    if (!env)
        return NULL;
    if (req->method_len == 3 && memcmp(req->method, "GET", 3) == 0)
        method = Py_NewRef(s_get);
    else if (req->method_len == 4 && memcmp(req->method, "POST", 4) == 0)
        method = Py_NewRef(s_post);
    else if (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0)
        method = Py_NewRef(s_head);
    else
        method = srv_latin1(req->method, req->method_len);
    if (req->form == SRV_FORM_ABSOLUTE) {
        /* http://authority/path?query: PATH_INFO is the path alone. The
         * parser hands over the whole target for this form, query
         * included, so the path ends where the query starts. */
        const char *s = memchr(path, ':', path_len);
        const char *end = req->query ? req->query - 1 : path + path_len;
        if (s && end - s >= 3 && s[1] == '/' && s[2] == '/') {
            const char *q = memchr(s + 3, '/', (size_t)(end - s - 3));
            path = q ? q : end;
            authority = s + 3;
            authority_len = (size_t)(path - authority);
        }
        path_len = (size_t)(end - path);
    } else if (req->form != SRV_FORM_ORIGIN) {
        path_len = 0; /* "*" and authority-form have no path */
    }
    if (srv_set(env, k_method, method) < 0 ||
        srv_set(env, k_path, srv_path_info(path, path_len)) < 0 ||
        srv_set(env, k_query, req->query ? srv_latin1(req->query, req->query_len)
                                         : Py_NewRef(s_empty)) < 0 ||
        srv_set(env, k_raw_uri, srv_latin1(req->target, req->target_len)) < 0 ||
        PyDict_SetItem(env, k_req_uri, PyDict_GetItem(env, k_raw_uri)) < 0 ||
        PyDict_SetItem(env, k_proto, req->minor ? s_http11 : s_http10) < 0 ||
        srv_set(env, k_raddr, PyUnicode_FromString(c->remote_addr)) < 0 ||
        srv_set(env, k_rport, PyUnicode_FromString(c->remote_port)) < 0 ||
        PyDict_SetItem(env, k_input, input) < 0)
        goto error;
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct srv_header *h = &req->headers[i];
        PyObject *key, *val, *old;
        if (h->name_len == 12 && strncasecmp(h->name, "Content-Type", 12) == 0)
            key = Py_NewRef(k_ctype);
        else if (h->name_len == 14 && strncasecmp(h->name, "Content-Length", 14) == 0)
            key = Py_NewRef(k_clen);
        else if (!(key = srv_header_key(h->name, h->name_len))) {
            if (PyErr_Occurred())
                goto error;
            continue;
        }
        val = srv_latin1(h->value, h->value_len);
        if (!val) {
            Py_DECREF(key);
            goto error;
        }
        old = PyDict_GetItemWithError(env, key);
        if (old && key != k_clen) {
            /* repeated field: one value, joined as RFC 9110 5.3 allows;
             * Cookie lines join with "; " (RFC 6265 5.4), never "," -
             * and only Cookie: Accept has six letters too. */
            int cookie = h->name_len == 6 && strncasecmp(h->name, "Cookie", 6) == 0;
            PyObject *joined = PyUnicode_FromFormat(
                "%U%s%U", old, cookie ? "; " : ",", val);
            Py_DECREF(val);
            val = joined;
        }
        if (srv_set(env, key, val) < 0) {
            Py_DECREF(key);
            goto error;
        }
        Py_DECREF(key);
    }
    /* RFC 9112 3.2.2: with an absolute-form target the Host field is
     * ignored and the target's authority is the host - which apps read
     * from HTTP_HOST (PEP 3333 URL reconstruction). */
    if (authority && srv_set(env, srv_known[0].key,
                             srv_latin1(authority, authority_len)) < 0)
        goto error;
    return env;

error:
    Py_DECREF(env);
    return NULL;
}

/* ---- the response ----------------------------------------------------- */

struct srv_resp {
    PyObject_HEAD
    struct srv_conn *c;         /* NULL once the request is over */
    const struct srv_request *req;
    PyObject *status;           /* str, from start_response */
    PyObject *headers;          /* list */
    int started;                /* start_response was called */
    int head_sent;
    int chunked;                /* we frame the body as chunks */
    int close_after;            /* Connection: close, or framing needs it */
    int no_body;                /* HEAD, 1xx, 204, 304 */
    int failed;                 /* the connection is broken */
    int code;
    int64_t content_length;     /* from the app or computed, -1 if none */
    int app_cl;                 /* the app's headers carry Content-Length */
    uint64_t body_sent;         /* body bytes (excluding framing) */
};

static PyTypeObject srv_resp_type;

static int srv_token_char(unsigned char ch)
{
    static const char *sep = "()<>@,;:\\\"/[]?={} \t";
    return ch > 32 && ch < 127 && !strchr(sep, ch);
}

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

static int srv_check_headers(struct srv_resp *r, PyObject *status, PyObject *headers)
{
    Py_ssize_t n, slen;
    const char *s = srv_str_bytes(status, &slen, "the status");

    if (!s)
        return -1;
    if (slen < 4 || s[3] != ' ' || s[0] < '1' || s[0] > '5' || s[1] < '0' ||
        s[1] > '9' || s[2] < '0' || s[2] > '9') {
        PyErr_Format(PyExc_ValueError,
                     "the status must be a 3-digit code, a space and a "
                     "reason phrase, like '200 OK' (got %R)", status);
        return -1;
    }
    for (Py_ssize_t i = 0; i < slen; i++)
        if ((unsigned char)s[i] < 32 || s[i] == 127) {
            PyErr_Format(PyExc_ValueError,
                         "the status %R holds a control character", status);
            return -1;
        }
    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_TypeError,
                     "response headers must be a list of (name, value) "
                     "tuples, not %.100s", Py_TYPE(headers)->tp_name);
        return -1;
    }
    r->content_length = -1;
    r->app_cl = 0;
    r->close_after = 0;
    n = PyList_GET_SIZE(headers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(headers, i);
        const char *name, *val;
        Py_ssize_t nl, vl;
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
        if (nl == 0) {
            PyErr_SetString(PyExc_ValueError, "a response header name is empty");
            return -1;
        }
        for (Py_ssize_t j = 0; j < nl; j++)
            if (!srv_token_char((unsigned char)name[j])) {
                PyErr_Format(PyExc_ValueError,
                             "response header name %R is not a valid token",
                             PyTuple_GET_ITEM(t, 0));
                return -1;
            }
        for (Py_ssize_t j = 0; j < vl; j++) {
            unsigned char ch = (unsigned char)val[j];
            if ((ch < 32 && ch != '\t') || ch == 127) {
                PyErr_Format(PyExc_ValueError,
                             "response header %R has a control character "
                             "(CR, LF, NUL...) in its value: refusing to send "
                             "it", PyTuple_GET_ITEM(t, 0));
                return -1;
            }
        }
        if (nl == 14 && strncasecmp(name, "Content-Length", 14) == 0) {
            char tmp[32];
            char *end;
            long long v;
            if (vl == 0 || vl >= (Py_ssize_t)sizeof tmp) goto bad_cl;
            memcpy(tmp, val, (size_t)vl);
            tmp[vl] = 0;
            errno = 0;
            v = strtoll(tmp, &end, 10);
            if (errno || *end || v < 0 || tmp[0] < '0' || tmp[0] > '9')
                goto bad_cl;
            r->content_length = v;
            r->app_cl = 1;
        } else if (nl == 10 && strncasecmp(name, "Connection", 10) == 0) {
            if (vl == 5 && strncasecmp(val, "close", 5) == 0)
                r->close_after = 1;
        } else if ((nl == 17 && strncasecmp(name, "Transfer-Encoding", 17) == 0) ||
                   (nl == 10 && strncasecmp(name, "Keep-Alive", 10) == 0) ||
                   (nl == 7 && strncasecmp(name, "Upgrade", 7) == 0) ||
                   (nl == 2 && strncasecmp(name, "TE", 2) == 0) ||
                   (nl == 7 && strncasecmp(name, "Trailer", 7) == 0)) {
            PyErr_Format(PyExc_ValueError,
                         "response header %R is hop-by-hop: a WSGI app may "
                         "not set it (PEP 3333); the server frames the "
                         "response itself", PyTuple_GET_ITEM(t, 0));
            return -1;
        }
        continue;
    bad_cl:
        PyErr_Format(PyExc_ValueError,
                     "response Content-Length %R is not a non-negative integer",
                     PyTuple_GET_ITEM(t, 1));
        return -1;
    }
    r->code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    return 0;
}

static PyObject *srv_start_response(PyObject *self, PyObject *const *args,
                                    Py_ssize_t nargs)
{
    struct srv_resp *r = (struct srv_resp *)self;
    PyObject *exc_info = nargs > 2 ? args[2] : Py_None;
    int saved_close = r->close_after, saved_code = r->code;
    int64_t saved_cl = r->content_length;

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
    if (srv_check_headers(r, args[0], args[1]) < 0) {
        r->close_after = saved_close;
        r->code = saved_code;
        r->content_length = saved_cl;
        return NULL;
    }
    Py_XSETREF(r->status, Py_NewRef(args[0]));
    Py_XSETREF(r->headers, Py_NewRef(args[1]));
    r->started = 1;
    return PyObject_GetAttrString(self, "write");
}

/* Growable byte buffer for the response head. */
struct srv_buf {
    char *p;
    size_t len, cap;
    char local[2048];
};

static int srv_buf_add(struct srv_buf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        char *p = PyMem_Malloc(cap);
        if (!p) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(p, b->p, b->len);
        if (b->p != b->local)
            PyMem_Free(b->p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

#define SRV_ADD(b, lit) srv_buf_add((b), (lit), sizeof(lit) - 1)

/* Sends the head (and first body bytes, if any). body may be NULL. */
static int srv_send_head(struct srv_resp *r, const char *body, size_t blen,
                         int final)
{
    struct srv_conn *c = r->c;
    const struct srv_request *req = r->req;
    struct srv_buf b = {.len = 0, .cap = sizeof b.local};
    Py_ssize_t n = PyList_GET_SIZE(r->headers), slen;
    const char *status = srv_str_bytes(r->status, &slen, "the status");
    int has_date = 0, has_server = 0, rc;
    char tmp[128];
    struct iovec iov[4];
    int cnt = 0;

    b.p = b.local;
    if (!status)
        return -1;
    r->no_body = (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0) ||
                 r->code < 200 || r->code == 204 || r->code == 304;
    if (r->content_length < 0 && final && r->code >= 200 && r->code != 204 &&
        r->code != 304)
        r->content_length = (int64_t)blen; /* the whole body is known */
    if (r->content_length < 0 && r->code >= 200 && r->code != 204 &&
        r->code != 304) {
        if (req->minor >= 1)
            r->chunked = 1;
        else
            r->close_after = 1; /* HTTP/1.0: the end of the body is the close */
    }
    if (!req->keep_alive || c->srv->stopping || c->srv->opt.keepalive <= 0)
        r->close_after = 1;
    rc = req->minor ? SRV_ADD(&b, "HTTP/1.1 ") : SRV_ADD(&b, "HTTP/1.0 ");
    if (rc < 0 || srv_buf_add(&b, status, (size_t)slen) < 0 || SRV_ADD(&b, "\r\n") < 0)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(r->headers, i);
        Py_ssize_t nl, vl;
        const char *name = srv_str_bytes(PyTuple_GET_ITEM(t, 0), &nl, "a header name");
        const char *val = srv_str_bytes(PyTuple_GET_ITEM(t, 1), &vl, "a header value");
        if (!name || !val)
            goto error;
        if (nl == 4 && strncasecmp(name, "Date", 4) == 0)
            has_date = 1;
        else if (nl == 6 && strncasecmp(name, "Server", 6) == 0)
            has_server = 1;
        else if (nl == 10 && strncasecmp(name, "Connection", 10) == 0)
            continue; /* we say it ourselves, once */
        if (srv_buf_add(&b, name, (size_t)nl) < 0 || SRV_ADD(&b, ": ") < 0 ||
            srv_buf_add(&b, val, (size_t)vl) < 0 || SRV_ADD(&b, "\r\n") < 0)
            goto error;
    }
    if (!has_date) {
        if (SRV_ADD(&b, "Date: ") < 0 ||
            srv_buf_add(&b, srv_http_date(), strlen(srv_http_date())) < 0 ||
            SRV_ADD(&b, "\r\n") < 0)
            goto error;
    }
    if (!has_server && SRV_ADD(&b, "Server: libgreen\r\n") < 0)
        goto error;
    if (!r->app_cl && r->content_length >= 0 && r->code >= 200 &&
        r->code != 204 && r->code != 304) {
        int k = snprintf(tmp, sizeof tmp, "Content-Length: %lld\r\n",
                         (long long)r->content_length);
        if (srv_buf_add(&b, tmp, (size_t)k) < 0)
            goto error;
    }
    if (r->chunked && SRV_ADD(&b, "Transfer-Encoding: chunked\r\n") < 0)
        goto error;
    if (r->close_after ? SRV_ADD(&b, "Connection: close\r\n\r\n") < 0
                       : (req->minor == 0 ? SRV_ADD(&b, "Connection: keep-alive\r\n\r\n")
                                          : SRV_ADD(&b, "\r\n")) < 0)
        goto error;
    iov[cnt].iov_base = b.p;
    iov[cnt++].iov_len = b.len;
    if (r->no_body)
        blen = 0;
    if (blen) {
        if (r->chunked) {
            int k = snprintf(tmp, sizeof tmp, "%zx\r\n", blen);
            iov[cnt].iov_base = tmp;
            iov[cnt++].iov_len = (size_t)k;
        }
        iov[cnt].iov_base = (void *)body;
        iov[cnt++].iov_len = blen;
        if (r->chunked) {
            iov[cnt].iov_base = (void *)"\r\n";
            iov[cnt++].iov_len = 2;
        }
    }
    r->head_sent = 1;
    rc = srv_send_all(c, iov, cnt, c->srv->opt.body_timeout);
    if (b.p != b.local)
        PyMem_Free(b.p);
    if (rc < 0) {
        r->failed = 1;
        return -1;
    }
    r->body_sent += blen;
    return 0;

error:
    if (b.p != b.local)
        PyMem_Free(b.p);
    return -1;
}

/* One body chunk after the head. Returns 0, or -1 when the connection
 * broke (r->failed, no exception) or on a Python error. */
static int srv_send_body(struct srv_resp *r, const char *p, size_t n)
{
    struct iovec iov[3];
    char tmp[32];
    int cnt = 0;

    if (n == 0 || r->no_body)
        return 0;
    if (r->content_length >= 0 && r->body_sent + n > (uint64_t)r->content_length) {
        fprintf(stderr, "libgreen: the app sent more than its Content-Length "
                "(%lld bytes); the extra bytes were dropped and the "
                "connection closed\n", (long long)r->content_length);
        n = (size_t)((uint64_t)r->content_length - r->body_sent);
        r->close_after = 1;
        if (n == 0)
            return 0;
    }
    if (r->chunked) {
        int k = snprintf(tmp, sizeof tmp, "%zx\r\n", n);
        iov[cnt].iov_base = tmp;
        iov[cnt++].iov_len = (size_t)k;
    }
    iov[cnt].iov_base = (void *)p;
    iov[cnt++].iov_len = n;
    if (r->chunked) {
        iov[cnt].iov_base = (void *)"\r\n";
        iov[cnt++].iov_len = 2;
    }
    if (srv_send_all(r->c, iov, cnt, r->c->srv->opt.body_timeout) < 0) {
        r->failed = 1;
        return -1;
    }
    r->body_sent += n;
    return 0;
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

static PyTypeObject srv_resp_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "libgreen.wsgi.Response",
    .tp_basicsize = sizeof(struct srv_resp),
    .tp_dealloc = srv_resp_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = srv_resp_methods,
};

int srv_request_types_init(PyObject *module)
{
    if (PyType_Ready(&srv_resp_type) < 0 || PyType_Ready(&srv_input_type) < 0 ||
        PyType_Ready(&srv_filewrapper_type) < 0)
        return -1;
    return 0;
}

/* ---- running one request -------------------------------------------- */

/* Calls result.close() if it has one; keeps a pending exception. */
static void srv_close_result(PyObject *result)
{
    PyObject *exc = PyErr_Occurred() ? srv_fetch_exc() : NULL;
    PyObject *close = PyObject_GetAttrString(result, "close");

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
    if (r->content_length >= 0 && (uint64_t)r->content_length < left)
        left = (uint64_t)r->content_length;
    if (r->content_length < 0)
        r->content_length = (int64_t)left;
    if (srv_send_head(r, NULL, 0, 0) < 0)
        return -1;
    if (r->no_body)
        return 1;
    off = (off_t)pos;
    while (left) {
        ssize_t n;
        Py_BEGIN_ALLOW_THREADS
        n = sendfile(c->fd, fd, &off, left > (1 << 30) ? (1 << 30) : left);
        Py_END_ALLOW_THREADS
        if (n > 0) {
            left -= (uint64_t)n;
            r->body_sent += (uint64_t)n;
            continue;
        }
        if (n == 0) {
            r->close_after = 1; /* the file shrank under us */
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN || srv_wait(c->fd, GREEN_WRITE,
                                        c->srv->opt.body_timeout) < 0) {
            r->failed = 1;
            return -1;
        }
    }
    return 1;
}

/* Iterates the app's result and writes the response. Returns 0, or -1
 * with an exception (or with r->failed and none: the client left). */
static int srv_send_result(struct srv_resp *r, PyObject *result)
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

/* Prints the pending exception with sys.excepthook and clears it.
 * Not PyErr_Print(): that exits the whole process when the exception is
 * SystemExit (an app calling sys.exit() would stop the server), and it
 * keeps the exception - and every frame of the request - alive in
 * sys.last_value until the next error. */
void srv_print_exc(void)
{
    PyObject *exc = srv_fetch_exc(), *hook, *tb, *res = NULL;

    if (!exc)
        return;
    tb = PyException_GetTraceback(exc);
    hook = PySys_GetObject("excepthook"); /* borrowed */
    if (hook)
        res = PyObject_CallFunctionObjArgs(hook, (PyObject *)Py_TYPE(exc), exc,
                                           tb ? tb : Py_None, NULL);
    if (!res) {
        PyErr_Clear(); /* no usable hook: the interpreter's own display */
        PyErr_Display((PyObject *)Py_TYPE(exc), exc, tb ? tb : Py_None);
    }
    Py_XDECREF(res);
    Py_XDECREF(tb);
    Py_DECREF(exc);
}

/* The pending exception's traceback as UTF-8 bytes (debug=True puts it
 * in the 500 body), leaving the exception pending. NULL if it cannot be
 * formatted. */
static PyObject *srv_format_exc(void)
{
    PyObject *exc = srv_fetch_exc(), *mod, *lines = NULL, *sep, *text = NULL,
             *out = NULL;

    if (!exc)
        return NULL;
    mod = PyImport_ImportModule("traceback");
    if (mod) {
        lines = PyObject_CallMethod(mod, "format_exception", "O", exc);
        Py_DECREF(mod);
    }
    if (lines && (sep = PyUnicode_FromString(""))) {
        text = PyUnicode_Join(sep, lines);
        Py_DECREF(sep);
    }
    if (text)
        out = PyUnicode_AsEncodedString(text, "utf-8", "replace");
    Py_XDECREF(text);
    Py_XDECREF(lines);
    PyErr_Clear();
    srv_restore_exc(exc);
    return out;
}

static void srv_log_app_error(struct srv_conn *c, const struct srv_request *req)
{
    PySys_WriteStderr("libgreen: error in the WSGI app while serving %.*s %.*s:\n",
                      (int)(req->method_len > 32 ? 32 : req->method_len), req->method,
                      (int)(req->target_len > 200 ? 200 : req->target_len), req->target);
    srv_print_exc();
}

/* Serves one parsed request. Returns 1 to keep the connection. */
static int srv_handle(struct srv_conn *c, struct srv_request *req, size_t head_len)
{
    struct srv_server *srv = c->srv;
    PyObject *input, *environ = NULL, *result = NULL, *start = NULL, *ctx;
    struct srv_resp *r;
    double started = ev_time();
    int keep, ok, bad;
    const char *why = NULL;
    /* req's strings point into c->buf, which reading the body compacts
     * and may reallocate (input.c): once the environ is built they are
     * stale. The response (HEAD, version) and the log lines use this copy
     * of the request line instead, cut to what the log prints. */
    struct srv_request line = *req;
    char method[33], target[801];

    line.method_len = req->method_len < sizeof method - 1 ? req->method_len
                                                          : sizeof method - 1;
    line.target_len = req->target_len < sizeof target - 1 ? req->target_len
                                                          : sizeof target - 1;
    memcpy(method, req->method, line.method_len);
    memcpy(target, req->target, line.target_len);
    line.method = method;
    line.target = target;
    line.path = line.query = NULL;
    line.path_len = line.query_len = 0;
    line.headers = NULL;
    line.nheaders = 0;

    if (srv->opt.max_body_size && req->content_length >= 0 &&
        (uint64_t)req->content_length > srv->opt.max_body_size) {
        srv_send_error(c, 413, "the request body is larger than max_body_size");
        srv_log_access(c, req, 413, 0, started);
        return 0;
    }
    input = srv_input_new(c, req, head_len);
    r = PyObject_New(struct srv_resp, &srv_resp_type);
    if (!input || !r) {
        Py_XDECREF(input);
        Py_XDECREF((PyObject *)r);
        PyErr_Clear();
        srv_send_error(c, 503, "out of memory");
        return 0;
    }
    r->c = c;
    r->req = &line;
    r->status = r->headers = NULL;
    r->started = r->head_sent = r->chunked = r->close_after = r->no_body = 0;
    r->failed = 0;
    r->code = 0;
    r->content_length = -1;
    r->app_cl = 0;
    r->body_sent = 0;

    /* A chunked body that came with the head and is already malformed
     * (or too large) is the client's error: 400/413, the app never runs. */
    bad = srv_input_check(input, &why);
    if (bad) {
        r->code = bad;
        r->close_after = 1;
        srv_send_error(c, bad, why);
        ctx = NULL;
        goto done;
    }

    ctx = PyContext_New();
    if (!ctx || PyContext_Enter(ctx) < 0) {
        Py_XDECREF(ctx);
        ctx = NULL;
        goto app_error;
    }
    environ = srv_build_environ(c, req, input);
    if (!environ)
        goto app_error;
    start = PyObject_GetAttrString((PyObject *)r, "start_response");
    if (!start)
        goto app_error;
    result = PyObject_CallFunctionObjArgs(srv->app, environ, start, NULL);
    if (!result)
        goto app_error;
    ok = srv_send_result(r, result) == 0;
    srv_close_result(result); /* keeps the first error if there was one */
    if (!ok)
        goto app_error;
    if (PyErr_Occurred()) {
        /* Only close() failed: the body is all out, so the response is
         * still finished properly (a client would otherwise see a good
         * response truncated); the error goes to the log. */
        srv_log_app_error(c, &line);
    }
    if (r->chunked && !r->no_body) {
        struct iovec end = {(void *)"0\r\n\r\n", 5};
        if (srv_send_all(c, &end, 1, srv->opt.body_timeout) < 0)
            r->failed = 1;
    }
    if (r->content_length >= 0 && !r->no_body &&
        r->body_sent < (uint64_t)r->content_length) {
        fprintf(stderr, "libgreen: the app sent %llu of the %lld body bytes "
                "its Content-Length promised; closing the connection\n",
                (unsigned long long)r->body_sent, (long long)r->content_length);
        r->close_after = 1;
    }
    goto done;

app_error:
    if (r->failed && !PyErr_Occurred()) {
        /* the client went away: nothing to tell anyone but the log */
    } else if (PyErr_Occurred()) {
        PyObject *tb_text = NULL;
        bad = srv_input_bad(input, &why);
        if (PyErr_ExceptionMatches(PyExc_OSError) && r->failed) {
            PyErr_Clear();
        } else if (bad && !r->head_sent && !r->failed) {
            /* The app let the body's error escape: the client sent a
             * malformed or oversized body, not a bug in the app. */
            PyErr_Clear();
            PySys_WriteStderr("libgreen: %s %.*s: %s; answered %d\n",
                              c->remote_addr, (int)line.target_len, line.target,
                              why, bad);
        } else {
            if (srv->opt.debug && !r->head_sent && !r->failed)
                tb_text = srv_format_exc();
            srv_log_app_error(c, &line);
        }
        if (!r->head_sent && !r->failed && bad) {
            r->code = bad;
            srv_send_error(c, bad, why);
        } else if (!r->head_sent && !r->failed) {
            r->code = 500;
            if (tb_text)
                srv_send_error_text(c, 500, PyBytes_AS_STRING(tb_text),
                                    (size_t)PyBytes_GET_SIZE(tb_text));
            else
                srv_send_error(c, 500, NULL);
        }
        Py_XDECREF(tb_text);
    }
    r->close_after = 1;

done:
    Py_XDECREF(start);
    Py_XDECREF(result);
    Py_XDECREF(environ);
    if (ctx) {
        PyContext_Exit(ctx);
        Py_DECREF(ctx);
    }
    keep = srv_input_finish(input, NULL) && !r->close_after && !r->failed;
    Py_DECREF(input);
    srv_log_access(c, &line, r->code ? r->code : 500, r->body_sent, started);
    r->c = NULL;
    Py_DECREF((PyObject *)r);
    if (PyErr_Occurred())
        PyErr_Clear();
    return keep;
}

/* The body of a request's green thread. */
void srv_request_green(void *arg)
{
    struct srv_conn *c = arg;
    struct srv_server *srv = c->srv;
    PyThreadState *ts = srv_tstate_get(srv->interp);
    size_t cap = srv->opt.limits.max_headers ? srv->opt.limits.max_headers
                                            : SRV_DEFAULT_MAX_HEADERS;
    struct srv_header *hdrs = PyMem_RawMalloc(cap * sizeof *hdrs);

    if (!ts || !hdrs) {
        if (ts)
            PyThreadState_Delete(ts);
        PyMem_RawFree(hdrs);
        srv_conn_close(c);
        srv_request_done(srv);
        return;
    }
    PyEval_RestoreThread(ts);
    for (;;) {
        struct srv_request req;
        int n;
        memset(&req, 0, sizeof req);
        req.headers = hdrs;
        req.nheaders = cap;
        n = srv_parse_request(c->buf, c->len, &req, &srv->opt.limits);
        if (n == -2) {
            /* the next request is not all here yet: back to the hub */
            Py_BEGIN_ALLOW_THREADS
            srv_conn_resume(c);
            Py_END_ALLOW_THREADS
            break;
        }
        if (n < 0) {
            srv_send_error(c, req.status, req.error);
            srv_conn_close(c);
            break;
        }
        c->requests++;
        if (!srv_handle(c, &req, (size_t)n) || srv->stopping) {
            srv_conn_close(c);
            break;
        }
        if (c->len == 0) {
            srv_conn_resume(c);
            break;
        }
    }
    PyMem_RawFree(hdrs);
    srv_request_done(srv);
    srv_tstate_put(ts);
}
