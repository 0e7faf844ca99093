"""Response framing (chunked, close-delimited, computed Content-Length),
wsgi.file_wrapper, and result.close() being called exactly once."""

import hashlib
import os
import socket
import struct
import time

import pytest

APP = r'''
import io, os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = environ["QUERY_STRING"]
    if path == "/gen":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part%d;" % i for i in range(int(q or 3)))
    if path == "/list1":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"single item"]
    if path == "/list3":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a", b"bb", b"ccc"]
    if path == "/empty":
        start_response("200 OK", [])
        return []
    if path == "/empty-items":
        start_response("200 OK", [])
        return iter([b"", b"x", b"", b"y", b""])
    if path == "/204":
        start_response("204 No Content", [])
        return []
    if path == "/304":
        start_response("304 Not Modified", [("ETag", '"x"')])
        return []
    if path == "/cl":
        start_response("200 OK", [("Content-Length", "6")])
        return iter([b"abc", b"def"])
    if path == "/cl-short":
        start_response("200 OK", [("Content-Length", "10")])
        return iter([b"abc"])
    if path == "/write":
        write = start_response("200 OK", [])
        write(b"written;")
        return [b"returned"]
    if path == "/file":
        fn = environ["HTTP_X_FILE"]
        f = open(fn, "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/file-offset":
        f = open(environ["HTTP_X_FILE"], "rb")
        f.seek(1000)
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](f)
    if path == "/proc":
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](open("/proc/self/status", "rb"))
    if path == "/bytesio":
        data = b"".join(b"%06d\n" % i for i in range(20000))
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 4096)
    start_response("404 Not Found", [])
    return [b"no"]
'''


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(APP)


def get(c, path, version="1.1", headers=""):
    c.send(f"GET {path} HTTP/{version}\r\nHost: x\r\n{headers}\r\n")


def test_generator_is_chunked_on_http11(srv):
    with srv.raw() as c:
        get(c, "/gen?5")
        code, h, body, framing = c.response()
        assert framing == "chunked"
        assert "content-length" not in h
        assert body == b"part0;part1;part2;part3;part4;"
        get(c, "/gen?0")  # an empty generator: an empty chunked body
        code, h, body, framing = c.response()
        assert body == b""
        assert framing in ("chunked", "length")
        # the connection survives both
        get(c, "/list1")
        assert c.response()[2] == b"single item"


def test_generator_is_close_delimited_on_http10(srv):
    with srv.raw() as c:
        get(c, "/gen?4", "1.0")
        status, code, h, _ = c.head()
        assert "transfer-encoding" not in h and "content-length" not in h
        assert c.read_to_eof() == b"part0;part1;part2;part3;"


def test_generator_http10_keepalive_still_closes(srv):
    """HTTP/1.0 has no chunking: a body of unknown length ends with the
    connection, even when the client asked for keep-alive."""
    with srv.raw() as c:
        get(c, "/gen?2", "1.0", "Connection: keep-alive\r\n")
        status, code, h, _ = c.head()
        assert h.get("connection", "close").lower() == "close"
        assert c.read_to_eof() == b"part0;part1;"


def test_single_item_list_gets_content_length(srv):
    with srv.raw() as c:
        for version in ("1.1", "1.0"):
            get(c, "/list1", version, "Connection: keep-alive\r\n")
            code, h, body, framing = c.response()
            assert framing == "length"
            assert h["content-length"] == "11"
            assert body == b"single item"


def test_multi_item_list(srv):
    with srv.raw() as c:
        get(c, "/list3")
        code, h, body, framing = c.response()
        assert body == b"abbccc"


def test_empty_bodies(srv):
    with srv.raw() as c:
        get(c, "/empty")
        code, h, body, framing = c.response()
        assert (code, body) == (200, b"")
        assert h.get("content-length") == "0" or framing == "chunked"
        get(c, "/empty-items")
        assert c.response()[2] == b"xy"
        get(c, "/204")
        code, h, body, _ = c.response()
        assert code == 204 and "content-length" not in h \
            and "transfer-encoding" not in h
        get(c, "/304")
        code, h, body, _ = c.response()
        assert code == 304 and "transfer-encoding" not in h
        get(c, "/list1")  # nothing stray was left on the wire
        assert c.response()[2] == b"single item"


def test_app_content_length_respected(srv):
    with srv.raw() as c:
        get(c, "/cl")
        code, h, body, framing = c.response()
        assert (framing, body) == ("length", b"abcdef")
        assert "transfer-encoding" not in h


