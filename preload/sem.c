/* preload/sem.c - POSIX semaphores that park green threads (hard rule 10).
 *
 * CPython's threading.Lock (and with it RLock, Condition, Event, Queue...)
 * waits on a sem_t. A green thread that blocked in the real sem_wait would
 * stop its whole OS thread - including the green thread that holds the
 * lock and would release it: a deadlock. So inside a green thread a wait
 * that cannot succeed at once parks on the hub instead, and sem_post wakes
 * one parked green waiter after the real post.
 *
 * The semaphore itself stays the kernel's: its count is only ever changed
 * by the real sem_trywait and sem_post, so OS threads blocked in the real
 * sem_wait and green threads parked here compete fairly for the same
 * count, in both directions.
 *
 * The lost wake-up: a waiter registers itself in the table *before* its
 * last sem_trywait, so a post either lands before that try (the try sees
 * the count) or finds the waiter registered. A waker unlinks the waiter it
 * picks and marks it woken under the table lock; such a waiter always
 * receives exactly one green_unpark (direct on its own hub, posted from
 * any other thread), and does not leave until it has: no wake-up can
 * land on a later, unrelated park.
 *
 * fork(): every registered waiter is a parked green thread of the parent,
 * which the child does not have (hard rule 6; the forking context itself
 * is never registered: it is running). The child starts with an empty
 * table, so a post there cannot spend its wake-up on a dead waiter, nor
 * sem_post keep paying for the table lookup.
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>

#include "preload/pl.h"

struct pl_semwait {
    sem_t *sem;
    struct green *g;
    struct hub *hub;
    struct pl_semwait *next, *prev;
    int woken;
};

#define PL_SEM_BUCKETS 256

static pthread_mutex_t pl_sem_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pl_semwait *pl_sem_table[PL_SEM_BUCKETS];
static int pl_sem_waiters; /* read without the lock by sem_post */

/* The pthread_atfork handlers, registered with the first green wait. The
 * forking thread holds pl_sem_lock across fork(), so the copy is whole. */
static void pl_sem_fork_prepare(void) { pthread_mutex_lock(&pl_sem_lock); }
static void pl_sem_fork_parent(void) { pthread_mutex_unlock(&pl_sem_lock); }

static void pl_sem_fork_child(void)
{
    pthread_mutex_init(&pl_sem_lock, NULL);
    memset(pl_sem_table, 0, sizeof pl_sem_table);
    pl_sem_waiters = 0;
}

static void pl_sem_fork_register(void)
{
    pthread_atfork(pl_sem_fork_prepare, pl_sem_fork_parent, pl_sem_fork_child);
}

static pthread_once_t pl_sem_fork_once = PTHREAD_ONCE_INIT;

static struct pl_semwait **pl_sem_bucket(sem_t *sem)
{
    uintptr_t h = (uintptr_t)sem;

    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    return &pl_sem_table[(h >> 40) % PL_SEM_BUCKETS];
}

static void pl_sem_register(struct pl_semwait *w)
{
    struct pl_semwait **b = pl_sem_bucket(w->sem);

    pthread_mutex_lock(&pl_sem_lock);
    w->woken = 0;
    w->prev = NULL;
    w->next = *b;
    if (w->next)
        w->next->prev = w;
    *b = w;
    __atomic_add_fetch(&pl_sem_waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&pl_sem_lock);
}

static void pl_sem_unlink_locked(struct pl_semwait *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        *pl_sem_bucket(w->sem) = w->next;
    if (w->next)
        w->next->prev = w->prev;
    __atomic_sub_fetch(&pl_sem_waiters, 1, __ATOMIC_SEQ_CST);
}

/* Takes w out of the table unless a waker already did. Returns 1 if w
 * was woken (an unpark is on its way or came), 0 if we removed it. */
static int pl_sem_withdraw(struct pl_semwait *w)
{
    int woken;

    pthread_mutex_lock(&pl_sem_lock);
    woken = w->woken;
    if (!woken)
        pl_sem_unlink_locked(w);
    pthread_mutex_unlock(&pl_sem_lock);
    return woken;
}

static void pl_sem_unpark_cb(void *g) { green_unpark(g); }

PL_SITE(pl_cs_sem_wait, "sem_wait", SEM, ADDR);
PL_SITE(pl_cs_sem_timedwait, "sem_timedwait", SEM, ADDR);
PL_SITE(pl_cs_sem_clockwait, "sem_clockwait", SEM, ADDR);

/* Waits out the one unpark a woken waiter is owed. */
static void pl_sem_absorb(const struct green_callsite *cs, sem_t *sem)
{
    do
        green_note(cs, sem);
    while (green_park(-1) < 0); /* an interrupt is not the unpark we owe */
}

