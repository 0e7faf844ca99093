/* tests/preload/test_timeouts.c - socket timeouts in green threads, and
 * connect's outcomes.
 *
 * SO_RCVTIMEO makes a parked recv/read/accept give up with -1/EAGAIN after
 * the timeout (not sooner, not much later), SO_SNDTIMEO makes a write on a
 * full socket stop with EAGAIN or the partial count, and a connect to a
 * listener whose backlog is full stops after SO_SNDTIMEO with EINPROGRESS,
 * all exactly as libc's blocking calls do - while the other green threads
 * keep running (a ticker advances meanwhile). connect to a closed port on
 * 127.0.0.1 fails with ECONNREFUSED as libc's does, and a successful
 * connect returns 0 with a usable, still blocking socket. An AF_UNIX
 * connect to a full backlog waits (parked) until the server accepts, or
 * fails with EAGAIN after SO_SNDTIMEO, as libc's does.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

/* ---- helpers ------------------------------------------------------------ */

static int set_timeo(int fd, int opt, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    return setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

struct op {
    int fd;
    int kind;
    ssize_t r;
    int err;
    double elapsed;
    int ticks_during;
    struct sockaddr_in addr;
    struct sockaddr_un uaddr;
    socklen_t ulen;
};

enum { OP_RECV, OP_READ, OP_ACCEPT, OP_WRITE, OP_WRITE_AGAIN, OP_CONNECT,
       OP_CONNECT_UNIX };

static void do_op(void *arg)
{
    struct op *o = arg;
    static char big[8 << 20];
    char buf[64];
    int t0_ticks = ticks;
    double t0 = check_now();

    errno = 0;
    switch (o->kind) {
    case OP_RECV:
        o->r = recv(o->fd, buf, sizeof buf, 0);
        break;
    case OP_READ:
        o->r = read(o->fd, buf, sizeof buf);
        break;
    case OP_ACCEPT:
        o->r = accept(o->fd, NULL, NULL);
        break;
    case OP_WRITE:
    case OP_WRITE_AGAIN:
        o->r = write(o->fd, big, sizeof big);
        break;
    case OP_CONNECT:
        o->r = connect(o->fd, (struct sockaddr *)&o->addr, sizeof o->addr);
        break;
    case OP_CONNECT_UNIX:
        o->r = connect(o->fd, (struct sockaddr *)&o->uaddr, o->ulen);
        break;
    }
    o->err = errno;
    o->elapsed = check_now() - t0;
    o->ticks_during = ticks - t0_ticks;
}

/* Runs o in a green thread beside a ticker. */
static int run_op(struct op *o)
{
    return run_beside_ticker(do_op, o, NULL, NULL) < 0 ? -1 : 0;
}

/* ---- SO_RCVTIMEO ------------------------------------------------------ */

TEST(rcvtimeo_recv_eagain)
{
    struct op o = {0};
    int a, b;

    CHECK(tcp_pair(&a, &b) == 0);
    CHECK(set_timeo(a, SO_RCVTIMEO, 200) == 0);
    o.fd = a;
    o.kind = OP_RECV;
    CHECK(run_op(&o) == 0);
    CHECK(o.r == -1);
    CHECK(o.err == EAGAIN);
    CHECK(o.elapsed >= 0.199 && o.elapsed <= 1.0);
    CHECK(o.ticks_during >= 5); /* the others kept running */
    CHECK(close(a) == 0);
    CHECK(close(b) == 0);
}

TEST(rcvtimeo_read_eagain)
{
    struct op o = {0};
    int a, b;

    CHECK(tcp_pair(&a, &b) == 0);
    CHECK(set_timeo(b, SO_RCVTIMEO, 200) == 0);
    o.fd = b;
    o.kind = OP_READ;
    CHECK(run_op(&o) == 0);
    CHECK(o.r == -1);
    CHECK(o.err == EAGAIN);
    CHECK(o.elapsed >= 0.199 && o.elapsed <= 1.0);
    CHECK(o.ticks_during >= 5);
    CHECK(close(a) == 0);
    CHECK(close(b) == 0);
}

/* The timeout set while the fd is already known (a read parked on it
 * before) still applies: the cached value is refreshed. */
TEST(rcvtimeo_changed_after_first_use)
{
    struct op o = {0};
    int a, b, sv[2];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    a = sv[0];
    b = sv[1];
    /* first use: data is there, the read returns at once */
    CHECK(write(b, "x", 1) == 1);
    o.fd = a;
    o.kind = OP_READ;
    CHECK(run_op(&o) == 0);
    CHECK(o.r == 1);
    CHECK(set_timeo(a, SO_RCVTIMEO, 200) == 0);
    CHECK(run_op(&o) == 0);
    CHECK(o.r == -1);
    CHECK(o.err == EAGAIN);
    CHECK(o.elapsed >= 0.199 && o.elapsed <= 1.0);
    CHECK(close(a) == 0);
    CHECK(close(b) == 0);
}

/* A read that gets data before the timeout returns it. */
static void late_writer(void *arg)
{
    usleep(100000);
    CHECK_OR(write(*(int *)arg, "late", 4) == 4, );
}

TEST(rcvtimeo_data_before_timeout)
{
    struct op o = {0};
    struct green *w;
    int a, b;

    CHECK(tcp_pair(&a, &b) == 0);
    CHECK(set_timeo(a, SO_RCVTIMEO, 500) == 0);
    w = green_spawn(late_writer, &b, NULL);
    CHECK(w != NULL);
    o.fd = a;
    o.kind = OP_READ;
    CHECK(run_op(&o) == 0);
    CHECK(green_join(w, 5.0) == 0);
    CHECK(o.r == 4);
    CHECK(o.elapsed >= 0.09 && o.elapsed < 0.45);
    CHECK(close(a) == 0);
    CHECK(close(b) == 0);
}

TEST(rcvtimeo_accept_eagain)
{
    struct sockaddr_in addr;
    struct op o = {0};
    int l = listener(8, &addr);

    CHECK(l >= 0);
    CHECK(set_timeo(l, SO_RCVTIMEO, 200) == 0);
    o.fd = l;
    o.kind = OP_ACCEPT;
    CHECK(run_op(&o) == 0);
    CHECK(o.r == -1);
    CHECK(o.err == EAGAIN);
    CHECK(o.elapsed >= 0.199 && o.elapsed <= 1.0);
    CHECK(o.ticks_during >= 5);
    CHECK(close(l) == 0);
}

/* ---- SO_SNDTIMEO ------------------------------------------------------ */

TEST(sndtimeo_full_socket)
{
    struct op o = {0};
    int a, b, small = 4096;

    CHECK(tcp_pair(&a, &b) == 0);
    CHECK(setsockopt(a, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    CHECK(setsockopt(b, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    CHECK(set_timeo(a, SO_SNDTIMEO, 200) == 0);
    /* 8 MiB never fit: some bytes go, then the timeout ends the write. A
     * blocking write reports what it wrote (or EAGAIN if nothing). */
    o.fd = a;
    o.kind = OP_WRITE;
    CHECK(run_op(&o) == 0);
    CHECK((o.r > 0 && o.r < (8 << 20)) || (o.r == -1 && o.err == EAGAIN));
    CHECK(o.elapsed >= 0.199 && o.elapsed <= 1.0);
    CHECK(o.ticks_during >= 5);
    /* Now the buffers are full: nothing at all can be written. */
    o.kind = OP_WRITE_AGAIN;
    CHECK(run_op(&o) == 0);
    CHECK(o.r == -1);
    CHECK(o.err == EAGAIN);
    CHECK(o.elapsed >= 0.199 && o.elapsed <= 1.0);
    CHECK(o.ticks_during >= 5);
    CHECK(close(a) == 0);
    CHECK(close(b) == 0);
}

/* ---- connect ---------------------------------------------------------- */

TEST(connect_full_backlog_sndtimeo)
{
    struct sockaddr_in addr;
    struct op o = {0};
    int l = listener(0, &addr), c, real_fd, real_r, real_err;
    double t0, real_elapsed;

    CHECK(l >= 0);
    /* fill the accept queue of the backlog-0 listener: one connection is
     * queued, later SYNs are dropped */
    c = tcp_connect(&addr);
    CHECK(c >= 0);

    /* What libc's own blocking connect does here (main context). */
    real_fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(real_fd >= 0);
    CHECK(set_timeo(real_fd, SO_SNDTIMEO, 200) == 0);
    t0 = check_now();
    errno = 0;
    real_r = connect(real_fd, (struct sockaddr *)&addr, sizeof addr);
    real_err = errno;
    real_elapsed = check_now() - t0;
    CHECK(real_r == -1);
    CHECK(real_elapsed >= 0.15);
    CHECK(close(real_fd) == 0);

    o.fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(o.fd >= 0);
    CHECK(set_timeo(o.fd, SO_SNDTIMEO, 200) == 0);
    o.addr = addr;
    o.kind = OP_CONNECT;
    CHECK(run_op(&o) == 0);
    CHECK(o.r == -1);
    CHECK(o.err == real_err);
    CHECK(o.err == EINPROGRESS);
    CHECK(o.elapsed >= 0.199 && o.elapsed <= 1.0);
    CHECK(o.ticks_during >= 5);
    /* The caller's socket is left blocking, as it was. */
    CHECK((fcntl(o.fd, F_GETFL) & O_NONBLOCK) == 0);
    CHECK((syscall(SYS_fcntl, o.fd, F_GETFL) & O_NONBLOCK) == 0);
    CHECK(close(o.fd) == 0);
    CHECK(close(c) == 0);
    CHECK(close(l) == 0);
}

TEST(connect_refused)
{
    struct sockaddr_in addr;
    struct op o = {0};
    int l = listener(1, &addr), real_fd, real_r, real_err;

    CHECK(l >= 0);
    CHECK(close(l) == 0); /* nothing listens on addr any more */

    real_fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(real_fd >= 0);
    errno = 0;
    real_r = connect(real_fd, (struct sockaddr *)&addr, sizeof addr);
    real_err = errno;
    CHECK(real_r == -1 && real_err == ECONNREFUSED);
    CHECK(close(real_fd) == 0);

    o.fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(o.fd >= 0);
    o.addr = addr;
    o.kind = OP_CONNECT;
    CHECK(run_op(&o) == 0);
    CHECK(o.r == -1);
    CHECK(o.err == ECONNREFUSED);
    CHECK(o.elapsed < 1.0);
    CHECK((fcntl(o.fd, F_GETFL) & O_NONBLOCK) == 0);
    CHECK((syscall(SYS_fcntl, o.fd, F_GETFL) & O_NONBLOCK) == 0);
    CHECK(close(o.fd) == 0);
}

static void accept_and_echo(void *arg)
{
    int l = *(int *)arg, fd;
    char buf[16];
    ssize_t r;

    fd = accept(l, NULL, NULL);
    CHECK_OR(fd >= 0, );
    r = read(fd, buf, sizeof buf);
    CHECK_OR(r > 0, );
    CHECK_OR(write(fd, buf, (size_t)r) == r, );
    CHECK_OR(close(fd) == 0, );
}

TEST(connect_success_usable)
{
    struct sockaddr_in addr;
    struct op o = {0};
    struct green *srv;
    char buf[16];
    int l = listener(4, &addr);

    CHECK(l >= 0);
    srv = green_spawn(accept_and_echo, &l, NULL);
    CHECK(srv != NULL);
    o.fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(o.fd >= 0);
    o.addr = addr;
    o.kind = OP_CONNECT;
    CHECK(run_op(&o) == 0);
    CHECK(o.r == 0);
    CHECK((fcntl(o.fd, F_GETFL) & O_NONBLOCK) == 0);
    CHECK((syscall(SYS_fcntl, o.fd, F_GETFL) & O_NONBLOCK) == 0);
    /* usable: from the main context, with plain blocking calls */
    CHECK(write(o.fd, "ping", 4) == 4);
    CHECK(green_join(srv, 5.0) == 0);
    CHECK(read(o.fd, buf, sizeof buf) == 4);
    CHECK(memcmp(buf, "ping", 4) == 0);
    CHECK(read(o.fd, buf, sizeof buf) == 0); /* server closed */
    CHECK(close(o.fd) == 0);
    CHECK(close(l) == 0);
}

/* connect on an already connected socket: EISCONN at once, as libc. */
TEST(connect_again_eisconn)
{
    struct sockaddr_in addr;
    struct op o = {0};
    int l = listener(4, &addr), c;

    CHECK(l >= 0);
    o.fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(o.fd >= 0);
    CHECK(connect(o.fd, (struct sockaddr *)&addr, sizeof addr) == 0);
    c = accept(l, NULL, NULL);
    CHECK(c >= 0);
    o.addr = addr;
    o.kind = OP_CONNECT;
    CHECK(run_op(&o) == 0);
    CHECK(o.r == -1);
    CHECK(o.err == EISCONN);
    CHECK(close(o.fd) == 0);
    CHECK(close(c) == 0);
    CHECK(close(l) == 0);
}

/* ---- AF_UNIX connect to a full backlog --------------------------------- */

/* A listener in the abstract namespace with backlog 0, its one queue slot
 * taken by a first connection (returned in *queued). */
static int unix_names;

static int unix_full_listener(struct op *o, int *queued)
{
    int l = socket(AF_UNIX, SOCK_STREAM, 0);

    CHECK_OR(l >= 0, -1);
    memset(&o->uaddr, 0, sizeof o->uaddr);
    o->uaddr.sun_family = AF_UNIX;
    o->ulen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                          (size_t)snprintf(o->uaddr.sun_path + 1,
                                           sizeof o->uaddr.sun_path - 1,
                                           "libgreen-timeouts-%d-%d",
                                           (int)getpid(), ++unix_names));
    CHECK_OR(bind(l, (struct sockaddr *)&o->uaddr, o->ulen) == 0, -1);
    CHECK_OR(listen(l, 0) == 0, -1);
    *queued = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_OR(*queued >= 0, -1);
    CHECK_OR(connect(*queued, (struct sockaddr *)&o->uaddr, o->ulen) == 0, -1);
    return l;
}

TEST(unix_connect_full_backlog_sndtimeo)
{
    struct op o = {0};
    int queued, l = unix_full_listener(&o, &queued), real_fd, real_r, real_err;
    double t0, real_elapsed;

    CHECK(l >= 0);
    /* libc's own blocking connect, from the main context */
    real_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(real_fd >= 0);
    CHECK(set_timeo(real_fd, SO_SNDTIMEO, 200) == 0);
    t0 = check_now();
    errno = 0;
    real_r = connect(real_fd, (struct sockaddr *)&o.uaddr, o.ulen);
    real_err = errno;
    real_elapsed = check_now() - t0;
    CHECK(real_r == -1 && real_elapsed >= 0.15);
    CHECK(close(real_fd) == 0);

    o.fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(o.fd >= 0);
    CHECK(set_timeo(o.fd, SO_SNDTIMEO, 200) == 0);
    o.kind = OP_CONNECT_UNIX;
    CHECK(run_op(&o) == 0);
    fprintf(stderr, "  AF_UNIX connect: libc %.3f s, green %.3f s (%s)\n",
            real_elapsed, o.elapsed, strerror(o.err));
    CHECK(o.r == -1);
    CHECK(o.err == real_err);
    CHECK(o.err == EAGAIN);
    CHECK(o.elapsed >= 0.199 && o.elapsed <= 1.0);
    CHECK(o.ticks_during >= 5);
    CHECK((syscall(SYS_fcntl, o.fd, F_GETFL) & O_NONBLOCK) == 0);
    CHECK(close(o.fd) == 0);
    CHECK(close(queued) == 0);
    CHECK(close(l) == 0);
}

static void accept_two_later(void *arg)
{
    int l = *(int *)arg;

    usleep(100000);
    for (int i = 0; i < 2; i++) {
        int fd = accept(l, NULL, NULL);
        CHECK_OR(fd >= 0, );
        CHECK_OR(close(fd) == 0, );
    }
}

TEST(unix_connect_full_backlog_waits_for_accept)
{
    struct op o = {0};
    struct green *a;
    int queued, l = unix_full_listener(&o, &queued);

    CHECK(l >= 0);
    a = green_spawn(accept_two_later, &l, NULL);
    CHECK(a != NULL);
    o.fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(o.fd >= 0);
    o.kind = OP_CONNECT_UNIX;
    CHECK(run_op(&o) == 0);
    CHECK(green_join(a, 5.0) == 0);
    CHECK(o.r == 0);
    CHECK(o.elapsed >= 0.09 && o.elapsed <= 1.0);
    CHECK(o.ticks_during >= 5);
    CHECK((syscall(SYS_fcntl, o.fd, F_GETFL) & O_NONBLOCK) == 0);
    CHECK(close(o.fd) == 0);
    CHECK(close(queued) == 0);
    CHECK(close(l) == 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    RUN(rcvtimeo_recv_eagain);
    RUN(rcvtimeo_read_eagain);
    RUN(rcvtimeo_changed_after_first_use);
    RUN(rcvtimeo_data_before_timeout);
    RUN(rcvtimeo_accept_eagain);
    RUN(sndtimeo_full_socket);
    RUN(connect_full_backlog_sndtimeo);
    RUN(connect_refused);
    RUN(connect_success_usable);
    RUN(connect_again_eisconn);
    RUN(unix_connect_full_backlog_sndtimeo);
    RUN(unix_connect_full_backlog_waits_for_accept);
    return CHECK_DONE();
}
