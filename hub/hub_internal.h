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

#define HIDDEN __attribute__((visibility("hidden")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

enum green_state { G_READY, G_RUNNING, G_PARKED, G_DONE };

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
    ev_timer timer;                   /* deadline, if any */
    unsigned interruptible : 1;
    unsigned detached : 1;            /* free at finish */
    unsigned joined : 1;              /* someone is in green_join */
    unsigned plain_park : 1;          /* parked in green_park */

    /* how the park ended: 0 or an errno; which fd index / events fired */
    int wake_err;
    int wake_index;
    int wake_events;

    struct green_wq joiners;
    char name[32];
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

    /* fd -> list of waiters, in chunks of HUB_FD_CHUNK, made on demand */
    struct hub_fdwaiter ***fd_chunks;
    size_t fd_nchunks;

    /* work posted from other OS threads */
    ev_async async;
    pthread_mutex_t post_lock;
    struct hub_post *posts;

    /* finished stacks kept for the next spawn of the default size */
    void **stack_pool;
    size_t stack_pool_len, stack_pool_cap;

    struct green_stats stats;

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
HIDDEN void hub_make_ready(struct hub *hub, struct green *g);
HIDDEN void hub_wake(struct green *g, int err, int index, int events);
HIDDEN int hub_park(struct green *g);
HIDDEN double hub_clamp_timeout(double timeout);

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

#endif
