/* hub/wait.c - the ways a green thread parks: fds, deadlines, wait queues.
 *
 * Every park follows one shape: register what may end it (ev_io watchers
 * linked into the hub's per-fd lists, a deadline timer, a wait-queue link),
 * call hub_park, and read the outcome from the green thread. Whoever ends
 * the park calls hub_wake, which disarms *all* registrations at once
 * (hub_disarm), so nothing stays armed after a park and nothing fires
 * twice.
 *
 * The per-fd lists exist so that close() and dup2() can find every thread
 * waiting on a number before the number is reused (hard rule 5): the
 * watchers are stopped and the waiters woken with EBADF. libev requires
 * the stop to happen before the close, and we need the waiter to learn
 * that its fd is gone instead of sleeping forever.
 *
 * Timers: ev_now() is the time the loop last woke, which may lag behind
 * the clock while green threads ran. A deadline is measured from the real
 * time so no sleep ends early, and kept to the microsecond (timer.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "hub/hub_internal.h"

/* ---- per-fd waiter lists ---------------------------------------------- */

static struct hub_fdwaiter **hub_fd_slot(struct hub *hub, int fd, int make)
{
    size_t chunk = (size_t)fd / HUB_FD_CHUNK;

    if (chunk >= hub->fd_nchunks) {
        size_t n = hub->fd_nchunks ? hub->fd_nchunks : 4;
        struct hub_fdwaiter ***c;
        if (!make)
            return NULL;
        while (n <= chunk)
            n *= 2;
        c = realloc(hub->fd_chunks, n * sizeof *c);
        if (!c)
            return NULL;
        for (size_t i = hub->fd_nchunks; i < n; i++)
            c[i] = NULL;
        hub->fd_chunks = c;
        hub->fd_nchunks = n;
    }
    if (!hub->fd_chunks[chunk]) {
        if (!make)
            return NULL;
        hub->fd_chunks[chunk] = calloc(HUB_FD_CHUNK, sizeof(struct hub_fdwaiter *));
        if (!hub->fd_chunks[chunk])
            return NULL;
    }
    return &hub->fd_chunks[chunk][(size_t)fd % HUB_FD_CHUNK];
}

static void hub_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct hub_fdwaiter *w = (struct hub_fdwaiter *)io;

    (void)loop;
    hub_wake(w->g, 0, w->index,
             (revents & EV_READ ? GREEN_READ : 0) |
                 (revents & EV_WRITE ? GREEN_WRITE : 0));
}

/* Registers waiter w for fd/events of g. Returns 0 or -1 (ENOMEM). */
static int hub_fd_arm(struct hub *hub, struct green *g, struct hub_fdwaiter *w,
                      int fd, int events, int index)
{
    struct hub_fdwaiter **slot = hub_fd_slot(hub, fd, 1);

    if (!slot) {
        errno = ENOMEM;
        return -1;
    }
    w->g = g;
    w->index = index;
    ev_io_init(&w->io, hub_io_cb, fd,
               (events & GREEN_READ ? EV_READ : 0) |
                   (events & GREEN_WRITE ? EV_WRITE : 0));
    w->prev = NULL;
    w->next = *slot;
    if (w->next)
        w->next->prev = w;
    *slot = w;
    ev_io_start(hub->loop, &w->io);
    return 0;
}

static void hub_fd_disarm(struct hub *hub, struct hub_fdwaiter *w)
{
    ev_io_stop(hub->loop, &w->io);
    if (w->prev) {
        w->prev->next = w->next;
    } else {
        struct hub_fdwaiter **slot = hub_fd_slot(hub, w->io.fd, 0);
        if (slot)
            *slot = w->next;
    }
    if (w->next)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
}

static void hub_wq_unlink(struct green *g)
{
    struct green_wq *wq = g->wq;

    if (g->wq_prev)
        g->wq_prev->wq_next = g->wq_next;
    else
        wq->head = g->wq_next;
    if (g->wq_next)
        g->wq_next->wq_prev = g->wq_prev;
    else
        wq->tail = g->wq_prev;
    g->wq_next = g->wq_prev = NULL;
    g->wq = NULL;
}

void hub_disarm(struct green *g)
{
    struct hub *hub = g->hub;

    for (size_t i = 0; i < g->nfdw; i++)
        hub_fd_disarm(hub, &g->fdw[i]);
    g->fdw = NULL;
    g->nfdw = 0;
    hub_deadline_disarm(hub, g);
    if (g->wq)
        hub_wq_unlink(g);
    g->interruptible = 0;
    g->plain_park = 0;
}

