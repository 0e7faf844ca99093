/* hub/debug.c - the debugging toggles: trace, dump and statistics on a
 * signal, and the hang report.
 *
 * Everything here is off the fast path. The park path pays for a wait
 * record (hub/wait.c, a few stores) and one predictable branch on
 * hub_trace_on (hub.c); the scheduler pays one load per round to notice a
 * request from a signal; calls that pass through pay nothing.
 *
 * Set up when the first hub is made (hard rule 12: no thread, fd or
 * signal handler before a hub exists, and none at all for what the
 * environment does not ask for) - before the server prints its start-up
 * line, so a signal sent as soon as it appears finds its handler:
 *
 *   LIBGREEN_TRACE=1            one line per park, when it ends
 *   LIBGREEN_TRACE_FILE=path    ... there instead of stderr
 *   LIBGREEN_DUMP_FILE=path     dumps, statistics, hang reports and block
 *                               warnings there instead of stderr
 *   LIBGREEN_HANG_REPORT_S=N    the hang report after N s (default 30,
 *                               0 = off)
 *   LIBGREEN_BLOCK_WARN_MS=N    the watchdog thread (hub/watchdog.c)
 *
 * Signals (handlers installed only where the disposition is still the
 * default, so an application's own handler wins; they are chosen to
 * collide with neither gunicorn's nor Python's):
 *
 *   SIGUSR2       dump every green thread (hub/dump.c)
 *   SIGRTMIN+1    trace on/off
 *   SIGRTMIN+2    one statistics line (JSON)
 *
 * A handler only bumps a counter and pokes the hub that set up first; the
 * dump itself runs in the hub context between two rounds of green
 * threads, when none of them runs, and every other hub answers at its
 * next round. A hub stuck behind a green thread that never yields cannot
 * answer: that is what LIBGREEN_BLOCK_WARN_MS reports.
 *
 * fork (hard rule 6): the child keeps the toggles and the files, forgets
 * which hub to poke, and sets up again (signal handlers checked, watchdog
 * thread started anew) when its first hub is made.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "hub/hub_internal.h"

int hub_trace_on;
volatile unsigned hub_dbg_requests;
const struct green_debug_hooks *hub_debug_hooks;

static unsigned hub_dbg_dumps, hub_dbg_stats; /* bumped by the handlers */
static struct hub *volatile hub_dbg_signal_hub;
static int hub_trace_fd = 2, hub_dump_fd = 2;
static double hub_hang_s = 30;
static double hub_block_warn_ms;
static int hub_dbg_env_read, hub_dbg_armed;
static pthread_mutex_t hub_dbg_lock = PTHREAD_MUTEX_INITIALIZER;

#define HUB_SIG_DUMP SIGUSR2
#define HUB_SIG_TRACE (SIGRTMIN + 1)
#define HUB_SIG_STATS (SIGRTMIN + 2)

void green_set_debug_hooks(const struct green_debug_hooks *hooks)
{
    hub_debug_hooks = hooks;
}

int hub_debug_out_fd(void) { return hub_dump_fd; }

/* ---- the environment ---------------------------------------------------- */

static void hub_env_warn(const char *name, const char *value, const char *what)
{
    struct hub_report r;

    hub_report_init(&r, 2);
    hub_report_str(&r, "libgreen: ");
    hub_report_str(&r, name);
    hub_report_str(&r, "=");
    hub_report_text(&r, value, strlen(value));
    hub_report_str(&r, " is not understood: ");
    hub_report_str(&r, what);
    hub_report_str(&r, "\n");
    hub_report_flush(&r);
}

/* 1 for 1/on/true/yes, 0 for 0/off/false/no, dflt when unset or empty. */
static int hub_env_bool(const char *name, int dflt)
{
    static const char *const on[] = {"1", "on", "true", "yes"};
    static const char *const off[] = {"0", "off", "false", "no"};
    const char *v = getenv(name);

    if (!v || !*v)
        return dflt;
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, on[i]) == 0)
            return 1;
        if (strcasecmp(v, off[i]) == 0)
            return 0;
    }
    hub_env_warn(name, v, dflt ? "use 1 or 0; it stays on"
                               : "use 1 or 0; it stays off");
    return dflt;
}

/* A number in [lo, hi], dflt when unset or not one. */
static double hub_env_num(const char *name, double dflt, double lo, double hi,
                          const char *what)
{
    const char *v = getenv(name);
    char *end;
    double d;

    if (!v || !*v)
        return dflt;
    errno = 0;
    d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi)) {
        hub_env_warn(name, v, what);
        return dflt;
    }
    return d;
}

/* The fd of the file the variable names, opened for appending; 2
 * (stderr) when unset or when it cannot be opened (then said so). */
