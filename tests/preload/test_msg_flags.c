/* tests/preload/test_msg_flags.c - recv/send flags keep their meaning in
 * green threads.
 *
 * MSG_WAITALL waits (parked) for the full length on a stream, scattering
 * correctly over several iovecs, and returns the partial count at EOF, as
 * libc does; on datagrams it returns one datagram. MSG_PEEK leaves the
 * data queued; MSG_PEEK|MSG_WAITALL waits until the whole length can be
 * peeked and gives exactly the bytes that are queued (never the first
 * bytes twice). MSG_DONTWAIT on a blocking socket fails with EAGAIN at
 * once. UDP recvfrom parks and reports the sender's address.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

/* Writes pieces to fd, 30 ms apart; shuts the write side down if asked. */
struct dribble {
    int fd;
    const char *pieces[4];
    int shut;
};

static void dribbler(void *arg)
{
    struct dribble *d = arg;

    for (int i = 0; i < 4 && d->pieces[i]; i++) {
        usleep(30000);
        CHECK_OR(write(d->fd, d->pieces[i], strlen(d->pieces[i])) ==
                     (ssize_t)strlen(d->pieces[i]), );
    }
    if (d->shut)
        CHECK_OR(shutdown(d->fd, SHUT_WR) == 0, );
}

struct rcall {
    int fd, flags, use_iov;
    size_t len;
    char buf[64];
    ssize_t r;
    int err;
    double elapsed;
    int ticks_during;
};

static void do_recv(void *arg)
{
    struct rcall *c = arg;
    int t0 = ticks;
    double s = check_now();

    memset(c->buf, 0, sizeof c->buf);
    errno = 0;
    if (c->use_iov) {
        /* three pieces: 3 + 4 + rest */
        struct iovec iov[3] = {{c->buf, 3}, {c->buf + 3, 4}, {c->buf + 7, c->len - 7}};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = 3};
        c->r = recvmsg(c->fd, &m, c->flags);
    } else {
        c->r = recv(c->fd, c->buf, c->len, c->flags);
    }
    c->err = errno;
    c->elapsed = check_now() - s;
    c->ticks_during = ticks - t0;
}

/* do_recv in a green thread, with a dribbler and a ticker beside it. */
static int run_recv(struct rcall *c, struct dribble *d)
{
    return run_beside_ticker(do_recv, c, dribbler, d) < 0 ? -1 : 0;
}

TEST(waitall_waits_for_full_length)
{
    struct rcall c = {0};
    struct dribble d = {0, {"abc", "defg", "hij", NULL}, 0};
    int a, b;

    CHECK(tcp_pair(&a, &b) == 0);
    c.fd = a;
    c.len = 10;
    c.flags = MSG_WAITALL;
    d.fd = b;
    CHECK(run_recv(&c, &d) == 0);
    CHECK(c.r == 10);
    CHECK(memcmp(c.buf, "abcdefghij", 10) == 0);
    CHECK(c.elapsed >= 0.08);
    CHECK(c.ticks_during >= 5);
    CHECK(close(a) == 0 && close(b) == 0);
}

