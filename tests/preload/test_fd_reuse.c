/* tests/preload/test_fd_reuse.c - an fd number reused behind libgreen's
 * back is treated as the file it now names.
 *
 * libgreen remembers per fd number what kind of file it is. Not every
 * close reaches the close() wrapper: fclose() of an fdopen'd socket
 * closes inside libc. When such a number is reused by open(), a regular
 * file there must still be read and written normally in a green thread
 * (not fail with ENOTSOCK). And a number looked at while it was closed
 * (read() -> EBADF) must not stay marked "not a socket or pipe": a FIFO
 * opened on it afterwards cooperates (its read parks only the green
 * thread). Numbers received over SCM_RIGHTS cooperate too.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

/* ---- a socket closed by fclose, the number reused by a regular file ---- */

struct reuse {
    int ok;
    int number, reused_as;
};

static void socket_then_file(void *arg)
{
    struct reuse *r = arg;
    char path[] = "/tmp/libgreen_fd_reuse_XXXXXX";
    char buf[64];
    int sv[2], fd;
    FILE *f;

    CHECK_OR(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, );
    /* a green read on it: libgreen now knows sv[0] as a socket */
    CHECK_OR(write(sv[1], "s", 1) == 1, );
    CHECK_OR(read(sv[0], buf, sizeof buf) == 1, );
    r->number = sv[0];
    f = fdopen(sv[0], "r+");
    CHECK_OR(f != NULL, );
    CHECK_OR(fclose(f) == 0, ); /* closes sv[0] inside libc */

    fd = mkstemp(path); /* the lowest free number: sv[0]'s */
    CHECK_OR(fd >= 0, );
    unlink(path);
    r->reused_as = fd;
    errno = 0;
    CHECK_OR(write(fd, "regular file", 12) == 12, );
    CHECK_OR(lseek(fd, 0, SEEK_SET) == 0, );
    CHECK_OR(read(fd, buf, sizeof buf) == 12, );
    CHECK_OR(memcmp(buf, "regular file", 12) == 0, );
    {
        struct iovec iov = {buf, 5};
        CHECK_OR(lseek(fd, 0, SEEK_SET) == 0, );
        CHECK_OR(readv(fd, &iov, 1) == 5, );
        CHECK_OR(writev(fd, &iov, 1) == 5, );
    }
    CHECK_OR(close(fd) == 0, );
    CHECK_OR(close(sv[1]) == 0, );
    r->ok = 1;
}

TEST(file_on_number_of_fclosed_socket)
{
    struct reuse r = {0};

    CHECK(run_beside_ticker(socket_then_file, &r, NULL, NULL) >= 0);
    CHECK(r.reused_as == r.number); /* else the test proved nothing */
    CHECK(r.ok);
}

/* ---- a number seen closed, then a FIFO opened on it -------------------- */

struct fifo_case {
    char path[64];
    int number, reused_as;
    ssize_t r;
    double elapsed;
    int ticks_during;
    int wfd;
};

static void fifo_writer(void *arg)
{
    struct fifo_case *c = arg;

    usleep(50000);
    CHECK_OR(write(c->wfd, "fifo", 4) == 4, );
}

/* Unblocks a reader that wrongly blocked the whole OS thread, so the
 * test fails instead of hanging. */
static void *rescue(void *arg)
{
    struct fifo_case *c = arg;
    int fd;

    usleep(400000);
    fd = open(c->path, O_WRONLY | O_NONBLOCK);
    if (fd >= 0) {
        if (write(fd, "late", 4) < 0)
            perror("rescue");
        close(fd);
    }
    return NULL;
}

