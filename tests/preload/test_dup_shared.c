/* tests/preload/test_dup_shared.c - two fd numbers, one open file.
 *
 * O_NONBLOCK and socket timeouts belong to the open file, not to the
 * number: after dup(), a change made through one number shows through the
 * other, exactly as without libgreen. And a listening socket a green
 * thread accepts on through one number must not look (or act)
 * non-blocking through its dup.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

struct rd {
    int fd;
    ssize_t r;
    int err;
    double took;
};

static void green_read(void *arg)
{
    struct rd *x = arg;
    char c;
    double t0 = check_now();

    x->r = read(x->fd, &c, 1);
    x->err = errno;
    x->took = check_now() - t0;
}

/* O_NONBLOCK set through the dup: a read through the original number
 * fails at once with EAGAIN, as libc's does. */
TEST(nonblock_through_dup)
{
    int sv[2], d;
    struct rd x = {0};
    struct green *g;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    x.fd = sv[0];
    /* First use, so libgreen has an entry for sv[0] already. */
    g = green_spawn(green_read, &x, NULL);
    CHECK(write(sv[1], "x", 1) == 1);
    CHECK(green_join(g, -1) == 0 && x.r == 1);
    d = dup(sv[0]);
    CHECK(d >= 0);
    CHECK(fcntl(d, F_SETFL, fcntl(d, F_GETFL) | O_NONBLOCK) == 0);
    g = green_spawn(green_read, &x, NULL);
    if (green_join(g, 2) < 0) { /* parked instead of failing at once */
        CHECK(write(sv[1], "x", 1) == 1);
        CHECK(green_join(g, -1) == 0);
        CHECK(!"read parked although the file is non-blocking");
    }
    CHECK(x.r == -1 && x.err == EAGAIN);
    CHECK(x.took < 0.05);
    close(d);
    close(sv[0]);
    close(sv[1]);
}

/* SO_RCVTIMEO set through the dup bounds a read through the original. */
TEST(timeout_through_dup)
{
    int sv[2], d;
    struct rd x = {0};
    struct green *g;
    struct timeval tv = {0, 200000};

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    x.fd = sv[0];
    g = green_spawn(green_read, &x, NULL);
    CHECK(write(sv[1], "x", 1) == 1);
    CHECK(green_join(g, -1) == 0 && x.r == 1);
    d = dup(sv[0]);
    CHECK(d >= 0);
    CHECK(setsockopt(d, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    g = green_spawn(green_read, &x, NULL);
    if (green_join(g, 3) < 0) { /* the timeout was not seen */
        CHECK(write(sv[1], "x", 1) == 1);
        CHECK(green_join(g, -1) == 0);
        CHECK(!"SO_RCVTIMEO set through the dup was ignored");
    }
    CHECK(x.r == -1 && x.err == EAGAIN);
    CHECK(x.took >= 0.19 && x.took < 1.0);
    close(d);
    close(sv[0]);
    close(sv[1]);
}

static struct sockaddr_in laddr;

static void green_accept_one(void *arg)
{
    int *out = arg;

    *out = accept(*out, NULL, NULL);
}

static void *late_connector(void *arg)
{
    int fd;

    usleep(200000);
    fd = tcp_connect(&laddr);
    usleep(100000);
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* A green accept through one number; through the dup the socket stays
 * blocking: F_GETFL says so and an accept outside green threads waits. */
TEST(listener_dup_stays_blocking)
{
    int l = listener(16, &laddr), d, slot, c, fl;
    struct green *g;
    pthread_t t;
    double t0;

    CHECK(l >= 0);
    d = dup(l);
    CHECK(d >= 0);
    slot = l;
    g = green_spawn(green_accept_one, &slot, NULL);
    c = tcp_connect(&laddr);
    CHECK(c >= 0);
    CHECK(green_join(g, -1) == 0 && slot >= 0);
    close(slot);
    close(c);
    fl = (int)syscall(SYS_fcntl, d, F_GETFL);
    CHECK(!(fl & O_NONBLOCK)); /* the kernel's flag, not just our view */
    CHECK(pthread_create(&t, NULL, late_connector, NULL) == 0);
    t0 = check_now();
    c = accept(d, NULL, NULL); /* main context: must block, not EAGAIN */
    CHECK(c >= 0);
    CHECK(check_now() - t0 >= 0.15);
    pthread_join(t, NULL);
    close(c);
    close(d);
    close(l);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    RUN(nonblock_through_dup);
    RUN(timeout_through_dup);
    RUN(listener_dup_stays_blocking);
    return CHECK_DONE();
}
