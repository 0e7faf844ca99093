/* tests/server/test_frame.c - unit tests of server/frame.c, the response
 * framing: what a status and a header field may hold, how the body
 * travels, the head's bytes and the chunk framing.
 *
 * The tests named after a fuzz/corpus/frame/ seed are the regression
 * tests of what fuzz/fuzz_frame.c found.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"
#include "server/frame.h"
#include "server/http_parse.h"

#define DATE "Tue, 01 Dec 2026 05:45:00 GMT"

static int status(const char *s)
{
    return srv_status_check(s, strlen(s));
}

/* srv_field_check on C strings, with a NUL-free name and value. */
static int field(struct srv_head_info *h, const char *name, const char *val)
{
    return srv_field_check(h, name, strlen(name), val, strlen(val));
}

TEST(status_line)
{
    CHECK(status("200 OK") == 200);
    CHECK(status("599 x") == 599);
    CHECK(status("100 ") == 100);
    CHECK(status("404 Not Found \x80\xff") == 404); /* obs-text in the reason */
    CHECK(status("200") == SRV_STATUS_FORM);
    CHECK(status("200OK") == SRV_STATUS_FORM);
    CHECK(status("600 Nope") == SRV_STATUS_FORM);
    CHECK(status("099 x") == SRV_STATUS_FORM);
    CHECK(status("2OO OK") == SRV_STATUS_FORM);
    CHECK(status("200 OK\r\nX: y") == SRV_STATUS_CTL);
    CHECK(status("200 OK\n") == SRV_STATUS_CTL);
    CHECK(status("200 O\x7fK") == SRV_STATUS_CTL);
    CHECK(srv_status_check("200 O\0K", 7) == SRV_STATUS_CTL);
}

TEST(field_refusals)
{
    struct srv_head_info h = {-1, 0, 0};

    CHECK(field(&h, "X-A", "a\tb \x80\xff") == 0);
    CHECK(field(&h, "X-A", "a\r\nSet-Cookie: x=1") == SRV_FIELD_CTL_VALUE);
    CHECK(field(&h, "X-A", "a\nb") == SRV_FIELD_CTL_VALUE);
    CHECK(field(&h, "X-A", "a\rb") == SRV_FIELD_CTL_VALUE);
    CHECK(srv_field_check(&h, "X-A", 3, "a\0b", 3) == SRV_FIELD_CTL_VALUE);
    CHECK(field(&h, "X-A", "a\x7f") == SRV_FIELD_CTL_VALUE);
    CHECK(field(&h, "", "v") == SRV_FIELD_EMPTY_NAME);
    CHECK(field(&h, "X A", "v") == SRV_FIELD_BAD_NAME);
    CHECK(field(&h, "X:A", "v") == SRV_FIELD_BAD_NAME);
    CHECK(field(&h, "X-A\r\n", "v") == SRV_FIELD_BAD_NAME);
    CHECK(field(&h, "X\x80", "v") == SRV_FIELD_BAD_NAME);
    CHECK(field(&h, "Transfer-Encoding", "chunked") == SRV_FIELD_HOP_BY_HOP);
    CHECK(field(&h, "keep-alive", "timeout=5") == SRV_FIELD_HOP_BY_HOP);
    CHECK(field(&h, "UPGRADE", "websocket") == SRV_FIELD_HOP_BY_HOP);
    CHECK(field(&h, "te", "trailers") == SRV_FIELD_HOP_BY_HOP);
    CHECK(field(&h, "Trailer", "X") == SRV_FIELD_HOP_BY_HOP);
    CHECK(h.content_length == -1 && !h.app_cl && !h.close_after);
}

TEST(content_length)
{
    struct srv_head_info h = {-1, 0, 0};

    CHECK(field(&h, "content-LENGTH", "42") == 0);
    CHECK(h.content_length == 42 && h.app_cl);
    h = (struct srv_head_info){-1, 0, 0};
    CHECK(field(&h, "Content-Length", "9223372036854775807") == 0);
    CHECK(h.content_length == INT64_MAX);
    h = (struct srv_head_info){-1, 0, 0};
    CHECK(field(&h, "Content-Length", "9223372036854775808") == SRV_FIELD_BAD_LENGTH);
    CHECK(field(&h, "Content-Length", "-1") == SRV_FIELD_BAD_LENGTH);
    CHECK(field(&h, "Content-Length", "+1") == SRV_FIELD_BAD_LENGTH);
    CHECK(field(&h, "Content-Length", " 1") == SRV_FIELD_BAD_LENGTH);
    CHECK(field(&h, "Content-Length", "1 ") == SRV_FIELD_BAD_LENGTH);
    CHECK(field(&h, "Content-Length", "") == SRV_FIELD_BAD_LENGTH);
    CHECK(field(&h, "Content-Length", "0x10") == SRV_FIELD_BAD_LENGTH);
    CHECK(h.content_length == -1 && !h.app_cl);
}