static int hub_env_file(const char *name)
{
    const char *v = getenv(name);
    int fd;

    if (!v || !*v)
        return 2;
    fd = open(v, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        hub_env_warn(name, v, "it cannot be opened for appending "
                              "(check the directory and permissions); "
                              "writing to stderr instead");
        return 2;
    }
    return fd;
}

static void hub_debug_read_env(void)
{
    hub_trace_on = hub_env_bool("LIBGREEN_TRACE", 0);
    hub_trace_fd = hub_env_file("LIBGREEN_TRACE_FILE");
    hub_dump_fd = hub_env_file("LIBGREEN_DUMP_FILE");
    hub_hang_s = hub_env_num("LIBGREEN_HANG_REPORT_S", 30, 0, 1e9,
                             "use seconds (0 = off); it stays 30");
    hub_block_warn_ms = hub_env_num("LIBGREEN_BLOCK_WARN_MS", 0, 0, 1e9,
                                    "use milliseconds; it stays off");
}

/* ---- signals ------------------------------------------------------------ */

static void hub_dbg_ask(unsigned *counter)
{
    int saved = errno;
    struct hub *hub = hub_dbg_signal_hub;

    __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch((unsigned *)&hub_dbg_requests, 1, __ATOMIC_RELEASE);
    if (hub)
        green_hub_poke(hub); /* ev_async_send: async-signal-safe */
    errno = saved;
}

static void hub_on_dump(int sig) { hub_dbg_ask(&hub_dbg_dumps); }
static void hub_on_stats(int sig) { hub_dbg_ask(&hub_dbg_stats); }

static void hub_on_trace(int sig)
{
    struct hub_report r;
    int saved = errno;

    hub_trace_on = !hub_trace_on;
    hub_report_init(&r, hub_trace_fd);
    hub_report_str(&r, hub_trace_on ? "libgreen trace: on in process "
                                    : "libgreen trace: off in process ");
    hub_report_u64(&r, (uint64_t)getpid());
    hub_report_str(&r, "\n");
    hub_report_flush(&r);
    errno = saved;
}

/* Installs fn for sig unless something else owns sig: a handler of the
 * application (or of Python, or gunicorn's) wins, and so does SIG_IGN. */
