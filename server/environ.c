/* server/environ.c - the WSGI environ of one request (PEP 3333).
 *
 * The keys every request sets are interned once (srv_environ_init); the
 * constant ones come from the base_environ of the listening socket the
 * request came in on (struct srv_listener). Header names become
 * HTTP_* keys, the path is percent-decoded into PATH_INFO, and repeated
 * header fields are joined into one value.
 */
#include <string.h>
#include <strings.h>

#include "server/py.h"

/* ---- interned environ keys ------------------------------------------ */

static PyObject *k_method, *k_path, *k_query, *k_ctype, *k_clen,
    *k_proto, *k_raddr, *k_rport, *k_raw_uri, *k_req_uri, *k_input,
    *k_scheme, *s_empty, *s_http10, *s_http11, *s_get, *s_post, *s_head,
    *s_http, *s_https;

struct srv_known_header {
    const char *name;
    PyObject *key;
    size_t len;             /* strlen(name) */
};

/* SRV_KNOWN("Host"): a name, its key (made by srv_environ_init), its
 * length. */
#define SRV_KNOWN(name) {name, NULL, sizeof(name) - 1}

static struct srv_known_header srv_known[] = {
    SRV_KNOWN("Host"), /* first: srv_build_environ takes HTTP_HOST from [0] */
    SRV_KNOWN("User-Agent"), SRV_KNOWN("Accept"),
    SRV_KNOWN("Accept-Encoding"), SRV_KNOWN("Accept-Language"),
    SRV_KNOWN("Connection"), SRV_KNOWN("Cookie"), SRV_KNOWN("Referer"),
    SRV_KNOWN("Cache-Control"), SRV_KNOWN("Origin"),
    SRV_KNOWN("Authorization"), SRV_KNOWN("X-Forwarded-For"),
    SRV_KNOWN("X-Forwarded-Proto"), SRV_KNOWN("X-Request-Id"),
    SRV_KNOWN("If-None-Match"), SRV_KNOWN("If-Modified-Since"),
    SRV_KNOWN("Pragma"), SRV_KNOWN("Upgrade"), SRV_KNOWN("Expect"),
    SRV_KNOWN("Transfer-Encoding"),
};

static PyObject *srv_intern(const char *s) { return PyUnicode_InternFromString(s); }

