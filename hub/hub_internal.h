/* hub/hub_internal.h - what the files of hub/ share and nobody else sees.
 *
 * Invariants the whole layer keeps:
 *  - a green thread is in exactly one of: the run queue (READY), running
 *    (RUNNING, it is hub->current), parked (PARKED), or finished (DONE);
 *  - while PARKED, every registration it made (fd watchers in the hub's
 *    per-fd lists, its deadline timer, its wait-queue link) is live; the
 *    moment anyone wakes it, hub_wake() disarms all of them, so a waiter
 *    is in an fd list if and only if its green thread is parked on it;
 *  - green threads switch only to and from the hub context, never to each
 *    other, so the hub context always knows who ran last.
 */
#ifndef LIBGREEN_HUB_INTERNAL_H
#define LIBGREEN_HUB_INTERNAL_H

#include <ev.h>
#include <pthread.h>
#include <sys/types.h>

#include "hub/ctx.h"
#include "hub/green.h"
#include "hub/report.h"

#define HIDDEN __attribute__((visibility("hidden")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

enum green_state { G_READY, G_RUNNING, G_PARKED, G_DONE };

/* How a green thread is parked (wait.c sets it; reports read it). */
enum hub_wait { W_NONE, W_FD, W_FDS, W_SLEEP, W_WQ, W_PARK, W_JOIN };

/* What the current (or last) park of a green thread is for: a handful of
 * stores per park, read only by reports (hub/debug.c, hub/dump.c). */
struct hub_waitrec {
    const struct green_callsite *site; /* the interposed call, or NULL */
    const void *obj;                  /* what site says it is */
    double since;                     /* ev_now() when it parked */
    double trace_t0;                  /* clock at the park if traced, else 0 */
    int fd;                           /* first fd of an fd wait */
    unsigned nfds;                    /* fds of a multi-fd wait */
    unsigned char kind;               /* enum hub_wait */
    unsigned char events;             /* GREEN_READ/WRITE of an fd wait */
};

/* One fd a parked green thread waits on. Lives on the parked thread's own
 * stack (or heap for large polls) for the duration of the park. */
struct hub_fdwaiter {
    ev_io io;
    struct green *g;
    struct hub_fdwaiter *next, *prev; /* the hub's list for io.fd */
    int index;                        /* position in a multi-fd wait */
};

struct green {
    struct hub_ctx ctx;
    struct hub *hub;
    green_fn fn;
    void *arg;
    uint64_t id;
    uint32_t ident_slot;              /* hub/ident.c, 0 = none yet */

    /* stack: usable [stack_lo, stack_lo + stack_size), guard page below */
    void *stack_lo;
    size_t stack_size;

    enum green_state state;
    struct green *next;               /* run queue / free list */

    /* what the current park registered; cleared by hub_wake */
    struct hub_fdwaiter *fdw;         /* array of nfdw waiters */
    size_t nfdw;
    struct green_wq *wq;              /* wait queue parked on */
    struct green *wq_next, *wq_prev;
    ev_timer timer;                   /* deadline, if any (timer.c) */
    double deadline;                  /* CLOCK_MONOTONIC, while armed */
    struct green *imm_next, *imm_prev; /* hub->imminent (timer.c) */
    unsigned interruptible : 1;
    unsigned detached : 1;            /* free at finish */
    unsigned joined : 1;              /* someone is in green_join */
    unsigned plain_park : 1;          /* parked in green_park */
    unsigned imminent : 1;            /* in hub->imminent */

    /* how the park ended: 0 or an errno; which fd index / events fired */
    int wake_err;
    int wake_index;
    int wake_events;

    struct green_wq joiners;
    char name[32];

    /* for reports: what it waits on, the layer above's description, and
     * the hub's list of live green threads */
    struct hub_waitrec wait;
    void *info;
    struct green *all_next, *all_prev;
#if defined(__SANITIZE_ADDRESS__)
    void *asan_fake_stack;
#endif
};

struct hub_post {
    void (*fn)(void *);
    void *arg;
    struct hub_post *next;
};

struct hub {
    struct ev_loop *loop;
    struct green *current;            /* == hub_tls_current */
    struct hub_ctx ctx;               /* the hub context while a green runs */
    pid_t pid;                        /* process that made the hub */

    struct green *ready_head, *ready_tail;
    double last_poll;                 /* when the loop last polled I/O */
    double now;                       /* ev_now() after the last ev_run:
                                         when parks began, for reports */

    /* fd -> list of waiters, in chunks of HUB_FD_CHUNK, made on demand */
    struct hub_fdwaiter ***fd_chunks;
    size_t fd_nchunks;

    /* work posted from other OS threads */
    ev_async async;
    pthread_mutex_t post_lock;
    struct hub_post *posts;

    /* deadlines due within a couple of milliseconds, soonest first, and
     * the timerfd that ends the wait for the first (hub/timer.c) */
    struct green *imminent, *imminent_tail;
    ev_io tfd_io;
    double tfd_at;                    /* what the timerfd is set to */
    int tfd;
    int tfd_state;                    /* 0 not made, 1 made, -1 failed */

    /* finished stacks kept for the next spawn of the default size, and
     * the rest of the slab new ones are cut from (hub/stack.c) */
    void **stack_pool;
    size_t stack_pool_len, stack_pool_cap;
    char *stack_slab;                 /* the next stack's guard */
    size_t stack_slab_left;           /* stacks still to cut there */

    struct green_stats stats;
    struct green *all, *all_tail;     /* every live green thread */

