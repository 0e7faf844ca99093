/* preload/resolve.c - name resolution off the hub (hard rule 9).
 *
 * glibc's resolver does its own socket I/O through internal entry points
 * we cannot interpose: a getaddrinfo() on a slow DNS server would stop
 * the whole OS thread and every green thread on it. Inside a green thread
 * the lookup is therefore handed to a small pool of worker OS threads and
 * the caller parks until its answer comes back; the workers call libc's
 * own functions, blocking only themselves.
 *
 * Jobs live on the parked caller's stack. A worker finishes a job, then
 * posts to the caller's hub a function that marks the job delivered and
 * unparks the caller; the caller does not return (or look at the job)
 * before that mark, whatever else wakes it, so no job is touched after
 * its stack frame is gone.
 *
 * Pool size: LIBGREEN_RESOLVER_THREADS (default 4, 1..64). Threads are
 * started on first use, so programs that never resolve in a green thread
 * never get them. Outside green threads every call is libc's.
 *
 * fork(): the child has none of the workers, and none of the green
 * threads whose jobs are queued (hard rule 6). Its pool starts empty - no
 * thread, nobody idle, no job - and grows again on its first lookup; the
 * locks and the condition variable are made afresh, since dead workers
 * may be counted as waiting on the copy. A fork first waits (briefly) for
 * the lookups in flight, so that none holds one of glibc's own locks at
 * that moment (see pl_rlookups).
 */
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "preload/pl.h"

enum pl_rkind { PL_GAI, PL_GNI, PL_GHBN_R, PL_GHBN2_R, PL_GHBA_R };

struct pl_rjob {
    enum pl_rkind kind;
    struct pl_rjob *next;
    struct green *g;
    struct hub *hub;
    int delivered;       /* set on the caller's hub, then unparked */
    int rc, err, herr;   /* return value, errno, h_errno */
    union {
        struct {
            const char *node, *service;
            const struct addrinfo *hints;
            struct addrinfo **res;
        } gai;
        struct {
            const struct sockaddr *sa;
            socklen_t salen;
            char *host, *serv;
            socklen_t hostlen, servlen;
            int flags;
        } gni;
        struct {
            const char *name;
            const void *addr;
            socklen_t len;
            int af;
            struct hostent *ret;
            char *buf;
            size_t buflen;
            struct hostent **result;
            int *h_errnop;
        } ghb;
    } u;
};

static pthread_mutex_t pl_rlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pl_rcond = PTHREAD_COND_INITIALIZER;
static struct pl_rjob *pl_rhead, *pl_rtail;
static int pl_rthreads, pl_ridle;

/* Read-held around every lookup in libc, write-held across fork(): glibc
 * takes locks of its own inside a lookup (reading resolv.conf, asking
 * netlink for the local addresses) and nothing resets them in a child,
 * so a fork that caught a worker holding one would leave every lookup in
 * the child hanging. Writers first, so a fork is not held off forever by
 * lookups that keep starting. */
static pthread_rwlock_t pl_rlookups = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

/* How long a fork waits for the lookups in flight, in seconds. glibc holds
 * its locks for microseconds, while it reads its configuration; a lookup
 * still running after this waits on a DNS server, holding none, and the
 * fork goes ahead without it. */
#define PL_RFORK_WAIT 1

static void pl_rjob_call(struct pl_rjob *j)
{
    switch (j->kind) {
    case PL_GAI:
        j->rc = REAL(getaddrinfo)(j->u.gai.node, j->u.gai.service,
                                  j->u.gai.hints, j->u.gai.res);
        break;
    case PL_GNI:
        j->rc = REAL(getnameinfo)(j->u.gni.sa, j->u.gni.salen, j->u.gni.host,
                                  j->u.gni.hostlen, j->u.gni.serv,
                                  j->u.gni.servlen, j->u.gni.flags);
        break;
    case PL_GHBN_R:
        j->rc = REAL(gethostbyname_r)(j->u.ghb.name, j->u.ghb.ret, j->u.ghb.buf,
                                      j->u.ghb.buflen, j->u.ghb.result,
                                      &j->herr);
        break;
    case PL_GHBN2_R:
        j->rc = REAL(gethostbyname2_r)(j->u.ghb.name, j->u.ghb.af, j->u.ghb.ret,
                                       j->u.ghb.buf, j->u.ghb.buflen,
                                       j->u.ghb.result, &j->herr);
        break;
    case PL_GHBA_R:
        j->rc = REAL(gethostbyaddr_r)(j->u.ghb.addr, j->u.ghb.len, j->u.ghb.af,
                                      j->u.ghb.ret, j->u.ghb.buf,
                                      j->u.ghb.buflen, j->u.ghb.result,
                                      &j->herr);
        break;
    }
}

