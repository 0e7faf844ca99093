/* fuzz/fuzz_frame.c - libFuzzer driver for the response framing
 * (server/frame.c): what start_response accepts, the head the server
 * writes, and the framing of the body pieces.
 *
 * Input: byte 0 holds the request and the app's habits (bit 0 HTTP/1.1,
 * bit 1 HEAD, bit 2 keep-alive allowed, bit 3 the body is one list item,
 * so its length is known up front); the rest is split at 0xFF into the
 * status, then header names and values in turn, then the body, which
 * 0xFE splits into the pieces the app yields.
 *
 * The harness drives frame.c as server/response.c does and checks what
 * comes out with code of its own: a status or field is accepted exactly
 * when RFC 9110's grammar and the hop-by-hop rule say so; the head is
 * CRLF-delimited lines with no bare CR or LF, no control character in any
 * field, one status line of the request's version; the body is framed by
 * exactly one of Content-Length, chunked or the close, its Content-Length
 * is the one field of that name, and what the client reads (the chunks
 * decoded with the server's own chunked decoder) is what the app gave.
 *
 * Run: scripts/fuzz frame
 */
#include "fuzz/fuzz.h"
#include "server/frame.h"
#include "server/http_parse.h"

#define MAXF 64
#define DATE "Tue, 01 Dec 2026 05:45:00 GMT"

struct part {
    const char *p;
    size_t n;
};

/* ---- the rules, written apart from frame.c ----------------------------- */

static int ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static int is(const struct part *f, const char *lit)
{
    return fuzz_name_is(f->p, f->n, lit);
}

static int expect_status(const struct part *s)
{
    if (s->n < 4 || s->p[3] != ' ')
        return 0;
    for (int i = 0; i < 3; i++)
        if (s->p[i] < '0' || s->p[i] > '9')
            return 0;
    if (s->p[0] < '1' || s->p[0] > '5')
        return 0;
    for (size_t i = 0; i < s->n; i++)
        if (ctl((unsigned char)s->p[i]))
            return 0;
    return 1;
}

/* prev_cl: the Content-Length accepted before, or -1 */
static int expect_field(const struct part *name, const struct part *val,
                        int64_t prev_cl)
{
    if (!name->n)
        return 0;
    for (size_t i = 0; i < name->n; i++)
        if (!fuzz_tchar((unsigned char)name->p[i]))
            return 0;
    for (size_t i = 0; i < val->n; i++)
        if (!fuzz_value_byte((unsigned char)val->p[i]))
            return 0;
    static const char *const hop[] = {"transfer-encoding", "keep-alive",
                                      "upgrade", "te", "trailer"};
    for (size_t i = 0; i < COUNT(hop); i++)
        if (is(name, hop[i]))
            return 0;
    if (is(name, "content-length")) {
        /* 1*DIGIT up to INT64_MAX, in at most 31 characters (frame.c) */
        if (!val->n || val->n > 31)
            return 0;
        size_t z = 0;
        for (size_t i = 0; i < val->n; i++)
            if (val->p[i] < '0' || val->p[i] > '9')
                return 0;
        while (z < val->n - 1 && val->p[z] == '0')
            z++;
        if (val->n - z > 19 ||
            (val->n - z == 19 && memcmp(val->p + z, "9223372036854775807", 19) > 0))
            return 0;
        int64_t v = 0;
        for (size_t i = z; i < val->n; i++)
            v = v * 10 + (val->p[i] - '0');
        if (prev_cl >= 0 && v != prev_cl)
            return 0;
    }
    return 1;
}

/* ---- reading the head back --------------------------------------------- */

struct seen {
    int code, minor;
    int n_cl, n_te, n_conn, n_date, n_server;
    int64_t cl;
    int close;
};

