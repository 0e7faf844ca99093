"""Request bodies through wsgi.input: Content-Length and chunked, every
read method, never past the body, Expect: 100-continue, max_body_size."""

import json
import time

import pytest

APP = r'''
import json, time

def app(environ, start_response):
    inp = environ["wsgi.input"]
    path = environ["PATH_INFO"]
    record("call", path)
    if path == "/sleep-then-read":
        time.sleep(0.5)
    if path == "/noread":
        parts = None
    elif path == "/read":
        parts = [inp.read()]
    elif path == "/read-n":
        parts = []
        while True:
            b = inp.read(7)
            if not b:
                break
            assert len(b) <= 7
            parts.append(b)
    elif path == "/readline":
        parts = []
        while True:
            b = inp.readline()
            if not b:
                break
            parts.append(b)
    elif path == "/readline-n":
        parts = []
        while True:
            b = inp.readline(5)
            if not b:
                break
            assert len(b) <= 5
            parts.append(b)
    elif path == "/readlines":
        parts = inp.readlines()
    elif path == "/iter":
        parts = list(inp)
    elif path == "/read-after-eof":
        parts = [inp.read(), inp.read(), inp.read(10), inp.readline()]
    else:
        parts = [inp.read()]
    out = json.dumps({
        "parts": None if parts is None else [p.decode("latin-1") for p in parts],
        "terminated": environ.get("wsgi.input_terminated"),
        "cl": environ.get("CONTENT_LENGTH"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]
'''

BODY = b"line one\nline two is longer\n\nlast line without newline"


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(APP)


def chunked(data, sizes=(1, 5, 13, 3)):
    """data as a chunked body with varied chunk sizes, an extension and a
    trailer (all of which the app must never see)."""
    out, i, k = b"", 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        piece = data[i:i + n]
        ext = b";name=value" if k == 1 else b""
        out += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
        i += n
        k += 1
    return out + b"0\r\nX-Trailer: yes\r\n\r\n"


def ask(c, path, body, *, chunk=False, extra=""):
    if chunk:
        c.send(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               f"{extra}\r\n".encode() + chunked(body))
    else:
        c.send(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               f"{extra}\r\n".encode() + body)


def result(c):
    code, h, body, _ = c.response()
    assert code == 200, body
    return json.loads(body)


def test_content_length_post_echoed(srv):
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    status, _, body = srv.request("POST", "/read", body=data)
    assert status == 200
    got = json.loads(body)
    assert got["parts"][0].encode("latin-1") == data
    assert got["cl"] == str(len(data))
    assert got["terminated"] is True


