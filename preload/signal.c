/* preload/signal.c - sigaction(), signal() and siginterrupt(): a handler
 * the program installs also wakes the main green thread.
 *
 * Outside libgreen a signal whose handler was installed without
 * SA_RESTART ends the main thread's blocking call with EINTR, and that is
 * how CPython gets to run its Python handlers (PEP 475). Inside the green
 * thread that holds the main role (hub/mainrole.c) the blocking call is a
 * park on the hub, which no signal ends by itself. So each handler the
 * program installs is installed as a trampoline that calls it with the
 * very same arguments and then, if the program asked for no SA_RESTART,
 * tells the hub (green_signal_note, async-signal safe), which ends the
 * main green thread's park with EINTR.
 *
 * The caller's view is kept (hard rule 3): sigaction's oldact reports the
 * program's own handler and flags, never the trampoline; SIG_DFL and
 * SIG_IGN, SIGKILL/SIGSTOP and the synchronous fault signals (a fault is
 * raised by the code that runs, never while a thread is parked) pass
 * straight through. Nothing runs on the pass-through paths but this
 * table's bookkeeping; the trampoline runs only when a signal arrives.
 * signal() and siginterrupt() are rebuilt on our sigaction, with glibc's
 * semantics (BSD signal(): SA_RESTART unless siginterrupt(sig, 1)),
 * because glibc's own versions call its sigaction internally.
 */
#include <signal.h>
#include <string.h>

#include "preload/pl.h"
#include "preload/real.h"

/* The program's handler and flags for each signal we wrap. Written by
 * sigaction (which may itself run in a handler: no locks), read by the
 * trampoline. */
static struct {
    void *fn;
    int flags;
} pl_sig_tab[_NSIG];

/* Signals siginterrupt(sig, 1) asked to interrupt (bit sig % 64 of
 * word sig / 64). */
static uint64_t pl_sig_intr[(_NSIG + 63) / 64];
#define PL_SIG_WORD(sig) (&pl_sig_intr[(unsigned)(sig) / 64])
#define PL_SIG_BIT(sig) (1ull << ((unsigned)(sig) % 64))

static int pl_sig_wrappable(int sig)
{
    switch (sig) {
    case SIGKILL: case SIGSTOP:
    case SIGSEGV: case SIGBUS: case SIGILL: case SIGFPE: case SIGTRAP:
    case SIGSYS:
        return 0;
    default:
        return sig > 0 && sig < _NSIG;
    }
}

static void pl_sig_trampoline(int sig, siginfo_t *si, void *uc)
{
    void *fn = __atomic_load_n(&pl_sig_tab[sig].fn, __ATOMIC_ACQUIRE);
    int flags = __atomic_load_n(&pl_sig_tab[sig].flags, __ATOMIC_RELAXED);

    if (flags & SA_SIGINFO)
        ((void (*)(int, siginfo_t *, void *))fn)(sig, si, uc);
    else if (fn != (void *)SIG_DFL && fn != (void *)SIG_IGN)
        ((void (*)(int))fn)(sig);
    if (!(flags & SA_RESTART)) {
        int saved = errno;
        green_signal_note();
        errno = saved;
    }
}

/* The kernel's view of a handler becomes the caller's: the trampoline is
 * shown as the handler and flags (fn, flags) it stood for. */
static void pl_sig_unwrap(struct sigaction *sa, void *fn, int flags)
{
    if (sa->sa_sigaction != pl_sig_trampoline)
        return;
    sa->sa_handler = (sighandler_t)fn;
    sa->sa_flags = (sa->sa_flags & ~SA_SIGINFO) | (flags & SA_SIGINFO);
}

static int pl_sigaction(int sig, const struct sigaction *act,
                        struct sigaction *oldact)
{
    void *prev_fn, *fn;
    int prev_flags, rc;
    struct sigaction mine;

    if (pl_disabled || !pl_sig_wrappable(sig))
        return REAL(sigaction)(sig, act, oldact);
    prev_fn = __atomic_load_n(&pl_sig_tab[sig].fn, __ATOMIC_ACQUIRE);
    prev_flags = __atomic_load_n(&pl_sig_tab[sig].flags, __ATOMIC_RELAXED);
    fn = act ? (void *)act->sa_handler : NULL;
    if (!act || fn == (void *)SIG_DFL || fn == (void *)SIG_IGN) {
        rc = REAL(sigaction)(sig, act, oldact);
    } else {
        mine = *act;
        mine.sa_sigaction = pl_sig_trampoline;
        mine.sa_flags |= SA_SIGINFO;
        /* flags first: a signal in between sees the new handler with
         * flags that are at worst the new ones too */
        __atomic_store_n(&pl_sig_tab[sig].flags, act->sa_flags, __ATOMIC_RELAXED);
        __atomic_store_n(&pl_sig_tab[sig].fn, fn, __ATOMIC_RELEASE);
        rc = REAL(sigaction)(sig, &mine, oldact);
        if (rc < 0) {
            int saved = errno;
            __atomic_store_n(&pl_sig_tab[sig].flags, prev_flags, __ATOMIC_RELAXED);
            __atomic_store_n(&pl_sig_tab[sig].fn, prev_fn, __ATOMIC_RELEASE);
            errno = saved;
        }
    }
    if (rc == 0 && oldact)
        pl_sig_unwrap(oldact, prev_fn, prev_flags);
    return rc;
}

PL_EXPORT int sigaction(int sig, const struct sigaction *act,
                        struct sigaction *oldact)
{
    return pl_sigaction(sig, act, oldact);
}

PL_EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
    struct sigaction act, old;

    if (pl_disabled)
        return REAL(signal)(sig, handler);
    if (sig <= 0 || sig >= _NSIG) {
        errno = EINVAL;
        return SIG_ERR;
    }
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    sigemptyset(&act.sa_mask);
    sigaddset(&act.sa_mask, sig);
    if (!(__atomic_load_n(PL_SIG_WORD(sig), __ATOMIC_RELAXED) & PL_SIG_BIT(sig)))
        act.sa_flags = SA_RESTART;
    if (pl_sigaction(sig, &act, &old) < 0)
        return SIG_ERR;
    return old.sa_handler;
}

PL_EXPORT int siginterrupt(int sig, int flag)
{
    struct sigaction act;

    if (pl_disabled)
        return REAL(siginterrupt)(sig, flag);
    if (sig <= 0 || sig >= _NSIG) {
        errno = EINVAL;
        return -1;
    }
    if (pl_sigaction(sig, NULL, &act) < 0)
        return -1;
    if (flag) {
        __atomic_or_fetch(PL_SIG_WORD(sig), PL_SIG_BIT(sig), __ATOMIC_RELAXED);
        act.sa_flags &= ~SA_RESTART;
    } else {
        __atomic_and_fetch(PL_SIG_WORD(sig), ~PL_SIG_BIT(sig), __ATOMIC_RELAXED);
        act.sa_flags |= SA_RESTART;
    }
    return pl_sigaction(sig, &act, NULL);
}
