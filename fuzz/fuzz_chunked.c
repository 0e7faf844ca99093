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
 * it; a complete body is refused in no strict prefix; an accepted body
 * decodes to the chunk data a separate walker finds, consumed up to where
 * that walker ends it, within the limits; done and error are terminal
 * (further calls give all input back, or -1 again).
 *
 * Run: scripts/fuzz chunked
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/http_parse.h"

#define ASSERT(c)                                                           \
    do {                                                                    \
        if (!(c)) {                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,      \
                    __LINE__, #c);                                          \
            abort();                                                        \
        }                                                                   \
    } while (0)

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
    char *b = malloc(n ? n : 1);
    size_t len = n;
    uint64_t before = st->decoded;

    if (n)
        memcpy(b, src, n);
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

static int hexdig(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* Walks an accepted body src[0..n) on its own (sizes, CRLFs, trailer
 * lines), checks the limits the decoder was given, and appends the chunk
 * data to data. Returns the bytes the body takes. */
static size_t walk(const char *src, size_t n, const struct srv_chunked *lim,
                   char *data, size_t *dlen)
{
    size_t max_line = lim->max_chunk_line ? lim->max_chunk_line : SRV_DEFAULT_MAX_CHUNK_LINE;
    size_t max_ext = lim->max_ext_size ? lim->max_ext_size : SRV_DEFAULT_MAX_EXT_SIZE;
    size_t max_tr = lim->max_trailer_size ? lim->max_trailer_size : SRV_DEFAULT_MAX_TRAILER_SIZE;
    size_t p = 0, ext = 0;

    *dlen = 0;
    for (;;) {
        uint64_t size = 0;
        size_t start = p, digits = 0;
        while (p < n && hexdig((unsigned char)src[p]) >= 0) {
            size = size * 16 + (uint64_t)hexdig((unsigned char)src[p++]);
            digits++;
        }
        ASSERT(digits >= 1 && digits <= 15);
        const char *lf = memchr(src + p, '\n', n - p);
        ASSERT(lf && (size_t)(lf - src) >= p + 1);
        size_t eol = (size_t)(lf - src);
        ASSERT(src[eol - 1] == '\r');
        ASSERT(eol - 1 - start <= max_line);
        ext += eol - 1 - p ? eol - 2 - p : 0; /* after the first ';' */
        ASSERT(ext <= max_ext);
        ASSERT(!memchr(src + start, '\r', eol - 1 - start));
        p = eol + 1;
        if (size == 0)
            break;
        ASSERT(size <= n - p && n - p - size >= 2);
        memcpy(data + *dlen, src + p, size);
        *dlen += size;
        p += size;
        ASSERT(src[p] == '\r' && src[p + 1] == '\n');
        p += 2;
    }
    size_t tstart = p;
    for (;;) {
        const char *lf = memchr(src + p, '\n', n - p);
        ASSERT(lf && lf > src + p && lf[-1] == '\r');
        size_t line = (size_t)(lf - src) - p - 1;
        for (size_t i = 0; i < line; i++) /* no CTL other than HTAB */
            ASSERT((unsigned char)src[p + i] >= 0x20 || src[p + i] == '\t');
        p = (size_t)(lf - src) + 1;
        if (line == 0)
            break;
        ASSERT(memchr(src + p - line - 2, ':', line));
    }
    ASSERT(p - tstart <= max_tr);
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
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
    if (whole.ret >= 0) {
        size_t body = n - (size_t)whole.ret, dlen;
        char *ref = malloc(n + 1);
        ASSERT(walk(src, body, &proto, ref, &dlen) == body);
        ASSERT(dlen == whole.outlen && memcmp(ref, whole.out, dlen) == 0);
        free(ref);
        /* no strict prefix of the body is complete or wrong */
        feed(&proto, src, body - 1, NULL, 0, &split);
        ASSERT(split.ret == -2);
    }
    free(whole.out);
    free(split.out);
    free(bytes.out);
    return 0;
}
