/* preload/sock.c - accept, connect, and sockets we create or configure.
 *
 * accept has no per-call non-blocking flag, so a green thread accepting on
 * a listening socket the caller made blocking sets O_NONBLOCK on it for
 * good (PL_NB_INTERNAL) and parks on EAGAIN. fcntl and ioctl keep showing
 * the caller the blocking socket it asked for, and callers outside green
 * threads get blocking behaviour back: their EAGAIN turns into a real
 * poll() and a retry. Listening sockets are seldom the stdio of children,
 * so the flag on the shared description rarely shows: only a process that
 * shares the socket without our record of it (forked before the first
 * green accept, or handed the fd) and accepts outside green threads would
 * see an EAGAIN. The bundled server's listener is non-blocking anyway.
 *
 * connect sets O_NONBLOCK only for its own duration and puts the flags
 * back, parks until the socket is writable and reads SO_ERROR: the
 * caller sees exactly the errno a blocking connect gives. SO_SNDTIMEO
 * bounds it (then EINPROGRESS, as Linux reports a timed-out connect).
 */
#include <fcntl.h>
#include <poll.h>
#include <sys/un.h>

#include "preload/pl.h"

PL_SITE(pl_cs_accept, "accept", ACCEPT, NONE);
PL_SITE(pl_cs_connect, "connect", CONNECT, NONE);

/* After an EAGAIN from accept: parks until the listener is readable, or
 * SO_RCVTIMEO (measured from the first park) runs out: -1/EAGAIN. */
static int pl_accept_park(int fd, struct pl_fd *e, double *deadline)
{
    if (*deadline == -2) {
        pl_fd_load_timeouts(fd, e);
        *deadline = pl_deadline_us(e->rcvtimeo_us);
    }
    return pl_wait(fd, GREEN_READ, *deadline, &pl_cs_accept);
}

/* A listening socket that another number (a dup) also names: O_NONBLOCK
 * on it would show through that number, so it is set only around each
 * accept4 and put back at once; between tries we park on readability. */