static void pl_rjob_run(struct pl_rjob *j)
{
    pthread_rwlock_rdlock(&pl_rlookups);
    errno = 0;
    pl_rjob_call(j);
    j->err = errno;
    pthread_rwlock_unlock(&pl_rlookups);
}

/* Runs on the caller's hub: the job is done and may now be read. */
static void pl_rjob_deliver(void *arg)
{
    struct pl_rjob *j = arg;

    j->delivered = 1;
    green_unpark(j->g);
}

static void *pl_rworker(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&pl_rlock);
    for (;;) {
        struct pl_rjob *j;
        while (!pl_rhead) {
            pl_ridle++;
            pthread_cond_wait(&pl_rcond, &pl_rlock);
            pl_ridle--;
        }
        j = pl_rhead;
        pl_rhead = j->next;
        if (!pl_rhead)
            pl_rtail = NULL;
        pthread_mutex_unlock(&pl_rlock);
        pl_rjob_run(j);
        while (green_hub_post(j->hub, pl_rjob_deliver, j) < 0)
            REAL(usleep)(1000); /* out of memory: the caller must hear */
        pthread_mutex_lock(&pl_rlock);
    }
    return NULL;
}

/* The pthread_atfork handlers, registered with the first lookup. The
 * forking thread waits for the lookups in flight (pl_rlookups), then
 * holds pl_rlock across fork(), so no worker is halfway through the queue
 * in the child's copy. glibc runs one fork's handlers at a time, so one
 * flag says whether this fork got pl_rlookups. */
static int pl_rfork_waited;

static void pl_rfork_prepare(void)
{
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += PL_RFORK_WAIT;
    pl_rfork_waited = pthread_rwlock_clockwrlock(&pl_rlookups, CLOCK_MONOTONIC,
                                                 &until) == 0;
    pthread_mutex_lock(&pl_rlock);
}

static void pl_rfork_parent(void)
{
    pthread_mutex_unlock(&pl_rlock);
    if (pl_rfork_waited)
        pthread_rwlock_unlock(&pl_rlookups);
}

static void pl_rfork_child(void)
{
    pthread_mutex_init(&pl_rlock, NULL);
    pthread_cond_init(&pl_rcond, NULL);
    pl_rlookups = (pthread_rwlock_t)PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
    pl_rhead = pl_rtail = NULL;
    pl_rthreads = pl_ridle = 0;
}

static void pl_rfork_register(void)
{
    pthread_atfork(pl_rfork_prepare, pl_rfork_parent, pl_rfork_child);
}

static pthread_once_t pl_rfork_once = PTHREAD_ONCE_INIT;

static int pl_rpool_max(void)
{
    const char *e = getenv("LIBGREEN_RESOLVER_THREADS");
    int n = e ? atoi(e) : 4;

    return n < 1 ? 1 : n > 64 ? 64 : n;
}

/* How a lookup's park shows in reports, per enum pl_rkind: the name
 * looked up, when there is one. */
static const struct green_callsite pl_rsites[] = {
    [PL_GAI] = {"getaddrinfo", GREEN_CALL_RESOLVER, GREEN_OBJ_TEXT},
    [PL_GNI] = {"getnameinfo", GREEN_CALL_RESOLVER, GREEN_OBJ_NONE},
    [PL_GHBN_R] = {"gethostbyname_r", GREEN_CALL_RESOLVER, GREEN_OBJ_TEXT},
    [PL_GHBN2_R] = {"gethostbyname2_r", GREEN_CALL_RESOLVER, GREEN_OBJ_TEXT},
    [PL_GHBA_R] = {"gethostbyaddr_r", GREEN_CALL_RESOLVER, GREEN_OBJ_NONE},
};

static const void *pl_rjob_obj(const struct pl_rjob *j)
{
    switch (j->kind) {
    case PL_GAI: return j->u.gai.node;
    case PL_GHBN_R:
    case PL_GHBN2_R: return j->u.ghb.name;
    default: return NULL;
    }
}

/* Queues j and parks until it is delivered. If no worker thread can be
 * started at all, runs the lookup right here, blocking: slower, but the
 * caller still gets its answer. */
