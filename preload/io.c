/* preload/io.c - read, write and the socket send/recv family.
 *
 * Inside a green thread, on an fd the caller believes is blocking, each
 * call becomes: try without blocking, and on EAGAIN park on the hub until
 * the fd is ready (or SO_RCVTIMEO / SO_SNDTIMEO run out), then try again.
 * The fd's O_NONBLOCK flag is never touched for this: sockets get
 * MSG_DONTWAIT on the call, pipes get preadv2/pwritev2 with RWF_NOWAIT.
 * The open file description is shared with other processes (a child's
 * stdout may be our pipe or a journald socket), and setting O_NONBLOCK on
 * it would make *their* blocking writes fail with EAGAIN. Only ttys (and
 * pipes on kernels without RWF_NOWAIT) use poll-then-call instead.
 *
 * Blocking semantics are kept exactly: a read returns as soon as any data
 * is there; a write on a stream returns only when every byte is written
 * (or the timeout runs out with some written: then the count); a timeout
 * with nothing done is EAGAIN; MSG_WAITALL waits for the full length on
 * stream sockets.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "preload/pl.h"

enum { PL_IN, PL_OUT };

/* One non-blocking attempt. msgcall: the caller used recvmsg/sendmsg, so
 * m's name, control and flags fields are the caller's. */
static ssize_t pl_try(int fd, struct pl_fd *e, int dir, struct msghdr *m,
                      int flags, int msgcall)
{
    ssize_t r;

    if (e->kind == PL_SOCKET) {
        flags |= MSG_DONTWAIT;
        if (!msgcall && m->msg_iovlen == 1) {
            if (dir == PL_IN)
                return REAL(recvfrom)(fd, m->msg_iov[0].iov_base,
                                      m->msg_iov[0].iov_len, flags,
                                      m->msg_name,
                                      m->msg_name ? &m->msg_namelen : NULL);
            return REAL(sendto)(fd, m->msg_iov[0].iov_base,
                                m->msg_iov[0].iov_len, flags, m->msg_name,
                                m->msg_namelen);
        }
        return dir == PL_IN ? REAL(recvmsg)(fd, m, flags)
                            : REAL(sendmsg)(fd, m, flags);
    }
    if (e->kind == PL_PIPE && !(e->flags & PL_NO_NOWAIT)) {
        r = dir == PL_IN
                ? preadv2(fd, m->msg_iov, (int)m->msg_iovlen, -1, RWF_NOWAIT)
                : pwritev2(fd, m->msg_iov, (int)m->msg_iovlen, -1, RWF_NOWAIT);
        if (r >= 0 || errno != EOPNOTSUPP)
            return r;
        e->flags |= PL_NO_NOWAIT; /* old kernel: poll first from now on */
    }
    /* ttys, and pipes without RWF_NOWAIT: call only once poll says the
     * call will not block (a racing reader in another process can still
     * make it wait; that is the price of not touching O_NONBLOCK). */
    {
        struct pollfd p = {fd, (short)(dir == PL_IN ? POLLIN : POLLOUT), 0};
        int n = REAL(poll)(&p, 1, 0);
        if (n == 0) {
            errno = EAGAIN;
            return -1;
        }
        if (n < 0)
            return -1;
    }
    if (dir == PL_IN)
        return REAL(readv)(fd, m->msg_iov, (int)m->msg_iovlen);
    /* At most PIPE_BUF at a time: a blocking write of more could wait for
     * the reader with the whole OS thread. */
    {
        struct iovec one = m->msg_iov[0];
        if (m->msg_iovlen > 1 || one.iov_len > 4096) {
            if (one.iov_len > 4096)
                one.iov_len = 4096;
            return REAL(writev)(fd, &one, 1);
        }
        return REAL(writev)(fd, m->msg_iov, (int)m->msg_iovlen);
    }
}

