/* tests/preload/test_debug.c - the debugging toggles, with the interposed
 * calls linked in as under LD_PRELOAD: parks named after the libc call
 * that made them and counted per kind, the trace switched on and off by
 * its signal, the dump and the statistics line on theirs, the hang report
 * (once, and only for waits nothing can end), and the block warning of
 * LIBGREEN_BLOCK_WARN_MS (in a re-executed child: the environment is read
 * once per process).
 *
 * The reports go to files (LIBGREEN_DUMP_FILE, LIBGREEN_TRACE_FILE) that
 * the tests read back.
 */
#include <fcntl.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

static char dump_path[] = "/tmp/libgreen-test-debug-dump-XXXXXX";
static char trace_path[] = "/tmp/libgreen-test-debug-trace-XXXXXX";

/* The whole of a report file, as a string (malloc'd). */
static char *slurp(const char *path)
{
    int fd = open(path, O_RDONLY);
    off_t n = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
    char *text = n < 0 ? NULL : malloc((size_t)n + 1);

    if (text && pread(fd, text, (size_t)n, 0) != n) {
        free(text);
        text = NULL;
    }
    if (text)
        text[n] = 0;
    if (fd >= 0)
        close(fd);
    return text;
}

static size_t count(const char *text, const char *what)
{
    size_t n = 0;

    for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

/* Runs the hub from the main context until the file holds what n times
 * (or 5 s pass); returns the file's text. */
static char *wait_for_n(const char *path, const char *what, size_t n)
{
    double end = check_now() + 5;
    char *text;

    for (;;) {
        text = slurp(path);
        if ((text && count(text, what) >= n) || check_now() > end)
            return text;
        free(text);
        green_sleep(0.01);
    }
}

static char *wait_for(const char *path, const char *what)
{
    return wait_for_n(path, what, 1);
}

/* ---- parks named and counted ---------------------------------------------- */

static int sp[2], pp[2];
static sem_t sem;

static void in_recv(void *arg) { char c; *(ssize_t *)arg = recv(sp[0], &c, 1, 0); }
static void in_sem(void *arg) { *(int *)arg = sem_wait(&sem); }

static void in_nanosleep(void *arg)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    *(int *)arg = nanosleep(&ts, NULL);
}

static void in_poll(void *arg)
{
    struct pollfd p = {pp[0], POLLIN, 0};
    *(int *)arg = poll(&p, 1, 5000);
}

