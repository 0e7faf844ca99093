/* tests/preload/test_sleep.c - sleeps park only their green thread.
 *
 * 1,000 green threads each sleeping 100 ms finish together in well under
 * a second, with every kind of sleep a program uses: nanosleep, usleep,
 * clock_nanosleep (relative, and TIMER_ABSTIME on CLOCK_MONOTONIC and
 * CLOCK_REALTIME), poll(NULL, 0, 100), ppoll, select(0, ..., &tv) and
 * pselect; sleep() in whole seconds too. No sleep ends early. Invalid
 * arguments fail as in libc (clock_nanosleep returns EINVAL, nanosleep
 * sets errno EINVAL), an interrupted sleep reports the time left, and
 * outside green threads every sleep is libc's real one (the OS thread
 * sleeps; no green thread runs meanwhile).
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

#define N 1000
#define STACK (64 * 1024)

enum kind {
    K_NANOSLEEP,
    K_USLEEP,
    K_CLOCK_REL,
    K_CLOCK_ABS_MONO,
    K_CLOCK_ABS_REAL,
    K_POLL,
    K_PPOLL,
    K_SELECT,
    K_PSELECT,
    K_NKINDS
};

static const char *kind_name[K_NKINDS] = {
    "nanosleep", "usleep", "clock_nanosleep", "clock_nanosleep(ABSTIME mono)",
    "clock_nanosleep(ABSTIME real)", "poll", "ppoll", "select", "pselect",
};

static enum kind cur_kind;
static double min_elapsed, max_elapsed;
static int bad_results, finished;

static double clock_sec(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timespec add_ms(clockid_t clk, int ms)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    return ts;
}

/* Sleeps 100 ms with cur_kind; records how long it really took. */
static void sleeper(void *arg)
{
    struct timespec req = {0, 100000000L}, target;
    struct timeval tv = {0, 100000};
    double t0 = check_now(), elapsed, late = 0;
    int r = -1;

    (void)arg;
    switch (cur_kind) {
    case K_NANOSLEEP:
        r = nanosleep(&req, NULL);
        break;
    case K_USLEEP:
        r = usleep(100000);
        break;
    case K_CLOCK_REL:
        r = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL);
        break;
    case K_CLOCK_ABS_MONO:
    case K_CLOCK_ABS_REAL: {
        clockid_t clk = cur_kind == K_CLOCK_ABS_MONO ? CLOCK_MONOTONIC
                                                     : CLOCK_REALTIME;
        target = add_ms(clk, 100);
        r = clock_nanosleep(clk, TIMER_ABSTIME, &target, NULL);
        /* the named clock itself must have reached the target */
        late = clock_sec(clk) -
               ((double)target.tv_sec + (double)target.tv_nsec / 1e9);
        if (late < -0.001)
            r = -2;
        break;
    }
    case K_POLL:
        r = poll(NULL, 0, 100);
        break;
    case K_PPOLL:
        r = ppoll(NULL, 0, &req, NULL);
        break;
    case K_SELECT:
        r = select(0, NULL, NULL, NULL, &tv);
        if (tv.tv_sec != 0 || tv.tv_usec != 0)
            r = -3; /* Linux leaves the time not slept: none */
        break;
    case K_PSELECT:
        r = pselect(0, NULL, NULL, NULL, &req, NULL);
        break;
    default:
        break;
    }
    elapsed = check_now() - t0;
    if (r != 0)
        bad_results++;
    if (elapsed < min_elapsed)
        min_elapsed = elapsed;
    if (elapsed > max_elapsed)
        max_elapsed = elapsed;
    finished++;
}

static int all_finished(void *arg)
{
    (void)arg;
    return finished == N;
}

