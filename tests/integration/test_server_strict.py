"""Parser strictness end to end (RFC 9110 and 9112; issue 9): each request
the parser refuses is answered with its 4xx over a real socket, the
connection is closed, and the app never sees it; the near misses next to
each rule still reach the app unchanged.

The rules: no framing, routing, connection or credential field in a
chunked body's trailers; no repeated singleton field (Content-Type,
Authorization, Range, ...); authority-form only with CONNECT; absolute-form
only as an http(s) URI with a valid host and no userinfo; and the older
rules of the same kind (field and request-line syntax, Content-Length and
Transfer-Encoding forms, chunk syntax). Requests go as raw bytes over
127.0.0.1; the app records each call so a refusal is proved to have never
reached it.
"""

import json
import time

import pytest

APP = r'''
import json

def app(environ, start_response):
    record("call", environ["REQUEST_METHOD"], environ["PATH_INFO"])
    body = environ["wsgi.input"].read()
    seen = {k: environ.get(k) for k in (
        "HTTP_HOST", "HTTP_COOKIE", "HTTP_ACCEPT", "HTTP_X_FORWARDED_FOR",
        "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "CONTENT_TYPE")}
    seen["body"] = body.decode("latin-1")
    out = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]
'''

OPTS = {"header_timeout": 5}

HEAD_TE = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(APP, OPTS)


def check_refused(srv, data, status=400):
    """Sends data in one piece, expects `status` with Connection: close
    and a closed connection, and proves the app was not called (a normal
    request afterwards moves the call record by exactly itself)."""
    before = srv.records()
    with srv.raw() as c:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the client was done
        status_line, code, h, _ = c.head()
        assert code == status, status_line
        assert h.get("connection", "").lower() == "close"
        body = c.read_exact(int(h["content-length"]))
        assert body.startswith(str(status).encode())
        assert c.closed(), "the connection stayed open after an error"
    code, _, _ = srv.request("GET", "/probe")
    assert code == 200
    assert srv.records() == before + ["call GET /probe"], \
        "the app was called for a refused request"
    return body


def served(srv, data):
    """Sends one request that must be served: the app's view of it."""
    with srv.raw() as c:
        c.send(data)
        code, _, body, _ = c.response()
    assert code == 200, body
    return json.loads(body)


def trailer(fields):
    return HEAD_TE + b"5\r\nhello\r\n0\r\n" + fields + b"\r\n"


def twice(line_a, line_b):
    return (b"POST / HTTP/1.1\r\nHost: x\r\n" + line_a + b"\r\nX-Between: 1\r\n"
            + line_b + b"\r\nContent-Length: 0\r\n\r\n")


def target(t, method=b"GET"):
    return method + b" " + t + b" HTTP/1.1\r\nHost: x\r\n\r\n"


REFUSED = {
    # RFC 9110 6.5.1: framing, routing, connection and credentials never
    # come in trailers
    "trailer-content-length": trailer(b"Content-Length: 5\r\n"),
    "trailer-transfer-encoding": trailer(b"Transfer-Encoding: chunked\r\n"),
    "trailer-host": trailer(b"Host: evil.example\r\n"),
    "trailer-authorization": trailer(b"Authorization: Basic YWRtaW46eA==\r\n"),
    "trailer-cookie": trailer(b"Cookie: session=stolen\r\n"),
    "trailer-x-forwarded-for": trailer(b"X-Forwarded-For: 10.0.0.1\r\n"),
    "trailer-connection": trailer(b"Connection: close\r\n"),
    "trailer-trailer": trailer(b"Trailer: Host\r\n"),
    "trailer-content-type": trailer(b"content-TYPE: text/html\r\n"),
    "trailer-after-allowed": trailer(b"X-Checksum: abc\r\nHOST: a\r\n"),
    # RFC 9110 5.3: singletons whose repetition changes the meaning
    "repeated-content-type": twice(b"Content-Type: text/plain",
                                   b"content-type: multipart/form-data; boundary=x"),
    "repeated-authorization": twice(b"Authorization: Basic YTpi",
                                    b"Authorization: Basic YWRtaW46eA=="),
    "repeated-proxy-authorization": twice(b"Proxy-Authorization: a",
                                          b"Proxy-Authorization: b"),
    "repeated-range": twice(b"Range: bytes=0-1", b"Range: bytes=5-9"),
    "repeated-if-range": twice(b'If-Range: "a"', b'If-Range: "b"'),
    "repeated-content-range": twice(b"Content-Range: bytes 0-1/2",
                                    b"Content-Range: bytes 0-1/3"),
    "repeated-if-modified-since": twice(
        b"If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
        b"If-Modified-Since: Mon, 07 Nov 1994 08:49:37 GMT"),
    "repeated-if-unmodified-since": twice(
        b"If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
        b"If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT"),
    "repeated-max-forwards": twice(b"Max-Forwards: 1", b"Max-Forwards: 9"),
    "repeated-origin": twice(b"Origin: https://good.example",
                             b"Origin: https://evil.example"),
    "repeated-referer": twice(b"Referer: https://good.example/",
                              b"Referer: https://evil.example/"),
    "repeated-content-length-same": twice(b"Content-Length: 0",
                                          b"Content-Length: 0"),
    # RFC 9112 3.2.3: authority-form is CONNECT's only
    "authority-form-get": target(b"example.com:443"),
    "authority-form-post": target(b"localhost:8080", b"POST"),
    "authority-form-options": target(b"127.0.0.1:80", b"OPTIONS"),
    "connect-userinfo": target(b"user:pw@example.com:443", b"CONNECT"),
    "connect-no-port": target(b"example.com", b"CONNECT"),
    "connect-origin-form": target(b"/", b"CONNECT"),
    # RFC 9110 4.2.4 / 4.2.1 / 4.2: absolute-form is an http(s) URI with a
    # valid host and no userinfo
    "absolute-userinfo": target(b"http://user:pass@example.com/p"),
    "absolute-userinfo-user-only": target(b"https://admin@example.com/"),
    "absolute-userinfo-lookalike": target(b"http://good.example@evil.example/"),
    "absolute-empty-host": target(b"http:///p"),
    "absolute-port-only": target(b"http://:80/p"),
    "absolute-bad-host": target(b"http://a\"b/p"),
    "absolute-other-scheme": target(b"ftp://example.com/p"),
    "absolute-no-authority": target(b"http:/p"),
    # the rest of their kind (RFC 9112 2-7), already refused before
    "content-length-list": (b"POST / HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 5, 5\r\n\r\nhello"),
    "te-chunked-not-last": (b"POST / HTTP/1.1\r\nHost: x\r\n"
                            b"Transfer-Encoding: chunked, identity\r\n\r\n"),
    "te-in-http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n"),
    "chunk-ext-whitespace": HEAD_TE + b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
    "chunk-size-sign": HEAD_TE + b"+5\r\nhello\r\n0\r\n\r\n",
    "chunk-data-overrun": HEAD_TE + b"3\r\nhello\r\n0\r\n\r\n",
    "trailer-obs-fold": trailer(b"X-A: 1\r\n X-B: 2\r\n"),
    "space-before-first-header": b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
    "tab-before-colon": b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n",
    "version-lowercase": b"GET / http/1.1\r\nHost: x\r\n\r\n",
    "version-two-digits": b"GET / HTTP/1.10\r\nHost: x\r\n\r\n",
    "request-line-trailing-space": b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
    "request-line-tab": b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "fragment-in-target": target(b"/a#frag"),
    "asterisk-without-options": target(b"*"),
    "bare-cr-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "host-with-userinfo": b"GET / HTTP/1.1\r\nHost: user@x\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused(srv, name):
    body = check_refused(srv, REFUSED[name])
    assert len(body) > len(b"400 Bad Request"), "the answer names no cause"


