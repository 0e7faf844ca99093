/* server/log_format.c - access_log_format: gunicorn's atoms, compiled once
 * at start into a list of steps, then one line per request.
 *
 * The format is %-formatting with names, as gunicorn writes it:
 * %(h)s, %({User-Agent}i)s, %% for a percent sign. Compiling it once
 * lets a line be written with memcpy and hand-made integers - no
 * snprintf, no allocation, no Python - because it is written for every
 * request. Unknown atoms are refused at start rather than printed as "-"
 * (gunicorn's way): a typo should not silently empty a column.
 *
 * The default format (SRV_LOG_DEFAULT_FORMAT) renders the very bytes of
 * the line this server wrote before formats existed.
 */
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "server/log.h"

enum srv_atom {
    SRV_AT_TEXT,                 /* literal bytes of the format */
    SRV_AT_CLIENT,               /* h */
    SRV_AT_DASH,                 /* l */
    SRV_AT_USER,                 /* u: the Basic auth user */
    SRV_AT_TIME,                 /* t */
    SRV_AT_LINE,                 /* r */
    SRV_AT_STATUS,               /* s */
    SRV_AT_METHOD,               /* m */
    SRV_AT_PATH,                 /* U */
    SRV_AT_QUERY,                /* q */
    SRV_AT_PROTO,                /* H */
    SRV_AT_BYTES,                /* b, B */
    SRV_AT_SECONDS,              /* T */
    SRV_AT_MILLIS,               /* M */
    SRV_AT_MICROS,               /* D */
    SRV_AT_DECIMAL,              /* L */
    SRV_AT_PID,                  /* p */
    SRV_AT_HEADER,               /* f, a, {Name}i */
};

struct srv_logstep {
    unsigned char atom;          /* enum srv_atom */
    unsigned char header;        /* SRV_AT_HEADER, SRV_AT_USER: its index */
    unsigned short len;          /* SRV_AT_TEXT: bytes at text + off */
    unsigned off;
};

struct srv_logfmt {
    char *text;                  /* the format (steps point into it) */
    struct srv_logstep *steps;
    size_t nsteps;
    const char *header[SRV_LOG_HEADERS_MAX];
    size_t header_len[SRV_LOG_HEADERS_MAX];
    size_t nheaders;
    char pid[24];                /* "<1234>", as gunicorn prints it */
};

static const struct {
    char name;
    unsigned char atom;
    const char *header;          /* SRV_AT_HEADER, SRV_AT_USER */
} srv_atoms[] = {
    {'h', SRV_AT_CLIENT, NULL},     {'l', SRV_AT_DASH, NULL},
    {'u', SRV_AT_USER, "Authorization"}, {'t', SRV_AT_TIME, NULL},
    {'r', SRV_AT_LINE, NULL},       {'s', SRV_AT_STATUS, NULL},
    {'m', SRV_AT_METHOD, NULL},     {'U', SRV_AT_PATH, NULL},
    {'q', SRV_AT_QUERY, NULL},      {'H', SRV_AT_PROTO, NULL},
    {'b', SRV_AT_BYTES, NULL},      {'B', SRV_AT_BYTES, NULL},
    {'f', SRV_AT_HEADER, "Referer"}, {'a', SRV_AT_HEADER, "User-Agent"},
    {'T', SRV_AT_SECONDS, NULL},    {'M', SRV_AT_MILLIS, NULL},
    {'D', SRV_AT_MICROS, NULL},     {'L', SRV_AT_DECIMAL, NULL},
    {'p', SRV_AT_PID, NULL},
};

#define SRV_ATOMS_KNOWN "h l u t r s m U q H b B f a T M D L p {Header}i"

/* ---- compiling --------------------------------------------------------- */

static int srv_fmt_invalid(const char *format, const char *why)
{
    return srv_option_invalid(SRV_OPT_access_log_format, format, why);
}

/* The index of header name[0..len) among those f captures, added if new;
 * -1 when f already captures as many as it may. */
