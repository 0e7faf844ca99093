/* preload/sleep.c - sleeps that park only the green thread.
 *
 * sleep, usleep, nanosleep and clock_nanosleep keep libc's contracts:
 * EINVAL for a bad timespec, the time left in *rem (or the return value)
 * when interrupted, and clock_nanosleep's habit of returning the error
 * number instead of setting errno. Absolute sleeps are measured against
 * the clock they name; sleeps on CPU-time clocks pass through, since no
 * hub timer can measure them.
 */
#include <time.h>

#include "preload/pl.h"

static int pl_ts_valid(const struct timespec *ts)
{
    return ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000;
}

static double pl_ts_sec(const struct timespec *ts)
{
    return (double)ts->tv_sec + (double)ts->tv_nsec * 1e-9;
}

static void pl_sec_ts(double s, struct timespec *ts)
{
    if (s < 0)
        s = 0;
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)((s - (double)ts->tv_sec) * 1e9);
}

PL_SITE(pl_cs_sleep, "sleep", SLEEP, NONE);
PL_SITE(pl_cs_usleep, "usleep", SLEEP, NONE);
PL_SITE(pl_cs_nanosleep, "nanosleep", SLEEP, NONE);
PL_SITE(pl_cs_clock_nanosleep, "clock_nanosleep", SLEEP, NONE);

/* Parks for seconds (cs names the park); returns 0, or -1/EINTR with
 * *left set. */
static int pl_sleep_for(double seconds, double *left,
                        const struct green_callsite *cs)
{
    double end = pl_now() + seconds;
    int saved = errno;

    green_note(cs, NULL);
    if (green_sleep(seconds) == 0) {
        errno = saved; /* other green threads ran meanwhile */
        return 0;
    }
    *left = end - pl_now();
    return -1;
}

PL_EXPORT unsigned int sleep(unsigned int s)
{
    double left;

    if (pl_likely(!pl_in_green()))
        return REAL(sleep)(s);
    if (pl_sleep_for((double)s, &left, &pl_cs_sleep) == 0)
        return 0;
    return (unsigned int)(left + 0.999999);
}

PL_EXPORT int usleep(useconds_t us)
{
    double left;

    if (pl_likely(!pl_in_green()))
        return REAL(usleep)(us);
    return pl_sleep_for((double)us * 1e-6, &left, &pl_cs_usleep);
}

PL_EXPORT int nanosleep(const struct timespec *req, struct timespec *rem)
{
    double left;

    if (pl_likely(!pl_in_green()))
        return REAL(nanosleep)(req, rem);
    if (!pl_ts_valid(req) || req->tv_sec < 0) {
        errno = EINVAL;
        return -1;
    }
    if (pl_sleep_for(pl_ts_sec(req), &left, &pl_cs_nanosleep) == 0)
        return 0;
    if (rem)
        pl_sec_ts(left, rem);
    return -1;
}

PL_EXPORT int clock_nanosleep(clockid_t clk, int flags,
                              const struct timespec *req, struct timespec *rem)
{
    struct timespec now;
    double seconds, left;
    int saved = errno;

    if (pl_likely(!pl_in_green()))
        return REAL(clock_nanosleep)(clk, flags, req, rem);
    switch (clk) {
    case CLOCK_REALTIME:
    case CLOCK_MONOTONIC:
    case CLOCK_BOOTTIME:
    case CLOCK_TAI:
        break;
    default: /* CPU-time clocks, or invalid: libc decides */
        return REAL(clock_nanosleep)(clk, flags, req, rem);
    }
    if (!pl_ts_valid(req) || req->tv_sec < 0)
        return EINVAL; /* the kernel refuses tv_sec < 0, absolute too */
    seconds = pl_ts_sec(req);
    if (flags & TIMER_ABSTIME) {
        if (clock_gettime(clk, &now) < 0)
            return errno;
        seconds -= pl_ts_sec(&now);
    }
    if (seconds <= 0)
        return 0;
    if (pl_sleep_for(seconds, &left, &pl_cs_clock_nanosleep) == 0) {
        errno = saved;
        return 0;
    }
    if (rem && !(flags & TIMER_ABSTIME))
        pl_sec_ts(left, rem);
    errno = saved;
    return EINTR;
}
