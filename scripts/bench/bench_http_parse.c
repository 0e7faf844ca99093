/* scripts/bench/bench_http_parse.c - how long srv_parse_request takes on a
 * typical browser GET (10 header fields, ~700 bytes), and how fast the
 * chunked decoder goes. A standalone program, not a test: it prints numbers
 * and never fails.
 *
 * Build: gcc -std=gnu11 -O2 -I. scripts/bench/bench_http_parse.c \
 *            server/http_parse.c -o /tmp/bhp && /tmp/bhp [iterations]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/http_parse.h"

static const char request[] =
    "GET /wp-content/uploads/2010/03/hello-kitty-darth-vader-pink.jpg HTTP/1.1\r\n"
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

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 1000000;
    size_t len = sizeof request - 1;
    struct srv_header h[100];
    struct srv_request req;
    volatile long sink = 0;

    /* warm up, and make sure it parses */
    for (int i = 0; i < 1000; i++) {
        req.headers = h;
        req.nheaders = 100;
        if (srv_parse_request(request, len, &req, NULL) != (int)len) {
            fprintf(stderr, "bench request does not parse: %s\n", req.error);
            return 1;
        }
    }

    double best = 1e9;
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        for (long i = 0; i < iters; i++) {
            req.headers = h;
            req.nheaders = 100;
            sink += srv_parse_request(request, len, &req, NULL);
        }
        double ns = (now() - t0) * 1e9 / (double)iters;
        if (ns < best)
            best = ns;
    }
    printf("head: %zu bytes, %zu fields: %.1f ns/request (best of 5 x %ld), %.2f GB/s\n",
           len, req.nheaders, best, iters, (double)len / best);

    /* chunked: 1 MiB body in 4 KiB chunks, decoded in 64 KiB reads */
    size_t body = 1 << 20, csz = 4096, nch = body / csz;
    size_t inlen = nch * (csz + 9) + 5;
    char *src = malloc(inlen), *buf = malloc(inlen);
    size_t n = 0;
    for (size_t c = 0; c < nch; c++) {
        n += (size_t)sprintf(src + n, "%zx\r\n", csz);
        memset(src + n, 'x', csz);
        n += csz;
        memcpy(src + n, "\r\n", 2);
        n += 2;
    }
    memcpy(src + n, "0\r\n\r\n", 5);
    n += 5;
    int reps = 200;
    double t0 = now();
    for (int r = 0; r < reps; r++) {
        memcpy(buf, src, n);
        struct srv_chunked st;
        srv_chunked_init(&st);
        for (size_t off = 0; off < n;) {
            size_t piece = n - off < 65536 ? n - off : 65536;
            size_t l = piece;
            ssize_t ret = srv_chunked_decode(&st, buf + off, &l);
            sink += (long)l;
            off += piece;
            if (ret == -1) {
                fprintf(stderr, "chunked: %s\n", st.error);
                return 1;
            }
        }
    }
    double secs = now() - t0;
    printf("chunked: %.2f GB/s of body (4 KiB chunks, 64 KiB reads, incl. a memcpy)\n",
           (double)body * reps / secs / 1e9);
    free(src);
    free(buf);
    return sink == 42 ? 2 : 0;
}
