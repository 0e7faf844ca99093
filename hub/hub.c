/* hub/hub.c - hubs, the scheduler, and the life of a green thread.
 *
 * A hub is made lazily per OS thread (green_hub) and lives until the
 * thread ends. Its scheduler, green_hub_run, runs in the hub context: it
 * takes the green threads that were ready when a round began, switches to
 * each until it parks, yields or finishes, then lets libev wait for I/O and
 * timers (without blocking if something is ready). libev callbacks never
 * switch; they only move parked threads to the run queue (hub_wake), so
 * all switching happens here and in hub_park.
 *
 * A green thread's life: green_spawn takes a stack (pooled), makes its
 * context and queues it. hub_entry runs fn(arg), marks it DONE, wakes its
 * joiners and switches to the hub for the last time; the hub context then
 * returns the stack to the pool (a thread cannot free the stack it runs
 * on), and frees the struct once it is joined or detached.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hub/hub_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

__thread struct green *hub_tls_current
    __attribute__((tls_model("initial-exec"))) HIDDEN;
__thread struct hub *hub_tls_hub
    __attribute__((tls_model("initial-exec"))) HIDDEN;
__thread struct green_note hub_tls_note
    __attribute__((tls_model("initial-exec"))) HIDDEN;

const struct green_park_hooks *hub_park_hooks HIDDEN;
static uint64_t hub_next_id; /* atomic: ids are unique per process */

static void hub_async_cb(struct ev_loop *loop, ev_async *w, int revents);

/* While threads stay ready, I/O is polled at most this often (seconds). */
#define HUB_POLL_INTERVAL 50e-6

double hub_mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- switching -------------------------------------------------------- */

/* Switch from the hub context into g; returns when g switches back. */
static void hub_switch_in(struct hub *hub, struct green *g)
{
    hub->current = g;
    hub_tls_current = g;
    g->state = G_RUNNING;
    hub->stats.switches++;
#if defined(__SANITIZE_ADDRESS__)
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, g->stack_lo, g->stack_size);
    hub_ctx_switch(&hub->ctx, &g->ctx);
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#else
    hub_ctx_switch(&hub->ctx, &g->ctx);
#endif
    hub->current = NULL;
    hub_tls_current = NULL;
}

/* Switch from the running green thread g to the hub context. exiting
 * means g never comes back, so ASan may drop its fake stack. */
static void hub_switch_out(struct hub *hub, struct green *g, int exiting)
{
    /* errno is one per OS thread; while g is away others change it. */
    int saved = errno;

#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_start_switch_fiber(exiting ? NULL : &g->asan_fake_stack,
                                   hub->asan_stack_lo, hub->asan_stack_size);
    hub_ctx_switch(&g->ctx, &hub->ctx);
    __sanitizer_finish_switch_fiber(g->asan_fake_stack, NULL, NULL);
#else
    (void)exiting;
    hub_ctx_switch(&g->ctx, &hub->ctx);
#endif
    errno = saved;
}

/* In the child of a fork() made from a green thread, that thread's code
 * went on as the child's only context (hard rule 6); now it returned, and
 * the hub context it would switch to is the parent's, whose scheduler
 * must not run here. As when the last thread of a process returns, the
 * child exits with status 0. */
static void hub_forked_context_ends(void)
{
    exit(0);
}

/* The hub's list of live green threads, oldest first, which reports
 * walk. */
static void hub_all_link(struct hub *hub, struct green *g)
{
    g->all_next = NULL;
    g->all_prev = hub->all_tail;
    if (hub->all_tail)
        hub->all_tail->all_next = g;
    else
        hub->all = g;
    hub->all_tail = g;
}

static void hub_all_unlink(struct hub *hub, struct green *g)
{
    if (g->all_prev)
        g->all_prev->all_next = g->all_next;
    else
        hub->all = g->all_next;
    if (g->all_next)
        g->all_next->all_prev = g->all_prev;
    else
        hub->all_tail = g->all_prev;
    g->all_next = g->all_prev = NULL;
}

static void hub_entry(void)
{
    struct green *g = hub_tls_current;
    struct hub *hub = g->hub;

#if defined(__SANITIZE_ADDRESS__)
    /* First arrival on this stack: learn the hub context's stack. */
    __sanitizer_finish_switch_fiber(NULL, &hub->asan_stack_lo,
                                    &hub->asan_stack_size);
#endif
    g->fn(g->arg);
    if (unlikely(hub_tls_hub != hub))
        hub_forked_context_ends();
    g->state = G_DONE;
    hub->stats.live--;
    hub_all_unlink(hub, g);
    green_wq_wake_all(&g->joiners);
    hub_switch_out(hub, g, 1);
    __builtin_unreachable();
}

