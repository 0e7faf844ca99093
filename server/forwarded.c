/* server/forwarded.c - forwarded_allow_ips: which peers may tell, with
 * X-Forwarded-For and X-Forwarded-Proto, who the client is and which
 * scheme it used.
 *
 * The list is parsed once, at start, into networks. Whether a peer is
 * trusted is decided once per connection (srv_conn_new), so a request
 * from an untrusted peer costs nothing here. For a trusted peer:
 *
 *   REMOTE_ADDR     the rightmost X-Forwarded-For entry that is not
 *                   itself trusted (each proxy appends the address it
 *                   was reached from, so entries left of the first
 *                   untrusted one are the client's word, not a proxy's);
 *                   the leftmost entry if all are trusted. An entry
 *                   reached on that walk that is not an IP address makes
 *                   the header count for nothing.
 *   wsgi.url_scheme X-Forwarded-Proto when it is exactly "http" or
 *                   "https" (any case); a list, as several proxies may
 *                   leave, is ignored.
 *
 * The headers themselves stay in the environ (HTTP_X_FORWARDED_*)
 * whoever sent them. IPv4 addresses are kept as IPv4-mapped IPv6 ones,
 * so one comparison serves both families (and an IPv4 client on a
 * dual-stack socket matches IPv4 networks).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "server/py.h"

struct srv_net {
    unsigned char addr[16];
    unsigned bits;               /* prefix length, of the IPv6 form */
};

struct srv_fwd {
    int any;                     /* '*' */
    int unix_peers;              /* 'unix' */
    size_t n;
    struct srv_net net[];
};

/* ---- addresses ----------------------------------------------------------- */

/* s[0..n) as an IP address in IPv6 form; 1 if it is one, else 0. With
 * lenient, also "[v6]", "[v6]:port" and "v4:port", as proxies write
 * X-Forwarded-For entries. */
static int srv_ip_parse(const char *s, size_t n, unsigned char out[16], int lenient)
{
    char buf[64];
    const char *colon;

    if (lenient && n > 2 && s[0] == '[') {
        const char *end = memchr(s, ']', n);
        if (!end || (end + 1 < s + n && end[1] != ':'))
            return 0;
        n = (size_t)(end - s - 1);
        s++;
    } else if (lenient && (colon = memchr(s, ':', n)) && !memchr(colon + 1, ':',
                                                                 (size_t)(s + n - colon - 1))) {
        n = (size_t)(colon - s);  /* one colon: "v4:port" */
    }
    if (n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, s, n);
    buf[n] = 0;
    if (memchr(buf, ':', n))
        return inet_pton(AF_INET6, buf, out) == 1;
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    return inet_pton(AF_INET, buf, out + 12) == 1;
}

static int srv_net_match(const struct srv_net *net, const unsigned char a[16])
{
    unsigned whole = net->bits / 8, rest = net->bits % 8;

    if (memcmp(net->addr, a, whole) != 0)
        return 0;
    return rest == 0 ||
           ((net->addr[whole] ^ a[whole]) & (0xff << (8 - rest)) & 0xff) == 0;
}

static int srv_fwd_match(const struct srv_fwd *fw, const unsigned char a[16])
{
    if (fw->any)
        return 1;
    for (size_t i = 0; i < fw->n; i++)
        if (srv_net_match(&fw->net[i], a))
            return 1;
    return 0;
}

/* ---- the list ------------------------------------------------------------ */

/* One entry (trimmed, not empty) into fw. Returns 0, or -1 with
 * ValueError. */
static int srv_fwd_entry(struct srv_fwd *fw, const char *s, size_t n)
{
    struct srv_net *net = &fw->net[fw->n];
    const char *slash = memchr(s, '/', n);
    int v4 = !memchr(s, ':', n);
    char *end, entry[80];

    if (n == 1 && s[0] == '*') {
        fw->any = 1;
        return 0;
    }
    if (n == 4 && strncasecmp(s, "unix", 4) == 0) {
        fw->unix_peers = 1;
        return 0;
    }
    if (srv_ip_parse(s, slash ? (size_t)(slash - s) : n, net->addr, 0)) {
        long bits = v4 ? 32 : 128;
        if (slash) {
            bits = strtol(slash + 1, &end, 10);
            if (end != s + n || slash + 1 == end || bits < 0 || bits > (v4 ? 32 : 128))
                goto bad;
        }
        net->bits = (unsigned)bits + (v4 ? 96 : 0);
        fw->n++;
        return 0;
    }
bad:
    snprintf(entry, sizeof entry, "%.*s", (int)n, s); /* PyErr_Format has no %.*s */
    PyErr_Format(PyExc_ValueError, "libgreen.wsgi.server(): forwarded_allow_ips: "
                 "'%s' is not an IP address, a network (address/bits), '*' "
                 "or 'unix'", entry);
    return -1;
}

