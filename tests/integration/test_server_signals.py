"""SIGTERM and SIGINT stop the server gracefully: requests in progress
finish, new connections are refused, server() returns and the process
exits 0 - within graceful_timeout."""

import concurrent.futures as cf
import signal
import socket
import time
import urllib.request

import pytest

APP = r'''
import time

def app(environ, start_response):
    record("start", environ["PATH_INFO"])
    time.sleep(float(environ["QUERY_STRING"] or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    record("end", environ["PATH_INFO"])
    return [b"finished " + environ["PATH_INFO"].encode()]
'''


def fetch(srv, path, timeout=15):
    with urllib.request.urlopen(srv.url(path), timeout=timeout) as r:
        return r.status, r.read()


def wait_record(srv, line, timeout=5):
    deadline = time.monotonic() + timeout
    while line not in srv.records():
        assert time.monotonic() < deadline, f"no {line!r} in {srv.records()}"
        time.sleep(0.01)


def connection_refused(srv):
    """True if a new connection is refused (or closed unanswered) at once;
    False if it is accepted and left waiting."""
    try:
        s = socket.create_connection(srv.address, timeout=0.5)
    except ConnectionRefusedError:
        return True
    try:
        s.sendall(b"GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False  # accepted by the kernel, never served
    finally:
        s.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_graceful_stop(server, sig):
    srv = server(APP, {"graceful_timeout": 10})
    with cf.ThreadPoolExecutor(2) as ex:
        inflight = ex.submit(fetch, srv, "/inflight?1.5")
        wait_record(srv, "start /inflight")
        t0 = time.monotonic()
        srv.kill(sig)
        assert srv.wait_output(r"wsgi stopping", timeout=3)
        assert connection_refused(srv), "a new connection was accepted while stopping"
        assert inflight.result() == (200, b"finished /inflight")
    rc = srv.wait(timeout=10)
    elapsed = time.monotonic() - t0
    assert rc == 0, srv.stderr
    assert srv.stdout.strip() == "returned", "server() did not return"
    assert elapsed < 3, f"took {elapsed:.2f} s to stop after a 1.5 s request"
    assert "Traceback" not in srv.stderr and "KeyboardInterrupt" not in srv.stderr
    assert srv.wait_output(r"wsgi exiting")


def test_idle_server_stops_at_once(server):
    srv = server(APP)
    # an idle keep-alive connection holds the stop up 0.5 s at most
    # (server/conn.c, SRV_STOP_LINGER)
    s = srv.connect()
    s.sendall(b"GET /ka HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    srv.kill(signal.SIGTERM)
    assert srv.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 1.5
    assert s.recv(100) == b""  # the idle connection was closed
    s.close()
    assert srv.stdout.strip() == "returned"


def test_request_on_its_way_at_stop_is_served(server):
    """A connection accepted before the stop whose request arrives just
    after it is served (with Connection: close), not reset: its client
    could not know. That is what lets a worker be replaced without one
    failed request."""
    srv = server(APP, {"graceful_timeout": 10})
    with cf.ThreadPoolExecutor(1) as ex, srv.raw() as c:
        inflight = ex.submit(fetch, srv, "/inflight?1")
        wait_record(srv, "start /inflight")
        srv.kill(signal.SIGTERM)
        assert srv.wait_output(r"wsgi stopping", timeout=3)
        c.send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        code, h, body, _ = c.response()
        assert (code, body) == (200, b"finished /late")
        assert h["connection"].lower() == "close"
        assert inflight.result()[0] == 200
    assert srv.wait(timeout=5) == 0


def test_request_on_an_idle_keepalive_connection_at_stop_is_served(server):
    """A request sent on an idle keep-alive connection just as the stop
    begins is served (with Connection: close), not reset: a proxy's pool
    sends on its idle connections at any moment, and a proxy does not
    send a POST on to another server once it has sent it to one. (Behind
    nginx, closing such connections at once lost POSTs in a rolling
    restart: make test-deploy.)"""
    srv = server(APP, {"graceful_timeout": 10})
    with cf.ThreadPoolExecutor(1) as ex, srv.raw() as c:
        inflight = ex.submit(fetch, srv, "/inflight?1")
        wait_record(srv, "start /inflight")
        c.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"finished /first"   # now idle, kept alive
        srv.kill(signal.SIGTERM)
        assert srv.wait_output(r"wsgi stopping", timeout=3)
        c.send("POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        code, h, body, _ = c.response()
        assert (code, body) == (200, b"finished /late")
        assert h["connection"].lower() == "close"
        assert c.closed()
        assert inflight.result()[0] == 200
    assert srv.wait(timeout=5) == 0


def test_graceful_timeout_abandons_long_request(server):
    srv = server(APP, {"graceful_timeout": 0.5})
    with cf.ThreadPoolExecutor(1) as ex:
        slow = ex.submit(fetch, srv, "/slow?5")
        wait_record(srv, "start /slow")
        t0 = time.monotonic()
        srv.kill(signal.SIGTERM)
        rc = srv.wait(timeout=10)
        elapsed = time.monotonic() - t0
        with pytest.raises(Exception):
            slow.result()
    assert rc == 0
    assert 0.4 <= elapsed < 2.0, f"exited {elapsed:.2f} s after SIGTERM"
    assert srv.stdout.strip() == "returned"
    assert "end /slow" not in srv.records()
    assert srv.wait_output(r"abandoned")


def test_keepalive_connection_closed_after_inflight_response(server):
    """A response finished during the stop says Connection: close."""
    srv = server(APP, {"graceful_timeout": 10})
    with srv.raw() as c:
        c.send("GET /ka?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_record(srv, "start /ka")
        srv.kill(signal.SIGTERM)
        code, h, body, _ = c.response()
        assert (code, body) == (200, b"finished /ka")
        assert h["connection"].lower() == "close"
        assert c.closed()
    assert srv.wait(timeout=5) == 0


def test_second_signal_while_stopping(server):
    """A second SIGTERM while stopping does not crash or hang the server."""
    srv = server(APP, {"graceful_timeout": 3})
    with cf.ThreadPoolExecutor(1) as ex:
        f = ex.submit(fetch, srv, "/two?0.6")
        wait_record(srv, "start /two")
        srv.kill(signal.SIGTERM)
        time.sleep(0.1)
        srv.kill(signal.SIGTERM)
        assert f.result() == (200, b"finished /two")
    assert srv.wait(timeout=5) == 0
    assert srv.stdout.strip() == "returned"


def test_python_signal_handler_still_runs(server):
    """Signals other than INT/TERM reach the app's Python handlers while
    the server runs."""
    srv = server(APP + r'''
import signal
signal.signal(signal.SIGUSR1, lambda *a: record("usr1"))
''')
    srv.kill(signal.SIGUSR1)
    wait_record(srv, "usr1")
    assert fetch(srv, "/after-usr1") == (200, b"finished /after-usr1")


def test_queued_request_gets_503_at_stop(server):
    """With max_size requests running, a waiting request that never
    started is answered 503 when the server stops (it was not processed,
    so the client may safely retry it)."""
    srv = server(APP, {"max_size": 1, "graceful_timeout": 10})
    with cf.ThreadPoolExecutor(1) as ex, srv.raw() as c:
        time.sleep(0.1)  # accepted while there is room, request not sent yet
        first = ex.submit(fetch, srv, "/first?1")
        wait_record(srv, "start /first")
        c.send("GET /queued HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        assert "start /queued" not in srv.records()
        srv.kill(signal.SIGTERM)
        code, h, body, _ = c.response()
        assert code == 503
        assert c.closed()
        assert first.result() == (200, b"finished /first")
    assert srv.wait(timeout=5) == 0
    assert "start /queued" not in srv.records()


FORK_APP = r'''
import os, time

def app(environ, start_response):
    pid = os.fork()
    if pid == 0:
        # The child is not the server: SIGTERM must end it as it would
        # end any process whose handlers the server did not replace.
        time.sleep(30)
        os._exit(7)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(pid).encode()]
'''


def test_sigterm_ends_a_child_forked_in_a_request(server):
    import os
    srv = server(FORK_APP)
    status, body = fetch(srv, "/fork")
    assert status == 200
    pid = int(body)
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            # the child is the server's, reaped by nobody: a zombie counts
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    break
            time.sleep(0.02)
        else:
            pytest.fail("the forked child ignored SIGTERM (the server's stop "
                        "handler was still installed in it)")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # and the server itself still serves and still stops on SIGTERM
    assert fetch(srv, "/after")[0] == 200
    srv.kill(signal.SIGTERM)
    assert srv.wait(timeout=10) == 0


def wait_accepted(srv, before, timeout=5):
    """Waits until the server holds one more socket than `before` (it
    accepted the connection just made)."""
    deadline = time.monotonic() + timeout
    while sockets_of(srv.pid) <= before:
        assert time.monotonic() < deadline, "the connection was not accepted"
        time.sleep(0.01)


def sockets_of(pid):
    import os
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def test_connection_accepted_before_the_stop_is_served(server):
    """A client that connected just before SIGTERM (its request still on
    the way) is answered, not reset: restarts under load fail nothing."""
    srv = server(APP, {"graceful_timeout": 10})
    before = sockets_of(srv.pid)
    with srv.raw() as c:
        wait_accepted(srv, before)
        srv.kill(signal.SIGTERM)
        time.sleep(0.3)  # the stop is under way before the request comes
        c.send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        code, h, body, _ = c.response()
        assert (code, body) == (200, b"finished /late")
        assert h["connection"].lower() == "close"
    assert srv.wait(timeout=10) == 0


def test_silent_connection_holds_the_stop_about_a_second(server):
    srv = server(APP, {"graceful_timeout": 10})
    before = sockets_of(srv.pid)
    with srv.raw() as c:
        wait_accepted(srv, before)
        t0 = time.monotonic()
        srv.kill(signal.SIGTERM)
        assert srv.wait(timeout=10) == 0
        assert 0.8 < time.monotonic() - t0 < 3
        assert c.closed()


def test_request_arriving_during_the_stop_is_served(server):
    """Part of a head before the stop, the rest well after: served."""
    srv = server(APP, {"graceful_timeout": 10})
    before = sockets_of(srv.pid)
    with srv.raw() as c:
        wait_accepted(srv, before)
        c.send("GET /slowhead HTTP/1.1\r\n")
        srv.kill(signal.SIGTERM)
        time.sleep(1.5)  # longer than a silent connection holds the stop
        assert srv.alive(), "the stop did not wait for a head on its way"
        c.send("Host: x\r\n\r\n")
        code, _, body, _ = c.response()
        assert (code, body) == (200, b"finished /slowhead")
    assert srv.wait(timeout=10) == 0