/* Arms g's deadline (timer.c) unless timeout is negative (none). */
static void hub_arm_deadline(struct hub *hub, struct green *g, double timeout)
{
    if (timeout >= 0)
        hub_deadline_arm(hub, g, timeout);
}

void green_fd_closing(int fd)
{
    struct hub *hub = hub_tls_hub;
    struct hub_fdwaiter **slot;

    if (!hub || fd < 0)
        return;
    if (unlikely(fd == hub->tfd))
        hub_timer_fd_closing(hub, (unsigned)fd, (unsigned)fd);
    slot = hub_fd_slot(hub, fd, 0);
    if (!slot || !*slot)
        return;
    /* In the child of a vfork() the parent's memory is ours: its waiters
     * are not ours to wake (Python's subprocess closes fds there). */
    if (green_vforked())
        return;
    while (*slot) {
        struct hub_fdwaiter *w = *slot;
        if (w->g->state == G_PARKED)
            hub_wake(w->g, EBADF, w->index, 0); /* unlinks w */
        else
            hub_fd_disarm(hub, w); /* cannot happen; keep the list honest */
    }
}

void green_fd_closing_range(unsigned first, unsigned last)
{
    struct hub *hub = hub_tls_hub;

    if (!hub || first > last)
        return;
    hub_timer_fd_closing(hub, first, last);
    for (size_t c = first / HUB_FD_CHUNK; c < hub->fd_nchunks; c++) {
        struct hub_fdwaiter **chunk = hub->fd_chunks[c];
        if (!chunk)
            continue;
        for (size_t i = 0; i < HUB_FD_CHUNK; i++) {
            size_t fd = c * HUB_FD_CHUNK + i;
            if (fd > last)
                return;
            if (fd >= first && chunk[i])
                green_fd_closing((int)fd);
        }
    }
}

/* ---- fd waits --------------------------------------------------------- */

int green_wait_fd(int fd, int events, double timeout)
{
    struct green *g = hub_tls_current;
    struct hub_fdwaiter w;
    int err;

    if (!g) {
        errno = EPERM;
        return -1;
    }
    hub_wait_begin(g, W_FD);
    hub_wait_fds(g, fd, 1, events);
    if (fd < 0 || !(events & (GREEN_READ | GREEN_WRITE))) {
        errno = fd < 0 ? EBADF : EINVAL;
        return -1;
    }
    if (hub_fd_arm(g->hub, g, &w, fd, events, 0) < 0)
        return -1;
    g->fdw = &w;
    g->nfdw = 1;
    g->interruptible = 1;
    hub_arm_deadline(g->hub, g, timeout);
    err = hub_park(g);
    if (err) {
        errno = err;
        return -1;
    }
    return g->wake_events;
}

int green_wait_fds(const struct green_pollfd *fds, size_t n, double timeout)
{
    struct green *g = hub_tls_current;
    struct hub_fdwaiter local[16], *w = local;
    size_t armed = 0;
    int err;

    if (!g) {
        errno = EPERM;
        return -1;
    }
    hub_wait_begin(g, W_FDS);
    hub_wait_fds(g, n ? fds[0].fd : -1, (unsigned)n, 0);
    if (n > sizeof local / sizeof local[0]) {
        w = malloc(n * sizeof *w);
        if (!w) {
            errno = ENOMEM;
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (fds[i].fd < 0 || !(fds[i].events & (GREEN_READ | GREEN_WRITE)))
            continue;
        if (hub_fd_arm(g->hub, g, &w[armed], fds[i].fd, fds[i].events,
                       (int)i) < 0) {
            for (size_t j = 0; j < armed; j++)
                hub_fd_disarm(g->hub, &w[j]);
            if (w != local)
                free(w);
            errno = ENOMEM;
            return -1;
        }
        armed++;
    }
    g->fdw = w;
    g->nfdw = armed;
    g->interruptible = 1;
    hub_arm_deadline(g->hub, g, timeout);
    err = hub_park(g);
    if (w != local)
        free(w);
    if (err) {
        errno = err;
        return -1;
    }
    return g->wake_index;
}

/* ---- running the hub until done, a deadline, with a tick ---------------- */

struct hub_until {
    ev_timer deadline, tick;
    int expired;             /* the deadline fired */
    int finished;            /* done(arg) said yes */
    int (*done)(void *);
    void (*tick_fn)(void *);
    void *arg;
};

static void hub_until_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    ((struct hub_until *)t->data)->expired = 1;
}

static void hub_until_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct hub_until *u = t->data;

    (void)loop;
    (void)revents;
    u->tick_fn(u->arg);
}

static int hub_until_done(void *arg)
{
    struct hub_until *u = arg;

    u->finished = u->done && u->done(u->arg);
    return u->finished || u->expired;
}