/* Reads head[0..n) as a client would, strictly; fills s. */
static void read_head(const char *head, size_t n, struct seen *s)
{
    memset(s, 0, sizeof *s);
    ASSERT(n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0);
    for (size_t i = 0; i < n; i++) { /* CR and LF only as CRLF */
        if (head[i] == '\r')
            ASSERT(i + 1 < n && head[i + 1] == '\n');
        if (head[i] == '\n')
            ASSERT(i > 0 && head[i - 1] == '\r');
    }
    ASSERT(memcmp(head, "HTTP/1.", 7) == 0 && (head[7] == '0' || head[7] == '1'));
    s->minor = head[7] - '0';
    ASSERT(head[8] == ' ');
    s->code = atoi(head + 9);
    const char *p = memchr(head, '\n', n) + 1, *end = head + n - 2;
    for (const char *q = head; q < p - 2; q++)
        ASSERT(!ctl((unsigned char)*q));
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        ASSERT(colon && colon > p && colon[1] == ' ');
        struct part name = {p, (size_t)(colon - p)};
        struct part val = {colon + 2, (size_t)(eol - colon - 2)};
        for (size_t i = 0; i < name.n; i++)
            ASSERT(fuzz_tchar((unsigned char)name.p[i]));
        for (size_t i = 0; i < val.n; i++)
            ASSERT(fuzz_value_byte((unsigned char)val.p[i]));
        if (is(&name, "content-length")) {
            s->n_cl++;
            s->cl = strtoll(val.p, NULL, 10);
        } else if (is(&name, "transfer-encoding")) {
            s->n_te++;
            ASSERT(is(&val, "chunked"));
        } else if (is(&name, "connection")) {
            s->n_conn++;
            s->close = is(&val, "close");
            ASSERT(s->close || is(&val, "keep-alive"));
        } else if (is(&name, "date")) {
            s->n_date++;
        } else if (is(&name, "server")) {
            s->n_server++;
        }
        p = eol + 2;
    }
}

/* ---- the response -------------------------------------------------------- */

struct wire {
    char *p;
    size_t len, cap;
};

static void put(struct wire *w, const void *p, size_t n)
{
    if (w->len + n > w->cap) {
        w->cap = (w->len + n) * 2;
        w->p = realloc(w->p, w->cap);
    }
    if (n)
        memcpy(w->p + w->len, p, n);
    w->len += n;
}

static void put_piece(struct wire *w, int chunked, const struct part *b)
{
    struct iovec iov[3];
    char line[SRV_CHUNK_LINE];
    int cnt = srv_frame_body(chunked, iov, line, b->p, b->n);

    ASSERT(cnt == (chunked ? 3 : 1));
    for (int i = 0; i < cnt; i++)
        put(w, iov[i].iov_base, iov[i].iov_len);
}

/* The body as the client reads it, checked against what the app gave. */
static void check_body(const struct wire *w, size_t off, const struct seen *s,
                       const struct srv_framing *f, const char *app, size_t alen)
{
    const char *b = w->p + off;
    size_t n = w->len - off;

    if (f->no_body) {
        ASSERT(n == 0);
        return;
    }
    if (s->n_te) {
        struct srv_chunked st;
        char *copy = fuzz_copy(b, n);
        size_t len = n;
        srv_chunked_init(&st);
        ASSERT(srv_chunked_decode(&st, copy, &len) == 0);
        ASSERT(len == alen && memcmp(copy, app, alen) == 0);
        free(copy);
        return;
    }
    ASSERT(n <= alen && memcmp(b, app, n) == 0);
    if (s->n_cl)
        ASSERT(n == (uint64_t)s->cl || s->close);
    else
        ASSERT(n == alen && s->close);
}

/* One input, taken apart. */
struct resp {
    int minor, head, may_keep, one_item;
    struct part status;
    struct part names[MAXF], vals[MAXF];
    size_t nh;
    struct part pieces[64];
    size_t np, first;       /* first: the first non-empty piece, or np */
};

static void take_apart(const uint8_t *data, size_t size, struct resp *r)
{
    struct part f[2 * MAXF + 2], body = {"", 0};
    size_t nf = 0;
    const char *p = (const char *)data + 1, *e = (const char *)data + size;

    r->minor = data[0] & 1;
    r->head = data[0] >> 1 & 1;
    r->may_keep = data[0] >> 2 & 1;
    r->one_item = data[0] >> 3 & 1;
    for (;;) { /* status, name, value, ..., body */
        const char *sep = memchr(p, 0xff, (size_t)(e - p));
        if (nf == sizeof f / sizeof f[0] - 1)
            sep = NULL;
        f[nf].p = p;
        f[nf++].n = (size_t)((sep ? sep : e) - p);
        if (!sep)
            break;
        p = sep + 1;
    }
    if (nf >= 2)
        body = f[--nf];
    r->status = f[0];
    r->nh = nf / 2;
    for (size_t i = 0; i < r->nh; i++) {
        r->names[i] = f[1 + 2 * i];
        r->vals[i] = 2 + 2 * i < nf ? f[2 + 2 * i] : (struct part){"", 0};
    }
    r->np = 0;
    for (const char *q = body.p, *be = body.p + body.n;;) {
        const char *sep = r->one_item ? NULL : memchr(q, 0xfe, (size_t)(be - q));
        if (r->np == 63)
            sep = NULL;
        r->pieces[r->np].p = q;
        r->pieces[r->np++].n = (size_t)((sep ? sep : be) - q);
        if (!sep)
            break;
        q = sep + 1;
    }
    for (r->first = 0; r->first < r->np && !r->pieces[r->first].n; r->first++)
        ;
}