/* Drops n bytes from the front of an iovec array in place. */
static void pl_iov_advance(struct iovec **iov, size_t *cnt, size_t n)
{
    while (n && *cnt) {
        if (n < (*iov)->iov_len) {
            (*iov)->iov_base = (char *)(*iov)->iov_base + n;
            (*iov)->iov_len -= n;
            return;
        }
        n -= (*iov)->iov_len;
        (*iov)++;
        (*cnt)--;
    }
    while (*cnt && (*iov)->iov_len == 0) {
        (*iov)++;
        (*cnt)--;
    }
}

static int pl_is_stream(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;

    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
           type == SOCK_STREAM;
}

/* Between two looks of a MSG_PEEK|MSG_WAITALL read at a stream that holds
 * only part of what was asked: a peek cannot move past what it saw, and
 * the fd stays readable, so there is nothing to wait on but time. Pauses
 * (pl_pause) and returns 0 to look again, or -1 when what is queued is
 * the answer, as libc gives it: the peer shut down, SO_RCVTIMEO ran out,
 * or the pause was interrupted. */
static int pl_peek_pause(int fd, struct pl_fd *e, double *deadline,
                         double *pause, const struct green_callsite *cs)
{
    struct pollfd p = {fd, POLLRDHUP, 0};

    if (*deadline == -2) {
        pl_fd_load_timeouts(fd, e);
        *deadline = pl_deadline_us(e->rcvtimeo_us);
    }
    if (REAL(poll)(&p, 1, 0) != 0)
        return -1;
    return pl_pause(pause, *deadline, cs, NULL);
}

/* The cooperative transfer. For writes, and reads with MSG_WAITALL on a
 * stream socket, it continues until every byte moved; after a partial
 * transfer it works on a private copy of the iovecs and the msghdr, so
 * the caller's stay as they were (ancillary data went with the first
 * bytes, as with a blocking call). */
static ssize_t pl_xfer(int fd, struct pl_fd *e, int dir, struct msghdr *m,
                       int flags, int msgcall, const struct green_callsite *cs)
{
    struct iovec local[8], *iov = NULL;
    struct msghdr cur, *use = m;
    size_t total = 0, done = 0;
    double deadline = -2; /* not computed yet */
    double pause = PL_PAUSE_FIRST; /* MSG_PEEK|MSG_WAITALL only */
    int saved = errno; /* a success leaves it alone, as libc's does */
    int whole = dir == PL_OUT ||
                ((flags & MSG_WAITALL) && e->kind == PL_SOCKET);
    ssize_t r;

    for (size_t i = 0; i < m->msg_iovlen; i++)
        total += m->msg_iov[i].iov_len;
    for (;;) {
        r = pl_try(fd, e, dir, use, flags, msgcall && use == m);
        if (r > 0 && whole && done + (size_t)r < total) {
            struct iovec *p;
            size_t cnt;
            if (dir == PL_IN && done == 0 && !pl_is_stream(fd))
                break; /* MSG_WAITALL means nothing on datagrams */
            if (flags & MSG_PEEK) {
                if (pl_peek_pause(fd, e, &deadline, &pause, cs) < 0)
                    break; /* r: the bytes queued now */
                continue;  /* look again from the start */
            }
            if (!iov) {
                cnt = m->msg_iovlen;
                iov = cnt <= sizeof local / sizeof local[0]
                          ? local
                          : malloc(cnt * sizeof *iov);
                if (!iov) {
                    r = (ssize_t)(done + (size_t)r);
                    break;
                }
                memcpy(iov, m->msg_iov, cnt * sizeof *iov);
                cur = *m;
                cur.msg_control = NULL;
                cur.msg_controllen = 0;
                cur.msg_iov = iov;
                use = &cur;
            }
            done += (size_t)r;
            p = iov;
            cnt = cur.msg_iovlen;
            pl_iov_advance(&p, &cnt, (size_t)r);
            memmove(iov, p, cnt * sizeof *iov);
            cur.msg_iovlen = cnt;
            continue;
        }
        if (r >= 0) {
            r = (ssize_t)(done + (size_t)r);
            break;
        }
        if (errno != EAGAIN) {
            if (done)
                r = (ssize_t)done; /* the error shows on the next call */
            break;
        }
        if (deadline == -2) {
            deadline = -1;
            if (e->kind == PL_SOCKET) {
                pl_fd_load_timeouts(fd, e);
                deadline = pl_deadline_us(dir == PL_IN ? e->rcvtimeo_us
                                                       : e->sndtimeo_us);
            }
        }
        if (pl_wait(fd, dir == PL_IN ? GREEN_READ : GREEN_WRITE, deadline,
                    cs) < 0) {
            if (done)
                r = (ssize_t)done; /* timed out or interrupted midway */
            break;
        }
    }
    if (iov && iov != local)
        free(iov);
    if (r >= 0)
        errno = saved; /* not our EAGAIN, nor another green thread's */
    return r;
}

