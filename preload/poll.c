/* preload/poll.c - poll, select and epoll_wait inside green threads.
 *
 * Each becomes: ask the kernel with a zero timeout; if nothing is ready
 * and the caller is willing to wait, park on all the fds (one ev_io each)
 * with the caller's timeout as the deadline, then ask the kernel again.
 * The kernel stays the judge of readiness (POLLHUP, POLLNVAL, regular
 * files that are always ready), libev only tells us when to ask.
 *
 * Called with no fds and a timeout, they are sleeps, and park the same
 * way. A signal mask given to ppoll/pselect/epoll_pwait cannot be applied
 * to one green thread (the mask belongs to the OS thread every green
 * thread shares); it is ignored inside green threads.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>

#include "preload/pl.h"

/* What the hub cannot watch: a pollfd asking for no event (it only
 * wants POLLERR/POLLHUP/POLLNVAL, which epoll reports but libev does not
 * take alone), POLLPRI alone, or a select exception set. Such waits look
 * again at the kernel every PL_UNWATCHED_SLICE seconds instead: a short,
 * bounded delay, never a spin on readable data nobody asked about. */
#define PL_UNWATCHED_SLICE 0.05

/* Parks until one of fds may be ready, the deadline passes, or (slice >
 * 0) slice seconds pass. Returns 0 (go and look), 1 (deadline passed) or
 * -1 with errno (EINTR, ENOMEM). */
static int pl_park_fds(const struct green_pollfd *fds, size_t n,
                       double deadline, double slice,
                       const struct green_callsite *cs)
{
    double timeout = -1;
    int sliced = 0;

    if (deadline >= 0) {
        timeout = deadline - pl_now();
        if (timeout <= 0)
            return 1;
    }
    if (slice > 0 && (timeout < 0 || slice < timeout)) {
        timeout = slice;
        sliced = 1;
    }
    green_note(cs, NULL);
    if (n == 0) {
        if (green_sleep(timeout < 0 ? 1e9 : timeout) < 0)
            return -1;
        return deadline >= 0 && !sliced ? 1 : 0;
    }
    if (green_wait_fds(fds, n, timeout) >= 0)
        return 0;
    if (errno == ETIMEDOUT)
        return sliced ? 0 : 1;
    if (errno == EBADF)
        return 0; /* closed under us: the kernel will say POLLNVAL/EBADF */
    return -1;
}

static double pl_deadline_ms(int ms)
{
    return ms < 0 ? -1.0 : pl_now() + ms * 1e-3;
}

static double pl_deadline_ts(const struct timespec *ts)
{
    return ts ? pl_now() + (double)ts->tv_sec + (double)ts->tv_nsec * 1e-9
              : -1.0;
}

PL_SITE(pl_cs_poll, "poll", POLL, NONE);
PL_SITE(pl_cs_ppoll, "ppoll", POLL, NONE);
PL_SITE(pl_cs_select, "select", POLL, NONE);
PL_SITE(pl_cs_pselect, "pselect", POLL, NONE);
PL_SITE(pl_cs_epoll_wait, "epoll_wait", POLL, NONE);

static int pl_poll_coop(struct pollfd *fds, nfds_t n, double deadline,
                        const struct green_callsite *cs)
{
    struct green_pollfd local[32], *gp = local;
    size_t m = 0;
    int r, saved = errno;
    double slice = 0;

    if (n > sizeof local / sizeof local[0]) {
        gp = malloc(n * sizeof *gp);
        if (!gp) {
            errno = ENOMEM;
            return -1;
        }
    }
    for (nfds_t i = 0; i < n; i++) {
        int ev = (fds[i].events & (POLLIN | POLLRDHUP) ? GREEN_READ : 0) |
                 (fds[i].events & POLLOUT ? GREEN_WRITE : 0);
        if (fds[i].fd < 0)
            continue;
        if (ev) {
            gp[m].fd = fds[i].fd;
            gp[m].events = ev;
            m++;
        }
        if (!ev || (fds[i].events & POLLPRI))
            slice = PL_UNWATCHED_SLICE;
    }
    for (;;) {
        int p = pl_park_fds(gp, m, deadline, slice, cs);
        if (p < 0) {
            r = -1;
            break;
        }
        r = REAL(poll)(fds, n, 0);
        if (r != 0 || p == 1)
            break;
    }
    if (gp != local)
        free(gp);
    if (r >= 0)
        errno = saved; /* other green threads ran while we parked */
    return r;
}

PL_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    int r;

    if (pl_likely(!green_current()) || pl_disabled || timeout == 0)
        return REAL(poll)(fds, n, timeout);
    r = REAL(poll)(fds, n, 0);
    if (r != 0)
        return r;
    return pl_poll_coop(fds, n, pl_deadline_ms(timeout), &pl_cs_poll);
}

PL_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                    const sigset_t *ss)
{
    int r;

    if (pl_likely(!green_current()) || pl_disabled ||
        (ts && ts->tv_sec == 0 && ts->tv_nsec == 0))
        return REAL(ppoll)(fds, n, ts, ss);
    if (ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)) {
        errno = EINVAL;
        return -1;
    }
    r = REAL(poll)(fds, n, 0);
    if (r != 0)
        return r;
    return pl_poll_coop(fds, n, pl_deadline_ts(ts), &pl_cs_ppoll);
}

PL_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        return REAL(__poll_chk)(fds, n, timeout, fdslen); /* libc aborts */
    return poll(fds, n, timeout);
}

