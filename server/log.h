/* server/log.h - the access log: its line format (log_format.c) and where
 * its lines go (log.c).
 *
 * A request's green thread fills a struct srv_logreq before the app runs
 * (the request head's bytes may be gone by the time the line is written)
 * and hands it to srv_log_access when the response is done. Everything a
 * line needs is copied into it, bounded, so writing a line allocates
 * nothing and never reads freed memory.
 */
#ifndef LIBGREEN_SERVER_LOG_H
#define LIBGREEN_SERVER_LOG_H

#include "server/py.h"

/* Request headers a format prints (%(f)s, %(a)s, %({Name}i)s, and the
 * Authorization that %(u)s reads): at most this many, each value cut to
 * SRV_LOG_VALUE_MAX bytes. */
#define SRV_LOG_HEADERS_MAX 8
#define SRV_LOG_VALUE_MAX 256
/* The longest line written, newline included; longer ones are cut. */
#define SRV_LOG_LINE_MAX 4096

/* What one line is made of. */
struct srv_logreq {
    const struct srv_request *line;  /* method, target, version */
    const char *client;              /* REMOTE_ADDR as resolved; "" none */
    double started;                  /* ev_time() at the head */
    int status;
    uint64_t bytes;                  /* body bytes sent */
    short value_len[SRV_LOG_HEADERS_MAX]; /* -1: the header was absent */
    char value[SRV_LOG_HEADERS_MAX][SRV_LOG_VALUE_MAX];
};

/* A compiled access_log_format (log_format.c). */
struct srv_logfmt;

/* Compiles format; NULL with ValueError naming the option if it is not
 * one this log can write, or with MemoryError. */
SRV_HIDDEN struct srv_logfmt *srv_logfmt_new(const char *format);
SRV_HIDDEN void srv_logfmt_free(struct srv_logfmt *f);
/* Bytes of a struct srv_logreq whose value[] has room for the headers f
 * prints, and no more: a request holds its record while it runs. */
SRV_HIDDEN size_t srv_logfmt_record_size(const struct srv_logfmt *f);
/* Copies the header values f prints from req into lr (lr->value_len[i]
 * = -1 for each one req does not have). */
SRV_HIDDEN void srv_logfmt_capture(const struct srv_logfmt *f,
                                   const struct srv_request *req,
                                   struct srv_logreq *lr);
/* Writes one line, newline included, into out (at least
 * SRV_LOG_LINE_MAX bytes); returns its length. date is the CLF time,
 * elapsed the seconds the request took. */
SRV_HIDDEN size_t srv_logfmt_render(const struct srv_logfmt *f,
                                    const struct srv_logreq *lr,
                                    const char *date, double elapsed, char *out);

/* log.c: opening the log at start (NULL if it is off; -1 with an
 * exception if it cannot be opened), writing, the tick that flushes it
 * and notices a rotated file, and closing at the end. */
SRV_HIDDEN int srv_alog_open(struct srv_server *srv);
SRV_HIDDEN void srv_alog_close(struct srv_server *srv);
SRV_HIDDEN void srv_alog_tick(struct srv_server *srv);
/* Fills what the log's format prints of req's headers (nothing when the
 * log is off or prints none). */
SRV_HIDDEN void srv_alog_capture(const struct srv_server *srv,
                                 const struct srv_request *req,
                                 struct srv_logreq *lr);
/* srv_logfmt_record_size of the log's format; 0 when the log is off. */
SRV_HIDDEN size_t srv_alog_record_size(const struct srv_server *srv);
/* One line for a finished request (nothing when the log is off). */
SRV_HIDDEN void srv_log_access(struct srv_server *srv, const struct srv_logreq *lr);

#endif
