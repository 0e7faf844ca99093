/* server/frame.c - the response's framing, apart from Python (frame.h).
 *
 * What an app may put in a status line or a header field, and what the
 * server then writes, is decided here so that it can be unit-tested and
 * fuzzed without an interpreter: no field the server sends holds a CR,
 * LF or other control character (no response splitting), the framing
 * fields (Content-Length, Transfer-Encoding, Connection) are the
 * server's alone, and a chunked body's size lines match its chunks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/frame.h"

#define NAME_IS(p, n, lit) ((n) == sizeof(lit) - 1 && strncasecmp((p), (lit), (n)) == 0)

int srv_status_check(const char *s, size_t n)
{
    if (n < 4 || s[3] != ' ' || s[0] < '1' || s[0] > '5' || s[1] < '0' ||
        s[1] > '9' || s[2] < '0' || s[2] > '9')
        return SRV_STATUS_FORM;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 32 || s[i] == 127)
            return SRV_STATUS_CTL;
    return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

/* tchar (RFC 9110 5.6.2): a table, not a strchr per byte of every name */
static const unsigned char token_char[256] = {
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1,
};

/* A Content-Length value: digits only (at most 31 of them, leading
 * zeros included), fitting int64, or -1. */
static int64_t parse_length(const char *val, size_t vl)
{
    char tmp[32], *end;
    long long v;

    if (vl == 0 || vl >= sizeof tmp || val[0] < '0' || val[0] > '9')
        return -1;
    memcpy(tmp, val, vl);
    tmp[vl] = 0;
    errno = 0;
    v = strtoll(tmp, &end, 10);
    return errno || *end || v < 0 ? -1 : v;
}

int srv_field_check(struct srv_head_info *h, const char *name, size_t nl,
                    const char *val, size_t vl)
{
    if (nl == 0)
        return SRV_FIELD_EMPTY_NAME;
    for (size_t j = 0; j < nl; j++)
        if (!token_char[(unsigned char)name[j]])
            return SRV_FIELD_BAD_NAME;
    for (size_t j = 0; j < vl; j++) {
        unsigned char ch = (unsigned char)val[j];
        if ((ch < 32 && ch != '\t') || ch == 127)
            return SRV_FIELD_CTL_VALUE;
    }
    if (NAME_IS(name, nl, "Content-Length")) {
        int64_t v = parse_length(val, vl);
        if (v < 0)
            return SRV_FIELD_BAD_LENGTH;
        if (h->app_cl && v != h->content_length)
            return SRV_FIELD_LENGTH_CONFLICT;
        h->content_length = v;
        h->app_cl = 1;
    } else if (NAME_IS(name, nl, "Connection")) {
        if (vl == 5 && strncasecmp(val, "close", 5) == 0)
            h->close_after = 1;
    } else if (NAME_IS(name, nl, "Transfer-Encoding") || NAME_IS(name, nl, "Keep-Alive") ||
               NAME_IS(name, nl, "Upgrade") || NAME_IS(name, nl, "TE") ||
               NAME_IS(name, nl, "Trailer")) {
        return SRV_FIELD_HOP_BY_HOP;
    }
    return 0;
}

void srv_framing_choose(struct srv_framing *f, int code, int head, int minor,
                        int may_keep, size_t blen, int final)
{
    int has_body = code >= 200 && code != 204 && code != 304;

    f->chunked = 0;
    f->no_body = !has_body || head;
    if (f->content_length < 0 && final && has_body)
        f->content_length = (int64_t)blen; /* the whole body is known */
    if (f->content_length < 0 && has_body) {
        if (minor >= 1)
            f->chunked = 1;
        else
            f->close_after = 1; /* HTTP/1.0: the end of the body is the close */
    }
    if (!may_keep)
        f->close_after = 1;
}

/* ---- the head ----------------------------------------------------------- */

void srv_buf_init(struct srv_buf *b)
{
    b->p = b->local;
    b->len = 0;
    b->cap = sizeof b->local;
}