def test_body_sent_slowly_in_pieces(srv):
    with srv.raw() as c:
        c.send(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nabc")
        for piece in (b"def", b"ghi", b"jkl"):
            time.sleep(0.05)
            c.send(piece)
        assert result(c)["parts"] == ["abcdefghijkl"]


EXPECTED = {
    "/read": [BODY],
    "/read-n": [BODY[i:i + 7] for i in range(0, len(BODY), 7)],
    "/readline": BODY.splitlines(keepends=True),
    "/readline-n": [p for line in BODY.splitlines(keepends=True)
                    for p in [line[i:i + 5] for i in range(0, len(line), 5)]],
    "/readlines": BODY.splitlines(keepends=True),
    "/iter": BODY.splitlines(keepends=True),
    "/read-after-eof": [BODY, b"", b"", b""],
}


@pytest.mark.parametrize("chunk", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_read_methods_never_read_past_body(srv, path, chunk):
    """Each read style yields exactly the body, and the pipelined request
    right behind it (same send) is still served intact."""
    with srv.raw() as c:
        ask(c, path, BODY, chunk=chunk)
        c.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        got = result(c)
        assert [p.encode("latin-1") for p in got["parts"]] == EXPECTED[path]
        assert got["terminated"] is True
        after = result(c)
        assert after["parts"] == [""]


def test_chunked_body_and_next_request_in_one_send(srv):
    with srv.raw() as c:
        c.send(b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked(b"0123456789" * 50, sizes=(100, 1, 7))
               + b"POST /readline HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab\ncd")
        assert result(c)["parts"] == ["0123456789" * 50]
        assert result(c)["parts"] == ["ab\n", "cd"]


def test_chunked_cl_absent_and_terminated(srv):
    with srv.raw() as c:
        ask(c, "/read", b"hello", chunk=True)
        got = result(c)
    assert got["parts"] == ["hello"]
    assert got["cl"] in (None, "")
    assert got["terminated"] is True


def test_unread_body_is_skipped_for_next_request(srv):
    with srv.raw() as c:
        ask(c, "/noread", b"x" * 10000)
        ask(c, "/noread", b"y" * 3000, chunk=True)
        c.send("GET /read HTTP/1.1\r\nHost: x\r\n\r\n")
        assert result(c)["parts"] is None
        assert result(c)["parts"] is None
        assert result(c)["parts"] == [""]


def test_expect_100_continue_sent_on_first_read(srv):
    with srv.raw() as c:
        c.send("POST /sleep-then-read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
               "Expect: 100-continue\r\n\r\n")
        t0 = time.monotonic()
        status, code, _, _ = c.head()
        waited = time.monotonic() - t0
        assert status == "HTTP/1.1 100 Continue"
        # the app sleeps 0.5 s before touching wsgi.input
        assert waited >= 0.4, f"100 Continue came after {waited:.2f} s, " \
                              "before the app read the body"
        c.send(b"hello")
        got = result(c)
        assert got["parts"] == ["hello"]
        # the connection is still good
        c.send("GET /read HTTP/1.1\r\nHost: x\r\n\r\n")
        assert result(c)["parts"] == [""]


def test_expect_100_continue_not_sent_if_app_never_reads(srv):
    with srv.raw() as c:
        c.send("POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
               "Expect: 100-continue\r\n\r\n")
        status, code, h, _ = c.head()
        assert code == 200, status
        body = c.read_exact(int(h["content-length"]))
        assert json.loads(body)["parts"] is None
        # the client never sent the body: the server may not wait for it
        # nor take it as the next request - it closes
        assert c.closed()


def test_expect_100_continue_chunked(srv):
    with srv.raw() as c:
        c.send("POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               "Expect: 100-continue\r\n\r\n")
        status, _, _, _ = c.head()
        assert status == "HTTP/1.1 100 Continue"
        c.send(chunked(b"chunky"))
        assert result(c)["parts"] == ["chunky"]


def test_expect_100_with_http_client_body_already_sent(srv):
    """A client that sends the body right away anyway (allowed) gets no
    stray 100 and a correct answer."""
    with srv.raw() as c:
        c.send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
               "Expect: 100-continue\r\n\r\nabc")
        code, h, body, _ = c.response()
        # a 100 before the final answer is allowed, but then the 200 follows
        if code == 100:
            code, h, body, _ = c.response()
        assert code == 200
        assert json.loads(body)["parts"] == ["abc"]


def test_max_body_size_413_before_app(server):
    srv = server(APP, {"max_body_size": 1000})
    with srv.raw() as c:
        ask(c, "/read", b"z" * 1000)
        assert result(c)["parts"] == ["z" * 1000]
    calls = len(srv.records())
    with srv.raw() as c:
        c.send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
        code, h, body, _ = c.response()
        assert code == 413
        assert h["connection"].lower() == "close"
        assert c.closed()
    assert len(srv.records()) == calls, "the app ran for a 413"
    # with Expect: 100-continue the client is never invited to send it
    with srv.raw() as c:
        c.send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
               "Expect: 100-continue\r\n\r\n")
        status, code, _, _ = c.head()
        assert code == 413, status
    assert len(srv.records()) == calls


def test_max_body_size_chunked_over_limit_413(server):
    srv = server(APP, {"max_body_size": 1000})
    calls = len(srv.records())
    # all of it with the head: refused before the app runs
    with srv.raw() as c:
        ask(c, "/read", b"q" * 5000, chunk=True)
        code, h, body, _ = c.response()
        assert code == 413
        assert c.closed()
    assert len(srv.records()) == calls
    # arriving while the app reads it: still 413 (the app let the error
    # out), not a 500 blamed on the app
    with srv.raw() as c:
        c.send("POST /sleep-then-read HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\n\r\n")
        time.sleep(0.1)
        c.send(chunked(b"q" * 5000, sizes=(700,)))
        code, h, body, _ = c.response()
        assert code == 413
        assert c.closed()
    assert len(srv.records()) == calls + 1
    assert "Traceback" not in srv.stderr


def test_malformed_chunk_after_app_started_is_400(server):
    srv = server(APP)
    with srv.raw() as c:
        c.send("POST /sleep-then-read HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\n\r\n")
        time.sleep(0.1)
        c.send(b"5\r\nhello\r\nxyz\r\n")
        code, h, body, _ = c.response()
        assert code == 400
        assert c.closed()
    assert srv.records() == ["call /sleep-then-read"]
    assert "Traceback" not in srv.stderr
    assert srv.wait_output(r"malformed chunked request body \(.+\); answered 400")


def test_access_log_names_request_after_body_read(srv):
    """Reading a body compacts the connection buffer; the log line written
    after the response must still name the right request."""
    with srv.raw() as c:
        ask(c, "/read?tag=logcheck", b"p" * 3000, chunk=True)
        c.send("GET /read?tag=second HTTP/1.1\r\nHost: x\r\n\r\n")
        result(c)
        result(c)
    assert srv.wait_output(r'"POST /read\?tag=logcheck HTTP/1\.1" 200 ')
    assert srv.wait_output(r'"GET /read\?tag=second HTTP/1\.1" 200 ')


def test_head_with_body_read_first_still_has_no_body(srv):
    """A HEAD answer has no body even when the app read a request body
    before responding (and so moved the bytes the request line was in)."""
    with srv.raw() as c:
        ask(c, "/read", b"HEAD" * 100, chunk=True)  # body looks like a method
        c.send(b"HEAD /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked(b"GETS" * 100))
        c.send("GET /read HTTP/1.1\r\nHost: x\r\n\r\n")
        assert result(c)["parts"] == ["HEAD" * 100]
        code, h, _, _ = c.response(head_only=True)
        assert code == 200 and int(h["content-length"]) > 0
        # the next bytes on the wire are the GET's answer, not a HEAD body
        assert result(c)["parts"] == [""]


def test_bodies_stream_through_the_bounded_read_buffer(server):
    """A connection's read buffer never grows past max_head_size plus one
    initial allocation (8 KiB): bodies far larger than that stream through
    it whatever their framing, a head near the limit shares a send with its
    body, and a request pipelined after a body is still served."""
    srv = server(APP, {"max_head_size": 1024})
    data = b"0123456789abcdef" * 16384  # 256 KiB
    pad = b"X-Pad: " + b"p" * 900 + b"\r\n"  # each head stays under 1024
    with srv.raw() as c:
        c.send(b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               + pad + b"\r\n" + chunked(data, sizes=(100000, 1, 30000))
               + b"POST /readline HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab\ncd")
        assert result(c)["parts"] == [data.decode()]
        assert result(c)["parts"] == ["ab\n", "cd"]
        c.send(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(data)
               + pad + b"\r\n" + data)
        assert result(c)["parts"] == [data.decode()]
