/* server/py.h - what the files of the Python-facing server share.
 *
 * This object (libgreen_pyXY.so) is built once per Python version and
 * opened by libgreen.so at `import libgreen`. It reaches the hub only
 * through the table G (hub/api.def lists it, server/api.c fetches it),
 * and CPython through its C API.
 *
 * Threading model: everything here runs on the OS thread that called
 * libgreen.wsgi.server(). The hub context (accepting, reading request
 * heads, keep-alive) runs with no Python thread state and no GIL. Each
 * request runs in a green thread with a PyThreadState of its own, holding
 * the GIL except while it is parked.
 */
#ifndef LIBGREEN_SERVER_PY_H
#define LIBGREEN_SERVER_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <ev.h>
#include <stdint.h>
#include <sys/socket.h>

#include "hub/api.h"
#include "server/http_parse.h"
#include "server/options.h"

#define SRV_HIDDEN __attribute__((visibility("hidden")))

/* api.c: the hub's calls; G.x(...) calls green_x() of hub/green.h.
 * srv_api_init fills G at import, or raises ImportError if libgreen.so
 * comes from another build. */
extern struct libgreen_hub_api G SRV_HIDDEN;
SRV_HIDDEN int srv_api_init(void);

/* ---- options -------------------------------------------------------- */

/* An SRV_STR_LIST option: text to split at commas, or a list or tuple
 * of str (borrowed); one of the two is set, or neither for None. */
struct srv_strlist {
    const char *text;
    PyObject *seq;
};

/* Filled from server/options.def (server/options.c); a field per option. */
struct srv_options {
    int log_output;              /* access log lines on stderr */
    const char *access_log;      /* NULL, "-" or a path (log.c) */
    const char *access_log_format;
    double keepalive;            /* idle seconds between requests; 0 = off */
    double header_timeout;       /* seconds to receive a whole head; < 0 = none */
    double body_timeout;         /* seconds of silence while reading a body
                                    or writing a response; < 0 = none */
    double graceful_timeout;     /* seconds in-flight requests get at stop */
    size_t max_size;             /* concurrent requests */
    size_t max_requests;         /* then stop; 0 = no limit */
    size_t max_requests_jitter;
    size_t max_body_size;        /* 0 = unlimited */
    struct srv_limits limits;
    struct srv_strlist forwarded_allow_ips; /* forwarded.c */
    PyObject *heartbeat;         /* callable or NULL (borrowed) */
    PyObject *environ;           /* extra environ keys or NULL (borrowed) */
    int debug;                   /* tracebacks in 500 bodies */
};

/* How often the hub context, running for the main program, lets Python
 * run its signal handlers (server/mainrun.c, server/serve.c). */
#define SRV_SIGNAL_PERIOD 0.1

/* options.c: the table of server/options.def, for the module */
SRV_HIDDEN extern const struct srv_option srv_option_table[SRV_NOPTIONS];
/* Index of the option named key (a str), or -1. */
SRV_HIDDEN int srv_options_find(PyObject *key);
/* Raises TypeError for an unknown keyword, naming the known ones. */
SRV_HIDDEN int srv_options_unknown(PyObject *key);
/* Fills opts from given[i], the value of option i (NULL: not given). */
SRV_HIDDEN int srv_options_set(PyObject *const given[SRV_NOPTIONS],
                               struct srv_options *opts);
/* The docstring of a function "call" taking the options (malloc'd). */
SRV_HIDDEN char *srv_options_doc(const char *call, const char *summary);
/* Raises ValueError for option i's value (its text): "name='value' why";
 * why says what is wrong and how to put it right. */
SRV_HIDDEN int srv_option_invalid(int i, const char *value, const char *why);
/* libgreen.wsgi.options() */
SRV_HIDDEN PyObject *srv_options_list(PyObject *self, PyObject *unused);

/* ---- the module ------------------------------------------------------ */

/* mainrun.c */
SRV_HIDDEN int srv_main_run(int (*done)(void *), void *arg, double timeout);
SRV_HIDDEN int srv_main_run_heir(int (*done)(void *), void *arg, double timeout,
                                 struct green *heir);

/* maintstate.c: on 3.13+, CPython's main thread state is the main role
 * holder's while it holds it. Around a wait that gives heir the role
 * (wait_begin/end, GIL held); when a green thread's state is attached
 * first (enter) and before it is released (leave). */
