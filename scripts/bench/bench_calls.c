/* scripts/bench/bench_calls.c - what an interposed call costs, on each of
 * its paths: passed through (outside green threads), cooperative without
 * a park (data already there), and parked (two green threads handing a
 * byte or a lock back and forth).
 *
 * Built like a preload unit test: hub and preload objects are linked into
 * the program, so its read() is libgreen's exactly as under LD_PRELOAD.
 * `make bench-calls` runs it; best of a few rounds, as bench_switch.
 */
#include <dlfcn.h>
#include <fcntl.h>
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

/* ---- passed through: a 1-byte read of /dev/zero outside green threads -- */

static double bench_read(ssize_t (*rd)(int, void *, size_t), int fd, long n)
{
    char c;
    double t0 = now();

    for (long i = 0; i < n; i++)
        if (rd(fd, &c, 1) != 1)
            return -1;
    return (now() - t0) / (double)n;
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
    double libc = -1, pass = -1, ready = -1, pp = -1, lock = -1;
    int zero = open("/dev/zero", O_RDONLY);
    ssize_t (*libc_read)(int, void *, size_t) =
        (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");

    if (zero < 0) {
        perror("/dev/zero");
        return 1;
    }
    for (int r = 0; r < ROUNDS; r++) {
        struct ready_arg ra = {{-1, -1}, 1000000, -1};
        struct pp_arg pa, pb;
        struct sem_arg sa, sb;
        sem_t s1, s2;
        int sv[2];
        struct green *g;

        libc = best(libc, bench_read(libc_read, zero, 5000000));
        pass = best(pass, bench_read(read, zero, 5000000));

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
    printf("libc's own read() of /dev/zero:                %7.1f ns per call\n",
           libc * 1e9);
    printf("read() passed through (outside green threads): %7.1f ns per call\n",
           pass * 1e9);
    printf("recv() in a green thread, data ready:          %7.1f ns per call\n",
           ready * 1e9);
    printf("read()/write() ping-pong, parks on the hub:    %7.1f ns per park\n",
           pp * 1e9);
    printf("sem_wait()/sem_post() hand-off, parks:         %7.1f ns per park\n",
           lock * 1e9);
    printf("(best of %d rounds)\n", ROUNDS);
    return 0;
}
