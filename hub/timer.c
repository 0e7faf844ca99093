/* hub/timer.c - the deadlines of parked green threads, kept to the
 * microsecond.
 *
 * libev waits in epoll_wait, whose timeout counts whole milliseconds:
 * it rounds a wait up to the next millisecond, and to one at least. A
 * green thread's sleep therefore ended up to a millisecond late, half a
 * millisecond on average (a 50 ms sleep took 50.5 ms at the median).
 *
 * So a deadline runs in two steps. First a libev timer set HUB_TIMER_EARLY
 * before it: libev's heap keeps any number of them in order, and its
 * lateness is less than that margin. When it fires the thread joins the
 * hub's "imminent" list (sorted by deadline; it holds only threads due
 * within the margin, a handful) and one timerfd per hub, which counts
 * nanoseconds, is armed to the list's first deadline: its readiness ends
 * epoll_wait on time. Costs: a timerfd_settime when a thread becomes the
 * first of the list, and one when the timerfd fires.
 *
 * A deadline never ends early: the last step compares with the clock.
 * Without a timerfd (timerfd_create failed, or the program closed it) the
 * last stretch is a libev timer again, late as before; one also stays
 * armed, HUB_TIMER_EARLY after the deadline, behind every thread on the
 * timerfd.
 *
 * fork (hard rule 6): the timerfd goes with its hub, dropped in the child
 * like the epoll and event fds (close-on-exec).
 */
#include <errno.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "hub/hub_internal.h"

/* How long before its deadline a thread leaves libev's heap for the
 * timerfd: more than libev's rounding (under a millisecond). */
#define HUB_TIMER_EARLY 2e-3

static void hub_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void hub_deadline_timer(struct hub *hub, struct green *g, double left,
                               double early);
static void hub_tfd_fail(struct hub *hub);

/* Arms the timerfd for the first deadline of the imminent list (the
 * watcher runs only while the list holds a thread: an armed deadline
 * keeps the loop waiting, a spent one must not). */
static void hub_tfd_update(struct hub *hub)
{
    struct itimerspec its = {{0, 0}, {0, 0}};
    double at;

    if (!hub->imminent) {
        if (ev_is_active(&hub->tfd_io))
            ev_io_stop(hub->loop, &hub->tfd_io);
        return;
    }
    at = hub->imminent->deadline;
    if (at != hub->tfd_at || !ev_is_active(&hub->tfd_io)) {
        its.it_value.tv_sec = (time_t)at;
        its.it_value.tv_nsec = (long)((at - (double)its.it_value.tv_sec) * 1e9);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1; /* zero would disarm it */
        if (timerfd_settime(hub->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
            hub_tfd_fail(hub);
            return;
        }
        hub->tfd_at = at;
    }
    if (!ev_is_active(&hub->tfd_io))
        ev_io_start(hub->loop, &hub->tfd_io);
}

/* The timerfd is readable: wake every thread whose deadline passed, then
 * arm for the next one (timerfd_settime also clears the readiness). */
static void hub_tfd_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct hub *hub = w->data;
    double now = hub_mono_now();

    (void)loop;
    (void)revents;
    while (hub->imminent && hub->imminent->deadline <= now)
        hub_wake(hub->imminent, ETIMEDOUT, -1, 0); /* unlinks it */
    hub->tfd_at = -1; /* spent: settime again even for the same deadline */
    hub_tfd_update(hub);
}

/* The timerfd cannot be used: the program closes its number (close,
 * closerange: hub_timer_fd_closing, so the watcher stops first, as libev
 * requires) or closed it where we did not see it (timerfd_settime then
 * fails). Its threads go back to libev timers, late as before but never
 * lost, and so do later deadlines. */
static void hub_tfd_fail(struct hub *hub)
{
    struct green *g;

    if (ev_is_active(&hub->tfd_io))
        ev_io_stop(hub->loop, &hub->tfd_io);
    hub->tfd_state = -1;
    hub->tfd = -1; /* not ours to close any more */
    while ((g = hub->imminent)) {
        hub->imminent = g->imm_next;
        g->imm_next = g->imm_prev = NULL;
        g->imminent = 0;
        hub_deadline_timer(hub, g, g->deadline - hub_mono_now(), 0);
    }
    hub->imminent_tail = NULL;
}