/* Every comma-separated entry of text into fw (which has room). */
static int srv_fwd_text(struct srv_fwd *fw, const char *text)
{
    while (*text) {
        size_t n = strcspn(text, ",");
        const char *s = text, *e = text + n;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > s && srv_fwd_entry(fw, s, (size_t)(e - s)) < 0)
            return -1;
        text += n + (text[n] == ',');
    }
    return 0;
}

/* Room for the entries: a comma more than there may be networks. */
static size_t srv_fwd_count(const char *text)
{
    size_t n = 1;

    for (; *text; text++)
        n += *text == ',';
    return n;
}

int srv_fwd_init(struct srv_server *srv)
{
    const struct srv_strlist *l = &srv->opt.forwarded_allow_ips;
    Py_ssize_t items = l->seq ? PySequence_Fast_GET_SIZE(l->seq) : 0;
    size_t room = l->text ? srv_fwd_count(l->text) : 0;
    struct srv_fwd *fw;

    for (Py_ssize_t i = 0; i < items; i++)
        room += srv_fwd_count(PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(l->seq, i)));
    fw = PyMem_RawCalloc(1, sizeof *fw + room * sizeof fw->net[0]);
    if (!fw) {
        PyErr_NoMemory();
        return -1;
    }
    if (l->text && srv_fwd_text(fw, l->text) < 0)
        goto error;
    for (Py_ssize_t i = 0; i < items; i++)
        if (srv_fwd_text(fw, PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(l->seq, i))) < 0)
            goto error;
    srv->fwd = fw;
    return 0;

error:
    PyMem_RawFree(fw);
    return -1;
}

void srv_fwd_free(struct srv_server *srv)
{
    PyMem_RawFree(srv->fwd);
    srv->fwd = NULL;
}

int srv_fwd_trusted(const struct srv_server *srv, const struct sockaddr_storage *ss)
{
    const struct srv_fwd *fw = srv->fwd;
    unsigned char a[16];

    if (!fw || fw->any)
        return fw != NULL;
    switch (ss->ss_family) {
    case AF_UNIX:
        return fw->unix_peers;
    case AF_INET:
        memset(a, 0, 10);
        a[10] = a[11] = 0xff;
        memcpy(a + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        return srv_fwd_match(fw, a);
    case AF_INET6:
        return srv_fwd_match(fw, ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr);
    default:
        return 0;
    }
}

/* ---- per request ------------------------------------------------------- */

/* The walk of X-Forwarded-For entries, right to left across its field
 * lines. */
struct srv_xff {
    const struct srv_fwd *fw;
    unsigned char cand[16];      /* the leftmost trusted entry so far */
    int have_cand;
    int done;                    /* 1: found (in cand), -1: give up */
};

static void srv_xff_line(struct srv_xff *w, const char *v, size_t n)
{
    while (n && !w->done) {
        const char *comma = memrchr(v, ',', n);
        const char *s = comma ? comma + 1 : v, *e = v + n;
        unsigned char a[16];
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        n = comma ? (size_t)(comma - v) : 0;
        if (e == s)
            continue;            /* an empty entry, as "a,,b": no one */
        if (!srv_ip_parse(s, (size_t)(e - s), a, 1)) {
            w->done = -1;
        } else {
            memcpy(w->cand, a, 16);
            w->have_cand = 1;
            if (!srv_fwd_match(w->fw, a))
                w->done = 1;
        }
    }
}

/* cand as text in cl->buf: IPv4-mapped back to dotted IPv4. */
static void srv_client_text(struct srv_client *cl, const unsigned char a[16])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (memcmp(a, mapped, 12) == 0)
        inet_ntop(AF_INET, a + 12, cl->buf, sizeof cl->buf);
    else
        inet_ntop(AF_INET6, a, cl->buf, sizeof cl->buf);
    cl->addr = cl->buf;
}

void srv_fwd_resolve(const struct srv_conn *c, const struct srv_request *req,
                     struct srv_client *cl)
{
    struct srv_xff w = {.fw = c->srv->fwd};
    const struct srv_header *proto = NULL;
    int nproto = 0;

    cl->addr = c->remote_addr;
    cl->scheme = NULL;
    if (!c->trusted)
        return;
    for (size_t i = req->nheaders; i-- > 0;) {
        const struct srv_header *h = &req->headers[i];
        if (h->name_len == 15 && strncasecmp(h->name, "X-Forwarded-For", 15) == 0)
            srv_xff_line(&w, h->value, h->value_len);
        else if (h->name_len == 17 &&
                 strncasecmp(h->name, "X-Forwarded-Proto", 17) == 0)
            proto = h, nproto++;
    }
    if (w.done >= 0 && w.have_cand)
        srv_client_text(cl, w.cand);
    if (nproto == 1 && proto->value_len == 5 &&
        strncasecmp(proto->value, "https", 5) == 0)
        cl->scheme = "https";
    else if (nproto == 1 && proto->value_len == 4 &&
             strncasecmp(proto->value, "http", 4) == 0)
        cl->scheme = "http";
}
