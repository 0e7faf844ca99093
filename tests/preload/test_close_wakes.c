/* tests/preload/test_close_wakes.c - close() and dup2() wake the green
 * threads parked on the fd (hard rule 5).
 *
 * A green thread parked in read() on a socket or a pipe, in write() on a
 * full socket, in accept() or in select() is woken with -1/EBADF when
 * another green thread close()s the fd, and also when dup2() puts another
 * file on that number; a poll() waiter returns 1 with POLLNVAL. None of
 * them may hang, and none may read from a new file that reuses the number
 * right after the close. A connect() parked when its socket is closed
 * fails with EBADF and leaves alone the file that reuses the number (it
 * must not put back its saved flags there).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

struct waiter {
    int fd;
    int other_fd;   /* for the closer: what to dup2 onto fd, or -1 */
    int reuse;      /* closer: make a pipe right after the close */
    ssize_t r;
    int err;
    short revents;
    double elapsed;
    int done;
    int reuse_fds[2];
};

static void parked_read(void *arg)
{
    struct waiter *w = arg;
    char buf[16];
    double t0 = check_now();

    errno = 0;
    w->r = read(w->fd, buf, sizeof buf);
    w->err = errno;
    w->elapsed = check_now() - t0;
    w->done = 1;
}

static void parked_write(void *arg)
{
    struct waiter *w = arg;
    size_t n = 8 << 20;
    char *buf = calloc(1, n);
    double t0 = check_now();

    CHECK_OR(buf != NULL, );
    errno = 0;
    w->r = write(w->fd, buf, n);
    w->err = errno;
    w->elapsed = check_now() - t0;
    w->done = 1;
    free(buf);
}

static void parked_accept(void *arg)
{
    struct waiter *w = arg;
    double t0 = check_now();

    errno = 0;
    w->r = accept(w->fd, NULL, NULL);
    w->err = errno;
    w->elapsed = check_now() - t0;
    w->done = 1;
}

static void parked_poll(void *arg)
{
    struct waiter *w = arg;
    struct pollfd p = {w->fd, POLLIN, 0};
    double t0 = check_now();

    errno = 0;
    w->r = poll(&p, 1, 5000);
    w->err = errno;
    w->revents = p.revents;
    w->elapsed = check_now() - t0;
    w->done = 1;
}

static void parked_select(void *arg)
{
    struct waiter *w = arg;
    struct timeval tv = {5, 0};
    fd_set r;
    double t0 = check_now();

    FD_ZERO(&r);
    FD_SET(w->fd, &r);
    errno = 0;
    w->r = select(w->fd + 1, &r, NULL, NULL, &tv);
    w->err = errno;
    w->elapsed = check_now() - t0;
    w->done = 1;
}

/* Lets the waiter park, checks it did, then closes (or dup2s over) its fd. */
static void closer(void *arg)
{
    struct waiter *w = arg;

    CHECK_OR(usleep(50000) == 0, );
    CHECK_OR(!w->done, ); /* it really was parked */
    if (w->other_fd >= 0) {
        CHECK_OR(dup2(w->other_fd, w->fd) == w->fd, );
    } else {
        CHECK_OR(close(w->fd) == 0, );
        if (w->reuse) {
            /* The number is free again: a new pipe likely takes it, and
             * has data at once. The woken reader must not see it. */
            CHECK_OR(pipe(w->reuse_fds) == 0, );
            CHECK_OR(write(w->reuse_fds[1], "new file", 8) == 8, );
        }
    }
}

/* Runs waiter fn on w->fd and a closer; both must finish promptly. */
static int run_pair(green_fn fn, struct waiter *w)
{
    struct green *a, *b;

    w->done = 0;
    w->reuse_fds[0] = w->reuse_fds[1] = -1;
    a = green_spawn(fn, w, NULL);
    b = green_spawn(closer, w, NULL);
    CHECK_OR(a && b, -1);
    CHECK_OR(green_join(b, 5.0) == 0, -1);
    CHECK_OR(green_join(a, 5.0) == 0, -1);
    CHECK_OR(w->done, -1);
    CHECK_OR(w->elapsed < 1.0, -1);
    return 0;
}

TEST(close_wakes_socket_reader)
{
    int sv[2];
    struct waiter w = {0};

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    w.fd = sv[0];
    w.other_fd = -1;
    w.reuse = 1;
    CHECK(run_pair(parked_read, &w) == 0);
    CHECK(w.r == -1);
    CHECK(w.err == EBADF);
    if (w.reuse_fds[0] >= 0) {
        close(w.reuse_fds[0]);
        close(w.reuse_fds[1]);
    }
    CHECK(close(sv[1]) == 0);
}

