"""Hostile and malformed input over raw sockets: every case gets the right
4xx, the connection is closed, and the app is never called (it records
each call in a file; a normal request afterwards proves the count moved
by exactly one and the server is still up)."""

import time

import pytest

APP = r'''
def app(environ, start_response):
    record("call", environ["REQUEST_METHOD"], environ["PATH_INFO"])
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok:" + body]
'''

OPTS = {"header_timeout": 0.5, "url_length_limit": 2000,
        "max_header_count": 20, "max_header_size": 1000}


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(APP, OPTS)


def check_refused(srv, data, status, *, pieces=None):
    """Sends data (or pieces, one send each), expects `status` and a
    closed connection, and proves the app was not called."""
    before = srv.records()
    with srv.raw() as c:
        try:
            for piece in pieces or [data]:
                c.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may refuse before the client is done
        status_line, code, h, _ = c.head()
        assert code == status, status_line
        assert h.get("connection", "").lower() == "close"
        body = c.read_exact(int(h["content-length"]))
        assert body.startswith(str(status).encode())
        assert c.closed(), "the connection stayed open after an error"
    status_code, _, body = srv.request("GET", "/probe")
    assert (status_code, body) == (200, b"ok:")
    assert srv.records() == before + ["call GET /probe"], \
        "the app was called for a refused request"
    return body