PL_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                          const sigset_t *ss, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        return REAL(__ppoll_chk)(fds, n, ts, ss, fdslen);
    return ppoll(fds, n, ts, ss);
}

/* ---- select ----------------------------------------------------------- */

static int pl_select_coop(int nfds, fd_set *r, fd_set *w, fd_set *e,
                          double deadline, const struct green_callsite *cs)
{
    fd_set r0, w0, e0;
    struct green_pollfd local[32], *gp = local;
    size_t m = 0, cap = sizeof local / sizeof local[0];
    struct timeval zero = {0, 0};
    double slice = 0;
    int n, saved = errno;

    if (nfds < 0 || nfds > FD_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    if (r) r0 = *r;
    if (w) w0 = *w;
    if (e) e0 = *e;
    for (int fd = 0; fd < nfds; fd++) {
        int ev = (r && FD_ISSET(fd, r) ? GREEN_READ : 0) |
                 (w && FD_ISSET(fd, w) ? GREEN_WRITE : 0);
        if (e && FD_ISSET(fd, e))
            slice = PL_UNWATCHED_SLICE; /* urgent data: not the hub's */
        if (!ev)
            continue;
        if (m == cap) {
            struct green_pollfd *bigger = malloc(2 * cap * sizeof *bigger);
            if (!bigger) {
                if (gp != local)
                    free(gp);
                errno = ENOMEM;
                return -1;
            }
            memcpy(bigger, gp, m * sizeof *gp);
            if (gp != local)
                free(gp);
            gp = bigger;
            cap *= 2;
        }
        gp[m].fd = fd;
        gp[m].events = ev;
        m++;
    }
    for (;;) {
        int p = pl_park_fds(gp, m, deadline, slice, cs);
        if (p < 0) {
            n = -1;
            break;
        }
        if (r) *r = r0;
        if (w) *w = w0;
        if (e) *e = e0;
        n = REAL(select)(nfds, r, w, e, &zero);
        if (n != 0 || p == 1)
            break;
    }
    if (gp != local)
        free(gp);
    if (n >= 0)
        errno = saved;
    return n;
}

PL_EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *e,
                     struct timeval *tv)
{
    fd_set r0, w0, e0;
    struct timeval zero = {0, 0};
    double deadline;
    int n;

    if (pl_likely(!green_current()) || pl_disabled ||
        (tv && tv->tv_sec == 0 && tv->tv_usec == 0))
        return REAL(select)(nfds, r, w, e, tv);
    if (tv && (tv->tv_sec < 0 || tv->tv_usec < 0)) {
        errno = EINVAL;
        return -1;
    }
    deadline = tv ? pl_now() + (double)tv->tv_sec + (double)tv->tv_usec * 1e-6
                  : -1.0;
    if (r) r0 = *r;
    if (w) w0 = *w;
    if (e) e0 = *e;
    n = REAL(select)(nfds, r, w, e, &zero);
    if (n == 0) {
        if (r) *r = r0;
        if (w) *w = w0;
        if (e) *e = e0;
        n = pl_select_coop(nfds, r, w, e, deadline, &pl_cs_select);
    }
    if (tv && n >= 0) { /* Linux reports the time left */
        double left = deadline - pl_now();
        if (left < 0)
            left = 0;
        tv->tv_sec = (time_t)left;
        tv->tv_usec = (suseconds_t)((left - (double)tv->tv_sec) * 1e6);
    }
    return n;
}

PL_EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *e,
                      const struct timespec *ts, const sigset_t *ss)
{
    fd_set r0, w0, e0;
    struct timeval zero = {0, 0};
    int n;

    if (pl_likely(!green_current()) || pl_disabled ||
        (ts && ts->tv_sec == 0 && ts->tv_nsec == 0))
        return REAL(pselect)(nfds, r, w, e, ts, ss);
    if (ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)) {
        errno = EINVAL;
        return -1;
    }
    if (r) r0 = *r;
    if (w) w0 = *w;
    if (e) e0 = *e;
    n = REAL(select)(nfds, r, w, e, &zero);
    if (n != 0)
        return n;
    if (r) *r = r0;
    if (w) *w = w0;
    if (e) *e = e0;
    return pl_select_coop(nfds, r, w, e, pl_deadline_ts(ts), &pl_cs_pselect);
}

/* ---- epoll ------------------------------------------------------------ */

static int pl_epoll_coop(int epfd, struct epoll_event *ev, int max, int timeout)
{
    struct green_pollfd one = {epfd, GREEN_READ};
    double deadline = pl_deadline_ms(timeout);
    int saved = errno;
    int r = REAL(epoll_wait)(epfd, ev, max, 0);

    while (r == 0) {
        int p = pl_park_fds(&one, 1, deadline, 0, &pl_cs_epoll_wait);
        if (p < 0)
            return -1;
        r = REAL(epoll_wait)(epfd, ev, max, 0);
        if (p == 1)
            break;
    }
    if (r >= 0)
        errno = saved;
    return r;
}

/* libev's own epoll_wait arrives here from the hub context: it passes
 * straight through on the first test. */
PL_EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
    if (pl_likely(!green_current()) || pl_disabled || timeout == 0)
        return REAL(epoll_wait)(epfd, ev, max, timeout);
    return pl_epoll_coop(epfd, ev, max, timeout);
}

PL_EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max,
                          int timeout, const sigset_t *ss)
{
    if (pl_likely(!green_current()) || pl_disabled || timeout == 0)
        return REAL(epoll_pwait)(epfd, ev, max, timeout, ss);
    return pl_epoll_coop(epfd, ev, max, timeout);
}
