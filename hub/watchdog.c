/* hub/watchdog.c - LIBGREEN_BLOCK_WARN_MS: naming the green thread that
 * keeps its hub from running anything else.
 *
 * Green threads are cooperative. One that computes for long, or makes a
 * blocking call libgreen does not turn into a park (a regular file on a
 * slow disk, a C extension's raw system call, anything with
 * LIBGREEN_HOOKS=off), stops every other green thread of its OS thread:
 * the whole worker. A watchdog OS thread - made only when the variable is
 * set (hard rule 12), with every signal blocked - looks at each hub every
 * quarter of the limit. When a green thread is running and the hub's
 * switch counter has not moved for the limit, it sends HUB_SIG_BLOCK to
 * that hub's OS thread. The handler runs on the stuck thread itself, the
 * only one that can read its registers, and writes the green thread's id,
 * the layer above's description of it, its C stack and its interpreter
 * stack, all async-signal-safe (report.h, unwind.c, the traceback hook).
 * When the thread finally yields, the watchdog says how long it ran.
 *
 * The watchdog reads a hub's switch counter and current thread without a
 * lock: it only compares them from one look to the next, and a stale value
 * delays a warning by one period. Its own fields in struct hub (wd_*) are
 * its alone. The signal may end a system call of the stuck code early with
 * EINTR, as any signal may. Like faulthandler's, the report is best
 * effort: it reads Python frames that may be changing, and libunwind looks
 * up the loaded objects under the dynamic loader's lock, which a thread
 * stuck inside dlopen() would hold. It is a diagnostic to turn on when
 * needed.
 *
 * fork: the thread does not exist in the child; hub/debug.c starts a new
 * one when the child's first hub runs. Hubs left from the parent stay in
 * the registry (hub/ident.c) but are skipped: their pid is not ours.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hub/hub_internal.h"

#define HUB_SIG_BLOCK (SIGRTMIN + 3)

static double hub_wd_ms;       /* the limit */
static int hub_wd_running;     /* this process has its watchdog thread */

/* ---- on the stuck thread ---------------------------------------------- */

static void hub_wd_on_signal(int sig, siginfo_t *si, void *uc)
{
    const struct green_debug_hooks *hooks = hub_debug_hooks;
    struct hub *hub = hub_tls_hub;
    struct green *g = hub_tls_current;
    struct hub_report r;
    int saved = errno, fd = hub_debug_out_fd();

    (void)sig;
    (void)si;
    if (!hub || !g || g->id != hub->wd_green)
        return; /* it yielded meanwhile */
    hub_report_init(&r, fd);
    hub_report_str(&r, "libgreen: green thread ");
    hub_report_u64(&r, g->id);
    hub_report_str(&r, " has run ");
    hub_report_u64(&r, hub->wd_ran_ms);
    hub_report_str(&r, " ms without yielding: every other green thread of "
                       "process ");
    hub_report_u64(&r, (uint64_t)getpid());
    hub_report_str(&r, " waits for it (LIBGREEN_BLOCK_WARN_MS=");
    hub_report_u64(&r, (uint64_t)hub_wd_ms);
    hub_report_str(&r, ")\n");
    hub_dump_describe(&r, g, "  ", "\n");
    hub_report_str(&r, "C stack (most recent call first):\n");
    hub_unwind_signal(&r, uc);
    hub_report_flush(&r);
    if (g->info && hooks && hooks->traceback)
        hooks->traceback(fd, g->info, 1);
    errno = saved;
}

/* ---- on the watchdog thread --------------------------------------------- */

static void hub_wd_check(struct hub *hub, void *arg)
{
    double now = *(const double *)arg;
    uint64_t sw = __atomic_load_n(&hub->stats.switches, __ATOMIC_RELAXED);
    struct green *cur = __atomic_load_n(&hub->current, __ATOMIC_RELAXED);

    if (hub->pid != getpid())
        return; /* a parent's hub, in a fork child */
    if (!cur || sw != hub->wd_switches) {
        if (hub->wd_green) {
            struct hub_report r;
            hub_report_init(&r, hub_debug_out_fd());
            hub_report_str(&r, "libgreen: green thread ");
            hub_report_u64(&r, hub->wd_green);
            hub_report_str(&r, " ran about ");
            hub_report_secs(&r, now - hub->wd_since);
            hub_report_str(&r, " s without yielding\n");
            hub_report_flush(&r);
            hub->wd_green = 0;
        }
        hub->wd_switches = sw;
        hub->wd_since = now;
        return;
    }
    if (hub->wd_green || (now - hub->wd_since) * 1000.0 < hub_wd_ms)
        return;
    hub->wd_ran_ms = (uint64_t)((now - hub->wd_since) * 1000.0);
    hub->wd_green = __atomic_load_n(&cur->id, __ATOMIC_RELAXED);
    syscall(SYS_tgkill, (long)getpid(), (long)hub->tid, HUB_SIG_BLOCK);
}

static void *hub_wd_main(void *unused)
{
    double period = hub_wd_ms / 4000.0;
    struct timespec ts;

    (void)unused;
    prctl(PR_SET_NAME, "libgreen-wdog", 0, 0, 0);
    if (period < 0.001)
        period = 0.001;
    if (period > 0.25)
        period = 0.25;
    ts.tv_sec = (time_t)period;
    ts.tv_nsec = (long)((period - (double)ts.tv_sec) * 1e9);
    for (;;) {
        double now;
        /* the raw call: clock_nanosleep is one of ours (hard rule 4) */
        syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &ts, NULL);
        now = hub_mono_now();
        hub_ident_each(hub_wd_check, &now);
    }
    return NULL;
}

static void hub_wd_say(const char *s) { hub_report_write(2, s, strlen(s)); }

/* Installs the handler and starts the thread; called once per process by
 * hub/debug.c. Returns 0, or -1 after saying why on stderr. */
int hub_watchdog_start(double warn_ms)
{
    struct sigaction sa, old;
    sigset_t all, prev;
    pthread_attr_t attr;
    pthread_t t;
    int err;

    if (hub_wd_running)
        return 0;
    hub_wd_ms = warn_ms;
    if (sigaction(HUB_SIG_BLOCK, NULL, &old) == 0 &&
        ((old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != hub_wd_on_signal
                                     : old.sa_handler != SIG_DFL)) {
        hub_wd_say("libgreen: LIBGREEN_BLOCK_WARN_MS is ignored: the "
                   "program has its own handler for SIGRTMIN+3\n");
        return -1;
    }
    hub_unwind_load(); /* now, not in the handler */
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = hub_wd_on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(HUB_SIG_BLOCK, &sa, NULL);

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &prev); /* the thread inherits it */
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    err = pthread_create(&t, &attr, hub_wd_main, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    if (err) {
        hub_wd_say("libgreen: LIBGREEN_BLOCK_WARN_MS is ignored: the "
                   "watchdog thread could not be started\n");
        return -1;
    }
    hub_wd_running = 1;
    return 0;
}

void hub_watchdog_atfork_child(void) { hub_wd_running = 0; }
