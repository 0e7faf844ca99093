/* server/debug.c - the server's side of the hub's debugging reports.
 *
 * The hub knows nothing of Python or HTTP (docs/DESIGN.md, Layers); its
 * dumps, traces and block warnings ask through the hooks registered here
 * (struct green_debug_hooks, hub/green.h) about each green thread that
 * has a struct srv_ginfo (server/debug.h):
 *
 *  - describe: the request line and the peer, "GET /x HTTP/1.1 from
 *    127.0.0.1:40112", copied byte by byte (async-signal-safe);
 *  - traceback: the green thread's own Python stack (server/pytrace.c);
 *  - enter/leave: a dump takes the GIL for its whole walk, with a thread
 *    state of its own made on first use (the hub context has none);
 *  - stats: connections open and requests answered.
 *
 * fork: CPython deletes every other thread state in a fork child, the
 * dump's included, so the child forgets it (hard rule 6).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "server/debug.h"

uint64_t srv_dbg_requests, srv_dbg_conns;

static PyInterpreterState *srv_dbg_interp;
static PyThreadState *srv_dbg_ts;
static pthread_once_t srv_dbg_once = PTHREAD_ONCE_INIT;

static void srv_dbg_forget_ts(void) { srv_dbg_ts = NULL; }
static void srv_dbg_atfork(void) { pthread_atfork(NULL, NULL, srv_dbg_forget_ts); }

/* Hub context, no thread state attached: take the GIL for the dump -
 * unless the interpreter is shutting down, where taking it would end
 * this thread (the stacks are then read without it). */
static void *srv_dbg_enter(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    if (Py_IsFinalizing())
        return NULL;
#else
    if (_Py_IsFinalizing())
        return NULL;
#endif
    if (!srv_dbg_ts) {
        pthread_once(&srv_dbg_once, srv_dbg_atfork);
        srv_dbg_ts = PyThreadState_New(srv_dbg_interp);
        if (!srv_dbg_ts)
            return NULL; /* stacks are still read, without the GIL */
    }
    PyEval_RestoreThread(srv_dbg_ts);
    return srv_dbg_ts;
}

static void srv_dbg_leave(void *token)
{
    if (token)
        PyEval_SaveThread();
}

struct srv_dbg_text {
    char *buf;
    size_t len, cap;
};

/* Appends n bytes of s, printable ASCII only (the rest as '?'). */
static void srv_dbg_put(struct srv_dbg_text *t, const char *s, size_t n)
{
    for (size_t i = 0; i < n && t->len < t->cap; i++) {
        unsigned char c = (unsigned char)s[i];
        t->buf[t->len++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
}

static void srv_dbg_puts(struct srv_dbg_text *t, const char *s)
{
    srv_dbg_put(t, s, strlen(s));
}

static size_t srv_dbg_describe(void *info, char *buf, size_t len)
{
    const struct srv_ginfo *gi = info;
    struct srv_dbg_text t = {buf, 0, len};
    const struct srv_request *req = gi->req;
    const struct srv_conn *c = gi->c;

    if (req) {
        char minor = (char)('0' + (req->minor & 7));
        srv_dbg_put(&t, req->method, req->method_len);
        srv_dbg_puts(&t, " ");
        srv_dbg_put(&t, req->target, req->target_len);
        srv_dbg_puts(&t, " HTTP/1.");
        srv_dbg_put(&t, &minor, 1);
    } else if (c) {
        srv_dbg_puts(&t, "between requests");
    } else if (gi->what) {
        srv_dbg_puts(&t, gi->what);
    }
    if (c && c->remote_addr[0]) {
        srv_dbg_puts(&t, " from ");
        srv_dbg_put(&t, c->remote_addr, strnlen(c->remote_addr, sizeof c->remote_addr));
        srv_dbg_puts(&t, ":");
        srv_dbg_put(&t, c->remote_port, strnlen(c->remote_port, sizeof c->remote_port));
    } else if (c) {
        srv_dbg_puts(&t, " on a Unix socket");
    }
    return t.len;
}

static void srv_dbg_traceback(int fd, void *info, int in_signal)
{
    const struct srv_ginfo *gi = info;

    (void)in_signal; /* the walk is the same: read-only, no allocation */
    if (gi->ts)
        srv_pytrace_write(fd, gi->ts);
}

static size_t srv_dbg_stats(char *buf, size_t len)
{
    int n = snprintf(buf, len, ",\"connections\":%llu,\"requests\":%llu",
                     (unsigned long long)srv_dbg_conns,
                     (unsigned long long)srv_dbg_requests);

    return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

static const struct green_debug_hooks srv_dbg_hooks = {
    srv_dbg_enter, srv_dbg_leave, srv_dbg_describe, srv_dbg_traceback,
    srv_dbg_stats,
};

void srv_debug_init(void)
{
    srv_dbg_interp = PyThreadState_Get()->interp;
    srv_pytrace_init();
    G.set_debug_hooks(&srv_dbg_hooks);
}
