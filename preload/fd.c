/* preload/fd.c - the life of an fd number, and the caller's view of it.
 *
 * close, close_range, dup2 and dup3 first wake every green thread parked
 * on the number (hard rule 5: they get EBADF, and the watcher is stopped
 * before the number can be reused), then forget what we knew about it.
 * dup and F_DUPFD copy what we know to the new number: it shares the open
 * file. pipe and pipe2 record new pipes without a system call.
 *
 * fcntl(F_GETFL/F_SETFL) and ioctl(FIONBIO) keep the caller's view of
 * O_NONBLOCK (hard rule 3) on the few fds where libgreen set the flag
 * itself (listening sockets a green thread accepted on), and record the
 * view everywhere else so a later call knows whether to cooperate.
 */
#include <fcntl.h>
#include <linux/close_range.h>
#include <stdarg.h>
#include <sys/ioctl.h>

#include "preload/pl.h"

/* In the child of a vfork() (Python's subprocess uses one) our memory is
 * the parent's: what the child closes or replaces must not touch the
 * parent's records. Only asked when a hub exists, and costs a getpid. */
static int pl_vfork_child(void)
{
    return green_hub_peek() && green_vforked();
}

PL_EXPORT int close(int fd)
{
    struct pl_fd *e = pl_fd_peek(fd);

    /* Only records the parent could not rebuild by looking again are
     * worth a getpid() per close (servers close an fd per connection):
     * a flag we set ourselves, or the mark that a dup shares the file.
     * Waiters are checked by green_fd_closing itself. */
    if (e && (e->flags & (PL_NB_INTERNAL | PL_SHARED)) && pl_vfork_child())
        return REAL(close)(fd);
    green_fd_closing(fd);
    pl_fd_reset(fd);
    return REAL(close)(fd);
}

PL_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
    if (!(flags & CLOSE_RANGE_CLOEXEC) && first <= last && !pl_vfork_child()) {
        green_fd_closing_range(first, last);
        pl_fd_reset_range(first, last);
    }
    return REAL(close_range)(first, last, flags);
}

PL_EXPORT int dup(int fd)
{
    int r = REAL(dup)(fd);

    if (r >= 0)
        pl_fd_copy(fd, r);
    return r;
}

PL_EXPORT int dup2(int fd, int fd2)
{
    int r;

    if (pl_vfork_child())
        return REAL(dup2)(fd, fd2);
    if (fd != fd2)
        green_fd_closing(fd2);
    r = REAL(dup2)(fd, fd2);
    if (r >= 0 && fd != fd2)
        pl_fd_copy(fd, fd2);
    return r;
}

PL_EXPORT int dup3(int fd, int fd2, int flags)
{
    int r;

    if (pl_vfork_child())
        return REAL(dup3)(fd, fd2, flags);
    if (fd != fd2)
        green_fd_closing(fd2);
    r = REAL(dup3)(fd, fd2, flags);
    if (r >= 0)
        pl_fd_copy(fd, fd2);
    return r;
}

PL_EXPORT int pipe(int fds[2])
{
    int r = REAL(pipe)(fds);

    if (r == 0) {
        pl_fd_set_new(fds[0], PL_PIPE, 0, 1);
        pl_fd_set_new(fds[1], PL_PIPE, 0, 1);
    }
    return r;
}

PL_EXPORT int pipe2(int fds[2], int flags)
{
    int r = REAL(pipe2)(fds, flags);

    if (r == 0) {
        pl_fd_set_new(fds[0], PL_PIPE, flags & O_NONBLOCK, 1);
        pl_fd_set_new(fds[1], PL_PIPE, flags & O_NONBLOCK, 1);
    }
    return r;
}

/* Shared by fcntl and fcntl64: cmd's argument is an int or a pointer;
 * both travel in one register, so reading it as a pointer is how libc
 * itself forwards it. */
static int pl_fcntl(pl_fcntl_fn real, int fd, int cmd, void *arg)
{
    struct pl_fd *e;
    int r;

    switch (cmd) {
    case F_GETFL:
        r = real(fd, cmd);
        e = pl_fd_peek(fd);
        if (r >= 0 && e && (e->flags & PL_NB_INTERNAL))
            r = (r & ~O_NONBLOCK) | (e->flags & PL_USER_NB ? O_NONBLOCK : 0);
        return r;
    case F_SETFL: {
        int fl = (int)(long)arg;
        e = pl_fd_peek(fd);
        if (e && (e->flags & PL_NB_INTERNAL))
            r = real(fd, cmd, fl | O_NONBLOCK);
        else
            r = real(fd, cmd, fl);
        if (r == 0 && e) {
            if (fl & O_NONBLOCK)
                e->flags |= PL_USER_NB;
            else
                e->flags &= (uint8_t)~PL_USER_NB;
        }
        return r;
    }
    case F_DUPFD:
    case F_DUPFD_CLOEXEC:
        r = real(fd, cmd, arg);
        if (r >= 0)
            pl_fd_copy(fd, r);
        return r;
    default:
        return real(fd, cmd, arg);
    }
}

PL_EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    return pl_fcntl(REAL(fcntl), fd, cmd, arg);
}

PL_EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    return pl_fcntl(REAL(fcntl64), fd, cmd, arg);
}

PL_EXPORT int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    void *arg;
    struct pl_fd *e;
    int r, on, one = 1;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);
    r = REAL(ioctl)(fd, req, arg);
    if (req != FIONBIO || r != 0 || !(e = pl_fd_peek(fd)))
        return r;
    /* The kernel accepted the pointer: reading it is safe now. */
    on = *(const int *)arg != 0;
    if (on)
        e->flags |= PL_USER_NB;
    else
        e->flags &= (uint8_t)~PL_USER_NB;
    if (!on && (e->flags & PL_NB_INTERNAL)) {
        /* We need O_NONBLOCK kept; the caller's wish is only recorded. */
        int saved = errno;
        REAL(ioctl)(fd, FIONBIO, &one);
        errno = saved;
    }
    return r;
}
