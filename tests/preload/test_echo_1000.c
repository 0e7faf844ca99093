/* tests/preload/test_echo_1000.c - 1,000 concurrent connections on one OS
 * thread, with nothing but ordinary blocking libc calls.
 *
 * An in-process echo server (a green thread blocking in accept() in a
 * loop, one green thread per connection blocking in read()/write()) and
 * 1,000 client green threads that each connect(), wait until all 1,000 are
 * connected at once, then send a distinct message and check its echo.
 * Proves that accept/connect/read/write park only their green thread and
 * wake it at the right time, that nothing is mixed up between 2,000 open
 * sockets, that everything ran on one OS thread, and that it is fast
 * (well under a few seconds).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

#define NCLIENTS 1000
#define STACK (128 * 1024)

static const struct green_attr attr = {STACK, NULL};

static int listen_fd = -1;
static struct sockaddr_in server_addr;
static pid_t main_tid;

static int accepted, echo_live, echo_bytes, server_stopped_ebadf;
static int connected, max_connected, send_started, succeeded;
static int wrong_thread;
static struct green_wq all_connected;

static void check_tid(void)
{
    if ((pid_t)syscall(SYS_gettid) != main_tid)
        wrong_thread = 1;
}

/* Reads exactly n bytes (a blocking read may return fewer). */
static ssize_t read_full(int fd, char *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0)
            return r;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static void echo_conn(void *arg)
{
    int fd = (int)(long)arg;
    char buf[512];
    ssize_t r;

    check_tid();
    while ((r = read(fd, buf, sizeof buf)) > 0) {
        if (write(fd, buf, (size_t)r) != r) {
            fprintf(stderr, "echo: short write (errno %d)\n", errno);
            check_failed_ = 1;
            break;
        }
        echo_bytes += (int)r;
    }
    if (r < 0) {
        fprintf(stderr, "echo: read failed (errno %d)\n", errno);
        check_failed_ = 1;
    }
    close(fd);
    echo_live--;
}

static void server(void *arg)
{
    (void)arg;
    check_tid();
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        struct green *g;
        if (fd < 0) {
            /* main closes the listener once every client is done */
            server_stopped_ebadf = errno == EBADF;
            return;
        }
        accepted++;
        echo_live++;
        g = green_spawn(echo_conn, (void *)(long)fd, &attr);
        CHECK_OR(g != NULL, );
        green_detach(g);
    }
}

static void client(void *arg)
{
    int id = (int)(long)arg;
    char msg[128], back[128];
    int fd, len;

    check_tid();
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_OR(fd >= 0, );
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) != 0) {
        fprintf(stderr, "client %d: connect failed (errno %d)\n", id, errno);
        check_failed_ = 1;
        close(fd);
        return;
    }
    /* Barrier: nobody sends until all NCLIENTS hold a connection. */
    connected++;
    if (connected > max_connected)
        max_connected = connected;
    if (connected == NCLIENTS)
        green_wq_wake_all(&all_connected);
    else
        CHECK_OR(green_wq_wait(&all_connected, 10.0) == 0, );
    send_started++;

    len = snprintf(msg, sizeof msg, "client %04d says hello %d times", id,
                   id * 7919 % 1000);
    CHECK_OR(write(fd, msg, (size_t)len) == len, );
    CHECK_OR(read_full(fd, back, (size_t)len) == len, );
    CHECK_OR(memcmp(msg, back, (size_t)len) == 0, );
    succeeded++;
    connected--;
    CHECK_OR(close(fd) == 0, );
}

static int echo_done(void *arg)
{
    (void)arg;
    return echo_live == 0;
}

TEST(echo_1000_clients)
{
    struct green *clients[NCLIENTS], *srv;
    double t0, elapsed;
    int i;

    main_tid = (pid_t)syscall(SYS_gettid);
    listen_fd = listener(2048, &server_addr);
    CHECK(listen_fd >= 0);

    t0 = check_now();
    srv = green_spawn(server, NULL, &attr);
    CHECK(srv != NULL);
    for (i = 0; i < NCLIENTS; i++) {
        clients[i] = green_spawn(client, (void *)(long)i, &attr);
        CHECK(clients[i] != NULL);
    }
    for (i = 0; i < NCLIENTS; i++)
        CHECK(green_join(clients[i], 20.0) == 0);
    elapsed = check_now() - t0;

    /* Stop the server: closing the listener wakes its accept() (EBADF). */
    CHECK(close(listen_fd) == 0);
    CHECK(green_join(srv, 5.0) == 0);
    CHECK(server_stopped_ebadf);
    CHECK(green_hub_run(echo_done, NULL) == 0);

    fprintf(stderr, "  %d clients echoed in %.3f s\n", succeeded, elapsed);
    CHECK(!check_failed_);
    CHECK(max_connected == NCLIENTS);
    CHECK(send_started == NCLIENTS);
    CHECK(succeeded == NCLIENTS);
    CHECK(accepted == NCLIENTS);
    CHECK(echo_live == 0);
    CHECK(echo_bytes > 0);
    CHECK(!wrong_thread);
    CHECK(elapsed < 3.0);
}

int main(void)
{
    RUN(echo_1000_clients);
    return CHECK_DONE();
}
