/* tests/preload/test_poll_select.c - poll, ppoll, select, pselect and
 * epoll_wait park only the calling green thread.
 *
 * With a timeout they return 0 after about that time while the other
 * green threads keep running; when a peer writes they return at once with
 * exactly the right revents / fd_set bits (the sets the caller passed are
 * updated as the kernel does: ready fds kept, others cleared, and on a
 * timeout all cleared; select's timeval gets the time left); an fd that is
 * ready already returns without parking; epoll_wait on an epoll fd parks
 * and wakes on data with the caller's event data.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

struct delayed_write {
    int fd;
    int delay_ms;
    const char *data;
};

static void delayed_writer(void *arg)
{
    struct delayed_write *d = arg;

    usleep((useconds_t)d->delay_ms * 1000);
    CHECK_OR(write(d->fd, d->data, strlen(d->data)) == (ssize_t)strlen(d->data), );
}

/* Runs fn(arg) in a green thread beside a ticker and an optional delayed
 * writer; returns the ticks seen while fn ran. */
static int run_with(green_fn fn, void *arg, struct delayed_write *dw)
{
    return run_beside_ticker(fn, arg, dw ? delayed_writer : NULL, dw);
}

/* ---- poll ------------------------------------------------------------- */

struct pollcall {
    struct pollfd fds[4];
    int n, timeout, r;
    double elapsed;
};

static void do_poll(void *arg)
{
    struct pollcall *p = arg;
    double t0 = check_now();

    p->r = poll(p->fds, (nfds_t)p->n, p->timeout);
    p->elapsed = check_now() - t0;
}

TEST(poll_timeout_parks_only_caller)
{
    int sv[2], t;
    struct pollcall p = {0};

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    p.fds[0] = (struct pollfd){sv[0], POLLIN, 0x7f};
    p.n = 1;
    p.timeout = 200;
    t = run_with(do_poll, &p, NULL);
    CHECK(t >= 5);
    CHECK(p.r == 0);
    CHECK(p.fds[0].revents == 0);
    CHECK(p.elapsed >= 0.199 && p.elapsed < 1.0);
    CHECK(close(sv[0]) == 0);
    CHECK(close(sv[1]) == 0);
}

TEST(poll_wakes_with_right_revents)
{
    int a[2], b[2], t;
    struct pollcall p = {0};
    struct delayed_write dw;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0);
    p.fds[0] = (struct pollfd){a[0], POLLIN, 0x7f};
    p.fds[1] = (struct pollfd){b[0], POLLIN | POLLPRI, 0x7f};
    p.fds[2] = (struct pollfd){-1, POLLIN, 0x7f}; /* ignored, revents 0 */
    p.n = 3;
    p.timeout = 3000;
    dw = (struct delayed_write){b[1], 100, "hi"};
    t = run_with(do_poll, &p, &dw);
    CHECK(t >= 5);
    CHECK(p.r == 1);
    CHECK(p.fds[0].revents == 0);
    CHECK(p.fds[1].revents == POLLIN);
    CHECK(p.fds[2].revents == 0);
    CHECK(p.elapsed >= 0.09 && p.elapsed < 1.0);
    /* the fds and events are the caller's, untouched */
    CHECK(p.fds[0].fd == a[0] && p.fds[0].events == POLLIN);
    CHECK(p.fds[1].fd == b[0] && p.fds[1].events == (POLLIN | POLLPRI));
    CHECK(close(a[0]) == 0 && close(a[1]) == 0);
    CHECK(close(b[0]) == 0 && close(b[1]) == 0);
}

TEST(poll_infinite_timeout_wakes)
{
    int p2[2], t;
    struct pollcall p = {0};
    struct delayed_write dw;

    CHECK(pipe(p2) == 0);
    p.fds[0] = (struct pollfd){p2[0], POLLIN, 0};
    p.n = 1;
    p.timeout = -1;
    dw = (struct delayed_write){p2[1], 50, "x"};
    t = run_with(do_poll, &p, &dw);
    CHECK(t >= 3);
    CHECK(p.r == 1 && p.fds[0].revents == POLLIN);
    CHECK(close(p2[0]) == 0 && close(p2[1]) == 0);
}

