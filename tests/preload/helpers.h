/* tests/preload/helpers.h - helpers shared by the preload unit tests.
 *
 * Each tests/preload/test_*.c is its own program and includes this after
 * tests/check.h. Everything here is static, so every program has its own
 * copy (and its own ticks counter). The socket helpers make plain calls,
 * which park when made in a green thread and block in the main context;
 * they return -1 on failure and leave the CHECKs to the test.
 */
#ifndef LIBGREEN_TESTS_PRELOAD_HELPERS_H
#define LIBGREEN_TESTS_PRELOAD_HELPERS_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"

/* A TCP socket of type SOCK_STREAM | type_flags listening with backlog on
 * 127.0.0.1, on a port the kernel picks; *addr gets that address. */
static inline int listener_type(int type_flags, int backlog,
                                struct sockaddr_in *addr)
{
    socklen_t alen = sizeof *addr;
    int fd = socket(AF_INET, SOCK_STREAM | type_flags, 0);

    if (fd < 0)
        return -1;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0 ||
        listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &alen) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* listener_type() of a plain blocking socket. */
static inline int listener(int backlog, struct sockaddr_in *addr)
{
    return listener_type(0, backlog, addr);
}

/* A blocking TCP socket connected to addr, or -1. */
static inline int tcp_connect(const struct sockaddr_in *addr)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);

    if (c < 0)
        return -1;
    if (connect(c, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        close(c);
        return -1;
    }
    return c;
}

/* A connected TCP pair over loopback: *a connected, *b accepted; 0 or -1. */
static inline int tcp_pair(int *a, int *b)
{
    struct sockaddr_in addr;
    int l = listener(1, &addr);

    if (l < 0)
        return -1;
    *a = socket(AF_INET, SOCK_STREAM, 0);
    if (*a < 0 || connect(*a, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(l);
        return -1;
    }
    *b = accept(l, NULL, NULL);
    close(l);
    return *b < 0 ? -1 : 0;
}

/* Green thread body: connects once to the struct sockaddr_in *arg, closes. */
static inline void green_connect_once(void *arg)
{
    const struct sockaddr_in *addr = arg;
    int c = socket(AF_INET, SOCK_STREAM, 0);

    CHECK_OR(c >= 0, );
    CHECK_OR(connect(c, (const struct sockaddr *)addr, sizeof *addr) == 0, );
    CHECK_OR(close(c) == 0, );
}

/* O_NONBLOCK as the kernel has it, past the fcntl wrapper: 1, 0 or -1. */
static inline int kernel_nb(int fd)
{
    long fl = syscall(SYS_fcntl, fd, F_GETFL);

    return fl < 0 ? -1 : (fl & O_NONBLOCK) != 0;
}

/* Counted by ticker and tick_once: a test reads it to see whether other
 * green threads ran meanwhile. stop_ticker ends ticker's loop. */
static int ticks, stop_ticker;

/* Green thread body: ticks every 5 ms (usleep, so it parks) until
 * stop_ticker is set. */
static inline void ticker(void *arg)
{
    (void)arg;
    while (!stop_ticker) {
        usleep(5000);
        ticks++;
    }
}

/* Green thread body: ticks once and ends (left ready, it shows whether
 * anything ran the hub). */
static inline void tick_once(void *arg)
{
    (void)arg;
    ticks++;
}

/* Runs fn(arg) in a green thread beside a ticker and, unless side is NULL,
 * beside side(side_arg); joins fn, then side, then stops and joins the
 * ticker. Returns the ticks counted meanwhile, or -1 after a failed CHECK. */
static inline int run_beside_ticker(green_fn fn, void *arg, green_fn side,
                                    void *side_arg)
{
    struct green *t, *g, *s = NULL;
    int t0;

    stop_ticker = 0;
    t0 = ticks;
    t = green_spawn(ticker, NULL, NULL);
    g = green_spawn(fn, arg, NULL);
    if (side)
        s = green_spawn(side, side_arg, NULL);
    CHECK_OR(t && g && (!side || s), -1);
    CHECK_OR(green_join(g, 5.0) == 0, -1);
    if (s)
        CHECK_OR(green_join(s, 5.0) == 0, -1);
    stop_ticker = 1;
    CHECK_OR(green_join(t, 5.0) == 0, -1);
    return ticks - t0;
}

#endif
