/* tests/preload/test_errno.c - errno inside green threads is libc's.
 *
 * Common failures give the same return value and errno in a green thread
 * as libc gives for the same call outside one: EBADF on a closed fd, EPIPE
 * writing to a socket whose peer closed (SIGPIPE ignored), ENOTSOCK for
 * socket calls on pipes and files, ECONNREFUSED, ENOTCONN, EINVAL,
 * ECONNRESET (also for a reader parked when the reset arrives). And on
 * success errno is left alone, as libc leaves it, even when the call
 * parked and other green threads set errno meanwhile: no internal EAGAIN
 * or EINPROGRESS leaks out, and no other thread's errno either.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

/* ---- failures: same result as libc ----------------------------------- */

enum {
    E_READ_CLOSED, E_WRITE_CLOSED, E_WRITE_PEER_CLOSED_UNIX,
    E_WRITE_PEER_CLOSED_TCP, E_RECV_PIPE, E_SEND_PIPE, E_RECV_FILE,
    E_ACCEPT_PIPE, E_ACCEPT_NOT_LISTENING, E_CONNECT_REFUSED,
    E_CONNECT_BAD_FAMILY, E_READ_UNCONNECTED, E_WRITE_UNCONNECTED,
    E_READ_RESET, E_READ_DIRECTORY, E_SELECT_NEG,
    E_NCASES
};

static const char *case_name[E_NCASES] = {
    "read closed fd", "write closed fd", "write unix peer closed",
    "write tcp peer closed", "recv on pipe", "send on pipe", "recv on file",
    "accept on pipe", "accept not listening", "connect refused",
    "connect bad family", "read unconnected tcp", "write unconnected tcp",
    "read after reset", "read directory", "select negative nfds",
};

struct outcome {
    long r;
    int err;
};

/* Sets up case c, runs its call, cleans up. Same code in both contexts. */
static struct outcome run_case(int c)
{
    struct outcome o = {-99, 0};
    struct sockaddr_in addr;
    char buf[64] = "data";
    int p[2] = {-1, -1}, s[2] = {-1, -1}, fd = -1;

    switch (c) {
    case E_READ_CLOSED:
    case E_WRITE_CLOSED:
        if (pipe(p) < 0)
            return o;
        close(p[0]);
        close(p[1]);
        errno = 0;
        o.r = c == E_READ_CLOSED ? read(p[0], buf, sizeof buf)
                                 : write(p[1], buf, 4);
        o.err = errno;
        return o;
    case E_WRITE_PEER_CLOSED_UNIX:
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) < 0)
            return o;
        close(s[1]);
        errno = 0;
        o.r = write(s[0], buf, 4);
        o.err = errno;
        close(s[0]);
        return o;
    case E_WRITE_PEER_CLOSED_TCP:
        if (tcp_pair(&s[0], &s[1]) < 0)
            return o;
        close(s[1]);
        usleep(20000);          /* the FIN arrives: CLOSE_WAIT */
        write(s[0], buf, 4);    /* accepted; the peer answers with RST */
        usleep(20000);
        errno = 0;
        o.r = write(s[0], buf, 4);
        o.err = errno;
        close(s[0]);
        return o;
    case E_RECV_PIPE:
    case E_SEND_PIPE:
        if (pipe(p) < 0)
            return o;
        errno = 0;
        o.r = c == E_RECV_PIPE ? recv(p[0], buf, sizeof buf, 0)
                               : send(p[1], buf, 4, 0);
        o.err = errno;
        close(p[0]);
        close(p[1]);
        return o;
    case E_RECV_FILE:
        fd = open("/proc/self/stat", O_RDONLY);
        errno = 0;
        o.r = recv(fd, buf, sizeof buf, 0);
        o.err = errno;
        close(fd);
        return o;
    case E_ACCEPT_PIPE:
        if (pipe(p) < 0)
            return o;
        errno = 0;
        o.r = accept(p[0], NULL, NULL);
        o.err = errno;
        close(p[0]);
        close(p[1]);
        return o;
    case E_ACCEPT_NOT_LISTENING:
        fd = socket(AF_INET, SOCK_STREAM, 0);
        errno = 0;
        o.r = accept(fd, NULL, NULL);
        o.err = errno;
        close(fd);
        return o;
    case E_CONNECT_REFUSED:
    case E_CONNECT_BAD_FAMILY:
        fd = listener(1, &addr);
        close(fd); /* the port is closed now */
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c == E_CONNECT_BAD_FAMILY)
            addr.sin_family = AF_INET6;
        errno = 0;
        o.r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
        o.err = errno;
        close(fd);
        return o;
    case E_READ_UNCONNECTED:
    case E_WRITE_UNCONNECTED:
        fd = socket(AF_INET, SOCK_STREAM, 0);
        errno = 0;
        o.r = c == E_READ_UNCONNECTED ? read(fd, buf, sizeof buf)
                                      : write(fd, buf, 4);
        o.err = errno;
        close(fd);
        return o;
    case E_READ_RESET:
        if (tcp_pair(&s[0], &s[1]) < 0)
            return o;
        write(s[0], buf, 4);
        usleep(20000);
        close(s[1]); /* unread data: the close sends RST */
        usleep(20000);
        errno = 0;
        o.r = read(s[0], buf, sizeof buf);
        o.err = errno;
        close(s[0]);
        return o;
    case E_READ_DIRECTORY:
        fd = open("/", O_RDONLY | O_DIRECTORY);
        errno = 0;
        o.r = read(fd, buf, sizeof buf);
        o.err = errno;
        close(fd);
        return o;
    case E_SELECT_NEG: {
        struct timeval tv = {0, 100000};
        errno = 0;
        o.r = select(-1, NULL, NULL, NULL, &tv);
        o.err = errno;
        return o;
    }
    }
    return o;
}