/* N green threads sleep 100 ms each with one kind of sleep. */
static int sleep_n(enum kind k)
{
    struct green_attr attr = {STACK, NULL};
    double t0, total;

    cur_kind = k;
    min_elapsed = 1e9;
    max_elapsed = 0;
    bad_results = finished = 0;
    t0 = check_now();
    for (int i = 0; i < N; i++) {
        struct green *g = green_spawn(sleeper, NULL, &attr);
        CHECK_OR(g != NULL, -1);
        green_detach(g);
    }
    CHECK_OR(green_hub_run(all_finished, NULL) == 0, -1);
    total = check_now() - t0;
    fprintf(stderr, "  %-30s %d x 100 ms in %.3f s (each %.4f..%.4f s)\n",
            kind_name[k], N, total, min_elapsed, max_elapsed);
    CHECK_OR(bad_results == 0, -1);
    CHECK_OR(min_elapsed >= 0.099, -1); /* never early */
    CHECK_OR(total < 0.8, -1);
    return 0;
}

TEST(many_nanosleep) { CHECK(sleep_n(K_NANOSLEEP) == 0); }
TEST(many_usleep) { CHECK(sleep_n(K_USLEEP) == 0); }
TEST(many_clock_nanosleep_relative) { CHECK(sleep_n(K_CLOCK_REL) == 0); }
TEST(many_clock_nanosleep_abs_monotonic) { CHECK(sleep_n(K_CLOCK_ABS_MONO) == 0); }
TEST(many_clock_nanosleep_abs_realtime) { CHECK(sleep_n(K_CLOCK_ABS_REAL) == 0); }
TEST(many_poll_no_fds) { CHECK(sleep_n(K_POLL) == 0); }
TEST(many_ppoll_no_fds) { CHECK(sleep_n(K_PPOLL) == 0); }
TEST(many_select_no_fds) { CHECK(sleep_n(K_SELECT) == 0); }
TEST(many_pselect_no_fds) { CHECK(sleep_n(K_PSELECT) == 0); }

/* ---- sleep() in whole seconds ----------------------------------------- */

static void one_second(void *arg)
{
    double t0 = check_now();
    unsigned r = sleep(1);

    ((double *)arg)[0] = r == 0 ? check_now() - t0 : -1;
}

TEST(many_sleep_one_second)
{
    double took[100];
    struct green *g[100];
    double t0 = check_now(), total;

    for (int i = 0; i < 100; i++) {
        g[i] = green_spawn(one_second, &took[i], NULL);
        CHECK(g[i] != NULL);
    }
    for (int i = 0; i < 100; i++)
        CHECK(green_join(g[i], 5.0) == 0);
    total = check_now() - t0;
    for (int i = 0; i < 100; i++)
        CHECK(took[i] >= 0.999);
    CHECK(total < 1.5);
}

/* ---- the hub's timerfd closed by the program ---------------------------- */

/* A program closing every fd it does not know (closerange, or a loop of
 * close) also closes the timerfd that ends sleeps on time: the sleeps
 * parked on it then end anyway (late as libev's own timers are, never
 * early), and libev is not left watching a closed number. */
struct tfd_sleeps {
    int done;
    double min_late;
};

static void short_sleeps(void *arg)
{
    struct tfd_sleeps *t = arg;

    t->min_late = 1;
    for (int i = 0; i < 40; i++) {
        double t0 = check_now(), late;
        usleep(1500);
        late = check_now() - t0 - 0.0015;
        if (late < t->min_late)
            t->min_late = late;
    }
    t->done = 1;
}

static void close_timerfds(void *arg)
{
    char path[64], link[64];

    usleep(5000); /* the sleeper is parked on the timerfd by now */
    for (int fd = 3; fd < 1024; fd++) {
        ssize_t n;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        n = readlink(path, link, sizeof link - 1);
        if (n > 0 && (link[n] = 0, strstr(link, "timerfd")))
            close(fd);
    }
}

TEST(timerfd_closed_by_the_program)
{
    struct tfd_sleeps t = {0, 0};
    struct green *a = green_spawn(short_sleeps, &t, NULL);
    struct green *b = green_spawn(close_timerfds, NULL, NULL);

    CHECK(green_join(b, 5.0) == 0);
    CHECK(green_join(a, 5.0) == 0);
    CHECK(t.done && t.min_late >= -1e-6);
}

/* ---- invalid arguments, as libc reports them --------------------------- */

