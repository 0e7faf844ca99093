"""max_requests and max_requests_jitter: after that many requests the
server stops as it does on SIGTERM - the last response closes its
connection, requests in progress finish, new connections are refused -
and server() returns normally, so a process manager can start a fresh
process."""

import concurrent.futures as cf
import socket
import time

import pytest

APP = r'''
import time

def app(environ, start_response):
    record("start", environ["PATH_INFO"])
    time.sleep(float(environ["QUERY_STRING"] or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done " + environ["PATH_INFO"].encode()]
'''


def fetch(srv, path, timeout=10):
    """(status, Connection header, body) of one request on a fresh
    keep-alive connection."""
    status, headers, body = srv.request("GET", path, timeout=timeout)
    return status, headers.get("Connection"), body


def refused(srv):
    try:
        socket.create_connection(srv.address, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def served_until_stop(srv, limit=50):
    """Requests answered 200, one connection each, until the server
    refuses connections; the last answer must have closed its
    connection."""
    n = 0
    while n < limit:
        try:
            status, connection, _ = fetch(srv, f"/r{n}")
        except OSError:
            break
        assert status == 200
        n += 1
        if connection == "close":
            break
    assert srv.wait(timeout=10) == 0, srv.stderr
    return n


def test_stops_after_max_requests_and_returns(server):
    srv = server(APP, {"max_requests": 3})
    with srv.raw() as c:  # keep-alive: the third answer says close
        for i in range(3):
            c.send(f"GET /ka{i} HTTP/1.1\r\nHost: x\r\n\r\n")
            code, h, body, _ = c.response()
            assert (code, body) == (200, f"done /ka{i}".encode())
            assert h.get("connection", "").lower() == ("close" if i == 2
                                                        else "")
        assert c.closed()
    assert srv.wait(timeout=10) == 0, srv.stderr
    assert srv.stdout.strip() == "returned", "server() did not return"
    assert srv.wait_output(r"wsgi stopping after 3 requests \(max_requests\)")
    assert srv.wait_output(r"wsgi exiting$")


def test_requests_in_progress_finish(server):
    srv = server(APP, {"max_requests": 2, "graceful_timeout": 10})
    with cf.ThreadPoolExecutor(1) as ex:
        slow = ex.submit(fetch, srv, "/slow?1")
        deadline = time.monotonic() + 5
        while "start /slow" not in srv.records():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert fetch(srv, "/second")[0] == 200   # the limit is reached
        assert srv.wait_output(r"wsgi stopping after 2 requests", timeout=3)
        assert refused(srv), "a new connection was accepted after the limit"
        assert slow.result() == (200, "close", b"done /slow")
    assert srv.wait(timeout=10) == 0
    assert srv.stdout.strip() == "returned"


@pytest.mark.parametrize("run", range(3))
def test_jitter_stays_in_range(server, run):
    srv = server(APP, {"max_requests": 2, "max_requests_jitter": 3,
                       "log_output": False})
    n = served_until_stop(srv)
    assert 2 <= n <= 5, f"stopped after {n} requests"
    assert srv.wait_output(rf"wsgi stopping after {n} requests")


def test_no_limit_by_default(server):
    srv = server(APP, {"log_output": False, "max_requests": None,
                       "max_requests_jitter": 5})
    for i in range(20):
        assert fetch(srv, f"/n{i}")[:2] == (200, None)
    assert srv.alive()