static void closed_then_fifo(void *arg)
{
    struct fifo_case *c = arg;
    struct green *w;
    char buf[16];
    int p[2], fd, t0;
    double start;

    CHECK_OR(pipe(p) == 0, );
    CHECK_OR(close(p[1]) == 0, );
    CHECK_OR(close(p[0]) == 0, );
    c->number = p[0];
    errno = 0;
    CHECK_OR(read(p[0], buf, 1) == -1 && errno == EBADF, ); /* looked at */

    fd = open(c->path, O_RDWR); /* a FIFO, on the same number */
    CHECK_OR(fd >= 0, );
    c->reused_as = fd;
    c->wfd = open(c->path, O_WRONLY);
    CHECK_OR(c->wfd >= 0, );
    w = green_spawn(fifo_writer, c, NULL);
    CHECK_OR(w != NULL, );
    t0 = ticks;
    start = check_now();
    c->r = read(fd, buf, sizeof buf); /* must park, not block the thread */
    c->elapsed = check_now() - start;
    c->ticks_during = ticks - t0;
    CHECK_OR(green_join(w, 5.0) == 0, );
    CHECK_OR(close(c->wfd) == 0, );
    CHECK_OR(close(fd) == 0, );
}

TEST(fifo_on_number_seen_closed)
{
    struct fifo_case c = {0};
    pthread_t th;

    snprintf(c.path, sizeof c.path, "/tmp/libgreen_fifo_%d", (int)getpid());
    unlink(c.path);
    CHECK(mkfifo(c.path, 0600) == 0);
    CHECK(pthread_create(&th, NULL, rescue, &c) == 0);
    CHECK(run_beside_ticker(closed_then_fifo, &c, NULL, NULL) >= 0);
    CHECK(pthread_join(th, NULL) == 0);
    unlink(c.path);
    CHECK(c.reused_as == c.number);
    CHECK(c.r == 4);
    CHECK(c.elapsed >= 0.04 && c.elapsed < 0.3);
    CHECK(c.ticks_during >= 3);
}

/* ---- a socket received over SCM_RIGHTS -------------------------------- */

static int send_fd(int via, int fd)
{
    char byte = 'F';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {0};
    struct cmsghdr *c;

    memset(&u, 0, sizeof u);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(via, &m, 0) == 1 ? 0 : -1;
}

static int recv_fd(int via)
{
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {0};
    struct cmsghdr *c;
    int fd = -1;

    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    if (recvmsg(via, &m, 0) != 1)
        return -1;
    c = CMSG_FIRSTHDR(&m);
    if (!c || c->cmsg_type != SCM_RIGHTS)
        return -1;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

struct passed {
    int carrier[2], data[2];
    int got_fd;
    ssize_t r;
    int ticks_during;
    char buf[16];
};

static void passed_writer(void *arg)
{
    struct passed *p = arg;

    usleep(50000);
    CHECK_OR(write(p->data[1], "passed", 6) == 6, );
}

static void receive_and_read(void *arg)
{
    struct passed *p = arg;
    struct green *w;
    int t0;

    /* the green thread parks in recvmsg until the fd arrives */
    p->got_fd = recv_fd(p->carrier[0]);
    CHECK_OR(p->got_fd >= 0, );
    w = green_spawn(passed_writer, p, NULL);
    CHECK_OR(w != NULL, );
    t0 = ticks;
    p->r = read(p->got_fd, p->buf, sizeof p->buf);
    p->ticks_during = ticks - t0;
    CHECK_OR(green_join(w, 5.0) == 0, );
}

static void sender(void *arg)
{
    struct passed *p = arg;

    usleep(30000);
    CHECK_OR(send_fd(p->carrier[1], p->data[0]) == 0, );
}

TEST(socket_received_over_scm_rights)
{
    struct passed p = {0};
    struct green *s;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, p.carrier) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, p.data) == 0);
    s = green_spawn(sender, &p, NULL);
    CHECK(s != NULL);
    CHECK(run_beside_ticker(receive_and_read, &p, NULL, NULL) >= 0);
    CHECK(green_join(s, 5.0) == 0);
    CHECK(p.r == 6 && memcmp(p.buf, "passed", 6) == 0);
    CHECK(p.ticks_during >= 3);
    CHECK(close(p.got_fd) == 0);
    CHECK(close(p.carrier[0]) == 0 && close(p.carrier[1]) == 0);
    CHECK(close(p.data[0]) == 0 && close(p.data[1]) == 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    RUN(file_on_number_of_fclosed_socket);
    RUN(fifo_on_number_seen_closed);
    RUN(socket_received_over_scm_rights);
    return CHECK_DONE();
}
