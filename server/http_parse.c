/* server/http_parse.c - HTTP/1.1 request heads (RFC 9112 §2-5) and chunked
 * request bodies (RFC 9112 §7.1).
 *
 * What it owns: the syntax of a request head and the framing of a request
 * body. srv_parse_request makes one pass over the buffer, classifying each
 * byte with a 256-entry table, and returns pointers into the buffer; it
 * keeps no state, so a partial head is simply parsed again once more bytes
 * have arrived (heads are small and the parse is cheap). Every limit is
 * decided on partial input too: a line or head that can no longer fit its
 * limit fails at once instead of asking for more bytes forever.
 * srv_chunked_decode is a byte state machine for the chunk-size lines and
 * trailers and a memmove for chunk data, so input may be split anywhere.
 *
 * What it refuses, and why. A server in front of a WSGI app must never
 * frame a request differently from a proxy in front of it (request
 * smuggling), so where RFC 9112 allows a recipient to be lenient we are not:
 *  - Line endings are CRLF only. A bare LF as a line terminator (which
 *    RFC 9112 §2.2 lets a recipient accept) and a CR not followed by LF are
 *    both 400, as are NUL and other control characters anywhere in the head
 *    except HTAB inside field values and as OWS.
 *  - obs-fold (a field line starting with SP/HTAB), whitespace between a
 *    field name and its colon, empty or non-token field names: 400.
 *  - Request line: method must be a token, exactly one SP between parts, the
 *    target non-empty without SP/CTL/DEL or '#' (bytes >= 0x80 are accepted), the
 *    version exactly "HTTP/1.0" or "HTTP/1.1". A well-formed
 *    "HTTP/<d>.<d>" of another version is 505; anything else is 400. The
 *    target must be origin-form ("/..."), absolute-form (an http or https
 *    URI with a valid, non-empty host and no userinfo), "*" with OPTIONS
 *    only, or authority-form ("host:port") with CONNECT only.
 *  - Up to SRV_MAX_LEADING_EMPTY_LINES (4) CRLFs before the request line
 *    are skipped (RFC 9112 §2.2 asks for at least one); a 5th is 400.
 *  - Content-Length must be 1*DIGIT (leading zeros allowed) fitting int64.
 *    Any repetition is refused, even of an identical value, whether as a
 *    second field or as a comma list ("5, 5"): RFC 9110 §8.6 allows
 *    collapsing identical values, but a peer that does not would frame the
 *    body differently, so it is 400 like nginx and llhttp do.
 *  - Transfer-Encoding: the only accepted value is a single "chunked"
 *    (case-insensitive; empty list elements are ignored, several fields
 *    form one list). Final coding not chunked, or chunked twice: 400
 *    (RFC 9112 §6.3). Otherwise a coding we do not implement (gzip, ...):
 *    501. Together with Content-Length, or in an HTTP/1.0 request: 400.
 *  - Host: missing in HTTP/1.1, present twice, or not uri-host [":" port]
 *    (RFC 9112 3.2): 400.
 *  - A repeated singleton field whose meaning two hops could read
 *    differently (Content-Type, Authorization, Range, If-Modified-Since,
 *    Origin, Referer, ...: the list and reasons are at semantic_field): 400.
 *  - Limits: request line > max_request_line: 414; a field line >
 *    max_header_size, more than max_headers fields (or more than the
 *    caller's array holds), a head > max_head_size: 431.
 *  - Chunked bodies: chunk-size is 1 to 15 hex digits (no sign, no
 *    whitespace, no "0x"); extensions must be ;token[=token/quoted-string]
 *    with no whitespace anywhere (we choose not to allow RFC 9112's BWS:
 *    no legitimate client sends it and it is a known smuggling vector). Each
 *    chunk's data must be followed by CRLF. Trailer fields are validated
 *    like header fields, bounded by max_trailer_size, then discarded; a
 *    trailer carrying a framing, routing, connection, request-modifier,
 *    credential or content-metadata field (Content-Length, Host,
 *    Authorization, ...: the list is at refused_trailers) is 400. The
 *    size of one chunk-size line and the total of extension bytes are
 *    bounded too, so a body cannot be made of extensions alone.
 *
 * Semantics reported, not enforced: Expect: 100-continue (HTTP/1.1 only;
 * ignored in HTTP/1.0 as RFC 9110 §10.1.1 requires; other expectations are
 * ignored), keep-alive (HTTP/1.1 unless "close" is in Connection; HTTP/1.0
 * only with "keep-alive" and no "close"). Unknown methods are the caller's
 * business (501 there if it likes).
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "server/http_parse.h"

/* ---- byte classes ------------------------------------------------------ */

#define C_TOKEN  1  /* tchar (RFC 9110 §5.6.2) */
#define C_VALUE  2  /* field-value octet: SP, HTAB, VCHAR, obs-text */
#define C_TARGET 4  /* request-target octet: VCHAR, obs-text */
#define C_HEX    8  /* HEXDIG */

static const unsigned char ctab[256] = {
    /* 00 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
    /* 10 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 20 */ 2, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6,
    /* 30 */ 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6, 6, 6, 6, 6, 6,
    /* 40 */ 6, 15, 15, 15, 15, 15, 15, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    /* 50 */ 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7,
    /* 60 */ 7, 15, 15, 15, 15, 15, 15, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    /* 70 */ 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0,
    /* 80 */ 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    /* 90 */ 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    /* a0 */ 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    /* b0 */ 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    /* c0 */ 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    /* d0 */ 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    /* e0 */ 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    /* f0 */ 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
};