/* ---- the wrappers ----------------------------------------------------- */

PL_SITE(pl_cs_read, "read", READ, NONE);
PL_SITE(pl_cs_readv, "readv", READ, NONE);
PL_SITE(pl_cs_write, "write", WRITE, NONE);
PL_SITE(pl_cs_writev, "writev", WRITE, NONE);
PL_SITE(pl_cs_recv, "recv", RECV, NONE);
PL_SITE(pl_cs_recvfrom, "recvfrom", RECV, NONE);
PL_SITE(pl_cs_recvmsg, "recvmsg", RECV, NONE);
PL_SITE(pl_cs_send, "send", SEND, NONE);
PL_SITE(pl_cs_sendto, "sendto", SEND, NONE);
PL_SITE(pl_cs_sendmsg, "sendmsg", SEND, NONE);

static ssize_t pl_buf(int fd, struct pl_fd *e, int dir, void *buf, size_t n,
                      int flags, struct sockaddr *addr, socklen_t *alen,
                      socklen_t alen_in, const struct green_callsite *cs)
{
    struct iovec iov = {buf, n};
    struct msghdr m = {0};
    ssize_t r;

    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_name = addr;
    m.msg_namelen = alen ? *alen : alen_in;
    r = pl_xfer(fd, e, dir, &m, flags, 0, cs);
    if (r >= 0 && alen)
        *alen = m.msg_namelen;
    return r;
}

/* read/write on a number we knew as a socket failed with ENOTSOCK: it was
 * closed where no wrapper saw it (fclose of an fdopen'd socket closes
 * inside libc) and names another file now. Forget what we knew, so that
 * the caller's retry looks at the file afresh. */
static int pl_stale(int fd, const struct pl_fd *e, ssize_t r, int saved)
{
    if (pl_likely(r >= 0) || errno != ENOTSOCK || e->kind != PL_SOCKET)
        return 0;
    pl_fd_reset(fd);
    errno = saved;
    return 1;
}

/* Each wrapper is a test and a jump to libc outside green threads; what
 * cooperates is a function of its own (noinline), so the pass-through
 * path saves no registers: 9 instructions, not 25 with the six the
 * cooperative path needs saved (make bench-calls). */
#define PL_NOINLINE __attribute__((noinline))

/* Returns r from a wrapper without a tail call, so the wrapper's own
 * frame (read, recv...) stays on the stack under the cooperative half:
 * debugging dumps show the call the program made. The pass-through path
 * keeps its jump. */
#define PL_RETURN_FRAMED(r)                                                 \
    do {                                                                    \
        ssize_t pl_r_ = (r);                                                \
        __asm__ volatile("" ::: "memory");                                  \
        return pl_r_;                                                       \
    } while (0)

static PL_NOINLINE ssize_t pl_read_coop(int fd, void *buf, size_t n)
{
    struct pl_fd *e = pl_coop(fd);
    int saved;
    ssize_t r;

    if (pl_likely(!e))
        return REAL(read)(fd, buf, n);
    saved = errno;
    r = pl_buf(fd, e, PL_IN, buf, n, 0, NULL, NULL, 0, &pl_cs_read);
    if (pl_unlikely(pl_stale(fd, e, r, saved)))
        return read(fd, buf, n);
    return r;
}

