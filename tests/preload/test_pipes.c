/* tests/preload/test_pipes.c - big blocking transfers through pipes, and
 * O_NONBLOCK never set on the open file of a pipe or a data socket.
 *
 * A writer green thread writes 1 MiB to a pipe in one write() (and in one
 * writev() of several buffers; over a socket also one sendmsg()) while a reader green thread reads it in
 * small chunks: the write returns the full 1 MiB, as a blocking write
 * does, and the data arrives intact and in order. The same over a socket.
 * All along, the kernel's O_NONBLOCK flag (read with the raw fcntl system
 * call, past the wrapper) is never set by libgreen on either pipe end or
 * on connected sockets - a child process sharing the open file would see
 * it and fail with EAGAIN.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

#define TOTAL (1 << 20)

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 131 + (i >> 10) * 7 + 1);
}

struct xfer {
    int rfd, wfd;
    int use_writev; /* 1: writev, 2: sendmsg, of 5 uneven pieces */
    unsigned char *src;
    ssize_t written;
    int write_err;
    size_t got;
    int corrupt_at;
    int reads;
    int nb_seen;    /* O_NONBLOCK found set on either fd in the kernel */
    int writer_done;
    int reads_while_writer_parked;
};

static void writer(void *arg)
{
    struct xfer *x = arg;

    errno = 0;
    if (x->use_writev) {
        /* uneven pieces, to cross iovec boundaries at odd offsets */
        struct iovec iov[5];
        size_t cuts[6] = {0, 1, 4097, 300000, 700001, TOTAL};
        for (int i = 0; i < 5; i++) {
            iov[i].iov_base = x->src + cuts[i];
            iov[i].iov_len = cuts[i + 1] - cuts[i];
        }
        if (x->use_writev == 2) {
            struct msghdr m = {.msg_iov = iov, .msg_iovlen = 5};
            x->written = sendmsg(x->wfd, &m, 0);
        } else {
            x->written = writev(x->wfd, iov, 5);
        }
    } else {
        x->written = write(x->wfd, x->src, TOTAL);
    }
    x->write_err = errno;
    x->writer_done = 1;
    if (kernel_nb(x->wfd) != 0)
        x->nb_seen = 1;
    CHECK_OR(close(x->wfd) == 0, );
}

static void reader(void *arg)
{
    struct xfer *x = arg;
    unsigned char buf[1000];
    size_t chunk = 1;
    ssize_t r;

    x->corrupt_at = -1;
    /* chunk sizes 1..1000, varying, so reads and writes never line up */
    while ((r = read(x->rfd, buf, chunk)) > 0) {
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != pattern(x->got + (size_t)i) && x->corrupt_at < 0)
                x->corrupt_at = (int)(x->got + (size_t)i);
        x->got += (size_t)r;
        x->reads++;
        if (!x->writer_done)
            x->reads_while_writer_parked++;
        if (kernel_nb(x->rfd) != 0 || (!x->writer_done && kernel_nb(x->wfd) != 0))
            x->nb_seen = 1;
        chunk = chunk * 7 % 1000 + 1;
    }
    CHECK_OR(r == 0, );
}

static int run_xfer(struct xfer *x)
{
    struct green *w, *r;

    x->src = malloc(TOTAL);
    CHECK_OR(x->src != NULL, -1);
    for (size_t i = 0; i < TOTAL; i++)
        x->src[i] = pattern(i);
    w = green_spawn(writer, x, NULL);
    r = green_spawn(reader, x, NULL);
    CHECK_OR(w && r, -1);
    CHECK_OR(green_join(w, 10.0) == 0, -1);
    CHECK_OR(green_join(r, 10.0) == 0, -1);
    free(x->src);
    return 0;
}

TEST(pipe_one_megabyte_write)
{
    int p[2];
    struct xfer x = {0};

    CHECK(pipe(p) == 0);
    x.rfd = p[0];
    x.wfd = p[1];
    CHECK(run_xfer(&x) == 0);
    CHECK(x.written == TOTAL);
    CHECK(x.got == TOTAL);
    CHECK(x.corrupt_at == -1);
    CHECK(x.reads_while_writer_parked > 100); /* they really interleaved */
    CHECK(!x.nb_seen);
    CHECK(kernel_nb(p[0]) == 0);
    CHECK(close(p[0]) == 0);
}

TEST(pipe_one_megabyte_writev)
{
    int p[2];
    struct xfer x = {0};

    CHECK(pipe(p) == 0);
    x.rfd = p[0];
    x.wfd = p[1];
    x.use_writev = 1;
    CHECK(run_xfer(&x) == 0);
    CHECK(x.written == TOTAL);
    CHECK(x.got == TOTAL);
    CHECK(x.corrupt_at == -1);
    CHECK(!x.nb_seen);
    CHECK(close(p[0]) == 0);
}

TEST(socketpair_one_megabyte_write)
{
    int sv[2];
    struct xfer x = {0};

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    x.rfd = sv[0];
    x.wfd = sv[1];
    CHECK(run_xfer(&x) == 0);
    CHECK(x.written == TOTAL);
    CHECK(x.got == TOTAL);
    CHECK(x.corrupt_at == -1);
    CHECK(!x.nb_seen);
    CHECK(close(sv[0]) == 0);
}

TEST(socketpair_one_megabyte_sendmsg)
{
    int sv[2];
    struct xfer x = {0};

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    x.rfd = sv[0];
    x.wfd = sv[1];
    x.use_writev = 2;
    CHECK(run_xfer(&x) == 0);
    CHECK(x.written == TOTAL);
    CHECK(x.got == TOTAL);
    CHECK(x.corrupt_at == -1);
    CHECK(!x.nb_seen);
    CHECK(close(sv[0]) == 0);
}

