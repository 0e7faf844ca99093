/* preload/fdtab.c - the process-wide table behind preload/fdtab.h.
 *
 * Two levels: a fixed array of chunk pointers and chunks of 1024 entries
 * made on first touch (with a compare-and-swap, since any OS thread may
 * touch the table). Up to PL_FD_MAX fds are tracked; larger numbers are
 * simply passed through. Entries are small plain structs: two threads
 * racing on one fd number is already a bug in the program (one of them
 * uses a closed fd), and the worst a torn entry can do is make one call
 * classify the fd again.
 *
 * fork() needs nothing here: the child inherits every fd number and the
 * open file behind it, so each entry stays true in the child (a flag we
 * set on a shared file is set for both processes).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>

#include "preload/fdtab.h"

#define PL_CHUNK 1024
#define PL_FD_MAX (1 << 20)

static struct pl_fd *pl_chunks[PL_FD_MAX / PL_CHUNK];

static struct pl_fd *pl_slot(int fd, int make)
{
    struct pl_fd *chunk, *fresh;
    unsigned i = (unsigned)fd / PL_CHUNK;

    if (fd < 0 || fd >= PL_FD_MAX)
        return NULL;
    chunk = __atomic_load_n(&pl_chunks[i], __ATOMIC_ACQUIRE);
    if (__builtin_expect(chunk != NULL, 1))
        return &chunk[(unsigned)fd % PL_CHUNK];
    if (!make)
        return NULL;
    fresh = calloc(PL_CHUNK, sizeof *fresh);
    if (!fresh)
        return NULL;
    if (!__atomic_compare_exchange_n(&pl_chunks[i], &chunk, fresh, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        free(fresh); /* another thread won; chunk holds its array */
    else
        chunk = fresh;
    return &chunk[(unsigned)fd % PL_CHUNK];
}

static int64_t pl_tv_us(const struct timeval *tv)
{
    return (int64_t)tv->tv_sec * 1000000 + tv->tv_usec;
}

void pl_fd_load_timeouts(int fd, struct pl_fd *e)
{
    struct timeval tv;
    socklen_t len;

    if ((e->flags & PL_TIMEO_KNOWN) && !(e->flags & PL_SHARED))
        return;
    e->rcvtimeo_us = e->sndtimeo_us = 0;
    len = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0)
        e->rcvtimeo_us = pl_tv_us(&tv);
    len = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0)
        e->sndtimeo_us = pl_tv_us(&tv);
    e->flags |= PL_TIMEO_KNOWN;
}

/* Returns 0, leaving e unknown, if fd is not open: whatever is opened on
 * the number later (open() of a FIFO, a socket from SCM_RIGHTS) must be
 * looked at afresh, not taken for "other". */
static int pl_classify(int fd, struct pl_fd *e)
{
    struct stat st;
    struct termios tio;
    int fl, saved = errno;

    if (fstat(fd, &st) != 0) {
        errno = saved;
        return 0;
    }
    e->flags = 0;
    e->kind = PL_OTHER;
    if (S_ISSOCK(st.st_mode))
        e->kind = PL_SOCKET;
    else if (S_ISFIFO(st.st_mode))
        e->kind = PL_PIPE;
    else if (S_ISCHR(st.st_mode) && tcgetattr(fd, &tio) == 0)
        e->kind = PL_TTY;
    if (e->kind != PL_OTHER) {
        fl = REAL(fcntl)(fd, F_GETFL);
        if (fl < 0)
            e->kind = PL_OTHER;
        else if (fl & O_NONBLOCK)
            e->flags |= PL_USER_NB;
    }
    errno = saved;
    return 1;
}

struct pl_fd *pl_fd_get(int fd)
{
    struct pl_fd *e = pl_slot(fd, 1);

    if (e && __builtin_expect(e->kind == PL_UNKNOWN, 0) && !pl_classify(fd, e))
        return NULL; /* not open: pass through, libc says EBADF */
    return e;
}

struct pl_fd *pl_fd_peek(int fd)
{
    struct pl_fd *e = pl_slot(fd, 0);

    return e && e->kind != PL_UNKNOWN ? e : NULL;
}

void pl_fd_reset(int fd)
{
    struct pl_fd *e = pl_slot(fd, 0);

    if (e)
        memset(e, 0, sizeof *e);
}

void pl_fd_set_new(int fd, enum pl_kind kind, int nonblock, int timeo_known)
{
    struct pl_fd *e = pl_slot(fd, 1);

    if (!e)
        return;
    memset(e, 0, sizeof *e);
    e->kind = (uint8_t)kind;
    e->flags = (uint8_t)((nonblock ? PL_USER_NB : 0) |
                         (timeo_known ? PL_TIMEO_KNOWN : 0));
}

void pl_fd_copy(int fd, int fd2)
{
    struct pl_fd *from = pl_slot(fd, 0), *to;

    if (!from || from->kind == PL_UNKNOWN) {
        pl_fd_reset(fd2);
        return;
    }
    to = pl_slot(fd2, 1);
    if (to) {
        from->flags |= PL_SHARED;
        *to = *from;
    }
}

void pl_fd_refresh_view(int fd, struct pl_fd *e)
{
    int saved = errno, fl;

    if (e->flags & PL_NB_INTERNAL)
        return;
    fl = REAL(fcntl)(fd, F_GETFL);
    if (fl >= 0) {
        if (fl & O_NONBLOCK)
            e->flags |= PL_USER_NB;
        else
            e->flags &= (uint8_t)~PL_USER_NB;
    }
    errno = saved;
}

void pl_fd_reset_range(unsigned first, unsigned last)
{
    if (last >= PL_FD_MAX)
        last = PL_FD_MAX - 1;
    for (unsigned fd = first; fd <= last;) {
        struct pl_fd *chunk = __atomic_load_n(&pl_chunks[fd / PL_CHUNK],
                                              __ATOMIC_ACQUIRE);
        unsigned end = (fd / PL_CHUNK + 1) * PL_CHUNK - 1;
        if (end > last)
            end = last;
        if (chunk)
            memset(&chunk[fd % PL_CHUNK], 0,
                   (end - fd + 1) * sizeof(struct pl_fd));
        if (end == PL_FD_MAX - 1)
            break;
        fd = end + 1;
    }
}