#define IS(c, cls) (ctab[(unsigned char)(c)] & (cls))

/* First byte in [p, e) not of class cls, or e. Unrolled: this is the loop
 * every byte of a head goes through. */
static inline const char *span(const char *p, const char *e, unsigned cls)
{
    while (e - p >= 4) {
        if (!IS(p[0], cls)) return p;
        if (!IS(p[1], cls)) return p + 1;
        if (!IS(p[2], cls)) return p + 2;
        if (!IS(p[3], cls)) return p + 3;
        p += 4;
    }
    while (p < e && IS(*p, cls))
        p++;
    return p;
}

/* The same for request-targets and field values, 8 bytes at a time while
 * the word has no control byte or DEL (SWAR: HAS_LESS is exact for the word
 * as a whole), then the table from the word that has one. */
#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
#define HAS_LESS(x, n) (((x) - ONES * (n)) & ~(x) & HIGHS) /* some byte < n */

static inline uint64_t load64(const char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* C_TARGET: bytes 0x21-0x7e and 0x80-0xff; a flagged word has a byte out
 * of class, so the table finds it within the word. */
static inline const char *span_target(const char *p, const char *e)
{
    while (e - p >= 8) {
        uint64_t x = load64(p);
        if (HAS_LESS(x, 0x21) | HAS_LESS(x ^ (ONES * 0x7f), 1))
            break;
        p += 8;
    }
    return span(p, e, C_TARGET);
}

/* C_VALUE: C_TARGET plus SP and HTAB. HTAB flags a word too, so after a
 * flagged word that was all good, go on 8 at a time. */
static inline const char *span_value(const char *p, const char *e)
{
    for (;;) {
        while (e - p >= 8) {
            uint64_t x = load64(p);
            if (HAS_LESS(x, 0x20) | HAS_LESS(x ^ (ONES * 0x7f), 1))
                break;
            p += 8;
        }
        const char *w = e - p >= 8 ? p + 8 : e, *q = span(p, w, C_VALUE);
        if (q < w || w == e)
            return q;
        p = q;
    }
}

/* s[0..n) equals lit (lowercase letters, digits, '-') ignoring ASCII case.
 * c | 0x20 folds only letters here: the other bytes that fold onto a digit
 * or '-' are control characters, which the callers have already refused. */
static inline int eq_ci(const char *s, size_t n, const char *lit, size_t litn)
{
    if (n != litn)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] | 0x20) != (unsigned char)lit[i])
            return 0;
    return 1;
}
#define EQ_CI(s, n, lit) eq_ci((s), (n), lit, sizeof(lit) - 1)

static inline int is_ows(char c) { return c == ' ' || c == '\t'; }

/* ---- request head ------------------------------------------------------ */

/* What the field lines said, resolved once the head is complete. */
struct head_state {
    int host_count;
    int cl_seen;
    int te_seen, te_chunked, te_last_chunked, te_unknown;
    int conn_close, conn_keep_alive;
    int expect_continue;
    unsigned singles;     /* ONE_* bits: singleton fields seen */
};

static int fail(struct srv_request *req, size_t cap, int status, const char *why)
{
    req->status = status;
    req->error = why;
    req->nheaders = cap;
    return -1;
}

/* Runs body with el/elen set to each non-empty element of a
 * comma-separated list, OWS trimmed. Used for Connection and
 * Transfer-Encoding; quoted commas need no care as any element other than
 * a plain "chunked" makes Transfer-Encoding an error anyway. */
#define FOR_EACH_ELEMENT(v, vlen, el, elen, body)                           \
    do {                                                                    \
        const char *e_ = (v) + (vlen), *q_ = (v);                           \
        for (;;) {                                                          \
            const char *c_ = memchr(q_, ',', (size_t)(e_ - q_));            \
            const char *z_ = c_ ? c_ : e_;                                  \
            const char *el = q_;                                            \
            while (el < z_ && is_ows(*el)) el++;                            \
            while (z_ > el && is_ows(z_[-1])) z_--;                         \
            size_t elen = (size_t)(z_ - el);                                \
            if (elen) { body }                                              \
            if (!c_) break;                                                 \
            q_ = c_ + 1;                                                    \
        }                                                                   \
    } while (0)

/* RFC 9112 3.2: a Host that is not uri-host [ ":" port ] gets 400. The
 * host is an IP-literal ("[" IPv6 or IPvFuture "]") or a reg-name of
 * unreserved, pct-encoded and sub-delims characters (an IPv4 address is a
 * reg-name too); the port is digits only, at most 5 of them. Empty is
 * allowed (a target without authority). */
static int host_hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f');
}

/* unreserved / sub-delims, ASCII only whatever the locale */
static int host_char(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
           (ch && strchr("-._~!$&'()*+,;=", ch));
}

