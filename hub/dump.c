/* hub/dump.c - the dump of a hub's green threads, and the statistics line.
 *
 * A dump (SIGUSR2, the hang report) runs in the hub context, between two
 * rounds, so no green thread runs and every parked one's records and
 * saved registers hold still. It starts with a header and the statistics
 * line, then gives each live green thread:
 *
 *   green thread 7 (wsgi-request): parked 12.345 s in recv on fd 9 (read)
 *     GET /backend HTTP/1.1 from 127.0.0.1:40112      (the layer above)
 *   C stack (most recent call first):
 *     #0  0x7f3a8c1b2c45 hub_park+0x85 (libgreen.so)
 *     ...
 *   Stack (most recent call first):                   (the layer above:
 *     File "/srv/app.py", line 12 in wait_for_backend   faulthandler's form)
 *
 * The layer above is asked through the debugging hooks (hub/green.h):
 * enter/leave around the whole dump (the server takes the GIL), describe
 * and traceback per green thread. The statistics line is one JSON object,
 * tagged "libgreen.stats", with the hub's counters and the server's.
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hub/hub_internal.h"

static const char *const hub_call_names[GREEN_NCALLS] = {
#define HUB_CALL_NAME(kind, name) name,
    GREEN_CALLS(HUB_CALL_NAME)
#undef HUB_CALL_NAME
};

/* What a park no interposed call named is called, per enum hub_wait. */
static const char *const hub_wait_names[] = {
    "-", "wait_fd", "wait_fds", "sleep", "wait queue", "park", "join",
};

static void hub_dump_obj(struct hub_report *r, const struct green *g)
{
    const void *obj = g->wait.obj;

    if (g->wait.kind == W_JOIN) {
        hub_report_str(r, " of green thread ");
        hub_report_u64(r, obj ? ((const struct green *)obj)->id : 0);
        return;
    }
    if (!obj)
        return;
    switch (g->wait.site ? g->wait.site->obj : GREEN_OBJ_ADDR) {
    case GREEN_OBJ_ADDR:
        hub_report_str(r, " on ");
        hub_report_hex(r, (uint64_t)(uintptr_t)obj);
        break;
    case GREEN_OBJ_TEXT:
        hub_report_str(r, " \"");
        hub_report_text(r, obj, strnlen(obj, 200));
        hub_report_str(r, "\"");
        break;
    case GREEN_OBJ_PID:
        hub_report_str(r, " for pid ");
        hub_report_u64(r, (uint64_t)(uintptr_t)obj);
        break;
    default:
        break;
    }
}

void hub_dump_wait(struct hub_report *r, const struct green *g)
{
    unsigned kind = g->wait.kind < sizeof hub_wait_names / sizeof *hub_wait_names
                        ? g->wait.kind : 0;

    hub_report_str(r, g->wait.site ? g->wait.site->name : hub_wait_names[kind]);
    hub_dump_obj(r, g);
    if (kind == W_FD) {
        hub_report_str(r, " on fd ");
        hub_report_i64(r, g->wait.fd);
        hub_report_str(r, (g->wait.events & (GREEN_READ | GREEN_WRITE)) ==
                                  (GREEN_READ | GREEN_WRITE)
                              ? " (read+write)"
                              : g->wait.events & GREEN_WRITE ? " (write)"
                                                             : " (read)");
    } else if (kind == W_FDS && g->wait.nfds) {
        hub_report_str(r, " on ");
        hub_report_u64(r, g->wait.nfds);
        hub_report_str(r, g->wait.nfds == 1 ? " fd (" : " fds (first ");
        hub_report_i64(r, g->wait.fd);
        hub_report_str(r, ")");
    }
}

/* "parked 12.345 s in recv on fd 9 (read), timeout in 2.000 s" */
static void hub_dump_state(struct hub_report *r, const struct green *g)
{
    struct ev_loop *loop = g->hub->loop;

    switch (g->state) {
    case G_READY:
        hub_report_str(r, "ready to run");
        return;
    case G_RUNNING:
        hub_report_str(r, "running");
        return;
    case G_DONE:
        hub_report_str(r, "finished");
        return;
    case G_PARKED:
        break;
    }
    hub_report_str(r, "parked ");
    hub_report_secs(r, ev_now(loop) - g->wait.since);
    hub_report_str(r, " s in ");
    hub_dump_wait(r, g);
    if (hub_deadline_armed(g)) {
        hub_report_str(r, g->wait.kind == W_SLEEP ? ", wakes in " : ", timeout in ");
        hub_report_secs(r, hub_deadline_left(g));
        hub_report_str(r, " s");
    }
}