struct inval {
    int cns_nsec, cns_nsec_errno;     /* clock_nanosleep, tv_nsec = 1e9 */
    int cns_neg_nsec;                 /* tv_nsec = -1 */
    int cns_neg_sec, cns_abs_neg_sec; /* tv_sec = -1, relative / absolute */
    int ns_r, ns_errno;               /* nanosleep, tv_nsec = 1e9 */
    int ns_neg_r, ns_neg_errno;       /* nanosleep, tv_sec = -1 */
    int sel_r, sel_errno;             /* select, tv_sec = -1 */
    int ppoll_r, ppoll_errno;         /* ppoll, tv_nsec = -1 */
    double elapsed;
};

static void invalid_args(struct inval *v)
{
    struct timespec big = {0, 1000000000L}, neg_nsec = {0, -1},
                    neg_sec = {-1, 0};
    struct timeval neg_tv = {-1, 0};
    double t0 = check_now();

    errno = 0;
    v->cns_nsec = clock_nanosleep(CLOCK_MONOTONIC, 0, &big, NULL);
    v->cns_nsec_errno = errno; /* clock_nanosleep leaves errno alone */
    v->cns_neg_nsec = clock_nanosleep(CLOCK_MONOTONIC, 0, &neg_nsec, NULL);
    v->cns_neg_sec = clock_nanosleep(CLOCK_MONOTONIC, 0, &neg_sec, NULL);
    v->cns_abs_neg_sec =
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &neg_sec, NULL);
    errno = 0;
    v->ns_r = nanosleep(&big, NULL);
    v->ns_errno = errno;
    errno = 0;
    v->ns_neg_r = nanosleep(&neg_sec, NULL);
    v->ns_neg_errno = errno;
    errno = 0;
    v->sel_r = select(0, NULL, NULL, NULL, &neg_tv);
    v->sel_errno = errno;
    errno = 0;
    v->ppoll_r = ppoll(NULL, 0, &neg_nsec, NULL);
    v->ppoll_errno = errno;
    v->elapsed = check_now() - t0;
}

static void invalid_args_green(void *arg) { invalid_args(arg); }

TEST(invalid_arguments_match_libc)
{
    struct inval libc = {0}, green = {0};
    struct green *g;

    invalid_args(&libc); /* main context: libc's own answers */
    g = green_spawn(invalid_args_green, &green, NULL);
    CHECK(g != NULL);
    CHECK(green_join(g, 5.0) == 0);

    CHECK(green.cns_nsec == EINVAL);
    CHECK(green.cns_nsec_errno == 0);
    CHECK(green.cns_neg_nsec == EINVAL);
    CHECK(green.ns_r == -1 && green.ns_errno == EINVAL);
    CHECK(green.ns_neg_r == -1 && green.ns_neg_errno == EINVAL);
    CHECK(green.sel_r == -1 && green.sel_errno == EINVAL);
    CHECK(green.ppoll_r == -1 && green.ppoll_errno == EINVAL);
    CHECK(green.cns_neg_sec == libc.cns_neg_sec);
    CHECK(green.cns_abs_neg_sec == libc.cns_abs_neg_sec);
    CHECK(memcmp(&green, &libc, offsetof(struct inval, elapsed)) == 0);
    CHECK(green.elapsed < 0.05); /* none of them slept */
}

/* ---- interrupted sleeps report the time left -------------------------- */

struct interrupted {
    int kind;
    long r;
    int err;
    struct timespec rem;
    double elapsed;
};

static void long_sleeper(void *arg)
{
    struct interrupted *s = arg;
    struct timespec req = {1, 0};
    double t0 = check_now();

    s->rem.tv_sec = s->rem.tv_nsec = -1;
    errno = 0;
    switch (s->kind) {
    case 0: s->r = nanosleep(&req, &s->rem); break;
    case 1: s->r = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &s->rem); break;
    case 2: s->r = usleep(1000000); break;
    case 3: s->r = (long)sleep(2); break;
    }
    s->err = errno;
    s->elapsed = check_now() - t0;
}

static int interrupt_after(struct interrupted *s, double delay)
{
    struct green *g = green_spawn(long_sleeper, s, NULL);

    CHECK_OR(g != NULL, -1);
    CHECK_OR(green_sleep(delay) == 0, -1); /* hub context: runs it */
    green_interrupt(g);
    CHECK_OR(green_join(g, 5.0) == 0, -1);
    CHECK_OR(s->elapsed < 0.5, -1);
    return 0;
}

