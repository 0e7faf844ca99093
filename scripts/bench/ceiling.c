/* scripts/bench/ceiling.c - the fastest HTTP server the load generator can
 * see: one thread, epoll, a fixed 13-byte keep-alive response.
 *
 * `make bench` (scripts/bench/side-by-side) runs it next to the WSGI
 * servers as the ceiling of the "plain" row: whatever wrk reports for it
 * is wrk's own limit on this machine plus loopback TCP, not a server's.
 * It parses nothing but the end of each request head (CRLF CRLF), so a
 * pipelined batch gets one answer per head, written in one send.
 *
 * Usage: ceiling PORT   (listens on 127.0.0.1:PORT, backlog 4096; runs
 * until killed)
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello, world!";

#define RESP_LEN (sizeof(RESPONSE) - 1)
#define BUF_SIZE 16384
#define MAX_BATCH 64 /* answers per send; wrk never pipelines more */

/* Per connection: how far into "\r\n\r\n" the previous read ended. */
struct conn {
    int fd;
    int match;
};

static int listen_on(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) {
        perror("ceiling: listen");
        exit(1);
    }
    return fd;
}

/* Count complete request heads in buf, carrying a partial "\r\n\r\n"
 * match over to the next read. */
static int count_heads(struct conn *c, const char *buf, ssize_t n)
{
    static const char end[] = "\r\n\r\n";
    int heads = 0;

    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == end[c->match])
            c->match++;
        else
            c->match = buf[i] == '\r';
        if (c->match == 4) {
            heads++;
            c->match = 0;
        }
    }
    return heads;
}

/* Read what is there and answer every complete head. Returns -1 when
 * the connection is done (closed by the peer or failed). */
static int serve(struct conn *c)
{
    static char buf[BUF_SIZE];
    static char out[RESP_LEN * MAX_BATCH];

    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);

        if (n == 0)
            return -1;
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        int heads = count_heads(c, buf, n);
        while (heads > 0) {
            int k = heads < MAX_BATCH ? heads : MAX_BATCH;
            for (int i = 0; i < k; i++)
                memcpy(out + i * RESP_LEN, RESPONSE, RESP_LEN);
            /* Responses are tiny: a full socket buffer means a client that
             * does not read, and dropping it is the right answer. */
            if (send(c->fd, out, k * RESP_LEN, MSG_NOSIGNAL) != (ssize_t)(k * RESP_LEN))
                return -1;
            heads -= k;
        }
    }
}

static void accept_all(int ep, int lfd)
{
    int one = 1;

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or EMFILE: the backlog keeps the rest */
        struct conn *c = calloc(1, sizeof *c);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
        }
    }
}

int main(int argc, char **argv)
{
    static struct conn listener;
    struct epoll_event evs[256];
    int ep = epoll_create1(EPOLL_CLOEXEC);

    if (argc != 2) {
        fprintf(stderr, "usage: ceiling PORT\n");
        return 2;
    }
    listener.fd = listen_on(atoi(argv[1]));
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, listener.fd, &lev) < 0) {
        perror("ceiling: epoll");
        return 1;
    }
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == &listener) {
                accept_all(ep, listener.fd);
            } else if (serve(c) < 0) {
                close(c->fd); /* also removes it from the epoll set */
                free(c);
            }
        }
    }
}
