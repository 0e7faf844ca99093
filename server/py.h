/* server/py.h - what the files of the Python-facing server share.
 *
 * This object (libgreen_pyXY.so) is built once per Python version and
 * opened by libgreen.so at `import libgreen`. It reaches the hub only
 * through the table G (server/api.h), and CPython through its C API.
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

#include "server/api.h"
#include "server/http_parse.h"

#define SRV_HIDDEN __attribute__((visibility("hidden")))

extern struct libgreen_api G SRV_HIDDEN;

/* ---- options -------------------------------------------------------- */

struct srv_options {
    int log_output;              /* access log lines on stderr */
    double keepalive;            /* idle seconds between requests; 0 = off */
    double header_timeout;       /* seconds to receive a whole head */
    double body_timeout;         /* seconds of silence while reading a body
                                    or writing a response */
    double graceful_timeout;     /* seconds in-flight requests get at stop */
    size_t max_size;             /* concurrent requests */
    size_t max_body_size;        /* 0 = unlimited */
    struct srv_limits limits;
    int debug;                   /* tracebacks in 500 bodies */
};

/* ---- the server and its connections --------------------------------- */

struct srv_conn;

struct srv_server {
    PyObject *app;
    PyObject *base_environ;      /* constant keys, copied per request */
    PyInterpreterState *interp;
    struct srv_options opt;
    int fd;                      /* listening socket */
    ev_io accept_w;
    ev_timer tick;               /* runs Python's signal handlers */
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
    PyObject *stop_exc;          /* exception that stopped us, if any */
    PyThreadState *main_ts;      /* the caller's, while the hub runs */
    struct srv_header *scratch;  /* header array for the hub's parses */
    size_t nscratch;
    char host[256];              /* SERVER_NAME as bound */
    char port[16];               /* SERVER_PORT */
    char url[300];               /* for the start-up line */
    int unix_socket;
};

/* SRV_QUEUED: a whole request head is buffered but max_size requests
 * are running; it waits (no watcher, no timer) for one to finish. */
enum srv_conn_state { SRV_READING, SRV_QUEUED, SRV_BUSY, SRV_CLOSED };

struct srv_conn {
    struct srv_server *srv;
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
    char remote_addr[64];
    char remote_port[8];
};

/* serve.c */
SRV_HIDDEN PyObject *srv_serve(struct srv_server *srv);

/* accept.c */
SRV_HIDDEN void srv_accept_start(struct srv_server *srv);
SRV_HIDDEN void srv_accept_stop(struct srv_server *srv);
SRV_HIDDEN void srv_accept_update(struct srv_server *srv);
SRV_HIDDEN void srv_listener_close(struct srv_server *srv);

/* conn.c */
SRV_HIDDEN void srv_conn_new(struct srv_server *srv, int fd,
                             const struct sockaddr_storage *ss);
SRV_HIDDEN void srv_conn_close(struct srv_conn *c);
SRV_HIDDEN void srv_conn_resume(struct srv_conn *c);
SRV_HIDDEN void srv_conns_close_idle(struct srv_server *srv);
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

/* environ.c */
SRV_HIDDEN int srv_environ_init(void);
SRV_HIDDEN PyObject *srv_build_environ(struct srv_conn *c,
                                       const struct srv_request *req,
                                       PyObject *input);

/* response.c (the response object itself: server/response.h) */
SRV_HIDDEN int srv_request_types_init(PyObject *module);

/* input.c */
SRV_HIDDEN extern PyTypeObject srv_input_type;
SRV_HIDDEN PyObject *srv_input_new(struct srv_conn *c,
                                   const struct srv_request *req,
                                   size_t head_len);
SRV_HIDDEN int srv_input_finish(PyObject *input);
SRV_HIDDEN int srv_input_check(PyObject *input, const char **why);
SRV_HIDDEN int srv_input_bad(PyObject *input, const char **why);

/* filewrapper.c: wsgi.file_wrapper(filelike, blksize=8192) */
struct srv_filewrapper {
    PyObject_HEAD
    PyObject *filelike;
    Py_ssize_t blksize;
};
SRV_HIDDEN extern PyTypeObject srv_filewrapper_type;

/* log.c */
SRV_HIDDEN void srv_log_access(struct srv_conn *c, const struct srv_request *req,
                               int status, uint64_t bytes, double started);
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

/* compat.c */
SRV_HIDDEN void srv_compat_init(void);

#endif