/* ---- run queue -------------------------------------------------------- */

void hub_make_ready(struct hub *hub, struct green *g)
{
    g->state = G_READY;
    g->next = NULL;
    if (hub->ready_tail)
        hub->ready_tail->next = g;
    else
        hub->ready_head = g;
    hub->ready_tail = g;
}

/* Ends a park: disarms whatever the park registered and queues g with the
 * outcome. A no-op unless g is parked, so a second event for the same park
 * (a timer racing an fd) is harmless. */
void hub_wake(struct green *g, int err, int index, int events)
{
    if (g->state != G_PARKED)
        return;
    hub_disarm(g);
    g->wake_err = err;
    g->wake_index = index;
    g->wake_events = events;
    hub_make_ready(g->hub, g);
}

/* Parks the running green thread g until hub_wake; returns the wake
 * errno (0 for a normal wake). The park hooks let the layer above drop
 * the GIL around the park. The wait record (wait.c filled in what) gets
 * its start and the count of its kind; with tracing on, the park also
 * gets a line when it ends - off, that is one predictable branch. */
int hub_park(struct green *g)
{
    const struct green_park_hooks *hooks = hub_park_hooks;
    struct hub *hub = g->hub;
    void *token = NULL;

    g->wait.since = hub->now;
    hub->stats.parks[g->wait.site ? g->wait.site->kind : GREEN_CALL_OTHER]++;
    if (unlikely(hub_trace_on))
        g->wait.trace_t0 = hub_mono_now();
    if (hooks && hooks->before_park)
        token = hooks->before_park();
    g->state = G_PARKED;
    hub_switch_out(hub, g, 0);
    if (unlikely(g->wait.trace_t0 != 0))
        hub_trace_line(g, g->wake_err);
    if (hooks && hooks->after_park)
        hooks->after_park(token);
    return g->wake_err;
}

/* Runs, once each, the threads that were ready when the round began, so a
 * thread that keeps yielding cannot starve I/O. */
static void hub_run_ready(struct hub *hub)
{
    struct green *g = hub->ready_head, *last = hub->ready_tail;

    if (!g)
        return;
    for (;;) {
        struct green *next = g->next;
        int was_last = g == last;

        hub->ready_head = next;
        if (!next)
            hub->ready_tail = NULL;
        hub_switch_in(hub, g);
        if (g->state == G_DONE) {
            hub_ident_release(hub, g);
            hub_main_release(g);
            hub_stack_put(hub, g->stack_lo, g->stack_size);
            g->stack_lo = NULL;
            if (g->detached)
                free(g);
        }
        if (was_last)
            break;
        g = hub->ready_head;
        if (!g)
            break;
    }
}

/* ---- hubs ------------------------------------------------------------- */

static void hub_destroy(void *arg)
{
    struct hub *hub = arg;

    /* Threads still parked when their OS thread ends are abandoned: there
     * is nobody left to run them. Their memory goes with the process. */
    hub_ident_unregister(hub);
    hub_debug_stop(hub);
    hub_timer_destroy(hub);
    ev_async_stop(hub->loop, &hub->async);
    ev_loop_destroy(hub->loop);
    hub_stack_pool_free(hub);
    free(hub->fd_chunks);
    pthread_mutex_destroy(&hub->post_lock);
    if (hub_tls_hub == hub) {
        hub_tls_hub = NULL;
        hub_tls_current = NULL;
    }
    free(hub);
}

static pthread_key_t hub_key;
static pthread_once_t hub_key_once = PTHREAD_ONCE_INIT;

/* ---- fork ------------------------------------------------------------- */

/* The child keeps only the forking context (hard rule 6). Every hub of
 * the parent - the forking thread's own, with its epoll set and parked
 * threads, and those of OS threads the child does not have - is dropped
 * unused: its memory stays as it was (a handle to a parent's green thread
 * still points somewhere valid, though that thread never runs again), and
 * so do its epoll and eventfd descriptors (close-on-exec), so that a
 * stray poke of an old hub writes to its own eventfd, never to a number
 * the child reused. Only the pooled stacks of the forking thread's hub,
 * which nothing references, are unmapped. A fresh hub is made on first
 * need, with this process's pid (green_vforked compares it). */
static void hub_atfork_prepare(void) { hub_ident_atfork_prepare(); }
static void hub_atfork_parent(void) { hub_ident_atfork_parent(); }

