/* server/log.c - the Date header, and where access-log lines go.
 *
 * Both need the time as text; formatting it once per second (not per
 * request) keeps strftime off the hot path. The line itself is
 * log_format.c's.
 *
 * Where lines go (access_log, log_output):
 *   - stderr (the default) or stdout ('-'), or a path that is not a
 *     regular file: one write(2) per line, so lines never interleave
 *     with other writers. On a pipe or a tty that write is a green one:
 *     a slow reader parks the request, never the hub.
 *   - a regular file (a path): lines collect in a buffer that is written
 *     when it fills and on every tick of the hub (SRV_SIGNAL_PERIOD), so
 *     a busy server makes a few large writes instead of one per request.
 *     Writes to a regular file cannot park (hard rule 2) and stay short
 *     because they only copy into the page cache. Each write holds whole
 *     lines and the file is opened O_APPEND, so worker processes sharing
 *     the file never split each other's lines.
 * Once a second the tick compares the path with the open file; when
 * logrotate (or anyone) moved or removed it, the file is opened anew -
 * no signal needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/log.h"

/* ---- the time as text ------------------------------------------------- */

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

/* ---- the sink ------------------------------------------------------------ */

#define SRV_ALOG_BUF 65536       /* bytes collected for a regular file */

struct srv_alog {
    struct srv_logfmt *fmt;
    int fd;                      /* 1, 2, or the file we opened */
    const char *path;            /* the file's (NULL for 1 and 2) */
    dev_t dev;                   /* of the file opened, to see it rotated */
    ino_t ino;
    pid_t pid;                   /* the process the buffer belongs to */
    double checked;              /* when the path was last compared */
    double complained;           /* when a failure was last reported */
    size_t len;                  /* bytes in buf; NULL buf: a write per line */
    char *buf;
};

/* A failure of the log, said on stderr at most every 10 seconds. */
static void srv_alog_complain(struct srv_alog *a, const char *what, int err)
{
    double now = ev_time();

    if (now - a->complained < 10)
        return;
    a->complained = now;
    fprintf(stderr, "libgreen: access log %s: %s: %s\n",
            a->path ? a->path : a->fd == 1 ? "(stdout)" : "(stderr)", what,
            strerror(err));
}

static void srv_write_all(struct srv_alog *a, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(a->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            srv_alog_complain(a, "lines were lost", w < 0 ? errno : EIO);
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void srv_alog_flush(struct srv_alog *a)
{
    /* A process forked in a request holds a copy of the buffer: those
     * lines are its parent's to write. */
    if (a->len && getpid() == a->pid)
        srv_write_all(a, a->buf, a->len);
    a->len = 0;
}

/* Opens path for appending: the fd, or -1 with errno. A FIFO without a
 * reader fails (ENXIO) instead of blocking the start. */
static int srv_alog_open_path(const char *path, struct stat *st)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK,
                  0644);
    int fl;

    if (fd < 0)
        return -1;
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 || fstat(fd, st) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

int srv_alog_open(struct srv_server *srv)
{
    const char *dest = srv->opt.access_log;
    struct srv_alog *a;
    struct stat st;

    srv->alog = NULL;
    if (!dest && !srv->opt.log_output)
        return 0;
    if (dest && !dest[0])
        return srv_option_invalid(SRV_OPT_access_log, dest,
                                  "is empty: None means stderr, '-' stdout, anything else a file path");
    a = PyMem_RawCalloc(1, sizeof *a);
    if (!a) {
        PyErr_NoMemory();
        return -1;
    }
    a->pid = getpid();
    a->complained = -1e9;
    a->fmt = srv_logfmt_new(srv->opt.access_log_format
                                ? srv->opt.access_log_format
                                : SRV_LOG_DEFAULT_FORMAT);
    if (!a->fmt)
        goto error;
    a->fd = dest && strcmp(dest, "-") == 0 ? 1 : 2;
    if (dest && a->fd == 1)
        dest = NULL;
    if (dest) {
        a->fd = srv_alog_open_path(dest, &st);
        if (a->fd < 0) {
            PyErr_Format(PyExc_OSError, "libgreen.wsgi.server(): access_log='%s' "
                         "cannot be opened for appending: %s", dest, strerror(errno));
            goto error;
        }
        a->path = dest;
        a->dev = st.st_dev;
        a->ino = st.st_ino;
        a->checked = ev_time();
        if (S_ISREG(st.st_mode) && !(a->buf = PyMem_RawMalloc(SRV_ALOG_BUF))) {
            PyErr_NoMemory();
            goto error;
        }
    }
    srv->alog = a;
    return 0;

error:
    srv->alog = a;
    srv_alog_close(srv);
    return -1;
}

void srv_alog_close(struct srv_server *srv)
{
    struct srv_alog *a = srv->alog;

    if (!a)
        return;
    if (a->buf)
        srv_alog_flush(a);
    if (a->path && a->fd >= 0)
        close(a->fd);
    srv_logfmt_free(a->fmt);
    PyMem_RawFree(a->buf);
    PyMem_RawFree(a);
    srv->alog = NULL;
}

/* The file at a->path is no longer the one open (rotated away, removed):
 * what was collected goes to the old one, new lines to a new one. */
static void srv_alog_reopen(struct srv_alog *a)
{
    struct stat st;
    int fd;

    if (stat(a->path, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino)
        return;
    fd = srv_alog_open_path(a->path, &st);
    if (fd < 0) {
        srv_alog_complain(a, "cannot be opened again after it was moved "
                          "(still writing to the old file)", errno);
        return;
    }
    if (a->buf)
        srv_alog_flush(a);
    close(a->fd);
    a->fd = fd;
    a->dev = st.st_dev;
    a->ino = st.st_ino;
}

void srv_alog_tick(struct srv_server *srv)
{
    struct srv_alog *a = srv->alog;
    double now;

    if (!a || !a->path)
        return;
    if (a->buf)
        srv_alog_flush(a);
    now = ev_time();
    if (now - a->checked >= 1) {
        a->checked = now;
        srv_alog_reopen(a);
    }
}

size_t srv_alog_record_size(const struct srv_server *srv)
{
    return srv->alog ? srv_logfmt_record_size(srv->alog->fmt) : 0;
}

void srv_alog_capture(const struct srv_server *srv, const struct srv_request *req,
                      struct srv_logreq *lr)
{
    if (srv->alog)
        srv_logfmt_capture(srv->alog->fmt, req, lr);
}

void srv_log_access(struct srv_server *srv, const struct srv_logreq *lr)
{
    struct srv_alog *a = srv->alog;
    char *line;
    size_t n;

    if (!a)
        return;
    if (!a->buf) {
        /* On the heap, not the stack: a 4 KiB line here took every
         * request 2 KiB past its stack's first page, and a pooled stack
         * keeps each page it once touched (4 KiB more per request in
         * flight). Not one buffer for all: the write may park. */
        line = PyMem_RawMalloc(SRV_LOG_LINE_MAX);
        if (!line)
            return; /* no memory for a log line: the request still stands */
        n = srv_logfmt_render(a->fmt, lr, srv_clf_date(), ev_time() - lr->started,
                              line);
        srv_write_all(a, line, n);
        PyMem_RawFree(line);
        return;
    }
    if (SRV_ALOG_BUF - a->len < SRV_LOG_LINE_MAX)
        srv_alog_flush(a);
    a->len += srv_logfmt_render(a->fmt, lr, srv_clf_date(), ev_time() - lr->started,
                                a->buf + a->len);
}