CASES = {
    "cl-and-te": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "two-content-lengths": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                            b"Content-Length: 6\r\n\r\nhello!", 400),
    "bad-content-length": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n"
                           b"\r\nhello", 400),
    "negative-content-length": (b"POST / HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: -1\r\n\r\n", 400),
    "unknown-transfer-coding": (b"POST / HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    "bad-chunk-size": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                       b"\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-overflow": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                            b"\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-data-too-long": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                            b"\r\n\r\n3\r\nhello\r\n0\r\n\r\n", 400),
    "bare-cr": (b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
    "bare-cr-in-header": (b"GET / HTTP/1.1\r\nHost: x\rX-Evil: 1\r\n\r\n", 400),
    "bare-lf": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "bare-lf-mixed": (b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400),
    "invalid-header-name": (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
    "header-name-colon-space": (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    "nul-in-header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  continued\r\n\r\n", 400),
    "http2-version": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "http3-version": (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
    "garbage-version": (b"GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
    "no-version": (b"GET /\r\nHost: x\r\n\r\n", 400),
    "http11-no-host": (b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "huge-request-line": (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "too-many-headers": (b"GET / HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"X-H%d: v\r\n" % i for i in range(30))
                         + b"\r\n", 431),
    "huge-header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 2000
                    + b"\r\n\r\n", 431),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(srv, name):
    data, status = CASES[name]
    check_refused(srv, data, status)


def test_huge_request_line_never_ending(srv):
    """A request line that never ends is refused once it passes the limit,
    without waiting for the rest (the client is still sending)."""
    check_refused(srv, None, 414, pieces=[b"GET /" + b"a" * 2500])


def test_huge_head_without_end(srv):
    """Headers that go on forever: refused at the limit, not buffered."""
    check_refused(srv, None, 431, pieces=[
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 900 + b"\r\n"] * 1
        + [b"X-Pad%d: %s\r\n" % (i, b"p" * 900) for i in range(40)])


def test_header_timeout_408(srv):
    before = srv.records()
    with srv.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        t0 = time.monotonic()
        status, code, h, _ = c.head()
        waited = time.monotonic() - t0
        assert code == 408
        assert 0.35 <= waited < 3, waited
        c.read_exact(int(h["content-length"]))
        assert c.closed()
    assert srv.records() == before


def test_header_timeout_not_reset_by_trickle(srv):
    """A client trickling a byte at a time does not get more time: the
    timeout covers the whole head (slowloris)."""
    with srv.raw() as c:
        t0 = time.monotonic()
        code = None
        try:
            for ch in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100:
                c.send(bytes([ch]))
                time.sleep(0.05)
                if time.monotonic() - t0 > 3:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            code = c.head()[1]
        except (EOFError, ConnectionResetError):
            pass
        assert code == 408
        assert time.monotonic() - t0 < 2.5


def test_silent_connection_closed_after_header_timeout(srv):
    """A connection that never sends a byte is closed (no 408 needed)."""
    with srv.raw() as c:
        t0 = time.monotonic()
        assert c.closed(timeout=3)
        assert 0.35 <= time.monotonic() - t0 < 3


def test_leading_empty_lines_tolerated(srv):
    with srv.raw() as c:
        c.send(b"\r\nGET /lead HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"ok:"


def test_server_survives_garbage(srv):
    for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),
                 b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", bytes(range(256))):
        with srv.raw() as c:
            try:
                c.send(junk)
                got = c.read_to_eof()
            except (ConnectionResetError, BrokenPipeError):
                got = b""
            assert not got or got.startswith(b"HTTP/1.1 4") or \
                got.startswith(b"HTTP/1.1 5"), got[:100]
    status, _, body = srv.request("GET", "/still")
    assert status == 200


def test_error_response_not_lost_to_reset(srv):
    """The server refuses a request while the client still has bytes in
    flight; the refusal must still reach the client (no RST that discards
    it)."""
    with srv.raw() as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
               b"Content-Length: 6\r\n\r\n" + b"x" * 200000)
        time.sleep(0.2)
        status, code, h, _ = c.head()
        assert code == 400


def test_limits_boundaries(srv):
    """Exactly at each configured limit is fine; one past it is refused."""
    def line(n):  # a request line of n bytes (excluding CRLF)
        target = "/" + "a" * (n - len("GET / HTTP/1.1"))
        return f"GET {target} HTTP/1.1\r\n"
    with srv.raw() as c:
        c.send(line(2000) + "Host: x\r\n\r\n")
        assert c.response()[0] == 200
    check_refused(srv, (line(2001) + "Host: x\r\n\r\n").encode(), 414)

    def headers(n):
        return "".join(f"X-H{i}: v\r\n" for i in range(n - 1)) + "Host: x\r\n"
    with srv.raw() as c:
        c.send("GET / HTTP/1.1\r\n" + headers(20) + "\r\n")
        assert c.response()[0] == 200
    check_refused(srv, ("GET / HTTP/1.1\r\n" + headers(21) + "\r\n").encode(), 431)

    def big(n):  # one field line of n bytes (excluding CRLF)
        return "X-Big: " + "b" * (n - len("X-Big: ")) + "\r\n"
    with srv.raw() as c:
        c.send("GET / HTTP/1.1\r\nHost: x\r\n" + big(1000) + "\r\n")
        assert c.response()[0] == 200
    check_refused(srv, ("GET / HTTP/1.1\r\nHost: x\r\n" + big(1001) + "\r\n").encode(), 431)


def test_max_head_size(server):
    srv = server(APP, {"max_head_size": 4000})
    head = "GET / HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"X-H{i}: {'v' * 500}\r\n" for i in range(10)) + "\r\n"
    check_refused(srv, head.encode(), 431)


def test_default_limits_accept_a_30k_head(server):
    srv = server(APP)
    head = "GET / HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"X-H{i}: {'v' * 500}\r\n" for i in range(60)) + "\r\n"
    with srv.raw() as c:
        c.send(head)
        assert c.response()[0] == 200


FIELDS_APP = r'''
def app(environ, start_response):
    names = sorted(k for k in environ if k.startswith("HTTP_X_H"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%d %s" % (len(names), environ.get("HTTP_X_H99", "-"))).encode()]
'''


def test_every_field_up_to_the_limit_reaches_the_app(server):
    # more fields than a request's first header slots (32): all of them
    # reach the environ, the next request on the connection too, and one
    # field past max_header_count is still refused
    srv = server(FIELDS_APP)

    def head(n):
        return ("GET / HTTP/1.1\r\nHost: x\r\n" +
                "".join(f"X-H{i}: v{i}\r\n" for i in range(n)) + "\r\n")
    with srv.raw() as c:
        c.send(head(99) + head(3))
        code, _, body, _ = c.response()
        assert (code, body) == (200, b"99 -")
        code, _, body, _ = c.response()
        assert (code, body) == (200, b"3 -")
    with srv.raw() as c:
        c.send(head(99).replace("X-H0: v0", "X-H99: last"))
        assert c.response()[2] == b"99 last"
    with srv.raw() as c:
        c.send(head(100))
        assert c.response()[0] == 431