static void hub_atfork_child(void)
{
    struct hub *old = hub_tls_hub;

    hub_tls_hub = NULL;
    hub_tls_current = NULL;
    pthread_setspecific(hub_key, NULL);
    if (old)
        hub_stack_pool_free(old);
    hub_ident_atfork_child();
    hub_debug_atfork_child();
}

static void hub_key_make(void)
{
    pthread_key_create(&hub_key, hub_destroy);
    pthread_atfork(hub_atfork_prepare, hub_atfork_parent, hub_atfork_child);
}

struct hub *green_hub_peek(void) { return hub_tls_hub; }

struct hub *green_hub(void)
{
    struct hub *hub = hub_tls_hub;
    int err;

    if (likely(hub != NULL))
        return hub;
    pthread_once(&hub_key_once, hub_key_make);
    hub = calloc(1, sizeof *hub);
    if (!hub)
        return NULL;
    /* A loop of our own, never libev's default loop: gevent may share this
     * libev. No signal-mask juggling and no environment overrides. */
    hub->loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV |
                            EVFLAG_NOSIGMASK | EVFLAG_NOINOTIFY);
    if (!hub->loop) {
        err = errno ? errno : EMFILE;
        goto error1;
    }
    if (hub_overflow_guard_thread() < 0) {
        err = errno;
        goto error2;
    }
    pthread_mutex_init(&hub->post_lock, NULL);
    ev_async_init(&hub->async, hub_async_cb);
    hub->async.data = hub;
    ev_async_start(hub->loop, &hub->async);
    /* The async watcher alone must not keep green_hub_run waiting. */
    ev_unref(hub->loop);
    hub->pid = getpid();
    hub->tid = (pid_t)syscall(SYS_gettid);
    hub_ident_register(hub);
    hub_tls_hub = hub;
    pthread_setspecific(hub_key, hub);
    hub_debug_start(hub);
    return hub;

error2:
    ev_loop_destroy(hub->loop);
error1:
    free(hub);
    errno = err;
    return NULL;
}

struct ev_loop *green_hub_loop(struct hub *hub) { return hub->loop; }

void green_hub_poke(struct hub *hub) { ev_async_send(hub->loop, &hub->async); }

int green_hub_post(struct hub *hub, void (*fn)(void *), void *arg)
{
    struct hub_post *p = malloc(sizeof *p);

    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    p->fn = fn;
    p->arg = arg;
    pthread_mutex_lock(&hub->post_lock);
    p->next = hub->posts;
    hub->posts = p;
    pthread_mutex_unlock(&hub->post_lock);
    ev_async_send(hub->loop, &hub->async);
    return 0;
}

static void hub_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct hub *hub = w->data;
    struct hub_post *list, *rev = NULL;

    (void)loop;
    (void)revents;
    pthread_mutex_lock(&hub->post_lock);
    list = hub->posts;
    hub->posts = NULL;
    pthread_mutex_unlock(&hub->post_lock);
    while (list) { /* posted newest first: run them in posting order */
        struct hub_post *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct hub_post *n = rev->next;
        rev->fn(rev->arg);
        free(rev);
        rev = n;
    }
}

int green_hub_run(int (*done)(void *arg), void *arg)
{
    struct hub *hub = green_hub();
    int rc;

    if (!hub)
        return -1;
    if (hub_tls_current) {
        errno = EPERM;
        return -1;
    }
    hub->now = ev_now(hub->loop);
    for (;;) {
        hub_run_ready(hub);
        /* a dump or stats line asked for by a signal (hub/debug.c) */
        if (unlikely(hub->dbg_seen != hub_dbg_requests))
            hub_debug_service(hub);
        if (done(arg))
            return 0;
        if (hub->ready_head) {
            /* Threads are ready again (they yielded or were woken). Look
             * for I/O between rounds only when time has passed: a poll is
             * a system call, and rounds of yields can be much shorter. */
            double t = hub_mono_now();
            if (t - hub->last_poll < HUB_POLL_INTERVAL)
                continue;
            hub->last_poll = t;
            ev_run(hub->loop, EVRUN_NOWAIT);
            hub->now = ev_now(hub->loop);
            continue;
        }
        /* Nothing ready: block in epoll until an event or a timer. */
        hub->last_poll = 0;
        rc = ev_run(hub->loop, EVRUN_ONCE);
        hub->now = ev_now(hub->loop);
        if (!rc && !hub->ready_head && !done(arg)) {
            /* Nothing ready, nothing armed, not done: every green thread
             * waits on something only another green thread could give. */
            errno = EDEADLK;
            return -1;
        }
    }
}

