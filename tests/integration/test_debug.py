"""The ops debugging toggles on a live server, as an ops person uses them:
LIBGREEN_HOOKS=off, the trace (LIBGREEN_TRACE, SIGRTMIN+1), the dump
(SIGUSR2), the block warning (LIBGREEN_BLOCK_WARN_MS), the hang report
(LIBGREEN_HANG_REPORT_S) and the statistics line (SIGRTMIN+2,
libgreen.stats()).

The app is not trivial: requests that wait on a backend that never
answers, spin in Python, sleep, and deadlock on two threading.Locks, so
the reports must name the app's own functions."""

import json
import os
import re
import signal
import threading
import time

import pytest

SIG_TRACE = signal.SIGRTMIN + 1
SIG_STATS = signal.SIGRTMIN + 2
# A test that outlives 60 s fails, whatever it is blocked in (conftest's
# _time_limit; the server fixture then kills its server by PID).
pytestmark = pytest.mark.time_limit(60)


APP = r'''
import json
import socket
import threading
import time

# A backend that accepts connections and never answers.
backend = socket.socket()
backend.bind(("127.0.0.1", 0))
backend.listen(64)
BACKEND = backend.getsockname()

lock_a, lock_b = threading.Lock(), threading.Lock()


def wait_for_backend(query):
    conn = socket.create_connection(BACKEND)
    conn.sendall(query.encode() + b"\n")
    return conn.recv(100)


def busy_loop(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def take_both(first, second):
    with first:
        time.sleep(0.2)  # the other request takes its first lock meanwhile
        with second:
            return b"unreachable"


def app(environ, start_response):
    path, query = environ["PATH_INFO"], environ["QUERY_STRING"]
    if path == "/backend":
        body = wait_for_backend(query)
    elif path == "/spin":
        body = b"spun %d" % busy_loop(float(query or 0.6))
    elif path == "/sleep":
        time.sleep(float(query or 0.05))
        body = b"slept"
    elif path == "/ab":
        body = take_both(lock_a, lock_b)
    elif path == "/ba":
        body = take_both(lock_b, lock_a)
    elif path == "/stats":
        body = json.dumps(libgreen.stats()).encode()
    else:
        body = b"pong"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''

QUIET = {"log_output": False}
STATS_RE = r'^\{"event":"libgreen\.stats".*\}$'


def send_only(srv, path):
    """Sends a request and leaves the connection open without reading."""
    s = srv.connect()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def wait_parked(srv, n, timeout=10.0, call=None):
    """Readiness probe: until libgreen.stats() (asked through /stats, on
    a green thread of its own) says n green threads are parked - and, with
    call, that many parks in that kind of call happened (a request may
    park on its way there, e.g. in getaddrinfo before its recv)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status, _, body = srv.request("GET", "/stats")
        assert status == 200
        st = json.loads(body)
        if st["parked"] >= n and (call is None or st["parks"][call] >= n):
            return
        time.sleep(0.02)
    pytest.fail(f"{n} green thread(s) never parked")


def stats_lines(text):
    return [json.loads(m) for m in re.findall(STATS_RE, text, re.M)]


# ---- the dump -----------------------------------------------------------

def test_dump_shows_the_parked_request_in_the_apps_own_code(server):
    srv = server(APP, QUIET)
    waiting = send_only(srv, "/backend?id=7")
    try:
        wait_parked(srv, 1, call="recv")
        srv.kill(signal.SIGUSR2)
        assert srv.wait_output(r"^libgreen: end of dump$", timeout=10)
        err = srv.stderr
        assert f"libgreen: dump of process {srv.pid} (SIGUSR2): 1 green thread(s)" in err
        # what it waits on, since when, and for whom
        m = re.search(r"^green thread \d+ \(wsgi-request\): parked (\d+\.\d+) s "
                      r"in recv on fd (\d+) \(read\)$", err, re.M)
        assert m, err
        assert os.readlink(f"/proc/{srv.pid}/fd/{m.group(2)}").startswith("socket:")
        assert re.search(r"^  GET /backend\?id=7 HTTP/1\.1 from 127\.0\.0\.1:\d+$",
                         err, re.M), err
        # its C stack, from the interposed recv down to the hub
        c_stack = err.split("C stack (most recent call first):\n")[1]
        assert re.search(r"^  #\d+ +0x[0-9a-f]+ recv\+0x[0-9a-f]+ \(libgreen\.so\)$",
                         c_stack, re.M), c_stack
        assert " hub_entry+0x" in c_stack
        # its Python stack, in the app's own functions
        py = err.split("Stack (most recent call first):\n")[1]
        frames = re.findall(r'^  File "([^"]+)", line (\d+) in (\w+)$', py, re.M)
        assert [f[2] for f in frames[:2]] == ["wait_for_backend", "app"], py
        assert frames[0][0].endswith("app1.py")
        # the statistics line leads the dump
        (st,) = stats_lines(err)
        assert st["pid"] == srv.pid and st["parked"] >= 1
        assert st["parks"]["recv"] >= 1
        # and the server goes on serving
        assert srv.request("GET", "/ping")[2] == b"pong"
    finally:
        waiting.close()


def test_dump_to_a_file_and_an_apps_own_usr2_handler_wins(server, tmp_path):
    dump = tmp_path / "dump.txt"
    srv = server(APP, QUIET, env={"LIBGREEN_DUMP_FILE": str(dump)})
    srv.kill(signal.SIGUSR2)
    end = time.monotonic() + 10
    while "end of dump" not in (dump.read_text() if dump.exists() else ""):
        assert time.monotonic() < end, "no dump in LIBGREEN_DUMP_FILE"
        time.sleep(0.02)
    assert "0 green thread(s)" in dump.read_text()
    assert "libgreen: dump" not in srv.stderr

    own = APP + r'''
