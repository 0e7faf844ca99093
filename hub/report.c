/* hub/report.c - async-signal-safe text formatting for reports (report.h). */
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hub/report.h"

void hub_report_write(int fd, const char *s, size_t n)
{
    int saved = errno;

    while (n) {
        /* syscall(), not write(): ours would park a green thread */
        long w = syscall(SYS_write, fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        s += w;
        n -= (size_t)w;
    }
    errno = saved;
}

void hub_report_init(struct hub_report *r, int fd)
{
    r->fd = fd;
    r->len = 0;
}

void hub_report_flush(struct hub_report *r)
{
    hub_report_write(r->fd, r->buf, r->len);
    r->len = 0;
}

void hub_report_mem(struct hub_report *r, const char *s, size_t n)
{
    while (n) {
        size_t room = sizeof r->buf - r->len, k = n < room ? n : room;
        memcpy(r->buf + r->len, s, k);
        r->len += k;
        s += k;
        n -= k;
        if (r->len == sizeof r->buf)
            hub_report_flush(r);
    }
}

void hub_report_str(struct hub_report *r, const char *s)
{
    if (s)
        hub_report_mem(r, s, strlen(s));
}

void hub_report_text(struct hub_report *r, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            hub_report_mem(r, (const char *)&c, 1);
        } else {
            char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            hub_report_mem(r, e, 4);
        }
    }
}

void hub_report_u64(struct hub_report *r, uint64_t v)
{
    char tmp[24];
    size_t n = sizeof tmp;

    do
        tmp[--n] = (char)('0' + v % 10);
    while ((v /= 10));
    hub_report_mem(r, tmp + n, sizeof tmp - n);
}

void hub_report_i64(struct hub_report *r, int64_t v)
{
    if (v < 0) {
        hub_report_mem(r, "-", 1);
        hub_report_u64(r, (uint64_t)0 - (uint64_t)v);
    } else {
        hub_report_u64(r, (uint64_t)v);
    }
}

void hub_report_hex(struct hub_report *r, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[18];
    size_t n = sizeof tmp;

    do
        tmp[--n] = hex[v & 15];
    while ((v >>= 4));
    tmp[--n] = 'x';
    tmp[--n] = '0';
    hub_report_mem(r, tmp + n, sizeof tmp - n);
}

void hub_report_secs(struct hub_report *r, double s)
{
    uint64_t ms;
    char frac[4];

    if (!(s > 0))
        s = 0;
    if (s > 1e12)
        s = 1e12;
    ms = (uint64_t)(s * 1000.0 + 0.5);
    hub_report_u64(r, ms / 1000);
    frac[0] = '.';
    frac[1] = (char)('0' + ms / 100 % 10);
    frac[2] = (char)('0' + ms / 10 % 10);
    frac[3] = (char)('0' + ms % 10);
    hub_report_mem(r, frac, 4);
}
