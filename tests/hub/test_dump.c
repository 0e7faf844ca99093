/* tests/hub/test_dump.c - the hub's dump and statistics line, at the hub
 * level: what each green thread waits on, its C stack unwound from the
 * context saved at its last switch, and what the debugging hooks of the
 * layer above add. Built twice, like test_switch: with the assembly switch
 * and with the ucontext fallback (ucontext_dump), whose saved context is
 * unwound differently.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub/hub_internal.h"
#include "tests/check.h"

/* Everything written to a fresh temporary file by fn(fd), as a string
 * (malloc'd; NULL on failure). */
static char *capture(void (*fn)(int fd, void *arg), void *arg)
{
    char path[] = "/tmp/libgreen-test-dump-XXXXXX", *text;
    int fd = mkstemp(path);
    off_t n;

    if (fd < 0)
        return NULL;
    unlink(path);
    fn(fd, arg);
    n = lseek(fd, 0, SEEK_END);
    text = malloc((size_t)n + 1);
    if (text && pread(fd, text, (size_t)n, 0) != n) {
        free(text);
        text = NULL;
    }
    if (text)
        text[n] = 0;
    close(fd);
    return text;
}

static void dump_to(int fd, void *why) { hub_dump(green_hub(), fd, why); }
static void stats_to(int fd, void *unused) { hub_dump_stats_line(green_hub(), fd); }

/* ---- what a parked thread shows ---------------------------------------- */

static struct green_wq queue;
static int sp[2];

__attribute__((noinline)) static void sleeper_inner(void)
{
    green_sleep(30);
    __asm__ volatile(""); /* no tail call: keep this frame */
}

__attribute__((noinline)) static void sleeper_outer(void *arg)
{
    sleeper_inner();
    __asm__ volatile("");
}

static void queued(void *arg) { green_wq_wait(&queue, -1); }
static void reading(void *arg) { green_wait_fd(sp[0], GREEN_READ, -1); }

TEST(dump_names_waits_and_unwinds_parked_threads)
{
    struct green *s, *q, *r;
    char want[64], *out;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    s = green_spawn(sleeper_outer, NULL, NULL);
    q = green_spawn(queued, NULL, &(struct green_attr){0, "queued"});
    r = green_spawn(reading, NULL, NULL);
    CHECK(s && q && r);
    green_sleep(0.01); /* from the hub context: all three park */
    out = capture(dump_to, "test");
    CHECK(out != NULL);
    CHECK(strstr(out, "libgreen: dump of process ") != NULL);
    CHECK(strstr(out, "(test): 3 green thread(s)") != NULL);
    CHECK(strstr(out, "{\"event\":\"libgreen.stats\"") != NULL);
    /* the sleeper: its two frames, under the hub's own, above hub_entry */
    CHECK(strstr(out, "parked 0.0") != NULL);
    CHECK(strstr(out, "s in sleep, wakes in 29.") != NULL);
    CHECK(strstr(out, " sleeper_inner+0x") != NULL);
    CHECK(strstr(out, " sleeper_outer+0x") != NULL);
    CHECK(strstr(out, " hub_entry+0x") != NULL);
    CHECK(strstr(out, "sleeper_inner") < strstr(out, "sleeper_outer"));
    /* the others: a wait queue with its address, an fd with its number */
    snprintf(want, sizeof want, "(queued): parked ");
    CHECK(strstr(out, want) != NULL);
    snprintf(want, sizeof want, "in wait queue on %p", (void *)&queue);
    CHECK(strstr(out, want) != NULL);
    snprintf(want, sizeof want, "in wait_fd on fd %d (read)", sp[0]);
    CHECK(strstr(out, want) != NULL);
    CHECK(strstr(out, "libgreen: end of dump") != NULL);
    free(out);

    green_interrupt(s);
    green_wq_wake_all(&queue);
    CHECK(write(sp[1], "x", 1) == 1);
    CHECK(green_join(s, 5) == 0 && green_join(q, 5) == 0 && green_join(r, 5) == 0);
    close(sp[0]);
    close(sp[1]);
}