int srv_environ_init(void)
{
    char key[64];

    k_method = srv_intern("REQUEST_METHOD");
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
    k_scheme = srv_intern("wsgi.url_scheme");
    s_http = srv_intern("http");
    s_https = srv_intern("https");
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
        if (srv_known[i].len == len &&
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

    if (n == 0) /* "*", authority-form; and never hand on an unwritten local */
        return Py_NewRef(s_empty);
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

/* REQUEST_METHOD, the common ones interned. */
static PyObject *srv_method(const struct srv_request *req)
{
    if (req->method_len == 3 && memcmp(req->method, "GET", 3) == 0)
        return Py_NewRef(s_get);
    if (req->method_len == 4 && memcmp(req->method, "POST", 4) == 0)
        return Py_NewRef(s_post);
    if (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0)
        return Py_NewRef(s_head);
    return srv_latin1(req->method, req->method_len);
}

/* The part of the target PATH_INFO decodes: the path of an origin-form
 * target; of an absolute-form one (http://authority/path?query) the
 * path alone, its authority in *authority (NULL if none); nothing for
 * "*" and authority-form. */
static void srv_target_path(const struct srv_request *req, const char **path,
                            size_t *path_len, const char **authority,
                            size_t *authority_len)
{
    *path = req->path;
    *path_len = req->path_len;
    *authority = NULL;
    *authority_len = 0;
    if (req->form == SRV_FORM_ABSOLUTE) {
        /* The parser hands over the whole target for this form, query
         * included, so the path ends where the query starts. */
        const char *s = memchr(*path, ':', *path_len);
        const char *end = req->query ? req->query - 1 : *path + *path_len;
        if (s && end - s >= 3 && s[1] == '/' && s[2] == '/') {
            const char *q = memchr(s + 3, '/', (size_t)(end - s - 3));
            *path = q ? q : end;
            *authority = s + 3;
            *authority_len = (size_t)(*path - *authority);
        }
        *path_len = (size_t)(end - *path);
    } else if (req->form != SRV_FORM_ORIGIN) {
        *path_len = 0;
    }
}

/* The keys of the request line, the client (as forwarded.c resolved it)
 * and wsgi.input. Returns 0, or -1 with an exception. */
static int srv_set_request(PyObject *env, const struct srv_conn *c,
                           const struct srv_request *req, PyObject *input,
                           const struct srv_client *cl,
                           const char *path, size_t path_len)
{
    if (srv_set(env, k_method, srv_method(req)) < 0 ||
        srv_set(env, k_path, srv_path_info(path, path_len)) < 0 ||
        srv_set(env, k_query, req->query ? srv_latin1(req->query, req->query_len)
                                         : Py_NewRef(s_empty)) < 0 ||
        srv_set(env, k_raw_uri, srv_latin1(req->target, req->target_len)) < 0 ||
        PyDict_SetItem(env, k_req_uri, PyDict_GetItem(env, k_raw_uri)) < 0 ||
        PyDict_SetItem(env, k_proto, req->minor ? s_http11 : s_http10) < 0 ||
        srv_set(env, k_raddr, PyUnicode_FromString(cl->addr)) < 0 ||
        srv_set(env, k_rport, PyUnicode_FromString(c->remote_port)) < 0 ||
        PyDict_SetItem(env, k_input, input) < 0 ||
        (cl->scheme && PyDict_SetItem(env, k_scheme, strcmp(cl->scheme, "https") == 0
                                                         ? s_https : s_http) < 0))
        return -1;
    return 0;
}

/* One header field into env under its key (dropped if it has none); a
 * repeated field joins the value already there. Returns 0, or -1 with an
 * exception. */
static int srv_add_header(PyObject *env, const struct srv_header *h)
{
    PyObject *key, *val, *old;
    int r;

    if (h->name_len == 12 && strncasecmp(h->name, "Content-Type", 12) == 0)
        key = Py_NewRef(k_ctype);
    else if (h->name_len == 14 && strncasecmp(h->name, "Content-Length", 14) == 0)
        key = Py_NewRef(k_clen);
    else if (!(key = srv_header_key(h->name, h->name_len)))
        return PyErr_Occurred() ? -1 : 0;
    val = srv_latin1(h->value, h->value_len);
    if (!val) {
        Py_DECREF(key);
        return -1;
    }
    /* One lookup for the usual case, a field seen once: it goes in. */
    old = PyDict_SetDefault(env, key, val); /* borrowed */
    if (old == val || !old) {
        Py_DECREF(key);
        Py_DECREF(val);
        return old ? 0 : -1;
    }
    if (key != k_clen) {
        /* repeated field: one value, joined as RFC 9110 5.3 allows;
         * Cookie lines join with "; " (RFC 6265 5.4), never "," -
         * and only Cookie: Accept has six letters too. */
        int cookie = h->name_len == 6 && strncasecmp(h->name, "Cookie", 6) == 0;
        PyObject *joined = PyUnicode_FromFormat(
            "%U%s%U", old, cookie ? "; " : ",", val);
        Py_DECREF(val);
        val = joined;
    }
    r = srv_set(env, key, val);
    Py_DECREF(key);
    return r;
}

PyObject *srv_build_environ(struct srv_conn *c, const struct srv_request *req,
                            PyObject *input, const struct srv_client *cl)
{
    PyObject *env = PyDict_Copy(c->lst->base_environ);
    const char *path, *authority;
    size_t path_len, authority_len;

    if (!env)
        return NULL;
    srv_target_path(req, &path, &path_len, &authority, &authority_len);
    if (srv_set_request(env, c, req, input, cl, path, path_len) < 0)
        goto error;
    for (size_t i = 0; i < req->nheaders; i++)
        if (srv_add_header(env, &req->headers[i]) < 0)
            goto error;
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
