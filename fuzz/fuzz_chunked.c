/* fuzz/fuzz_chunked.c - libFuzzer driver for srv_chunked_decode
 * (server/http_parse.c) fed in pieces the fuzzer chooses.
 *
 * Input: byte 0 picks the limits (default, tiny, or small ones taken
 * from byte 1), byte 2 is a count k (mod 32) of piece lengths that follow
 * (bytes 3..3+k, used in turn, 0 meaning an empty call); the rest is the
 * body, fed to the decoder piece by piece, each piece in an exact-size
 * heap copy so that ASan sees any read or write outside it.
 *
 * Checked on every call: the output fits the piece, left-over bytes stay
 * in place untouched, `decoded` counts exactly what came out. Checked on
 * the whole: the same outcome, error and output as one call with all of
 * it; the same verdict (more needed, invalid, or complete after so many
 * bytes) and the same chunk data as a reference decoder written apart
 * from it; a complete body is refused in no strict prefix; done and
 * error are terminal (further calls give all input back, or -1 again).
 *
 * Run: scripts/fuzz chunked
 */
#include "fuzz/fuzz.h"
#include "server/http_parse.h"

struct outcome {
    ssize_t ret;        /* -2, -1, or input bytes after the body */
    const char *error;
    char *out;          /* decoded body (n + 1 bytes allocated) */
    size_t outlen;
};

/* One call on an exact-size copy of src[0..n). Returns its result; the
 * decoded bytes are appended to oc->out. */
static ssize_t call(struct srv_chunked *st, const char *src, size_t n,
                    struct outcome *oc)
{
    char *b = fuzz_copy(src, n);
    size_t len = n;
    uint64_t before = st->decoded;

    ssize_t r = srv_chunked_decode(st, n ? b : b + 1, &len);
    if (!n) {
        free(b);
        ASSERT(len == 0 && (r == -2 || r == -1 || r == 0));
        return r;
    }
    ASSERT(r == -2 || r == -1 || (r >= 0 && (size_t)r <= n));
    ASSERT(len <= n);
    ASSERT(r < 0 || len + (size_t)r <= n);
    ASSERT(st->decoded - before == len);
    if (r >= 0) /* the bytes after the body stayed where they were */
        ASSERT(memcmp(b + n - r, src + n - r, (size_t)r) == 0);
    if (r == -1)
        ASSERT(st->error && st->error[0]);
    memcpy(oc->out + oc->outlen, b, len);
    oc->outlen += len;
    free(b);
    return r;
}

/* Feeds src[0..n) in pieces of lens[0..k) bytes, in turn (k = 0: one
 * piece), until the decoder is done or fails. */
static void feed(const struct srv_chunked *proto, const char *src, size_t n,
                 const uint8_t *lens, size_t k, struct outcome *oc)
{
    struct srv_chunked st = *proto;
    size_t off = 0, j = 0, empties = 0;

    oc->outlen = 0;
    oc->ret = -2;
    oc->error = NULL;
    for (;;) {
        size_t piece = k ? lens[j++ % k] : n - off;
        if (piece > n - off)
            piece = n - off;
        empties = piece ? 0 : empties + 1;
        if (empties > k) /* a whole round of empty calls: feed the rest */
            piece = n - off;
        ssize_t r = call(&st, src + off, piece, oc);
        off += piece;
        if (r >= 0) {
            oc->ret = r + (ssize_t)(n - off);
            break;
        }
        if (r == -1) {
            oc->ret = -1;
            oc->error = st.error;
            break;
        }
        if (off == n)
            break;
    }
    ASSERT(st.decoded == oc->outlen);
    ASSERT(oc->outlen <= n);
    if (oc->ret == -2)
        return;
    /* terminal: done gives every later byte back, an error stays one */
    char more[4] = "0\r\n\r";
    for (size_t i = 0; i < 2; i++) {
        size_t len = sizeof more;
        ssize_t r = srv_chunked_decode(&st, more, &len);
        ASSERT(len == 0);
        ASSERT(r == (oc->ret == -1 ? -1 : (ssize_t)sizeof more));
        ASSERT(oc->ret != -1 || st.error == oc->error);
    }
}