/* start_response: frame.c's verdicts against the harness's own; the
 * code, or 0 if the call is refused. */
static int check_start(const struct resp *r, struct srv_head_info *h)
{
    int code = srv_status_check(r->status.p, r->status.n);

    ASSERT((code >= 100 && code <= 599) == expect_status(&r->status));
    *h = (struct srv_head_info){-1, 0, 0};
    for (size_t i = 0; code > 0 && i < r->nh; i++) {
        struct srv_head_info before = *h;
        int v = srv_field_check(h, r->names[i].p, r->names[i].n, r->vals[i].p,
                                r->vals[i].n);
        ASSERT((v == 0) == expect_field(&r->names[i], &r->vals[i],
                                        h->app_cl ? h->content_length : -1));
        if (v) {
            ASSERT(memcmp(&before, h, sizeof *h) == 0);
            return 0;
        }
    }
    return code > 0 ? code : 0;
}

/* The head as response.c writes it, read back. */
static void write_head(const struct resp *r, int code, const struct srv_head_info *h,
                       struct srv_framing *fr, struct srv_buf *b, struct seen *s)
{
    unsigned seen = 0;

    *fr = (struct srv_framing){.content_length = h->content_length,
                               .close_after = h->close_after};
    srv_framing_choose(fr, code, r->head, r->minor, r->may_keep,
                       r->first < r->np ? r->pieces[r->first].n : 0,
                       r->one_item || r->first == r->np);
    ASSERT(!(fr->chunked && fr->content_length >= 0));
    ASSERT(!fr->chunked || r->minor == 1);
    srv_buf_init(b);
    ASSERT(srv_head_status(b, r->minor, r->status.p, r->status.n) == 0);
    for (size_t i = 0; i < r->nh; i++)
        ASSERT(srv_head_field(b, r->names[i].p, r->names[i].n, r->vals[i].p,
                              r->vals[i].n, &seen) == 0);
    ASSERT(srv_head_end(b, fr, code, h->app_cl, r->minor, seen, DATE) == 0);

    read_head(b->p, b->len, s);
    ASSERT(s->minor == r->minor && s->code == code);
    ASSERT(s->n_date >= 1 && s->n_server >= 1 && s->n_conn <= 1);
    ASSERT(s->n_cl <= 1 && s->n_te <= 1 && !(s->n_cl && s->n_te));
    ASSERT(s->n_te == fr->chunked);
    ASSERT(s->close == fr->close_after);
    ASSERT(!s->n_cl || s->cl == fr->content_length);
    ASSERT(r->minor == 0 || fr->close_after || s->n_conn == 0);
}

/* The body after the head, as srv_send_body clips it to the
 * Content-Length and srv_resp_finish ends it, read back. */
static void write_body(const struct resp *r, struct srv_framing *fr,
                       const struct srv_buf *b, struct seen *s)
{
    struct wire w = {0};
    uint64_t sent = 0;
    size_t alen = 0, total = 0;

    for (size_t i = 0; i < r->np; i++)
        total += r->pieces[i].n;
    char *app = malloc(total + 1);
    put(&w, b->p, b->len);
    for (size_t i = r->first; i < r->np && !fr->no_body; i++) {
        struct part piece = r->pieces[i];
        if (!piece.n)
            continue;
        memcpy(app + alen, piece.p, piece.n);
        alen += piece.n;
        if (fr->content_length >= 0 && sent + piece.n > (uint64_t)fr->content_length) {
            piece.n = (size_t)((uint64_t)fr->content_length - sent);
            fr->close_after = s->close = 1;
            if (!piece.n)
                continue;
        }
        put_piece(&w, fr->chunked, &piece);
        sent += piece.n;
    }
    if (fr->chunked && !fr->no_body)
        put(&w, SRV_LAST_CHUNK, sizeof SRV_LAST_CHUNK - 1);
    if (fr->content_length >= 0 && !fr->no_body && sent < (uint64_t)fr->content_length)
        s->close = 1; /* a short body closes */
    check_body(&w, b->len, s, fr, app, alen);
    free(w.p);
    free(app);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct resp *r;
    struct srv_head_info h;
    struct srv_framing fr;
    struct srv_buf b;
    struct seen s;
    int code;

    if (size < 1)
        return 0;
    r = malloc(sizeof *r);
    take_apart(data, size, r);
    code = check_start(r, &h);
    if (code) {
        write_head(r, code, &h, &fr, &b, &s);
        write_body(r, &fr, &b, &s);
        srv_buf_free(&b);
    }
    free(r);
    return 0;
}