struct srv_maints {
    PyThreadState *saved;
    struct green *heir;
    PyThreadState *back;
};
SRV_HIDDEN void srv_maints_wait_begin(struct srv_maints *m, struct green *heir);
SRV_HIDDEN void srv_maints_wait_end(struct srv_maints *m);
SRV_HIDDEN void srv_maints_enter(struct green *self, PyThreadState *ts);
SRV_HIDDEN void srv_maints_leave(PyThreadState *ts);

/* greenthread.c */
SRV_HIDDEN extern PyTypeObject srv_gt_type;
SRV_HIDDEN PyObject *srv_spawn(PyObject *self, PyObject *args, PyObject *kw);
SRV_HIDDEN PyObject *srv_sleep(PyObject *self, PyObject *arg);
SRV_HIDDEN PyObject *srv_stats(PyObject *self, PyObject *unused);

/* lazy.c: libgreen.__getattr__ (GunicornWorker) */
SRV_HIDDEN PyObject *srv_module_getattr(PyObject *self, PyObject *name);

/* wsgi_server.c: libgreen.wsgi.server() and its docstring */
SRV_HIDDEN PyObject *srv_wsgi_server(PyObject *self, PyObject *args, PyObject *kw);
SRV_HIDDEN const char *srv_wsgi_server_doc(void);

/* ---- the server and its connections --------------------------------- */

struct srv_conn;
struct srv_alog;
struct srv_fwd;
struct srv_server;

/* One listening socket; server() takes one or several (accept.c). */
struct srv_listener {
    struct srv_server *srv;
    int fd;
    int fl;                      /* its file status flags before the run */
    ev_io w;                     /* accepts, unless the server pauses */
    PyObject *base_environ;      /* constant keys, copied per request */
    char host[256];              /* SERVER_NAME as bound */
    char port[16];               /* SERVER_PORT */
    char url[300];               /* for the start-up line */
};

struct srv_server {
    PyObject *app;
    PyInterpreterState *interp;
    struct srv_options opt;
    struct srv_listener *listeners;
    size_t nlisteners;
    struct ev_loop *loop;
    struct hub *hub;
    size_t active;               /* requests being handled */
    struct srv_conn *conns;      /* every open connection */
    struct srv_conn *queue_head, *queue_tail; /* SRV_QUEUED, oldest first */
    int stopping;                /* 0, or the signal that stopped us */
    int accept_paused;
    int accept_backoff;          /* accept failed for lack of fds: wait */
    ev_timer accept_retry;
    double stop_deadline;
    double stop_began;
    double stop_grace;           /* seconds the stop allowed */
    PyObject *stop_exc;          /* exception that stopped us, if any */
    size_t served;               /* requests started (for max_requests) */
    size_t max_served;           /* max_requests + this process's jitter */
    double heartbeat_at;         /* when opt.heartbeat is due */
    struct srv_alog *alog;       /* the access log, NULL if off (log.c) */
    struct srv_fwd *fwd;         /* forwarded_allow_ips (forwarded.c) */
    PyThreadState *main_ts;      /* the caller's, while the hub runs */
    struct srv_header *scratch;  /* header array for the hub's parses */
    size_t nscratch;
};

/* SRV_QUEUED: a whole request head is buffered but max_size requests
 * are running; it waits (no watcher, no timer) for one to finish. */
enum srv_conn_state { SRV_READING, SRV_QUEUED, SRV_BUSY, SRV_CLOSED };

struct srv_conn {
    struct srv_server *srv;
    const struct srv_listener *lst; /* the socket it came in on */
    int fd;
    enum srv_conn_state state;
    ev_io io;                    /* readable, while SRV_READING */
    ev_timer timer;              /* head / keep-alive deadline */
    char *buf;                   /* grows only in srv_conn_room (conn.c) */
    size_t len, cap;             /* bytes held / allocated */
    size_t off;                  /* bytes of buf already consumed */
    size_t requests;             /* served on this connection */
    struct srv_conn *next, *prev;
    struct srv_conn *qnext;      /* in srv->queue, while SRV_QUEUED */
    int trusted;                 /* the peer is in forwarded_allow_ips */
    int reset;                   /* close with RST: a write timed out,
                                    or a body without length was cut */
    char remote_addr[64];
    char remote_port[8];
};

/* serve.c */
SRV_HIDDEN PyObject *srv_serve(struct srv_server *srv);

/* accept.c */
SRV_HIDDEN void srv_accept_start(struct srv_server *srv);
SRV_HIDDEN void srv_accept_stop(struct srv_server *srv);
SRV_HIDDEN void srv_accept_update(struct srv_server *srv);
/* drain: accept the backlog first, to serve it through the stop. */
SRV_HIDDEN void srv_listener_close(struct srv_server *srv, int drain);

