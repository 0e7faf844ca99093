/* server/debug.h - what the server tells the hub's debugging reports
 * (server/debug.c): which request a green thread serves, its Python
 * stack, and counters for the statistics line.
 */
#ifndef LIBGREEN_SERVER_DEBUG_H
#define LIBGREEN_SERVER_DEBUG_H

#include "server/py.h"

/* A green thread's description, on its own stack, given to the hub with
 * G.set_info for as long as it runs Python. Every field may be NULL; the
 * hub reads them from signal handlers, so they are set before they are
 * meaningful and cleared before what they point to goes away. */
struct srv_ginfo {
    PyThreadState *ts;                /* its thread state, while it has one */
    struct srv_conn *c;               /* a request thread's connection */
    const struct srv_request *req;    /* the request it serves now */
    const char *what;                 /* otherwise: what it is */
};

/* Requests answered and connections open, for the statistics line and
 * libgreen.stats(). Plain counters: the server runs on one OS thread. */
SRV_HIDDEN extern uint64_t srv_dbg_requests, srv_dbg_conns;

/* Registers the hooks with the hub; at import, GIL held. */
SRV_HIDDEN void srv_debug_init(void);

/* pytrace.c: ts's Python stack to fd, faulthandler's form; safe in a
 * signal handler interrupting ts's own thread. */
SRV_HIDDEN void srv_pytrace_init(void);
SRV_HIDDEN void srv_pytrace_write(int fd, PyThreadState *ts);

#endif