TEST(parks_are_named_and_counted)
{
    struct green_stats s0, s1;
    struct green *g[4];
    ssize_t got = 0;
    int sem_rc = -1, sleep_rc = -1, poll_rc = -1;
    char want[96], *dump;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    CHECK(pipe(pp) == 0);
    CHECK(sem_init(&sem, 0, 0) == 0);
    green_get_stats(&s0);
    g[0] = green_spawn(in_recv, &got, NULL);
    g[1] = green_spawn(in_sem, &sem_rc, NULL);
    g[2] = green_spawn(in_nanosleep, &sleep_rc, NULL);
    g[3] = green_spawn(in_poll, &poll_rc, NULL);
    green_sleep(0.005); /* all four park */
    CHECK(raise(SIGUSR2) == 0);
    dump = wait_for(dump_path, "libgreen: end of dump");
    CHECK(dump != NULL);
    snprintf(want, sizeof want, "s in recv on fd %d (read)", sp[0]);
    CHECK(strstr(dump, want) != NULL);
    snprintf(want, sizeof want, "s in sem_wait on %p\n", (void *)&sem);
    CHECK(strstr(dump, want) != NULL);
    CHECK(strstr(dump, "s in nanosleep, wakes in 0.0") != NULL ||
          strstr(dump, "s in nanosleep, wakes in 0.00") != NULL);
    snprintf(want, sizeof want, "s in poll on 1 fd (%d), timeout in 4.", pp[0]);
    CHECK(strstr(dump, want) != NULL);
    CHECK(strstr(dump, " in_recv+0x") != NULL); /* the C stacks */
    CHECK(strstr(dump, " in_sem+0x") != NULL);
    free(dump);

    CHECK(send(sp[1], "x", 1, 0) == 1);
    CHECK(write(pp[1], "x", 1) == 1);
    CHECK(sem_post(&sem) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(green_join(g[i], 5) == 0);
    CHECK(got == 1 && sem_rc == 0 && sleep_rc == 0 && poll_rc == 1);
    green_get_stats(&s1);
    CHECK(s1.parks[GREEN_CALL_RECV] == s0.parks[GREEN_CALL_RECV] + 1);
    CHECK(s1.parks[GREEN_CALL_SEM] == s0.parks[GREEN_CALL_SEM] + 1);
    CHECK(s1.parks[GREEN_CALL_SLEEP] == s0.parks[GREEN_CALL_SLEEP] + 1);
    CHECK(s1.parks[GREEN_CALL_POLL] == s0.parks[GREEN_CALL_POLL] + 1);
    CHECK(s1.parks[GREEN_CALL_READ] == s0.parks[GREEN_CALL_READ]);
    close(sp[0]);
    close(sp[1]);
    close(pp[0]);
    close(pp[1]);
    sem_destroy(&sem);
}

/* ---- statistics on their signal ---------------------------------------------- */

TEST(stats_line_on_its_signal)
{
    char *text;

    CHECK(raise(SIGRTMIN + 2) == 0);
    /* the dump's line and this one */
    text = wait_for_n(dump_path, "{\"event\":\"libgreen.stats\"", 2);
    CHECK(text != NULL);
    CHECK(count(text, "{\"event\":\"libgreen.stats\"") == 2);
    CHECK(strstr(text, "\"parks\":{\"other\":") != NULL);
    free(text);
}

/* ---- the trace --------------------------------------------------------------- */

static void short_sleep(void *arg) { usleep(10 * 1000); }

static void one_sleep(void)
{
    struct green *g = green_spawn(short_sleep, NULL, NULL);

    if (g)
        green_join(g, 5);
}

TEST(trace_switches_on_and_off_by_signal)
{
    char *text;
    size_t lines;

    one_sleep(); /* off: no line */
    text = slurp(trace_path);
    CHECK(text != NULL && count(text, "usleep") == 0);
    free(text);

    CHECK(raise(SIGRTMIN + 1) == 0);
    one_sleep();
    text = slurp(trace_path);
    CHECK(text != NULL);
    CHECK(strstr(text, "libgreen trace: on in process ") != NULL);
    CHECK(strstr(text, " usleep waited 0.01") != NULL);
    CHECK(strstr(text, " s: slept\n") != NULL);
    lines = count(text, "\n");
    free(text);

    CHECK(raise(SIGRTMIN + 1) == 0);
    one_sleep();
    text = slurp(trace_path);
    CHECK(text != NULL);
    CHECK(strstr(text, "libgreen trace: off in process ") != NULL);
    CHECK(count(text, "\n") == lines + 1); /* the "off" line, nothing else */
    free(text);
}

/* ---- the hang report ------------------------------------------------------- */

static sem_t lock_a, lock_b;

static void a_then_b(void *arg)
{
    sem_wait(&lock_a);
    green_sleep(0.01);
    sem_wait(&lock_b); /* held by the other: both stuck */
    sem_post(&lock_b);
    sem_post(&lock_a);
}

static void b_then_a(void *arg)
{
    sem_wait(&lock_b);
    green_sleep(0.01);
    sem_wait(&lock_a);
    sem_post(&lock_a);
    sem_post(&lock_b);
}

/* Runs the hub for seconds (a deadline keeps it from seeing a deadlock). */
static void run_for(double seconds)
{
    green_hub_run_until(NULL, NULL, seconds, NULL, 0);
}

TEST(hang_report_once_for_a_lock_deadlock)
{
    struct green *a, *b;
    char *text;

    CHECK(sem_init(&lock_a, 0, 1) == 0 && sem_init(&lock_b, 0, 1) == 0);
    a = green_spawn(a_then_b, NULL, NULL);
    b = green_spawn(b_then_a, NULL, NULL);
    CHECK(a && b);
    text = wait_for(dump_path, "libgreen: hang: all 2 green thread(s)");
    CHECK(text != NULL && count(text, "libgreen: hang:") == 1);
    CHECK(strstr(text, "(hang): 2 green thread(s)") != NULL);
    CHECK(strstr(text, " a_then_b+0x") != NULL && strstr(text, " b_then_a+0x") != NULL);
    free(text);
    run_for(1.0); /* three more looks at them: still one report */
    text = slurp(dump_path);
    CHECK(text != NULL && count(text, "libgreen: hang:") == 1);
    free(text);

    /* an OS thread could still end it: here, the main context does */
    CHECK(sem_post(&lock_a) == 0);
    CHECK(green_join(a, 5) == 0 && green_join(b, 5) == 0);
    sem_destroy(&lock_a);
    sem_destroy(&lock_b);
}

TEST(no_hang_report_for_waits_an_fd_or_timer_can_end)
{
    struct green *r, *s;
    ssize_t got = 0;
    int rc = -1;
    char *text;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    CHECK(sem_init(&sem, 0, 0) == 0);
    r = green_spawn(in_recv, &got, NULL);  /* an fd can end it */
    s = green_spawn(in_sem, &rc, NULL);    /* alone it could not */
    CHECK(r && s);
    run_for(1.0);
    text = slurp(dump_path);
    CHECK(text != NULL && count(text, "libgreen: hang:") == 1); /* the old one */
    free(text);
    CHECK(send(sp[1], "x", 1, 0) == 1 && sem_post(&sem) == 0);
    CHECK(green_join(r, 5) == 0 && green_join(s, 5) == 0);
    run_for(0.8); /* nothing parked at all: idle is no hang either */
    text = slurp(dump_path);
    CHECK(text != NULL && count(text, "libgreen: hang:") == 1);
    free(text);
    close(sp[0]);
    close(sp[1]);
    sem_destroy(&sem);
}

/* ---- the block warning (re-executed child) ------------------------------------ */

__attribute__((noinline)) static void spin_for(double seconds)
{
    double end = check_now() + seconds;

    while (check_now() < end)
        __asm__ volatile("");
}

static void spinner(void *arg) { spin_for(0.4); }

static int block_warn_child(void)
{
    struct green *g = green_spawn(spinner, NULL, NULL);

    if (!g || green_join(g, 5) != 0)
        return 3;
    green_sleep(0.3); /* the watchdog sees it moved on */
    return 0;
}

TEST(block_warning_names_the_stuck_thread)
{
    char path[] = "/tmp/libgreen-test-debug-block-XXXXXX", *text;
    int fd = mkstemp(path), status;
    pid_t pid;

    CHECK(fd >= 0);
    close(fd);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char *argv[] = {"test_debug", "--block-warn-child", NULL};
        setenv("LIBGREEN_BLOCK_WARN_MS", "100", 1);
        setenv("LIBGREEN_DUMP_FILE", path, 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    text = slurp(path);
    unlink(path);
    CHECK(text != NULL);
    CHECK(count(text, " has run ") == 1);
    CHECK(strstr(text, " ms without yielding: every other green thread of "
                       "process ") != NULL);
    CHECK(strstr(text, "(LIBGREEN_BLOCK_WARN_MS=100)\n") != NULL);
    CHECK(strstr(text, "C stack (most recent call first):\n") != NULL);
    CHECK(strstr(text, " spin_for") != NULL); /* maybe a .constprop clone */
    CHECK(strstr(text, " hub_entry+0x") != NULL);
    CHECK(strstr(text, " ran about 0.") != NULL);
    free(text);
}

int main(int argc, char **argv)
{
    int fd1, fd2, rc;

    alarm(60);
    if (argc > 1 && strcmp(argv[1], "--block-warn-child") == 0)
        return block_warn_child();
    fd1 = mkstemp(dump_path);
    fd2 = mkstemp(trace_path);
    if (fd1 < 0 || fd2 < 0)
        return 2;
    close(fd1);
    close(fd2);
    /* read when the first hub runs */
    setenv("LIBGREEN_DUMP_FILE", dump_path, 1);
    setenv("LIBGREEN_TRACE_FILE", trace_path, 1);
    setenv("LIBGREEN_HANG_REPORT_S", "0.3", 1);
    RUN(parks_are_named_and_counted);
    RUN(stats_line_on_its_signal);
    RUN(trace_switches_on_and_off_by_signal);
    RUN(hang_report_once_for_a_lock_deadlock);
    RUN(no_hang_report_for_waits_an_fd_or_timer_can_end);
    RUN(block_warning_names_the_stuck_thread);
    rc = CHECK_DONE();
    unlink(dump_path);
    unlink(trace_path);
    return rc;
}