static struct outcome green_out[E_NCASES];

static void run_all_green(void *arg)
{
    (void)arg;
    for (int c = 0; c < E_NCASES; c++)
        green_out[c] = run_case(c);
}

TEST(failures_match_libc)
{
    struct outcome libc_out[E_NCASES];
    struct green *g;
    int mismatches = 0;

    for (int c = 0; c < E_NCASES; c++)
        libc_out[c] = run_case(c);
    g = green_spawn(run_all_green, NULL, NULL);
    CHECK(g != NULL);
    CHECK(green_join(g, 10.0) == 0);
    for (int c = 0; c < E_NCASES; c++) {
        if (libc_out[c].r != green_out[c].r || libc_out[c].err != green_out[c].err) {
            fprintf(stderr, "  %s: libc %ld/%s, green %ld/%s\n", case_name[c],
                    libc_out[c].r, strerror(libc_out[c].err), green_out[c].r,
                    strerror(green_out[c].err));
            mismatches++;
        }
    }
    CHECK(mismatches == 0);
    /* and they are the errors the man pages promise */
    CHECK(green_out[E_READ_CLOSED].err == EBADF);
    CHECK(green_out[E_WRITE_CLOSED].err == EBADF);
    CHECK(green_out[E_WRITE_PEER_CLOSED_UNIX].err == EPIPE);
    CHECK(green_out[E_WRITE_PEER_CLOSED_TCP].err == EPIPE);
    CHECK(green_out[E_RECV_PIPE].err == ENOTSOCK);
    CHECK(green_out[E_SEND_PIPE].err == ENOTSOCK);
    CHECK(green_out[E_RECV_FILE].err == ENOTSOCK);
    CHECK(green_out[E_ACCEPT_PIPE].err == ENOTSOCK);
    CHECK(green_out[E_ACCEPT_NOT_LISTENING].err == EINVAL);
    CHECK(green_out[E_CONNECT_REFUSED].err == ECONNREFUSED);
    CHECK(green_out[E_READ_UNCONNECTED].err == ENOTCONN);
    CHECK(green_out[E_READ_RESET].err == ECONNRESET);
    CHECK(green_out[E_READ_DIRECTORY].err == EISDIR);
    CHECK(green_out[E_SELECT_NEG].err == EINVAL);
    for (int c = 0; c < E_NCASES; c++)
        CHECK(green_out[c].r == -1);
}

/* A reader parked when the reset arrives gets ECONNRESET. */
struct parked_read {
    int fd;
    ssize_t r;
    int err;
};

static void parked_reader(void *arg)
{
    struct parked_read *p = arg;
    char buf[16];

    errno = 0;
    p->r = read(p->fd, buf, sizeof buf);
    p->err = errno;
}

TEST(parked_reader_gets_econnreset)
{
    struct parked_read p = {0};
    struct green *g;
    int a, b;

    CHECK(tcp_pair(&a, &b) == 0);
    CHECK(write(a, "unread", 6) == 6);
    p.fd = a;
    g = green_spawn(parked_reader, &p, NULL);
    CHECK(g != NULL);
    CHECK(green_sleep(0.05) == 0);
    CHECK(close(b) == 0); /* unread data: RST */
    CHECK(green_join(g, 5.0) == 0);
    CHECK(p.r == -1);
    CHECK(p.err == ECONNRESET);
    CHECK(close(a) == 0);
}