static void pl_rjob_submit(struct pl_rjob *j)
{
    int start = 0;

    /* Never under pl_rlock: a fork in progress holds glibc's atfork lock
     * while its prepare handler waits for ours. */
    pthread_once(&pl_rfork_once, pl_rfork_register);
    j->g = green_current();
    j->hub = green_hub_of(j->g);
    j->delivered = 0;
    j->next = NULL;
    pthread_mutex_lock(&pl_rlock);
    if (pl_ridle == 0 && pl_rthreads < pl_rpool_max()) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, pl_rworker, NULL) == 0)
            pl_rthreads++;
        pthread_attr_destroy(&attr);
    }
    if (pl_rthreads == 0) {
        pthread_mutex_unlock(&pl_rlock);
        pl_rjob_run(j);
        errno = j->err;
        return;
    }
    if (pl_rtail)
        pl_rtail->next = j;
    else
        pl_rhead = j;
    pl_rtail = j;
    start = pl_ridle > 0;
    pthread_mutex_unlock(&pl_rlock);
    if (start)
        pthread_cond_signal(&pl_rcond);
    while (!j->delivered) {
        green_note(&pl_rsites[j->kind], pl_rjob_obj(j));
        green_park(-1); /* an interrupt cannot end it: the job is on our stack */
    }
    errno = j->err;
}

PL_EXPORT int getaddrinfo(const char *node, const char *service,
                          const struct addrinfo *hints, struct addrinfo **res)
{
    struct pl_rjob j;

    if (pl_likely(!pl_in_green()))
        return REAL(getaddrinfo)(node, service, hints, res);
    j.kind = PL_GAI;
    j.u.gai.node = node;
    j.u.gai.service = service;
    j.u.gai.hints = hints;
    j.u.gai.res = res;
    pl_rjob_submit(&j);
    return j.rc;
}

PL_EXPORT int getnameinfo(const struct sockaddr *sa, socklen_t salen,
                          char *host, socklen_t hostlen, char *serv,
                          socklen_t servlen, int flags)
{
    struct pl_rjob j;

    if (pl_likely(!pl_in_green()))
        return REAL(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags);
    j.kind = PL_GNI;
    j.u.gni.sa = sa;
    j.u.gni.salen = salen;
    j.u.gni.host = host;
    j.u.gni.hostlen = hostlen;
    j.u.gni.serv = serv;
    j.u.gni.servlen = servlen;
    j.u.gni.flags = flags;
    pl_rjob_submit(&j);
    return j.rc;
}

/* The gethostby*_r lookups: their error detail travels in h_errno. */
static int pl_ghb(struct pl_rjob *j, int *h_errnop)
{
    pl_rjob_submit(j);
    if (h_errnop)
        *h_errnop = j->herr;
    return j->rc;
}

PL_EXPORT int gethostbyname_r(const char *name, struct hostent *ret, char *buf,
                              size_t buflen, struct hostent **result,
                              int *h_errnop)
{
    struct pl_rjob j;

    if (pl_likely(!pl_in_green()))
        return REAL(gethostbyname_r)(name, ret, buf, buflen, result, h_errnop);
    memset(&j, 0, sizeof j);
    j.kind = PL_GHBN_R;
    j.u.ghb.name = name;
    j.u.ghb.ret = ret;
    j.u.ghb.buf = buf;
    j.u.ghb.buflen = buflen;
    j.u.ghb.result = result;
    return pl_ghb(&j, h_errnop);
}

PL_EXPORT int gethostbyname2_r(const char *name, int af, struct hostent *ret,
                               char *buf, size_t buflen,
                               struct hostent **result, int *h_errnop)
{
    struct pl_rjob j;

    if (pl_likely(!pl_in_green()))
        return REAL(gethostbyname2_r)(name, af, ret, buf, buflen, result, h_errnop);
    memset(&j, 0, sizeof j);
    j.kind = PL_GHBN2_R;
    j.u.ghb.name = name;
    j.u.ghb.af = af;
    j.u.ghb.ret = ret;
    j.u.ghb.buf = buf;
    j.u.ghb.buflen = buflen;
    j.u.ghb.result = result;
    return pl_ghb(&j, h_errnop);
}

PL_EXPORT int gethostbyaddr_r(const void *addr, socklen_t len, int af,
                              struct hostent *ret, char *buf, size_t buflen,
                              struct hostent **result, int *h_errnop)
{
    struct pl_rjob j;

    if (pl_likely(!pl_in_green()))
        return REAL(gethostbyaddr_r)(addr, len, af, ret, buf, buflen, result,
                                     h_errnop);
    memset(&j, 0, sizeof j);
    j.kind = PL_GHBA_R;
    j.u.ghb.addr = addr;
    j.u.ghb.len = len;
    j.u.ghb.af = af;
    j.u.ghb.ret = ret;
    j.u.ghb.buf = buf;
    j.u.ghb.buflen = buflen;
    j.u.ghb.result = result;
    return pl_ghb(&j, h_errnop);
}