void hub_timer_fd_closing(struct hub *hub, unsigned first, unsigned last)
{
    /* vfork child: the parent's hub is not ours to change (as wait.c) */
    if (hub->tfd_state > 0 && (unsigned)hub->tfd >= first &&
        (unsigned)hub->tfd <= last && !green_vforked())
        hub_tfd_fail(hub); /* the watcher stops while the fd is still open */
}

/* The timerfd of hub, made on first need. Returns 0 or -1. */
static int hub_tfd(struct hub *hub)
{
    if (hub->tfd_state == 0) {
        hub->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        hub->tfd_state = hub->tfd >= 0 ? 1 : -1;
        if (hub->tfd >= 0) {
            ev_io_init(&hub->tfd_io, hub_tfd_cb, hub->tfd, EV_READ);
            hub->tfd_io.data = hub;
            hub->tfd_at = -1;
        }
    }
    return hub->tfd_state > 0 ? 0 : -1;
}

/* g's deadline is less than HUB_TIMER_EARLY away: into the sorted list,
 * looked through from its end, where libev's timers, firing in deadline
 * order, put nearly every thread. */
static void hub_imminent_add(struct hub *hub, struct green *g)
{
    struct green *after = hub->imminent_tail;

    while (after && after->deadline > g->deadline)
        after = after->imm_prev;
    g->imm_prev = after;
    g->imm_next = after ? after->imm_next : hub->imminent;
    if (g->imm_next)
        g->imm_next->imm_prev = g;
    else
        hub->imminent_tail = g;
    if (after)
        after->imm_next = g;
    else
        hub->imminent = g;
    g->imminent = 1;
    if (hub->imminent == g)
        hub_tfd_update(hub);
}

/* Starts g's libev timer for the rest of its wait, less early seconds. */
static void hub_deadline_timer(struct hub *hub, struct green *g, double left,
                               double early)
{
    if (ev_is_active(&g->timer)) /* the backstop: re-init would corrupt libev */
        ev_timer_stop(hub->loop, &g->timer);
    ev_timer_init(&g->timer, hub_deadline_cb, left > early ? left - early : 0.,
                  0.);
    g->timer.data = g;
    ev_timer_start(hub->loop, &g->timer);
}

/* The libev timer of a parked thread fired: its deadline has passed, or
 * comes within HUB_TIMER_EARLY. */
static void hub_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct green *g = t->data;
    struct hub *hub = g->hub;
    double left = g->deadline - hub_mono_now();

    (void)loop;
    (void)revents;
    if (left <= 0) {
        hub_wake(g, ETIMEDOUT, -1, 0);
    } else if (!g->imminent && hub_tfd(hub) == 0) {
        hub_imminent_add(hub, g);
        /* and a backstop, should the timerfd never fire (its number
         * closed where no wrapper saw it): late, never lost */
        hub_deadline_timer(hub, g, left + HUB_TIMER_EARLY, 0);
    } else {
        hub_deadline_timer(hub, g, left, 0); /* no timerfd: libev's rounding */
    }
}

void hub_deadline_arm(struct hub *hub, struct green *g, double timeout)
{
    timeout = hub_clamp_timeout(timeout);
    /* libev's own clock for its timer, ours for the deadline: both read
     * now, so neither step can end before the time asked for. */
    ev_now_update(hub->loop);
    g->deadline = hub_mono_now() + timeout;
    hub_deadline_timer(hub, g, timeout, HUB_TIMER_EARLY);
}

void hub_deadline_disarm(struct hub *hub, struct green *g)
{
    if (ev_is_active(&g->timer))
        ev_timer_stop(hub->loop, &g->timer);
    if (g->imminent) {
        if (g->imm_prev)
            g->imm_prev->imm_next = g->imm_next;
        else
            hub->imminent = g->imm_next;
        if (g->imm_next)
            g->imm_next->imm_prev = g->imm_prev;
        else
            hub->imminent_tail = g->imm_prev;
        g->imm_next = g->imm_prev = NULL;
        g->imminent = 0;
        if (!hub->imminent)
            hub_tfd_update(hub); /* nothing due: the watcher stops */
    }
}

double hub_deadline_left(const struct green *g)
{
    double left = g->deadline - hub_mono_now();

    return left > 0 ? left : 0;
}

void hub_timer_destroy(struct hub *hub)
{
    if (hub->tfd_state > 0) {
        ev_io_stop(hub->loop, &hub->tfd_io);
        syscall(SYS_close, hub->tfd); /* the real one (hard rule 4) */
    }
    hub->tfd_state = 0;
}
