/* preload/pl.h - what every wrapper file shares: the pass-through test,
 * deadlines, the park that replaces a blocking wait, and the pause
 * between retries of a wait that nothing can signal.
 *
 * Every park is named for the debugging reports (hub/green.h,
 * green_note): each wrapper has a static struct green_callsite (PL_SITE)
 * and hands it down to the helper that parks, which names the park right
 * before it. Calls that pass through, or finish without parking, never
 * touch it.
 */
#ifndef LIBGREEN_PRELOAD_PL_H
#define LIBGREEN_PRELOAD_PL_H

#include <errno.h>
#include <limits.h>
#include <time.h>

#include "hub/green.h"
#include "preload/fdtab.h"

/* Entry points libc exports without a prototype in its headers. */
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                       struct sockaddr *addr, socklen_t *alen);
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                const sigset_t *ss, size_t fdslen);
int fcntl64(int fd, int cmd, ...);

/* The static name of a wrapper's parks: PL_SITE(pl_cs_recv, "recv", RECV,
 * NONE) - kind from GREEN_CALLS, obj an enum green_obj suffix. */
#define PL_SITE(var, name, kind, obj)                                       \
    static const struct green_callsite var = {name, GREEN_CALL_##kind,      \
                                              GREEN_OBJ_##obj}

#define pl_likely(x) __builtin_expect(!!(x), 1)
#define pl_unlikely(x) __builtin_expect(!!(x), 0)

/* The entry of fd if a call on it must cooperate, NULL to pass through
 * (hard rule 2): only inside a green thread, with hooks on, on a socket,
 * pipe, FIFO or tty the caller believes is blocking. The first test is a
 * TLS load, so calls outside green threads cost nanoseconds. */
static inline struct pl_fd *pl_coop(int fd)
{
    struct pl_fd *e;

    if (pl_likely(!green_current()) || pl_disabled)
        return NULL;
    e = pl_fd_get(fd);
    if (!e || e->kind == PL_OTHER)
        return NULL;
    if (pl_unlikely(e->flags & PL_SHARED))
        pl_fd_refresh_view(fd, e);
    if (e->flags & PL_USER_NB)
        return NULL;
    return e;
}

/* Nonzero if the caller is a green thread that may park (no fd test). */
static inline int pl_in_green(void)
{
    return !pl_likely(!green_current()) && !pl_disabled;
}

static inline double pl_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Absolute deadline for a socket timeout in microseconds (0 = none). */
static inline double pl_deadline_us(int64_t us)
{
    return us > 0 ? pl_now() + (double)us * 1e-6 : -1.0;
}

/* Parks until fd is ready for events or the deadline (absolute, <0 for
 * none); cs names the park. Returns 0, or -1 with errno EAGAIN (deadline
 * passed, as SO_RCVTIMEO reports it), EBADF (closed meanwhile) or EINTR. */
static inline int pl_wait(int fd, int events, double deadline,
                          const struct green_callsite *cs)
{
    double timeout = -1;

    if (deadline >= 0) {
        timeout = deadline - pl_now();
        if (timeout <= 0) {
            errno = EAGAIN;
            return -1;
        }
    }
    green_note(cs, NULL);
    if (green_wait_fd(fd, events, timeout) >= 0)
        return 0;
    if (errno == ETIMEDOUT)
        errno = EAGAIN;
    return -1;
}

/* Retry pauses, for waits with no fd to watch (a full AF_UNIX backlog, a
 * partial MSG_PEEK, a child without a pidfd): 1 ms, doubling to 50 ms. */
#define PL_PAUSE_FIRST 0.001
#define PL_PAUSE_MAX 0.05

/* Sleeps *pause (start it at PL_PAUSE_FIRST) but never past deadline
 * (absolute, < 0: none), then doubles it: 0 to retry, or -1 with errno
 * EAGAIN (deadline passed) or EINTR. cs and obj name the park. Switches. */
static inline int pl_pause(double *pause, double deadline,
                           const struct green_callsite *cs, const void *obj)
{
    double nap = *pause;

    if (deadline >= 0) {
        double left = deadline - pl_now();
        if (left <= 0) {
            errno = EAGAIN;
            return -1;
        }
        if (nap > left)
            nap = left;
    }
    green_note(cs, obj);
    if (green_sleep(nap) < 0)
        return -1;
    *pause = *pause * 2 < PL_PAUSE_MAX ? *pause * 2 : PL_PAUSE_MAX;
    return 0;
}

#endif
