/* server/request.c - one request in its green thread: running the app
 * and reporting its errors, for each request of a connection in turn.
 *
 * The green thread owns a PyThreadState for its whole life (one per
 * green thread, the verified mechanism of docs/DESIGN.md), holds the GIL while
 * it runs Python, and drops it whenever it parks. Each request runs in a
 * fresh contextvars.Context. A connection with pipelined requests is
 * served by the same green thread, one request after another.
 *
 * The environ is built by environ.c; the response object, its framing
 * and the app's result on the wire are response.c's.
 */
#include <string.h>

#include "server/debug.h"
#include "server/log.h"
#include "server/py.h"
#include "server/response.h"


/* ---- running one request -------------------------------------------- */

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

/* What a request keeps of its head, copied out of c->buf. req's strings
 * point into c->buf, which reading the body compacts (input.c) and may
 * reallocate: once the environ is built they are stale. The response
 * (HEAD, version) and the log lines use this copy instead, cut to what
 * the log prints; with it go the client as trusted proxies tell it
 * (forwarded.c) and, with an access log, the header values it prints.
 * The log record exists only with an access log, on the heap and sized
 * to the headers the format prints: on the green thread's stack it
 * pushed the app's frames a page deeper, and with room for every header
 * it was 2 KiB of RSS for each request in flight. */
struct srv_line {
    struct srv_request req;     /* no path, query or headers */
    char method[33], target[801];
    struct srv_client client;
    struct srv_logreq *log;     /* NULL without an access log */
};

static void srv_line_copy(struct srv_line *l, struct srv_conn *c,
                          const struct srv_request *req, double started)
{
    size_t record = srv_alog_record_size(c->srv); /* 0: no access log */

    l->log = record ? PyMem_RawMalloc(record) : NULL;
    l->req = *req;
    l->req.method_len = req->method_len < sizeof l->method - 1
                            ? req->method_len : sizeof l->method - 1;
    l->req.target_len = req->target_len < sizeof l->target - 1
                            ? req->target_len : sizeof l->target - 1;
    memcpy(l->method, req->method, l->req.method_len);
    memcpy(l->target, req->target, l->req.target_len);
    l->req.method = l->method;
    l->req.target = l->target;
    l->req.path = l->req.query = NULL;
    l->req.path_len = l->req.query_len = 0;
    l->req.headers = NULL;
    l->req.nheaders = 0;
    srv_fwd_resolve(c, req, &l->client);
    if (!l->log)
        return; /* no access log (or no memory for this line of it) */
    l->log->line = &l->req;
    l->log->client = l->client.addr;
    l->log->started = started;
    srv_alog_capture(c->srv, req, l->log);
}

/* Writes the access log line (if any) and frees the record. */
static void srv_line_log(struct srv_line *l, struct srv_server *srv, int status,
                         uint64_t bytes)
{
    if (!l->log)
        return;
    l->log->status = status;
    l->log->bytes = bytes;
    srv_log_access(srv, l->log);
    PyMem_RawFree(l->log);
    l->log = NULL;
}

/* The app failed (exception pending) or the client left (r->failed):
 * sorts out whose fault it was, logs it, and answers if the head is not
 * out yet - the client's status when its body was bad (400, 408, 413),
 * else 500 (with the traceback under debug=True). */
static void srv_app_failed(struct srv_resp *r, PyObject *input)
{
    struct srv_conn *c = r->c;
    const struct srv_request *line = r->req;
    PyObject *tb_text = NULL;
    const char *why = NULL;
    int bad, can_answer = !r->head_sent && !r->failed;

    if (!PyErr_Occurred())
        return; /* the client went away: nothing to tell anyone */
    bad = srv_input_bad(input, &why);
    if (PyErr_ExceptionMatches(PyExc_OSError) && r->failed) {
        PyErr_Clear();
    } else if (bad && can_answer) {
        /* The app let the body's error escape: the client sent a
         * malformed or oversized body, not a bug in the app. */
        PyErr_Clear();
        PySys_WriteStderr("libgreen: %s %.*s: %s; answered %d\n",
                          c->remote_addr, (int)line->target_len, line->target,
                          why, bad);
    } else {
        if (c->srv->opt.debug && can_answer)
            tb_text = srv_format_exc();
        srv_log_app_error(c, line);
    }
    if (can_answer && bad) {
        r->code = bad;
        srv_send_error(c, bad, why);
    } else if (can_answer) {
        r->code = 500;
        if (tb_text)
            srv_send_error_text(c, 500, PyBytes_AS_STRING(tb_text),
                                (size_t)PyBytes_GET_SIZE(tb_text));
        else
            srv_send_error(c, 500, NULL);
    }
    Py_XDECREF(tb_text);
}