static void hub_dbg_handle(int sig, void (*fn)(int))
{
    struct sigaction old, sa;

    if (sigaction(sig, NULL, &old) < 0)
        return;
    if ((old.sa_flags & SA_SIGINFO) ||
        (old.sa_handler != SIG_DFL && old.sa_handler != fn))
        return;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

/* ---- setting up --------------------------------------------------------- */

static void hub_debug_arm(void)
{
    pthread_mutex_lock(&hub_dbg_lock);
    if (!hub_dbg_armed) {
        hub_dbg_armed = 1;
        if (!hub_dbg_env_read) {
            hub_dbg_env_read = 1;
            hub_debug_read_env();
        }
        hub_dbg_handle(HUB_SIG_DUMP, hub_on_dump);
        hub_dbg_handle(HUB_SIG_TRACE, hub_on_trace);
        hub_dbg_handle(HUB_SIG_STATS, hub_on_stats);
        if (hub_block_warn_ms > 0)
            hub_watchdog_start(hub_block_warn_ms);
    }
    pthread_mutex_unlock(&hub_dbg_lock);
}

static void hub_hang_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* A new hub (hub.c, green_hub): its part of the above. */
void hub_debug_start(struct hub *hub)
{
    if (!hub_dbg_signal_hub)
        hub_dbg_signal_hub = hub;
    hub_debug_arm();
    hub->dbg_seen = __atomic_load_n(&hub_dbg_requests, __ATOMIC_ACQUIRE);
    hub->dbg_dumps_seen = __atomic_load_n(&hub_dbg_dumps, __ATOMIC_RELAXED);
    hub->dbg_stats_seen = __atomic_load_n(&hub_dbg_stats, __ATOMIC_RELAXED);
    if (hub_hang_s > 0) {
        double period = hub_hang_s / 3;
        period = period < 0.2 ? 0.2 : period > 10 ? 10 : period;
        ev_timer_init(&hub->hang_timer, hub_hang_cb, period, period);
        hub->hang_timer.data = hub;
        ev_timer_start(hub->loop, &hub->hang_timer);
        ev_unref(hub->loop); /* never a reason to keep waiting */
    }
}

void hub_debug_stop(struct hub *hub)
{
    if (ev_is_active(&hub->hang_timer)) {
        ev_ref(hub->loop);
        ev_timer_stop(hub->loop, &hub->hang_timer);
    }
    if (hub_dbg_signal_hub == hub)
        hub_dbg_signal_hub = NULL;
}

void hub_debug_atfork_child(void)
{
    pthread_mutex_init(&hub_dbg_lock, NULL);
    hub_dbg_signal_hub = NULL;
    hub_dbg_armed = 0;
    hub_watchdog_atfork_child();
    hub_unwind_atfork_child();
}

/* What signals asked for since this hub last looked (hub context). */
void hub_debug_service(struct hub *hub)
{
    unsigned dumps, stats;

    hub->dbg_seen = __atomic_load_n(&hub_dbg_requests, __ATOMIC_ACQUIRE);
    dumps = __atomic_load_n(&hub_dbg_dumps, __ATOMIC_RELAXED);
    stats = __atomic_load_n(&hub_dbg_stats, __ATOMIC_RELAXED);
    if (dumps != hub->dbg_dumps_seen) {
        hub->dbg_dumps_seen = dumps;
        hub_dump(hub, hub_dump_fd, "SIGUSR2");
    }
    if (stats != hub->dbg_stats_seen) {
        hub->dbg_stats_seen = stats;
        hub_dump_stats_line(hub, hub_dump_fd);
    }
}

/* ---- trace ---------------------------------------------------------------- */

static const char *hub_trace_outcome(const struct green *g, int err)
{
    switch (err) {
    case 0:
        return g->wait.kind == W_FD || g->wait.kind == W_FDS ? "ready" : "woken";
    case ETIMEDOUT:
        return g->wait.kind == W_SLEEP ? "slept" : "timed out";
    case EBADF:
        return "EBADF (the fd was closed meanwhile)";
    case EINTR:
        return "interrupted";
    default:
        return "failed";
    }
}

/* One line for a park that just ended, with one write(2). Runs in the
 * woken green thread, before the park hooks give it the GIL back. */
void hub_trace_line(struct green *g, int err)
{
    struct hub_report r;
    double waited = hub_mono_now() - g->wait.trace_t0;

    g->wait.trace_t0 = 0;
    if (!hub_trace_on)
        return; /* switched off while it waited */
    hub_report_init(&r, hub_trace_fd);
    hub_report_str(&r, "libgreen trace: green ");
    hub_report_u64(&r, g->id);
    hub_report_str(&r, " ");
    hub_dump_wait(&r, g);
    hub_report_str(&r, " waited ");
    hub_report_secs(&r, waited);
    hub_report_str(&r, " s: ");
    hub_report_str(&r, hub_trace_outcome(g, err));
    hub_dump_describe(&r, g, " [", "]");
    hub_report_str(&r, "\n");
    hub_report_flush(&r);
}

/* ---- the hang report ------------------------------------------------------ */

/* Whether something other than a green thread of this hub could end g's
 * park: an fd, a timer, or a waker outside the hub (the resolver's worker
 * threads, a child). Lock, wait-queue and join waits without a deadline
 * can only be ended by another green thread (or, for locks, another OS
 * thread). */
static int hub_wait_endable(const struct green *g)
{
    if (g->state != G_PARKED)
        return 1;
    if (g->nfdw || hub_deadline_armed(g))
        return 1;
    switch (g->wait.kind) {
    case W_WQ:
    case W_JOIN:
        return 0;
    case W_PARK:
        return !(g->wait.site && g->wait.site->kind == GREEN_CALL_SEM);
    default:
        return 1;
    }
}

/* Every hub_hang_s / 3 seconds: are all green threads stuck? A hang is
 * reported once: the report is tied to the set of stuck threads (a hash
 * of their ids), so another request coming and going does not repeat
 * it, and a new set of stuck threads is a new hang. */
static void hub_hang_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct hub *hub = w->data;
    double now = ev_now(loop);
    struct hub_report r;
    uint64_t n = 0, others = 0, set = 0;

    for (struct green *g = hub->all; g; g = g->all_next) {
        if (hub_wait_endable(g) || now - g->wait.since < hub_hang_s) {
            others++;
        } else {
            n++;
            set = set * 0x100000001b3ull + g->id;
        }
    }
    if (set != hub->hang_set) {
        hub->hang_set = set;
        hub->hang_reported = 0;
    }
    if (n == 0 || others || hub->hang_reported)
        return;
    hub->hang_reported = 1;
    hub_report_init(&r, hub_dump_fd);
    hub_report_str(&r, "libgreen: hang: all ");
    hub_report_u64(&r, n);
    hub_report_str(&r, " green thread(s) of process ");
    hub_report_u64(&r, (uint64_t)getpid());
    hub_report_str(&r, " have been parked for at least ");
    if (hub_hang_s == (double)(uint64_t)hub_hang_s)
        hub_report_u64(&r, (uint64_t)hub_hang_s); /* as it was set */
    else
        hub_report_secs(&r, hub_hang_s);
    hub_report_str(&r, " s on waits that no fd, timer or other green thread "
                       "can end (locks, queues, joins): a deadlock, unless "
                       "another OS thread releases them. The dump follows "
                       "(LIBGREEN_HANG_REPORT_S=0 turns this report off).\n");
    hub_report_flush(&r);
    hub_dump(hub, hub_dump_fd, "hang");
}
