"""Persistent connections: keep-alive, pipelining, Connection headers, the
keepalive option and the idle timeout."""

import time

import pytest

APP = '''
import time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    record("call", path)
    if path.startswith("/slow"):
        time.sleep(0.2)
    body = environ["wsgi.input"].read()
    if path == "/app-close":
        start_response("200 OK", [("Connection", "close")])
        return [b"app says close"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%s:%s" % (path, body.decode())).encode()]
'''


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(APP)


def test_several_requests_on_one_connection(srv):
    with srv.raw() as c:
        for i in range(5):
            c.send(f"GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n")
            code, h, body, framing = c.response()
            assert (code, body, framing) == (200, f"/r{i}:".encode(), "length")
            assert "close" not in h.get("connection", "")
        # still open after the last one
        assert not c.closed(timeout=0.2)


def test_http_client_reuses_connection(srv):
    conn = srv.http()
    try:
        ports = set()
        for i in range(3):
            conn.request("GET", f"/c{i}")
            resp = conn.getresponse()
            assert resp.read() == f"/c{i}:".encode()
            ports.add(conn.sock.getsockname()[1])
        assert len(ports) == 1, "http.client had to reconnect"
    finally:
        conn.close()


def test_pipelining_three_in_one_send(srv):
    with srv.raw() as c:
        c.send("GET /slow1 HTTP/1.1\r\nHost: x\r\n\r\n"
               "POST /p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
               "GET /p3 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = [c.response()[2] for _ in range(3)]
    assert got == [b"/slow1:", b"/p2:body", b"/p3:"]


def test_pipelined_request_split_across_sends(srv):
    with srv.raw() as c:
        c.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTT")
        assert c.response()[2] == b"/a:"
        time.sleep(0.1)
        c.send("P/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"/b:"


def test_http10_closes_by_default(srv):
    with srv.raw() as c:
        c.send("GET /ten HTTP/1.0\r\n\r\n")
        status, code, h, _ = c.head()
        assert status.startswith("HTTP/1.0 200")
        assert h.get("connection", "close").lower() == "close"
        assert c.read_exact(int(h["content-length"])) == b"/ten:"
        assert c.closed()


def test_http10_keep_alive_requested(srv):
    with srv.raw() as c:
        for i in range(3):
            c.send(f"GET /k{i} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            code, h, body, framing = c.response()
            assert body == f"/k{i}:".encode()
            assert h["connection"].lower() == "keep-alive"
        assert not c.closed(timeout=0.2)


def test_connection_close_honoured(srv):
    with srv.raw() as c:
        c.send("GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        code, h, body, _ = c.response()
        assert body == b"/bye:"
        assert h["connection"].lower() == "close"
        assert c.closed()


def test_connection_close_stops_pipeline(srv):
    before = len(srv.records())
    with srv.raw() as c:
        c.send("GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
               "GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"/first:"
        assert c.closed()
    assert srv.records()[before:] == ["call /first"]


def test_keepalive_false_closes_after_each_response(server):
    srv = server(APP, {"keepalive": False})
    with srv.raw() as c:
        c.send("GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        code, h, body, _ = c.response()
        assert body == b"/once:"
        assert h["connection"].lower() == "close"
        assert c.closed()


def test_idle_keepalive_timeout(server):
    srv = server(APP, {"keepalive": 0.5})
    with srv.raw() as c:
        c.send("GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"/idle:"
        t0 = time.monotonic()
        # closed silently at ~0.5 s idle, not before
        assert not c.closed(timeout=0.3)
        assert c.closed(timeout=3)
        elapsed = time.monotonic() - t0
        assert 0.4 <= elapsed < 2.0, elapsed
    # an idle close says nothing (no 408 for a connection between requests)
    assert "408" not in srv.stderr


def test_keepalive_timer_rearmed_per_request(server):
    srv = server(APP, {"keepalive": 0.5})
    with srv.raw() as c:
        for i in range(4):  # 4 x 0.3 s = longer than one keepalive period
            c.send(f"GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.response()[2] == f"/r{i}:".encode()
            time.sleep(0.3)
        c.send("GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"/last:"


def test_app_connection_close_header(srv):
    with srv.raw() as c:
        c.send("GET /app-close HTTP/1.1\r\nHost: x\r\n\r\n")
        status, code, h, hdrs = c.head()
        assert [v for k, v in hdrs if k.lower() == "connection"] == ["close"]
        assert c.read_exact(int(h["content-length"])) == b"app says close"
        assert c.closed()