/* One loop for every "run the hub until" in the program: green_join and
 * green_sleep from the hub context, and the server's waits, which tick to
 * run Python's signal handlers. The tick is unreferenced: on its own it is
 * no reason to keep waiting, so a deadlock is still reported as EDEADLK. */
int green_hub_run_until(int (*done)(void *arg), void *arg, double timeout,
                        void (*tick)(void *arg), double period)
{
    struct hub *hub = green_hub();
    struct hub_until u = {.done = done, .tick_fn = tick, .arg = arg};
    int rc, err;

    if (!hub)
        return -1;
    if ((!done && timeout < 0) || (tick && !(period > 0))) {
        errno = EINVAL;
        return -1;
    }
    if (timeout < 0 && !tick)
        return green_hub_run(done, arg);
    ev_now_update(hub->loop);
    if (timeout >= 0) {
        ev_timer_init(&u.deadline, hub_until_deadline_cb,
                      hub_clamp_timeout(timeout), 0.);
        u.deadline.data = &u;
        ev_timer_start(hub->loop, &u.deadline);
    }
    if (tick) {
        ev_timer_init(&u.tick, hub_until_tick_cb, period, period);
        u.tick.data = &u;
        ev_timer_start(hub->loop, &u.tick);
        ev_unref(hub->loop);
    }
    rc = green_hub_run(hub_until_done, &u);
    err = errno;
    if (tick) {
        ev_ref(hub->loop);
        ev_timer_stop(hub->loop, &u.tick);
    }
    if (timeout >= 0)
        ev_timer_stop(hub->loop, &u.deadline);
    if (rc == 0 && !u.finished) {
        rc = -1;
        err = ETIMEDOUT;
    }
    errno = err;
    return rc;
}

/* ---- sleeping --------------------------------------------------------- */

int green_sleep(double seconds)
{
    struct green *g = hub_tls_current;
    int err;

    if (seconds < 0 || seconds != seconds)
        seconds = 0;
    if (!g) {
        /* The hub context: run everyone else until the time is up. */
        if (green_hub_run_until(NULL, NULL, seconds, NULL, 0) < 0 &&
            errno != ETIMEDOUT)
            return -1;
        return 0;
    }
    hub_wait_begin(g, W_SLEEP);
    hub_arm_deadline(g->hub, g, seconds);
    g->interruptible = 1;
    err = hub_park(g);
    if (err == ETIMEDOUT)
        return 0;
    errno = err;
    return -1;
}

/* ---- wait queues ------------------------------------------------------ */

int green_wq_wait(struct green_wq *wq, double timeout)
{
    struct green *g = hub_tls_current;
    int err;

    if (!g) {
        errno = EPERM;
        return -1;
    }
    /* a join names itself (hub.c); any other wait queue is its own obj */
    hub_wait_begin(g, W_WQ);
    if (g->wait.site == &hub_site_join)
        g->wait.kind = W_JOIN;
    else if (!g->wait.obj)
        g->wait.obj = wq;
    g->wq = wq;
    g->wq_next = NULL;
    g->wq_prev = wq->tail;
    if (wq->tail)
        wq->tail->wq_next = g;
    else
        wq->head = g;
    wq->tail = g;
    g->interruptible = 1;
    hub_arm_deadline(g->hub, g, timeout);
    err = hub_park(g);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}

int green_wq_wake_one(struct green_wq *wq)
{
    struct green *g = wq->head;

    if (!g)
        return 0;
    hub_wake(g, 0, -1, 0); /* unlinks g from wq */
    return 1;
}

int green_wq_wake_all(struct green_wq *wq)
{
    int n = 0;

    while (wq->head) {
        hub_wake(wq->head, 0, -1, 0);
        n++;
    }
    return n;
}

/* ---- plain parks -------------------------------------------------------- */

int green_park(double timeout)
{
    struct green *g = hub_tls_current;
    int err;

    if (!g) {
        errno = EPERM;
        return -1;
    }
    hub_wait_begin(g, W_PARK);
    g->plain_park = 1;
    g->interruptible = 1;
    hub_arm_deadline(g->hub, g, timeout);
    /* The waker is not a watcher: keep green_hub_run from concluding that
     * nothing can ever wake us. */
    ev_ref(g->hub->loop);
    err = hub_park(g);
    ev_unref(g->hub->loop);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}

void green_unpark(struct green *g)
{
    if (g->state == G_PARKED && g->plain_park)
        hub_wake(g, 0, -1, 0);
}

struct hub *green_hub_of(const struct green *g) { return g->hub; }
