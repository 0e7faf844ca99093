/* tests/hub/test_switch.c - green threads: spawn, run order, yield, join,
 * detach, deep stacks, stack reuse, many threads at once.
 *
 * Built twice: with the assembly switch and with -DHUB_CTX_UCONTEXT, so
 * both context implementations are held to the same behaviour.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hub/green.h"
#include "tests/check.h"

static char trace[64];
static size_t trace_len;

static void tracer(void *arg)
{
    char c = (char)(intptr_t)arg;

    for (int i = 0; i < 3; i++) {
        trace[trace_len++] = c;
        green_yield();
    }
}

/* Threads run in spawn order and yield round-robin. */
TEST(yield_round_robin)
{
    struct green *a, *b;

    trace_len = 0;
    a = green_spawn(tracer, (void *)(intptr_t)'a', NULL);
    b = green_spawn(tracer, (void *)(intptr_t)'b', NULL);
    CHECK(a && b);
    CHECK(green_current() == NULL);
    CHECK(green_join(a, -1) == 0);
    CHECK(green_join(b, -1) == 0);
    trace[trace_len] = 0;
    CHECK(strcmp(trace, "ababab") == 0);
}

static void set_flag(void *arg) { *(int *)arg = 1; }

/* Spawning does not run the thread; joining does. */
TEST(spawn_is_lazy)
{
    int flag = 0;
    struct green *g = green_spawn(set_flag, &flag, NULL);

    CHECK(g);
    CHECK(flag == 0);
    CHECK(green_join(g, -1) == 0);
    CHECK(flag == 1);
}

struct joiner_arg {
    struct green *target;
    int rc, saw_flag, *flag;
};

static void joiner(void *arg)
{
    struct joiner_arg *j = arg;

    j->rc = green_join(j->target, -1);
    j->saw_flag = *j->flag;
}

static void slow_setter(void *arg)
{
    green_sleep(0.02);
    *(int *)arg = 1;
}

/* A green thread joining another parks until it finishes. */
TEST(join_from_green)
{
    int flag = 0;
    struct joiner_arg j = {0};
    struct green *g;

    j.flag = &flag;
    j.target = green_spawn(slow_setter, &flag, NULL);
    g = green_spawn(joiner, &j, NULL);
    CHECK(j.target && g);
    CHECK(green_join(g, -1) == 0);
    CHECK(j.rc == 0);
    CHECK(j.saw_flag == 1);
}

static void self_join(void *arg)
{
    int *rc = arg;

    *rc = green_join(green_current(), -1) == -1 && errno == EDEADLK;
}

TEST(join_self_is_edeadlk)
{
    int ok = 0;
    struct green *g = green_spawn(self_join, &ok, NULL);

    CHECK(g && green_join(g, -1) == 0);
    CHECK(ok);
}

static void sleeper(void *arg) { green_sleep(*(double *)arg); }

TEST(join_timeout)
{
    double t = 0.3;
    struct green *g = green_spawn(sleeper, &t, NULL);
    double t0 = check_now();

    CHECK(g);
    CHECK(green_join(g, 0.05) == -1 && errno == ETIMEDOUT);
    CHECK(check_now() - t0 >= 0.045);
    CHECK(green_join(g, -1) == 0); /* still joinable after a timeout */
}

static int detached_ran;
static void detached_fn(void *arg) { detached_ran++; green_yield(); }

TEST(detach_frees_itself)
{
    struct green_stats st;

    detached_ran = 0;
    for (int i = 0; i < 100; i++) {
        struct green *g = green_spawn(detached_fn, NULL, NULL);
        CHECK(g);
        green_detach(g);
    }
    green_sleep(0.01); /* from the hub context: runs them all */
    CHECK(detached_ran == 100);
    green_get_stats(&st);
    CHECK(st.live == 0);
}

static void wq_waiter(void *arg)
{
    struct green_wq *wq = arg;

    green_wq_wait(wq, -1);
    trace[trace_len++] = 'w';
}

static void wq_waker(void *arg)
{
    struct green_wq *wq = arg;

    trace[trace_len++] = 'k';
    CHECK_OR(green_wq_wake_one(wq) == 1, );
    trace[trace_len++] = 'K'; /* waking does not switch */
    green_yield();
    CHECK_OR(green_wq_wake_all(wq) == 2, );
}

TEST(wait_queue_fifo)
{
    struct green_wq wq = GREEN_WQ_INIT;
    struct green *w1, *w2, *w3, *k;

    trace_len = 0;
    w1 = green_spawn(wq_waiter, &wq, NULL);
    w2 = green_spawn(wq_waiter, &wq, NULL);
    w3 = green_spawn(wq_waiter, &wq, NULL);
    k = green_spawn(wq_waker, &wq, NULL);
    CHECK(green_join(k, -1) == 0);
    CHECK(green_join(w1, -1) == 0 && green_join(w2, -1) == 0 &&
          green_join(w3, -1) == 0);
    trace[trace_len] = 0;
    CHECK(strcmp(trace, "kKwww") == 0);
    CHECK(wq.head == NULL && wq.tail == NULL);
}

