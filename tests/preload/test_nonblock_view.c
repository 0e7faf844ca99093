/* tests/preload/test_nonblock_view.c - the caller's own O_NONBLOCK is
 * honoured, and libgreen's is never shown (hard rule 3).
 *
 * An fd the caller made non-blocking (fcntl O_NONBLOCK, ioctl FIONBIO,
 * SOCK_NONBLOCK, accept4/pipe2 flags) gives -1/EAGAIN at once from
 * read/recv/accept in a green thread instead of parking. fcntl(F_GETFL)
 * shows exactly what the caller set, also on a listening socket a green
 * thread accepted on (where libgreen keeps O_NONBLOCK set in the kernel),
 * and a blocking accept() on that socket from the main context still
 * blocks until a connection arrives (made by an OS thread after a delay)
 * instead of failing with EAGAIN.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

/* O_NONBLOCK as the caller sees it, through the fcntl wrapper. */
static int view_nb(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl < 0 ? -1 : (fl & O_NONBLOCK) != 0;
}

/* ---- non-blocking fds fail at once in green threads ------------------- */

enum { OP_READ, OP_RECV, OP_ACCEPT, OP_ACCEPT4, OP_READV, OP_RECVMSG };

struct op {
    int fd, kind;
    ssize_t r;
    int err;
    double elapsed;
    int done;
};

static void do_op(void *arg)
{
    struct op *o = arg;
    char buf[32];
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    double t0 = check_now();

    errno = 0;
    switch (o->kind) {
    case OP_READ: o->r = read(o->fd, buf, sizeof buf); break;
    case OP_RECV: o->r = recv(o->fd, buf, sizeof buf, 0); break;
    case OP_ACCEPT: o->r = accept(o->fd, NULL, NULL); break;
    case OP_ACCEPT4: o->r = accept4(o->fd, NULL, NULL, SOCK_CLOEXEC); break;
    case OP_READV: o->r = readv(o->fd, &iov, 1); break;
    case OP_RECVMSG: o->r = recvmsg(o->fd, &m, 0); break;
    }
    o->err = errno;
    o->elapsed = check_now() - t0;
    o->done = 1;
}

/* Runs op kind on fd in a green thread: it must fail with EAGAIN at once.
 * If it parks instead (the bug), closing fd wakes it so the test ends. */
static int expect_eagain(int fd, int kind)
{
    struct op *o = calloc(1, sizeof *o);
    struct green *g;
    int ok;

    CHECK_OR(o != NULL, -1);
    o->fd = fd;
    o->kind = kind;
    g = green_spawn(do_op, o, NULL);
    CHECK_OR(g != NULL, -1);
    if (green_join(g, 0.5) != 0) {
        /* o stays allocated: the parked thread still owns it */
        fprintf(stderr, "op %d on fd %d parked instead of EAGAIN\n", kind, fd);
        check_failed_ = 1;
        return -1;
    }
    ok = o->r == -1 && o->err == EAGAIN && o->elapsed < 0.05;
    if (!ok)
        fprintf(stderr, "op %d on fd %d: r=%zd errno=%d after %.3f s\n", kind,
                fd, o->r, o->err, o->elapsed);
    free(o);
    CHECK_OR(ok, -1);
    return 0;
}

TEST(fcntl_nonblock_socket)
{
    int sv[2];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(view_nb(sv[0]) == 0);
    CHECK(fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK) == 0);
    CHECK(view_nb(sv[0]) == 1);
    CHECK(kernel_nb(sv[0]) == 1);
    CHECK(expect_eagain(sv[0], OP_READ) == 0);
    CHECK(expect_eagain(sv[0], OP_RECV) == 0);
    CHECK(expect_eagain(sv[0], OP_READV) == 0);
    CHECK(expect_eagain(sv[0], OP_RECVMSG) == 0);
    /* back to blocking: shown as such */
    CHECK(fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) & ~O_NONBLOCK) == 0);
    CHECK(view_nb(sv[0]) == 0);
    CHECK(kernel_nb(sv[0]) == 0);
    CHECK(close(sv[0]) == 0);
    CHECK(close(sv[1]) == 0);
}

TEST(ioctl_fionbio_socket)
{
    int sv[2], on = 1, off = 0;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(ioctl(sv[1], FIONBIO, &on) == 0);
    CHECK(view_nb(sv[1]) == 1);
    CHECK(kernel_nb(sv[1]) == 1);
    CHECK(expect_eagain(sv[1], OP_READ) == 0);
    CHECK(expect_eagain(sv[1], OP_RECV) == 0);
    CHECK(ioctl(sv[1], FIONBIO, &off) == 0);
    CHECK(view_nb(sv[1]) == 0);
    CHECK(kernel_nb(sv[1]) == 0);
    CHECK(close(sv[0]) == 0);
    CHECK(close(sv[1]) == 0);
}