static int pl_accept_shared(int fd, struct pl_fd *e, struct sockaddr *addr,
                            socklen_t *alen, int flags)
{
    double deadline = -2;

    for (;;) {
        int fl = REAL(fcntl)(fd, F_GETFL), r, err;
        if (fl < 0 || REAL(fcntl)(fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return REAL(accept4)(fd, addr, alen, flags);
        r = REAL(accept4)(fd, addr, alen, flags);
        err = errno;
        REAL(fcntl)(fd, F_SETFL, fl);
        errno = err;
        if (r >= 0 || errno != EAGAIN)
            return r;
        if (pl_accept_park(fd, e, &deadline) < 0)
            return -1;
    }
}

static int pl_accept_coop(int fd, struct pl_fd *e, struct sockaddr *addr,
                          socklen_t *alen, int flags)
{
    double deadline = -2;
    int r;

    if (!(e->flags & PL_NB_INTERNAL) && (e->flags & PL_SHARED))
        return pl_accept_shared(fd, e, addr, alen, flags);
    if (!(e->flags & PL_NB_INTERNAL)) {
        int fl = REAL(fcntl)(fd, F_GETFL);
        if (fl < 0 || REAL(fcntl)(fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return REAL(accept4)(fd, addr, alen, flags);
        e->flags |= PL_NB_INTERNAL;
    }
    for (;;) {
        r = REAL(accept4)(fd, addr, alen, flags);
        if (r >= 0 || errno != EAGAIN)
            return r;
        if (pl_accept_park(fd, e, &deadline) < 0)
            return -1;
    }
}

/* A caller outside green threads on a socket we made non-blocking: give
 * it the blocking accept it expects. */
static int pl_accept_blocking(int fd, struct sockaddr *addr, socklen_t *alen,
                              int flags)
{
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int r = REAL(accept4)(fd, addr, alen, flags);
        struct pl_fd *e;
        if (r >= 0 || errno != EAGAIN)
            return r;
        e = pl_fd_peek(fd);
        if (!e || !(e->flags & PL_NB_INTERNAL) || (e->flags & PL_USER_NB))
            return r;
        pl_fd_load_timeouts(fd, e);
        r = REAL(poll)(&p, 1,
                       e->rcvtimeo_us > 0 ? (int)(e->rcvtimeo_us / 1000) : -1);
        if (r == 0) {
            errno = EAGAIN;
            return -1;
        }
        if (r < 0)
            return -1;
    }
}

static int pl_accept(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    struct pl_fd *e = pl_coop(fd);
    int r, saved = errno;

    if (pl_likely(!e))
        r = pl_accept_blocking(fd, addr, alen, flags);
    else
        r = pl_accept_coop(fd, e, addr, alen, flags);
    if (r >= 0) { /* the new socket does not inherit O_NONBLOCK */
        pl_fd_set_new(r, PL_SOCKET, flags & SOCK_NONBLOCK, 0);
        errno = saved; /* no EAGAIN of ours on success */
    }
    return r;
}

PL_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
    return pl_accept(fd, addr, alen, 0);
}

PL_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    return pl_accept(fd, addr, alen, flags);
}

/* A full AF_UNIX backlog gives EAGAIN and no readiness to wait for:
 * retry after a growing pause (pl_pause) until SO_SNDTIMEO's deadline,
 * then fail with EAGAIN as a blocking connect would. */
static int pl_connect_unix_retry(int fd, const struct sockaddr *addr,
                                 socklen_t alen, double deadline)
{
    double pause = PL_PAUSE_FIRST;
    int r;

    for (;;) {
        if (pl_pause(&pause, deadline, &pl_cs_connect, NULL) < 0)
            return -1;
        r = REAL(connect)(fd, addr, alen);
        if (r == 0 || errno != EAGAIN)
            return r;
    }
}

PL_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t alen)
{
    struct pl_fd *e = pl_coop(fd);
    int fl, r, err = 0, saved, entry_errno = errno;
    socklen_t len = sizeof err;
    double deadline;

    if (pl_likely(!e) || e->kind != PL_SOCKET)
        return REAL(connect)(fd, addr, alen);
    fl = REAL(fcntl)(fd, F_GETFL);
    if (fl < 0 || REAL(fcntl)(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return REAL(connect)(fd, addr, alen);
    r = REAL(connect)(fd, addr, alen);
    if (r < 0 && (errno == EINPROGRESS || errno == EAGAIN)) {
        int was_again = errno == EAGAIN;
        pl_fd_load_timeouts(fd, e);
        deadline = pl_deadline_us(e->sndtimeo_us);
        if (was_again && addr && addr->sa_family == AF_UNIX) {
            r = pl_connect_unix_retry(fd, addr, alen, deadline);
        } else if (pl_wait(fd, GREEN_WRITE, deadline, &pl_cs_connect) < 0) {
            if (errno == EBADF)
                return -1; /* closed meanwhile: the number may be another
                              file's now, leave its flags alone */
            if (errno == EAGAIN)
                errno = EINPROGRESS; /* timed out: still in progress */
            r = -1;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
            r = -1;
        } else if (err) {
            errno = err;
            r = -1;
        } else {
            r = 0;
        }
    }
    saved = r == 0 ? entry_errno : errno; /* no EINPROGRESS on success */
    if (!(e->flags & PL_NB_INTERNAL))
        REAL(fcntl)(fd, F_SETFL, fl);
    errno = saved;
    return r;
}

PL_EXPORT int socket(int domain, int type, int proto)
{
    int fd = REAL(socket)(domain, type, proto);

    if (fd >= 0)
        pl_fd_set_new(fd, PL_SOCKET, type & SOCK_NONBLOCK, 1);
    return fd;
}

PL_EXPORT int socketpair(int domain, int type, int proto, int sv[2])
{
    int r = REAL(socketpair)(domain, type, proto, sv);

    if (r == 0) {
        pl_fd_set_new(sv[0], PL_SOCKET, type & SOCK_NONBLOCK, 1);
        pl_fd_set_new(sv[1], PL_SOCKET, type & SOCK_NONBLOCK, 1);
    }
    return r;
}

/* The kernel keeps the timeouts too; we only remember them so a park
 * knows its deadline without asking. */
PL_EXPORT int setsockopt(int fd, int level, int name, const void *val,
                         socklen_t len)
{
    int r = REAL(setsockopt)(fd, level, name, val, len);

    (void)name; /* SO_RCVTIMEO has an _OLD and a _NEW number: any will do */
    if (r == 0 && level == SOL_SOCKET) {
        struct pl_fd *e = pl_fd_peek(fd);
        if (e) /* re-read from the kernel: it rounds to its tick */
            e->flags &= (uint8_t)~PL_TIMEO_KNOWN;
    }
    return r;
}
