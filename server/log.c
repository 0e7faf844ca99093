/* server/log.c - the Date header and the access log.
 *
 * Both need the time as text; formatting it once per second (not per
 * request) keeps strftime off the hot path. The access log is one line per
 * request in the common log format plus the request duration, written
 * with a single write(2) to stderr so lines never interleave.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/py.h"

static time_t srv_date_at = -1, srv_clf_at = -1;
static char srv_date[64], srv_clf[64];

const char *srv_http_date(void)
{
    time_t now = time(NULL);
    struct tm tm;

    if (now != srv_date_at) {
        gmtime_r(&now, &tm);
        strftime(srv_date, sizeof srv_date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        srv_date_at = now;
    }
    return srv_date;
}

static const char *srv_clf_date(void)
{
    time_t now = time(NULL);
    struct tm tm;

    if (now != srv_clf_at) {
        gmtime_r(&now, &tm);
        strftime(srv_clf, sizeof srv_clf, "%d/%b/%Y:%H:%M:%S +0000", &tm);
        srv_clf_at = now;
    }
    return srv_clf;
}

void srv_log_access(struct srv_conn *c, const struct srv_request *req,
                    int status, uint64_t bytes, double started)
{
    char line[1024];
    int n;

    if (!c->srv->opt.log_output)
        return;
    n = snprintf(line, sizeof line,
                 "%s - - [%s] \"%.*s %.*s HTTP/1.%d\" %d %llu %.6f\n",
                 c->remote_addr[0] ? c->remote_addr : "-", srv_clf_date(),
                 (int)(req->method_len > 32 ? 32 : req->method_len), req->method,
                 (int)(req->target_len > 800 ? 800 : req->target_len),
                 req->target, req->minor, status, (unsigned long long)bytes,
                 ev_time() - started);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    (void)!write(2, line, (size_t)n);
}
