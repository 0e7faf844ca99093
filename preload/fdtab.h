/* preload/fdtab.h - what libgreen knows about each fd number.
 *
 * An entry says what kind of file the fd is (decided once, lazily, from
 * fstat), whether the *caller* believes it is non-blocking, and whether
 * libgreen itself set O_NONBLOCK on it. Entries are reset whenever a
 * number is closed or reused through a call we interpose, and filled in
 * without any system call when we create the fd ourselves (socket, pipe,
 * accept), so the lazy path runs about once per fd from elsewhere.
 */
#ifndef LIBGREEN_PRELOAD_FDTAB_H
#define LIBGREEN_PRELOAD_FDTAB_H

#include <stdint.h>

#include "preload/real.h"

enum pl_kind {
    PL_UNKNOWN = 0, /* not looked at since the number was last reset */
    PL_OTHER,       /* regular file, directory, device, epoll, eventfd...:
                       always passed through (hard rule 2) */
    PL_SOCKET,
    PL_PIPE,        /* pipe or FIFO */
    PL_TTY,
};

enum pl_flag {
    PL_USER_NB = 1 << 0,     /* the caller's view: O_NONBLOCK */
    PL_NB_INTERNAL = 1 << 1, /* we set O_NONBLOCK; the caller did not */
    PL_NO_NOWAIT = 1 << 2,   /* preadv2(RWF_NOWAIT) is refused here */
    PL_TIMEO_KNOWN = 1 << 3, /* rcvtimeo/sndtimeo below are valid */
    PL_SHARED = 1 << 4,      /* another number (dup) names the same open
                                file: what belongs to the file (O_NONBLOCK,
                                timeouts) may change through it, so it is
                                read from the kernel, not remembered */
};

struct pl_fd {
    uint8_t kind;
    uint8_t flags;
    int64_t rcvtimeo_us; /* SO_RCVTIMEO, 0 = none */
    int64_t sndtimeo_us; /* SO_SNDTIMEO, 0 = none */
};

/* The entry for fd, classified if it was unknown; NULL if fd is negative,
 * beyond the table or not open (such fds are passed through; a closed
 * number stays unknown). Never fails else: if classification itself
 * fails the fd is PL_OTHER. */
PL_HIDDEN struct pl_fd *pl_fd_get(int fd);

/* Forgets fd (it was closed or is about to be replaced). */
PL_HIDDEN void pl_fd_reset(int fd);

/* Records a new fd we just created, so it needs no classification.
 * timeo_known: the fd surely has no SO_RCVTIMEO/SO_SNDTIMEO (a fresh
 * socket or a pipe); 0 for accepted sockets, which may inherit them. */
PL_HIDDEN void pl_fd_set_new(int fd, enum pl_kind kind, int nonblock,
                             int timeo_known);

/* Makes fd2 describe what fd describes (dup: same open file). */
PL_HIDDEN void pl_fd_copy(int fd, int fd2);

/* Forgets every fd in [first, last]. */
PL_HIDDEN void pl_fd_reset_range(unsigned first, unsigned last);

/* Fills in the socket timeouts of e if not yet known (two getsockopt). */
PL_HIDDEN void pl_fd_load_timeouts(int fd, struct pl_fd *e);

/* For a PL_SHARED fd: re-reads the caller's O_NONBLOCK view from the
 * kernel (one fcntl). No-op for fds whose flag libgreen set itself. */
PL_HIDDEN void pl_fd_refresh_view(int fd, struct pl_fd *e);

/* Peek without classifying: the entry if fd was seen, else NULL. */
PL_HIDDEN struct pl_fd *pl_fd_peek(int fd);

#endif