static double ts_sec(const struct timespec *ts)
{
    return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

TEST(interrupted_sleeps_report_time_left)
{
    struct interrupted s = {0};

    s.kind = 0;
    CHECK(interrupt_after(&s, 0.1) == 0);
    CHECK(s.r == -1 && s.err == EINTR);
    CHECK(ts_sec(&s.rem) > 0.7 && ts_sec(&s.rem) <= 0.9);

    s.kind = 1;
    CHECK(interrupt_after(&s, 0.1) == 0);
    CHECK(s.r == EINTR); /* returned, not in errno */
    CHECK(ts_sec(&s.rem) > 0.7 && ts_sec(&s.rem) <= 0.9);

    s.kind = 2;
    CHECK(interrupt_after(&s, 0.1) == 0);
    CHECK(s.r == -1 && s.err == EINTR);

    s.kind = 3;
    CHECK(interrupt_after(&s, 0.1) == 0);
    CHECK(s.r >= 1 && s.r <= 2); /* seconds not slept */
}

/* ---- outside green threads: the real sleeps ---------------------------- */

/* In the main context with a green thread ready to run: each sleep must
 * block the OS thread (not run the hub), and last its full time. */
TEST(main_context_sleeps_are_real)
{
    struct timespec req = {0, 50000000L}, abs_target;
    struct timeval tv = {0, 50000};
    struct green *g = green_spawn(tick_once, NULL, NULL);
    double t0;
    int i;

    CHECK(g != NULL);
    for (i = 0; i < 8; i++) {
        t0 = check_now();
        switch (i) {
        case 0: CHECK(nanosleep(&req, NULL) == 0); break;
        case 1: CHECK(usleep(50000) == 0); break;
        case 2: CHECK(clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL) == 0); break;
        case 3:
            abs_target = add_ms(CLOCK_MONOTONIC, 50);
            CHECK(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs_target,
                                  NULL) == 0);
            break;
        case 4: CHECK(poll(NULL, 0, 50) == 0); break;
        case 5: CHECK(select(0, NULL, NULL, NULL, &tv) == 0); break;
        case 6: CHECK(ppoll(NULL, 0, &req, NULL) == 0); break;
        case 7: CHECK(pselect(0, NULL, NULL, NULL, &req, NULL) == 0); break;
        }
        CHECK(check_now() - t0 >= 0.049);
        CHECK(ticks == 0); /* the ready green thread did not run */
    }
    CHECK(green_join(g, 5.0) == 0);
    CHECK(ticks == 1);
}

static void *os_thread_sleeps(void *arg)
{
    struct timespec req = {0, 50000000L};
    double t0 = check_now();

    if (nanosleep(&req, NULL) == 0 && usleep(50000) == 0 &&
        clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL) == 0 &&
        poll(NULL, 0, 50) == 0 && sleep(1) == 0)
        *(double *)arg = check_now() - t0;
    return NULL;
}

TEST(os_thread_sleeps_are_real)
{
    pthread_t th;
    double took = -1;

    CHECK(pthread_create(&th, NULL, os_thread_sleeps, &took) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(took >= 1.199);
    CHECK(green_hub_peek() != NULL); /* main has a hub; that thread had none */
}

int main(void)
{
    alarm(60);
    RUN(many_nanosleep);
    RUN(many_usleep);
    RUN(many_clock_nanosleep_relative);
    RUN(many_clock_nanosleep_abs_monotonic);
    RUN(many_clock_nanosleep_abs_realtime);
    RUN(many_poll_no_fds);
    RUN(many_ppoll_no_fds);
    RUN(many_select_no_fds);
    RUN(many_pselect_no_fds);
    RUN(many_sleep_one_second);
    RUN(timerfd_closed_by_the_program);
    RUN(invalid_arguments_match_libc);
    RUN(interrupted_sleeps_report_time_left);
    RUN(main_context_sleeps_are_real);
    RUN(os_thread_sleeps_are_real);
    return CHECK_DONE();
}