static int srv_fmt_header(struct srv_logfmt *f, const char *name, size_t len)
{
    for (size_t i = 0; i < f->nheaders; i++)
        if (f->header_len[i] == len && strncasecmp(f->header[i], name, len) == 0)
            return (int)i;
    if (f->nheaders == SRV_LOG_HEADERS_MAX)
        return -1;
    f->header[f->nheaders] = name;
    f->header_len[f->nheaders] = len;
    return (int)f->nheaders++;
}

/* The step for the atom name[0..len) (what is between "%(" and ")s"). */
static int srv_fmt_atom(struct srv_logfmt *f, const char *format,
                        const char *name, size_t len, struct srv_logstep *st)
{
    char why[160];
    int h;

    if (len >= 3 && name[0] == '{' && name[len - 2] == '}') {
        if (name[len - 1] != 'i') {
            snprintf(why, sizeof why, "has the atom %%(%.*s)s: only request "
                     "headers, %%({Name}i)s, can be logged", (int)(len > 60 ? 60 : len),
                     name);
            return srv_fmt_invalid(format, why);
        }
        h = srv_fmt_header(f, name + 1, len - 3);
        st->atom = SRV_AT_HEADER;
    } else {
        size_t i = 0;
        while (i < sizeof srv_atoms / sizeof srv_atoms[0] &&
               !(len == 1 && srv_atoms[i].name == name[0]))
            i++;
        if (i == sizeof srv_atoms / sizeof srv_atoms[0]) {
            snprintf(why, sizeof why, "has an unknown atom %%(%.*s)s (known: "
                     SRV_ATOMS_KNOWN ")", (int)(len > 40 ? 40 : len), name);
            return srv_fmt_invalid(format, why);
        }
        st->atom = srv_atoms[i].atom;
        h = srv_atoms[i].header ? srv_fmt_header(f, srv_atoms[i].header,
                                                 strlen(srv_atoms[i].header))
                                : 0;
    }
    if (h < 0) {
        snprintf(why, sizeof why, "prints more than %d different request "
                 "headers", SRV_LOG_HEADERS_MAX);
        return srv_fmt_invalid(format, why);
    }
    st->header = (unsigned char)h;
    return 0;
}

/* The steps of f->text. Returns 0, or -1 with ValueError. */
static int srv_fmt_compile(struct srv_logfmt *f, const char *format)
{
    const char *p = f->text, *lit = p;

    while (*p) {
        struct srv_logstep *st = &f->steps[f->nsteps];
        const char *end;
        if (*p != '%') {
            p++;
            continue;
        }
        if (p > lit) {                   /* the text before this '%' */
            *st++ = (struct srv_logstep){SRV_AT_TEXT, 0, (unsigned short)(p - lit),
                                         (unsigned)(lit - f->text)};
            f->nsteps++;
        }
        if (p[1] == '%') {               /* "%%": one '%' */
            *st = (struct srv_logstep){SRV_AT_TEXT, 0, 1, (unsigned)(p - f->text)};
            f->nsteps++;
            lit = p += 2;
            continue;
        }
        end = p[1] == '(' ? strchr(p + 2, ')') : NULL;
        if (!end || end[1] != 's')
            return srv_fmt_invalid(format, "has a '%' that does not start an "
                                   "atom like %(h)s (write %% for a percent sign)");
        if (srv_fmt_atom(f, format, p + 2, (size_t)(end - p - 2), st) < 0)
            return -1;
        f->nsteps++;
        lit = p = end + 2;
    }
    if (p > lit)
        f->steps[f->nsteps++] = (struct srv_logstep){
            SRV_AT_TEXT, 0, (unsigned short)(p - lit), (unsigned)(lit - f->text)};
    return 0;
}

struct srv_logfmt *srv_logfmt_new(const char *format)
{
    size_t len = strlen(format);
    struct srv_logfmt *f;