/* fuzz/corpus/frame/cl_leading_zeros: leading zeros are digits like any,
 * up to the 31 characters frame.c reads. */
TEST(cl_leading_zeros)
{
    struct srv_head_info h = {-1, 0, 0};

    CHECK(field(&h, "Content-Length", "000000000000000000006404808") == 0);
    CHECK(h.content_length == 6404808);
    h = (struct srv_head_info){-1, 0, 0};
    CHECK(field(&h, "Content-Length", "0000000000000000000000000000005") == 0);
    CHECK(field(&h, "Content-Length", "00000000000000000000000000000005") ==
          SRV_FIELD_BAD_LENGTH);
}

/* Writes a whole head for the fields names[i]: vals[i] (n of them). */
static int head(struct srv_buf *b, const struct srv_framing *f, int code,
                int minor, const char *st, const char *const *names,
                const char *const *vals, size_t n)
{
    struct srv_head_info h = {-1, 0, 0};
    unsigned seen = 0;

    srv_buf_init(b);
    for (size_t i = 0; i < n; i++)
        if (field(&h, names[i], vals[i]))
            return -1;
    if (srv_head_status(b, minor, st, strlen(st)) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (srv_head_field(b, names[i], strlen(names[i]), vals[i],
                           strlen(vals[i]), &seen) < 0)
            return -1;
    if (srv_head_end(b, f, code, h.app_cl, minor, seen, DATE) < 0)
        return -1;
    if (srv_buf_grow(b, 1) < 0) /* room for the NUL the checks read to */
        return -1;
    b->p[b->len] = 0;
    return 0;
}

/* fuzz/corpus/frame/crash_cl_conflict: two Content-Lengths of different
 * values went out as given; a client could frame the body by either. */
TEST(crash_cl_conflict)
{
    struct srv_head_info h = {-1, 0, 0};

    CHECK(field(&h, "Content-Length", "4") == 0);
    CHECK(field(&h, "content-length", "5") == SRV_FIELD_LENGTH_CONFLICT);
    CHECK(h.content_length == 4);
    CHECK(field(&h, "Content-Length", "004") == 0);
    CHECK(h.content_length == 4);
}

TEST(cl_repeated_sent_once)
{
    static const char *const names[] = {"Content-Length", "X-A", "content-length"};
    static const char *const vals[] = {"5", "1", "05"};
    struct srv_framing f = {5, 0, 0, 0};
    struct srv_buf b;

    srv_framing_choose(&f, 200, 0, 1, 1, 5, 0);
    CHECK(head(&b, &f, 200, 1, "200 OK", names, vals, 3) == 0);
    CHECK(strcmp(b.p, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n"
                      "Date: " DATE "\r\nServer: libgreen\r\n\r\n") == 0);
    srv_buf_free(&b);
}

TEST(framing_choices)
{
    struct srv_framing f;

#define CHOOSE(cl, close, code, hd, minor, keep, blen, final)                 \
    (f = (struct srv_framing){(cl), 0, (close), 0},                           \
     srv_framing_choose(&f, (code), (hd), (minor), (keep), (blen), (final)))

    CHOOSE(-1, 0, 200, 0, 1, 1, 5, 0); /* a stream: chunked */
    CHECK(f.chunked && f.content_length == -1 && !f.close_after && !f.no_body);
    CHOOSE(-1, 0, 200, 0, 1, 1, 5, 1); /* the whole body: its length */
    CHECK(!f.chunked && f.content_length == 5 && !f.close_after);
    CHOOSE(-1, 0, 200, 0, 0, 1, 5, 0); /* HTTP/1.0 stream: the close */
    CHECK(!f.chunked && f.content_length == -1 && f.close_after);
    CHOOSE(7, 0, 200, 0, 1, 1, 5, 0); /* the app's length */
    CHECK(!f.chunked && f.content_length == 7 && !f.close_after);
    CHOOSE(-1, 0, 200, 1, 1, 1, 5, 0); /* HEAD */
    CHECK(f.no_body && f.chunked); /* says how a GET would have come */
    CHOOSE(-1, 0, 204, 0, 1, 1, 0, 1);
    CHECK(f.no_body && !f.chunked && f.content_length == -1 && !f.close_after);
    CHOOSE(-1, 0, 304, 0, 1, 1, 0, 0);
    CHECK(f.no_body && !f.chunked && !f.close_after);
    CHOOSE(-1, 0, 103, 0, 1, 1, 0, 0);
    CHECK(f.no_body && !f.chunked);
    CHOOSE(-1, 1, 200, 0, 1, 1, 5, 1); /* Connection: close from the app */
    CHECK(f.close_after && f.content_length == 5);
    CHOOSE(-1, 0, 200, 0, 1, 0, 5, 1); /* no keep-alive */
    CHECK(f.close_after);
#undef CHOOSE
}

TEST(head_bytes)
{
    static const char *const names[] = {"Content-Type", "Connection", "Date",
                                        "Server"};
    static const char *const vals[] = {"text/plain", "close", "x", "app"};
    struct srv_framing f = {-1, 0, 0, 0};
    struct srv_buf b;

    srv_framing_choose(&f, 200, 0, 1, 1, 3, 0);
    CHECK(head(&b, &f, 200, 1, "200 OK", names, vals, 1) == 0);
    CHECK(strcmp(b.p, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: "
                      DATE "\r\nServer: libgreen\r\nTransfer-Encoding: "
                      "chunked\r\n\r\n") == 0);
    srv_buf_free(&b);

    /* the app's Connection is the server's to say; its Date and Server win */
    f = (struct srv_framing){-1, 0, 1, 0};
    srv_framing_choose(&f, 200, 0, 0, 1, 3, 1);
    CHECK(head(&b, &f, 200, 0, "200 OK", names, vals, 4) == 0);
    CHECK(strcmp(b.p, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nDate: x\r\n"
                      "Server: app\r\nContent-Length: 3\r\nConnection: close\r\n\r\n") == 0);
    srv_buf_free(&b);

    /* HTTP/1.0 keep-alive is said; 304 gets no computed length */
    f = (struct srv_framing){-1, 0, 0, 0};
    srv_framing_choose(&f, 304, 0, 0, 1, 0, 1);
    CHECK(head(&b, &f, 304, 0, "304 Not Modified", names, vals, 0) == 0);
    CHECK(strcmp(b.p, "HTTP/1.0 304 Not Modified\r\nDate: " DATE "\r\nServer: "
                      "libgreen\r\nConnection: keep-alive\r\n\r\n") == 0);
    srv_buf_free(&b);
}

TEST(head_grows_past_local)
{
    struct srv_buf b;
    char val[5000];
    unsigned seen = 0;

    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = 0;
    srv_buf_init(&b);
    CHECK(srv_head_status(&b, 1, "200 OK", 6) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(srv_head_field(&b, "X-Big", 5, val, strlen(val), &seen) == 0);
    CHECK(b.len == 17 + 3 * (7 + 4999 + 2) && b.p != b.local);
    CHECK(memcmp(b.p + 17 + 2 * 5008, "X-Big: vvv", 10) == 0);
    srv_buf_free(&b);
    CHECK(b.p == b.local && b.len == 0);
}

/* The chunk around n bytes, decoded back with the server's own decoder. */
static int chunk_round_trip(size_t n)
{
    char *data = malloc(n + 1), *wire = malloc(n + SRV_CHUNK_LINE + 8);
    char line[SRV_CHUNK_LINE];
    struct iovec iov[3];
    struct srv_chunked st;
    size_t len = 0;
    int ok;

    memset(data, 'x', n);
    int cnt = srv_frame_body(1, iov, line, data, n);
    for (int i = 0; i < cnt; i++) {
        memcpy(wire + len, iov[i].iov_base, iov[i].iov_len);
        len += iov[i].iov_len;
    }
    memcpy(wire + len, SRV_LAST_CHUNK, 5);
    len += 5;
    srv_chunked_init(&st);
    ok = cnt == 3 && srv_chunked_decode(&st, wire, &len) == 0 && len == n &&
         memcmp(wire, data, n) == 0;
    free(data);
    free(wire);
    return ok;
}

TEST(chunk_framing)
{
    char line[SRV_CHUNK_LINE];
    struct iovec iov[3];

    CHECK(srv_frame_body(0, iov, line, "abc", 3) == 1 && iov[0].iov_len == 3);
    CHECK(srv_frame_body(1, iov, line, "abc", 3) == 3);
    CHECK(iov[0].iov_len == 3 && memcmp(line, "3\r\n", 3) == 0);
    CHECK(iov[2].iov_len == 2 && memcmp(iov[2].iov_base, "\r\n", 2) == 0);
    srv_frame_body(1, iov, line, "", SIZE_MAX);
    CHECK(iov[0].iov_len == 18 && memcmp(line, "ffffffffffffffff\r\n", 18) == 0);
    srv_frame_body(1, iov, line, "", 0x10);
    CHECK(iov[0].iov_len == 4 && memcmp(line, "10\r\n", 4) == 0);
    static const size_t sizes[] = {1, 15, 16, 255, 256, 4095, 4096, 65537};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        CHECK(chunk_round_trip(sizes[i]));
}

int main(void)
{
    RUN(status_line);
    RUN(field_refusals);
    RUN(content_length);
    RUN(cl_leading_zeros);
    RUN(crash_cl_conflict);
    RUN(cl_repeated_sent_once);
    RUN(framing_choices);
    RUN(head_bytes);
    RUN(head_grows_past_local);
    RUN(chunk_framing);
    return CHECK_DONE();
}