import signal
signal.signal(signal.SIGUSR2, lambda sig, frame: record("usr2"))
'''
    srv2 = server(own, QUIET)
    srv2.kill(signal.SIGUSR2)
    end = time.monotonic() + 10
    while "usr2" not in srv2.records():
        assert time.monotonic() < end, "the app's SIGUSR2 handler never ran"
        time.sleep(0.02)
    assert srv2.alive() and "libgreen: dump" not in srv2.stderr


# ---- the trace ----------------------------------------------------------

# time.sleep is clock_nanosleep from 3.11 on, select (with no fd) before
TRACE_SLEEP = (r"^libgreen trace: green \d+ (clock_nanosleep|select) waited "
               r"0\.\d{3} s: slept \[GET /sleep\?0\.05 HTTP/1\.1 from "
               r"127\.0\.0\.1:\d+\]$")


def sleep_parks(parks):
    """Parks of time.sleep, under the kind of the call it makes."""
    return parks["sleep"] + parks["poll"]


def test_trace_from_the_environment_and_flipped_by_signal(server):
    srv = server(APP, QUIET, env={"LIBGREEN_TRACE": "1"})
    assert srv.request("GET", "/sleep?0.05")[2] == b"slept"
    assert srv.wait_output(TRACE_SLEEP), srv.stderr

    srv.kill(SIG_TRACE)
    assert srv.wait_output(rf"^libgreen trace: off in process {srv.pid}$")
    srv.clear_output()
    assert srv.request("GET", "/sleep?0.05")[2] == b"slept"
    # a trace line is written when its park ends, before the response; the
    # statistics line, asked for now, comes after anything written before
    srv.kill(SIG_STATS)
    assert srv.wait_output(STATS_RE)
    assert "libgreen trace: green" not in srv.stderr

    srv.kill(SIG_TRACE)
    assert srv.wait_output(rf"^libgreen trace: on in process {srv.pid}$")
    assert srv.request("GET", "/sleep?0.05")[2] == b"slept"
    assert srv.wait_output(TRACE_SLEEP), srv.stderr


def test_trace_to_a_file_names_call_fd_and_outcome(server, tmp_path):
    trace = tmp_path / "trace.txt"
    srv = server(APP, QUIET, env={"LIBGREEN_TRACE": "on",
                                   "LIBGREEN_TRACE_FILE": str(trace)})
    waiting = send_only(srv, "/backend?id=1")
    try:
        wait_parked(srv, 1)
    finally:
        waiting.close()
    assert srv.request("GET", "/sleep?0.05")[2] == b"slept"
    text = trace.read_text()
    # the backend wait has no line yet: it is still parked
    assert "recv on fd" not in text
    assert re.search(TRACE_SLEEP, text, re.M), text
    assert "libgreen trace" not in srv.stderr


# ---- the block warning --------------------------------------------------

def test_block_warning_names_the_spinning_request(server):
    srv = server(APP, QUIET, env={"LIBGREEN_BLOCK_WARN_MS": "100"})
    assert srv.request("GET", "/spin?0.6")[2].startswith(b"spun")
    assert srv.wait_output(r"^libgreen: green thread \d+ ran about 0\.\d+ s "
                           r"without yielding$", timeout=10)
    err = srv.stderr
    m = re.search(r"^libgreen: green thread (\d+) has run (\d+) ms without "
                  r"yielding: every other green thread of process (\d+) "
                  r"waits for it \(LIBGREEN_BLOCK_WARN_MS=100\)$", err, re.M)
    assert m, err
    assert 100 <= int(m.group(2)) < 600 and int(m.group(3)) == srv.pid
    assert re.search(r"^  GET /spin\?0\.6 HTTP/1\.1 from 127\.0\.0\.1:\d+$", err, re.M)
    c_stack = err.split("C stack (most recent call first):\n")[1]
    assert re.match(r"  #0 +0x[0-9a-f]+", c_stack), c_stack
    assert " hub_entry+0x" in c_stack
    py = err.split("Stack (most recent call first):\n")[1]
    frames = re.findall(r'^  File "[^"]+", line \d+ in (\w+)$', py, re.M)
    assert frames[:2] == ["busy_loop", "app"], py
    assert err.count(" has run ") == 1  # once per stall


# ---- the hang report ----------------------------------------------------

def test_hang_report_once_for_two_requests_deadlocked_on_locks(server):
    srv = server(APP, QUIET, env={"LIBGREEN_HANG_REPORT_S": "1"})
    socks = [send_only(srv, "/ab"), send_only(srv, "/ba")]
    try:
        assert srv.wait_output(r"^libgreen: hang: all 2 green thread\(s\) of "
                               rf"process {srv.pid} have been parked", timeout=15)
        assert srv.wait_output(r"^libgreen: end of dump$")
        err = srv.stderr
        assert "libgreen: dump of process" in err and "(hang): 2 green thread(s)" in err
        locks = re.findall(r"^green thread \d+ \(wsgi-request\): parked \d+\.\d+ s "
                           r"in sem_\w+ on (0x[0-9a-f]+)$", err, re.M)
        assert len(locks) == 2 and locks[0] != locks[1], err
        assert "  GET /ab HTTP/1.1 from 127.0.0.1:" in err
        assert "  GET /ba HTTP/1.1 from 127.0.0.1:" in err
        assert err.count(" in take_both\n") == 2
        # other requests still run; the report is not repeated
        assert srv.request("GET", "/ping")[2] == b"pong"
        assert not srv.wait_output(r"(?s)libgreen: hang:.*libgreen: hang:",
                                   timeout=3)
    finally:
        for s in socks:
            s.close()


def test_no_hang_report_when_idle_or_waiting_on_an_fd(server):
    srv = server(APP, QUIET, env={"LIBGREEN_HANG_REPORT_S": "1"})
    assert not srv.wait_output("libgreen: hang", timeout=2.5)  # idle
    waiting = send_only(srv, "/backend?id=2")
    try:
        wait_parked(srv, 1)
        assert not srv.wait_output("libgreen: hang", timeout=3)  # on a socket
    finally:
        waiting.close()


# ---- statistics ---------------------------------------------------------

def test_stats_count_what_was_sent(server):
    srv = server(APP, QUIET)
    conn = srv.http()  # one keep-alive connection for everything
    try:
        for i in range(5):
            conn.request("GET", "/sleep?0.01" if i % 2 else "/ping")
            assert conn.getresponse().read() in (b"pong", b"slept")
        srv.kill(SIG_STATS)
        assert srv.wait_output(STATS_RE, timeout=10)
        (line,) = stats_lines(srv.stderr)
        assert line["pid"] == srv.pid
        assert line["requests"] == 5 and line["connections"] == 1
        assert sleep_parks(line["parks"]) == 2
        assert line["live"] == line["parked"] == 0 and line["switches"] > 0
        assert set(line["parks"]) >= {"read", "recv", "accept", "connect",
                                      "poll", "sleep", "sem", "resolver",
                                      "waitpid", "other"}

        conn.request("GET", "/stats")  # libgreen.stats(), from the request
        st = json.loads(conn.getresponse().read())
        assert st["requests"] == 5 and st["connections"] == 1
        assert st["live"] == 1 and st["parked"] == 0  # itself, running
        assert sleep_parks(st["parks"]) == 2
    finally:
        conn.close()


# ---- LIBGREEN_HOOKS=off ---------------------------------------------------

def two_sleeps(srv):
    """Two requests that each sleep 1 s, at once: (seconds, results)."""
    results = []

    def one():
        results.append(srv.request("GET", "/sleep?1", timeout=20)[::2])
    threads = [threading.Thread(target=one) for _ in range(2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return time.monotonic() - t0, results


@pytest.mark.parametrize("value", ["off", "0"])
def test_hooks_off_serves_one_blocking_request_at_a_time(server, value):
    srv = server(APP, QUIET, env={"LIBGREEN_HOOKS": value})
    took, results = two_sleeps(srv)
    assert results == [(200, b"slept")] * 2
    assert took >= 1.9, f"{took:.2f} s: the sleeps overlapped"
    st = json.loads(srv.request("GET", "/stats")[2])
    assert sleep_parks(st["parks"]) == 0  # the interposed sleep never parked


def test_hooks_on_overlaps_the_same_requests(server):
    srv = server(APP, QUIET)
    took, results = two_sleeps(srv)
    assert results == [(200, b"slept")] * 2
    assert took < 1.6, f"{took:.2f} s: the sleeps did not overlap"
