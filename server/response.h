/* server/response.h - the response object, shared by response.c, which
 * gives it start_response and write() and puts it on the wire, and
 * request.c, which asks for one per request and reads how it ended.
 */
#ifndef LIBGREEN_SERVER_RESPONSE_H
#define LIBGREEN_SERVER_RESPONSE_H

#include "server/frame.h"
#include "server/py.h"

struct srv_resp {
    PyObject_HEAD
    /* srv_resp_new zeroes every field from here on, then sets c, req and
     * fr.content_length */
    struct srv_conn *c;         /* NULL once the request is over */
    const struct srv_request *req;
    PyObject *status;           /* str, from start_response */
    PyObject *headers;          /* list */
    int started;                /* start_response was called */
    int head_sent;
    /* How the body travels (frame.c): content_length from the app or
     * computed, -1 if none; chunked; close_after (Connection: close, or
     * the framing needs it); no_body (HEAD, 1xx, 204, 304). */
    struct srv_framing fr;
    int failed;                 /* the connection is broken */
    int code;
    int app_cl;                 /* the app's headers carry Content-Length */
    uint64_t body_sent;         /* body bytes (excluding framing) */
};

/* The libgreen.wsgi.Response type. */
SRV_HIDDEN extern PyTypeObject srv_resp_type;
/* A response to req (the caller keeps it alive until the response ends)
 * on c, nothing sent yet; NULL with an exception if out of memory. */
SRV_HIDDEN struct srv_resp *srv_resp_new(struct srv_conn *c,
                                         const struct srv_request *req);
SRV_HIDDEN int srv_send_result(struct srv_resp *r, PyObject *result);
SRV_HIDDEN void srv_close_result(PyObject *result);
/* r.start_response, the callable the app gets (a new reference). */
SRV_HIDDEN PyObject *srv_resp_start_fn(struct srv_resp *r);
SRV_HIDDEN void srv_resp_finish(struct srv_resp *r);

#endif
