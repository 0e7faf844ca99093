/* tests/preload/test_sigaction.c - handlers the program installs, and the
 * green thread that is the main program's continuation.
 *
 * sigaction() installs a trampoline in the program's place, but the
 * program never sees it: oldact reports its own handler and flags, and
 * signal() returns the previous handler. The handler gets exactly what the
 * kernel gave (SA_SIGINFO: the sigqueue value, a ucontext). The green
 * thread holding the main role (green_set_main) gets the OS thread's own
 * pthread_self(), and a read it is parked in ends with EINTR for a signal
 * whose handler lacks SA_RESTART - and goes on for one with SA_RESTART.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

static volatile sig_atomic_t plain_hits, info_hits, info_value, info_code,
    info_uc;

static void plain_handler(int sig) { plain_hits += sig == SIGUSR1; }

static void info_handler(int sig, siginfo_t *si, void *uc)
{
    info_hits += sig == SIGUSR2;
    info_value = si->si_value.sival_int;
    info_code = si->si_code;
    info_uc = uc != NULL;
}

/* The handler the kernel holds, asked without going through our wrapper. */
static void *kernel_handler(int sig)
{
    struct { void *handler; unsigned long flags; void *restorer; uint64_t mask; } k;

    syscall(SYS_rt_sigaction, sig, NULL, &k, 8);
    return k.handler;
}

TEST(oldact_reports_the_programs_handler)
{
    struct sigaction sa = {0}, old;

    sa.sa_sigaction = info_handler;
    sa.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
    CHECK(kernel_handler(SIGUSR2) != (void *)info_handler); /* wrapped */
    CHECK(sigaction(SIGUSR2, NULL, &old) == 0);
    CHECK(old.sa_sigaction == info_handler);
    CHECK(old.sa_flags & SA_SIGINFO);

    sa.sa_handler = plain_handler;
    sa.sa_flags = SA_RESTART;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    CHECK(sigaction(SIGUSR1, NULL, &old) == 0);
    CHECK(old.sa_handler == plain_handler);
    CHECK(!(old.sa_flags & SA_SIGINFO));
    CHECK(old.sa_flags & SA_RESTART);

    CHECK(signal(SIGUSR1, SIG_IGN) == plain_handler);
    CHECK(kernel_handler(SIGUSR1) == (void *)SIG_IGN); /* untouched */
    CHECK(signal(SIGUSR1, SIG_DFL) == SIG_IGN);
    CHECK(sigaction(-1, &sa, NULL) == -1 && errno == EINVAL);
}

TEST(handlers_get_the_kernels_arguments)
{
    struct sigaction sa = {0};
    union sigval v = {.sival_int = 4242};

    sa.sa_sigaction = info_handler;
    sa.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
    info_hits = 0;
    CHECK(sigqueue(getpid(), SIGUSR2, v) == 0);
    CHECK(info_hits == 1);
    CHECK(info_value == 4242);
    CHECK(info_code == SI_QUEUE);
    CHECK(info_uc);

    CHECK(signal(SIGUSR1, plain_handler) == SIG_DFL);
    plain_hits = 0;
    CHECK(raise(SIGUSR1) == 0);
    CHECK(plain_hits == 1);
    signal(SIGUSR1, SIG_DFL);
    signal(SIGUSR2, SIG_DFL);
}

/* ---- the main role ---------------------------------------------------- */

struct parked_read {
    int fd;
    ssize_t r;
    int err;
    pthread_t self_inside;
};

static void read_fn(void *arg)
{
    struct parked_read *p = arg;
    char c;

    p->self_inside = pthread_self();
    p->r = read(p->fd, &c, 1);
    p->err = errno;
}

struct kicker {
    pthread_t target;
    int wfd;        /* written to after the signal, -1: not */
};

/* Signals the main OS thread after 100 ms, then (maybe) writes a byte. */
static void *kick(void *arg)
{
    struct kicker *k = arg;

    usleep(100 * 1000);
    pthread_kill(k->target, SIGUSR1);
    if (k->wfd >= 0) {
        usleep(100 * 1000);
        CHECK_OR(write(k->wfd, "x", 1) == 1, NULL);
    }
    return NULL;
}

/* A read parked in a green thread (holding the main role or not) while
 * SIGUSR1, its handler installed with flags, arrives: how the read ended
 * goes to *p. */
static void read_with_signal(int flags, int main_role, struct parked_read *out)
{
    struct parked_read p = {0};
    struct sigaction sa = {0};
    struct kicker k;
    struct green *g, *prev = NULL;
    pthread_t t;
    int fds[2];

    out->r = -2;
    CHECK(pipe(fds) == 0);
    sa.sa_handler = plain_handler;
    sa.sa_flags = flags;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    p.fd = fds[0];
    g = green_spawn(read_fn, &p, NULL);
    CHECK(g != NULL);
    if (main_role)
        CHECK(green_set_main(g, &prev) == 1);
    k.target = pthread_self();
    k.wfd = fds[1];
    plain_hits = 0;
    CHECK(pthread_create(&t, NULL, kick, &k) == 0);
    CHECK(green_join(g, 5) == 0);
    if (main_role) {
        struct green *left;
        green_set_main(prev, &left);
        CHECK(left == NULL); /* it gave the role up when it ended */
    }
    pthread_join(t, NULL);
    CHECK(plain_hits == 1);
    close(fds[0]);
    close(fds[1]);
    signal(SIGUSR1, SIG_DFL);
    *out = p;
}

TEST(main_green_read_ends_with_eintr_without_sa_restart)
{
    struct parked_read p;

    read_with_signal(0, 1, &p);

    CHECK(p.r == -1 && p.err == EINTR);
    CHECK(pthread_equal(p.self_inside, pthread_self()));
}

TEST(main_green_read_goes_on_with_sa_restart)
{
    struct parked_read p;

    read_with_signal(SA_RESTART, 1, &p);

    CHECK(p.r == 1);
}

TEST(other_green_threads_are_not_interrupted)
{
    struct parked_read p;

    read_with_signal(0, 0, &p);

    CHECK(p.r == 1);
    CHECK(!pthread_equal(p.self_inside, pthread_self()));
}

int main(void)
{
    alarm(60);
    RUN(oldact_reports_the_programs_handler);
    RUN(handlers_get_the_kernels_arguments);
    RUN(main_green_read_ends_with_eintr_without_sa_restart);
    RUN(main_green_read_goes_on_with_sa_restart);
    RUN(other_green_threads_are_not_interrupted);
    return CHECK_DONE();
}