/* What one app call holds until the request ends (the error report
 * included: sys.excepthook still runs in the request's context). */
struct srv_call {
    PyObject *ctx, *environ, *start, *result;
};

/* Calls the app in a fresh context and sends its response. Returns 0, or
 * -1 with an exception set (or with r->failed and none: the client left). */
static int srv_call_app(struct srv_call *call, struct srv_resp *r,
                        const struct srv_request *req, PyObject *input,
                        const struct srv_client *cl)
{
    int ok;

    call->ctx = PyContext_New();
    if (!call->ctx || PyContext_Enter(call->ctx) < 0) {
        Py_CLEAR(call->ctx);
        return -1;
    }
    call->environ = srv_build_environ(r->c, req, input, cl);
    if (!call->environ)
        return -1;
    srv_input_release(input); /* req's pointers into the buffer end here */
    call->start = srv_resp_start_fn(r);
    if (!call->start)
        return -1;
    call->result = PyObject_CallFunctionObjArgs(r->c->srv->app, call->environ,
                                                call->start, NULL);
    if (!call->result)
        return -1;
    ok = srv_send_result(r, call->result) == 0;
    srv_close_result(call->result); /* keeps the first error if there was one */
    if (!ok)
        return -1;
    if (PyErr_Occurred()) {
        /* Only close() failed: the body is all out, so the response is
         * still finished properly (a client would otherwise see a good
         * response truncated); the error goes to the log. */
        srv_log_app_error(r->c, r->req);
    }
    srv_resp_finish(r);
    return 0;
}

static void srv_call_end(struct srv_call *call)
{
    Py_XDECREF(call->start);
    Py_XDECREF(call->result);
    Py_XDECREF(call->environ);
    if (call->ctx) {
        PyContext_Exit(call->ctx);
        Py_DECREF(call->ctx);
    }
}

/* Runs the app for one request whose body framing is sound, and answers
 * for it whatever happens. */
static void srv_run_app(struct srv_resp *r, const struct srv_request *req,
                        PyObject *input, const struct srv_client *cl)
{
    struct srv_call call = {NULL, NULL, NULL, NULL};

    if (srv_call_app(&call, r, req, input, cl) < 0) {
        srv_app_failed(r, input);
        r->fr.close_after = 1;
        /* A body that ends at the close (HTTP/1.0, no length) and was cut
         * short would look whole after a FIN: reset instead. */
        if (r->head_sent && !r->fr.no_body && !r->fr.chunked && r->fr.content_length < 0)
            r->c->reset = 1;
    }
    srv_call_end(&call);
}

/* Serves one parsed request. Returns 1 to keep the connection. gi (the
 * green thread's description for debugging reports) names the request
 * while it is served. */
static int srv_handle(struct srv_conn *c, struct srv_request *req, size_t head_len,
                      struct srv_ginfo *gi)
{
    struct srv_server *srv = c->srv;
    PyObject *input;
    struct srv_resp *r;
    struct srv_line line;
    double started = ev_time();
    const char *why = NULL;
    int keep, bad;