static int valid_host(const char *v, size_t len)
{
    size_t i = 0;

    if (len && v[0] == '[') {
        for (i = 1; i < len && v[i] != ']'; i++) {
            unsigned char ch = (unsigned char)v[i];
            if (!(host_char(ch) || ch == ':'))
                return 0;
        }
        if (i == len || i == 1)
            return 0; /* no closing bracket, or nothing inside */
        i++;
    } else {
        for (; i < len && v[i] != ':'; i++) {
            unsigned char ch = (unsigned char)v[i];
            if (ch == '%') {
                if (i + 2 >= len || !host_hex((unsigned char)v[i + 1]) ||
                    !host_hex((unsigned char)v[i + 2]))
                    return 0;
                i += 2;
            } else if (!host_char(ch)) {
                return 0;
            }
        }
    }
    if (i == len)
        return 1;
    if (v[i] != ':' || len - i - 1 > 5)
        return 0;
    for (i++; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return 0;
    return 1;
}

/* Content-Length = 1*DIGIT fitting int64 (RFC 9110 8.6); see the top of
 * the file for why any repetition is refused. */
static int content_length_field(struct head_state *hs, const char *v, size_t vlen,
                                int64_t *content_length, const char **why)
{
    int64_t x = 0;

    if (hs->cl_seen) {
        *why = "more than one Content-Length";
        return 400;
    }
    hs->cl_seen = 1;
    if (vlen == 0) {
        *why = "invalid Content-Length";
        return 400;
    }
    for (size_t i = 0; i < vlen; i++) {
        unsigned d = (unsigned)(unsigned char)v[i] - '0';
        if (d > 9) {
            *why = "invalid Content-Length";
            return 400;
        }
        if (x > (INT64_MAX - (int64_t)d) / 10) {
            *why = "Content-Length too large";
            return 400;
        }
        x = x * 10 + (int64_t)d;
    }
    *content_length = x;
    return 0;
}

static int transfer_encoding_field(struct head_state *hs, const struct srv_request *req,
                                   const char *v, size_t vlen, const char **why)
{
    if (req->minor == 0) {
        *why = "Transfer-Encoding in an HTTP/1.0 request";
        return 400;
    }
    hs->te_seen = 1;
    FOR_EACH_ELEMENT(v, vlen, el, elen, {
        if (EQ_CI(el, elen, "chunked")) {
            hs->te_chunked++;
            hs->te_last_chunked = 1;
        } else {
            hs->te_unknown = 1;
            hs->te_last_chunked = 0;
        }
    });
    return 0;
}

/* Singleton fields: RFC 9110 5.3 lets a recipient join repeated field
 * lines with "," only for fields defined as lists; a repeated singleton is
 * a message error, and here every one of them is one where two hops
 * picking different lines (first, last, or the joined "a,b" the WSGI
 * environ would show) changes what the request means:
 *   Content-Type        the body's media type and multipart boundary
 *                       (RFC 9110 8.3): which parser reads the body
 *   Authorization,      credentials (RFC 9110 11.6.2, 11.7.2): a proxy
 *   Proxy-Authorization may have checked one and the app sees another
 *   Range, If-Range,    which bytes, and under which validator (RFC 9110
 *   Content-Range       14.2, 13.1.5, 14.4): a cache and the app would
 *                       serve different parts
 *   If-Modified-Since,  one HTTP-date each (RFC 9110 13.1.3-4); an
 *   If-Unmodified-Since HTTP-date has a comma, so a join cannot be undone
 *   Max-Forwards        one integer (RFC 9110 7.6.2)
 *   Origin, Referer     what CSRF checks compare (RFC 6454 7.3: at most
 *                       one Origin; RFC 9110 10.1.3: Referer is one URI)
 * Host and Content-Length are handled with their syntax. Left alone on
 * purpose, although singletons too: Cookie (RFC 6265 5.4 asks for one,
 * but HTTP/2 gateways and some clients send several and the environ joins
 * them with "; "), and User-Agent, From, Date (harmless when joined, and
 * refusing them would only break clients that duplicate them). */
enum {
    ONE_CONTENT_TYPE = 1 << 0, ONE_AUTHORIZATION = 1 << 1,
    ONE_PROXY_AUTHORIZATION = 1 << 2, ONE_RANGE = 1 << 3,
    ONE_IF_RANGE = 1 << 4, ONE_CONTENT_RANGE = 1 << 5,
    ONE_IF_MODIFIED_SINCE = 1 << 6, ONE_IF_UNMODIFIED_SINCE = 1 << 7,
    ONE_MAX_FORWARDS = 1 << 8, ONE_ORIGIN = 1 << 9, ONE_REFERER = 1 << 10,
};

static int once(struct head_state *hs, unsigned bit, const char *repeated,
                const char **why)
{
    if (hs->singles & bit) {
        *why = repeated;
        return 400;
    }
    hs->singles |= bit;
    return 0;
}

#define ONCE(lit, bit, Name)                                                \
    do {                                                                    \
        if (EQ_CI(n, nlen, lit))                                            \
            return once(hs, (bit), "more than one " Name, why);             \
    } while (0)

/* Interprets the fields that matter for framing, connection handling and
 * the singletons above; one switch on the name's length keeps the common
 * fields that are none of these down to a compare or two. Returns 0, or
 * the status of the error with *why set. */
static int semantic_field(struct head_state *hs, const struct srv_request *req,
                          const char *n, size_t nlen, const char *v, size_t vlen,
                          int64_t *content_length, const char **why)
{
    switch (nlen) {
    case 4:
        if (EQ_CI(n, nlen, "host")) {
            if (++hs->host_count > 1) {
                *why = "more than one Host";
                return 400;
            }
            if (!valid_host(v, vlen)) {
                *why = "invalid Host";
                return 400;
            }
        }
        break;
    case 5:
        ONCE("range", ONE_RANGE, "Range");
        break;
    case 6:
        if (EQ_CI(n, nlen, "expect") && EQ_CI(v, vlen, "100-continue"))
            hs->expect_continue = 1;
        ONCE("origin", ONE_ORIGIN, "Origin");
        break;
    case 7:
        ONCE("referer", ONE_REFERER, "Referer");
        break;
    case 8:
        ONCE("if-range", ONE_IF_RANGE, "If-Range");
        break;
    case 10:
        if (EQ_CI(n, nlen, "connection")) {
            FOR_EACH_ELEMENT(v, vlen, el, elen, {
                if (EQ_CI(el, elen, "close"))
                    hs->conn_close = 1;
                else if (EQ_CI(el, elen, "keep-alive"))
                    hs->conn_keep_alive = 1;
            });
        }
        break;
    case 12:
        ONCE("content-type", ONE_CONTENT_TYPE, "Content-Type");
        ONCE("max-forwards", ONE_MAX_FORWARDS, "Max-Forwards");
        break;
    case 13:
        ONCE("authorization", ONE_AUTHORIZATION, "Authorization");
        ONCE("content-range", ONE_CONTENT_RANGE, "Content-Range");
        break;
    case 14:
        if (EQ_CI(n, nlen, "content-length"))
            return content_length_field(hs, v, vlen, content_length, why);
        break;
    case 17:
        if (EQ_CI(n, nlen, "transfer-encoding"))
            return transfer_encoding_field(hs, req, v, vlen, why);
        ONCE("if-modified-since", ONE_IF_MODIFIED_SINCE, "If-Modified-Since");
        break;
    case 19:
        ONCE("proxy-authorization", ONE_PROXY_AUTHORIZATION, "Proxy-Authorization");
        ONCE("if-unmodified-since", ONE_IF_UNMODIFIED_SINCE, "If-Unmodified-Since");
        break;
    }
    return 0;
}
#undef ONCE

/* authority-form (RFC 9112 3.2.3), CONNECT's only form and only CONNECT's:
 * uri-host ":" port, both non-empty, and nothing else (no userinfo, path
 * or query). With another method "host:port" would pass for an
 * absolute-URI whose scheme is "host"; a proxy in front could route it as
 * authority-form while we served it as a path, so it is refused by name. */
static int check_authority_form(const char *t, size_t n, const char **why)
{
    size_t colon = n;

    while (colon > 0 && t[colon - 1] >= '0' && t[colon - 1] <= '9')
        colon--;
    if (colon == n || colon < 2 || t[colon - 1] != ':' || !valid_host(t, n)) {
        *why = "CONNECT needs an authority-form target (host:port)";
        return 400;
    }
    return 0;
}

/* absolute-form (RFC 9112 3.2.2). Only http and https URIs name something
 * an HTTP server can serve (RFC 9110 4.2), so any other scheme is 400,
 * however well-formed the URI. Both need "//" and a non-empty host (RFC
 * 9110 4.2.1: a recipient MUST reject an empty one). The authority
 * replaces the Host field (RFC 9112 3.2.2; it becomes HTTP_HOST), so it
 * must be what a Host field may hold: userinfo ("user:pass@"), deprecated
 * by RFC 9110 4.2.4 which says to treat it as an error, is 400, as is
 * anything else valid_host refuses. */
static int check_absolute_form(const char *t, size_t n, const char **why)
{
    size_t i = 0;

    if (n >= 7 && eq_ci(t, 7, "http://", 7))
        i = 7;
    else if (n >= 8 && eq_ci(t, 8, "https://", 8))
        i = 8;
    if (i == 0) {
        *why = "absolute-form target must be an http or https URI";
        return 400;
    }
    const char *a = t + i;
    size_t alen = 0;
    while (i + alen < n && a[alen] != '/' && a[alen] != '?')
        alen++;
    if (memchr(a, '@', alen)) {
        *why = "userinfo (user@) in the request-target";
        return 400;
    }
    if (alen == 0 || a[0] == ':') {
        *why = "empty host in the request-target";
        return 400;
    }
    if (!valid_host(a, alen)) {
        *why = "invalid host in the request-target";
        return 400;
    }
    return 0;
}

/* scheme ":" with scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
static int has_scheme(const char *t, size_t n)
{
    size_t i;
    unsigned char c = (unsigned char)t[0];

    if (!((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
        return 0;
    for (i = 1; i < n; i++) {
        c = (unsigned char)t[i];
        if (!(((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
              (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))
            break;
    }
    return i < n && t[i] == ':';
}

/* Splits the target into path and query and checks its form. */
static int classify_target(struct srv_request *req, const char **why)
{
    const char *t = req->target;
    size_t n = req->target_len;

    req->path = t;
    req->path_len = n;
    req->query = NULL;
    req->query_len = 0;
    if (req->method_len == 7 && memcmp(req->method, "CONNECT", 7) == 0) {
        req->form = SRV_FORM_AUTHORITY;
        return check_authority_form(t, n, why);
    }
    if (memchr(t, '#', n)) {
        /* A fragment is the client's business (RFC 9110 4.2.4): none of
         * the four forms of RFC 9112 3.2 has one, and servers disagree on
         * whether it belongs to the path, so it is refused. */
        *why = "a fragment (#) in the request-target";
        return 400;
    }
    if (t[0] == '/') {
        req->form = SRV_FORM_ORIGIN;
    } else if (n == 1 && t[0] == '*') {
        if (req->method_len != 7 || memcmp(req->method, "OPTIONS", 7) != 0) {
            *why = "asterisk-form target without OPTIONS";
            return 400;
        }
        req->form = SRV_FORM_ASTERISK;
        return 0;
    } else {
        const char *not_authority;
        if (check_authority_form(t, n, &not_authority) == 0) {
            *why = "authority-form target (host:port) is for CONNECT only";
            return 400;
        }
        if (!has_scheme(t, n)) {
            *why = "invalid request-target";
            return 400;
        }
        int st = check_absolute_form(t, n, why);
        if (st)
            return st;
        req->form = SRV_FORM_ABSOLUTE;
    }
    const char *q = memchr(t, '?', n);
    if (q) {
        req->query = q + 1;
        req->query_len = (size_t)(t + n - (q + 1));
        if (req->form == SRV_FORM_ORIGIN)
            req->path_len = (size_t)(q - t);
    }
    return 0;
}

/* The scan of a line hit `wend` (its window) or the end of the view. Decide
 * between "line too long", "head too long" and "need more bytes". */
static int out_of_bytes(struct srv_request *req, size_t cap, int line_full,
                        int line_status, const char *line_why, int head_capped)
{
    if (line_full)
        return fail(req, cap, line_status, line_why);
    if (head_capped)
        return fail(req, cap, 431, "request head too large");
    req->nheaders = cap;
    return -2;
}

static inline size_t lim_or(size_t v, size_t dflt) { return v ? v : dflt; }

int srv_parse_request(const char *buf, size_t len, struct srv_request *req,
                      const struct srv_limits *lim)
{
    static const struct srv_limits none;
    if (!lim)
        lim = &none;
    const size_t cap = req->nheaders;
    const size_t max_line = lim_or(lim->max_request_line, SRV_DEFAULT_MAX_REQUEST_LINE);
    const size_t max_field = lim_or(lim->max_header_size, SRV_DEFAULT_MAX_HEADER_SIZE);
    size_t max_fields = lim_or(lim->max_headers, SRV_DEFAULT_MAX_HEADERS);
    size_t max_head = lim_or(lim->max_head_size, SRV_DEFAULT_MAX_HEAD_SIZE);
    if (max_fields > cap)
        max_fields = cap;
    if (max_head > INT_MAX)
        max_head = INT_MAX;

    req->status = 0;
    req->error = NULL;
    req->content_length = -1;
    req->chunked = 0;
    req->keep_alive = 0;
    req->expect_continue = 0;
    req->form = SRV_FORM_ORIGIN;

    /* Parse a view of at most max_head bytes: running out of it while the
     * buffer holds more (or exactly that much) means the head cannot fit. */
    const int capped = len >= max_head;
    const char *const end = buf + (capped ? max_head : len);
    const char *p = buf;
    const char *ls, *wend;
    int full;

/* Window of the line starting at ls with at most L content bytes: the CR
 * must be found among its first L + 1 bytes. */
#define LINE_WINDOW(L)                                                      \
    do {                                                                    \
        full = (size_t)(end - ls) > (L);                                    \
        wend = full ? ls + (L) + 1 : end;                                   \
    } while (0)

    /* Leading empty lines. */
    for (int n = 0; p < end && *p == '\r'; n++) {
        if (n == SRV_MAX_LEADING_EMPTY_LINES)
            return fail(req, cap, 400, "too many empty lines before request");
        if (end - p < 2)
            return out_of_bytes(req, cap, 0, 0, NULL, capped);
        if (p[1] != '\n')
            return fail(req, cap, 400, "bare CR");
        p += 2;
    }

    /* request-line = method SP request-target SP HTTP-version CRLF */
    ls = p;
    LINE_WINDOW(max_line);
    p = span(p, wend, C_TOKEN);
    if (p == wend)
        return out_of_bytes(req, cap, full, 414, "request line too long", capped);
    if (*p != ' ' || p == ls)
        return fail(req, cap, 400, *p == '\n' ? "bare LF" : "invalid method");
    req->method = ls;
    req->method_len = (size_t)(p - ls);

    const char *t = ++p;
    p = span_target(p, wend);
    if (p == wend)
        return out_of_bytes(req, cap, full, 414, "request line too long", capped);
    if (*p != ' ' || p == t)
        return fail(req, cap, 400,
                    *p == ' ' ? "more than one SP in request line" :
                    *p == '\r' || *p == '\n' ? "missing HTTP version" :
                    "invalid character in request-target");
    req->target = t;
    req->target_len = (size_t)(p - t);

    const char *v = ++p;
    p = span(p, wend, C_TARGET);
    if (p == wend)
        return out_of_bytes(req, cap, full, 414, "request line too long", capped);
    if (*p != '\r')
        return fail(req, cap, 400, *p == '\n' ? "bare LF" : "invalid HTTP version");
    if (p - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' ||
        (unsigned)(v[5] - '0') > 9 || (unsigned)(v[7] - '0') > 9)
        return fail(req, cap, 400, "invalid HTTP version");
    if (v[5] != '1' || v[7] > '1')
        return fail(req, cap, 505, "HTTP version not supported");
    req->minor = v[7] - '0';
    if (end - p < 2)
        return out_of_bytes(req, cap, 0, 0, NULL, capped);
    if (p[1] != '\n')
        return fail(req, cap, 400, "bare CR");
    p += 2;

    int st;
    const char *why = NULL;
    if ((st = classify_target(req, &why)))
        return fail(req, cap, st, why);

    /* *( field-line CRLF ) CRLF */
    struct head_state hs = {0};
    int64_t content_length = -1;
    size_t nh = 0;
    for (;;) {
        if (p == end)
            return out_of_bytes(req, cap, 0, 0, NULL, capped);
        ls = p;
        if (*p == '\r') {
            if (end - p < 2)
                return out_of_bytes(req, cap, 0, 0, NULL, capped);
            if (p[1] != '\n')
                return fail(req, cap, 400, "bare CR");
            p += 2;
            break;
        }
        if (nh == max_fields)
            return fail(req, cap, 431, "too many header fields");
        LINE_WINDOW(max_field);

        /* field-name ":" OWS field-value OWS */
        p = span(p, wend, C_TOKEN);
        if (p == wend)
            return out_of_bytes(req, cap, full, 431, "header field too long", capped);
        if (*p != ':')
            return fail(req, cap, 400,
                        p == ls && is_ows(*p) ? "obs-fold" :
                        *p == '\n' ? "bare LF" :
                        is_ows(*p) ? "whitespace before colon" :
                        "invalid character in field name");
        if (p == ls)
            return fail(req, cap, 400, "empty field name");
        const char *name = ls;
        size_t name_len = (size_t)(p - ls);
        p++;
        while (p < wend && is_ows(*p))
            p++;
        const char *val = p;
        p = span_value(p, wend);
        if (p == wend)
            return out_of_bytes(req, cap, full, 431, "header field too long", capped);
        if (*p != '\r')
            return fail(req, cap, 400, *p == '\n' ? "bare LF" :
                                       "invalid character in field value");
        const char *ve = p;
        while (ve > val && is_ows(ve[-1]))
            ve--;
        if (end - p < 2)
            return out_of_bytes(req, cap, 0, 0, NULL, capped);
        if (p[1] != '\n')
            return fail(req, cap, 400, "bare CR");
        p += 2;

        struct srv_header *h = &req->headers[nh++];
        h->name = name;
        h->name_len = name_len;
        h->value = val;
        h->value_len = (size_t)(ve - val);
        st = semantic_field(&hs, req, name, name_len, val, h->value_len,
                                &content_length, &why);
        if (st)
            return fail(req, cap, st, why);
    }
#undef LINE_WINDOW

    if (req->minor == 1 && hs.host_count == 0)
        return fail(req, cap, 400, "missing Host");
    if (hs.te_seen) {
        if (hs.cl_seen)
            return fail(req, cap, 400, "both Content-Length and Transfer-Encoding");
        if (hs.te_chunked > 1)
            return fail(req, cap, 400, "chunked applied more than once");
        if (!hs.te_last_chunked)
            return fail(req, cap, 400, "final transfer coding is not chunked");
        if (hs.te_unknown)
            return fail(req, cap, 501, "unsupported transfer coding");
        req->chunked = 1;
    }
    req->content_length = content_length;
    req->keep_alive = req->minor == 1 ? !hs.conn_close
                                      : hs.conn_keep_alive && !hs.conn_close;
    req->expect_continue = req->minor == 1 && hs.expect_continue;
    req->nheaders = nh;
    return (int)(p - buf);
}

/* ---- chunked body ------------------------------------------------------ */

enum {
    CK_SIZE0 = 0,  /* first hex digit of a chunk-size (state 0: memset init) */
    CK_SIZE,       /* more hex digits, ';' or CR */
    CK_EXT_NAME0,  /* after ';': first tchar of chunk-ext-name */
    CK_EXT_NAME,   /* tchar, '=', ';' or CR */
    CK_EXT_VAL0,   /* after '=': tchar or DQUOTE */
    CK_EXT_TOKEN,  /* tchar, ';' or CR */
    CK_EXT_QUOTED, /* inside quoted-string */
    CK_EXT_QPAIR,  /* after a backslash in quoted-string */
    CK_EXT_QEND,   /* after the closing DQUOTE: ';' or CR */
    CK_SIZE_LF,    /* LF ending a chunk-size line */
    CK_DATA,       /* remaining_ bytes of chunk data */
    CK_DATA_CR,    /* CR after chunk data */
    CK_DATA_LF,    /* LF after chunk data */
    CK_TR_START,   /* start of a trailer line: tchar or CR */
    CK_TR_NAME,    /* tchar or ':' */
    CK_TR_VALUE,   /* field-value octets or CR */
    CK_TR_LF,      /* LF ending a trailer line */
    CK_END_LF,     /* LF ending the body */
    CK_DONE,
    CK_ERROR,
};

/* Fields a trailer section must not carry. RFC 9110 6.5.1: fields needed
 * before the content can be processed cannot come after it, and a sender
 * MUST NOT generate a trailer field whose definition does not allow it
 * (6.5). The list is every field whose value could change how the request
 * is framed, routed, authenticated or answered if anything merged it into
 * the header section:
 *   framing       Content-Length, Transfer-Encoding, Trailer (RFC 9112 6)
 *   connection    Connection, Keep-Alive, Proxy-Connection, TE, Upgrade
 *                 (hop-by-hop, RFC 9110 7.6.1, 7.8)
 *   routing       Host, Max-Forwards (RFC 9110 7.2, 7.6.2), Forwarded
 *                 (RFC 7239) and the X-Forwarded-For/-Host/-Proto that
 *                 proxy-fix middleware trusts for host, scheme and client
 *   modifiers     Cache-Control, Pragma, Expect, Range and the If-*
 *                 conditionals (RFC 9110 13.1, 14.2; 6.5.1 names them)
 *   credentials   Authorization, Proxy-Authorization (RFC 9110 11),
 *                 Cookie, Set-Cookie (RFC 6265)
 *   content       Content-Encoding, Content-Type, Content-Range: how to
 *                 read the content, needed before it (RFC 9110 6.5.1)
 * Refused with 400 rather than dropped. Dropping would be safe for this
 * server alone (it never hands trailers to the app), but the client broke
 * a MUST, and a hop in front of us that merges trailers into the header
 * section would have framed, routed or authenticated the request on values
 * we never saw: the same "two hops read one message differently" that the
 * rest of this parser refuses. A 400 also tells the client, where a drop
 * would hide its bug or the attempt. No legitimate client sends these. */
#define REFUSED(lit, Name) \
    {lit, sizeof(lit) - 1, Name " in the trailer section (RFC 9110 6.5.1: send it in the header section)"}
static const struct refused_trailer {
    const char *name;  /* lowercase */
    unsigned char len; /* < SRV_TRAILER_NAME_KEPT */
    const char *why;
} refused_trailers[] = {
    REFUSED("content-length", "Content-Length"),
    REFUSED("transfer-encoding", "Transfer-Encoding"),
    REFUSED("trailer", "Trailer"),
    REFUSED("connection", "Connection"),
    REFUSED("keep-alive", "Keep-Alive"),
    REFUSED("proxy-connection", "Proxy-Connection"),
    REFUSED("te", "TE"),
    REFUSED("upgrade", "Upgrade"),
    REFUSED("host", "Host"),
    REFUSED("max-forwards", "Max-Forwards"),
    REFUSED("forwarded", "Forwarded"),
    REFUSED("x-forwarded-for", "X-Forwarded-For"),
    REFUSED("x-forwarded-host", "X-Forwarded-Host"),
    REFUSED("x-forwarded-proto", "X-Forwarded-Proto"),
    REFUSED("cache-control", "Cache-Control"),
    REFUSED("pragma", "Pragma"),
    REFUSED("expect", "Expect"),
    REFUSED("range", "Range"),
    REFUSED("if-match", "If-Match"),
    REFUSED("if-none-match", "If-None-Match"),
    REFUSED("if-modified-since", "If-Modified-Since"),
    REFUSED("if-unmodified-since", "If-Unmodified-Since"),
    REFUSED("if-range", "If-Range"),
    REFUSED("authorization", "Authorization"),
    REFUSED("proxy-authorization", "Proxy-Authorization"),
    REFUSED("cookie", "Cookie"),
    REFUSED("set-cookie", "Set-Cookie"),
    REFUSED("content-encoding", "Content-Encoding"),
    REFUSED("content-type", "Content-Type"),
    REFUSED("content-range", "Content-Range"),
};
#undef REFUSED

/* Keeps the start of a trailer name, lowercased; stops at KEPT bytes,
 * which is longer than any refused name. */
static inline void keep_trailer_name(struct srv_chunked *st, unsigned char c)
{
    if (st->tname_len_ < SRV_TRAILER_NAME_KEPT)
        st->tname_[st->tname_len_++] = (char)(c | 0x20);
}

/* The reason the trailer name just ended is refused, or NULL. tname_ holds
 * it lowercased with c | 0x20, which maps no tchar other than an
 * uppercase letter onto a lowercase letter or '-', so the compare is
 * exact. Trailers are rare, so a scan is fine. */
static const char *refused_trailer(const struct srv_chunked *st)
{
    for (size_t i = 0; i < sizeof refused_trailers / sizeof refused_trailers[0]; i++) {
        const struct refused_trailer *r = &refused_trailers[i];
        if (r->len == st->tname_len_ && memcmp(r->name, st->tname_, r->len) == 0)
            return r->why;
    }
    return NULL;
}

void srv_chunked_init(struct srv_chunked *st)
{
    memset(st, 0, sizeof *st);
}

static ssize_t ck_fail(struct srv_chunked *st, size_t *len, size_t o, const char *why)
{
    st->state_ = CK_ERROR;
    st->error = why;
    *len = o;
    return -1;
}

static inline unsigned hexval(unsigned char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* Chunk data is moved down over the framing with memmove (output never
 * overtakes input: o <= i), everything else goes through the byte switch,
 * so a split anywhere only changes where a call returns. Once the body is
 * complete, further calls return all their input as left over; after an
 * error they return -1 again. */
ssize_t srv_chunked_decode(struct srv_chunked *st, char *buf, size_t *len)
{
    const size_t n = *len;
    const size_t max_line = lim_or(st->max_chunk_line, SRV_DEFAULT_MAX_CHUNK_LINE);
    const size_t max_ext = lim_or(st->max_ext_size, SRV_DEFAULT_MAX_EXT_SIZE);
    const size_t max_trailer = lim_or(st->max_trailer_size, SRV_DEFAULT_MAX_TRAILER_SIZE);
    size_t i = 0, o = 0;   /* input read / output written offsets; o <= i */
    unsigned state = st->state_;

    if (state == CK_ERROR) {
        *len = 0;
        return -1;
    }
    if (state == CK_DONE) {
        *len = 0;
        return (ssize_t)n;
    }

#define FAIL(why) do { st->state_ = (unsigned char)state; \
                       return ck_fail(st, len, o, why); } while (0)

    while (i < n) {
        if (state == CK_DATA) {
            size_t take = n - i;
            if (take > st->remaining_)
                take = (size_t)st->remaining_;
            if (o != i)
                memmove(buf + o, buf + i, take);
            o += take;
            i += take;
            st->remaining_ -= take;
            st->decoded += take;
            if (st->remaining_ == 0)
                state = CK_DATA_CR;
            continue;
        }

        unsigned char c = (unsigned char)buf[i++];

        /* Bound the chunk-size line, its extensions and the trailers. */
        if (state < CK_SIZE_LF && c != '\r') {
            if (++st->line_len_ > max_line)
                FAIL("chunk-size line too long");
            if (state >= CK_EXT_NAME0 && ++st->ext_len_ > max_ext)
                FAIL("chunk extensions too large");
        } else if (state >= CK_TR_START && ++st->trailer_len_ > max_trailer) {
            FAIL("trailer section too large");
        }

        switch (state) {
        case CK_SIZE0:
            if (!IS(c, C_HEX))
                FAIL("invalid chunk size");
            st->remaining_ = hexval(c);
            st->ndigits_ = 1;
            state = CK_SIZE;
            break;
        case CK_SIZE:
            if (IS(c, C_HEX)) {
                if (st->ndigits_ == 15)
                    FAIL("chunk size too large");
                st->ndigits_++;
                st->remaining_ = st->remaining_ << 4 | hexval(c);
            } else if (c == ';') {
                state = CK_EXT_NAME0;
            } else if (c == '\r') {
                state = CK_SIZE_LF;
            } else {
                FAIL("invalid chunk size");
            }
            break;
        case CK_EXT_NAME0:
            if (!IS(c, C_TOKEN))
                FAIL("invalid chunk extension");
            state = CK_EXT_NAME;
            break;
        case CK_EXT_NAME:
        case CK_EXT_TOKEN:
            if (IS(c, C_TOKEN))
                break;
            if (c == '=' && state == CK_EXT_NAME)
                state = CK_EXT_VAL0;
            else if (c == ';')
                state = CK_EXT_NAME0;
            else if (c == '\r')
                state = CK_SIZE_LF;
            else
                FAIL("invalid chunk extension");
            break;
        case CK_EXT_VAL0:
            if (IS(c, C_TOKEN))
                state = CK_EXT_TOKEN;
            else if (c == '"')
                state = CK_EXT_QUOTED;
            else
                FAIL("invalid chunk extension");
            break;
        case CK_EXT_QUOTED:
            if (c == '"')
                state = CK_EXT_QEND;
            else if (c == '\\')
                state = CK_EXT_QPAIR;
            else if (!IS(c, C_VALUE))
                FAIL("invalid chunk extension");
            break;
        case CK_EXT_QPAIR:
            if (!IS(c, C_VALUE))
                FAIL("invalid chunk extension");
            state = CK_EXT_QUOTED;
            break;
        case CK_EXT_QEND:
            if (c == ';')
                state = CK_EXT_NAME0;
            else if (c == '\r')
                state = CK_SIZE_LF;
            else
                FAIL("invalid chunk extension");
            break;
        case CK_SIZE_LF:
            if (c != '\n')
                FAIL("bare CR in chunk-size line");
            st->line_len_ = 0;
            state = st->remaining_ ? CK_DATA : CK_TR_START;
            break;
        case CK_DATA_CR:
            if (c != '\r')
                FAIL("missing CRLF after chunk data");
            state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (c != '\n')
                FAIL("missing CRLF after chunk data");
            state = CK_SIZE0;
            break;
        case CK_TR_START:
            if (c == '\r') {
                state = CK_END_LF;
            } else if (IS(c, C_TOKEN)) {
                st->tname_len_ = 0;
                keep_trailer_name(st, c);
                state = CK_TR_NAME;
            } else {
                FAIL(is_ows((char)c) ? "obs-fold in trailer" : "invalid trailer field");
            }
            break;
        case CK_TR_NAME:
            if (c == ':') {
                const char *why = refused_trailer(st);
                if (why)
                    FAIL(why);
                state = CK_TR_VALUE;
            } else if (!IS(c, C_TOKEN)) {
                FAIL("invalid trailer field name");
            } else {
                keep_trailer_name(st, c);
            }
            break;
        case CK_TR_VALUE:
            if (c == '\r')
                state = CK_TR_LF;
            else if (!IS(c, C_VALUE))
                FAIL("invalid character in trailer value");
            break;
        case CK_TR_LF:
            if (c != '\n')
                FAIL("bare CR in trailer");
            state = CK_TR_START;
            break;
        case CK_END_LF:
            if (c != '\n')
                FAIL("bare CR after trailers");
            st->state_ = CK_DONE;
            *len = o;
            return (ssize_t)(n - i);
        }
    }
#undef FAIL
    st->state_ = (unsigned char)state;
    *len = o;
    return -2;
}