/* ---- a reference decoder, written apart from http_parse.c -------------
 * Recursive descent over the whole input at once, from RFC 9112 7.1 and
 * the rules http_parse.c's comment states (1-15 hex digits, no BWS,
 * trailers as field lines minus the refused names, the three limits, each
 * exceeded at the byte that goes past it). Says what the body is: -2 a
 * strict prefix of one that may be valid, -1 invalid, or the bytes the
 * body takes; the chunk data before that point goes to out. */

#define R_PARTIAL (-2)
#define R_INVALID (-1)

struct ref {
    const unsigned char *s;
    size_t n, p;
    size_t max_line, max_ext, max_tr;
    size_t line, ext, tr;   /* bytes so far: this size line, extensions, trailers */
    char *out;
    size_t outlen;
};

static int hexdig(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The next byte, or -1 at the end of the input. */
static int next(struct ref *r)
{
    return r->p < r->n ? r->s[r->p++] : -1;
}

/* Counts a byte of a size line (in_ext: after its first ';'). */
static int line_byte(struct ref *r, int in_ext)
{
    if (++r->line > r->max_line)
        return R_INVALID;
    if (in_ext && ++r->ext > r->max_ext)
        return R_INVALID;
    return 0;
}

#define GET(c) do { if (((c) = next(r)) < 0) return R_PARTIAL; } while (0)
#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

/* After a ';': extensions up to and including the CR. */
static int ref_ext(struct ref *r)
{
    int c;

    for (;;) {
        GET(c); /* ext-name: 1*tchar */
        TRY(line_byte(r, 1));
        if (!fuzz_tchar(c))
            return R_INVALID;
        do {
            GET(c);
            if (c != '\r')
                TRY(line_byte(r, 1));
        } while (fuzz_tchar(c));
        if (c == '=') {
            GET(c);
            TRY(line_byte(r, 1));
            if (c == '"') {
                for (;;) {
                    GET(c);
                    TRY(line_byte(r, 1));
                    if (c == '"')
                        break;
                    if (c == '\\') {
                        GET(c);
                        TRY(line_byte(r, 1));
                    }
                    if (!fuzz_value_byte(c))
                        return R_INVALID;
                }
                GET(c);
                if (c != '\r')
                    TRY(line_byte(r, 1));
            } else if (fuzz_tchar(c)) {
                do {
                    GET(c);
                    if (c != '\r')
                        TRY(line_byte(r, 1));
                } while (fuzz_tchar(c));
            } else {
                return R_INVALID;
            }
        }
        if (c == '\r')
            return 0;
        if (c != ';')
            return R_INVALID;
    }
}

/* One size line through its LF; *size set. */
static int ref_size_line(struct ref *r, uint64_t *size)
{
    int c, digits = 0;

    r->line = 0;
    *size = 0;
    for (;;) {
        GET(c);
        if (c == '\r' && digits)
            break;
        TRY(line_byte(r, 0));
        if (hexdig(c) >= 0 && digits < 15) {
            *size = *size << 4 | (uint64_t)hexdig(c);
            digits++;
        } else if (c == ';' && digits) {
            TRY(ref_ext(r));
            break;
        } else {
            return R_INVALID;
        }
    }
    GET(c);
    return c == '\n' ? 0 : R_INVALID;
}

/* A trailer byte, counted. */
static int tr_get(struct ref *r, int *c)
{
    if ((*c = next(r)) < 0)
        return R_PARTIAL;
    return ++r->tr > r->max_tr ? R_INVALID : 0;
}

/* The trailer section through the final CRLF. */
static int ref_trailers(struct ref *r)
{
    int c;

    for (;;) {
        TRY(tr_get(r, &c));
        if (c == '\r') {
            TRY(tr_get(r, &c));
            return c == '\n' ? 0 : R_INVALID;
        }
        size_t start = r->p - 1;
        while (fuzz_tchar(c))
            TRY(tr_get(r, &c));
        if (c != ':' || r->p - 1 == start)
            return R_INVALID;
        if (fuzz_refused_trailer((const char *)r->s + start, r->p - 1 - start))
            return R_INVALID;
        do
            TRY(tr_get(r, &c));
        while (c != '\r' && fuzz_value_byte(c));
        if (c != '\r')
            return R_INVALID;
        TRY(tr_get(r, &c));
        if (c != '\n')
            return R_INVALID;
    }
}

static ssize_t ref_decode(struct ref *r)
{
    uint64_t size;

    for (;;) {
        TRY(ref_size_line(r, &size));
        if (size == 0)
            break;
        size_t take = r->n - r->p < size ? r->n - r->p : (size_t)size;
        memcpy(r->out + r->outlen, r->s + r->p, take);
        r->outlen += take;
        r->p += take;
        if (take < size)
            return R_PARTIAL;
        int c;
        GET(c);
        if (c != '\r')
            return R_INVALID;
        GET(c);
        if (c != '\n')
            return R_INVALID;
    }
    TRY(ref_trailers(r));
    return (ssize_t)r->p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    struct srv_chunked proto;
    srv_chunked_init(&proto);
    switch (data[0] & 3) {
    case 1:
        proto.max_chunk_line = 24;
        proto.max_ext_size = 10;
        proto.max_trailer_size = 16;
        break;
    case 2:
        proto.max_chunk_line = 1 + (data[1] & 15);
        proto.max_ext_size = 1 + (data[1] >> 4);
        proto.max_trailer_size = 1 + data[1];
        break;
    }
    size_t k = data[2] % 32;
    if (size < 3 + k)
        return 0;
    const uint8_t *lens = data + 3;
    const char *src = (const char *)data + 3 + k;
    size_t n = size - 3 - k;

    struct outcome whole = {.out = malloc(n + 1)};
    struct outcome split = {.out = malloc(n + 1)};
    struct outcome bytes = {.out = malloc(n + 1)};
    static const uint8_t one = 1;

    feed(&proto, src, n, NULL, 0, &whole);
    feed(&proto, src, n, lens, k, &split);
    ASSERT(split.ret == whole.ret && split.error == whole.error);
    ASSERT(split.outlen == whole.outlen && memcmp(split.out, whole.out, whole.outlen) == 0);
    if (n <= 2048) {
        feed(&proto, src, n, &one, 1, &bytes);
        ASSERT(bytes.ret == whole.ret && bytes.error == whole.error);
        ASSERT(bytes.outlen == whole.outlen &&
               memcmp(bytes.out, whole.out, whole.outlen) == 0);
    }
    struct ref r = {
        .s = (const unsigned char *)src, .n = n,
        .max_line = proto.max_chunk_line ? proto.max_chunk_line : SRV_DEFAULT_MAX_CHUNK_LINE,
        .max_ext = proto.max_ext_size ? proto.max_ext_size : SRV_DEFAULT_MAX_EXT_SIZE,
        .max_tr = proto.max_trailer_size ? proto.max_trailer_size : SRV_DEFAULT_MAX_TRAILER_SIZE,
        .out = malloc(n + 1),
    };
    ssize_t verdict = ref_decode(&r);
    ASSERT(verdict < 0 ? whole.ret == verdict : whole.ret == (ssize_t)(n - (size_t)verdict));
    ASSERT(r.outlen == whole.outlen && memcmp(r.out, whole.out, r.outlen) == 0);
    free(r.out);
    if (whole.ret >= 0) { /* no strict prefix of the body is complete or wrong */
        feed(&proto, src, n - (size_t)whole.ret - 1, NULL, 0, &split);
        ASSERT(split.ret == -2);
    }
    free(whole.out);
    free(split.out);
    free(bytes.out);
    return 0;
}