    if (len > SRV_LOG_LINE_MAX / 2) {
        srv_fmt_invalid(format, "is longer than a log line may be");
        return NULL;
    }
    f = PyMem_RawCalloc(1, sizeof *f);
    if (!f || !(f->text = PyMem_RawMalloc(len + 1)) ||
        /* at most a step per byte, and one more for a trailing text */
        !(f->steps = PyMem_RawMalloc((len + 1) * sizeof *f->steps))) {
        srv_logfmt_free(f);
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(f->text, format, len + 1);
    snprintf(f->pid, sizeof f->pid, "<%ld>", (long)getpid());
    if (srv_fmt_compile(f, format) < 0) {
        srv_logfmt_free(f);
        return NULL;
    }
    return f;
}

void srv_logfmt_free(struct srv_logfmt *f)
{
    if (!f)
        return;
    PyMem_RawFree(f->text);
    PyMem_RawFree(f->steps);
    PyMem_RawFree(f);
}

size_t srv_logfmt_record_size(const struct srv_logfmt *f)
{
    return offsetof(struct srv_logreq, value) + f->nheaders * sizeof(char[SRV_LOG_VALUE_MAX]);
}

void srv_logfmt_capture(const struct srv_logfmt *f, const struct srv_request *req,
                        struct srv_logreq *lr)
{
    for (size_t i = 0; i < f->nheaders; i++) {
        lr->value_len[i] = -1;
        for (size_t j = 0; j < req->nheaders; j++) {
            const struct srv_header *h = &req->headers[j];
            size_t n = h->value_len < SRV_LOG_VALUE_MAX ? h->value_len
                                                        : SRV_LOG_VALUE_MAX;
            if (h->name_len != f->header_len[i] ||
                strncasecmp(h->name, f->header[i], h->name_len) != 0)
                continue;
            memcpy(lr->value[i], h->value, n);
            lr->value_len[i] = (short)n;
            break;               /* the first of repeated fields */
        }
    }
}

/* ---- writing a line ---------------------------------------------------- */

struct srv_out {
    char *p;
    size_t len, cap;             /* cap leaves room for the newline */
};

static void srv_put(struct srv_out *o, const char *s, size_t n)
{
    if (n > o->cap - o->len)
        n = o->cap - o->len;
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void srv_put_uint(struct srv_out *o, uint64_t v)
{
    char digits[24], *d = digits + sizeof digits;

    do
        *--d = (char)('0' + v % 10);
    while (v /= 10);
    srv_put(o, d, (size_t)(digits + sizeof digits - d));
}

/* Bytes a log reader could mistake for the end of a field or a line
 * (they can come from a decoded Authorization header) as \xNN. */
static void srv_put_escaped(struct srv_out *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != 0x7f && ch != '"' && ch != '\\') {
            srv_put(o, (const char *)&s[i], 1);
        } else {
            char e[4] = {'\\', 'x', hex[ch >> 4], hex[ch & 15]};
            srv_put(o, e, 4);
        }
    }
}

static int srv_b64(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* %(u)s: the user of "Authorization: Basic base64(user:password)", or
 * "-". The password is never decoded past the colon. */
static void srv_put_user(struct srv_out *o, const char *v, short len)
{
    char user[SRV_LOG_VALUE_MAX];
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;

    if (len > 6 && strncasecmp(v, "Basic ", 6) == 0) {
        for (short i = 6; i < len; i++) {
            int d = srv_b64(v[i]);
            if (d < 0)
                break;
            acc = (acc << 6) | (unsigned)d;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                user[n] = (char)((acc >> bits) & 0xff);
                if (user[n] == ':')
                    break;
                n++;
            }
        }
    }
    if (n == 0)
        srv_put(o, "-", 1);
    else
        srv_put_escaped(o, user, n);
}

/* The target's path (before any '?') or its query (after it). */
static void srv_put_target_part(struct srv_out *o, const struct srv_request *l,
                                int query)
{
    const char *q = memchr(l->target, '?', l->target_len);
    size_t path_len = q ? (size_t)(q - l->target) : l->target_len;

    if (query)
        srv_put(o, q ? q + 1 : "", q ? l->target_len - path_len - 1 : 0);
    else
        srv_put(o, l->target, path_len);
}

