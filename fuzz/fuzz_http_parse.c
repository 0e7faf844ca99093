/* fuzz/fuzz_http_parse.c - libFuzzer driver for server/http_parse.c.
 *
 * Each input is parsed as a request head (in an exact-size heap copy, so
 * ASan sees any over-read), with the default limits and with tiny ones.
 * The result is checked against the contract: consumed <= len, every
 * pointer inside the head, headers well-formed, strict prefixes partial.
 * If the head says chunked, the rest of the input is decoded as its body;
 * if it is not a head at all, the whole input is decoded as a chunked body
 * (so the decoder gets fuzzed directly too). Each decoding is repeated
 * split in two and byte by byte, and all must agree. The strictness rules
 * are checked by code written apart from the parser's: no singleton field
 * twice in an accepted head, only CONNECT with authority-form, only
 * http(s) with a host and no userinfo in absolute-form, and no framing,
 * routing or credential field in the trailers of an accepted body.
 *
 * Run: scripts/fuzz http_parse
 */
#include "fuzz/fuzz.h"
#include "server/http_parse.h"

#define NHDR 128

static int in(const char *p, size_t n, const char *lo, const char *hi)
{
    return p >= lo && p <= hi && n <= (size_t)(hi - p);
}

/* Fields an accepted head carries at most once (http_parse.c's
 * semantic_field says why). */
static const char *const singletons[] = {
    "host", "content-length", "content-type", "authorization",
    "proxy-authorization", "range", "if-range", "content-range",
    "if-modified-since", "if-unmodified-since", "max-forwards", "origin",
    "referer",
};

static void check_target_form(const struct srv_request *req)
{
    const char *t = req->target;
    size_t n = req->target_len;
    int connect = req->method_len == 7 && memcmp(req->method, "CONNECT", 7) == 0;

    ASSERT(connect == (req->form == SRV_FORM_AUTHORITY));
    if (req->form == SRV_FORM_AUTHORITY) {
        ASSERT(t[0] != ':' && t[n - 1] >= '0' && t[n - 1] <= '9');
        ASSERT(!memchr(t, '@', n) && !memchr(t, '/', n) && !memchr(t, '?', n));
    }
    if (req->form == SRV_FORM_ABSOLUTE) {
        size_t s = n >= 7 && strncasecmp(t, "http://", 7) == 0 ? 7 :
                   n >= 8 && strncasecmp(t, "https://", 8) == 0 ? 8 : 0;
        ASSERT(s);
        size_t a = s;
        while (a < n && t[a] != '/' && t[a] != '?')
            a++;
        ASSERT(a > s && t[s] != ':' && !memchr(t + s, '@', a - s));
    }
}

static void check_singletons(const struct srv_request *req)
{
    for (size_t k = 0; k < COUNT(singletons); k++) {
        int seen = 0;
        for (size_t i = 0; i < req->nheaders; i++)
            seen += fuzz_name_is(req->headers[i].name, req->headers[i].name_len, singletons[k]);
        ASSERT(seen <= 1);
    }
}

static int parse(const char *buf, size_t len, struct srv_request *req,
                 struct srv_header *h, const struct srv_limits *lim)
{
    memset(req, 0, sizeof *req);
    req->headers = h;
    req->nheaders = NHDR;
    return srv_parse_request(buf, len, req, lim);
}

