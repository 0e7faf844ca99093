/* tests/hub/test_overflow.c - a green thread that overflows its stack is
 * named on stderr and the process aborts, instead of corrupting memory.
 *
 * The overflow runs in a child process; the parent reads the child's
 * stderr and checks how it died. Also checks that an ordinary fault
 * outside any green stack still reaches the default action (SIGSEGV),
 * i.e. our handler passes on what is not ours.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"

#pragma GCC diagnostic ignored "-Winfinite-recursion"
#pragma GCC diagnostic ignored "-Warray-bounds"

static size_t recurse(size_t n)
{
    volatile char pad[512];

    pad[0] = (char)n;
    return recurse(n + 1) + pad[0]; /* not a tail call */
}

static void overflow_fn(void *arg) { recurse(0); }

static void null_fn(void *arg) { *(volatile int *)(uintptr_t)8 = 1; }

/* Runs fn in a green thread in a child; returns its status and stderr. */
static int run_child(green_fn fn, const char *name, char *err, size_t errlen)
{
    int pipefd[2], status = 0;
    pid_t pid;
    ssize_t n, got = 0;

    if (pipe(pipefd) < 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        struct green_attr attr = {.stack_size = 128 * 1024, .name = name};
        struct green *g;
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        signal(SIGSEGV, SIG_DFL);
        g = green_spawn(fn, NULL, &attr);
        green_join(g, -1);
        _exit(0);
    }
    close(pipefd[1]);
    while ((n = read(pipefd[0], err + got, errlen - 1 - (size_t)got)) > 0)
        got += n;
    err[got] = 0;
    close(pipefd[0]);
    waitpid(pid, &status, 0);
    return status;
}

TEST(overflow_is_reported)
{
    char err[4096];
    int status = run_child(overflow_fn, "deep-recursion", err, sizeof err);

    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
    CHECK(strstr(err, "libgreen: green thread ") != NULL);
    CHECK(strstr(err, "(deep-recursion) overflowed its 128 KiB stack") != NULL);
    CHECK(strstr(err, "LIBGREEN_STACK_SIZE") != NULL);
}

TEST(other_faults_pass_through)
{
    char err[4096];
    int status = run_child(null_fn, "null", err, sizeof err);

    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGSEGV);
    CHECK(strstr(err, "overflowed") == NULL);
}

int main(void)
{
    RUN(overflow_is_reported);
    RUN(other_faults_pass_through);
    return CHECK_DONE();
}
