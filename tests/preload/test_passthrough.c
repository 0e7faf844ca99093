/* tests/preload/test_passthrough.c - outside green threads, and on regular
 * files, every call is libc's own (hard rule 2).
 *
 * On an OS thread without a hub, blocking read/recv/accept/poll/select
 * wait as libc's do and return what arrives. In the main context, with a
 * hub and a green thread ready to run, they block the OS thread too: the
 * hub does not run behind the caller's back. Inside green threads,
 * regular files and character devices are read and written directly,
 * never parked (no switch happens). With LIBGREEN_HOOKS=off (or 0, false,
 * no) even green threads get the plain blocking calls.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

static const char *self_exe;

/* ---- an OS thread without a hub ---------------------------------------- */

struct delayed_write {
    int fd, delay_ms;
    const char *data;
};

static void *write_later(void *arg)
{
    struct delayed_write *d = arg;

    usleep((useconds_t)d->delay_ms * 1000);
    if (write(d->fd, d->data, strlen(d->data)) < 0)
        perror("write_later");
    return NULL;
}

enum { T_READ, T_RECV, T_POLL, T_SELECT, T_POLL_TIMEOUT, T_ACCEPT };

struct os_call {
    int kind, fd;
    long r;
    char buf[32];
    short revents;
    double elapsed;
    int had_hub;
};

static void *os_thread_call(void *arg)
{
    struct os_call *c = arg;
    struct pollfd p = {c->fd, POLLIN, 0};
    struct timeval tv = {5, 0};
    fd_set r;
    double t0 = check_now();

    switch (c->kind) {
    case T_READ: c->r = read(c->fd, c->buf, sizeof c->buf); break;
    case T_RECV: c->r = recv(c->fd, c->buf, sizeof c->buf, 0); break;
    case T_POLL: c->r = poll(&p, 1, 5000); break;
    case T_POLL_TIMEOUT: c->r = poll(&p, 1, 100); break;
    case T_SELECT:
        FD_ZERO(&r);
        FD_SET(c->fd, &r);
        c->r = select(c->fd + 1, &r, NULL, NULL, &tv);
        break;
    case T_ACCEPT: c->r = accept(c->fd, NULL, NULL); break;
    }
    c->revents = p.revents;
    c->elapsed = check_now() - t0;
    c->had_hub = green_hub_peek() != NULL;
    return NULL;
}

/* Starts kind on fd in a new OS thread, writes "hello" to wfd after
 * 100 ms from another one, waits for both. */
static int os_thread_waits(int kind, int fd, int wfd, struct os_call *c)
{
    struct delayed_write d = {wfd, 100, "hello"};
    pthread_t a, b;

    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->fd = fd;
    CHECK_OR(pthread_create(&a, NULL, os_thread_call, c) == 0, -1);
    if (wfd >= 0)
        CHECK_OR(pthread_create(&b, NULL, write_later, &d) == 0, -1);
    CHECK_OR(pthread_join(a, NULL) == 0, -1);
    if (wfd >= 0)
        CHECK_OR(pthread_join(b, NULL) == 0, -1);
    CHECK_OR(!c->had_hub, -1);
    return 0;
}