/* ---- green threads ---------------------------------------------------- */

struct green *green_spawn(green_fn fn, void *arg, const struct green_attr *attr)
{
    struct hub *hub = green_hub();
    struct green *g;
    size_t size = attr && attr->stack_size ? attr->stack_size
                                           : green_default_stack_size();

    if (!hub)
        return NULL;
    if (size < GREEN_MIN_STACK || size > ((size_t)1 << 32)) {
        errno = EINVAL;
        return NULL;
    }
    /* malloc and memset, not calloc: glibc's calloc bypasses the
     * per-thread cache, and took 300 instructions of every request. */
    g = malloc(sizeof *g);
    if (!g) {
        errno = ENOMEM;
        return NULL;
    }
    memset(g, 0, sizeof *g);
    g->stack_lo = hub_stack_get(hub, size);
    if (!g->stack_lo) {
        free(g);
        errno = ENOMEM;
        return NULL;
    }
    g->stack_size = size;
    g->hub = hub;
    g->fn = fn;
    g->arg = arg;
    g->id = __atomic_add_fetch(&hub_next_id, 1, __ATOMIC_RELAXED);
    if (attr && attr->name) { /* not snprintf: a quarter of a spawn's cost */
        size_t n = strnlen(attr->name, sizeof g->name - 1);
        memcpy(g->name, attr->name, n);
        g->name[n] = 0;
    }
    ev_init(&g->timer, NULL);
    hub_ctx_make(&g->ctx, g->stack_lo, size, hub_entry);
    hub->stats.spawned++;
    hub->stats.live++;
    hub_all_link(hub, g);
    hub_make_ready(hub, g);
    return g;
}

/* How a join shows in reports: its obj is the green thread joined. */
const struct green_callsite hub_site_join = {"join", GREEN_CALL_OTHER,
                                             GREEN_OBJ_NONE};

static int hub_green_done(void *arg) { return ((struct green *)arg)->state == G_DONE; }

int green_join(struct green *g, double timeout)
{
    struct green *self = hub_tls_current;

    if (g == self) {
        errno = EDEADLK;
        return -1;
    }
    if (g->detached || g->joined) {
        errno = EINVAL;
        return -1;
    }
    g->joined = 1;
    if (self) {
        while (g->state != G_DONE) {
            green_note(&hub_site_join, g);
            if (green_wq_wait(&g->joiners, timeout) < 0) {
                g->joined = 0;
                return -1;
            }
        }
    } else if (green_hub_run_until(hub_green_done, g, timeout, NULL, 0) < 0) {
        g->joined = 0;
        return -1;
    }
    free(g);
    return 0;
}

void green_detach(struct green *g)
{
    if (g->state == G_DONE && !g->stack_lo)
        free(g);
    else
        g->detached = 1;
}

void green_yield(void)
{
    struct green *g = hub_tls_current;

    if (!g)
        return;
    hub_make_ready(g->hub, g);
    hub_switch_out(g->hub, g, 0);
}

uint64_t green_id(const struct green *g) { return g->id; }
const char *green_name(const struct green *g) { return g->name; }

void green_interrupt(struct green *g)
{
    if (g->state == G_PARKED && g->interruptible)
        hub_wake(g, EINTR, -1, 0);
}

int green_vforked(void)
{
    struct hub *hub = hub_tls_hub;

    return hub && getpid() != hub->pid;
}

void green_set_park_hooks(const struct green_park_hooks *hooks)
{
    hub_park_hooks = hooks;
}

void green_get_stats(struct green_stats *out)
{
    struct hub *hub = hub_tls_hub;

    if (hub)
        hub_stats_of(hub, out);
    else
        memset(out, 0, sizeof *out);
}

void hub_stats_of(const struct hub *hub, struct green_stats *out)
{
    *out = hub->stats;
    out->stacks_pooled = hub->stack_pool_len;
    out->parked = out->ready = 0;
    for (struct green *g = hub->all; g; g = g->all_next) {
        out->parked += g->state == G_PARKED;
        out->ready += g->state == G_READY;
    }
}

void green_set_info(struct green *g, void *info)
{
    if (g)
        g->info = info;
}

/* Timeouts arrive as doubles from callers; keep them finite and sane. */
double hub_clamp_timeout(double timeout)
{
    if (isnan(timeout))
        return 0;
    if (timeout > 1e9)
        return 1e9;
    return timeout;
}