TEST(sock_nonblock_at_creation)
{
    struct sockaddr_in addr;
    int sv[2], l;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    CHECK(view_nb(sv[0]) == 1 && view_nb(sv[1]) == 1);
    CHECK(expect_eagain(sv[0], OP_READ) == 0);
    CHECK(expect_eagain(sv[1], OP_RECV) == 0);
    CHECK(close(sv[0]) == 0);
    CHECK(close(sv[1]) == 0);

    l = listener_type(SOCK_NONBLOCK, 16, &addr);
    CHECK(l >= 0);
    CHECK(view_nb(l) == 1);
    CHECK(expect_eagain(l, OP_ACCEPT) == 0);
    CHECK(expect_eagain(l, OP_ACCEPT4) == 0);
    CHECK(view_nb(l) == 1);
    CHECK(close(l) == 0);
}

TEST(fcntl_nonblock_listener)
{
    struct sockaddr_in addr;
    int l = listener(16, &addr);

    CHECK(l >= 0);
    CHECK(fcntl(l, F_SETFL, O_NONBLOCK) == 0);
    CHECK(expect_eagain(l, OP_ACCEPT) == 0);
    CHECK(close(l) == 0);
}

/* A socket classified lazily (its number was never seen being created, as
 * with one inherited or received over SCM_RIGHTS): made with the raw
 * system call, so no wrapper recorded it. */
TEST(nonblock_fd_not_created_by_us)
{
    int sv[2];

    CHECK(syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    CHECK(expect_eagain(sv[0], OP_READ) == 0);
    CHECK(view_nb(sv[0]) == 1);
    CHECK(close(sv[0]) == 0);
    CHECK(close(sv[1]) == 0);
}

TEST(pipe2_nonblock)
{
    int p[2];

    CHECK(pipe2(p, O_NONBLOCK) == 0);
    CHECK(view_nb(p[0]) == 1);
    CHECK(expect_eagain(p[0], OP_READ) == 0);
    CHECK(close(p[0]) == 0);
    CHECK(close(p[1]) == 0);
}

TEST(accept4_sock_nonblock_gives_nonblocking_socket)
{
    struct sockaddr_in addr;
    int l = listener(16, &addr), c, s;

    CHECK(l >= 0);
    c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c >= 0);
    CHECK(connect(c, (struct sockaddr *)&addr, sizeof addr) == 0);
    s = accept4(l, NULL, NULL, SOCK_NONBLOCK);
    CHECK(s >= 0);
    CHECK(view_nb(s) == 1);
    CHECK(expect_eagain(s, OP_READ) == 0);
    CHECK(close(s) == 0);
    CHECK(close(c) == 0);
    CHECK(close(l) == 0);
}

/* ---- the listening socket libgreen made non-blocking ------------------ */

static int g_listen;
static int g_accepted_fd = -1;
static int g_view_in_green = -1;

static void green_acceptor(void *arg)
{
    (void)arg;
    g_accepted_fd = accept(g_listen, NULL, NULL);
    g_view_in_green = view_nb(g_listen);
}

struct delayed {
    struct sockaddr_in addr;
    int delay_ms;
    int ok;
};

/* An OS thread without a hub: connects after a delay. */
static void *os_thread_connector(void *arg)
{
    struct delayed *d = arg;
    int c;

    usleep((useconds_t)d->delay_ms * 1000);
    c = socket(AF_INET, SOCK_STREAM, 0);
    if (c >= 0 && connect(c, (struct sockaddr *)&d->addr, sizeof d->addr) == 0)
        d->ok = 1;
    if (c >= 0)
        close(c);
    return NULL;
}

/* Makes g_listen a listener a green thread has accepted on. */
static int green_accept_once(struct sockaddr_in *addr)
{
    struct green *a, *b;

    g_listen = listener(16, addr);
    CHECK_OR(g_listen >= 0, -1);
    a = green_spawn(green_acceptor, NULL, NULL);
    b = green_spawn(green_connect_once, addr, NULL);
    CHECK_OR(a && b, -1);
    CHECK_OR(green_join(a, 5.0) == 0, -1);
    CHECK_OR(green_join(b, 5.0) == 0, -1);
    CHECK_OR(g_accepted_fd >= 0, -1);
    return 0;
}

