/* preload/thread.c - pthread_self() as Python needs it (hard rule 11).
 *
 * Inside a green thread pthread_self() returns that green thread's own
 * identity (hub/ident.c), so RLock ownership, threading.get_ident() and
 * sys._current_frames() tell green threads apart. Outside green threads -
 * the main context included, where threading._shutdown() must find the
 * real main thread - it is libc's.
 *
 * An identity is not a real pthread_t, so every libc call that takes one
 * is interposed to map it back to the OS thread the green thread runs on:
 * pthread_kill(get_ident(), sig) signals that thread, as it would without
 * libgreen. Real pthread_t values pass through untouched.
 *
 * fork(): a thread keeps its pthread_t in the child, and CPython relies on
 * it (3.13 checks that the thread that took its import lock before the
 * fork releases it after). When a green thread forks, the child goes on
 * in its code as the main context of its only OS thread (hard rule 6), so
 * that context keeps the green thread's identity - which still maps to
 * the child's OS thread (hub/ident.c) - and so does any child it forks.
 *
 * The green thread that holds the main role (hub/mainrole.c: the one the
 * main context waits for) is the main program's continuation, so it gets
 * what the main context gets: Python then lets it install signal
 * handlers and runs them in it (docs/DESIGN.md, "The main thread").
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include "preload/pl.h"

/* The identity this OS thread's main context kept across fork(), or 0. */
static __thread uintptr_t pl_tls_kept_ident
    __attribute__((tls_model("initial-exec")));

/* The forking context's identity, from the prepare handler to the child
 * handler (glibc runs one fork's handlers at a time). */
static uintptr_t pl_fork_ident;

static void pl_self_fork_prepare(void)
{
    struct green *g = green_current();

    pl_fork_ident = g && !green_is_main(g) ? green_ident(g) : pl_tls_kept_ident;
}

static void pl_self_fork_child(void) { pl_tls_kept_ident = pl_fork_ident; }

static void pl_self_fork_register(void)
{
    pthread_atfork(pl_self_fork_prepare, NULL, pl_self_fork_child);
}

/* Registers the handlers when the first green identity is handed out:
 * before that, no context has one to keep. */
static void pl_self_fork_handlers(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    static int done;

    if (pl_likely(__atomic_load_n(&done, __ATOMIC_ACQUIRE)))
        return;
    pthread_once(&once, pl_self_fork_register);
    __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
}

PL_EXPORT pthread_t pthread_self(void)
{
    struct green *g = green_current();

    if (pl_likely(!g) || pl_disabled || pl_unlikely(green_is_main(g))) {
        if (pl_unlikely(pl_tls_kept_ident))
            return (pthread_t)pl_tls_kept_ident;
        return REAL(pthread_self)();
    }
    pl_self_fork_handlers();
    return (pthread_t)green_ident(g);
}

/* A green identity becomes the real thread behind it; an identity whose
 * hub is gone becomes an id no thread has (ESRCH from libc). */
static pthread_t pl_real_thread(pthread_t t)
{
    uintptr_t real;

    if (pl_likely(!green_ident_is_ours((uintptr_t)t)))
        return t;
    real = green_ident_real((uintptr_t)t);
    return (pthread_t)real;
}

#define PL_CHECK_THREAD(t, err)                                            \
    do {                                                                   \
        t = pl_real_thread(t);                                             \
        if (!t)                                                            \
            return err;                                                    \
    } while (0)

PL_EXPORT int pthread_kill(pthread_t t, int sig)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_kill)(t, sig);
}

PL_EXPORT int pthread_sigqueue(pthread_t t, int sig, const union sigval val)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_sigqueue)(t, sig, val);
}

PL_EXPORT int pthread_getattr_np(pthread_t t, pthread_attr_t *attr)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_getattr_np)(t, attr);
}

PL_EXPORT int pthread_getcpuclockid(pthread_t t, clockid_t *clk)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_getcpuclockid)(t, clk);
}

PL_EXPORT int pthread_getschedparam(pthread_t t, int *policy,
                                    struct sched_param *param)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_getschedparam)(t, policy, param);
}

PL_EXPORT int pthread_setschedparam(pthread_t t, int policy,
                                    const struct sched_param *param)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_setschedparam)(t, policy, param);
}

PL_EXPORT int pthread_setschedprio(pthread_t t, int prio)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_setschedprio)(t, prio);
}

PL_EXPORT int pthread_getname_np(pthread_t t, char *name, size_t len)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_getname_np)(t, name, len);
}

PL_EXPORT int pthread_setname_np(pthread_t t, const char *name)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_setname_np)(t, name);
}

PL_EXPORT int pthread_getaffinity_np(pthread_t t, size_t size, cpu_set_t *set)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_getaffinity_np)(t, size, set);
}

PL_EXPORT int pthread_setaffinity_np(pthread_t t, size_t size,
                                     const cpu_set_t *set)
{
    PL_CHECK_THREAD(t, ESRCH);
    return REAL(pthread_setaffinity_np)(t, size, set);
}

/* Joining or detaching an identity would act on the OS thread that runs
 * the hub itself: refuse as libc refuses a join of oneself. */
PL_EXPORT int pthread_join(pthread_t t, void **ret)
{
    if (green_ident_is_ours((uintptr_t)t))
        return EDEADLK;
    return REAL(pthread_join)(t, ret);
}

PL_EXPORT int pthread_detach(pthread_t t)
{
    if (green_ident_is_ours((uintptr_t)t))
        return EINVAL;
    return REAL(pthread_detach)(t);
}