PL_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    if (pl_likely(!green_current()))
        return REAL(read)(fd, buf, n);
    PL_RETURN_FRAMED(pl_read_coop(fd, buf, n));
}

static PL_NOINLINE ssize_t pl_write_coop(int fd, const void *buf, size_t n)
{
    struct pl_fd *e = pl_coop(fd);
    int saved;
    ssize_t r;

    if (pl_likely(!e))
        return REAL(write)(fd, buf, n);
    saved = errno;
    r = pl_buf(fd, e, PL_OUT, (void *)buf, n, 0, NULL, NULL, 0, &pl_cs_write);
    if (pl_unlikely(pl_stale(fd, e, r, saved)))
        return write(fd, buf, n);
    return r;
}

PL_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    if (pl_likely(!green_current()))
        return REAL(write)(fd, buf, n);
    PL_RETURN_FRAMED(pl_write_coop(fd, buf, n));
}

static PL_NOINLINE ssize_t pl_readv_coop(int fd, const struct iovec *iov, int cnt)
{
    struct pl_fd *e = pl_coop(fd);
    struct msghdr m = {0};
    int saved;
    ssize_t r;

    if (pl_likely(!e) || cnt <= 0 || cnt > IOV_MAX)
        return REAL(readv)(fd, iov, cnt);
    saved = errno;
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)cnt;
    r = pl_xfer(fd, e, PL_IN, &m, 0, 0, &pl_cs_readv);
    if (pl_unlikely(pl_stale(fd, e, r, saved)))
        return readv(fd, iov, cnt);
    return r;
}

PL_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    if (pl_likely(!green_current()))
        return REAL(readv)(fd, iov, cnt);
    PL_RETURN_FRAMED(pl_readv_coop(fd, iov, cnt));
}

static PL_NOINLINE ssize_t pl_writev_coop(int fd, const struct iovec *iov, int cnt)
{
    struct pl_fd *e = pl_coop(fd);
    struct msghdr m = {0};
    int saved;
    ssize_t r;

    if (pl_likely(!e) || cnt <= 0 || cnt > IOV_MAX)
        return REAL(writev)(fd, iov, cnt);
    saved = errno;
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)cnt;
    r = pl_xfer(fd, e, PL_OUT, &m, 0, 0, &pl_cs_writev);
    if (pl_unlikely(pl_stale(fd, e, r, saved)))
        return writev(fd, iov, cnt);
    return r;
}

PL_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (pl_likely(!green_current()))
        return REAL(writev)(fd, iov, cnt);
    PL_RETURN_FRAMED(pl_writev_coop(fd, iov, cnt));
}

/* The pass-through test of the socket calls: outside green threads, or
 * MSG_DONTWAIT (the caller's, or the server's own: server/send.c). */
#define PL_SOCK_PASS(flags) (pl_likely(!green_current()) || ((flags) & MSG_DONTWAIT))

/* The cooperative half of recv/send (PL_SOCK_PASS said no): pass through
 * too if the fd is not a socket (libc then fails with ENOTSOCK as usual). */
static inline struct pl_fd *pl_coop_sock(int fd)
{
    struct pl_fd *e = pl_coop(fd);

    return e && e->kind == PL_SOCKET ? e : NULL;
}

static PL_NOINLINE ssize_t pl_recv_coop(int fd, void *buf, size_t n, int flags)
{
    struct pl_fd *e = pl_coop_sock(fd);

    if (pl_likely(!e))
        return REAL(recv)(fd, buf, n, flags);
    return pl_buf(fd, e, PL_IN, buf, n, flags, NULL, NULL, 0, &pl_cs_recv);
}

PL_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    if (PL_SOCK_PASS(flags))
        return REAL(recv)(fd, buf, n, flags);
    PL_RETURN_FRAMED(pl_recv_coop(fd, buf, n, flags));
}

static PL_NOINLINE ssize_t pl_recvfrom_coop(int fd, void *buf, size_t n,
                                            int flags, struct sockaddr *addr,
                                            socklen_t *alen)
{
    struct pl_fd *e = pl_coop_sock(fd);

    if (pl_likely(!e))
        return REAL(recvfrom)(fd, buf, n, flags, addr, alen);
    return pl_buf(fd, e, PL_IN, buf, n, flags, addr, addr ? alen : NULL, 0,
                  &pl_cs_recvfrom);
}