/* The oldest waiter? The bucket is LIFO, which is fine: the woken one
 * only retries, and the kernel count decides who gets in. */
static void pl_sem_wake_one(sem_t *sem)
{
    struct pl_semwait *w;
    struct green *g = NULL;
    struct hub *hub = NULL;

    pthread_mutex_lock(&pl_sem_lock);
    for (w = *pl_sem_bucket(sem); w; w = w->next) {
        if (w->sem == sem) {
            pl_sem_unlink_locked(w);
            w->woken = 1;
            g = w->g;
            hub = w->hub;
            break;
        }
    }
    pthread_mutex_unlock(&pl_sem_lock);
    if (!g)
        return;
    if (hub == green_hub_peek() && !green_vforked())
        green_unpark(g);
    else
        green_hub_post(hub, pl_sem_unpark_cb, g);
}

/* The cooperative wait: deadline is absolute monotonic, < 0 for none;
 * cs names the parks (with the semaphore's address, the lock's identity
 * in a dump). Returns 0 with the semaphore taken, or -1 with errno
 * ETIMEDOUT/EINTR. */
static int pl_sem_wait_green(sem_t *sem, double deadline,
                             const struct green_callsite *cs)
{
    struct pl_semwait w;

    /* Never under pl_sem_lock: a fork in progress holds glibc's atfork
     * lock while its prepare handler waits for ours. */
    pthread_once(&pl_sem_fork_once, pl_sem_fork_register);
    w.sem = sem;
    w.g = green_current();
    w.hub = green_hub_of(w.g);
    for (;;) {
        double timeout = -1;
        int err;

        pl_sem_register(&w);
        if (sem_trywait(sem) == 0) {
            if (pl_sem_withdraw(&w)) {
                pl_sem_absorb(cs, sem);
                pl_sem_wake_one(sem); /* pass on the wake we were given */
            }
            return 0;
        }
        if (deadline >= 0) {
            timeout = deadline - pl_now();
            if (timeout < 0)
                timeout = 0;
        }
        green_note(cs, sem);
        if (green_park(timeout) == 0)
            continue; /* woken by a post: try again */
        err = errno;
        if (pl_sem_withdraw(&w)) {
            /* A post chose us as the deadline or interrupt hit. */
            pl_sem_absorb(cs, sem);
            if (sem_trywait(sem) == 0)
                return 0;
        }
        errno = err;
        return -1;
    }
}

PL_EXPORT int sem_wait(sem_t *sem)
{
    if (pl_likely(!pl_in_green()))
        return REAL(sem_wait)(sem);
    if (sem_trywait(sem) == 0)
        return 0;
    return pl_sem_wait_green(sem, -1, &pl_cs_sem_wait);
}

static double pl_abs_to_deadline(clockid_t clk, const struct timespec *abs)
{
    struct timespec now;

    clock_gettime(clk, &now);
    return pl_now() + (double)(abs->tv_sec - now.tv_sec) +
           (double)(abs->tv_nsec - now.tv_nsec) * 1e-9;
}

PL_EXPORT int sem_timedwait(sem_t *sem, const struct timespec *abs)
{
    if (pl_likely(!pl_in_green()))
        return REAL(sem_timedwait)(sem, abs);
    if (sem_trywait(sem) == 0)
        return 0;
    if (abs->tv_nsec < 0 || abs->tv_nsec >= 1000000000) {
        errno = EINVAL;
        return -1;
    }
    return pl_sem_wait_green(sem, pl_abs_to_deadline(CLOCK_REALTIME, abs),
                             &pl_cs_sem_timedwait);
}

PL_EXPORT int sem_clockwait(sem_t *sem, clockid_t clk, const struct timespec *abs)
{
    if (pl_likely(!pl_in_green()))
        return REAL(sem_clockwait)(sem, clk, abs);
    if (sem_trywait(sem) == 0)
        return 0;
    if ((clk != CLOCK_REALTIME && clk != CLOCK_MONOTONIC) ||
        abs->tv_nsec < 0 || abs->tv_nsec >= 1000000000) {
        errno = EINVAL;
        return -1;
    }
    return pl_sem_wait_green(sem, pl_abs_to_deadline(clk, abs),
                             &pl_cs_sem_clockwait);
}

/* From any thread, green or not: green waiters must hear of it. */
PL_EXPORT int sem_post(sem_t *sem)
{
    int r = REAL(sem_post)(sem);

    if (r == 0 && __atomic_load_n(&pl_sem_waiters, __ATOMIC_SEQ_CST))
        pl_sem_wake_one(sem);
    return r;
}