/* conn.c */
SRV_HIDDEN void srv_conn_new(struct srv_listener *l, int fd,
                             const struct sockaddr_storage *ss);
SRV_HIDDEN void srv_conn_close(struct srv_conn *c);
SRV_HIDDEN void srv_conn_resume(struct srv_conn *c);
/* Frees the read buffer of a connection that holds no unread byte. */
SRV_HIDDEN void srv_conn_buf_free(struct srv_conn *c);
SRV_HIDDEN void srv_conns_close_idle(struct srv_server *srv);
/* Out of fds: closes up to max idle keep-alive connections, those idle
 * longest first; returns how many. */
SRV_HIDDEN size_t srv_conns_drain_idle(struct srv_server *srv, size_t max);
/* While stopping: connections still waiting for a request head (kept by
 * srv_conns_close_idle); *arriving: one of them has part of it. */
SRV_HIDDEN size_t srv_conns_owed(const struct srv_server *srv, int *arriving);
SRV_HIDDEN void srv_conns_close_all(struct srv_server *srv);
/* A request's green thread is done with its connection's slot. */
SRV_HIDDEN void srv_request_done(struct srv_server *srv);
SRV_HIDDEN int srv_conn_fill(struct srv_conn *c, double timeout);

/* send.c */
SRV_HIDDEN int srv_wait(int fd, int events, double timeout);
SRV_HIDDEN int srv_send_all(struct srv_conn *c, struct iovec *iov, int cnt,
                            double timeout);
SRV_HIDDEN void srv_send_error(struct srv_conn *c, int status,
                               const char *reason);
SRV_HIDDEN void srv_send_error_text(struct srv_conn *c, int status,
                                    const char *text, size_t len);

/* request.c */
SRV_HIDDEN void srv_request_green(void *arg);
SRV_HIDDEN void srv_print_exc(void);

/* forwarded.c: the client as a request's trusted proxies tell it */
struct srv_client {
    const char *addr;            /* REMOTE_ADDR: the peer's, or buf */
    const char *scheme;          /* NULL (the socket's), "http" or "https" */
    char buf[48];
};
SRV_HIDDEN int srv_fwd_init(struct srv_server *srv);
SRV_HIDDEN void srv_fwd_free(struct srv_server *srv);
SRV_HIDDEN int srv_fwd_trusted(const struct srv_server *srv,
                               const struct sockaddr_storage *ss);
SRV_HIDDEN void srv_fwd_resolve(const struct srv_conn *c,
                                const struct srv_request *req,
                                struct srv_client *cl);

/* environ.c */
SRV_HIDDEN int srv_environ_init(void);
SRV_HIDDEN PyObject *srv_build_environ(struct srv_conn *c,
                                       const struct srv_request *req,
                                       PyObject *input,
                                       const struct srv_client *cl);

/* response.c (the response object itself: server/response.h) */
SRV_HIDDEN int srv_request_types_init(void);

/* input.c */
SRV_HIDDEN extern PyTypeObject srv_input_type;
SRV_HIDDEN PyObject *srv_input_new(struct srv_conn *c,
                                   const struct srv_request *req,
                                   size_t head_len);
SRV_HIDDEN int srv_input_finish(PyObject *input);
SRV_HIDDEN void srv_input_release(PyObject *input);
SRV_HIDDEN int srv_input_check(PyObject *input, const char **why);
SRV_HIDDEN int srv_input_bad(PyObject *input, const char **why);

/* filewrapper.c: wsgi.file_wrapper(filelike, blksize=8192) */
struct srv_filewrapper {
    PyObject_HEAD
    PyObject *filelike;
    Py_ssize_t blksize;
};
SRV_HIDDEN extern PyTypeObject srv_filewrapper_type;

/* log.c (the access log: server/log.h) */
SRV_HIDDEN const char *srv_http_date(void);

/* Exceptions as one object, on every supported version. */
static inline PyObject *srv_fetch_exc(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}

static inline void srv_restore_exc(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef(Py_TYPE(exc)), exc,
                  PyException_GetTraceback(exc));
#endif
}

/* tstate.c */
SRV_HIDDEN PyThreadState *srv_tstate_get(PyInterpreterState *interp);
SRV_HIDDEN void srv_tstate_put(PyThreadState *ts);
SRV_HIDDEN void srv_tstate_drain(void);

/* park_hooks.c */
SRV_HIDDEN void srv_park_hooks_init(void);

#endif