/* A writer parked on a full socket whose peer goes away gets EPIPE (or
 * ECONNRESET, as libc would, depending on how the peer left) - or the
 * count it wrote before. */
static void parked_writer(void *arg)
{
    struct parked_read *p = arg;
    static char big[8 << 20];

    errno = 0;
    p->r = write(p->fd, big, sizeof big);
    p->err = errno;
}

TEST(parked_writer_peer_closes)
{
    struct parked_read p = {0};
    struct green *g;
    int sv[2];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    p.fd = sv[0];
    g = green_spawn(parked_writer, &p, NULL);
    CHECK(g != NULL);
    CHECK(green_sleep(0.05) == 0);
    CHECK(close(sv[1]) == 0);
    CHECK(green_join(g, 5.0) == 0);
    /* part went into the buffer before the park: a blocking write
     * reports that count; the error shows on the next write */
    CHECK(p.r > 0 && p.r < (8 << 20));
    errno = 0;
    CHECK(write(sv[0], "x", 1) == -1 && errno == EPIPE);
    CHECK(close(sv[0]) == 0);
}

/* ---- success leaves errno alone --------------------------------------- */

#define SENTINEL 4242

enum {
    S_READ, S_RECV, S_WRITE, S_ACCEPT, S_CONNECT, S_POLL, S_PPOLL, S_SELECT,
    S_EPOLL, S_NANOSLEEP, S_USLEEP, S_CLOCK_NANOSLEEP, S_NCASES
};

static const char *s_name[S_NCASES] = {
    "read", "recv", "write", "accept", "connect", "poll", "ppoll", "select",
    "epoll_wait", "nanosleep", "usleep", "clock_nanosleep",
};

struct succ {
    int kind;
    int fd;           /* the fd the call waits on */
    int peer;         /* the fd the waker uses */
    int ep;
    struct sockaddr_in addr;
    long r;
    int err_after;
    int parked;       /* the call really parked: the waker ran first */
    int waker_ran;
};

/* Parks with errno = SENTINEL, must come back with errno = SENTINEL. */
static void succeeder(void *arg)
{
    struct succ *s = arg;
    char buf[64];
    struct pollfd pfd = {s->fd, POLLIN, 0};
    struct timespec ts = {0, 50000000L}, long_ts = {5, 0};
    struct epoll_event ev;
    fd_set r;
    struct timeval tv = {5, 0};

    errno = SENTINEL;
    switch (s->kind) {
    case S_READ: s->r = read(s->fd, buf, sizeof buf); break;
    case S_RECV: s->r = recv(s->fd, buf, sizeof buf, 0); break;
    case S_WRITE: {
        static char big[4 << 20];
        s->r = write(s->fd, big, sizeof big);
        break;
    }
    case S_ACCEPT:
        s->r = accept(s->fd, NULL, NULL);
        if (s->r >= 0)
            close((int)s->r); /* a successful close leaves errno alone */
        break;
    case S_CONNECT:
        s->r = connect(s->fd, (struct sockaddr *)&s->addr, sizeof s->addr);
        break;
    case S_POLL: s->r = poll(&pfd, 1, 5000); break;
    case S_PPOLL: s->r = ppoll(&pfd, 1, &long_ts, NULL); break;
    case S_SELECT:
        FD_ZERO(&r);
        FD_SET(s->fd, &r);
        s->r = select(s->fd + 1, &r, NULL, NULL, &tv);
        break;
    case S_EPOLL: s->r = epoll_wait(s->ep, &ev, 1, 5000); break;
    case S_NANOSLEEP: s->r = nanosleep(&ts, NULL); break;
    case S_USLEEP: s->r = usleep(50000); break;
    case S_CLOCK_NANOSLEEP:
        s->r = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
        break;
    }
    s->err_after = errno;
    s->parked = s->waker_ran;
}

/* Runs while the succeeder is parked: fails some calls (so errno of the
 * OS thread is something else), then makes the succeeder's call succeed,
 * then fails again before it yields back. */