int srv_buf_grow(struct srv_buf *b, size_t n)
{
    size_t cap = (b->len + n) * 2;
    char *p = malloc(cap);

    if (!p)
        return -1;
    memcpy(p, b->p, b->len);
    if (b->p != b->local)
        free(b->p);
    b->p = p;
    b->cap = cap;
    return 0;
}

void srv_buf_free(struct srv_buf *b)
{
    if (b->p != b->local)
        free(b->p);
    srv_buf_init(b);
}

#define ADD(b, lit) srv_buf_add((b), (lit), sizeof(lit) - 1)

int srv_head_status(struct srv_buf *b, int minor, const char *status, size_t n)
{
    if ((minor ? ADD(b, "HTTP/1.1 ") : ADD(b, "HTTP/1.0 ")) < 0 ||
        srv_buf_add(b, status, n) < 0)
        return -1;
    return ADD(b, "\r\n");
}

int srv_head_field(struct srv_buf *b, const char *name, size_t nl,
                   const char *val, size_t vl, unsigned *seen)
{
    if (NAME_IS(name, nl, "Date"))
        *seen |= SRV_SEEN_DATE;
    else if (NAME_IS(name, nl, "Server"))
        *seen |= SRV_SEEN_SERVER;
    else if (NAME_IS(name, nl, "Connection"))
        return 0;
    else if (NAME_IS(name, nl, "Content-Length")) {
        if (*seen & SRV_SEEN_LENGTH)
            return 0; /* the same value again (srv_field_check) */
        *seen |= SRV_SEEN_LENGTH;
    }
    if (srv_buf_add(b, name, nl) < 0 || ADD(b, ": ") < 0 ||
        srv_buf_add(b, val, vl) < 0)
        return -1;
    return ADD(b, "\r\n");
}

int srv_head_end(struct srv_buf *b, const struct srv_framing *f, int code,
                 int app_cl, int minor, unsigned seen, const char *date)
{
    char tmp[64];

    if (!(seen & SRV_SEEN_DATE) &&
        (ADD(b, "Date: ") < 0 || srv_buf_add(b, date, strlen(date)) < 0 ||
         ADD(b, "\r\n") < 0))
        return -1;
    if (!(seen & SRV_SEEN_SERVER) && ADD(b, "Server: libgreen\r\n") < 0)
        return -1;
    if (!app_cl && f->content_length >= 0 && code >= 200 && code != 204 &&
        code != 304) {
        int k = snprintf(tmp, sizeof tmp, "Content-Length: %lld\r\n",
                         (long long)f->content_length);
        if (srv_buf_add(b, tmp, (size_t)k) < 0)
            return -1;
    }
    if (f->chunked && ADD(b, "Transfer-Encoding: chunked\r\n") < 0)
        return -1;
    if (f->close_after)
        return ADD(b, "Connection: close\r\n\r\n");
    if (minor == 0)
        return ADD(b, "Connection: keep-alive\r\n\r\n");
    return ADD(b, "\r\n");
}

/* ---- the body ----------------------------------------------------------- */

/* The size line of an n-byte chunk ("%zx\r\n", without snprintf's cost
 * on every chunk) into line; returns its length. */
static size_t chunk_line(char *line, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t len = 0;
    int shift = 0;

    while (shift + 4 < (int)(8 * sizeof n) && n >> (shift + 4))
        shift += 4;
    for (; shift >= 0; shift -= 4)
        line[len++] = hex[(n >> shift) & 15];
    line[len++] = '\r';
    line[len++] = '\n';
    return len;
}

int srv_frame_body(int chunked, struct iovec *iov, char *line, const char *p,
                   size_t n)
{
    int cnt = 0;

    if (chunked) {
        iov[cnt].iov_base = line;
        iov[cnt++].iov_len = chunk_line(line, n);
    }
    iov[cnt].iov_base = (void *)p;
    iov[cnt++].iov_len = n;
    if (chunked) {
        iov[cnt].iov_base = (void *)"\r\n";
        iov[cnt++].iov_len = 2;
    }
    return cnt;
}