static void check_head(const char *buf, size_t len, const struct srv_limits *lim)
{
    struct srv_header h[NHDR];
    struct srv_request req;
    int r = parse(buf, len, &req, h, lim);

    ASSERT(r == -2 || r == -1 || (r > 0 && (size_t)r <= len));
    if (r == -2) {
        ASSERT(req.status == 0 && req.error == NULL && req.nheaders == NHDR);
        return;
    }
    if (r == -1) {
        ASSERT(req.status == 400 || req.status == 414 || req.status == 431 ||
               req.status == 501 || req.status == 505);
        ASSERT(req.error && req.error[0]);
        ASSERT(req.nheaders == NHDR);
        return;
    }
    const char *end = buf + r;
    ASSERT(r >= 16); /* "M / HTTP/1.0\r\n\r\n" */
    ASSERT(memcmp(end - 4, "\r\n\r\n", 4) == 0);
    ASSERT(req.status == 0 && req.error == NULL);
    ASSERT(req.method_len > 0 && in(req.method, req.method_len, buf, end));
    for (size_t i = 0; i < req.method_len; i++)
        ASSERT(fuzz_tchar((unsigned char)req.method[i]));
    ASSERT(req.target_len > 0 && in(req.target, req.target_len, buf, end));
    ASSERT(req.target == req.method + req.method_len + 1);
    for (size_t i = 0; i < req.target_len; i++)
        ASSERT((unsigned char)req.target[i] > 0x20 && req.target[i] != 0x7f);
    ASSERT(in(req.path, req.path_len, req.target, req.target + req.target_len));
    ASSERT(req.path == req.target && req.path_len > 0);
    if (req.query) {
        ASSERT(in(req.query, req.query_len, req.target, req.target + req.target_len));
        ASSERT(req.query[-1] == '?');
        ASSERT(req.query + req.query_len == req.target + req.target_len);
        if (req.form == SRV_FORM_ORIGIN)
            ASSERT(req.path + req.path_len == req.query - 1);
    } else {
        ASSERT(req.path_len == req.target_len);
    }
    ASSERT(req.form != SRV_FORM_ORIGIN || req.target[0] == '/');
    ASSERT(req.form != SRV_FORM_ASTERISK || req.target_len == 1);
    ASSERT(req.minor == 0 || req.minor == 1);
    ASSERT(req.nheaders <= NHDR);
    const char *prev = req.target + req.target_len;
    for (size_t i = 0; i < req.nheaders; i++) {
        const struct srv_header *f = &req.headers[i];
        ASSERT(f->name_len > 0 && in(f->name, f->name_len, buf, end));
        ASSERT(f->name > prev);
        ASSERT(in(f->value, f->value_len, f->name + f->name_len + 1, end));
        ASSERT(f->name[f->name_len] == ':');
        for (size_t k = 0; k < f->name_len; k++)
            ASSERT(fuzz_tchar((unsigned char)f->name[k]));
        for (size_t k = 0; k < f->value_len; k++)
            ASSERT(fuzz_value_byte((unsigned char)f->value[k]));
        if (f->value_len) {
            ASSERT(f->value[0] != ' ' && f->value[0] != '\t');
            ASSERT(f->value[f->value_len - 1] != ' ' && f->value[f->value_len - 1] != '\t');
        }
        prev = f->value + f->value_len;
    }
    check_target_form(&req);
    check_singletons(&req);
    ASSERT(req.content_length >= -1);
    ASSERT(!(req.chunked && req.content_length != -1));
    ASSERT(!req.chunked || req.minor == 1);
    ASSERT(!req.expect_continue || req.minor == 1);

    /* Strict prefixes of a complete head are partial; extra bytes after it
     * change nothing. */
    struct srv_request r2;
    struct srv_header h2[NHDR];
    ASSERT(parse(buf, (size_t)r - 1, &r2, h2, lim) == -2);
    ASSERT(parse(buf, (size_t)r / 2, &r2, h2, lim) == -2);
    ASSERT(parse(buf, (size_t)r, &r2, h2, lim) == r);
    ASSERT(r2.nheaders == req.nheaders && r2.content_length == req.content_length &&
           r2.chunked == req.chunked && r2.keep_alive == req.keep_alive);
}

/* ---- chunked ----------------------------------------------------------- */

struct outcome {
    ssize_t ret;       /* -2, -1, or bytes left over */
    size_t outlen;
    const char *error;
    uint64_t decoded;
};

