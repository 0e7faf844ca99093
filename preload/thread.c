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
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include "preload/pl.h"

PL_EXPORT pthread_t pthread_self(void)
{
    struct green *g = green_current();

    if (pl_likely(!g) || pl_disabled)
        return REAL(pthread_self)();
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
