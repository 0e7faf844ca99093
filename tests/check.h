/* tests/check.h - the tiny assertion kit every C unit test uses.
 *
 * Each test file is its own program: it defines TEST(name) functions and a
 * main() that lists them with RUN(name). A failed CHECK prints the file,
 * line, the expression and errno, then marks the test failed and returns
 * from it. The program ends with one line "N passed, N failed" and exits 1
 * if anything failed, so make (and CI) sees the result.
 */
#ifndef LIBGREEN_TESTS_CHECK_H
#define LIBGREEN_TESTS_CHECK_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int check_failed_;   /* set by a failing CHECK inside the current test */
static int check_passes_, check_fails_;

#define TEST(name) static void test_##name(void)

#define CHECK(expr)                                                         \
    do {                                                                    \
        if (!(expr)) {                                                      \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (errno %d: %s)\n",     \
                    __FILE__, __LINE__, #expr, errno, strerror(errno));     \
            check_failed_ = 1;                                              \
            return;                                                         \
        }                                                                   \
    } while (0)

/* CHECK in a helper that returns a value (green thread bodies, callbacks). */
#define CHECK_OR(expr, ret)                                                 \
    do {                                                                    \
        if (!(expr)) {                                                      \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (errno %d: %s)\n",     \
                    __FILE__, __LINE__, #expr, errno, strerror(errno));     \
            check_failed_ = 1;                                              \
            return ret;                                                     \
        }                                                                   \
    } while (0)

#define RUN(name)                                                           \
    do {                                                                    \
        check_failed_ = 0;                                                  \
        test_##name();                                                      \
        if (check_failed_) {                                                \
            check_fails_++;                                                 \
            fprintf(stderr, "FAIL %s\n", #name);                            \
        } else {                                                            \
            check_passes_++;                                                \
            fprintf(stderr, "ok   %s\n", #name);                            \
        }                                                                   \
    } while (0)

#define CHECK_DONE()                                                        \
    (printf("%s: %d passed, %d failed\n", __FILE__, check_passes_,          \
            check_fails_),                                                  \
     check_fails_ ? 1 : 0)

/* Monotonic seconds, for the generous time bounds some tests assert. */
static inline double check_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
