/* preload/child.c - waiting for child processes without stopping the hub.
 *
 * subprocess.run() ends in os.waitpid(pid, 0): in a green thread the real
 * call would stop the OS thread, and every other green thread, for the
 * child's whole life. Inside green threads a wait that would block first
 * asks with WNOHANG; if the child is still running it parks on a pidfd
 * (readable once the child exits) and asks again. Waits for "any child"
 * (pid <= 0), for stops and continues (WUNTRACED, WCONTINUED), or on a
 * kernel without pidfd_open poll with WNOHANG at a growing interval (1 to
 * 50 ms) instead. Outside green threads, and with WNOHANG, every call is
 * libc's.
 */
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "preload/pl.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* One WNOHANG attempt: returns the pid, 0 if nothing yet, -1 on error. */
typedef pid_t (*pl_try_fn)(void *ctx);

PL_SITE(pl_cs_wait4, "wait4", WAITPID, PID);
PL_SITE(pl_cs_waitpid, "waitpid", WAITPID, PID);
PL_SITE(pl_cs_wait, "wait", WAITPID, NONE);
PL_SITE(pl_cs_wait3, "wait3", WAITPID, NONE);
PL_SITE(pl_cs_waitid, "waitid", WAITPID, PID);

/* Parks until try_fn reports something. pid > 0 with no stop/continue
 * flags can use a pidfd. cs names the parks (with the pid, if one). */
static pid_t pl_wait_child(pid_t pid, int options, pl_try_fn try_fn, void *ctx,
                           const struct green_callsite *cs)
{
    const void *obj = pid > 0 ? (const void *)(uintptr_t)pid : NULL;
    double pause = PL_PAUSE_FIRST;
    int saved = errno, pfd = -1;
    pid_t r = try_fn(ctx);

    if (r != 0)
        return r;
    if (pid > 0 && !(options & (WUNTRACED | WCONTINUED)))
        pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        int w;
        green_note(cs, obj);
        w = pfd >= 0 ? green_wait_fd(pfd, GREEN_READ, -1)
                     : pl_pause(&pause, -1, cs, obj);
        if (w < 0 && errno == EINTR) {
            r = -1;
            break;
        }
        r = try_fn(ctx);
        if (r != 0)
            break;
    }
    if (pfd >= 0) {
        int e = errno;
        REAL(close)(pfd);
        errno = e;
    }
    if (r > 0)
        errno = saved;
    return r;
}

struct pl_wait4_args {
    pid_t pid;
    int *status;
    int options;
    struct rusage *ru;
};

static pid_t pl_try_wait4(void *ctx)
{
    struct pl_wait4_args *a = ctx;

    return REAL(wait4)(a->pid, a->status, a->options | WNOHANG, a->ru);
}

static pid_t pl_wait4(pid_t pid, int *status, int options, struct rusage *ru,
                      const struct green_callsite *cs)
{
    struct pl_wait4_args a = {pid, status, options, ru};

    return pl_wait_child(pid, options, pl_try_wait4, &a, cs);
}

PL_EXPORT pid_t wait4(pid_t pid, int *status, int options, struct rusage *ru)
{
    if (pl_likely(!pl_in_green()) || (options & WNOHANG))
        return REAL(wait4)(pid, status, options, ru);
    return pl_wait4(pid, status, options, ru, &pl_cs_wait4);
}

PL_EXPORT pid_t waitpid(pid_t pid, int *status, int options)
{
    if (pl_likely(!pl_in_green()) || (options & WNOHANG))
        return REAL(waitpid)(pid, status, options);
    return pl_wait4(pid, status, options, NULL, &pl_cs_waitpid);
}

PL_EXPORT pid_t wait(int *status)
{
    if (pl_likely(!pl_in_green()))
        return REAL(wait)(status);
    return pl_wait4(-1, status, 0, NULL, &pl_cs_wait);
}

PL_EXPORT pid_t wait3(int *status, int options, struct rusage *ru)
{
    if (pl_likely(!pl_in_green()) || (options & WNOHANG))
        return REAL(wait3)(status, options, ru);
    return pl_wait4(-1, status, options, ru, &pl_cs_wait3);
}

struct pl_waitid_args {
    idtype_t idtype;
    id_t id;
    siginfo_t *info;
    int options;
};

/* waitid with WNOHANG says "nothing yet" by a zero si_pid. */
static pid_t pl_try_waitid(void *ctx)
{
    struct pl_waitid_args *a = ctx;

    a->info->si_pid = 0;
    if (REAL(waitid)(a->idtype, a->id, a->info, a->options | WNOHANG) < 0)
        return -1;
    return a->info->si_pid;
}

PL_EXPORT int waitid(idtype_t idtype, id_t id, siginfo_t *info, int options)
{
    struct pl_waitid_args a = {idtype, id, info, options};
    pid_t r;

    if (pl_likely(!pl_in_green()) || (options & WNOHANG) || !info)
        return REAL(waitid)(idtype, id, info, options);
    r = pl_wait_child(idtype == P_PID ? (pid_t)id : -1,
                      options & (WSTOPPED | WCONTINUED) ? WUNTRACED : 0,
                      pl_try_waitid, &a, &pl_cs_waitid);
    return r < 0 ? -1 : 0;
}