/* The layer above's one-line description of g (its request line), put
 * between before and after; nothing at all when there is none. Async-
 * signal-safe as long as the describe hook is. */
void hub_dump_describe(struct hub_report *r, const struct green *g,
                       const char *before, const char *after)
{
    const struct green_debug_hooks *hooks = hub_debug_hooks;
    char desc[512];
    size_t n = 0;

    if (g->info && hooks && hooks->describe)
        n = hooks->describe(g->info, desc, sizeof desc);
    if (!n)
        return;
    hub_report_str(r, before);
    hub_report_mem(r, desc, n < sizeof desc ? n : sizeof desc);
    hub_report_str(r, after);
}

static void hub_dump_green(struct hub_report *r, struct green *g)
{
    const struct green_debug_hooks *hooks = hub_debug_hooks;

    hub_report_str(r, "\ngreen thread ");
    hub_report_u64(r, g->id);
    if (g->name[0]) {
        hub_report_str(r, " (");
        hub_report_text(r, g->name, strlen(g->name));
        hub_report_str(r, ")");
    }
    hub_report_str(r, ": ");
    hub_dump_state(r, g);
    hub_report_str(r, "\n");
    hub_dump_describe(r, g, "  ", "\n");
    hub_report_str(r, "C stack (most recent call first):\n");
    hub_unwind_green(r, g);
    hub_report_flush(r);
    if (g->info && hooks && hooks->traceback)
        hooks->traceback(r->fd, g->info, 0);
}

void hub_dump(struct hub *hub, int fd, const char *why)
{
    const struct green_debug_hooks *hooks = hub_debug_hooks;
    struct hub_report r;
    void *token = NULL;
    uint64_t n = 0;

    for (struct green *g = hub->all; g; g = g->all_next)
        n++;
    hub_report_init(&r, fd);
    hub_report_str(&r, "libgreen: dump of process ");
    hub_report_u64(&r, (uint64_t)getpid());
    hub_report_str(&r, " (");
    hub_report_str(&r, why);
    hub_report_str(&r, "): ");
    hub_report_u64(&r, n);
    hub_report_str(&r, " green thread(s)\n");
    hub_report_flush(&r);
    hub_dump_stats_line(hub, fd);
    if (hooks && hooks->enter)
        token = hooks->enter();
    for (struct green *g = hub->all; g; g = g->all_next)
        hub_dump_green(&r, g);
    if (hooks && hooks->leave)
        hooks->leave(token);
    hub_report_str(&r, "\nlibgreen: end of dump\n");
    hub_report_flush(&r);
}

static void hub_json_u64(struct hub_report *r, const char *key, uint64_t v)
{
    hub_report_str(r, ",\"");
    hub_report_str(r, key);
    hub_report_str(r, "\":");
    hub_report_u64(r, v);
}

/* {"event":"libgreen.stats","pid":...,"parks":{"read":...},...} */
void hub_dump_stats_line(struct hub *hub, int fd)
{
    const struct green_debug_hooks *hooks = hub_debug_hooks;
    struct green_stats st;
    struct hub_report r;
    char more[512];
    size_t n;

    hub_stats_of(hub, &st);
    hub_report_init(&r, fd);
    hub_report_str(&r, "{\"event\":\"libgreen.stats\"");
    hub_json_u64(&r, "pid", (uint64_t)getpid());
    hub_json_u64(&r, "time", (uint64_t)time(NULL));
    hub_json_u64(&r, "live", st.live);
    hub_json_u64(&r, "parked", st.parked);
    hub_json_u64(&r, "ready", st.ready);
    hub_json_u64(&r, "spawned", st.spawned);
    hub_json_u64(&r, "switches", st.switches);
    hub_json_u64(&r, "stacks_pooled", st.stacks_pooled);
    hub_report_str(&r, ",\"parks\":{");
    for (int i = 0; i < GREEN_NCALLS; i++) {
        hub_report_str(&r, i ? ",\"" : "\"");
        hub_report_str(&r, hub_call_names[i]);
        hub_report_str(&r, "\":");
        hub_report_u64(&r, st.parks[i]);
    }
    hub_report_str(&r, "}");
    if (hooks && hooks->stats && (n = hooks->stats(more, sizeof more)) > 0)
        hub_report_mem(&r, more, n < sizeof more ? n : sizeof more);
    hub_report_str(&r, "}\n");
    hub_report_flush(&r);
}