TEST(listener_view_stays_blocking)
{
    struct sockaddr_in addr;
    int on = 1, off = 0;

    CHECK(green_accept_once(&addr) == 0);
    /* The kernel flag is libgreen's (else this test proves nothing)... */
    CHECK(kernel_nb(g_listen) == 1);
    /* ...the caller still sees its blocking socket, everywhere. */
    CHECK(g_view_in_green == 0);
    CHECK(view_nb(g_listen) == 0);
    CHECK(fcntl(g_listen, F_GETFL) == O_RDWR);
    /* The accepted socket is blocking, in the kernel too. */
    CHECK(view_nb(g_accepted_fd) == 0);
    CHECK(kernel_nb(g_accepted_fd) == 0);

    /* The caller's own changes show, and the internal flag stays put. */
    CHECK(fcntl(g_listen, F_SETFL, O_NONBLOCK) == 0);
    CHECK(view_nb(g_listen) == 1);
    CHECK(expect_eagain(g_listen, OP_ACCEPT) == 0);
    CHECK(fcntl(g_listen, F_SETFL, 0) == 0);
    CHECK(view_nb(g_listen) == 0);
    CHECK(kernel_nb(g_listen) == 1);
    CHECK(ioctl(g_listen, FIONBIO, &on) == 0);
    CHECK(view_nb(g_listen) == 1);
    CHECK(ioctl(g_listen, FIONBIO, &off) == 0);
    CHECK(view_nb(g_listen) == 0);
    CHECK(kernel_nb(g_listen) == 1);

    /* dup shares the open file: the copy shows the same view. */
    {
        int d = dup(g_listen);
        int d2 = fcntl(g_listen, F_DUPFD_CLOEXEC, 100);
        CHECK(d >= 0 && d2 >= 100);
        CHECK(view_nb(d) == 0);
        CHECK(view_nb(d2) == 0);
        CHECK(close(d) == 0);
        CHECK(close(d2) == 0);
    }
    CHECK(close(g_accepted_fd) == 0);
    CHECK(close(g_listen) == 0);
}

TEST(listener_main_context_accept_blocks)
{
    struct sockaddr_in addr;
    struct delayed d = {{0}, 200, 0};
    pthread_t th;
    double t0, elapsed;
    int fd;

    CHECK(green_accept_once(&addr) == 0);
    CHECK(kernel_nb(g_listen) == 1);
    d.addr = addr;
    CHECK(pthread_create(&th, NULL, os_thread_connector, &d) == 0);
    t0 = check_now();
    errno = 0;
    fd = accept(g_listen, NULL, NULL); /* main context: libc's blocking accept */
    elapsed = check_now() - t0;
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(fd >= 0);
    CHECK(d.ok);
    CHECK(elapsed >= 0.15 && elapsed < 2.0);
    CHECK(kernel_nb(fd) == 0);
    CHECK(close(fd) == 0);
    CHECK(close(g_accepted_fd) == 0);
    CHECK(close(g_listen) == 0);
}

/* The same from an OS thread that has no hub at all. */
struct accept_args {
    int fd, r, err;
    double elapsed;
};

static void *os_thread_acceptor(void *arg)
{
    struct accept_args *a = arg;
    double t0 = check_now();

    errno = 0;
    a->r = accept(a->fd, NULL, NULL);
    a->err = errno;
    a->elapsed = check_now() - t0;
    return NULL;
}

TEST(listener_other_os_thread_accept_blocks)
{
    struct sockaddr_in addr;
    struct delayed d = {{0}, 200, 0};
    struct accept_args a = {0};
    pthread_t th1, th2;

    CHECK(green_accept_once(&addr) == 0);
    d.addr = addr;
    a.fd = g_listen;
    CHECK(pthread_create(&th1, NULL, os_thread_acceptor, &a) == 0);
    CHECK(pthread_create(&th2, NULL, os_thread_connector, &d) == 0);
    CHECK(pthread_join(th1, NULL) == 0);
    CHECK(pthread_join(th2, NULL) == 0);
    CHECK(a.r >= 0);
    CHECK(a.elapsed >= 0.15 && a.elapsed < 2.0);
    CHECK(close(a.r) == 0);
    CHECK(close(g_accepted_fd) == 0);
    CHECK(close(g_listen) == 0);
}

/* With the caller's own O_NONBLOCK, the main context gets EAGAIN again. */
TEST(listener_main_context_nonblocking_eagain)
{
    struct sockaddr_in addr;
    double t0;
    int fd;

    CHECK(green_accept_once(&addr) == 0);
    CHECK(fcntl(g_listen, F_SETFL, O_NONBLOCK) == 0);
    t0 = check_now();
    errno = 0;
    fd = accept(g_listen, NULL, NULL);
    CHECK(fd == -1 && errno == EAGAIN);
    CHECK(check_now() - t0 < 0.05);
    CHECK(close(g_accepted_fd) == 0);
    CHECK(close(g_listen) == 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    RUN(fcntl_nonblock_socket);
    RUN(ioctl_fionbio_socket);
    RUN(sock_nonblock_at_creation);
    RUN(fcntl_nonblock_listener);
    RUN(nonblock_fd_not_created_by_us);
    RUN(pipe2_nonblock);
    RUN(accept4_sock_nonblock_gives_nonblocking_socket);
    RUN(listener_view_stays_blocking);
    RUN(listener_main_context_accept_blocks);
    RUN(listener_other_os_thread_accept_blocks);
    RUN(listener_main_context_nonblocking_eagain);
    return CHECK_DONE();
}
