/* fuzz/fuzz.h - what every libFuzzer driver in fuzz/ shares: the
 * invariant check, the exact-size input copy, and the RFC 9110 character
 * and field-name rules the drivers check the server's verdicts against.
 *
 * These rules are the harness's own, written apart from server/ (a fuzzer
 * that asked http_parse.c what a token is would check nothing).
 */
#ifndef LIBGREEN_FUZZ_H
#define LIBGREEN_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* An invariant: failing it aborts, so libFuzzer keeps the input. */
#define ASSERT(c)                                                           \
    do {                                                                    \
        if (!(c)) {                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,      \
                    __LINE__, #c);                                          \
            abort();                                                        \
        }                                                                   \
    } while (0)

#define COUNT(a) (sizeof (a) / sizeof (a)[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* src[0..n) in a heap block of exactly n bytes (1 when n is 0), so that
 * ASan reports any read or write past it. */
static inline char *fuzz_copy(const void *src, size_t n)
{
    char *b = malloc(n ? n : 1);

    if (n)
        memcpy(b, src, n);
    return b;
}

/* tchar (RFC 9110 5.6.2): a byte of a token, i.e. of a field name. */
static inline int fuzz_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A byte a field value may hold: VCHAR, SP, HTAB or obs-text. */
static inline int fuzz_value_byte(unsigned char c)
{
    return c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f);
}

/* Whether p[0..n) is lit, ignoring case (field names). */
static inline int fuzz_name_is(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(p, lit, n) == 0;
}

/* Whether the field name p[0..n) is one an accepted trailer section never
 * carries: framing, routing, credentials and the like (http_parse.c's
 * refused_trailers says why each). */
static inline int fuzz_refused_trailer(const char *p, size_t n)
{
    static const char *const refused[] = {
        "content-length", "transfer-encoding", "trailer", "connection",
        "keep-alive", "proxy-connection", "te", "upgrade", "host",
        "max-forwards", "forwarded", "x-forwarded-for", "x-forwarded-host",
        "x-forwarded-proto", "cache-control", "pragma", "expect", "range",
        "if-match", "if-none-match", "if-modified-since", "if-unmodified-since",
        "if-range", "authorization", "proxy-authorization", "cookie",
        "set-cookie", "content-encoding", "content-type", "content-range",
    };

    for (size_t k = 0; k < COUNT(refused); k++)
        if (fuzz_name_is(p, n, refused[k]))
            return 1;
    return 0;
}

#endif