    srv_line_copy(&line, c, req, started);
    if (srv->opt.max_body_size && req->content_length >= 0 &&
        (uint64_t)req->content_length > srv->opt.max_body_size) {
        srv_send_error(c, 413, "the request body is larger than max_body_size");
        srv_line_log(&line, srv, 413, 0);
        return 0;
    }
    gi->req = &line.req;
    input = srv_input_new(c, req, head_len);
    r = srv_resp_new(c, &line.req);
    if (!input || !r) {
        Py_XDECREF(input);
        Py_XDECREF((PyObject *)r);
        PyErr_Clear();
        srv_send_error(c, 503, "out of memory");
        PyMem_RawFree(line.log);
        gi->req = NULL;
        return 0;
    }
    /* A chunked body that came with the head and is already malformed
     * (or too large) is the client's error: 400/413, the app never runs. */
    bad = srv_input_check(input, &why);
    if (bad) {
        r->code = bad;
        r->fr.close_after = 1;
        srv_send_error(c, bad, why);
    } else {
        srv_run_app(r, req, input, &line.client);
    }
    keep = srv_input_finish(input) && !r->fr.close_after && !r->failed;
    Py_DECREF(input);
    srv_line_log(&line, srv, r->code ? r->code : 500, r->body_sent);
    r->c = NULL;
    Py_DECREF((PyObject *)r);
    if (PyErr_Occurred())
        PyErr_Clear();
    gi->req = NULL;
    return keep;
}

/* Header slots a request's green thread starts with, on its stack: what
 * nearly every request needs. A heap array for max_headers' worth (3 KiB
 * by default) was RSS for every request in flight; the stack has room to
 * spare in the pages it touches anyway. */
#define SRV_HDRS_FIRST 32

/* Parses the head at c->buf into req (headers in *hdrs, *cap slots).
 * Refused for holding more fields than *cap while max_headers allows
 * more, it parses again into a heap array with room for max_headers
 * (kept in *hdrs: the caller frees it if it is not first). Returns as
 * srv_parse_request. */
static int srv_parse_head(struct srv_conn *c, struct srv_request *req,
                          struct srv_header **hdrs, size_t *cap,
                          struct srv_header *first)
{
    const struct srv_limits *lim = &c->srv->opt.limits;
    size_t full = lim->max_headers ? lim->max_headers : SRV_DEFAULT_MAX_HEADERS;
    struct srv_header *more;
    int n;

    for (;;) {
        memset(req, 0, sizeof *req);
        req->headers = *hdrs;
        req->nheaders = *cap;
        n = srv_parse_request(c->buf, c->len, req, lim);
        if (n != -1 || req->status != 431 || *cap >= full)
            return n;
        more = PyMem_RawMalloc(full * sizeof *more);
        if (!more)
            return n; /* 431 stands: the client sent more than we can hold */
        if (*hdrs != first)
            PyMem_RawFree(*hdrs);
        *hdrs = more;
        *cap = full;
    }
}

/* The body of a request's green thread. */
void srv_request_green(void *arg)
{
    struct srv_conn *c = arg;
    struct srv_server *srv = c->srv;
    PyThreadState *ts = srv_tstate_get(srv->interp);
    size_t cap = srv->opt.limits.max_headers ? srv->opt.limits.max_headers
                                            : SRV_DEFAULT_MAX_HEADERS;
    struct srv_header first[SRV_HDRS_FIRST], *hdrs = first;
    struct srv_ginfo gi = {ts, c, NULL, NULL};
    struct green *self = G.current(); /* not after a fork: NULL there */

    if (cap > SRV_HDRS_FIRST)
        cap = SRV_HDRS_FIRST;
    if (!ts) {
        srv_conn_close(c);
        srv_request_done(srv);
        return;
    }
    G.set_info(self, &gi);
    PyEval_RestoreThread(ts);
    for (;;) {
        struct srv_request req;
        int n = srv_parse_head(c, &req, &hdrs, &cap, first), keep;
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
        if (srv->max_served && ++srv->served >= srv->max_served)
            req.keep_alive = 0; /* the last one: srv_done (serve.c) stops */
        keep = srv_handle(c, &req, (size_t)n, &gi);
        srv_dbg_requests++;
        if (!keep || srv->stopping) {
            srv_conn_close(c);
            break;
        }
        if (c->len == 0) {
            srv_conn_resume(c);
            break;
        }
    }
    gi.c = NULL; /* closed, or the hub's again */
    if (hdrs != first)
        PyMem_RawFree(hdrs);
    srv_request_done(srv);
    gi.ts = NULL;
    srv_tstate_put(ts);
    G.set_info(self, NULL);
}