static void srv_put_proto(struct srv_out *o, const struct srv_request *l)
{
    srv_put(o, l->minor ? "HTTP/1.1" : "HTTP/1.0", 8);
}

/* %(T)s, %(M)s, %(D)s, %(L)s: a duration of us microseconds. */
static void srv_put_duration(struct srv_out *o, enum srv_atom atom, uint64_t us)
{
    char frac[7];

    switch (atom) {
    case SRV_AT_SECONDS:
        srv_put_uint(o, us / 1000000);
        break;
    case SRV_AT_MILLIS:
        srv_put_uint(o, us / 1000);
        break;
    case SRV_AT_MICROS:
        srv_put_uint(o, us);
        break;
    default:                     /* L: "%d.%06d" seconds, microseconds */
        srv_put_uint(o, us / 1000000);
        frac[0] = '.';
        for (int i = 6, v = (int)(us % 1000000); i > 0; i--, v /= 10)
            frac[i] = (char)('0' + v % 10);
        srv_put(o, frac, 7);
    }
}

/* One step of a line; us is the request's duration in microseconds. */
static void srv_put_step(struct srv_out *o, const struct srv_logfmt *f,
                         const struct srv_logstep *st,
                         const struct srv_logreq *lr, const char *date, uint64_t us)
{
    const struct srv_request *l = lr->line;

    switch ((enum srv_atom)st->atom) {
    case SRV_AT_TEXT:
        srv_put(o, f->text + st->off, st->len);
        break;
    case SRV_AT_CLIENT:
        srv_put(o, lr->client[0] ? lr->client : "-",
                lr->client[0] ? strlen(lr->client) : 1);
        break;
    case SRV_AT_DASH:
        srv_put(o, "-", 1);
        break;
    case SRV_AT_USER:
        if (lr->value_len[st->header] < 0)
            srv_put(o, "-", 1);
        else
            srv_put_user(o, lr->value[st->header], lr->value_len[st->header]);
        break;
    case SRV_AT_TIME:
        srv_put(o, "[", 1);
        srv_put(o, date, strlen(date));
        srv_put(o, "]", 1);
        break;
    case SRV_AT_LINE:
        srv_put(o, l->method, l->method_len);
        srv_put(o, " ", 1);
        srv_put(o, l->target, l->target_len);
        srv_put(o, " ", 1);
        srv_put_proto(o, l);
        break;
    case SRV_AT_STATUS:
        srv_put_uint(o, (uint64_t)lr->status);
        break;
    case SRV_AT_METHOD:
        srv_put(o, l->method, l->method_len);
        break;
    case SRV_AT_PATH:
    case SRV_AT_QUERY:
        srv_put_target_part(o, l, st->atom == SRV_AT_QUERY);
        break;
    case SRV_AT_PROTO:
        srv_put_proto(o, l);
        break;
    case SRV_AT_BYTES:
        srv_put_uint(o, lr->bytes);
        break;
    case SRV_AT_SECONDS:
    case SRV_AT_MILLIS:
    case SRV_AT_MICROS:
    case SRV_AT_DECIMAL:
        srv_put_duration(o, (enum srv_atom)st->atom, us);
        break;
    case SRV_AT_PID:
        srv_put(o, f->pid, strlen(f->pid));
        break;
    case SRV_AT_HEADER:
        if (lr->value_len[st->header] < 0)
            srv_put(o, "-", 1);
        else
            srv_put(o, lr->value[st->header], (size_t)lr->value_len[st->header]);
        break;
    }
}

size_t srv_logfmt_render(const struct srv_logfmt *f, const struct srv_logreq *lr,
                         const char *date, double elapsed, char *out)
{
    struct srv_out o = {out, 0, SRV_LOG_LINE_MAX - 1};
    uint64_t us = elapsed > 0 ? (uint64_t)(elapsed * 1e6 + 0.5) : 0;

    for (size_t i = 0; i < f->nsteps; i++)
        srv_put_step(&o, f, &f->steps[i], lr, date, us);
    out[o.len++] = '\n';
    return o.len;
}
