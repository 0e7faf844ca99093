/* hub/report.h - text for debugging reports, written without stdio.
 *
 * Reports are written from places where stdio must not be used: signal
 * handlers (the overflow report, the block warning), a green thread just
 * woken from a park (the trace), the hub context while every green thread
 * is stopped (dumps). So they are put together in a fixed buffer on the
 * stack with these async-signal-safe helpers (no malloc, no locale, no
 * locks) and reach the fd with write(2) through syscall(), never through
 * libgreen's own interposed write().
 *
 * A buffer that fills up is flushed and reused, so a long report comes out
 * in a few writes; a line that fits is written with one write(2), whole.
 */
#ifndef LIBGREEN_HUB_REPORT_H
#define LIBGREEN_HUB_REPORT_H

#include <stddef.h>
#include <stdint.h>

#define HUB_REPORT_BUF 4096

struct hub_report {
    int fd;
    size_t len;
    char buf[HUB_REPORT_BUF];
};

__attribute__((visibility("hidden"))) void hub_report_init(struct hub_report *r, int fd);
/* Writes out what the buffer holds. */
__attribute__((visibility("hidden"))) void hub_report_flush(struct hub_report *r);
/* Appends n bytes / a C string (NULL appends nothing). */
__attribute__((visibility("hidden"))) void hub_report_mem(struct hub_report *r, const char *s, size_t n);
__attribute__((visibility("hidden"))) void hub_report_str(struct hub_report *r, const char *s);
/* Appends s with every byte outside printable ASCII as \xNN (for text
 * that comes from the network or from another program). */
__attribute__((visibility("hidden"))) void hub_report_text(struct hub_report *r, const char *s, size_t n);
__attribute__((visibility("hidden"))) void hub_report_u64(struct hub_report *r, uint64_t v);
__attribute__((visibility("hidden"))) void hub_report_i64(struct hub_report *r, int64_t v);
__attribute__((visibility("hidden"))) void hub_report_hex(struct hub_report *r, uint64_t v);
/* Seconds with 3 decimals ("1.250"); negative shows as 0. */
__attribute__((visibility("hidden"))) void hub_report_secs(struct hub_report *r, double s);

/* write(2) of all n bytes to fd, retrying partial writes and EINTR; gives
 * up silently on any other error (a report must never stop the program). */
__attribute__((visibility("hidden"))) void hub_report_write(int fd, const char *s, size_t n);

#endif