TEST(os_thread_blocking_read_waits_for_data)
{
    struct os_call c;
    int p[2], sv[2];

    CHECK(pipe(p) == 0);
    CHECK(os_thread_waits(T_READ, p[0], p[1], &c) == 0);
    CHECK(c.r == 5 && memcmp(c.buf, "hello", 5) == 0);
    CHECK(c.elapsed >= 0.09 && c.elapsed < 2.0);
    CHECK(close(p[0]) == 0 && close(p[1]) == 0);

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(os_thread_waits(T_RECV, sv[0], sv[1], &c) == 0);
    CHECK(c.r == 5 && memcmp(c.buf, "hello", 5) == 0);
    CHECK(c.elapsed >= 0.09 && c.elapsed < 2.0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

TEST(os_thread_poll_and_select_wait)
{
    struct os_call c;
    int sv[2];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(os_thread_waits(T_POLL, sv[0], sv[1], &c) == 0);
    CHECK(c.r == 1 && c.revents == POLLIN);
    CHECK(c.elapsed >= 0.09 && c.elapsed < 2.0);
    CHECK(read(sv[0], c.buf, sizeof c.buf) == 5);

    CHECK(os_thread_waits(T_SELECT, sv[0], sv[1], &c) == 0);
    CHECK(c.r == 1);
    CHECK(c.elapsed >= 0.09 && c.elapsed < 2.0);
    CHECK(read(sv[0], c.buf, sizeof c.buf) == 5);

    CHECK(os_thread_waits(T_POLL_TIMEOUT, sv[0], -1, &c) == 0);
    CHECK(c.r == 0);
    CHECK(c.elapsed >= 0.099 && c.elapsed < 2.0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

static void *connect_later(void *arg)
{
    struct sockaddr_in *addr = arg;
    int c = socket(AF_INET, SOCK_STREAM, 0);

    usleep(100000);
    if (connect(c, (struct sockaddr *)addr, sizeof *addr) < 0)
        perror("connect_later");
    close(c);
    return NULL;
}

TEST(os_thread_accept_waits)
{
    struct sockaddr_in addr;
    struct os_call c = {0};
    pthread_t a, b;
    int l = listener(4, &addr);

    CHECK(l >= 0);
    c.kind = T_ACCEPT;
    c.fd = l;
    CHECK(pthread_create(&a, NULL, os_thread_call, &c) == 0);
    CHECK(pthread_create(&b, NULL, connect_later, &addr) == 0);
    CHECK(pthread_join(a, NULL) == 0);
    CHECK(pthread_join(b, NULL) == 0);
    CHECK(c.r >= 0);
    CHECK(c.elapsed >= 0.09 && c.elapsed < 2.0);
    CHECK(close((int)c.r) == 0);
    CHECK(close(l) == 0);
}

/* ---- the main context: a hub exists, a green thread is ready ---------- */

TEST(main_context_calls_are_real)
{
    struct delayed_write d;
    struct green *g;
    struct pollfd p;
    pthread_t th;
    char buf[16];
    double t0;
    int sv[2];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    ticks = 0;
    g = green_spawn(tick_once, NULL, NULL);
    CHECK(g != NULL);

    d = (struct delayed_write){sv[1], 100, "first"};
    CHECK(pthread_create(&th, NULL, write_later, &d) == 0);
    t0 = check_now();
    CHECK(read(sv[0], buf, sizeof buf) == 5);
    CHECK(check_now() - t0 >= 0.09);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(memcmp(buf, "first", 5) == 0);
    CHECK(ticks == 0); /* the ready green thread did not run */

    p = (struct pollfd){sv[0], POLLIN, 0};
    t0 = check_now();
    CHECK(poll(&p, 1, 100) == 0);
    CHECK(check_now() - t0 >= 0.099);
    CHECK(ticks == 0);

    d = (struct delayed_write){sv[1], 100, "second"};
    CHECK(pthread_create(&th, NULL, write_later, &d) == 0);
    CHECK(poll(&p, 1, 5000) == 1 && p.revents == POLLIN);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(recv(sv[0], buf, sizeof buf, 0) == 6);
    CHECK(ticks == 0);

    CHECK(green_join(g, 5.0) == 0);
    CHECK(ticks == 1);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

/* A main-context write of 1 MiB to a pipe read slowly by an OS thread:
 * one blocking write, all bytes. */
struct drain {
    int fd;
    size_t total;
};

static void *slow_drain(void *arg)
{
    struct drain *d = arg;
    char buf[4096];
    ssize_t r;

    usleep(50000);
    while ((r = read(d->fd, buf, sizeof buf)) > 0)
        d->total += (size_t)r;
    return NULL;
}

TEST(main_context_big_write_blocks_until_done)
{
    static char big[1 << 20];
    struct drain d = {-1, 0};
    pthread_t th;
    int p[2];

    CHECK(pipe(p) == 0);
    d.fd = p[0];
    CHECK(pthread_create(&th, NULL, slow_drain, &d) == 0);
    CHECK(write(p[1], big, sizeof big) == (ssize_t)sizeof big);
    CHECK(close(p[1]) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(d.total == sizeof big);
    CHECK(close(p[0]) == 0);
}

/* ---- regular files and devices inside green threads ------------------- */

struct fileio {
    int ok;
    uint64_t switches_during;
    int ticks_during;
};

static void file_io(void *arg)
{
    struct fileio *f = arg;
    char path[] = "/tmp/libgreen_passthrough_XXXXXX";
    static unsigned char out[256 * 1024], in[256 * 1024];
    struct green_stats s0, s1;
    struct iovec iov[2];
    int t0 = ticks, fd, dn, dz;
    char zero[100];

    for (size_t i = 0; i < sizeof out; i++)
        out[i] = (unsigned char)(i * 13 + 5);
    fd = mkstemp(path);
    CHECK_OR(fd >= 0, );
    unlink(path);
    green_get_stats(&s0);

    CHECK_OR(write(fd, out, sizeof out) == (ssize_t)sizeof out, );
    CHECK_OR(lseek(fd, 0, SEEK_SET) == 0, );
    CHECK_OR(read(fd, in, sizeof in) == (ssize_t)sizeof in, );
    CHECK_OR(memcmp(in, out, sizeof out) == 0, );
    CHECK_OR(read(fd, in, sizeof in) == 0, ); /* end of file */
    iov[0] = (struct iovec){out, 1000};
    iov[1] = (struct iovec){out + 1000, 3000};
    CHECK_OR(writev(fd, iov, 2) == 4000, );
    CHECK_OR(lseek(fd, -4000, SEEK_END) > 0, );
    iov[0] = (struct iovec){in, 2500};
    iov[1] = (struct iovec){in + 2500, 1500};
    CHECK_OR(readv(fd, iov, 2) == 4000, );
    CHECK_OR(memcmp(in, out, 4000) == 0, );
    /* recv on a file is a socket call on a non-socket */
    errno = 0;
    CHECK_OR(recv(fd, in, 10, 0) == -1 && errno == ENOTSOCK, );
    /* poll says regular files are always ready */
    {
        struct pollfd p = {fd, POLLIN | POLLOUT, 0};
        CHECK_OR(poll(&p, 1, 5000) == 1, );
        CHECK_OR(p.revents == (POLLIN | POLLOUT), );
    }

    dn = open("/dev/null", O_RDWR);
    dz = open("/dev/zero", O_RDONLY);
    CHECK_OR(dn >= 0 && dz >= 0, );
    CHECK_OR(write(dn, out, sizeof out) == (ssize_t)sizeof out, );
    CHECK_OR(read(dn, in, sizeof in) == 0, );
    memset(zero, 1, sizeof zero);
    CHECK_OR(read(dz, zero, sizeof zero) == (ssize_t)sizeof zero, );
    CHECK_OR(zero[0] == 0 && zero[99] == 0, );

    green_get_stats(&s1);
    f->switches_during = s1.switches - s0.switches;
    f->ticks_during = ticks - t0;
    CHECK_OR(close(dn) == 0 && close(dz) == 0 && close(fd) == 0, );
    f->ok = 1;
}

TEST(regular_files_never_park)
{
    struct fileio f = {0};
    struct green *g, *t;

    ticks = 0;
    g = green_spawn(file_io, &f, NULL);
    t = green_spawn(tick_once, NULL, NULL); /* ready all along */
    CHECK(g && t);
    CHECK(green_join(g, 5.0) == 0);
    CHECK(green_join(t, 5.0) == 0);
    CHECK(f.ok);
    CHECK(f.switches_during == 0); /* nobody else ran: it never parked */
    CHECK(f.ticks_during == 0);
}

/* ---- LIBGREEN_HOOKS=0 ------------------------------------------------- */

static void hooks_off_reader(void *arg)
{
    char buf[16];
    int *p = arg;
    struct delayed_write d = {p[1], 100, "late"};
    pthread_t th;
    double t0 = check_now();

    CHECK_OR(pthread_create(&th, NULL, write_later, &d) == 0, );
    /* with hooks off this blocks the OS thread: the ticker cannot run */
    CHECK_OR(read(p[0], buf, sizeof buf) == 4, );
    CHECK_OR(check_now() - t0 >= 0.09, );
    CHECK_OR(ticks == 0, );
    CHECK_OR(pthread_join(th, NULL) == 0, );
}

/* Runs in the re-executed child with LIBGREEN_HOOKS=0. */
static int hooks_off_child(void)
{
    struct green *r, *t;
    int p[2];

    if (pipe(p) < 0)
        return 2;
    r = green_spawn(hooks_off_reader, p, NULL);
    t = green_spawn(tick_once, NULL, NULL);
    if (!r || !t || green_join(r, 5.0) != 0 || green_join(t, 5.0) != 0)
        return 3;
    if (check_failed_ || ticks != 1)
        return 1;
    close(p[0]);
    close(p[1]);
    return 0;
}

/* Every spelling of "off" turns them off. */
TEST(hooks_off_passes_everything_through)
{
    static const char *const off[] = {"0", "off", "false", "no", "OFF"};

    for (size_t i = 0; i < sizeof off / sizeof *off; i++) {
        int status;
        pid_t pid = fork();

        CHECK(pid >= 0);
        if (pid == 0) {
            char *argv[] = {(char *)self_exe, "--hooks-off-child", NULL};
            setenv("LIBGREEN_HOOKS", off[i], 1);
            execv("/proc/self/exe", argv);
            _exit(127);
        }
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
}

int main(int argc, char **argv)
{
    self_exe = argv[0];
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    if (argc > 1 && strcmp(argv[1], "--hooks-off-child") == 0)
        return hooks_off_child();
    RUN(os_thread_blocking_read_waits_for_data);
    RUN(os_thread_poll_and_select_wait);
    RUN(os_thread_accept_waits);
    RUN(main_context_calls_are_real);
    RUN(main_context_big_write_blocks_until_done);
    RUN(regular_files_never_park);
    RUN(hooks_off_passes_everything_through);
    return CHECK_DONE();
}