static void clobberer(void *arg)
{
    struct succ *s = arg;
    char buf[65536];

    s->waker_ran = 1;
    read(-1, buf, 1); /* EBADF */
    switch (s->kind) {
    case S_READ: case S_RECV: case S_POLL: case S_PPOLL: case S_SELECT:
    case S_EPOLL:
        write(s->peer, "wake", 4);
        break;
    case S_WRITE: {
        /* drain everything the writer sends */
        size_t total = 0;
        while (total < (4 << 20)) {
            ssize_t r = read(s->peer, buf, sizeof buf);
            if (r <= 0)
                break;
            total += (size_t)r;
        }
        break;
    }
    case S_ACCEPT: {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        connect(c, (struct sockaddr *)&s->addr, sizeof s->addr);
        close(c);
        break;
    }
    default: /* connect and sleeps need nothing from us */
        break;
    }
    errno = ENOTSUP; /* what the OS thread's errno is when we park */
    usleep(1000);
    errno = EXDEV;
}

TEST(success_leaves_errno_alone)
{
    int failures = 0;

    for (int k = 0; k < S_NCASES; k++) {
        struct succ s = {0};
        struct green *a, *b;
        int sv[2] = {-1, -1}, l = -1;
        struct epoll_event ev = {EPOLLIN, {0}};

        s.kind = k;
        s.ep = -1;
        switch (k) {
        case S_ACCEPT:
            l = listener(8, &s.addr);
            CHECK(l >= 0);
            s.fd = l;
            break;
        case S_CONNECT:
            /* a TCP connect completes asynchronously: connect() parks */
            l = listener(8, &s.addr);
            CHECK(l >= 0);
            s.fd = socket(AF_INET, SOCK_STREAM, 0);
            break;
        case S_WRITE:
            CHECK(tcp_pair(&sv[0], &sv[1]) == 0);
            s.fd = sv[0];
            s.peer = sv[1];
            break;
        default:
            CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
            s.fd = sv[0];
            s.peer = sv[1];
            if (k == S_EPOLL) {
                s.ep = epoll_create1(0);
                CHECK(s.ep >= 0);
                CHECK(epoll_ctl(s.ep, EPOLL_CTL_ADD, sv[0], &ev) == 0);
            }
            break;
        }
        a = green_spawn(succeeder, &s, NULL);
        b = green_spawn(clobberer, &s, NULL);
        CHECK(a && b);
        CHECK(green_join(a, 5.0) == 0);
        CHECK(green_join(b, 5.0) == 0);
        if (s.r < 0 || s.err_after != SENTINEL) {
            fprintf(stderr, "  %s: returned %ld, errno %d (%s) instead of %d\n",
                    s_name[k], s.r, s.err_after, strerror(s.err_after),
                    SENTINEL);
            failures++;
        }
        if (k != S_CONNECT && !s.parked) {
            fprintf(stderr, "  %s did not park: the test proves nothing\n",
                    s_name[k]);
            failures++;
        }
        if (s.ep >= 0)
            close(s.ep);
        if (sv[0] >= 0)
            close(sv[0]);
        if (sv[1] >= 0)
            close(sv[1]);
        if (k == S_CONNECT)
            close(s.fd);
        if (l >= 0)
            close(l);
    }
    CHECK(failures == 0);
}

/* The main context's accept on a listener libgreen made non-blocking
 * waits with poll after an internal EAGAIN: that EAGAIN must not leak. */
static int main_listen = -1;
static struct sockaddr_in main_addr;

static void green_acceptor(void *arg)
{
    int fd;

    (void)arg;
    fd = accept(main_listen, NULL, NULL);
    CHECK_OR(fd >= 0, );
    CHECK_OR(close(fd) == 0, );
}

static void *late_connect(void *arg)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);

    (void)arg;
    usleep(100000);
    connect(c, (struct sockaddr *)&main_addr, sizeof main_addr);
    close(c);
    return NULL;
}

TEST(main_context_accept_leaves_errno_alone)
{
    struct green *a, *b;
    pthread_t th;
    int fd;

    main_listen = listener(8, &main_addr);
    CHECK(main_listen >= 0);
    a = green_spawn(green_acceptor, NULL, NULL);
    b = green_spawn(green_connect_once, &main_addr, NULL);
    CHECK(a && b);
    CHECK(green_join(a, 5.0) == 0);
    CHECK(green_join(b, 5.0) == 0);
    CHECK(pthread_create(&th, NULL, late_connect, NULL) == 0);
    errno = SENTINEL;
    fd = accept(main_listen, NULL, NULL);
    CHECK(errno == SENTINEL);
    CHECK(fd >= 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(close(fd) == 0);
    CHECK(close(main_listen) == 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    RUN(failures_match_libc);
    RUN(parked_reader_gets_econnreset);
    RUN(parked_writer_peer_closes);
    RUN(success_leaves_errno_alone);
    RUN(main_context_accept_leaves_errno_alone);
    return CHECK_DONE();
}
