/* scripts/bench/bench_timer.c - how late a green thread's sleep ends.
 *
 * Green threads sleep odd lengths (so that no wait is a whole number of
 * milliseconds) in three settings: alone; 200 at once, each sleeping
 * 50 ms again as soon as it wakes, as the requests of a sleep(0.05)
 * benchmark do; and alone again, with a CPU-bound green thread yielding
 * all the while, so the hub polls between rounds of ready threads.
 * Lateness is the clock after the wake minus the deadline. Reported:
 * median, 90th and 99th percentile and maximum, in microseconds. The
 * hub's own lateness is a few microseconds; a loaded machine adds its
 * scheduling delays to every figure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "hub/green.h"

#define SOLO 200
#define CROWD 200
#define CROWD_ROUNDS 10

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double lates[CROWD * CROWD_ROUNDS];
static size_t nlates;
static int spinning;

static void sleep_and_measure(double s)
{
    double t0 = now();

    green_sleep(s);
    lates[nlates++] = now() - t0 - s;
}

static void solo(void *arg)
{
    for (int i = 0; i < SOLO; i++)
        sleep_and_measure(0.0013 + 0.0001 * (i % 17));
    spinning = 0;
}

static void crowd(void *arg)
{
    /* start spread over one period, as requests arriving */
    green_sleep(0.05 * (double)(size_t)arg / CROWD);
    for (int i = 0; i < CROWD_ROUNDS; i++)
        sleep_and_measure(0.05);
}

static void spinner(void *arg)
{
    while (spinning) {
        for (volatile int i = 0; i < 2000; i++)
            ;
        green_yield();
    }
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void report(const char *what)
{
    qsort(lates, nlates, sizeof lates[0], cmp);
    printf("%-44s p50 %6.0f  p90 %6.0f  p99 %6.0f  max %6.0f us\n", what,
           lates[nlates / 2] * 1e6, lates[nlates * 9 / 10] * 1e6,
           lates[nlates * 99 / 100] * 1e6, lates[nlates - 1] * 1e6);
    nlates = 0;
}

int main(void)
{
    struct green *g[CROWD], *spin;

    g[0] = green_spawn(solo, NULL, NULL);
    green_join(g[0], -1);
    report("one thread, sleeps of 1.3-2.9 ms:");

    for (size_t i = 0; i < CROWD; i++)
        g[i] = green_spawn(crowd, (void *)i, NULL);
    for (size_t i = 0; i < CROWD; i++)
        green_join(g[i], -1);
    report("200 threads, each sleeping 50 ms in turn:");

    spinning = 1;
    spin = green_spawn(spinner, NULL, NULL);
    g[0] = green_spawn(solo, NULL, NULL);
    green_join(g[0], -1);
    green_join(spin, -1);
    report("one thread, another busy yielding meanwhile:");
    return 0;
}