def test_refusal_names_the_field(srv):
    """The 400's text says which rule was broken, so the client's author
    can fix it."""
    assert b"Content-Type" in check_refused(srv, REFUSED["repeated-content-type"])
    assert b"Host" in check_refused(srv, REFUSED["trailer-host"])
    assert b"userinfo" in check_refused(srv, REFUSED["absolute-userinfo"])
    assert b"CONNECT" in check_refused(srv, REFUSED["authority-form-get"])


def wait_calls(srv, n, timeout=5):
    """Readiness probe: waits until the app has recorded n calls."""
    deadline = time.monotonic() + timeout
    while len(srv.records()) < n:
        assert time.monotonic() < deadline, f"the app was not called: {srv.records()}"
        time.sleep(0.01)


def test_trailer_refused_after_the_app_started(srv):
    """The forbidden trailer arrives while the app is already reading the
    body: the read fails, and the client still gets a 400 naming the
    field, not a 200 or a 500."""
    before = srv.records()
    with srv.raw() as c:
        c.send(HEAD_TE + b"5\r\nhello\r\n")
        wait_calls(srv, len(before) + 1)
        c.send(b"0\r\nContent-Length: 100\r\n\r\n")
        status_line, code, h, _ = c.head()
        assert code == 400, status_line
        body = c.read_exact(int(h["content-length"]))
        assert b"Content-Length" in body and b"trailer" in body
        assert c.closed()
    assert srv.records() == before + ["call POST /up"]


ACCEPTED = {
    # the allowed neighbours of each rule
    "trailers-allowed": (trailer(b"X-Checksum: abc\r\nServer-Timing: db;dur=5\r\n"
                                 b"Content-Lengths: 1\r\nX-Host: a\r\n"),
                         {"body": "hello"}),
    "cookie-repeated-joined": (b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\n"
                               b"Cookie: b=2\r\n\r\n",
                               {"HTTP_COOKIE": "a=1; b=2"}),
    "list-fields-repeated": (b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n"
                             b"X-Forwarded-For: 1.1.1.1\r\nAccept: */*\r\n"
                             b"X-Forwarded-For: 2.2.2.2\r\n\r\n",
                             {"HTTP_ACCEPT": "text/html,*/*",
                              "HTTP_X_FORWARDED_FOR": "1.1.1.1,2.2.2.2"}),
    "content-type-once": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/x\r\n"
                          b"Content-Length: 2\r\n\r\nhi",
                          {"CONTENT_TYPE": "text/x", "body": "hi"}),
    # RFC 9112 3.2.2: the target's host wins over the Host field
    "absolute-host-wins": (b"GET HTTPS://Real.Example:8443/p?q=1 HTTP/1.1\r\n"
                           b"Host: other.example\r\n\r\n",
                           {"HTTP_HOST": "Real.Example:8443", "PATH_INFO": "/p",
                            "QUERY_STRING": "q=1"}),
    "absolute-at-in-path": (b"GET http://h.example/a@b HTTP/1.1\r\nHost: x\r\n\r\n",
                            {"HTTP_HOST": "h.example", "PATH_INFO": "/a@b"}),
    "absolute-ipv6": (b"GET http://[::1]:8080/ HTTP/1.1\r\nHost: x\r\n\r\n",
                      {"HTTP_HOST": "[::1]:8080", "PATH_INFO": "/"}),
    "connect-authority": (b"CONNECT example.com:443 HTTP/1.1\r\n"
                          b"Host: example.com:443\r\n\r\n",
                          {"REQUEST_URI": "example.com:443"}),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted(srv, name):
    data, want = ACCEPTED[name]
    seen = served(srv, data)
    for key, value in want.items():
        assert seen[key] == value, (key, seen)
