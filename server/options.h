/* server/options.h - the option table of libgreen.wsgi.server(), as data.
 *
 * The options themselves are listed in server/options.def; this header
 * gives the words that list is written in (the kinds, the limits) and
 * the descriptor each entry becomes. Free of Python, so code that is not
 * the Python module can read the table too. What the Python module does
 * with it (parse keyword arguments, build the docstring) is declared in
 * server/py.h.
 */
#ifndef LIBGREEN_SERVER_OPTIONS_H
#define LIBGREEN_SERVER_OPTIONS_H

#include <limits.h>
#include <math.h>
#include <stddef.h>

#include "server/http_parse.h"

/* How a Python value becomes a field; see server/options.def. */
enum srv_opt_kind {
    SRV_BOOL,
    SRV_SECONDS,
    SRV_TIMEOUT,
    SRV_BOOL_SECONDS,
    SRV_SIZE,
    SRV_SIZE_OR_NONE,
    SRV_DICT,
    SRV_STR,
    SRV_STR_LIST,
    SRV_CALLABLE,
};

/* The longest time an option may name: the hub clamps every deadline to
 * this (hub_clamp_timeout), so a larger value could not mean more. */
#define SRV_MAX_SECONDS 1e9
/* "max" of an option with no upper bound. */
#define SRV_NO_MAX INFINITY

/* The access-log line of access_log_format's default, in gunicorn's atoms
 * (server/log_format.c): the common log format plus the seconds taken,
 * the line this server always wrote. */
#define SRV_LOG_DEFAULT_FORMAT "%(h)s - - %(t)s \"%(r)s\" %(s)s %(b)s %(L)s"

struct srv_option {
    const char *name;
    enum srv_opt_kind kind;
    double dflt, min, max;    /* dflt: of the numeric kinds */
    const char *dflt_text;    /* of SRV_STR and SRV_STR_LIST; NULL: None */
    size_t offset;            /* of the field in struct srv_options */
    const char *field;        /* its name, for tools and messages */
    const char *flag, *env;   /* command line; env may be NULL */
    const char *help;
};

enum {
#define SRV_OPTION(name, ...) SRV_OPT_##name,
#include "server/options.def"
#undef SRV_OPTION
    SRV_NOPTIONS
};

#endif