static void wq_timeout(void *arg)
{
    struct green_wq wq = GREEN_WQ_INIT;

    *(int *)arg = green_wq_wait(&wq, 0.02) == -1 && errno == ETIMEDOUT &&
                  wq.head == NULL;
}

TEST(wait_queue_timeout_unlinks)
{
    int ok = 0;
    struct green *g = green_spawn(wq_timeout, &ok, NULL);

    CHECK(g && green_join(g, -1) == 0);
    CHECK(ok);
}

static void interruptee(void *arg)
{
    int *out = arg;
    double t0 = check_now();

    *out = green_sleep(10) == -1 && errno == EINTR && check_now() - t0 < 1;
}

static void interrupter(void *arg)
{
    green_yield();
    green_interrupt(arg);
}

TEST(interrupt_wakes_sleep)
{
    int ok = 0;
    struct green *a = green_spawn(interruptee, &ok, NULL);
    struct green *b = green_spawn(interrupter, a, NULL);

    CHECK(a && b);
    CHECK(green_join(b, -1) == 0 && green_join(a, -1) == 0);
    CHECK(ok);
}

/* A frame chain ~600 KiB deep works on the default 1 MiB stack. */
static size_t deep(size_t n)
{
    volatile char pad[1024];

    pad[0] = (char)n;
    if (n == 0)
        return pad[0];
    return deep(n - 1) + pad[0];
}

static void deep_fn(void *arg) { *(size_t *)arg = deep(600); }

TEST(deep_stack)
{
    size_t r = 1;
    struct green *g = green_spawn(deep_fn, &r, NULL);

    CHECK(g && green_join(g, -1) == 0);
    CHECK(r != 1);
}

static void counter_fn(void *arg)
{
    green_yield();
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED);
}

/* 10,000 live threads at once, then their stacks are reused. */
TEST(ten_thousand)
{
    enum { N = 10000 };
    struct green **gs = calloc(N, sizeof *gs);
    struct green_stats st;
    int count = 0;

    CHECK(gs);
    for (int i = 0; i < N; i++) {
        gs[i] = green_spawn(counter_fn, &count, NULL);
        CHECK(gs[i]);
    }
    for (int i = 0; i < N; i++)
        CHECK(green_join(gs[i], -1) == 0);
    CHECK(count == N);
    green_get_stats(&st);
    CHECK(st.live == 0);
    CHECK(st.stacks_pooled > 0);
    free(gs);
}

TEST(bad_stack_size)
{
    struct green_attr attr = {.stack_size = 1024};

    CHECK(green_spawn(set_flag, NULL, &attr) == NULL && errno == EINVAL);
}

static void wq_forever(void *arg)
{
    struct green_wq wq = GREEN_WQ_INIT;

    *(int *)arg = green_wq_wait(&wq, -1);
}

/* Waiting on what nobody can give is reported, not spun on. */
TEST(deadlock_detected)
{
    int rc = 7;
    struct green *g = green_spawn(wq_forever, &rc, NULL);

    CHECK(g);
    CHECK(green_join(g, -1) == -1 && errno == EDEADLK);
    green_interrupt(g);
    CHECK(green_join(g, -1) == 0);
    CHECK(rc == -1);
}

static void fp_fn(void *arg)
{
    volatile double x = 1.0;

    for (int i = 0; i < 10; i++) {
        x = x * 1.5 + 0.25;
        green_yield();
    }
    *(double *)arg = x;
}

/* Floating point state survives switches (callee-saved regs, MXCSR). */
TEST(fp_state)
{
    double a = 0, b = 0, want = 1.0;
    struct green *ga = green_spawn(fp_fn, &a, NULL);
    struct green *gb = green_spawn(fp_fn, &b, NULL);

    for (int i = 0; i < 10; i++)
        want = want * 1.5 + 0.25;
    CHECK(green_join(ga, -1) == 0 && green_join(gb, -1) == 0);
    CHECK(a == want && b == want);
}

int main(void)
{
    RUN(yield_round_robin);
    RUN(spawn_is_lazy);
    RUN(join_from_green);
    RUN(join_self_is_edeadlk);
    RUN(join_timeout);
    RUN(detach_frees_itself);
    RUN(wait_queue_fifo);
    RUN(wait_queue_timeout_unlinks);
    RUN(interrupt_wakes_sleep);
    RUN(deep_stack);
    RUN(ten_thousand);
    RUN(bad_stack_size);
    RUN(deadlock_detected);
    RUN(fp_state);
    return CHECK_DONE();
}
