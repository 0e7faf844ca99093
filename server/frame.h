/* server/frame.h - the response's framing, apart from Python: what a
 * status line and a header field may hold, how the body travels
 * (Content-Length, chunked or the close), the response head as bytes and
 * the chunk framing of body pieces.
 *
 * server/response.c calls these with the bytes of the app's str objects
 * and turns a refusal into the Python exception; the C unit tests and
 * fuzz/fuzz_frame.c call them directly. Knows nothing of sockets or
 * Python.
 */
#ifndef LIBGREEN_SERVER_FRAME_H
#define LIBGREEN_SERVER_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#ifndef SRV_API
#define SRV_API __attribute__((visibility("hidden")))
#endif

/* The status: its code (100-599), or one of these. */
#define SRV_STATUS_FORM (-1)    /* not "DDD reason" */
#define SRV_STATUS_CTL  (-2)    /* a control character (CR, LF, NUL...) */
SRV_API int srv_status_check(const char *s, size_t n);

/* What the app's headers tell the server (start_response). */
struct srv_head_info {
    int64_t content_length;     /* -1 if the headers give none */
    int app_cl;                 /* they carry Content-Length */
    int close_after;            /* Connection: close */
};

/* Verdicts on one header field: 0 (accepted) or one of these. */
enum {
    SRV_FIELD_EMPTY_NAME = 1,
    SRV_FIELD_BAD_NAME,         /* not a token */
    SRV_FIELD_CTL_VALUE,        /* a control character other than HTAB */
    SRV_FIELD_BAD_LENGTH,       /* Content-Length not 1*DIGIT (int64) */
    SRV_FIELD_LENGTH_CONFLICT,  /* a second Content-Length, of another value */
    SRV_FIELD_HOP_BY_HOP,       /* the server frames the response itself */
};
/* Checks one field of the app and notes in h what the server must know
 * of it (h starts as {-1, 0, 0}). A refused field changes nothing in h.
 * A repeated Content-Length of the same value is accepted (the head
 * carries it once); of another value it is refused: a client could frame
 * the body by either. */
SRV_API int srv_field_check(struct srv_head_info *h, const char *name, size_t nl,
                            const char *val, size_t vl);

/* How the body travels, decided when the head goes out. */
struct srv_framing {
    int64_t content_length;     /* in: the app's, -1 if none; out: as sent */
    int chunked;                /* out: chunks (HTTP/1.1, no length) */
    int close_after;            /* in: the app said close; out: closing */
    int no_body;                /* out: HEAD, 1xx, 204, 304 */
};
/* Fills f for a response with code to a request of HTTP/1.minor (head:
 * a HEAD request; may_keep: the request and the server allow keep-alive)
 * whose first body bytes are blen long (final: and the whole body). */
SRV_API void srv_framing_choose(struct srv_framing *f, int code, int head,
                                int minor, int may_keep, size_t blen, int final);

/* A growable byte buffer for the head, on the stack first. A usual head
 * is 150-300 bytes. The room is kept small because it is stack depth:
 * with 2 KiB here, sending a response reached past the first page of a
 * request's green thread stack, and a pooled stack keeps every page it
 * once touched: 4 KiB more per request in flight. */
struct srv_buf {
    char *p;
    size_t len, cap;
    char local[512];
};
SRV_API void srv_buf_init(struct srv_buf *b);
SRV_API void srv_buf_free(struct srv_buf *b);
/* Makes room for n more bytes: 0, or -1 if out of memory (b unchanged). */
SRV_API int srv_buf_grow(struct srv_buf *b, size_t n);

/* Appends s[0..n): 0, or -1 if out of memory (b unchanged). Inline: a
 * head is a few dozen of these. */
static inline int srv_buf_add(struct srv_buf *b, const char *s, size_t n)
{
    if (n > b->cap - b->len && srv_buf_grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* The head, in three steps, each 0 or -1 (out of memory): the status
 * line; each of the app's fields, checked before by srv_field_check
 * (Connection is left out: the end says it once; a repeated
 * Content-Length too; Date and Server are noted in *seen, which starts
 * at 0); the server's own fields and the blank line. date is
 * an IMF-fixdate, used unless the app sent Date. app_cl as from
 * srv_field_check, f as from srv_framing_choose. */
#define SRV_SEEN_DATE   1u
#define SRV_SEEN_SERVER 2u
#define SRV_SEEN_LENGTH 4u
SRV_API int srv_head_status(struct srv_buf *b, int minor, const char *status,
                            size_t n);
SRV_API int srv_head_field(struct srv_buf *b, const char *name, size_t nl,
                           const char *val, size_t vl, unsigned *seen);
SRV_API int srv_head_end(struct srv_buf *b, const struct srv_framing *f, int code,
                         int app_cl, int minor, unsigned seen, const char *date);

/* Body bytes p[0..n), n > 0, as iovecs: one chunk (size line, bytes,
 * CRLF) when chunked, else the bytes alone. line holds the size line
 * (SRV_CHUNK_LINE bytes). Returns how many of iov[0..3) it used. */
#define SRV_CHUNK_LINE 18          /* a size_t in hex, CRLF */
#define SRV_LAST_CHUNK "0\r\n\r\n" /* zero-size chunk, no trailer fields */
SRV_API int srv_frame_body(int chunked, struct iovec *iov, char *line,
                           const char *p, size_t n);

#endif
