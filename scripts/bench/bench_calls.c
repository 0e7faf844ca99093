/* scripts/bench/bench_calls.c - what an interposed call costs, on each of
 * its paths: passed through (outside green threads), cooperative without
 * a park (data already there), and parked (two green threads handing a
 * byte or a lock back and forth).
 *
 * Built like a preload unit test: hub and preload objects are linked into
 * the program, so its read() is libgreen's exactly as under LD_PRELOAD,
 * and libc's own is one dlsym(RTLD_NEXT) away: the same program with and
 * without the preload, call for call.
 *
 * Passed through, the wrapper adds a few nanoseconds, which the noise of
 * a system call (tens of ns from one run to the next) would hide. So each
 * pair - libc's function and libgreen's, both called through a pointer -
 * is timed in alternation, PT_ROUNDS short rounds each (a few ms), and
 * the fastest round of each is kept: a round that a context switch or
 * another process hit is slower, never faster; the more rounds, the
 * likelier one ran undisturbed. What the wrapper adds is the
 * difference of the two minima. Two of the calls never enter the kernel
 * (pthread_self, and sem_post + sem_trywait on an uncontended semaphore),
 * so the difference stands out against their own cost; read() of one
 * byte of /dev/zero is the system call path itself.
 *
 * `make bench-calls` runs it; the cooperative and parked paths are the
 * best of ROUNDS rounds, as bench_switch.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hub/green.h"

#define ROUNDS 3

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- passed through: libc's call against libgreen's ------------------ */

#define PT_ROUNDS 200

static ssize_t (*volatile pt_read[2])(int, void *, size_t);
static pthread_t (*volatile pt_self[2])(void);
static int (*volatile pt_post[2])(sem_t *), (*volatile pt_try[2])(sem_t *);

/* Seconds per call of one round of n calls of variant v (0 libc, 1 ours). */
static double pt_round(int which, int v, long n, int fd, sem_t *sem)
{
    char c;
    double t0 = now();

    for (long i = 0; i < n; i++) {
        if (which == 0) {
            if (pt_self[v]() == 0)
                return -1;
        } else if (which == 1) {
            if (pt_post[v](sem) != 0 || pt_try[v](sem) != 0)
                return -1;
        } else if (pt_read[v](fd, &c, 1) != 1) {
            return -1;
        }
    }
    return (now() - t0) / (double)n;
}

/* The fastest round of each variant, timed in alternation. */
static void pt_pair(int which, long n, int fd, sem_t *sem, double best[2])
{
    best[0] = best[1] = 1e9;
    for (int r = 0; r < PT_ROUNDS; r++)
        for (int v = 0; v < 2; v++) {
            double t = pt_round(which, v, n, fd, sem);
            if (t >= 0 && t < best[v])
                best[v] = t;
        }
}

static void pt_report(const char *what, const double best[2])
{
    printf("  %-32s libc %6.1f  libgreen %6.1f  added %5.1f ns\n", what,
           best[0] * 1e9, best[1] * 1e9, (best[1] - best[0]) * 1e9);
}

static int bench_pass_through(int zero)
{
    double best[2];
    sem_t sem;

    pt_read[0] = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    pt_self[0] = (pthread_t (*)(void))dlsym(RTLD_NEXT, "pthread_self");
    pt_post[0] = (int (*)(sem_t *))dlsym(RTLD_NEXT, "sem_post");
    pt_try[0] = (int (*)(sem_t *))dlsym(RTLD_NEXT, "sem_trywait");
    pt_read[1] = read;
    pt_self[1] = pthread_self;
    pt_post[1] = sem_post;
    pt_try[1] = sem_trywait;
    if (!pt_read[0] || !pt_self[0] || !pt_post[0] || !pt_try[0])
        return -1;
    sem_init(&sem, 0, 0);
    printf("passed through (outside green threads), fastest of %d rounds:\n",
           PT_ROUNDS);
    pt_pair(0, 200000, zero, &sem, best);
    pt_report("pthread_self()", best);
    pt_pair(1, 100000, zero, &sem, best);
    pt_report("sem_post() + sem_trywait()", best);
    pt_pair(2, 5000, zero, &sem, best);
    pt_report("read() of 1 byte of /dev/zero", best);
    sem_destroy(&sem);
    return 0;
}