PL_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags,
                           struct sockaddr *addr, socklen_t *alen)
{
    if (PL_SOCK_PASS(flags))
        return REAL(recvfrom)(fd, buf, n, flags, addr, alen);
    PL_RETURN_FRAMED(pl_recvfrom_coop(fd, buf, n, flags, addr, alen));
}

static PL_NOINLINE ssize_t pl_recvmsg_coop(int fd, struct msghdr *m, int flags)
{
    struct pl_fd *e = pl_coop_sock(fd);

    if (pl_likely(!e))
        return REAL(recvmsg)(fd, m, flags);
    return pl_xfer(fd, e, PL_IN, m, flags, 1, &pl_cs_recvmsg);
}

PL_EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    if (PL_SOCK_PASS(flags))
        return REAL(recvmsg)(fd, m, flags);
    PL_RETURN_FRAMED(pl_recvmsg_coop(fd, m, flags));
}

static PL_NOINLINE ssize_t pl_send_coop(int fd, const void *buf, size_t n,
                                        int flags)
{
    struct pl_fd *e = pl_coop_sock(fd);

    if (pl_likely(!e))
        return REAL(send)(fd, buf, n, flags);
    return pl_buf(fd, e, PL_OUT, (void *)buf, n, flags, NULL, NULL, 0,
                  &pl_cs_send);
}

PL_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    if (PL_SOCK_PASS(flags))
        return REAL(send)(fd, buf, n, flags);
    PL_RETURN_FRAMED(pl_send_coop(fd, buf, n, flags));
}

static PL_NOINLINE ssize_t pl_sendto_coop(int fd, const void *buf, size_t n,
                                          int flags, const struct sockaddr *addr,
                                          socklen_t alen)
{
    struct pl_fd *e = pl_coop_sock(fd);

    if (pl_likely(!e))
        return REAL(sendto)(fd, buf, n, flags, addr, alen);
    return pl_buf(fd, e, PL_OUT, (void *)buf, n, flags,
                  (struct sockaddr *)addr, NULL, addr ? alen : 0, &pl_cs_sendto);
}

PL_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                         const struct sockaddr *addr, socklen_t alen)
{
    if (PL_SOCK_PASS(flags))
        return REAL(sendto)(fd, buf, n, flags, addr, alen);
    PL_RETURN_FRAMED(pl_sendto_coop(fd, buf, n, flags, addr, alen));
}

static PL_NOINLINE ssize_t pl_sendmsg_coop(int fd, const struct msghdr *m,
                                           int flags)
{
    struct pl_fd *e = pl_coop_sock(fd);
    struct msghdr copy;

    if (pl_likely(!e))
        return REAL(sendmsg)(fd, m, flags);
    copy = *m; /* pl_xfer may advance it; the caller's stays const */
    return pl_xfer(fd, e, PL_OUT, &copy, flags, 1, &pl_cs_sendmsg);
}

PL_EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    if (PL_SOCK_PASS(flags))
        return REAL(sendmsg)(fd, m, flags);
    PL_RETURN_FRAMED(pl_sendmsg_coop(fd, m, flags));
}

/* ---- fortified entry points ------------------------------------------- */

PL_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (n > buflen)
        return REAL(__read_chk)(fd, buf, n, buflen); /* libc reports it */
    return read(fd, buf, n);
}

PL_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen,
                             int flags)
{
    if (n > buflen)
        return REAL(__recv_chk)(fd, buf, n, buflen, flags);
    return recv(fd, buf, n, flags);
}

PL_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen,
                                 int flags, struct sockaddr *addr,
                                 socklen_t *alen)
{
    if (n > buflen)
        return REAL(__recvfrom_chk)(fd, buf, n, buflen, flags, addr, alen);
    return recvfrom(fd, buf, n, flags, addr, alen);
}
