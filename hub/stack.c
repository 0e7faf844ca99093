/* hub/stack.c - green thread stacks: mapping, pooling, overflow reports.
 *
 * A stack is one anonymous mapping: HUB_GUARD bytes of PROT_NONE at the
 * low end (stacks grow down), then the usable region. Pages are touched
 * lazily, so a 1 MiB stack costs only what the thread really used. The
 * guard is larger than a page so that a frame somewhat bigger than a page
 * still lands in it instead of in a neighbouring mapping.
 *
 * Finished stacks of the default size go back to a per-hub pool, so a
 * server does not pay mmap + mprotect + munmap per request. Pages a
 * finished thread dirtied stay resident while pooled; the pool is capped.
 * New stacks of the default size are cut from a slab, one mapping of
 * about HUB_SLAB_BYTES, with each guard made by MADV_GUARD_INSTALL
 * (Linux 6.13: page-table markers, no new mapping) or, before that, by
 * mprotect: a burst of new concurrency (10,000 connections at once) paid
 * an mmap and an mprotect per stack, half of a new stack's cost, and a
 * kernel keeping two mappings per stack. A stack past the pool's cap is
 * unmapped alone, leaving a hole in its slab.
 *
 * Overflow: a SIGSEGV handler runs on an alternate signal stack (one per
 * OS thread with a hub). If the faulting address is inside the guard of
 * the running green thread, it writes which thread overflowed and how big
 * its stack is, then aborts. Any other fault goes to whatever handler was
 * there before us (or the default action), so faulthandler and crash
 * reporters keep working.
 *
 * fork(): the handler and the alternate stack of the forking thread are
 * inherited, and kept. The stack size read from the environment stays
 * valid. Pooled stacks of the forking thread's hub are unmapped in the
 * child (hub.c); a child that goes on on a green thread's stack keeps its
 * guard page, but an overflow there is a plain SIGSEGV, not a report.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hub/hub_internal.h"

#define HUB_GUARD (64 * 1024)
#define HUB_POOL_MAX 1024
#define HUB_ALTSTACK (64 * 1024)
#define HUB_SLAB_BYTES ((size_t)64 << 20) /* virtual: MAP_NORESERVE */

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13; older headers lack it */
#endif

static size_t hub_default_stack;

/* Parses "524288", "512k", "8m". Returns 0 if unset or invalid. */
static size_t hub_parse_size(const char *s)
{
    char *end;
    unsigned long long v;

    if (!s || !*s)
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s)
        return 0;
    if (*end == 'k' || *end == 'K')
        v <<= 10, end++;
    else if (*end == 'm' || *end == 'M')
        v <<= 20, end++;
    if (*end)
        return 0;
    return (size_t)v;
}

size_t green_default_stack_size(void)
{
    size_t size = __atomic_load_n(&hub_default_stack, __ATOMIC_RELAXED);

    if (likely(size))
        return size;
    size = hub_parse_size(getenv("LIBGREEN_STACK_SIZE"));
    if (size && (size < GREEN_MIN_STACK || size > ((size_t)1 << 32))) {
        fprintf(stderr,
                "libgreen: LIBGREEN_STACK_SIZE=%s is out of range (64k to "
                "4096m); using the default %dk\n",
                getenv("LIBGREEN_STACK_SIZE"), GREEN_DEFAULT_STACK / 1024);
        size = 0;
    } else if (!size && getenv("LIBGREEN_STACK_SIZE")) {
        fprintf(stderr,
                "libgreen: LIBGREEN_STACK_SIZE=%s is not a size (use bytes, "
                "or a number with k or m); using the default %dk\n",
                getenv("LIBGREEN_STACK_SIZE"), GREEN_DEFAULT_STACK / 1024);
    }
    if (!size)
        size = GREEN_DEFAULT_STACK;
    size = (size + 4095) & ~(size_t)4095;
    __atomic_store_n(&hub_default_stack, size, __ATOMIC_RELAXED);
    return size;
}

static void *hub_stack_map(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}

/* Makes [base, base + HUB_GUARD) a guard. Returns 0 or -1. */
static int hub_stack_guard(char *base)
{
    static int markers = 1; /* MADV_GUARD_INSTALL works here, until it fails */

    if (__atomic_load_n(&markers, __ATOMIC_RELAXED)) {
        if (madvise(base, HUB_GUARD, MADV_GUARD_INSTALL) == 0)
            return 0;
        if (errno != EINVAL)
            return -1;
        __atomic_store_n(&markers, 0, __ATOMIC_RELAXED);
    }
    return mprotect(base, HUB_GUARD, PROT_NONE);
}

/* A new stack of the default size, cut from the hub's slab (a new slab
 * when it is used up). Returns its guard's start, or NULL. */
static char *hub_stack_cut(struct hub *hub, size_t size)
{
    size_t each = size + HUB_GUARD;
    char *base;

    if (!hub->stack_slab_left) {
        size_t n = HUB_SLAB_BYTES / each;
        if (n < 2)
            return NULL; /* stacks this big get a mapping each */
        hub->stack_slab = hub_stack_map(n * each);
        if (!hub->stack_slab)
            return NULL;
        /* Transparent huge pages would make each stack's one touched
         * page 2 MiB of RSS. */
        madvise(hub->stack_slab, n * each, MADV_NOHUGEPAGE);
        hub->stack_slab_left = n;
    }
    base = hub->stack_slab;
    hub->stack_slab += each;
    hub->stack_slab_left--;
    if (hub_stack_guard(base) < 0) {
        munmap(base, each);
        return NULL;
    }
    return base;
}