TEST(close_wakes_pipe_reader)
{
    int p[2];
    struct waiter w = {0};

    CHECK(pipe(p) == 0);
    w.fd = p[0];
    w.other_fd = -1;
    w.reuse = 1;
    CHECK(run_pair(parked_read, &w) == 0);
    CHECK(w.r == -1);
    CHECK(w.err == EBADF);
    if (w.reuse_fds[0] >= 0) {
        close(w.reuse_fds[0]);
        close(w.reuse_fds[1]);
    }
    CHECK(close(p[1]) == 0);
}

TEST(close_wakes_socket_writer)
{
    int sv[2];
    struct waiter w = {0};

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    w.fd = sv[0];
    w.other_fd = -1;
    CHECK(run_pair(parked_write, &w) == 0);
    /* Some bytes may have gone into the buffer before the park: a
     * blocking write then reports the partial count, else EBADF. */
    CHECK(w.r > 0 || (w.r == -1 && w.err == EBADF));
    CHECK(w.r < (8 << 20));
    CHECK(close(sv[1]) == 0);
}

TEST(close_wakes_acceptor)
{
    struct sockaddr_in a;
    struct waiter w = {0};
    int fd = listener(16, &a);

    CHECK(fd >= 0);
    w.fd = fd;
    w.other_fd = -1;
    CHECK(run_pair(parked_accept, &w) == 0);
    CHECK(w.r == -1);
    CHECK(w.err == EBADF);
}

TEST(dup2_wakes_socket_reader)
{
    int sv[2], p[2];
    struct waiter w = {0};

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(pipe(p) == 0);
    /* The file put over the number is readable at once: the reader must
     * get EBADF, not the new file's data. */
    CHECK(write(p[1], "dup2 data", 9) == 9);
    w.fd = sv[0];
    w.other_fd = p[0];
    CHECK(run_pair(parked_read, &w) == 0);
    CHECK(w.r == -1);
    CHECK(w.err == EBADF);
    /* sv[0] is now a copy of the pipe's read end, and works as one. */
    {
        char buf[16];
        int fl = fcntl(sv[0], F_GETFL);
        CHECK(fl >= 0 && (fl & O_ACCMODE) == O_RDONLY);
        CHECK(read(sv[0], buf, sizeof buf) == 9);
        CHECK(memcmp(buf, "dup2 data", 9) == 0);
    }
    CHECK(close(sv[0]) == 0);
    CHECK(close(sv[1]) == 0);
    CHECK(close(p[0]) == 0);
    CHECK(close(p[1]) == 0);
}

TEST(dup2_wakes_pipe_reader)
{
    int p[2], q[2];
    struct waiter w = {0};

    CHECK(pipe(p) == 0);
    CHECK(pipe(q) == 0);
    w.fd = p[0];
    w.other_fd = q[0];
    CHECK(run_pair(parked_read, &w) == 0);
    CHECK(w.r == -1);
    CHECK(w.err == EBADF);
    CHECK(close(p[0]) == 0);
    CHECK(close(p[1]) == 0);
    CHECK(close(q[0]) == 0);
    CHECK(close(q[1]) == 0);
}

TEST(dup3_wakes_socket_reader)
{
    int sv[2], p[2];
    struct waiter w = {0};
    struct green *a;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(pipe(p) == 0);
    w.fd = sv[0];
    a = green_spawn(parked_read, &w, NULL);
    CHECK(a != NULL);
    CHECK(green_sleep(0.05) == 0); /* hub context: lets the reader park */
    CHECK(!w.done);
    CHECK(dup3(p[0], sv[0], O_CLOEXEC) == sv[0]);
    CHECK(green_join(a, 5.0) == 0);
    CHECK(w.r == -1);
    CHECK(w.err == EBADF);
    CHECK(close(sv[0]) == 0);
    CHECK(close(sv[1]) == 0);
    CHECK(close(p[0]) == 0);
    CHECK(close(p[1]) == 0);
}

TEST(close_makes_poll_return_pollnval)
{
    int sv[2];
    struct waiter w = {0};

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    w.fd = sv[0];
    w.other_fd = -1;
    CHECK(run_pair(parked_poll, &w) == 0);
    CHECK(w.r == 1);
    CHECK(w.revents == POLLNVAL);
    CHECK(close(sv[1]) == 0);
}