def test_short_body_closes_connection(srv):
    """Fewer bytes than the Content-Length promised: the client must not
    be left waiting on a live connection for bytes that never come."""
    with srv.raw() as c:
        get(c, "/cl-short")
        status, code, h, _ = c.head()
        assert h["content-length"] == "10"
        assert c.read_to_eof() == b"abc"


def test_write_callable(srv):
    with srv.raw() as c:
        get(c, "/write")
        assert c.response()[2] == b"written;returned"


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "big.bin"
    data = os.urandom(5 * 1024 * 1024 + 123)
    path.write_bytes(data)
    return path, data


def test_file_wrapper_real_file_5mb(srv, big_file):
    path, data = big_file
    status, headers, body = srv.request("GET", "/file",
                                        headers={"X-File": str(path)})
    assert status == 200
    assert headers["Content-Length"] == str(len(data))
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()


def test_file_wrapper_slow_reader(srv, big_file):
    """A client that reads slowly makes the server wait for the socket
    (sendfile hits EAGAIN) and still gets every byte."""
    path, data = big_file
    with srv.raw() as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        get(c, "/file", headers=f"X-File: {path}\r\n")
        status, code, h, _ = c.head()
        got = bytearray(c.buf)
        c.buf = b""
        while len(got) < len(data):
            time.sleep(0.001)
            chunk = c.sock.recv(256 * 1024)
            assert chunk
            got += chunk
        assert bytes(got) == data


def test_file_wrapper_from_current_position_and_head(srv, big_file):
    path, data = big_file
    with srv.raw() as c:
        get(c, "/file-offset", headers=f"X-File: {path}\r\n")
        code, h, body, _ = c.response()
        assert body == data[1000:]
        c.send(f"HEAD /file HTTP/1.1\r\nHost: x\r\nX-File: {path}\r\n\r\n")
        code, h, _, _ = c.response(head_only=True)
        assert h["content-length"] == str(len(data))
        get(c, "/list1")  # no file bytes followed the HEAD answer
        assert c.response()[2] == b"single item"


def test_file_wrapper_proc_file(srv):
    """A /proc file says its size is 0 but has content."""
    status, headers, body = srv.request("GET", "/proc")
    assert status == 200
    assert body.startswith(b"Name:") and b"\nPid:" in body


def test_file_wrapper_bytesio_iterated(srv):
    status, headers, body = srv.request("GET", "/bytesio")
    assert status == 200
    assert body == b"".join(b"%06d\n" % i for i in range(20000))


def test_file_wrapper_http10(srv, big_file):
    path, data = big_file
    with srv.raw() as c:
        get(c, "/file", "1.0", f"X-File: {path}\r\n")
        code, h, body, framing = c.response()
        assert body == data


# ---- result.close() ------------------------------------------------------

CLOSE_APP = r'''
import time

class Body:
    """An iterable result that records close() calls."""
    def __init__(self, tag, items, fail_at=None, delay=0):
        self.tag, self.items, self.fail_at, self.delay = tag, items, fail_at, delay
    def __iter__(self):
        for i, item in enumerate(self.items):
            if i == self.fail_at:
                raise RuntimeError("boom in iteration " + self.tag)
            if self.delay:
                time.sleep(self.delay)
            yield item
    def close(self):
        record("close", self.tag)

class Wrapped:
    """close() on a file handed to wsgi.file_wrapper."""
    def __init__(self, tag, data):
        import io
        self.tag, self.f = tag, io.BytesIO(data)
    def read(self, n=-1):
        return self.f.read(n)
    def close(self):
        record("close", self.tag)

def app(environ, start_response):
    tag = environ["QUERY_STRING"]
    path = environ["PATH_INFO"]
    record("call", tag)
    if path == "/normal":
        start_response("200 OK", [])
        return Body(tag, [b"a", b"b"])
    if path == "/one":
        start_response("200 OK", [])
        return Body(tag, [b"only"])
    if path == "/raise-first":
        start_response("200 OK", [])
        return Body(tag, [b"a", b"b"], fail_at=0)
    if path == "/raise-later":
        start_response("200 OK", [])
        return Body(tag, [b"a", b"b", b"c"], fail_at=2)
    if path == "/no-start":
        return Body(tag, [b"a"])
    if path == "/bad-item":
        start_response("200 OK", [])
        return Body(tag, ["not bytes"])
    if path == "/slow":
        start_response("200 OK", [])
        return Body(tag, [b"x" * 65536] * 400, delay=0.01)
    if path == "/filewrapper":
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](Wrapped(tag, b"w" * 100000), 1000)
    if path == "/head":
        start_response("200 OK", [])
        return Body(tag, [b"a", b"b"])
'''