void *hub_stack_get(struct hub *hub, size_t size)
{
    char *base = NULL;

    if (size == green_default_stack_size()) {
        if (hub->stack_pool_len)
            return hub->stack_pool[--hub->stack_pool_len];
        base = hub_stack_cut(hub, size);
        if (base)
            return base + HUB_GUARD;
    }
    size = (size + 4095) & ~(size_t)4095;
    base = hub_stack_map(size + HUB_GUARD);
    if (!base)
        return NULL;
    if (hub_stack_guard(base) < 0) {
        munmap(base, size + HUB_GUARD);
        return NULL;
    }
    return base + HUB_GUARD;
}

/* With LIBGREEN_STACK_STATS=1, how deep did this stack ever reach? Fresh
 * stack pages are zero, so the lowest non-zero byte marks the deepest
 * frame any thread on it wrote. Costs a scan: a measuring aid only. */
static void hub_stack_measure(struct hub *hub, const char *lo, size_t size)
{
    static int enabled = -1;
    size_t i;

    if (enabled < 0) {
        const char *e = getenv("LIBGREEN_STACK_STATS");
        enabled = e && *e && strcmp(e, "0") != 0;
    }
    if (!enabled)
        return;
    for (i = 0; i < size && !lo[i]; i++)
        ;
    if (size - i > hub->stats.stack_high_water)
        hub->stats.stack_high_water = size - i;
}

void hub_stack_put(struct hub *hub, void *lo, size_t size)
{
    hub_stack_measure(hub, lo, size);
    if (size == green_default_stack_size()) {
        if (hub->stack_pool_len == hub->stack_pool_cap &&
            hub->stack_pool_cap < HUB_POOL_MAX) {
            size_t cap = hub->stack_pool_cap ? hub->stack_pool_cap * 2 : 16;
            void **p = realloc(hub->stack_pool, cap * sizeof *p);
            if (p) {
                hub->stack_pool = p;
                hub->stack_pool_cap = cap;
            }
        }
        if (hub->stack_pool_len < hub->stack_pool_cap) {
            hub->stack_pool[hub->stack_pool_len++] = lo;
            return;
        }
    }
    size = (size + 4095) & ~(size_t)4095;
    munmap((char *)lo - HUB_GUARD, size + HUB_GUARD);
}

void hub_stack_pool_free(struct hub *hub)
{
    size_t size = green_default_stack_size();

    while (hub->stack_pool_len)
        munmap((char *)hub->stack_pool[--hub->stack_pool_len] - HUB_GUARD,
               size + HUB_GUARD);
    free(hub->stack_pool);
    hub->stack_pool = NULL;
    hub->stack_pool_cap = 0;
    if (hub->stack_slab_left)
        munmap(hub->stack_slab, hub->stack_slab_left * (size + HUB_GUARD));
    hub->stack_slab = NULL;
    hub->stack_slab_left = 0;
}

/* ---- overflow reports ------------------------------------------------- */

static struct sigaction hub_old_segv, hub_old_bus;
static pthread_once_t hub_segv_once = PTHREAD_ONCE_INIT;

static void hub_segv(int sig, siginfo_t *si, void *uctx)
{
    struct green *g = hub_tls_current;
    const struct sigaction *old = sig == SIGSEGV ? &hub_old_segv : &hub_old_bus;

    if (g && g->stack_lo) {
        char *addr = si->si_addr, *lo = g->stack_lo;
        if (addr < lo && addr >= lo - HUB_GUARD) {
            struct hub_report r; /* async-signal-safe (hub/report.h) */
            hub_report_init(&r, 2);
            hub_report_str(&r, "libgreen: green thread ");
            hub_report_u64(&r, g->id);
            if (g->name[0]) {
                hub_report_str(&r, " (");
                hub_report_str(&r, g->name);
                hub_report_str(&r, ")");
            }
            hub_report_str(&r, " overflowed its ");
            hub_report_u64(&r, g->stack_size / 1024);
            hub_report_str(&r, " KiB stack; set LIBGREEN_STACK_SIZE larger "
                               "(e.g. LIBGREEN_STACK_SIZE=4m) or pass a bigger "
                               "stack_size\n");
            hub_report_flush(&r);
            signal(SIGABRT, SIG_DFL);
            abort();
        }
    }
    /* Not ours: hand it to the handler we replaced. */
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction) {
            old->sa_sigaction(sig, si, uctx);
            return;
        }
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* Default action: restore it and return; the fault repeats and the
     * process dies with the signal as it would have without us. */
    sigaction(sig, old, NULL);
}

static void hub_segv_install(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = hub_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &hub_old_segv);
    sigaction(SIGBUS, &sa, &hub_old_bus);
}

/* Gives the calling OS thread an alternate signal stack (unless it has
 * one) and installs the process-wide handler once. Returns 0 or -1. */
int hub_overflow_guard_thread(void)
{
    stack_t ss, old;

    pthread_once(&hub_segv_once, hub_segv_install);
    if (sigaltstack(NULL, &old) == 0 && !(old.ss_flags & SS_DISABLE))
        return 0;
    ss.ss_sp = mmap(NULL, HUB_ALTSTACK, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ss.ss_sp == MAP_FAILED)
        return -1;
    ss.ss_size = HUB_ALTSTACK;
    ss.ss_flags = 0;
    if (sigaltstack(&ss, NULL) < 0) {
        munmap(ss.ss_sp, HUB_ALTSTACK);
        return -1;
    }
    /* Kept for the life of the thread: the kernel may use it any time. */
    return 0;
}
