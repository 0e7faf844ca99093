/* server/send.c - writing to a connection: whole iovecs from a green
 * thread, and the server's own error responses from either context.
 *
 * A green thread waits for its socket with the GIL released (srv_wait),
 * so other requests run meanwhile; the hub context never waits.
 *
 * The server's sockets are its own and never block (accepted with
 * SOCK_NONBLOCK): every send is a sendmsg that says MSG_DONTWAIT, which
 * the interposed sendmsg passes straight to libc without looking the fd
 * up (hard rule 2), and MSG_NOSIGNAL, never writev: a write to a
 * connection the client reset fails with EPIPE, and writev would also
 * raise SIGPIPE, which kills the process of an app that set it back to
 * SIG_DFL. sendfile (response.c) has no such flag: it blocks the signal
 * instead.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "server/py.h"

int srv_wait(int fd, int events, double timeout)
{
    PyThreadState *ts = PyEval_SaveThread();
    int r = G.wait_fd(fd, events, timeout);
    int saved = errno;

    PyEval_RestoreThread(ts);
    errno = saved;
    return r;
}

/* writev without SIGPIPE and without the fd lookup (see the top of
 * this file); at most IOV_MAX pieces a call. */
static ssize_t srv_writev(int fd, struct iovec *iov, int cnt)
{
    struct msghdr m = {.msg_iov = iov,
                       .msg_iovlen = (size_t)(cnt > IOV_MAX ? IOV_MAX : cnt)};

    return sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Writes every byte of iov. Green thread, GIL held. Returns 0 or -1 with
 * errno (EPIPE, ECONNRESET: the client left; ETIMEDOUT). A client that
 * stopped reading for timeout seconds is reset when the connection
 * closes (c->reset): the bytes queued for it are dropped at once instead
 * of held by the kernel while it trickles them out. */
int srv_send_all(struct srv_conn *c, struct iovec *iov, int cnt, double timeout)
{
    while (cnt > 0) {
        ssize_t n = srv_writev(c->fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -1;
            if (srv_wait(c->fd, GREEN_WRITE, timeout) < 0) {
                c->reset |= errno == ETIMEDOUT;
                return -1;
            }
            continue;
        }
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

static const char *srv_reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* An error response on a connection that closes after it, with text as
 * its body. From the hub context it is one best-effort send (the socket
 * buffer is empty then); from a green thread it waits as needed. */
void srv_send_error_text(struct srv_conn *c, int status, const char *text,
                         size_t len)
{
    char head[512];
    int hlen;
    struct iovec iov[2];

    hlen = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nServer: libgreen\r\nDate: %s\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    status, srv_reason(status), srv_http_date(), len);
    iov[0].iov_base = head;
    iov[0].iov_len = (size_t)hlen;
    iov[1].iov_base = (void *)text;
    iov[1].iov_len = len;
    if (G.current())
        srv_send_all(c, iov, 2, c->srv->opt.body_timeout);
    else
        (void)!srv_writev(c->fd, iov, 2);
}

/* The same with a one-line body: "<status> <reason>: <detail>". */
void srv_send_error(struct srv_conn *c, int status, const char *detail)
{
    char body[512];
    int blen;

    blen = snprintf(body, sizeof body, "%d %s%s%s\n", status, srv_reason(status),
                    detail ? ": " : "", detail ? detail : "");
    if (blen < 0 || (size_t)blen >= sizeof body)
        blen = (int)strlen(body);
    srv_send_error_text(c, status, body, (size_t)blen);
}