/* TCP: connected with a green connect() and accepted with a green
 * accept(), then 1 MiB each way; neither data socket may end up with
 * O_NONBLOCK in the kernel. */
static int tcp_listen_fd;
static struct sockaddr_in tcp_addr;
static int tcp_client = -1, tcp_server = -1;

static void tcp_connector(void *arg)
{
    (void)arg;
    tcp_client = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_OR(tcp_client >= 0, );
    CHECK_OR(connect(tcp_client, (struct sockaddr *)&tcp_addr, sizeof tcp_addr) == 0, );
}

static void tcp_acceptor(void *arg)
{
    (void)arg;
    tcp_server = accept(tcp_listen_fd, NULL, NULL);
    CHECK_OR(tcp_server >= 0, );
}

TEST(tcp_one_megabyte_both_ways)
{
    struct green *a, *c;
    struct xfer x = {0}, y = {0};

    tcp_listen_fd = listener(4, &tcp_addr);
    CHECK(tcp_listen_fd >= 0);
    a = green_spawn(tcp_acceptor, NULL, NULL);
    c = green_spawn(tcp_connector, NULL, NULL);
    CHECK(a && c);
    CHECK(green_join(a, 5.0) == 0);
    CHECK(green_join(c, 5.0) == 0);
    CHECK(tcp_client >= 0 && tcp_server >= 0);
    CHECK(kernel_nb(tcp_client) == 0);
    CHECK(kernel_nb(tcp_server) == 0);

    /* one direction per xfer; each closes its write end when done, so
     * duplicate the fds to keep the other direction open */
    x.rfd = tcp_server;
    x.wfd = dup(tcp_client);
    y.rfd = tcp_client;
    y.wfd = dup(tcp_server);
    CHECK(x.wfd >= 0 && y.wfd >= 0);
    {
        struct green *w1, *r1, *w2, *r2;
        x.src = malloc(TOTAL);
        y.src = malloc(TOTAL);
        CHECK(x.src && y.src);
        for (size_t i = 0; i < TOTAL; i++)
            x.src[i] = y.src[i] = pattern(i);
        w1 = green_spawn(writer, &x, NULL);
        r1 = green_spawn(reader, &x, NULL);
        w2 = green_spawn(writer, &y, NULL);
        r2 = green_spawn(reader, &y, NULL);
        CHECK(w1 && r1 && w2 && r2);
        /* each writer closes its dup; the EOF needs the original closed */
        CHECK(green_join(w1, 10.0) == 0);
        CHECK(shutdown(tcp_client, SHUT_WR) == 0);
        CHECK(green_join(w2, 10.0) == 0);
        CHECK(shutdown(tcp_server, SHUT_WR) == 0);
        CHECK(green_join(r1, 10.0) == 0);
        CHECK(green_join(r2, 10.0) == 0);
        free(x.src);
        free(y.src);
    }
    CHECK(x.written == TOTAL && y.written == TOTAL);
    CHECK(x.got == TOTAL && y.got == TOTAL);
    CHECK(x.corrupt_at == -1 && y.corrupt_at == -1);
    CHECK(!x.nb_seen && !y.nb_seen);
    CHECK(kernel_nb(tcp_client) == 0);
    CHECK(kernel_nb(tcp_server) == 0);
    CHECK(close(tcp_client) == 0);
    CHECK(close(tcp_server) == 0);
    CHECK(close(tcp_listen_fd) == 0);
}

/* What the rule protects: a child process shares the pipe's open file and
 * writes to it with plain blocking writes while a green thread of the
 * parent reads slowly. If libgreen had set O_NONBLOCK on the description,
 * the child's writes would fail with EAGAIN once the pipe is full. */
static void slow_reader(void *arg)
{
    struct xfer *x = arg;
    char buf[4096];
    ssize_t r;

    while ((r = read(x->rfd, buf, sizeof buf)) > 0) {
        x->got += (size_t)r;
        if (x->reads++ % 16 == 0)
            usleep(1000);
    }
}

TEST(child_shares_pipe_and_blocks_normally)
{
    int p[2], status;
    struct xfer x = {0};
    struct green *g;
    pid_t pid;

    CHECK(pipe(p) == 0);
    x.rfd = p[0];
    g = green_spawn(slow_reader, &x, NULL);
    CHECK(g != NULL);
    CHECK(green_sleep(0.02) == 0); /* the reader parks on the empty pipe */
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        static char buf[TOTAL];
        size_t done = 0;
        close(p[0]);
        while (done < sizeof buf) {
            ssize_t r = write(p[1], buf + done, sizeof buf - done);
            if (r <= 0)
                _exit(r < 0 && errno == EAGAIN ? 3 : 4);
            done += (size_t)r;
        }
        _exit(0);
    }
    CHECK(close(p[1]) == 0);
    CHECK(green_join(g, 10.0) == 0);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(x.got == TOTAL);
    CHECK(kernel_nb(p[0]) == 0);
    CHECK(close(p[0]) == 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    RUN(pipe_one_megabyte_write);
    RUN(pipe_one_megabyte_writev);
    RUN(socketpair_one_megabyte_write);
    RUN(socketpair_one_megabyte_sendmsg);
    RUN(tcp_one_megabyte_both_ways);
    RUN(child_shares_pipe_and_blocks_normally);
    return CHECK_DONE();
}