/* ---- the hooks of the layer above --------------------------------------- */

static int entered, left;
static void *hook_enter(void) { entered++; return &entered; }
static void hook_leave(void *token) { left += token == &entered; }

static size_t hook_describe(void *info, char *buf, size_t len)
{
    return (size_t)snprintf(buf, len, "serving %s", (const char *)info);
}

static void hook_traceback(int fd, void *info, int in_signal)
{
    dprintf(fd, "Stack of %s (in_signal=%d)\n", (const char *)info, in_signal);
}

static size_t hook_stats(char *buf, size_t len)
{
    return (size_t)snprintf(buf, len, ",\"requests\":42");
}

static const struct green_debug_hooks hooks = {
    hook_enter, hook_leave, hook_describe, hook_traceback, hook_stats,
};

static void described(void *arg)
{
    green_set_info(green_current(), arg);
    green_wq_wait(&queue, -1);
    green_set_info(green_current(), NULL);
}

TEST(dump_asks_the_layer_above)
{
    struct green *a, *b;
    char *out;

    green_set_debug_hooks(&hooks);
    a = green_spawn(described, "GET /a", NULL);
    b = green_spawn(queued, NULL, NULL); /* no info: nothing asked */
    CHECK(a && b);
    green_sleep(0.01);
    entered = left = 0;
    out = capture(dump_to, "hooks");
    CHECK(out != NULL);
    CHECK(entered == 1 && left == 1);
    CHECK(strstr(out, "\n  serving GET /a\n") != NULL);
    CHECK(strstr(out, "Stack of GET /a (in_signal=0)\n") != NULL);
    CHECK(strstr(out, "Stack of (null)") == NULL);
    CHECK(strstr(out, ",\"requests\":42}\n") != NULL);
    free(out);
    green_set_debug_hooks(NULL);
    green_wq_wake_all(&queue);
    CHECK(green_join(a, 5) == 0 && green_join(b, 5) == 0);
}

/* ---- the statistics line ------------------------------------------------ */

static void yielder(void *arg)
{
    for (int i = 0; i < 10; i++)
        green_yield();
}

static void sleeper_short(void *arg) { green_sleep(0.001); }

TEST(stats_line_counts)
{
    struct green_stats st;
    struct green *a, *b;
    char want[128], *out;
    uint64_t other;

    green_get_stats(&st);
    other = st.parks[GREEN_CALL_OTHER];
    a = green_spawn(yielder, NULL, NULL);
    b = green_spawn(sleeper_short, NULL, NULL);
    CHECK(a && b);
    CHECK(green_join(a, 5) == 0 && green_join(b, 5) == 0);
    green_get_stats(&st);
    CHECK(st.parks[GREEN_CALL_OTHER] == other + 1); /* the sleep, not yields */
    CHECK(st.live == 0 && st.parked == 0 && st.ready == 0);
    out = capture(stats_to, NULL);
    CHECK(out != NULL);
    CHECK(out[strlen(out) - 1] == '\n' && strchr(out, '\n') == out + strlen(out) - 1);
    snprintf(want, sizeof want, ",\"live\":0,\"parked\":0,\"ready\":0,\"spawned\":%llu,",
             (unsigned long long)st.spawned);
    CHECK(strstr(out, want) != NULL);
    snprintf(want, sizeof want, "\"parks\":{\"other\":%llu,\"read\":0,",
             (unsigned long long)st.parks[GREEN_CALL_OTHER]);
    CHECK(strstr(out, want) != NULL);
    CHECK(strstr(out, "\"waitpid\":0}}\n") != NULL);
    free(out);
}

int main(void)
{
    setenv("LIBGREEN_HANG_REPORT_S", "0", 1);
    RUN(dump_names_waits_and_unwinds_parked_threads);
    RUN(dump_asks_the_layer_above);
    RUN(stats_line_counts);
    return CHECK_DONE();
}