@pytest.fixture(scope="module")
def csrv(module_server):
    return module_server(CLOSE_APP)


def closes(srv, tag, timeout=5):
    """How many times close() ran for tag, once the app's call is seen."""
    deadline = time.monotonic() + timeout
    while True:
        recs = srv.records()
        n = recs.count(f"close {tag}")
        if n or time.monotonic() > deadline:
            return n
        time.sleep(0.02)


@pytest.mark.parametrize("path,expect", [
    ("/normal", 200), ("/one", 200), ("/raise-first", 500),
    ("/raise-later", None), ("/no-start", 500), ("/bad-item", 500),
    ("/filewrapper", 200),
])
def test_close_called_exactly_once(csrv, path, expect):
    tag = path.strip("/") + "-" + str(time.monotonic_ns())
    with csrv.raw() as c:
        get(c, f"{path}?{tag}")
        if expect is None:
            # failed after the head went out: a truncated response
            status, code, h, _ = c.head()
            assert code == 200
            rest = c.read_to_eof()
            assert not rest.endswith(b"0\r\n\r\n")
        else:
            assert c.response()[0] == expect
    assert closes(csrv, tag) == 1
    time.sleep(0.1)  # a late second call would show up here
    assert csrv.records().count(f"close {tag}") == 1


def test_close_called_once_for_head(csrv):
    tag = "head-" + str(time.monotonic_ns())
    with csrv.raw() as c:
        c.send(f"HEAD /head?{tag} HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response(head_only=True)[0] == 200
    assert closes(csrv, tag) == 1


def test_close_called_once_on_client_disconnect(csrv):
    tag = "gone-" + str(time.monotonic_ns())
    s = csrv.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET /slow?{tag} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    # abort: RST, so the server's next writes fail at once
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    assert closes(csrv, tag, timeout=8) == 1
    time.sleep(0.2)
    assert csrv.records().count(f"close {tag}") == 1
    # and the server still serves
    with csrv.raw() as c:
        get(c, "/normal?after-disconnect")
        assert c.response()[2] == b"ab"


MORE_APP = r'''
class BadClose:
    def __iter__(self):
        yield b"complete "
        yield b"body"
    def close(self):
        record("close")
        raise RuntimeError("close() failed")

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/many-headers":
        start_response("200 OK", [("X-H%03d" % i, "v" * 100) for i in range(100)])
        return [b"many"]
    if path == "/gen":
        start_response("200 OK", [])
        return (b"x" for _ in range(3))
    if path == "/bad-close":
        start_response("200 OK", [])
        return BadClose()
    if path == "/204-with-body":
        start_response("204 No Content", [])
        return [b"must not be sent"]
    start_response("200 OK", [])
    return [path.encode()]
'''


@pytest.fixture(scope="module")
def msrv(module_server):
    return module_server(MORE_APP)


def test_large_response_head(msrv):
    with msrv.raw() as c:
        get(c, "/many-headers")
        code, h, body, _ = c.response()
        assert body == b"many"
        assert all(h[f"x-h{i:03d}"] == "v" * 100 for i in range(100))


def test_head_of_generator_response(msrv):
    with msrv.raw() as c:
        c.send("HEAD /gen HTTP/1.1\r\nHost: x\r\n\r\n")
        code, h, _, _ = c.response(head_only=True)
        assert code == 200
        get(c, "/next")
        assert c.response()[2] == b"/next"


def test_204_never_has_a_body(msrv):
    with msrv.raw() as c:
        get(c, "/204-with-body")
        code, h, _, _ = c.response()
        assert code == 204
        get(c, "/next")
        assert c.response()[2] == b"/next"


def test_failing_close_does_not_truncate_response(msrv):
    with msrv.raw() as c:
        get(c, "/bad-close")
        code, h, body, framing = c.response()
        assert (code, body, framing) == (200, b"complete body", "chunked")
    assert msrv.wait_output(r"RuntimeError: close\(\) failed")
    assert msrv.records().count("close") == 1


def test_pipelined_burst(msrv):
    with msrv.raw() as c:
        c.send(b"".join(b"GET /b%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(300)))
        for i in range(300):
            assert c.response()[2] == b"/b%d" % i


def test_head_trickled_byte_by_byte(msrv):
    with msrv.raw() as c:
        for ch in b"GET /slowly HTTP/1.1\r\nHost: x\r\n\r\n":
            c.send(bytes([ch]))
            time.sleep(0.002)
        assert c.response()[2] == b"/slowly"