/* Decodes src[0..n) fed in pieces of `step` bytes (0: one piece) into out. */
static void decode(const char *src, size_t n, size_t step, size_t first,
                   const struct srv_chunked *proto, char *out, struct outcome *oc)
{
    struct srv_chunked st = *proto;
    oc->ret = -2;
    oc->outlen = 0;
    oc->error = NULL;
    size_t off = 0;
    while (off < n || off == 0) {
        size_t piece = n - off;
        if (off == 0 && first && first < piece)
            piece = first;
        else if (off && step && step < piece)
            piece = step;
        char *b = fuzz_copy(src + off, piece);
        size_t len = piece;
        ssize_t r = srv_chunked_decode(&st, b, &len);
        ASSERT(r >= -2 && len <= piece);
        ASSERT(r < 0 || (size_t)r <= piece);
        ASSERT(r < 0 || len + (size_t)r <= piece);
        if (r >= 0) {
            /* the left-over bytes stayed in place, untouched */
            ASSERT(memcmp(b + piece - r, src + off + piece - r, (size_t)r) == 0);
        }
        memcpy(out + oc->outlen, b, len);
        oc->outlen += len;
        free(b);
        off += piece;
        if (r >= 0) {
            oc->ret = r + (ssize_t)(n - off);
            break;
        }
        if (r == -1) {
            oc->ret = -1;
            oc->error = st.error;
            ASSERT(st.error && st.error[0]);
            break;
        }
        if (n == 0)
            break;
    }
    oc->decoded = st.decoded;
    ASSERT(oc->decoded == oc->outlen);
    if (oc->ret != -2) {
        /* done stays done (input all left over), an error stays an error */
        char more[3] = "GET";
        size_t len = sizeof more;
        ssize_t r = srv_chunked_decode(&st, more, &len);
        ASSERT(len == 0 && r == (oc->ret == -1 ? -1 : (ssize_t)sizeof more));
    }
}

/* src[0..n) was accepted as a whole chunked body: walk it without any
 * validation (it is well-formed) to its trailer section and check that no
 * trailer there is one that must be refused. */
static void check_accepted_trailers(const char *src, size_t n)
{
    const char *p = src, *e = src + n;
    for (;;) {
        uint64_t size = 0;
        for (; *p != ';' && *p != '\r'; p++)
            size = size * 16 + (uint64_t)(*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
        p = memchr(p, '\n', (size_t)(e - p));
        ASSERT(p);
        p++;
        if (size == 0)
            break;
        ASSERT(size + 2 <= (uint64_t)(e - p));
        p += size + 2;
    }
    while (*p != '\r') {
        const char *colon = memchr(p, ':', (size_t)(e - p));
        ASSERT(colon);
        ASSERT(!fuzz_refused_trailer(p, (size_t)(colon - p)));
        p = memchr(colon, '\n', (size_t)(e - colon));
        ASSERT(p);
        p++;
    }
    ASSERT(e - p == 2 && p[1] == '\n');
}

static void check_chunked(const char *src, size_t n, const struct srv_chunked *proto)
{
    char *o1 = malloc(n + 1), *o2 = malloc(n + 1);
    struct outcome a, b;

    decode(src, n, 0, 0, proto, o1, &a);
    ASSERT(a.outlen <= n);
    if (a.ret >= 0) {
        ASSERT((size_t)a.ret < n && a.outlen + (size_t)a.ret + 5 <= n); /* "0\r\n\r\n" */
        check_accepted_trailers(src, n - (size_t)a.ret);
    }

    /* split in two, at a point that depends on the input */
    size_t cut = n ? (size_t)(unsigned char)src[n / 2] % (n + 1) : 0;
    decode(src, n, 0, cut, proto, o2, &b);
    ASSERT(a.ret == b.ret && a.error == b.error && a.outlen == b.outlen);
    ASSERT(memcmp(o1, o2, a.outlen) == 0);

    /* byte by byte (bounded, it is quadratic in mallocs only) */
    if (n <= 4096) {
        decode(src, n, 1, 1, proto, o2, &b);
        ASSERT(a.ret == b.ret && a.error == b.error && a.outlen == b.outlen);
        ASSERT(memcmp(o1, o2, a.outlen) == 0);
    }
    free(o1);
    free(o2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exact-size copy: reading buf[size] is a heap overflow ASan reports. */
    char *buf = fuzz_copy(data, size);

    static const struct srv_limits tiny = {
        .max_request_line = 40, .max_header_size = 24, .max_headers = 4,
        .max_head_size = 128,
    };
    check_head(buf, size, &tiny);
    check_head(buf, size, NULL);

    struct srv_header h[NHDR];
    struct srv_request req;
    int r = parse(buf, size, &req, h, NULL);

    struct srv_chunked proto;
    srv_chunked_init(&proto);
    if (r > 0 && req.chunked) {
        check_chunked(buf + r, size - (size_t)r, &proto);
    } else if (r < 0) {
        check_chunked(buf, size, &proto);
        proto.max_trailer_size = 16;
        proto.max_chunk_line = 24;
        proto.max_ext_size = 10;
        check_chunked(buf, size, &proto);
    }
    free(buf);
    return 0;
}
