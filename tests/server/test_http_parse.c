/* tests/server/test_http_parse.c - unit tests of server/http_parse.c.
 *
 * Every parse goes through at_guard(): the input is copied so that it ends
 * exactly where a PROT_NONE page begins, so reading one byte past the
 * buffer faults. Valid heads are also parsed at every strict prefix, which
 * must say "partial" (-2). Chunked bodies are decoded whole, one byte at a
 * time and split in two at every offset, and the results must agree.
 *
 * Build: gcc -std=gnu11 -O2 -g -Wall -Wextra -Werror -I. \
 *            tests/server/test_http_parse.c server/http_parse.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tests/check.h"
#include "server/http_parse.h"

/* ---- guard page -------------------------------------------------------- */

static char *guard_map;
static size_t guard_room; /* accessible bytes before the PROT_NONE page */

/* Copies s[0..n) so that it ends right before an inaccessible page. The
 * copy is valid (and writable) until the next call. */
static char *at_guard(const void *s, size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    if (n > guard_room || !guard_map) {
        if (guard_map)
            munmap(guard_map, guard_room + pg);
        guard_room = (n + pg - 1) / pg * pg;
        if (guard_room == 0)
            guard_room = pg;
        guard_map = mmap(NULL, guard_room + pg, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (guard_map == MAP_FAILED ||
            mprotect(guard_map + guard_room, pg, PROT_NONE) != 0) {
            perror("guard page");
            exit(2);
        }
    }
    char *p = guard_map + guard_room - n;
    if (n)
        memcpy(p, s, n);
    return p;
}

/* ---- head helpers ------------------------------------------------------ */

#define MAXH 256
static struct srv_header H[MAXH];
static struct srv_request R;

static int parse_cap(const char *s, size_t n, size_t cap, const struct srv_limits *lim)
{
    memset(&R, 0, sizeof R);
    R.headers = H;
    R.nheaders = cap;
    return srv_parse_request(at_guard(s, n), n, &R, lim);
}

static int parse(const char *s, size_t n) { return parse_cap(s, n, MAXH, NULL); }

/* Parses every strict prefix (each must be -2 with nheaders restored), then
 * the whole input; returns the whole result, R holds it. */
static int parse_prefixes(const char *s, size_t n, size_t cap, const struct srv_limits *lim)
{
    for (size_t k = 0; k < n; k++) {
        int r = parse_cap(s, k, cap, lim);
        if (r != -2)
            fprintf(stderr, "prefix %zu/%zu of %.40s... -> %d (%s)\n", k, n, s, r,
                    R.error ? R.error : "");
        CHECK_OR(r == -2, -99);
        CHECK_OR(R.nheaders == cap, -99);
    }
    return parse_cap(s, n, cap, lim);
}

static int eqs(const char *p, size_t n, const char *lit)
{
    return p && n == strlen(lit) && memcmp(p, lit, n) == 0;
}

static const struct srv_header *hdr(const char *name)
{
    for (size_t i = 0; i < R.nheaders; i++)
        if (R.headers[i].name_len == strlen(name) &&
            strncasecmp(R.headers[i].name, name, R.headers[i].name_len) == 0)
            return &R.headers[i];
    return NULL;
}

/* A valid request: all prefixes partial, the whole consumed exactly. */
#define OK(s)                                                               \
    do {                                                                    \
        const char *s_ = (s);                                               \
        int r_ = parse_prefixes(s_, strlen(s_), MAXH, NULL);                \
        if (r_ != (int)strlen(s_))                                          \
            fprintf(stderr, "  %s -> %d status %d (%s)\n", s_, r_,          \
                    R.status, R.error ? R.error : "");                      \
        CHECK(r_ == (int)strlen(s_));                                       \
        CHECK(R.status == 0 && R.error == NULL);                            \
    } while (0)

/* An invalid request (given with explicit length, NULs allowed). */
static int expect_err(const char *s, size_t n, int status, size_t cap,
                      const struct srv_limits *lim)
{
    int r = parse_cap(s, n, cap, lim);
    if (r != -1 || R.status != status)
        fprintf(stderr, "  %.*s -> %d status %d (%s), wanted %d\n", (int)n, s, r,
                R.status, R.error ? R.error : "", status);
    CHECK_OR(r == -1, 0);
    CHECK_OR(R.status == status, 0);
    CHECK_OR(R.error != NULL && R.error[0], 0);
    CHECK_OR(R.nheaders == cap, 0);
    return 1;
}

#define ERRN(s, n, st) CHECK(expect_err((s), (n), (st), MAXH, NULL))
#define ERR(lit, st) ERRN(lit, sizeof(lit) - 1, st)
#define ERRS(str, st) ERRN(str, strlen(str), st)

#define HOST "Host: example.com\r\n"

/* ---- heads: basics ----------------------------------------------------- */

TEST(simple_get)
{
    OK("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(eqs(R.method, R.method_len, "GET"));
    CHECK(eqs(R.target, R.target_len, "/"));
    CHECK(eqs(R.path, R.path_len, "/"));
    CHECK(R.query == NULL && R.query_len == 0);
    CHECK(R.minor == 1);
    CHECK(R.nheaders == 1);
    CHECK(eqs(R.headers[0].name, R.headers[0].name_len, "Host"));
    CHECK(eqs(R.headers[0].value, R.headers[0].value_len, "a"));
    CHECK(R.content_length == -1);
    CHECK(!R.chunked && R.keep_alive && !R.expect_continue);
    CHECK(R.form == SRV_FORM_ORIGIN);
}

static const char browser_get[] =
    "GET /wp-content/uploads/2010/03/hello-kitty-darth-vader-pink.jpg?x=1&y=2 HTTP/1.1\r\n"
    "Host: www.kittyhell.com\r\n"
    "User-Agent: Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_6_3; ja-JP-mac; rv:1.9.2.3) "
    "Gecko/20100401 Firefox/3.6.3 Pathtraq/0.9\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: ja,en-us;q=0.7,en;q=0.3\r\n"
    "Accept-Encoding: gzip,deflate\r\n"
    "Accept-Charset: Shift_JIS,utf-8;q=0.7,*;q=0.7\r\n"
    "Keep-Alive: 115\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: wp_ozh_wsa_visits=2; wp_ozh_wsa_visit_lasttime=xxxxxxxxxx; "
    "__utma=xxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.x; "
    "__utmz=xxxxxxxxx.xxxxxxxxxx.x.x.utmccn=(referral)|utmcsr=reader.livedoor.com|utmcct=/reader/|utmcmd=referral\r\n"
    "Cache-Control: max-age=0\r\n"
    "\r\n";

TEST(browser_get)
{
    OK(browser_get);
    CHECK(R.nheaders == 10);
    CHECK(eqs(R.path, R.path_len, "/wp-content/uploads/2010/03/hello-kitty-darth-vader-pink.jpg"));
    CHECK(eqs(R.query, R.query_len, "x=1&y=2"));
    CHECK(eqs(R.headers[1].name, R.headers[1].name_len, "User-Agent"));
    CHECK(eqs(R.headers[9].name, R.headers[9].name_len, "Cache-Control"));
    CHECK(eqs(R.headers[9].value, R.headers[9].value_len, "max-age=0"));
    CHECK(R.keep_alive);
    /* pointers into the buffer, in order, no overlap */
    for (size_t i = 0; i < R.nheaders; i++) {
        CHECK(R.headers[i].name + R.headers[i].name_len < R.headers[i].value);
        if (i)
            CHECK(R.headers[i - 1].value + R.headers[i - 1].value_len < R.headers[i].name);
    }
}

TEST(names_preserved_values_trimmed)
{
    OK("POST /x HTTP/1.1\r\n"
       "hOsT: h\r\n"
       "X-A:   a  b \t\r\n"
       "X-B:\r\n"
       "X-C: \t \r\n"
       "X-D:v\r\n"
       "X-E:\tv\t\r\n"
       "X-F: caf\xc3\xa9 \x80\xff\r\n"
       "X-G: \"quoted, stuff\" ;a=b !#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\r\n"
       "!#$%&'*+-.^_`|~09azAZ: tokens\r\n"
       "\r\n");
    CHECK(R.nheaders == 9);
    CHECK(eqs(R.headers[0].name, R.headers[0].name_len, "hOsT"));
    CHECK(eqs(hdr("x-a")->value, hdr("x-a")->value_len, "a  b"));
    CHECK(hdr("x-b")->value_len == 0 && hdr("x-b")->value != NULL);
    CHECK(hdr("x-c")->value_len == 0);
    CHECK(eqs(hdr("x-d")->value, hdr("x-d")->value_len, "v"));
    CHECK(eqs(hdr("x-e")->value, hdr("x-e")->value_len, "v"));
    CHECK(eqs(hdr("x-f")->value, hdr("x-f")->value_len, "caf\xc3\xa9 \x80\xff"));
    CHECK(eqs(hdr("x-g")->value, hdr("x-g")->value_len,
              "\"quoted, stuff\" ;a=b !#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"));
    CHECK(eqs(R.headers[8].name, R.headers[8].name_len, "!#$%&'*+-.^_`|~09azAZ"));
}

TEST(no_headers_http10)
{
    OK("GET / HTTP/1.0\r\n\r\n");
    CHECK(R.minor == 0 && R.nheaders == 0 && !R.keep_alive);
    OK("HEAD /index.html HTTP/1.0\r\nUser-Agent: x\r\n\r\n");
    CHECK(R.minor == 0 && R.nheaders == 1);
}

TEST(methods)
{
    OK("DELETE /a HTTP/1.1\r\n" HOST "\r\n");
    OK("PROPFIND /a HTTP/1.1\r\n" HOST "\r\n");
    OK("get / HTTP/1.1\r\n" HOST "\r\n"); /* case is the caller's business */
    CHECK(eqs(R.method, R.method_len, "get"));
    OK("x!#$%&'*+-.^_`|~9 /a HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.method, R.method_len, "x!#$%&'*+-.^_`|~9"));
}

TEST(query_split)
{
    OK("GET /a/b?c=d&e HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.path, R.path_len, "/a/b") && eqs(R.query, R.query_len, "c=d&e"));
    OK("GET /a? HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.path, R.path_len, "/a") && R.query != NULL && R.query_len == 0);
    CHECK(R.query == R.target + R.target_len);
    OK("GET /a?b?c HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.path, R.path_len, "/a") && eqs(R.query, R.query_len, "b?c"));
    OK("GET /?x HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.path, R.path_len, "/") && eqs(R.query, R.query_len, "x"));
    OK("GET /%20a%3F HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.path, R.path_len, "/%20a%3F") && R.query == NULL);
    OK("GET /caf\xc3\xa9?q=\xff HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.path, R.path_len, "/caf\xc3\xa9") && eqs(R.query, R.query_len, "q=\xff"));
    OK("GET //a HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.path, R.path_len, "//a"));
}

TEST(absolute_form)
{
    OK("GET http://example.com/a/b?q=1 HTTP/1.1\r\n" HOST "\r\n");
    CHECK(R.form == SRV_FORM_ABSOLUTE);
    CHECK(eqs(R.target, R.target_len, "http://example.com/a/b?q=1"));
    CHECK(eqs(R.path, R.path_len, "http://example.com/a/b?q=1"));
    CHECK(eqs(R.query, R.query_len, "q=1"));
    OK("GET https://example.com HTTP/1.1\r\n" HOST "\r\n");
    CHECK(R.form == SRV_FORM_ABSOLUTE && R.query == NULL);
    OK("GET HTTP://Example.COM:8080?q HTTP/1.1\r\n" HOST "\r\n"); /* scheme case */
    CHECK(R.form == SRV_FORM_ABSOLUTE && eqs(R.query, R.query_len, "q"));
    OK("GET hTtPs://[::1]:8443/a@b?c=@ HTTP/1.1\r\n" HOST "\r\n"); /* '@' after the authority */
    CHECK(R.form == SRV_FORM_ABSOLUTE);
    OK("OPTIONS http://example.com HTTP/1.1\r\n" HOST "\r\n");
    OK("GET http://example.com/ HTTP/1.0\r\n\r\n");
    ERR("GET example HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("GET ://x HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("GET 1http://x HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("GET ht_tp://x HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("GET ?a HTTP/1.1\r\n" HOST "\r\n", 400);
}

TEST(asterisk_and_authority_form)
{
    OK("OPTIONS * HTTP/1.1\r\n" HOST "\r\n");
    CHECK(R.form == SRV_FORM_ASTERISK);
    CHECK(eqs(R.path, R.path_len, "*") && R.query == NULL);
    ERR("GET * HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("options * HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("OPTIONS *x HTTP/1.1\r\n" HOST "\r\n", 400);
    OK("OPTIONS /a HTTP/1.1\r\n" HOST "\r\n");
    CHECK(R.form == SRV_FORM_ORIGIN);
    OK("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    CHECK(R.form == SRV_FORM_AUTHORITY);
    CHECK(eqs(R.path, R.path_len, "example.com:443") && R.query == NULL);
    ERR("CONNECT / HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("CONNECT * HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("CONNECT example.com HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("CONNECT http://example.com:80/ HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("CONNECT a:1?x HTTP/1.1\r\n" HOST "\r\n", 400);
}

/* Only http and https URIs name something this server serves (RFC 9110
 * 4.2); every other scheme, however well-formed, is 400. */
TEST(absolute_form_other_schemes)
{
    static const char *bad[] = {
        "svn+ssh.x-y9:z", "ftp://example.com/", "urn:isbn:0451450523",
        "mailto:a@example.com", "file:///etc/passwd", "httpx://example.com/",
        "http:/example.com/", "http:example.com", "https:", "http:",
        "ws://example.com/", "javascript:alert(1)",
    };
    char buf[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\n" HOST "\r\n", bad[i]);
        ERRS(buf, 400);
        CHECK(strstr(R.error, "http or https"));
    }
}

/* RFC 9112 3.2.3: authority-form is CONNECT's alone. A "host:port" target
 * with any other method reads as an absolute-URI whose scheme is the host,
 * which a proxy in front may route as authority-form and we would serve as
 * a path: 400, named as what it is. */
TEST(authority_form_needs_connect)
{
    static const char *methods[] = {"GET", "POST", "PUT", "OPTIONS", "HEAD", "connect"};
    static const char *targets[] = {"example.com:443", "localhost:8080", "a:1", "127.0.0.1:80"};
    char buf[256];
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
            snprintf(buf, sizeof buf, "%s %s HTTP/1.1\r\n" HOST "\r\n",
                     methods[m], targets[t]);
            ERRS(buf, 400);
            CHECK(strstr(R.error, "CONNECT"));
        }
    }
    /* CONNECT itself: uri-host ":" port, both present, nothing else */
    OK("CONNECT [::1]:443 HTTP/1.1\r\n" HOST "\r\n");
    CHECK(R.form == SRV_FORM_AUTHORITY);
    OK("CONNECT 127.0.0.1:8080 HTTP/1.1\r\n" HOST "\r\n");
    OK("CONNECT a:65535 HTTP/1.0\r\n\r\n");
    static const char *bad[] = {
        "example.com:", ":443", "[::1]", "[::1]:", "user@example.com:443",
        "user:pw@example.com:443", "a:1:2", "a:123456", "a\\b:1", "a%zz:1",
        "a:1#f", "[::1]x:1", "443", "a:-1", "a:+1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "CONNECT %s HTTP/1.1\r\n" HOST "\r\n", bad[i]);
        ERRS(buf, 400);
        CHECK(strstr(R.error, "CONNECT"));
    }
}

/* RFC 9110 4.2.4: userinfo in an http(s) URI is deprecated and a recipient
 * SHOULD treat it as an error; here it would also have become HTTP_HOST
 * (the target's authority replaces Host, RFC 9112 3.2.2). */
TEST(absolute_form_userinfo_refused)
{
    static const char *bad[] = {
        "http://user:pass@example.com/", "http://user@example.com/",
        "https://@example.com/a", "http://a:b@c:80?q", "HTTP://u@h",
        "http://good.example@evil.example/", "http://u:p@[::1]:80/",
    };
    char buf[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\n" HOST "\r\n", bad[i]);
        ERRS(buf, 400);
        CHECK(strstr(R.error, "userinfo"));
    }
}

/* The target's authority stands in for Host (RFC 9112 3.2.2), so it must
 * be a valid, non-empty Host value (RFC 9110 4.2.1: an http URI with an
 * empty host MUST be rejected). */
TEST(absolute_form_host_checked)
{
    static const char *bad[] = {
        "http:///path", "http://", "https://?q", "http://:80/", "http://a\\b/",
        "http://[::1/", "http://h:99999999/", "http://h:8a/", "http://%zz/",
        "http://h\"/", "http://[]/", "http://a:1:2/", "http://h\xc3\xa9/",
    };
    char buf[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\n" HOST "\r\n", bad[i]);
        ERRS(buf, 400);
        CHECK(strstr(R.error, "host"));
    }
    /* a Host field that disagrees is not an error: the target wins, the
     * server reads the host from it (RFC 9112 3.2.2) */
    OK("GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n");
    /* but the Host field must still be valid, and still be there in 1.1 */
    ERR("GET http://a.example/ HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    ERR("GET http://a.example/ HTTP/1.1\r\n\r\n", 400);
}

TEST(pipelined)
{
    const char two[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                       "POST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc"
                       "GET /3 HTTP/1.0\r\n\r\n";
    size_t n = sizeof two - 1;
    int r1 = parse(two, n);
    CHECK(r1 == 28);
    CHECK(eqs(R.target, R.target_len, "/1"));
    /* every prefix that holds the first head parses to the same */
    for (size_t k = 0; k < n; k++) {
        int r = parse(two, k);
        CHECK(r == (k < 28 ? -2 : 28));
    }
    int r2 = parse(two + r1, n - (size_t)r1);
    CHECK(r2 > 0);
    CHECK(eqs(R.target, R.target_len, "/2") && R.content_length == 3);
    const char *third = two + r1 + r2 + 3;
    int r3 = parse(third, strlen(third));
    CHECK(r3 == (int)strlen(third));
    CHECK(eqs(R.target, R.target_len, "/3") && R.minor == 0);
}

TEST(leading_empty_lines)
{
    OK("\r\nGET / HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.method, R.method_len, "GET"));
    CHECK(R.method == guard_map + guard_room - strlen("\r\nGET / HTTP/1.1\r\n" HOST "\r\n") + 2);
    OK("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.method, R.method_len, "GET"));
    ERR("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("\r\n\r\n\r\n\r\n\r", 400);
    ERR("\nGET / HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("\r\r\nGET / HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR(" \r\nGET / HTTP/1.1\r\n" HOST "\r\n", 400);
    /* pipelined request after a body that ended with a stray CRLF */
    const char s[] = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    int r1 = parse(s, sizeof s - 1);
    CHECK(r1 > 0);
    int r2 = parse(s + r1, sizeof s - 1 - (size_t)r1);
    CHECK(r1 + r2 == (int)sizeof s - 1);
    CHECK(eqs(R.target, R.target_len, "/b"));
}

TEST(lim_null_and_nheaders_restored)
{
    const char s[] = "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n";
    memset(&R, 0, sizeof R);
    R.headers = H;
    R.nheaders = 7;
    CHECK(srv_parse_request(s, 30, &R, NULL) == -2);
    CHECK(R.nheaders == 7);
    CHECK(srv_parse_request(s, sizeof s - 1, &R, NULL) == (int)sizeof s - 1);
    CHECK(R.nheaders == 2);
    R.nheaders = 7;
    CHECK(srv_parse_request("GET / HTTP/1.1\r\nX : y\r\n\r\n", 25, &R, NULL) == -1);
    CHECK(R.nheaders == 7);
}

/* ---- keep-alive, Expect ------------------------------------------------ */

TEST(keep_alive_matrix)
{
    static const struct { const char *version, *conn; int ka; } m[] = {
        {"1.1", NULL, 1},
        {"1.1", "close", 0},
        {"1.1", "Close", 0},
        {"1.1", "CLOSE", 0},
        {"1.1", "foo, close", 0},
        {"1.1", "close , foo", 0},
        {"1.1", ",,close,", 0},
        {"1.1", "keep-alive", 1},
        {"1.1", "keep-alive, close", 0},
        {"1.1", "closed", 1},
        {"1.1", "upgrade", 1},
        {"1.1", "", 1},
        {"1.0", NULL, 0},
        {"1.0", "keep-alive", 1},
        {"1.0", "Keep-Alive", 1},
        {"1.0", "foo,  Keep-Alive ", 1},
        {"1.0", "close", 0},
        {"1.0", "keep-alive, close", 0},
        {"1.0", "keep-alived", 0},
        {"1.0", "", 0},
    };
    char buf[256];
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        if (m[i].conn)
            snprintf(buf, sizeof buf, "GET / HTTP/%s\r\nHost: a\r\nConnection: %s\r\n\r\n",
                     m[i].version, m[i].conn);
        else
            snprintf(buf, sizeof buf, "GET / HTTP/%s\r\nHost: a\r\n\r\n", m[i].version);
        OK(buf);
        if ((int)R.keep_alive != m[i].ka)
            fprintf(stderr, "  keep-alive case %zu\n", i);
        CHECK((int)R.keep_alive == m[i].ka);
    }
    /* two Connection fields combine */
    OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nconnection: close\r\n\r\n");
    CHECK(!R.keep_alive);
    OK("GET / HTTP/1.0\r\nConnection: foo\r\nConnection: keep-alive\r\n\r\n");
    CHECK(R.keep_alive);
}

TEST(expect_continue)
{
    OK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    CHECK(R.expect_continue && R.content_length == 5);
    OK("POST / HTTP/1.1\r\nHost: a\r\nexpect:   100-Continue \r\n\r\n");
    CHECK(R.expect_continue);
    OK("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n");
    CHECK(!R.expect_continue);
    OK("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continuex\r\n\r\n");
    CHECK(!R.expect_continue);
    OK("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"); /* RFC 9110 §10.1.1 */
    CHECK(!R.expect_continue);
    OK("POST / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(!R.expect_continue);
}

/* ---- framing ----------------------------------------------------------- */

TEST(content_length_ok)
{
    static const struct { const char *v; int64_t n; } ok[] = {
        {"0", 0}, {"42", 42}, {"007", 7}, {" 5 ", 5}, {"\t5", 5},
        {"9223372036854775807", INT64_MAX},
        {"0000000000000000000000000009223372036854775807", INT64_MAX},
    };
    char buf[256];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:%s\r\n\r\n", ok[i].v);
        OK(buf);
        CHECK(R.content_length == ok[i].n && !R.chunked);
    }
    OK("POST / HTTP/1.0\r\ncontent-LENGTH: 12\r\n\r\n");
    CHECK(R.content_length == 12);
}

TEST(content_length_refused)
{
    static const char *bad[] = {
        "", "abc", "+5", "-5", "-0", "5 5", "5\t5", "1,2", "5, 5", "5,5", "5,",
        ",5", "0x5", "5a", "5.0", "1e3",
        "9223372036854775808", "18446744073709551616", "99999999999999999999999",
    };
    char buf[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n", bad[i]);
        ERRS(buf, 400);
    }
    /* repeated, even identical (our choice, see http_parse.c) */
    ERRS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400);
    ERRS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n", 400);
    /* refused as soon as the second field is complete */
    ERRS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n", 400);
    /* whitespace before colon would smuggle a second length past some peers */
    ERRS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", 400);
}

TEST(transfer_encoding_ok)
{
    static const char *ok[] = {
        "chunked", "Chunked", "CHUNKED", " chunked ", ", chunked", "chunked,", ",, chunked ,",
    };
    char buf[256];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:%s\r\n\r\n", ok[i]);
        OK(buf);
        CHECK(R.chunked && R.content_length == -1);
    }
    OK("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\ntransfer-encoding: chunked\r\n\r\n");
    CHECK(R.chunked);
}

TEST(transfer_encoding_refused)
{
    static const struct { const char *v; int status; } bad[] = {
        {"", 400},
        {"gzip", 400},               /* final coding not chunked */
        {"identity", 400},
        {"chunked, gzip", 400},
        {"chunked, chunked", 400},   /* chunked twice */
        {"chunked;q=1", 400},        /* chunked takes no parameters */
        {"chunked x", 400},
        {"\"chunked\"", 400},
        {"xchunked", 400},
        {"gzip, chunked", 501},      /* a coding we do not implement */
        {"deflate , chunked", 501},
        {"gzip;level=1, chunked", 501},
    };
    char buf[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n", bad[i].v);
        ERRS(buf, bad[i].status);
    }
    ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501);
    ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    /* with Content-Length, in either order */
    ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400);
    ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n", 400);
    /* HTTP/1.0 */
    ERR("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    ERR("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n", 400); /* decided early */
    /* the message names the problem */
    ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    CHECK(strstr(R.error, "Content-Length") && strstr(R.error, "Transfer-Encoding"));
}

TEST(host)
{
    ERR("GET / HTTP/1.1\r\n\r\n", 400);
    CHECK(strstr(R.error, "Host"));
    ERR("GET / HTTP/1.1\r\nX-Host: a\r\nHosts: b\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n", 400); /* decided early */
    ERR("GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n", 400);
    OK("GET / HTTP/1.1\r\nhost:\r\n\r\n"); /* empty Host is allowed (RFC 9110 §7.2) */
    OK("GET / HTTP/1.0\r\nHost: a\r\n\r\n");
}

/* RFC 9110 5.3: a field not defined as a list must not be repeated. The
 * ones whose repetition two hops could read differently are 400 (reasons
 * at semantic_field); list fields, and the singletons we leave alone on
 * purpose (Cookie, User-Agent), still repeat freely. */
TEST(singleton_repeats)
{
    static const struct { const char *a, *b, *name; } once[] = {
        {"Content-Type: text/plain", "content-type: application/json", "Content-Type"},
        {"Content-Type: text/plain", "Content-Type: text/plain", "Content-Type"},
        {"Authorization: Basic YTpi", "AUTHORIZATION: Basic Yzpk", "Authorization"},
        {"Proxy-Authorization: Basic YTpi", "Proxy-Authorization: x", "Proxy-Authorization"},
        {"Range: bytes=0-1", "Range: bytes=5-9", "Range"},
        {"If-Range: \"e1\"", "If-Range: \"e2\"", "If-Range"},
        {"Content-Range: bytes 0-1/2", "Content-Range: bytes 0-1/3", "Content-Range"},
        {"If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
         "If-Modified-Since: Mon, 07 Nov 1994 08:49:37 GMT", "If-Modified-Since"},
        {"If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
         "if-unmodified-since: x", "If-Unmodified-Since"},
        {"Max-Forwards: 1", "Max-Forwards: 5", "Max-Forwards"},
        {"Origin: https://a.example", "Origin: https://b.example", "Origin"},
        {"Referer: https://a.example/", "Referer: https://b.example/", "Referer"},
    };
    char buf[512];
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++) {
        /* once is fine, in any case */
        snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nHost: a\r\n%s\r\n\r\n", once[i].b);
        OK(buf);
        /* twice is 400, other fields in between or not, decided as soon
         * as the second line is complete */
        snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nHost: a\r\n%s\r\nX: 1\r\n%s\r\n",
                 once[i].a, once[i].b);
        ERRS(buf, 400);
        CHECK(strstr(R.error, "more than one") && strstr(R.error, once[i].name));
        snprintf(buf, sizeof buf, "POST / HTTP/1.0\r\n%s\r\n%s\r\n\r\n", once[i].a, once[i].b);
        ERRS(buf, 400);
    }
    /* every singleton once in the same request, and list fields repeated */
    OK("POST / HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
       "Authorization: Basic YTpi\r\nProxy-Authorization: Basic YTpi\r\n"
       "Range: bytes=0-1, 4-5\r\nIf-Range: \"e\"\r\nContent-Range: bytes 0-1/2\r\n"
       "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
       "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
       "Max-Forwards: 1\r\nOrigin: https://a.example\r\nReferer: /\r\n"
       "Accept: text/html\r\nAccept: */*\r\nCookie: a=1\r\nCookie: b=2\r\n"
       "User-Agent: a\r\nUser-Agent: b\r\nX-Forwarded-For: 1.2.3.4\r\n"
       "X-Forwarded-For: 5.6.7.8\r\nCache-Control: no-cache\r\nCache-Control: max-age=0\r\n"
       "Via: 1.1 a\r\nVia: 1.1 b\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\n"
       "Accept-Encoding: gzip\r\nAccept-Encoding: br\r\nConnection: keep-alive\r\n"
       "Connection: Upgrade\r\nContent-Types: x\r\nContent-Types: y\r\n"
       "Referrer: x\r\nReferrer: y\r\n\r\n");
    CHECK(R.nheaders == 34 && R.keep_alive);
}

/* ---- syntax refusals --------------------------------------------------- */

TEST(bare_cr)
{
    ERR("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\n\rX: y\r\n\r\n", 400);
    ERR("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET\r/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nX\r: y\r\nHost: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\n\r ", 400);
    ERR("\r GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

TEST(bare_lf)
{
    ERR("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\n\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\n\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\nX\n: y\r\n\r\n", 400);
    ERR("GET /\n HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET\n/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\n\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\nX:\n\r\n\r\n", 400);
}

TEST(obs_fold_and_field_names)
{
    ERR("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", 400);
    CHECK(strstr(R.error, "obs-fold"));
    ERR("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\n \r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
    CHECK(strstr(R.error, "colon"));
    ERR("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400);
    CHECK(strstr(R.error, "empty"));
    ERR("GET / HTTP/1.1\r\nHost: a\r\nX-Y\r\n\r\n", 400);   /* no colon */
    ERR("GET / HTTP/1.1\r\nHost: a\r\nX Y: b\r\n\r\n", 400);
    static const char nontoken[] = "\"(),/;<=>?@[\\]{}\x7f\x80\xff";
    char buf[128];
    for (const char *c = nontoken; *c; c++) {
        int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\nX%cY: b\r\n\r\n", *c);
        ERRN(buf, (size_t)n, 400);
    }
    for (int c = 0; c < 0x20; c++) {
        int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\nX%cY: b\r\n\r\n", 'x');
        buf[n - 9] = (char)c; /* the 'x' */
        ERRN(buf, (size_t)n, 400);
    }
}

TEST(field_value_controls)
{
    char buf[128];
    for (int c = 0; c < 0x80; c++) {
        if (c == '\t' || (c >= 0x20 && c < 0x7f))
            continue;
        int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\nX: a%cb\r\n\r\n", 'x');
        buf[n - 6] = (char)c;
        ERRN(buf, (size_t)n, 400);
        /* also as the first and last byte of the value */
        n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\nX: %c\r\n\r\n", 'x');
        buf[n - 5] = (char)c;
        ERRN(buf, (size_t)n, 400);
    }
    OK("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n");
    CHECK(eqs(hdr("x")->value, hdr("x")->value_len, "a\tb"));
}

/* The target and value scans go 8 bytes at a time: put each bad byte at
 * every offset of long targets and values, and the good-but-unusual bytes
 * (HTAB, obs-text) too. */
TEST(word_scans_every_offset)
{
    static const char bad_value[] = {0x00, 0x01, 0x08, 0x0a, 0x0b, 0x1f, 0x7f};
    static const char bad_target[] = {0x00, 0x01, 0x09, 0x0a, 0x1f, 0x7f};
    static const char good_value[] = {'\t', ' ', '\x80', '\xff', '~', '!'};
    char buf[256], val[64];
    for (size_t vlen = 1; vlen <= 40; vlen++) {
        for (size_t at = 0; at < vlen; at++) {
            for (size_t b = 0; b < sizeof bad_value; b++) {
                memset(val, 'v', vlen);
                val[at] = bad_value[b];
                int n = sprintf(buf, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
                memcpy(buf + n, val, vlen);
                memcpy(buf + n + vlen, "z\r\n\r\n", 5);
                ERRN(buf, n + vlen + 5, 400);
            }
            for (size_t g = 0; g < sizeof good_value; g++) {
                memset(val, 'v', vlen);
                val[at] = good_value[g];
                int n = sprintf(buf, "GET / HTTP/1.1\r\nHost: a\r\nX: z");
                memcpy(buf + n, val, vlen);
                memcpy(buf + n + vlen, "z\r\n\r\n", 6); /* with the NUL */
                int r = parse(buf, strlen(buf));
                CHECK(r == (int)strlen(buf));
                CHECK(hdr("x")->value_len == vlen + 2);
                CHECK(memcmp(hdr("x")->value + 1, val, vlen) == 0);
            }
            for (size_t b = 0; b < sizeof bad_target; b++) {
                memset(val, 'p', vlen);
                val[at] = bad_target[b];
                int n = sprintf(buf, "GET /");
                memcpy(buf + n, val, vlen);
                memcpy(buf + n + vlen, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
                ERRN(buf, n + vlen + 22, 400);
            }
            memset(val, 'p', vlen);
            val[at] = '\xc3';
            int n = sprintf(buf, "GET /");
            memcpy(buf + n, val, vlen);
            memcpy(buf + n + vlen, " HTTP/1.1\r\nHost: a\r\n\r\n", 23); /* with the NUL */
            CHECK(parse(buf, strlen(buf)) == (int)strlen(buf));
            CHECK(R.target_len == vlen + 1 && memcmp(R.target + 1, val, vlen) == 0);
        }
    }
}

TEST(nul_anywhere)
{
    static const char good[] = "GET /a?b HTTP/1.1\r\nHost: a\r\nX-Y: zz\r\n\r\n";
    char buf[sizeof good];
    for (size_t i = 0; i < sizeof good - 1; i++) {
        memcpy(buf, good, sizeof good);
        buf[i] = '\0';
        ERRN(buf, sizeof good - 1, 400);
    }
}

TEST(request_line_refused)
{
    ERR(" / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("G(ET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET@ / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("G\x80T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    CHECK(strstr(R.error, "SP"));
    ERR("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);
    ERR("GET /\tHTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET / \tHTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET /a\x1b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET\r\nHost: a\r\n\r\n", 400);
    ERR("GET /\r\nHost: a\r\n\r\n", 400);     /* HTTP/0.9 */
    ERR("GET / \r\nHost: a\r\n\r\n", 400);
    ERR("GET HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400);
    ERR("GET / / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    ERR("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400); /* TLS hello */
}

TEST(versions)
{
    static const struct { const char *v; int status; } m[] = {
        {"HTTP/2.0", 505}, {"HTTP/1.2", 505}, {"HTTP/0.9", 505}, {"HTTP/1.9", 505},
        {"HTTP/3.0", 505}, {"HTTP/9.1", 505},
        {"HTTP/1", 400}, {"HTTP/1.", 400}, {"HTTP/1.1x", 400}, {"HTTP/11.1", 400},
        {"HTTP/1.10", 400}, {"http/1.1", 400}, {"HTTP/1,1", 400}, {"HTTX/1.1", 400},
        {"HTTP/a.1", 400}, {"HTTP/1.a", 400}, {"HTTP/2", 400}, {"HTTP\\1.1", 400},
        {"HTTP 1.1", 400}, {"1.1", 400}, {"HTTP/", 400}, {"HTTP/+1.1", 400},
    };
    char buf[128];
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        snprintf(buf, sizeof buf, "GET / %s\r\nHost: a\r\n\r\n", m[i].v);
        ERRS(buf, m[i].status);
    }
    /* decided on the request line alone */
    ERR("GET / HTTP/2.0\r\n", 505);
    ERR("GET / HTTP/1.1x\r\n", 400);
}

/* ---- limits ------------------------------------------------------------ */

/* "GET /aaa... HTTP/1.1" with a request line of exactly n bytes. */
static size_t make_line(char *buf, size_t n, const char *rest)
{
    size_t fixed = strlen("GET / HTTP/1.1");
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', n - fixed);
    memcpy(buf + 5 + (n - fixed), " HTTP/1.1\r\n", 11);
    size_t len = n + 2;
    memcpy(buf + len, rest, strlen(rest));
    return len + strlen(rest);
}

TEST(limit_request_line)
{
    static char buf[20000];
    struct srv_limits lim = {.max_request_line = 64};
    size_t n = make_line(buf, 64, "Host: a\r\n\r\n");
    CHECK(parse_prefixes(buf, n, MAXH, &lim) == (int)n);
    n = make_line(buf, 65, "Host: a\r\n\r\n");
    CHECK(expect_err(buf, n, 414, MAXH, &lim));
    /* partial: -2 up to 64 bytes without CR, 414 from the 65th on */
    for (size_t k = 0; k <= 80; k++) {
        int r = parse_cap(buf, k, MAXH, &lim);
        CHECK(r == (k <= 64 ? -2 : -1));
        if (r == -1)
            CHECK(R.status == 414);
    }
    /* CR at position 64 is fine even when the LF has not come yet */
    n = make_line(buf, 64, "");
    CHECK(parse_cap(buf, 65, MAXH, &lim) == -2);
    /* leading empty lines do not count against the request line */
    memmove(buf + 4, buf, n);
    memcpy(buf, "\r\n\r\n", 4);
    memcpy(buf + 4 + n, "Host: a\r\n\r\n", 11);
    CHECK(parse_cap(buf, n + 15, MAXH, &lim) == (int)n + 15);
    /* the default, 8190 */
    n = make_line(buf, 8190, "Host: a\r\n\r\n");
    CHECK(parse(buf, n) == (int)n);
    n = make_line(buf, 8191, "Host: a\r\n\r\n");
    CHECK(expect_err(buf, n, 414, MAXH, NULL));
    CHECK(expect_err(buf, 8191, 414, MAXH, NULL));
    CHECK(parse(buf, 8190) == -2);
    /* a long method counts too */
    memset(buf, 'G', 100);
    CHECK(expect_err(buf, 100, 414, MAXH, &lim));
}

TEST(limit_header_size)
{
    static char buf[20000];
    struct srv_limits lim = {.max_header_size = 32};
    const char *rl = "GET / HTTP/1.1\r\nHost: a\r\n";
    size_t rll = strlen(rl);
    memcpy(buf, rl, rll);
    /* "X: " + 29 bytes = 32 */
    memcpy(buf + rll, "X: ", 3);
    memset(buf + rll + 3, 'v', 29);
    memcpy(buf + rll + 32, "\r\n\r\n", 4);
    CHECK(parse_prefixes(buf, rll + 36, MAXH, &lim) == (int)rll + 36);
    CHECK(hdr("x")->value_len == 29);
    memset(buf + rll + 3, 'v', 30);
    memcpy(buf + rll + 33, "\r\n\r\n", 4);
    CHECK(expect_err(buf, rll + 37, 431, MAXH, &lim));
    for (size_t k = rll; k <= rll + 40; k++) {
        int r = parse_cap(buf, k, MAXH, &lim);
        CHECK(r == (k <= rll + 32 ? -2 : -1));
        if (r == -1)
            CHECK(R.status == 431);
    }
    /* trailing OWS counts: the limit is on the line as sent */
    memcpy(buf + rll, "X: ", 3);
    memset(buf + rll + 3, ' ', 30);
    CHECK(expect_err(buf, rll + 37, 431, MAXH, &lim));
    /* a long name, without colon yet */
    memset(buf + rll, 'N', 40);
    CHECK(expect_err(buf, rll + 40, 431, MAXH, &lim));
    /* the default, 8190 */
    memcpy(buf + rll, "X: ", 3);
    memset(buf + rll + 3, 'v', 8187);
    memcpy(buf + rll + 8190, "\r\n\r\n", 4);
    CHECK(parse(buf, rll + 8194) == (int)rll + 8194);
    memset(buf + rll + 3, 'v', 8188);
    memcpy(buf + rll + 8191, "\r\n\r\n", 4);
    CHECK(expect_err(buf, rll + 8195, 431, MAXH, NULL));
    CHECK(expect_err(buf, rll + 8191, 431, MAXH, NULL));
    CHECK(parse(buf, rll + 8190) == -2);
}

static size_t make_fields(char *buf, size_t nfields, size_t vlen, const char *end)
{
    size_t n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 1; i < nfields; i++) {
        n += (size_t)sprintf(buf + n, "X-%zu: ", i);
        memset(buf + n, 'v', vlen);
        n += vlen;
        memcpy(buf + n, "\r\n", 2);
        n += 2;
    }
    memcpy(buf + n, end, strlen(end));
    return n + strlen(end);
}

TEST(limit_header_count)
{
    static char buf[200000];
    struct srv_limits lim = {.max_headers = 3};
    size_t n = make_fields(buf, 3, 1, "\r\n");
    CHECK(parse_prefixes(buf, n, MAXH, &lim) == (int)n);
    CHECK(R.nheaders == 3);
    n = make_fields(buf, 4, 1, "\r\n");
    CHECK(expect_err(buf, n, 431, MAXH, &lim));
    /* decided on the first byte of the 4th field */
    n = make_fields(buf, 3, 1, "X");
    CHECK(expect_err(buf, n, 431, MAXH, &lim));
    CHECK(parse_cap(buf, n - 1, MAXH, &lim) == -2);
    /* the caller's array is a limit too */
    n = make_fields(buf, 3, 1, "\r\n");
    CHECK(parse_cap(buf, n, 3, NULL) == (int)n);
    CHECK(expect_err(buf, n, 431, 2, NULL));
    CHECK(expect_err(buf, n, 431, 0, NULL));
    /* the default, 100 */
    n = make_fields(buf, 100, 3, "\r\n");
    CHECK(parse(buf, n) == (int)n);
    CHECK(R.nheaders == 100);
    n = make_fields(buf, 101, 3, "\r\n");
    CHECK(expect_err(buf, n, 431, MAXH, NULL));
}

TEST(limit_head_size)
{
    static char buf[200000];
    struct srv_limits lim = {.max_head_size = 100};
    /* exactly 100 bytes */
    size_t n = make_fields(buf, 2, 1, "\r\n");
    size_t pad = 100 - n;
    n = make_fields(buf, 2, 1 + pad, "\r\n");
    CHECK(n == 100);
    CHECK(parse_prefixes(buf, n, MAXH, &lim) == 100);
    n = make_fields(buf, 2, 2 + pad, "\r\n");
    CHECK(n == 101);
    CHECK(expect_err(buf, n, 431, MAXH, &lim));
    /* partial: 99 bytes -2, 100 bytes without the end -> 431 */
    CHECK(parse_cap(buf, 99, MAXH, &lim) == -2);
    CHECK(expect_err(buf, 100, 431, MAXH, &lim));
    /* the last LF is byte 101 */
    n = make_fields(buf, 2, 1 + pad, "\r\n");
    CHECK(parse_cap(buf, 99, MAXH, &lim) == -2);
    buf[99] = 'x';
    CHECK(expect_err(buf, 100, 400, MAXH, &lim));
    /* leading empty lines count */
    n = make_fields(buf, 2, 1 + pad - 2, "\r\n");
    memmove(buf + 2, buf, n);
    memcpy(buf, "\r\n", 2);
    CHECK(parse_cap(buf, n + 2, MAXH, &lim) == 100);
    memmove(buf + 2, buf, n + 2);
    memcpy(buf, "\r\n", 2);
    CHECK(expect_err(buf, n + 4, 431, MAXH, &lim));
    /* huge limits are fine (the head size is capped at INT_MAX) */
    struct srv_limits huge = {SIZE_MAX, SIZE_MAX, SIZE_MAX, SIZE_MAX};
    n = make_fields(buf, 3, 10, "\r\n");
    CHECK(parse_prefixes(buf, n, MAXH, &huge) == (int)n);
    /* the default, 65536: 99 fields of 700 bytes */
    n = make_fields(buf, 90, 700, "\r\n");
    CHECK(n < 65536);
    CHECK(parse(buf, n) == (int)n);
    n = make_fields(buf, 99, 700, "\r\n");
    CHECK(n > 65536);
    CHECK(expect_err(buf, n, 431, MAXH, NULL));
    CHECK(expect_err(buf, 65536, 431, MAXH, NULL));
    CHECK(parse(buf, 65535) == -2);
}

TEST(limits_never_partial_forever)
{
    /* Growing garbage-free input must turn into an error by the limit. */
    static char buf[70000];
    memset(buf, 'a', sizeof buf);
    memcpy(buf, "GET /", 5);
    CHECK(parse(buf, 8190) == -2);
    CHECK(parse(buf, 8191) == -1 && R.status == 414);
    size_t n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nX: ");
    memset(buf + n, 'a', sizeof buf - n);
    CHECK(parse(buf, 16 + 8190) == -2);
    CHECK(parse(buf, 16 + 8191) == -1 && R.status == 431);
    /* many short fields, no end: 431 by count */
    n = make_fields(buf, 200, 1, "");
    CHECK(parse(buf, n) == -1 && R.status == 431);
}

/* ---- chunked ----------------------------------------------------------- */

struct dec {
    ssize_t ret;       /* -2, -1 or bytes left over */
    char out[8192];
    size_t outlen;
    const char *error;
    uint64_t decoded;
};

/* Feeds in[0..n) cut at the given offsets (ascending), each piece copied to
 * the guard page; stops at completion or error. */
static void feed(const struct srv_chunked *proto, const char *in, size_t n,
                 const size_t *cuts, size_t ncuts, struct dec *d)
{
    struct srv_chunked st = *proto;
    d->ret = -2;
    d->outlen = 0;
    d->error = NULL;
    size_t from = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t to = c < ncuts ? cuts[c] : n;
        size_t len = to - from;
        char *b = at_guard(in + from, len);
        ssize_t r = srv_chunked_decode(&st, b, &len);
        if (d->outlen + len > sizeof d->out)
            abort();
        memcpy(d->out + d->outlen, b, len);
        d->outlen += len;
        from = to;
        if (r >= 0) {
            d->ret = r + (ssize_t)(n - to);
            break;
        }
        if (r == -1) {
            d->ret = -1;
            d->error = st.error;
            break;
        }
    }
    d->decoded = st.decoded;
}

static struct dec D0, D1;

/* Decodes whole, byte by byte and in every 2-way split; all must agree.
 * Returns the whole decoding in D0. */
static int dec_all_ways(const struct srv_chunked *proto, const char *in, size_t n)
{
    feed(proto, in, n, NULL, 0, &D0);
    CHECK_OR(D0.decoded == D0.outlen, 0);
    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    for (size_t i = 0; i < n; i++)
        cuts[i] = i + 1;
    feed(proto, in, n, cuts, n ? n - 1 : 0, &D1);
    int same = D1.ret == D0.ret && D1.outlen == D0.outlen &&
               memcmp(D1.out, D0.out, D0.outlen) == 0 && D1.error == D0.error;
    if (!same)
        fprintf(stderr, "  byte-by-byte differs: %zd vs %zd\n", D1.ret, D0.ret);
    for (size_t k = 0; same && k <= n; k++) {
        size_t cut = k;
        feed(proto, in, n, &cut, 1, &D1);
        same = D1.ret == D0.ret && D1.outlen == D0.outlen &&
               memcmp(D1.out, D0.out, D0.outlen) == 0 && D1.error == D0.error;
        if (!same)
            fprintf(stderr, "  split at %zu differs: %zd vs %zd\n", k, D1.ret, D0.ret);
    }
    free(cuts);
    CHECK_OR(same, 0);
    return 1;
}

static struct srv_chunked proto_default(void)
{
    struct srv_chunked st;
    srv_chunked_init(&st);
    return st;
}

#define DEC_OK(in, body, left)                                              \
    do {                                                                    \
        struct srv_chunked p_ = proto_default();                            \
        CHECK(dec_all_ways(&p_, in, sizeof(in) - 1));                       \
        if (D0.ret != (left))                                               \
            fprintf(stderr, "  %s -> %zd (%s)\n", in, D0.ret,               \
                    D0.error ? D0.error : "");                              \
        CHECK(D0.ret == (left));                                            \
        CHECK(D0.outlen == sizeof(body) - 1);                               \
        CHECK(memcmp(D0.out, body, sizeof(body) - 1) == 0);                 \
        CHECK(D0.decoded == sizeof(body) - 1);                              \
    } while (0)

#define DEC_ERR_P(proto, in, len)                                           \
    do {                                                                    \
        CHECK(dec_all_ways((proto), (in), (len)));                          \
        if (D0.ret != -1)                                                   \
            fprintf(stderr, "  %.*s -> %zd, wanted an error\n", (int)(len), \
                    (in), D0.ret);                                          \
        CHECK(D0.ret == -1 && D0.error && D0.error[0]);                     \
    } while (0)

#define LIT(s) (s), sizeof(s) - 1
#define DEC_ERR_L(proto, lit) DEC_ERR_P(proto, lit, sizeof(lit) - 1)

#define DEC_ERR(in)                                                         \
    do {                                                                    \
        struct srv_chunked p_ = proto_default();                            \
        DEC_ERR_P(&p_, in, sizeof(in) - 1);                                 \
    } while (0)

TEST(chunked_valid)
{
    DEC_OK("5\r\nhello\r\n0\r\n\r\n", "hello", 0);
    DEC_OK("0\r\n\r\n", "", 0);
    DEC_OK("000\r\n\r\n", "", 0);
    DEC_OK("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0);
    DEC_OK("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n",
           "0123456789abcdefghij", 0);
    DEC_OK("0005\r\nhello\r\n0\r\n\r\n", "hello", 0);
    DEC_OK("1\r\n\r\r\n2\r\n\r\n\r\n3\r\n\0\n\0\r\n0\r\n\r\n", "\r\r\n\0\n\0", 0);
    DEC_OK("5;foo=bar\r\nhello\r\n0;last\r\n\r\n", "hello", 0);
    DEC_OK("5;a;b=c;d=\"q \\\"x\\\" \t\x80;=\"\r\nhello\r\n0\r\n\r\n", "hello", 0);
    DEC_OK("5;a=\"\"\r\nhello\r\n0\r\n\r\n", "hello", 0);
    DEC_OK("5;a=\"x\";b;c=\"\\\\\"\r\nhello\r\n0\r\n\r\n", "hello", 0);
    DEC_OK("5\r\nhello\r\n0\r\nX-Trailer: a b\r\nY:\r\nZ:\t\x80\r\n\r\n", "hello", 0);
    DEC_OK("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "abc", 16);
    DEC_OK("3\r\nabc\r\n0\r\nT: 1\r\n\r\n\r\n", "abc", 2);
    DEC_OK("fffffffffffffff\r\n", "", -2);   /* 15 digits: fine, data pending */
    DEC_OK("5\r\nhel", "hel", -2);
    DEC_OK("5\r\nhello\r\n0\r\n", "hello", -2);
    DEC_OK("", "", -2);
}

TEST(chunked_large)
{
    static char in[6000], body[5000];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (char)(i * 7 + 3);
    size_t n = (size_t)sprintf(in, "%zx\r\n", (size_t)3000);
    memcpy(in + n, body, 3000);
    n += 3000;
    n += (size_t)sprintf(in + n, "\r\n7D0\r\n");
    memcpy(in + n, body + 3000, 2000);
    n += 2000;
    n += (size_t)sprintf(in + n, "\r\n0\r\n\r\nXY");
    struct srv_chunked p = proto_default();
    CHECK(dec_all_ways(&p, in, n));
    CHECK(D0.ret == 2 && D0.outlen == 5000 && memcmp(D0.out, body, 5000) == 0);
    CHECK(D0.decoded == 5000);
}

TEST(chunked_in_place_and_leftover_position)
{
    char buf[] = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT";
    size_t len = sizeof buf - 1;
    struct srv_chunked st;
    srv_chunked_init(&st);
    ssize_t r = srv_chunked_decode(&st, buf, &len);
    CHECK(r == 4);
    CHECK(len == 5 && memcmp(buf, "abcde", 5) == 0);
    CHECK(memcmp(buf + sizeof buf - 1 - r, "NEXT", 4) == 0);
    CHECK(st.decoded == 5);
    /* after completion everything is left over */
    char more[] = "GET";
    len = 3;
    CHECK(srv_chunked_decode(&st, more, &len) == 3 && len == 0);
    /* errors are sticky */
    char bad[] = "x\r\n";
    srv_chunked_init(&st);
    len = 3;
    CHECK(srv_chunked_decode(&st, bad, &len) == -1 && st.error);
    char good[] = "0\r\n\r\n";
    len = 5;
    CHECK(srv_chunked_decode(&st, good, &len) == -1 && len == 0);
    /* memset 0 is a valid init */
    memset(&st, 0, sizeof st);
    char g2[] = "1\r\nz\r\n0\r\n\r\n";
    len = sizeof g2 - 1;
    CHECK(srv_chunked_decode(&st, g2, &len) == 0 && len == 1 && g2[0] == 'z');
}

TEST(chunked_size_refused)
{
    DEC_ERR("x\r\n");
    DEC_ERR("\r\n");
    DEC_ERR("+5\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("-5\r\nhello\r\n0\r\n\r\n");
    DEC_ERR(" 5\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5 \r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5\t\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5 ;a\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("0x5\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5g\r\n");
    DEC_ERR("5\nhello\r\n0\r\n\r\n");
    DEC_ERR("5\rhello\r\n0\r\n\r\n");
    DEC_ERR("5\r\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5\0\r\n");
    DEC_ERR("1000000000000000\r\n");       /* 16 digits */
    DEC_ERR("0000000000000001\r\n");       /* 16 digits, even if small */
    DEC_ERR("ffffffffffffffff\r\n");
    DEC_ERR("0\n\r\n");
    DEC_ERR("0 \r\n\r\n");
    DEC_ERR("5\r\nhello\r\n\r\n0\r\n\r\n"); /* empty size line */
}

TEST(chunked_data_crlf_refused)
{
    DEC_ERR("5\r\nhelloX\r\n0\r\n\r\n");
    DEC_ERR("5\r\nhelloX\n0\r\n\r\n");
    DEC_ERR("5\r\nhello\n\n0\r\n\r\n");
    DEC_ERR("5\r\nhello\r\r0\r\n\r\n");
    DEC_ERR("5\r\nhello\n0\r\n\r\n");
    DEC_ERR("5\r\nhello\rX0\r\n\r\n");
    DEC_ERR("5\r\nhello0\r\n\r\n");
    DEC_ERR("3\r\nhello\r\n0\r\n\r\n");     /* size says 3, data longer */
    DEC_ERR("5\r\nhel\r\n0\r\n\r\n");       /* size says 5, data shorter */
}

TEST(chunked_ext_refused)
{
    DEC_ERR("5;\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5; a\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a \r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a =b\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a= b\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a=\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a=b c\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a=b=c\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;=b\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a;\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a=\"unterminated\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a=\"x\x01\"\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a=\"x\x7f\"\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a=\"x\\\x01\"\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a=\"x\\\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a(b\r\nhello\r\n0\r\n\r\n");
    DEC_ERR("5;a\nhello\r\n0\r\n\r\n");
    DEC_ERR("0;a\n\r\n");
}

TEST(chunked_trailers_refused)
{
    DEC_ERR("0\r\nX: a\r\n b\r\n\r\n");     /* obs-fold */
    DEC_ERR("0\r\n X: a\r\n\r\n");
    DEC_ERR("0\r\nX : a\r\n\r\n");
    DEC_ERR("0\r\n: a\r\n\r\n");
    DEC_ERR("0\r\nX\r\n\r\n");              /* no colon */
    DEC_ERR("0\r\nX(: a\r\n\r\n");
    DEC_ERR("0\r\nX: a\x01\r\n\r\n");
    DEC_ERR("0\r\nX: a\x7f\r\n\r\n");
    DEC_ERR("0\r\nX: a\0\r\n\r\n");
    DEC_ERR("0\r\nX: a\n\r\n");
    DEC_ERR("0\r\nX: a\rb\r\n\r\n");
    DEC_ERR("0\r\nX: a\r\n\n");
    DEC_ERR("0\r\n\n");
    DEC_ERR("0\r\n\rX");
}

/* RFC 9110 6.5.1: framing, routing, connection, request-modifier,
 * credential and content-metadata fields must not come in trailers: 400
 * (see refused_trailers for the list and why not dropped), wherever the
 * input is split, in any letter case, before or after allowed ones. */
TEST(chunked_trailer_fields_refused)
{
    static const char *names[] = {
        "Content-Length", "Transfer-Encoding", "Trailer", "Connection",
        "Keep-Alive", "Proxy-Connection", "TE", "Upgrade", "Host",
        "Max-Forwards", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host",
        "X-Forwarded-Proto", "Cache-Control", "Pragma", "Expect", "Range",
        "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since",
        "If-Range", "Authorization", "Proxy-Authorization", "Cookie",
        "Set-Cookie", "Content-Encoding", "Content-Type", "Content-Range",
    };
    char in[256], upper[64];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct srv_chunked p = proto_default();
        int n = snprintf(in, sizeof in, "5\r\nhello\r\n0\r\n%s: 1\r\n\r\n", names[i]);
        DEC_ERR_P(&p, in, (size_t)n);
        CHECK(strstr(D0.error, names[i]) && strstr(D0.error, "trailer"));
        CHECK(D0.outlen == 5); /* the data before it was delivered */
        size_t k = 0;
        for (; names[i][k]; k++)
            upper[k] = (char)(names[i][k] >= 'a' && names[i][k] <= 'z'
                                  ? names[i][k] - 32 : names[i][k]);
        upper[k] = 0;
        n = snprintf(in, sizeof in, "0\r\nX-Checksum: abc\r\n%s:\r\n\r\n", upper);
        DEC_ERR_P(&p, in, (size_t)n);
        CHECK(strstr(D0.error, names[i]));
        /* decided at the colon, before the value or the end arrive */
        n = snprintf(in, sizeof in, "0\r\n%s:", names[i]);
        DEC_ERR_P(&p, in, (size_t)n);
    }
    /* names that merely look alike, longer names, and fields that may be
     * trailers are still fine */
    DEC_OK("5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Digest: sha-256=:x=:\r\n"
           "Server-Timing: db;dur=5\r\nContent-Lengths: 5\r\nX-Content-Length: 5\r\n"
           "Hosts: a\r\nHos: a\r\nT: 1\r\nTE-X: 1\r\nContent-Length-X: 1\r\n"
           "Proxy-Authorization-Xy: 1\r\nIf-Unmodified-Since-Or-Later: 1\r\n"
           "X-Very-Long-Trailer-Name-Indeed: 1\r\n\r\n", "hello", 0);
}

TEST(chunked_limits)
{
    struct srv_chunked p = proto_default();
    p.max_trailer_size = 12;
    /* "X: 12345678\r\n\r\n" is 15 bytes; "X: 1234567\r\n" + "\r\n" = 14; "X: 12345\r\n\r\n" = 12 */
    CHECK(dec_all_ways(&p, LIT("0\r\nX: 12345\r\n\r\n")));
    CHECK(D0.ret == 0);
    DEC_ERR_L(&p, ("0\r\nX: 123456\r\n\r\n"));
    DEC_ERR_L(&p, ("0\r\nX: 1234567890"));  /* decided early */
    DEC_ERR_L(&p, ("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"));
    /* default trailer limit 8190 */
    static char in[20000];
    size_t n = (size_t)sprintf(in, "0\r\nX: ");
    memset(in + n, 'v', 8190 - 3 - 4);
    n += 8190 - 7;
    memcpy(in + n, "\r\n\r\n", 4);
    n += 4;  /* trailer section = 8190 bytes */
    struct srv_chunked d = proto_default();
    struct dec *w = &D0;
    feed(&d, in, n, NULL, 0, w);
    CHECK(w->ret == 0);
    memmove(in + 4, in + 3, n - 3);
    in[3] = 'Y';
    feed(&d, in, n + 1, NULL, 0, w);
    CHECK(w->ret == -1);

    /* one chunk-size line */
    p = proto_default();
    p.max_chunk_line = 8;
    CHECK(dec_all_ways(&p, LIT("5;a=bcde\r\nhello\r\n0\r\n\r\n")));
    CHECK(D0.ret == 0 && D0.outlen == 5);
    DEC_ERR_L(&p, ("5;a=bcdef\r\nhello\r\n0\r\n\r\n"));
    DEC_ERR_L(&p, ("5;aaaaaaaaaaaaaaaaaaaa"));
    /* the default, 4096 */
    n = (size_t)sprintf(in, "5;a");
    memset(in + n, 'b', 4096 - 3);
    n = 4096;
    n += (size_t)sprintf(in + n, "\r\nhello\r\n0\r\n\r\n");
    feed(&d, in, n, NULL, 0, w);
    CHECK(w->ret == 0 && w->outlen == 5);
    memmove(in + 4, in + 3, n - 3);
    in[3] = 'b';
    feed(&d, in, n + 1, NULL, 0, w);
    CHECK(w->ret == -1);

    /* extensions summed over the body */
    p = proto_default();
    p.max_ext_size = 10;
    CHECK(dec_all_ways(&p, LIT("1;abcd\r\nx\r\n1;efgh\r\ny\r\n0;ij\r\n\r\n")));
    CHECK(D0.ret == 0 && D0.outlen == 2);
    DEC_ERR_L(&p, ("1;abcd\r\nx\r\n1;efgh\r\ny\r\n0;ijk\r\n\r\n"));
}

TEST(chunked_after_head)
{
    /* the way the server uses it: head, then the rest of the buffer */
    char buf[] = "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"
                 "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t total = sizeof buf - 1;
    memset(&R, 0, sizeof R);
    R.headers = H;
    R.nheaders = MAXH;
    int r = srv_parse_request(buf, total, &R, NULL);
    CHECK(r > 0 && R.chunked);
    struct srv_chunked st;
    srv_chunked_init(&st);
    size_t len = total - (size_t)r;
    ssize_t left = srv_chunked_decode(&st, buf + r, &len);
    CHECK(left == 31);
    CHECK(len == 9 && memcmp(buf + r, "Wikipedia", 9) == 0);
    int r2 = srv_parse_request(buf + total - left, (size_t)left, &R, NULL);
    CHECK(r2 == left);
    CHECK(eqs(R.target, R.target_len, "/next"));
}

/* RFC 9112 3.2: Host must be uri-host [":" port]; anything else is 400. */
TEST(host_values)
{
    static const char *good[] = {
        "", "example.com", "example.com:8080", "127.0.0.1", "127.0.0.1:80",
        "[::1]", "[::1]:8000", "[v1.fe80::a+en1]", "a_b.example", "xn--bcher-kva.example",
        "%41%42.example", "example.com:", "host:65535",
    };
    static const char *bad[] = {
        "a b", "a/b", "a@b", "[::1", "[]", "x:99999999", "x:8a", "a?b", "a#b",
        "%4", "%zz.example", "\"q\"", "h\xc3\xa9llo", "[::1]x", "a:1:2",
    };
    char buf[256];

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        OK(buf);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        ERRS(buf, 400);
        CHECK(strcmp(R.error, "invalid Host") == 0);
    }
}

TEST(fragment_refused)
{
    ERR("GET /a#frag HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("GET /a?b?c#frag HTTP/1.1\r\n" HOST "\r\n", 400);
    ERR("GET http://h/p#f HTTP/1.1\r\n" HOST "\r\n", 400);
    OK("GET /a?b?c HTTP/1.1\r\n" HOST "\r\n");
    CHECK(eqs(R.query, R.query_len, "b?c"));
}

int main(void)
{
    RUN(simple_get);
    RUN(browser_get);
    RUN(names_preserved_values_trimmed);
    RUN(no_headers_http10);
    RUN(methods);
    RUN(query_split);
    RUN(absolute_form);
    RUN(asterisk_and_authority_form);
    RUN(absolute_form_other_schemes);
    RUN(authority_form_needs_connect);
    RUN(absolute_form_userinfo_refused);
    RUN(absolute_form_host_checked);
    RUN(singleton_repeats);
    RUN(pipelined);
    RUN(leading_empty_lines);
    RUN(lim_null_and_nheaders_restored);
    RUN(keep_alive_matrix);
    RUN(expect_continue);
    RUN(content_length_ok);
    RUN(content_length_refused);
    RUN(transfer_encoding_ok);
    RUN(transfer_encoding_refused);
    RUN(host);
    RUN(bare_cr);
    RUN(bare_lf);
    RUN(obs_fold_and_field_names);
    RUN(field_value_controls);
    RUN(word_scans_every_offset);
    RUN(nul_anywhere);
    RUN(request_line_refused);
    RUN(versions);
    RUN(limit_request_line);
    RUN(limit_header_size);
    RUN(limit_header_count);
    RUN(limit_head_size);
    RUN(limits_never_partial_forever);
    RUN(chunked_valid);
    RUN(chunked_large);
    RUN(chunked_in_place_and_leftover_position);
    RUN(chunked_size_refused);
    RUN(chunked_data_crlf_refused);
    RUN(chunked_ext_refused);
    RUN(chunked_trailers_refused);
    RUN(chunked_trailer_fields_refused);
    RUN(chunked_limits);
    RUN(chunked_after_head);
    RUN(host_values);
    RUN(fragment_refused);
    return CHECK_DONE();
}
