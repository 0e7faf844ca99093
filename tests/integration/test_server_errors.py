"""Failures in the app or on the client's side cost one response or one
connection, never the server."""

import http.client
import socket
import struct
import time

import pytest

APP = r'''
import time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    record("call", path)
    if path == "/raise":
        raise ZeroDivisionError("app failed before responding: marker-1234")
    if path == "/raise-after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise KeyError("after start_response, before any byte")
    if path == "/raise-in-gen":
        def gen():
            yield b"first chunk;"
            raise RuntimeError("failed mid-body: marker-5678")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/raise-in-gen-cl":
        def gen():
            yield b"12345"
            raise RuntimeError("failed mid-body with a length")
        start_response("200 OK", [("Content-Length", "10")])
        return gen()
    if path == "/sys-exit":
        import sys
        sys.exit(3)
    if path == "/keyboard-interrupt":
        raise KeyboardInterrupt
    if path == "/bad-return":
        start_response("200 OK", [])
        return "a str, not an iterable of bytes"
    if path == "/none":
        start_response("200 OK", [])
        return None
    if path == "/read-body":
        try:
            data = environ["wsgi.input"].read()
        except OSError as e:
            record("read-failed", type(e).__name__)
            raise
        start_response("200 OK", [])
        return [b"%d" % len(data)]
    if path == "/endless":
        def gen():
            i = 0
            while True:
                yield b"x" * 65536
                i += 1
                if i % 16 == 0:
                    time.sleep(0.001)
        start_response("200 OK", [])
        return gen()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"alive"]
'''


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(APP)


def still_serving(srv):
    status, _, body = srv.request("GET", "/alive")
    assert (status, body) == (200, b"alive")


def test_exception_before_response_500_and_traceback(srv):
    status, h, body = srv.request("GET", "/raise")
    assert status == 500
    assert h["Connection"] == "close"
    assert b"marker-1234" not in body  # no traceback to clients by default
    assert srv.wait_output(r"(?s)Traceback.*ZeroDivisionError: app failed "
                           r"before responding: marker-1234")
    assert srv.wait_output(r"error in the WSGI app while serving GET /raise")
    still_serving(srv)


@pytest.mark.parametrize("path", ["/raise-after-start", "/bad-return", "/none"])
def test_other_failures_before_any_byte_give_500(srv, path):
    status, _, _ = srv.request("GET", path)
    assert status == 500
    still_serving(srv)


@pytest.mark.parametrize("path", ["/sys-exit", "/keyboard-interrupt"])
def test_system_exit_in_app_does_not_stop_server(srv, path):
    """sys.exit() or KeyboardInterrupt raised by app code is an app error
    like any other: 500, and the server goes on."""
    status, _, _ = srv.request("GET", path)
    assert status == 500
    assert srv.alive()
    still_serving(srv)


def test_exception_after_head_truncates(srv):
    conn = srv.http()
    try:
        conn.request("GET", "/raise-in-gen")
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as e:
            resp.read()
        assert e.value.partial == b"first chunk;"
    finally:
        conn.close()
    with srv.raw() as c:
        c.send("GET /raise-in-gen HTTP/1.1\r\nHost: x\r\n\r\n")
        c.head()
        rest = c.read_to_eof()  # and the server closed the connection
        assert rest.startswith(b"c\r\nfirst chunk;\r\n")
        assert not rest.endswith(b"0\r\n\r\n")
    assert srv.wait_output(r"RuntimeError: failed mid-body: marker-5678")
    still_serving(srv)


def test_exception_after_head_with_content_length(srv):
    with srv.raw() as c:
        c.send("GET /raise-in-gen-cl HTTP/1.1\r\nHost: x\r\n\r\n")
        status, code, h, _ = c.head()
        assert h["content-length"] == "10"
        assert c.read_to_eof() == b"12345"
    still_serving(srv)


def test_client_disconnect_mid_request_body(srv):
    s = srv.connect()
    s.sendall(b"POST /read-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
              + b"y" * 1000)
    deadline = time.monotonic() + 5
    while "call /read-body" not in srv.records() and time.monotonic() < deadline:
        time.sleep(0.01)
    s.close()
    deadline = time.monotonic() + 5
    while not any(r.startswith("read-failed") for r in srv.records()) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "read-failed OSError" in srv.records()
    still_serving(srv)


def test_client_disconnect_mid_response(server):
    srv = server(APP)
    for linger in (False, True):
        s = srv.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 200")
        if linger:  # abortive close: RST instead of FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        still_serving(srv)
    # the endless generators were abandoned: nothing left running (the
    # server stops promptly rather than waiting out graceful_timeout)
    time.sleep(0.2)
    t0 = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - t0 < 3
    assert "returned" in srv.stdout


def test_debug_option_shows_traceback_in_500(server):
    srv = server(APP, {"debug": True})
    status, h, body = srv.request("GET", "/raise")
    assert status == 500
    assert b"Traceback" in body
    assert b"ZeroDivisionError: app failed before responding: marker-1234" in body


TIMEOUT_APP = r'''
import time

class Endless:
    def __iter__(self):
        while True:
            yield b"z" * 65536
    def close(self):
        record("closed")

def app(environ, start_response):
    path = environ["PATH_INFO"]
    record("call", path)
    if path == "/read":
        try:
            data = environ["wsgi.input"].read()
        except OSError as e:
            record(type(e).__name__, e)
            raise
        start_response("200 OK", [])
        return [data]
    if path == "/endless":
        start_response("200 OK", [])
        return Endless()
    start_response("200 OK", [])
    return [b"alive"]
'''


def test_body_timeout_408(server):
    srv = server(TIMEOUT_APP, {"body_timeout": 0.5})
    with srv.raw() as c:
        c.send(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        t0 = time.monotonic()
        code, h, body, _ = c.response()
        assert code == 408
        assert 0.4 <= time.monotonic() - t0 < 3
        assert c.closed()
    assert "Traceback" not in srv.stderr  # the client's fault, not an app bug
    assert "TimeoutError the client sent no request body bytes for 0.5 s " \
           "(body_timeout)" in srv.records()
    still_serving(srv)


def test_body_timeout_chunked_408(server):
    srv = server(TIMEOUT_APP, {"body_timeout": 0.5})
    with srv.raw() as c:
        c.send(b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n")
        assert c.response()[0] == 408


def test_half_closed_client_gets_400_for_short_body(server):
    srv = server(TIMEOUT_APP)
    with srv.raw() as c:
        c.send(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort")
        c.sock.shutdown(socket.SHUT_WR)
        code, h, body, _ = c.response()
        assert code == 400
        assert b"before sending the whole request body" in body
    assert "Traceback" not in srv.stderr


def test_client_that_stops_reading_is_dropped(server):
    """body_timeout also bounds a write the client never drains: the
    server gives up, closes the result and keeps serving."""
    srv = server(TIMEOUT_APP, {"body_timeout": 0.5})
    s = srv.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(64).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    while "closed" not in srv.records():
        assert time.monotonic() - t0 < 5, "the server still waits on a stuck client"
        time.sleep(0.05)
    still_serving(srv)
    s.close()