TEST(poll_ready_returns_without_parking)
{
    int sv[2];
    struct pollcall p = {0};
    struct green_stats s0, s1;
    struct green *g;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(write(sv[1], "x", 1) == 1);
    p.fds[0] = (struct pollfd){sv[0], POLLIN | POLLOUT, 0};
    p.fds[1] = (struct pollfd){sv[1], POLLOUT, 0};
    p.n = 2;
    p.timeout = 5000;
    g = green_spawn(do_poll, &p, NULL);
    CHECK(g != NULL);
    green_get_stats(&s0);
    CHECK(green_join(g, 5.0) == 0);
    green_get_stats(&s1);
    CHECK(s1.switches - s0.switches == 1); /* ran once, never parked */
    CHECK(p.r == 2);
    CHECK(p.fds[0].revents == (POLLIN | POLLOUT));
    CHECK(p.fds[1].revents == POLLOUT);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

TEST(poll_sees_hangup)
{
    int sv[2];
    struct pollcall p = {0};
    struct green *g;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    p.fds[0] = (struct pollfd){sv[0], POLLIN | POLLRDHUP, 0};
    p.n = 1;
    p.timeout = 3000;
    g = green_spawn(do_poll, &p, NULL);
    CHECK(g != NULL);
    CHECK(green_sleep(0.05) == 0); /* hub context: the poller parks */
    CHECK(close(sv[1]) == 0);      /* the peer goes away */
    CHECK(green_join(g, 5.0) == 0);
    CHECK(p.r == 1);
    CHECK(p.fds[0].revents & POLLRDHUP);
    CHECK(p.fds[0].revents & POLLIN);
    CHECK(p.elapsed < 1.0);
    CHECK(close(sv[0]) == 0);
}

static void do_ppoll(void *arg)
{
    struct pollcall *p = arg;
    struct timespec ts = {p->timeout / 1000, (p->timeout % 1000) * 1000000L};
    double t0 = check_now();

    p->r = ppoll(p->fds, (nfds_t)p->n, &ts, NULL);
    p->elapsed = check_now() - t0;
}

TEST(ppoll_timeout_and_wake)
{
    int sv[2], t;
    struct pollcall p = {0};
    struct delayed_write dw;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    p.fds[0] = (struct pollfd){sv[0], POLLIN, 0};
    p.n = 1;
    p.timeout = 150;
    t = run_with(do_ppoll, &p, NULL);
    CHECK(t >= 5 && p.r == 0 && p.fds[0].revents == 0);
    CHECK(p.elapsed >= 0.149 && p.elapsed < 1.0);
    p.timeout = 3000;
    dw = (struct delayed_write){sv[1], 50, "y"};
    t = run_with(do_ppoll, &p, &dw);
    CHECK(p.r == 1 && p.fds[0].revents == POLLIN);
    CHECK(p.elapsed < 1.0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

/* ---- select ----------------------------------------------------------- */

struct selcall {
    int nfds;
    fd_set r, w;
    int use_w;
    struct timeval tv;
    int r_ret;
    double elapsed;
};

static void do_select(void *arg)
{
    struct selcall *s = arg;
    double t0 = check_now();

    s->r_ret = select(s->nfds, &s->r, s->use_w ? &s->w : NULL, NULL, &s->tv);
    s->elapsed = check_now() - t0;
}

static int fill_pipe(int wfd)
{
    char buf[4096] = {0};
    int fl = fcntl(wfd, F_GETFL);

    /* fill it with a non-blocking fd (the caller's own choice) */
    if (fcntl(wfd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    while (write(wfd, buf, sizeof buf) > 0)
        ;
    if (errno != EAGAIN)
        return -1;
    return fcntl(wfd, F_SETFL, fl);
}

TEST(select_timeout_clears_sets)
{
    int sv[2], p[2], t;
    struct selcall s;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(pipe(p) == 0);
    CHECK(fill_pipe(p[1]) == 0);
    memset(&s, 0, sizeof s);
    FD_ZERO(&s.r);
    FD_ZERO(&s.w);
    FD_SET(sv[0], &s.r);
    FD_SET(p[1], &s.w); /* full: not writable */
    s.use_w = 1;
    s.nfds = (sv[0] > p[1] ? sv[0] : p[1]) + 1;
    s.tv = (struct timeval){0, 200000};
    t = run_with(do_select, &s, NULL);
    CHECK(t >= 5);
    CHECK(s.r_ret == 0);
    CHECK(!FD_ISSET(sv[0], &s.r));
    CHECK(!FD_ISSET(p[1], &s.w));
    CHECK(s.tv.tv_sec == 0 && s.tv.tv_usec == 0);
    CHECK(s.elapsed >= 0.199 && s.elapsed < 1.0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
    CHECK(close(p[0]) == 0 && close(p[1]) == 0);
}

TEST(select_wakes_with_right_sets)
{
    int a[2], b[2], p[2], t;
    struct selcall s;
    struct delayed_write dw;
    double left;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0);
    CHECK(pipe(p) == 0);
    CHECK(fill_pipe(p[1]) == 0);
    memset(&s, 0, sizeof s);
    FD_ZERO(&s.r);
    FD_ZERO(&s.w);
    FD_SET(a[0], &s.r);
    FD_SET(b[0], &s.r);
    FD_SET(p[1], &s.w);
    s.use_w = 1;
    s.nfds = 0;
    for (int fd = 0; fd < FD_SETSIZE; fd++)
        if (FD_ISSET(fd, &s.r) || FD_ISSET(fd, &s.w))
            s.nfds = fd + 1;
    s.tv = (struct timeval){2, 0};
    dw = (struct delayed_write){b[1], 100, "data"};
    t = run_with(do_select, &s, &dw);
    CHECK(t >= 5);
    CHECK(s.r_ret == 1);
    CHECK(!FD_ISSET(a[0], &s.r));
    CHECK(FD_ISSET(b[0], &s.r));
    CHECK(!FD_ISSET(p[1], &s.w));
    for (int fd = 0; fd < FD_SETSIZE; fd++)
        if (fd != b[0])
            CHECK(!FD_ISSET(fd, &s.r) && !FD_ISSET(fd, &s.w));
    /* Linux leaves the time not slept in the timeval */
    left = (double)s.tv.tv_sec + (double)s.tv.tv_usec / 1e6;
    CHECK(left > 1.0 && left < 1.95);
    CHECK(s.elapsed >= 0.09 && s.elapsed < 1.0);
    CHECK(close(a[0]) == 0 && close(a[1]) == 0);
    CHECK(close(b[0]) == 0 && close(b[1]) == 0);
    CHECK(close(p[0]) == 0 && close(p[1]) == 0);
}

/* The pipe drains while select waits: the write set gets its bit. */
static void drainer(void *arg)
{
    char buf[65536];
    int fd = *(int *)arg;

    usleep(100000);
    CHECK_OR(read(fd, buf, sizeof buf) > 0, ); /* makes room */
}

TEST(select_wakes_on_writable)
{
    int sv[2], p[2];
    struct selcall s;
    struct green *d, *g;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(pipe(p) == 0);
    CHECK(fill_pipe(p[1]) == 0);
    memset(&s, 0, sizeof s);
    FD_ZERO(&s.r);
    FD_ZERO(&s.w);
    FD_SET(sv[0], &s.r);
    FD_SET(p[1], &s.w);
    s.use_w = 1;
    s.nfds = (sv[0] > p[1] ? sv[0] : p[1]) + 1;
    s.tv = (struct timeval){3, 0};
    g = green_spawn(do_select, &s, NULL);
    d = green_spawn(drainer, &p[0], NULL);
    CHECK(g && d);
    CHECK(green_join(g, 5.0) == 0);
    CHECK(green_join(d, 5.0) == 0);
    CHECK(s.r_ret == 1);
    CHECK(!FD_ISSET(sv[0], &s.r));
    CHECK(FD_ISSET(p[1], &s.w));
    CHECK(s.elapsed >= 0.09 && s.elapsed < 1.0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
    CHECK(close(p[0]) == 0 && close(p[1]) == 0);
}

static void do_pselect(void *arg)
{
    struct selcall *s = arg;
    struct timespec ts = {s->tv.tv_sec, s->tv.tv_usec * 1000L};
    double t0 = check_now();

    s->r_ret = pselect(s->nfds, &s->r, NULL, NULL, &ts, NULL);
    s->elapsed = check_now() - t0;
}

TEST(pselect_timeout_and_wake)
{
    int sv[2], t;
    struct selcall s;
    struct delayed_write dw;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    memset(&s, 0, sizeof s);
    FD_ZERO(&s.r);
    FD_SET(sv[0], &s.r);
    s.nfds = sv[0] + 1;
    s.tv = (struct timeval){0, 150000};
    t = run_with(do_pselect, &s, NULL);
    CHECK(t >= 5 && s.r_ret == 0 && !FD_ISSET(sv[0], &s.r));
    CHECK(s.elapsed >= 0.149 && s.elapsed < 1.0);
    FD_SET(sv[0], &s.r);
    s.tv = (struct timeval){3, 0};
    dw = (struct delayed_write){sv[1], 50, "z"};
    t = run_with(do_pselect, &s, &dw);
    CHECK(s.r_ret == 1 && FD_ISSET(sv[0], &s.r));
    CHECK(s.elapsed < 1.0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

/* ---- epoll ------------------------------------------------------------ */

struct epcall {
    int epfd, timeout, r;
    struct epoll_event ev[4];
    double elapsed;
    int pwait;
};

static void do_epoll(void *arg)
{
    struct epcall *e = arg;
    double t0 = check_now();
    sigset_t none;

    sigemptyset(&none);
    e->r = e->pwait ? epoll_pwait(e->epfd, e->ev, 4, e->timeout, &none)
                    : epoll_wait(e->epfd, e->ev, 4, e->timeout);
    e->elapsed = check_now() - t0;
}

TEST(epoll_wait_parks_and_wakes)
{
    int sv[2], other[2], ep, t;
    struct epoll_event ev = {0};
    struct epcall e = {0};
    struct delayed_write dw;
    char buf[8];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, other) == 0);
    ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    ev.events = EPOLLIN;
    ev.data.u64 = 0xfeedface12345678ULL;
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, sv[0], &ev) == 0);
    ev.data.u64 = 7;
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, other[0], &ev) == 0);

    /* timeout: 0 events after the time, others ran meanwhile */
    e.epfd = ep;
    e.timeout = 150;
    t = run_with(do_epoll, &e, NULL);
    CHECK(t >= 5);
    CHECK(e.r == 0);
    CHECK(e.elapsed >= 0.149 && e.elapsed < 1.0);

    /* data arrives while it waits with no timeout */
    e.timeout = -1;
    dw = (struct delayed_write){sv[1], 100, "epoll"};
    t = run_with(do_epoll, &e, &dw);
    CHECK(t >= 5);
    CHECK(e.r == 1);
    CHECK(e.ev[0].events == EPOLLIN);
    CHECK(e.ev[0].data.u64 == 0xfeedface12345678ULL);
    CHECK(e.elapsed >= 0.09 && e.elapsed < 1.0);
    CHECK(read(sv[0], buf, sizeof buf) == 5);

    /* epoll_pwait too */
    e.pwait = 1;
    e.timeout = 3000;
    dw = (struct delayed_write){other[1], 50, "pw"};
    t = run_with(do_epoll, &e, &dw);
    CHECK(e.r == 1);
    CHECK(e.ev[0].data.u64 == 7);
    CHECK(e.elapsed < 1.0);

    CHECK(close(ep) == 0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
    CHECK(close(other[0]) == 0 && close(other[1]) == 0);
}

/* A pollfd asking for no event still reports the hang-up, promptly. */
static int hup_pair[2];

static void hup_closer(void *arg)
{
    green_sleep(0.1);
    close(hup_pair[1]);
}

static void hup_poller(void *arg)
{
    double *took = arg, t0 = check_now();
    struct pollfd p = {hup_pair[0], 0, 0};
    int r = poll(&p, 1, 2000);

    *took = r == 1 && (p.revents & POLLHUP) ? check_now() - t0 : -1;
}

TEST(poll_no_events_sees_hangup)
{
    double took = -2;
    struct green *a, *b;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, hup_pair) == 0);
    a = green_spawn(hup_poller, &took, NULL);
    b = green_spawn(hup_closer, NULL, NULL);
    CHECK(green_join(a, -1) == 0 && green_join(b, -1) == 0);
    CHECK(took >= 0.09 && took < 0.5); /* not the 2 s timeout */
    close(hup_pair[0]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    RUN(poll_timeout_parks_only_caller);
    RUN(poll_wakes_with_right_revents);
    RUN(poll_infinite_timeout_wakes);
    RUN(poll_ready_returns_without_parking);
    RUN(poll_sees_hangup);
    RUN(ppoll_timeout_and_wake);
    RUN(select_timeout_clears_sets);
    RUN(select_wakes_with_right_sets);
    RUN(select_wakes_on_writable);
    RUN(pselect_timeout_and_wake);
    RUN(epoll_wait_parks_and_wakes);
    RUN(poll_no_events_sees_hangup);
    return CHECK_DONE();
}
