/* scripts/bench/bench_switch.c - what one green thread switch costs.
 *
 * Two green threads yield to each other N times. Every yield is two
 * context switches (green -> hub context -> next green), plus the run
 * queue work, so we report ns per switch = elapsed / (2 * yields), and
 * also the raw register switch alone (hub_ctx_switch ping-pong), which is
 * the number the assembly is responsible for.
 *
 * Many short rounds, the fastest kept: on a shared machine most rounds
 * are slowed by other processes, and the fastest is the one that ran
 * alone (a round can be slowed, never sped up).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "hub/ctx.h"
#include "hub/green.h"

#define N 100000
#define ROUNDS 100

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void yielder(void *arg)
{
    for (long i = 0; i < N; i++)
        green_yield();
}

static struct hub_ctx main_ctx, co_ctx;

static void pingpong(void)
{
    for (;;)
        hub_ctx_switch(&co_ctx, &main_ctx);
}

int main(void)
{
    double t0, t1, best_raw = 1e9, best_yield = 1e9;

    for (int round = 0; round < ROUNDS; round++) {
        size_t size = 64 * 1024;
        char *stack = mmap(NULL, size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        hub_ctx_make(&co_ctx, stack, size, pingpong);
        t0 = now();
        for (long i = 0; i < N; i++)
            hub_ctx_switch(&main_ctx, &co_ctx);
        t1 = now();
        if ((t1 - t0) * 1e9 / (2.0 * N) < best_raw)
            best_raw = (t1 - t0) * 1e9 / (2.0 * N);
        munmap(stack, size);

        struct green *a = green_spawn(yielder, NULL, NULL);
        struct green *b = green_spawn(yielder, NULL, NULL);
        t0 = now();
        green_join(a, -1);
        green_join(b, -1);
        t1 = now();
        /* 2N yields in all, each = switch out + switch in */
        if ((t1 - t0) * 1e9 / (4.0 * N) < best_yield)
            best_yield = (t1 - t0) * 1e9 / (4.0 * N);
    }
    printf("register switch (hub_ctx_switch):      %.1f ns per switch\n", best_raw);
    printf("green_yield through the scheduler:     %.1f ns per switch\n", best_yield);
    printf("(%s; fastest of %d rounds of %d)\n",
           HUB_CTX_ASM ? "x86-64 assembly" : "ucontext fallback", ROUNDS, N);
    return 0;
}