TEST(close_makes_pipe_poll_return_pollnval)
{
    int p[2];
    struct waiter w = {0};

    CHECK(pipe(p) == 0);
    w.fd = p[0];
    w.other_fd = -1;
    CHECK(run_pair(parked_poll, &w) == 0);
    CHECK(w.r == 1);
    CHECK(w.revents == POLLNVAL);
    CHECK(close(p[1]) == 0);
}

TEST(close_makes_select_fail_ebadf)
{
    int sv[2];
    struct waiter w = {0};

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    w.fd = sv[0];
    w.other_fd = -1;
    CHECK(run_pair(parked_select, &w) == 0);
    CHECK(w.r == -1);
    CHECK(w.err == EBADF);
    CHECK(close(sv[1]) == 0);
}

/* ---- connect parked on a closed socket --------------------------------- */

struct conn_case {
    struct sockaddr_in addr;
    int fd, new_fd;
    int r, err;
    int done;
};

static void parked_connect(void *arg)
{
    struct conn_case *c = arg;

    errno = 0;
    c->r = connect(c->fd, (struct sockaddr *)&c->addr, sizeof c->addr);
    c->err = errno;
    c->done = 1;
}

static void close_and_reuse(void *arg)
{
    struct conn_case *c = arg;

    CHECK_OR(usleep(50000) == 0, );
    CHECK_OR(!c->done, );
    CHECK_OR(close(c->fd) == 0, );
    /* a new non-blocking socket takes the number at once */
    c->new_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
}

TEST(close_wakes_connect_and_spares_reused_number)
{
    struct sockaddr_in a;
    struct conn_case c = {0};
    struct green *g1, *g2;
    int l = listener(0, &a), queued;

    /* a listener with backlog 0 and its queue full: connects hang */
    CHECK(l >= 0);
    queued = tcp_connect(&a);
    CHECK(queued >= 0);

    c.addr = a;
    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c.fd >= 0);
    c.new_fd = -1;
    g1 = green_spawn(parked_connect, &c, NULL);
    g2 = green_spawn(close_and_reuse, &c, NULL);
    CHECK(g1 && g2);
    CHECK(green_join(g2, 5.0) == 0);
    CHECK(green_join(g1, 5.0) == 0);
    CHECK(c.r == -1);
    CHECK(c.err == EBADF);
    CHECK(c.new_fd == c.fd); /* the number was reused (else: no proof) */
    /* the new socket is still non-blocking, in the kernel and in view */
    CHECK(syscall(SYS_fcntl, c.new_fd, F_GETFL) & O_NONBLOCK);
    CHECK(fcntl(c.new_fd, F_GETFL) & O_NONBLOCK);
    CHECK(close(c.new_fd) == 0);
    CHECK(close(queued) == 0);
    CHECK(close(l) == 0);
}

/* Two readers on one fd: both are woken. */
TEST(close_wakes_every_waiter)
{
    int p[2];
    struct waiter w1 = {0}, w2 = {0}, wc = {0};
    struct green *a, *b, *c;

    CHECK(pipe(p) == 0);
    w1.fd = w2.fd = wc.fd = p[0];
    wc.other_fd = -1;
    a = green_spawn(parked_read, &w1, NULL);
    b = green_spawn(parked_poll, &w2, NULL);
    c = green_spawn(closer, &wc, NULL);
    CHECK(a && b && c);
    CHECK(green_join(c, 5.0) == 0);
    CHECK(green_join(a, 5.0) == 0);
    CHECK(green_join(b, 5.0) == 0);
    CHECK(w1.r == -1 && w1.err == EBADF);
    CHECK(w2.r == 1 && w2.revents == POLLNVAL);
    CHECK(close(p[1]) == 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60); /* a hang fails the program instead of stalling the run */
    RUN(close_wakes_socket_reader);
    RUN(close_wakes_pipe_reader);
    RUN(close_wakes_socket_writer);
    RUN(close_wakes_acceptor);
    RUN(dup2_wakes_socket_reader);
    RUN(dup2_wakes_pipe_reader);
    RUN(dup3_wakes_socket_reader);
    RUN(close_makes_poll_return_pollnval);
    RUN(close_makes_pipe_poll_return_pollnval);
    RUN(close_makes_select_fail_ebadf);
    RUN(close_wakes_every_waiter);
    RUN(close_wakes_connect_and_spares_reused_number);
    return CHECK_DONE();
}
