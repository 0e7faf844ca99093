/* server/http_parse.h - the HTTP/1.1 request parser: request heads and
 * chunked request bodies.
 *
 * Zero-copy and allocation-free: every pointer it hands back points into the
 * caller's buffer, and the head parser keeps no state between calls (call it
 * again on the grown buffer when it says "partial"). The chunked decoder is
 * incremental: it keeps its state in struct srv_chunked, consumes every
 * byte it is given and decodes in place. Strict by design: anything that
 * two HTTP implementations could frame differently is refused (see
 * http_parse.c for the list). Knows nothing of sockets, Python or WSGI.
 */
#ifndef LIBGREEN_SERVER_HTTP_PARSE_H
#define LIBGREEN_SERVER_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifndef SRV_API
#define SRV_API __attribute__((visibility("hidden")))
#endif

/* Defaults used for a 0 in struct srv_limits / struct srv_chunked. */
#define SRV_DEFAULT_MAX_REQUEST_LINE 8190  /* bytes, excluding CRLF */
#define SRV_DEFAULT_MAX_HEADER_SIZE  8190  /* one field line, excluding CRLF */
#define SRV_DEFAULT_MAX_HEADERS      100   /* field lines */
#define SRV_DEFAULT_MAX_HEAD_SIZE    65536 /* whole head incl. every CRLF */
#define SRV_MAX_LEADING_EMPTY_LINES  4     /* CRLFs skipped before a request */
#define SRV_DEFAULT_MAX_TRAILER_SIZE 8190  /* trailer section incl. CRLFs */
#define SRV_DEFAULT_MAX_CHUNK_LINE   4096  /* chunk-size line excluding CRLF */
#define SRV_DEFAULT_MAX_EXT_SIZE     16384 /* chunk extensions, whole body */
#define SRV_TRAILER_NAME_KEPT        20    /* > the longest refused trailer name */

struct srv_header {
    const char *name;  size_t name_len;   /* as sent (case preserved) */
    const char *value; size_t value_len;  /* leading/trailing SP/HTAB removed */
};

struct srv_limits {          /* 0 in a field means the default */
    size_t max_request_line; /* bytes, excluding CRLF; exceeding -> 414 */
    size_t max_header_size;  /* one field line, excluding CRLF; -> 431 */
    size_t max_headers;      /* field lines; exceeding -> 431 */
    size_t max_head_size;    /* whole head incl. CRLFs; -> 431 (capped at INT_MAX) */
};

enum srv_target_form {
    SRV_FORM_ORIGIN = 0,     /* "/path?query" */
    SRV_FORM_ABSOLUTE,       /* "http://host/path?query" */
    SRV_FORM_AUTHORITY,      /* "host:port", CONNECT only */
    SRV_FORM_ASTERISK,       /* "*", OPTIONS only */
};

struct srv_request {
    const char *method;  size_t method_len;
    const char *target;  size_t target_len;   /* request-target exactly as sent */
    const char *path;    size_t path_len;     /* origin-form: target up to '?'; other forms: the whole target */
    const char *query;   size_t query_len;    /* after the first '?', without it; NULL if no '?' (none for authority-form) */
    int minor;                                 /* HTTP/1.<minor>: 0 or 1 */
    struct srv_header *headers; size_t nheaders; /* in: array and its capacity; out: fields parsed */
    int64_t content_length;                    /* -1 when absent (always -1 when chunked) */
    unsigned chunked : 1;                      /* Transfer-Encoding: chunked (the only coding accepted) */
    unsigned keep_alive : 1;                   /* after Connection header and version rules */
    unsigned expect_continue : 1;              /* Expect: 100-continue in an HTTP/1.1 request */
    unsigned form : 2;                         /* enum srv_target_form */
    int status;                                /* on error: 400, 414, 431, 501 or 505; else 0 */
    const char *error;                         /* on error: short static reason; else NULL */
};

/* Parses one request head from buf[0..len): returns bytes consumed (leading empty lines + head incl. the final CRLF CRLF), -2 if partial and no limit is exceeded yet (nheaders restored to the capacity so the same req can be reused), -1 on error (status/error set, nheaders restored); lim may be NULL. */
SRV_API int srv_parse_request(const char *buf, size_t len, struct srv_request *req,
                              const struct srv_limits *lim);

/* Incremental chunked body decoder. Init with srv_chunked_init (or memset
 * 0), then optionally set the max_* fields (0 means the default). */
struct srv_chunked {
    size_t max_trailer_size; /* whole trailer section incl. its CRLFs */
    size_t max_chunk_line;   /* one chunk-size line (size + extensions), excl. CRLF */
    size_t max_ext_size;     /* chunk-extension bytes summed over the whole body */
    uint64_t decoded;        /* read-only: body bytes produced so far */
    const char *error;       /* read-only: reason after a -1 */
    /* private */
    uint64_t remaining_;     /* chunk-size, then data bytes still to come */
    size_t line_len_, trailer_len_, ext_len_;
    unsigned char state_, ndigits_;
    unsigned char tname_len_; /* trailer name bytes seen, saturating */
    char tname_[SRV_TRAILER_NAME_KEPT]; /* its start, lowercased */
};

/* Resets st to "expecting the first chunk-size line" with default limits. */
SRV_API void srv_chunked_init(struct srv_chunked *st);

/* Decodes buf[0..*len) in place, consuming all of it up to the end of the body; on return buf[0..*len) holds the body bytes decoded by this call. Returns -2 when more input is needed (all input consumed), -1 on malformed input (st->error set; sticky), or N >= 0 when the body is complete: the last N input bytes, buf[in_len-N .. in_len), follow the body (a pipelined request) and were left in place untouched. */
SRV_API ssize_t srv_chunked_decode(struct srv_chunked *st, char *buf, size_t *len);

#endif