    /* debugging (hub/debug.c, hub/watchdog.c) */
    pid_t tid;                        /* the OS thread's, for tgkill */
    unsigned dbg_seen;                /* requests from signals handled */
    unsigned dbg_dumps_seen, dbg_stats_seen;
    int hang_reported;                /* once per hang: */
    uint64_t hang_set;                /*   of this set of stuck threads */
    ev_timer hang_timer;
    uint64_t wd_switches;             /* watchdog thread only: last seen */
    double wd_since;                  /*   since when unchanged */
    uint64_t wd_green;                /*   id of the green thread warned of */
    uint64_t wd_ran_ms;               /*   how long it had run then */

    /* identities (hub/ident.c) */
    pthread_t thread;                 /* the OS thread the hub runs on */
    int ident_index;
    uint32_t ident_next;
    uint32_t *ident_free;
    size_t ident_nfree, ident_cap;

#if defined(__SANITIZE_ADDRESS__)
    const void *asan_stack_lo;        /* the hub context's own stack */
    size_t asan_stack_size;
#endif
};

#define HUB_FD_CHUNK 1024

extern __thread struct hub *hub_tls_hub
    __attribute__((tls_model("initial-exec"))) HIDDEN;
extern const struct green_park_hooks *hub_park_hooks HIDDEN;

/* hub.c */
extern const struct green_callsite hub_site_join HIDDEN;
HIDDEN void hub_make_ready(struct hub *hub, struct green *g);
HIDDEN void hub_wake(struct green *g, int err, int index, int events);
HIDDEN int hub_park(struct green *g);
HIDDEN double hub_clamp_timeout(double timeout);
HIDDEN void hub_stats_of(const struct hub *hub, struct green_stats *out);

/* stack.c */
HIDDEN void *hub_stack_get(struct hub *hub, size_t size);
HIDDEN void hub_stack_put(struct hub *hub, void *lo, size_t size);
HIDDEN void hub_stack_pool_free(struct hub *hub);
HIDDEN int hub_overflow_guard_thread(void);

/* ident.c */
HIDDEN void hub_ident_register(struct hub *hub);
HIDDEN void hub_ident_unregister(struct hub *hub);
HIDDEN void hub_ident_release(struct hub *hub, struct green *g);
HIDDEN void hub_ident_atfork_prepare(void);
HIDDEN void hub_ident_atfork_parent(void);
HIDDEN void hub_ident_atfork_child(void);

/* mainrole.c */
HIDDEN void hub_main_release(struct green *g);

/* wait.c */
HIDDEN void hub_disarm(struct green *g);

/* timer.c: the deadline of a park, timeout seconds from now, ending it
 * with hub_wake(g, ETIMEDOUT) on time; disarm stops it (a no-op when
 * none is armed); left: seconds to go. */
HIDDEN void hub_deadline_arm(struct hub *hub, struct green *g, double timeout);
HIDDEN void hub_deadline_disarm(struct hub *hub, struct green *g);
HIDDEN double hub_deadline_left(const struct green *g);
HIDDEN void hub_timer_destroy(struct hub *hub);
/* The program is closing fds [first, last]: if the timerfd is one, stop
 * using it (its watcher first, while the number is still ours). */
HIDDEN void hub_timer_fd_closing(struct hub *hub, unsigned first, unsigned last);

static inline int hub_deadline_armed(const struct green *g)
{
    return ev_is_active(&g->timer) || g->imminent;
}

/* Starts g's wait record for a park of kind (enum hub_wait): takes the
 * note the layer above left (green_note), so a park no one named is
 * GREEN_CALL_OTHER, never the name of an earlier call. fd waits add
 * their fd, count and events (only they are read back). */
static inline void hub_wait_begin(struct green *g, int kind)
{
    g->wait.site = hub_tls_note.site;
    g->wait.obj = hub_tls_note.obj;
    hub_tls_note.site = NULL;
    g->wait.kind = (unsigned char)kind;
}

static inline void hub_wait_fds(struct green *g, int fd, unsigned nfds,
                                int events)
{
    g->wait.fd = fd;
    g->wait.nfds = nfds;
    g->wait.events = (unsigned char)events;
}

/* debug.c: the toggles; see hub/debug.c */
extern int hub_trace_on HIDDEN;             /* LIBGREEN_TRACE, or its signal */
extern volatile unsigned hub_dbg_requests HIDDEN; /* bumped by signals */
extern const struct green_debug_hooks *hub_debug_hooks HIDDEN;
HIDDEN void hub_debug_start(struct hub *hub);
HIDDEN void hub_debug_service(struct hub *hub);
HIDDEN void hub_debug_stop(struct hub *hub);
HIDDEN void hub_debug_atfork_child(void);
HIDDEN void hub_trace_line(struct green *g, int err);
HIDDEN int hub_debug_out_fd(void);
HIDDEN double hub_mono_now(void);

/* dump.c */
HIDDEN void hub_dump(struct hub *hub, int fd, const char *why);
HIDDEN void hub_dump_stats_line(struct hub *hub, int fd);
/* "recv on fd 9 (read)": what g's current or last park waits on */
HIDDEN void hub_dump_wait(struct hub_report *r, const struct green *g);
HIDDEN void hub_dump_describe(struct hub_report *r, const struct green *g,
                              const char *before, const char *after);

/* watchdog.c */
HIDDEN int hub_watchdog_start(double warn_ms);
HIDDEN void hub_watchdog_atfork_child(void);

/* unwind.c: C stacks (a line saying why not, without libunwind) */
HIDDEN int hub_unwind_load(void);
HIDDEN void hub_unwind_atfork_child(void);
HIDDEN void hub_unwind_green(struct hub_report *r, struct green *g);
HIDDEN void hub_unwind_signal(struct hub_report *r, void *ucontext);

/* ident.c: every registered hub, for the watchdog thread */
HIDDEN void hub_ident_each(void (*fn)(struct hub *hub, void *arg), void *arg);

#endif
