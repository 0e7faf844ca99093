"""heartbeat: called about once a second from the main program while the
hub runs freely, and not while a request keeps the hub busy (which is how
a master sees a stuck worker). An exception it raises - like one from a
Python signal handler - stops the server at once, abandoning requests in
progress, and server() raises it."""

import concurrent.futures as cf
import signal
import time

from test_server_options import server_errors

# libgreen.wsgi.server is wrapped so that conftest's launcher (which
# passes options as literals) passes the heartbeat too.
APP = r'''
import threading, time

BEATS = []

def beat():
    # the main program's thread, not a request's green thread
    assert threading.current_thread() is threading.main_thread()
    record("beat", repr(time.monotonic()))
    if len(BEATS) == RAISE_AT:
        raise RuntimeError("heartbeat failed on purpose")
    BEATS.append(1)

def app(environ, start_response):
    what, _, arg = environ["QUERY_STRING"].partition("=")
    record("start", repr(time.monotonic()))
    if what == "busy":              # pure Python: never yields
        end = time.monotonic() + float(arg)
        while time.monotonic() < end:
            pass
    elif what == "sleep":
        time.sleep(float(arg))
    record("end", repr(time.monotonic()))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

_real_server = libgreen.wsgi.server
libgreen.wsgi.server = lambda sock, app, **kw: _real_server(
    sock, app, heartbeat=beat, **kw)
'''


def app_source(raise_at=-1):
    return f"RAISE_AT = {raise_at}\n" + APP


def times(srv, kind):
    return [float(line.split()[1]) for line in srv.records()
            if line.startswith(kind + " ")]


def wait_records(srv, kind, n, timeout=10):
    deadline = time.monotonic() + timeout
    while len(times(srv, kind)) < n:
        assert time.monotonic() < deadline, srv.records()
        time.sleep(0.05)
    return times(srv, kind)


def test_called_about_once_a_second_while_idle(server):
    srv = server(app_source(), {"log_output": False})
    beats = wait_records(srv, "beat", 4)
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert all(0.8 < g < 1.6 for g in gaps), gaps
    assert srv.alive()


def test_not_called_while_a_request_blocks_the_hub(server):
    srv = server(app_source(), {"log_output": False})
    wait_records(srv, "beat", 1)
    assert srv.request("GET", "/?busy=3", timeout=20)[0] == 200
    start, end = times(srv, "start")[0], times(srv, "end")[0]
    during = [b for b in times(srv, "beat") if start < b < end]
    assert during == [], f"heartbeat ran while the hub was blocked: {during}"
    # and it comes back once the hub is free
    after = len(times(srv, "beat"))
    wait_records(srv, "beat", after + 2)


def test_called_while_requests_sleep(server):
    """Requests parked in a green wait leave the hub free: beats go on."""
    srv = server(app_source(), {"log_output": False})
    assert srv.request("GET", "/?sleep=2.5", timeout=20)[0] == 200
    start, end = times(srv, "start")[0], times(srv, "end")[0]
    assert len([b for b in times(srv, "beat") if start < b < end]) >= 2


def test_exception_stops_at_once_and_is_raised(server):
    srv = server(app_source(raise_at=2), {"graceful_timeout": 30})
    with cf.ThreadPoolExecutor(1) as ex:
        slow = ex.submit(srv.request, "GET", "/?sleep=20", timeout=30)
        rc = srv.wait(timeout=10)        # not the 20 s request, not 30 s
        try:
            slow.result()
        except OSError:
            pass                          # abandoned: closed unanswered
        else:
            raise AssertionError("the abandoned request was answered")
    assert rc == 1
    assert "RuntimeError: heartbeat failed on purpose" in srv.stderr
    assert "returned" not in srv.stdout
    assert srv.wait_output(r"1 request\(s\) still running after the 0 s "
                           r"grace period were abandoned")


def test_signal_handler_exception_also_stops_at_once(server):
    srv = server(r'''
import signal, sys, time

def quit_now(signum, frame):
    sys.exit(3)

signal.signal(signal.SIGUSR1, quit_now)

def app(environ, start_response):
    record("start")
    time.sleep(20)
    start_response("200 OK", [])
    return [b"late"]
''', {"graceful_timeout": 30})
    with cf.ThreadPoolExecutor(1) as ex:
        ex.submit(srv.request, "GET", "/", timeout=30)
        deadline = time.monotonic() + 5
        while "start" not in srv.records():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        t0 = time.monotonic()
        srv.kill(signal.SIGUSR1)
        assert srv.wait(timeout=10) == 3
        assert time.monotonic() - t0 < 2


def test_not_callable_is_refused(tmp_path):
    got = server_errors(tmp_path, ["sock, app, heartbeat=5"])
    assert got["sock, app, heartbeat=5"] == (
        "TypeError: libgreen.wsgi.server(): heartbeat=5 is of the wrong type, "
        "int (allowed: a callable, or None)")