/* ---- cooperative, no park: recv of a byte that is already there -------- */

struct ready_arg {
    int fd[2];
    long n;
    double per_call;
};

static void ready_body(void *arg)
{
    struct ready_arg *a = arg;
    char c = 'x';
    double t0, spent = 0;

    for (long i = 0; i < a->n; i++) {
        if (write(a->fd[1], &c, 1) != 1)
            return;
        t0 = now();
        if (recv(a->fd[0], &c, 1, 0) != 1)
            return;
        spent += now() - t0;
    }
    a->per_call = spent / (double)a->n;
}

/* ---- parked: ping-pong through a socketpair ---------------------------- */

struct pp_arg {
    int fd;
    long n;
    int first;
};

static void pp_body(void *arg)
{
    struct pp_arg *a = arg;
    char c = 'p';

    for (long i = 0; i < a->n; i++) {
        if (a->first && write(a->fd, &c, 1) != 1)
            return;
        if (read(a->fd, &c, 1) != 1)
            return;
        if (!a->first && write(a->fd, &c, 1) != 1)
            return;
    }
}

/* ---- parked: two green threads passing a semaphore (a Python lock) ----- */

struct sem_arg {
    sem_t *mine, *theirs;
    long n;
    int first;
};

static void sem_body(void *arg)
{
    struct sem_arg *a = arg;

    for (long i = 0; i < a->n; i++) {
        if (a->first)
            sem_post(a->theirs);
        sem_wait(a->mine);
        if (!a->first)
            sem_post(a->theirs);
    }
}

static double run_pair(green_fn fn, void *a, void *b, long n)
{
    struct green *g1, *g2;
    double t0 = now();

    g1 = green_spawn(fn, a, NULL);
    g2 = green_spawn(fn, b, NULL);
    if (!g1 || !g2 || green_join(g1, -1) < 0 || green_join(g2, -1) < 0)
        return -1;
    return (now() - t0) / (double)n;
}

static double best(double a, double b) { return a < 0 || (b >= 0 && b < a) ? b : a; }

int main(void)
{
    double ready = -1, pp = -1, lock = -1;
    int zero = open("/dev/zero", O_RDONLY);

    if (zero < 0) {
        perror("/dev/zero");
        return 1;
    }
    if (bench_pass_through(zero) < 0) {
        fprintf(stderr, "libc's functions not found with dlsym(RTLD_NEXT)\n");
        return 1;
    }
    for (int r = 0; r < ROUNDS; r++) {
        struct ready_arg ra = {{-1, -1}, 1000000, -1};
        struct pp_arg pa, pb;
        struct sem_arg sa, sb;
        sem_t s1, s2;
        int sv[2];
        struct green *g;

        if (socketpair(AF_UNIX, SOCK_STREAM, 0, ra.fd) < 0)
            return 1;
        g = green_spawn(ready_body, &ra, NULL);
        if (!g || green_join(g, -1) < 0)
            return 1;
        ready = best(ready, ra.per_call);
        close(ra.fd[0]);
        close(ra.fd[1]);

        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
            return 1;
        pa = (struct pp_arg){sv[0], 200000, 1};
        pb = (struct pp_arg){sv[1], 200000, 0};
        pp = best(pp, run_pair(pp_body, &pa, &pb, 2 * 200000));
        close(sv[0]);
        close(sv[1]);

        sem_init(&s1, 0, 0);
        sem_init(&s2, 0, 0);
        sa = (struct sem_arg){&s1, &s2, 1000000, 1};
        sb = (struct sem_arg){&s2, &s1, 1000000, 0};
        lock = best(lock, run_pair(sem_body, &sa, &sb, 2 * 1000000));
        sem_destroy(&s1);
        sem_destroy(&s2);
    }
    printf("in green threads, best of %d rounds:\n", ROUNDS);
    printf("  recv(), data ready:                          %7.1f ns per call\n",
           ready * 1e9);
    printf("  read()/write() ping-pong, parks on the hub:  %7.1f ns per park\n",
           pp * 1e9);
    printf("  sem_wait()/sem_post() hand-off, parks:       %7.1f ns per park\n",
           lock * 1e9);
    return 0;
}