TEST(waitall_scatters_over_iovecs)
{
    struct rcall c = {0};
    struct dribble d = {0, {"ab", "cdefgh", "ijkl", NULL}, 0};
    int sv[2];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    c.fd = sv[0];
    c.len = 12;
    c.flags = MSG_WAITALL;
    c.use_iov = 1;
    d.fd = sv[1];
    CHECK(run_recv(&c, &d) == 0);
    CHECK(c.r == 12);
    CHECK(memcmp(c.buf, "abcdefghijkl", 12) == 0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

TEST(waitall_partial_at_eof)
{
    struct rcall c = {0};
    struct dribble d = {0, {"abc", "de", NULL}, 1};
    int a, b;

    CHECK(tcp_pair(&a, &b) == 0);
    c.fd = a;
    c.len = 10;
    c.flags = MSG_WAITALL;
    d.fd = b;
    CHECK(run_recv(&c, &d) == 0);
    CHECK(c.r == 5);
    CHECK(memcmp(c.buf, "abcde", 5) == 0);
    CHECK(close(a) == 0 && close(b) == 0);
}

TEST(waitall_on_datagrams_returns_one)
{
    struct rcall c = {0};
    struct dribble d = {0, {"one", "two", NULL}, 0};
    int sv[2];

    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
    c.fd = sv[0];
    c.len = 10;
    c.flags = MSG_WAITALL;
    d.fd = sv[1];
    CHECK(run_recv(&c, &d) == 0);
    CHECK(c.r == 3 && memcmp(c.buf, "one", 3) == 0);
    CHECK(recv(sv[0], c.buf, sizeof c.buf, 0) == 3); /* main: "two" is there */
    CHECK(memcmp(c.buf, "two", 3) == 0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

TEST(peek_leaves_data_queued)
{
    struct rcall c = {0};
    struct dribble d = {0, {"peekaboo", NULL}, 0};
    char buf[16];
    int a, b;

    CHECK(tcp_pair(&a, &b) == 0);
    c.fd = a;
    c.len = sizeof buf;
    c.flags = MSG_PEEK;
    d.fd = b;
    CHECK(run_recv(&c, &d) == 0);
    CHECK(c.r == 8 && memcmp(c.buf, "peekaboo", 8) == 0);
    CHECK(c.ticks_during >= 3); /* it parked until the data came */
    CHECK(read(a, buf, sizeof buf) == 8 && memcmp(buf, "peekaboo", 8) == 0);
    CHECK(close(a) == 0 && close(b) == 0);
}

TEST(peek_waitall_sees_each_byte_once)
{
    struct rcall c = {0};
    struct dribble d = {0, {"abc", "defg", "hijk", NULL}, 0};
    char buf[16];
    int a, b;

    CHECK(tcp_pair(&a, &b) == 0);
    c.fd = a;
    c.len = 10;
    c.flags = MSG_PEEK | MSG_WAITALL;
    d.fd = b;
    CHECK(run_recv(&c, &d) == 0);
    CHECK(c.r == 10);
    CHECK(memcmp(c.buf, "abcdefghij", 10) == 0);
    CHECK(c.elapsed >= 0.08 && c.elapsed < 1.0);
    CHECK(c.ticks_during >= 5);
    /* nothing was consumed */
    usleep(10000);
    CHECK(recv(a, buf, sizeof buf, 0) == 11);
    CHECK(memcmp(buf, "abcdefghijk", 11) == 0);
    CHECK(close(a) == 0 && close(b) == 0);
}

/* libc's MSG_PEEK|MSG_WAITALL when the peer stops short: what is queued. */
struct libc_peek {
    int fd;
    ssize_t r;
    char buf[16];
};

static void *peek_writer(void *arg)
{
    int fd = *(int *)arg;

    usleep(30000);
    if (write(fd, "abc", 3) != 3)
        perror("peek_writer");
    usleep(30000);
    shutdown(fd, SHUT_WR);
    return NULL;
}

TEST(peek_waitall_at_eof_matches_libc)
{
    struct rcall c = {0};
    struct dribble d = {0, {"abc", NULL}, 1};
    struct libc_peek lp = {0};
    pthread_t th;
    int a, b;

    CHECK(tcp_pair(&a, &b) == 0);
    CHECK(pthread_create(&th, NULL, peek_writer, &b) == 0);
    lp.r = recv(a, lp.buf, 10, MSG_PEEK | MSG_WAITALL); /* main: libc */
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(close(a) == 0 && close(b) == 0);

    CHECK(tcp_pair(&a, &b) == 0);
    c.fd = a;
    c.len = 10;
    c.flags = MSG_PEEK | MSG_WAITALL;
    d.fd = b;
    CHECK(run_recv(&c, &d) == 0);
    CHECK(c.r == lp.r);
    CHECK(c.r == 3 && memcmp(c.buf, "abc", 3) == 0);
    CHECK(c.elapsed < 1.0);
    CHECK(close(a) == 0 && close(b) == 0);
}

TEST(dontwait_fails_at_once)
{
    struct rcall c = {0};
    struct dribble d = {0, {NULL}, 0};
    int sv[2];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    c.fd = sv[0];
    c.len = 8;
    c.flags = MSG_DONTWAIT;
    d.fd = sv[1];
    CHECK(run_recv(&c, &d) == 0);
    CHECK(c.r == -1 && c.err == EAGAIN);
    CHECK(c.elapsed < 0.05);
    CHECK(c.ticks_during == 0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

/* ---- UDP -------------------------------------------------------------- */

struct udp {
    int rfd, sfd;
    struct sockaddr_in to, from, sender;
    socklen_t fromlen;
    ssize_t r;
    char buf[32];
    int ticks_during;
};

static void udp_receiver(void *arg)
{
    struct udp *u = arg;
    int t0 = ticks;

    u->fromlen = sizeof u->from;
    u->r = recvfrom(u->rfd, u->buf, sizeof u->buf, 0,
                    (struct sockaddr *)&u->from, &u->fromlen);
    u->ticks_during = ticks - t0;
}

static void udp_sender(void *arg)
{
    struct udp *u = arg;

    usleep(50000);
    CHECK_OR(sendto(u->sfd, "datagram", 8, 0, (struct sockaddr *)&u->to,
                    sizeof u->to) == 8, );
}

TEST(udp_recvfrom_parks_and_reports_sender)
{
    struct udp u = {0};
    socklen_t len = sizeof u.to;

    u.rfd = socket(AF_INET, SOCK_DGRAM, 0);
    u.sfd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(u.rfd >= 0 && u.sfd >= 0);
    u.to.sin_family = AF_INET;
    u.to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(u.rfd, (struct sockaddr *)&u.to, sizeof u.to) == 0);
    CHECK(getsockname(u.rfd, (struct sockaddr *)&u.to, &len) == 0);
    u.sender = u.to;
    u.sender.sin_port = 0;
    CHECK(bind(u.sfd, (struct sockaddr *)&u.sender, sizeof u.sender) == 0);
    len = sizeof u.sender;
    CHECK(getsockname(u.sfd, (struct sockaddr *)&u.sender, &len) == 0);

    CHECK(run_beside_ticker(udp_receiver, &u, udp_sender, &u) >= 0);
    CHECK(u.r == 8 && memcmp(u.buf, "datagram", 8) == 0);
    CHECK(u.fromlen == sizeof u.from);
    CHECK(u.from.sin_port == u.sender.sin_port);
    CHECK(u.from.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
    CHECK(u.ticks_during >= 3);
    CHECK(close(u.rfd) == 0 && close(u.sfd) == 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    RUN(waitall_waits_for_full_length);
    RUN(waitall_scatters_over_iovecs);
    RUN(waitall_partial_at_eof);
    RUN(waitall_on_datagrams_returns_one);
    RUN(peek_leaves_data_queued);
    RUN(peek_waitall_sees_each_byte_once);
    RUN(peek_waitall_at_eof_matches_libc);
    RUN(dontwait_fails_at_once);
    RUN(udp_recvfrom_parks_and_reports_sender);
    return CHECK_DONE();
}
