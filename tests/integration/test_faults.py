"""Faults a server in production meets, each as its users would notice
them: out of file descriptors, slowloris, slow readers, connections
dropped in every way, pipelined floods, writes to a peer that reset,
SIGTERM under load, and an app that raises at each stage of a response.

Sizes fit the 20,000-fd cap of the process (this one raises its own soft
RLIMIT_NOFILE to the hard limit) and the whole file stays well under
90 s. Thousands of clients are driven by one selector loop, not threads.
`make faults` runs the heavy variants (LIBGREEN_FAULTS_HEAVY=1): 1,000
clients against `ulimit -n 256`, 10,000 dropped connections per kind.

Cases covered elsewhere are not repeated here: one exception before and
after the head (test_server_errors.py), one slowloris trickler and the
408 (test_server_hostile.py), one SIGTERM with a request in flight
(test_server_signals.py)."""

import json
import os
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import PYTHON, SO, child_env

HEAVY = os.environ.get("LIBGREEN_FAULTS_HEAVY", "") not in ("", "0")

# Every test here ends within its limit, whatever it is blocked in
# (conftest's _time_limit).
pytestmark = [pytest.mark.skipif(not SO.is_file(),
                                 reason=f"{SO} not found: run `make` first"),
              pytest.mark.time_limit(240 if HEAVY else 60)]

_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))


# ---- what the server process costs -------------------------------------

def cpu_seconds(pid):
    """utime + stime of pid, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid):
    """The server's open fds, not counting timerfds: the hub makes its one
    timerfd lazily, at the first near deadline (hub/timer.c), which is
    not a descriptor a connection leaked."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[timerfd]":
                n += 1
        except FileNotFoundError:
            pass
    return n


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))


def wait_until(pred, timeout, what):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def quiet_fds(srv):
    """The server's fd count once a request has been served and the
    count has held still for 0.3 s (its connection closed)."""
    still_serving(srv)
    last, since = fd_count(srv.pid), time.monotonic()
    while time.monotonic() - since < 0.3:
        time.sleep(0.05)
        now = fd_count(srv.pid)
        if now != last:
            last, since = now, time.monotonic()
    return last


def settle_fds(srv, baseline, timeout=5.0):
    """The server's fd count once it is back to baseline (or what it is
    after timeout, for the assertion to show)."""
    end = time.monotonic() + timeout
    while fd_count(srv.pid) > baseline and time.monotonic() < end:
        time.sleep(0.05)
    return fd_count(srv.pid)


def still_serving(srv, path="/alive"):
    with srv.raw() as c:  # TCP or Unix socket alike
        c.send(get(path))
        assert c.response()[0] == 200


# ---- many clients in one selector loop ---------------------------------

class Crowd:
    """n non-blocking client connections to address, each sending its
    request (bytes) and reading its response to EOF. run() returns when
    all have ended or after timeout; then done[i] holds (seconds from
    start to EOF, bytes read, error name or None)."""

    def __init__(self, address, requests):
        self.sel = selectors.DefaultSelector()
        self.done = [None] * len(requests)
        self.t0 = time.monotonic()
        self.left = len(requests)
        for i, req in enumerate(requests):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(address)
            self.sel.register(s, selectors.EVENT_WRITE, [i, req, bytearray()])

    def _end(self, s, st, err):
        self.done[st[0]] = (time.monotonic() - self.t0, bytes(st[2]), err)
        self.left -= 1
        self.sel.unregister(s)
        s.close()

    def step(self, wait):
        for key, ev in self.sel.select(wait):
            s, st = key.fileobj, key.data
            try:
                if ev & selectors.EVENT_WRITE:
                    n = s.send(st[1])
                    st[1] = st[1][n:]
                    if not st[1]:
                        self.sel.modify(s, selectors.EVENT_READ, st)
                    continue
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                self._end(s, st, type(e).__name__)
                continue
            if data:
                st[2] += data
            else:
                self._end(s, st, None)

    def run(self, timeout, tick=None):
        end = time.monotonic() + timeout
        while self.left and time.monotonic() < end:
            self.step(0.05)
            if tick:
                tick()
        for key in list(self.sel.get_map().values()):
            self._end(key.fileobj, key.data, "timeout")
        return self.done


def status_of(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
    return int(m.group(1)) if m else None


def get(path, close=True):
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


# ---- out of file descriptors ---------------------------------------------

NOFILE_APP = r'''
import resource, time
resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile}))

def app(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served " + environ["PATH_INFO"].encode()]
'''


def test_out_of_fds_no_busy_loop_and_everyone_served(server):
    """ulimit -n far below the clients, each holding a slow request: the
    server waits for fds without burning the CPU (accept is retried ten
    times a second, not in a loop) and serves every client as fds free."""
    nofile, clients, hold = (256, 1000, 2.0) if HEAVY else (128, 500, 1.0)
    srv = server(NOFILE_APP.format(nofile=nofile), {"log_output": False})
    crowd = Crowd(srv.address,
                  [get(f"/c{i}?{hold}") for i in range(clients)])
    cpu0, t0 = cpu_seconds(srv.pid), time.monotonic()
    samples = []  # server CPU over the windows its fds stay exhausted

    def sample():
        nonlocal cpu0, t0
        now = time.monotonic()
        if now - t0 >= 0.5:
            cpu = cpu_seconds(srv.pid)
            if fd_count(srv.pid) >= nofile - 16:
                samples.append((cpu - cpu0) / (now - t0))
            cpu0, t0 = cpu, now

    done = crowd.run(timeout=clients / (nofile - 20) * hold + 30, tick=sample)
    served = sum(1 for d in done if status_of(d[1]) == 200)
    assert served == clients, \
        f"{clients - served} of {clients} clients were not served: " \
        f"{[d for d in done if status_of(d[1]) != 200][:3]}"
    assert srv.wait_output(r"cannot accept connections \(Too many open files\)",
                           timeout=1)
    assert len(samples) >= 2, "the fds were never seen exhausted"
    assert max(samples) < 0.10, \
        f"server CPU while out of fds: {[f'{s:.0%}' for s in samples]}"
    print(f"server CPU while out of fds: {[f'{s:.1%}' for s in samples]}")


def test_out_of_fds_idle_keepalive_connections_make_room(server):
    """Clients that keep their connections open hold every fd: each new
    client is still served at once, because the server closes the
    longest idle keep-alive connections (clients must expect that
    between requests) instead of leaving it in the backlog until one
    times out (60 s)."""
    nofile = 64
    srv = server(NOFILE_APP.format(nofile=nofile), {"log_output": False})
    idle = []
    try:
        for i in range(nofile + 40):
            t0 = time.monotonic()
            s = socket.create_connection(srv.address, timeout=5)
            idle.append(s)
            s.sendall(get(f"/k{i}", close=False))
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), i
            assert time.monotonic() - t0 < 2, f"client {i} waited"
        closed = []
        for i, s in enumerate(idle):
            s.settimeout(0)
            try:
                if s.recv(1) == b"":
                    closed.append(i)
            except BlockingIOError:
                pass
    finally:
        for s in idle:
            s.close()
    assert len(closed) >= 40
    assert closed == list(range(len(closed))), \
        f"not the longest idle that were closed: {closed}"
    assert srv.wait_output(r"cannot accept connections \(Too many open "
                           r"files\); closed \d+ idle keep-alive", timeout=1)


SOFT_LIMIT_APP = r'''
import resource, time
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 2048))

def app(environ, start_response):
    time.sleep(1)
    start_response("200 OK", [])
    return [b"ok"]
'''


def test_soft_fd_limit_raised_to_the_hard_one(server):
    """A soft limit of 256 (hard 2048), as a shell or systemd gives: the
    server raises it at start, so 600 clients holding 1 s requests are
    served at once rather than in waves behind EMFILE."""
    srv = server(SOFT_LIMIT_APP, {"log_output": False})
    with open(f"/proc/{srv.pid}/limits") as f:
        m = re.search(r"^Max open files\s+(\d+)\s+(\d+)", f.read(), re.M)
    assert m.groups() == ("2048", "2048")
    t0 = time.monotonic()
    done = Crowd(srv.address, [get(f"/s{i}") for i in range(600)]).run(20)
    assert all(status_of(d[1]) == 200 for d in done)
    assert time.monotonic() - t0 < 3.5
    assert "cannot accept" not in srv.stderr


# ---- slowloris -----------------------------------------------------------

LATENCY_CLIENT = r'''
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
lat, bad = [], 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /normal HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    lat.append(time.monotonic() - t)
    bad += not data.startswith(b"HTTP/1.1 200")
    time.sleep(0.005)
print(json.dumps({"lat": lat, "bad": bad}))
'''


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def test_slowloris_does_not_delay_others_and_is_cut(server, tmp_path):
    """2,000 connections send a header byte per second (the first after
    1.5 s): a normal client meanwhile sees p99 < 100 ms, and each
    trickler gets 408 once header_timeout has passed since it connected -
    a late first byte buys no extra time."""
    n, timeout = 2000, 2.0
    srv = server(NOFILE_APP.format(nofile=20000),
                 {"log_output": False, "header_timeout": timeout})
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
    sel = selectors.DefaultSelector()
    conns = {}
    t0 = time.monotonic()
    for i in range(n):
        s = socket.create_connection(srv.address, timeout=5)
        s.setblocking(False)
        conns[s] = [time.monotonic(), 0, bytearray(), None]
        sel.register(s, selectors.EVENT_READ)
    script = tmp_path / "latency.py"
    script.write_text(LATENCY_CLIENT)
    client = subprocess.Popen([PYTHON, str(script), str(srv.port), "3"],
                              stdout=subprocess.PIPE, env=child_env(False))
    try:
        next_byte = t0 + 1.5
        end = time.monotonic() + timeout + 3  # after the last connect
        while time.monotonic() < end and \
                any(st[3] is None for st in conns.values()):
            if time.monotonic() >= next_byte:
                for s, st in conns.items():
                    if st[3] is None:
                        try:
                            s.send(head[st[1]:st[1] + 1])
                            st[1] += 1
                        except OSError:
                            pass
                next_byte += 1.0
            for key, _ in sel.select(0.05):
                s, st = key.fileobj, conns[key.fileobj]
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                st[2] += data
                if not data:
                    st[3] = time.monotonic() - st[0]
                    sel.unregister(s)
        out, _ = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for s in conns:
            s.close()
    res = json.loads(out)
    p99 = percentile(res["lat"], 0.99)
    print(f"normal client: {len(res['lat'])} requests, "
          f"p50 {percentile(res['lat'], 0.5) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms")
    assert res["bad"] == 0
    assert len(res["lat"]) >= 50
    assert p99 < 0.100, f"p99 {p99 * 1000:.0f} ms with {n} slowloris clients"
    cut = sorted(st[3] for st in conns.values() if st[3] is not None)
    assert len(cut) == n, f"{n - len(cut)} tricklers were never cut"
    assert all(status_of(bytes(st[2])) == 408 for st in conns.values())
    assert cut[-1] < timeout + 1.0, \
        f"the last trickler was cut {cut[-1]:.2f} s after connecting"
    assert cut[0] >= timeout - 0.5  # the hub's clock is read once a round
    still_serving(srv)


# ---- slow readers of large responses --------------------------------------

BIG_APP = r'''
BODY = b"b" * (8 << 20)

class Big:
    def __iter__(self):
        for i in range(0, len(BODY), 1 << 16):
            yield BODY[i:i + (1 << 16)]
    def close(self):
        record("closed")

def app(environ, start_response):
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Length", str(len(BODY)))])
        return Big()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"small"]
'''


def test_slow_readers_of_large_responses(server):
    """20 clients fetch an 8 MB response and stop reading after 8 KB:
    other clients are answered at once meanwhile, and each stuck reader
    is cut after body_timeout (its response closed, its fd freed, the
    connection reset so its queued megabytes go at once)."""
    srv = server(BIG_APP, {"log_output": False, "body_timeout": 1.0})
    baseline = quiet_fds(srv)
    slow = []
    for _ in range(20):
        s = socket.create_connection(srv.address, timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.sendall(get("/big"))
        got = 0
        while got < 8192:
            got += len(s.recv(65536))
        slow.append(s)
    t0 = time.monotonic()
    for _ in range(20):
        t = time.monotonic()
        still_serving(srv, "/small")
        assert time.monotonic() - t < 0.5
    wait_until(lambda: srv.records().count("closed") == 20, 5,
               "the stuck readers to be cut")
    assert time.monotonic() - t0 < 1.0 + 3
    assert settle_fds(srv, baseline) <= baseline
    t1 = time.monotonic()
    for s in slow:  # what they get: the start of the body, then the end
        s.settimeout(5)
        got = 0
        try:
            while True:
                d = s.recv(1 << 20)
                if not d:
                    break
                got += len(d)
        except ConnectionResetError:
            pass  # reset: what it had not read was dropped
        assert got < (8 << 20) - 65536
        s.close()
    assert time.monotonic() - t1 < 5, "the cut readers were not reset"
    still_serving(srv)


# ---- connections opened and dropped ---------------------------------------

def _drop(address, kind, n, batch=500):
    """n connections dropped in batches: 'close' (no byte), 'partial'
    (half a head, then FIN), 'rst' (half a head, then RST), 'rst-full'
    (a whole request, RST before the response)."""
    for start in range(0, n, batch):
        socks = []
        for _ in range(min(batch, n - start)):
            s = socket.socket()
            s.connect(address)
            if kind != "close":
                s.send(get("/full") if kind == "rst-full"
                       else b"GET /partial HTTP/1.1\r\nHo")
            if kind.startswith("rst"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
            socks.append(s)
        for s in socks:
            s.close()


def test_connections_opened_and_dropped(server):
    """10,000 connections dropped every way (no byte, half a request then
    FIN or RST, a whole request then RST): the server keeps serving and
    its fd count returns to what it was."""
    per_kind = 10000 if HEAVY else 2500
    srv = server(NOFILE_APP.format(nofile=20000),
                 {"log_output": False, "header_timeout": 5})
    baseline = quiet_fds(srv)
    for kind in ("close", "partial", "rst", "rst-full"):
        _drop(srv.address, kind, per_kind)
        still_serving(srv)
        after = settle_fds(srv, baseline)
        print(f"{per_kind} dropped ({kind}): {after} fds, {baseline} before")
        assert after <= baseline, f"{kind}: {after} fds, {baseline} before"
    assert srv.alive()


# ---- pipelined floods ------------------------------------------------------

ECHO_APP = r'''
def app(environ, start_response):
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''

RESP_RE = re.compile(rb"HTTP/1\.1 200 OK\r\n.*?Content-Length: (\d+)\r\n.*?"
                     rb"\r\n\r\n", re.S)


def _pipeline(address, conn_id, n, results):
    """n pipelined requests on one connection, writing and reading at
    once; results[conn_id] = the paths answered, in order."""
    data = b"".join(get(f"/{conn_id}/{i}", close=(i == n - 1))
                    for i in range(n))
    s = socket.create_connection(address, timeout=20)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    buf = bytearray()
    while True:
        if not sel.select(20):
            break
        if data:
            try:
                data = data[s.send(data):]
            except BlockingIOError:
                pass
            if not data:
                sel.modify(s, selectors.EVENT_READ)
        try:
            d = s.recv(1 << 20)
        except BlockingIOError:
            continue
        if not d:
            break
        buf += d
    s.close()
    paths, pos = [], 0
    while (m := RESP_RE.match(buf, pos)):
        end = m.end() + int(m.group(1))
        paths.append(bytes(buf[m.end():end]).decode())
        pos = end
    results[conn_id] = paths


def test_pipelined_floods(server):
    """5,000 pipelined requests on one connection, then 1,000 on each of
    8 at once: every response comes, in order, and the server's memory
    does not grow with the flood."""
    srv = server(ECHO_APP, {"log_output": False})
    still_serving(srv)
    rss0 = rss_kib(srv.pid)
    results = {}
    _pipeline(srv.address, 0, 5000, results)
    assert results[0] == [f"/0/{i}" for i in range(5000)]
    threads = [threading.Thread(target=_pipeline,
                                args=(srv.address, c, 1000, results))
               for c in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in range(1, 9):
        assert results.get(c) == [f"/{c}/{i}" for i in range(1000)], c
    grew = rss_kib(srv.pid) - rss0
    print(f"pipelined floods: RSS {rss0} KiB before, grew {grew} KiB")
    assert grew < 20 * 1024, f"the server grew by {grew} KiB"
    still_serving(srv)


WIDE_APP = r'''
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "65536")])
    return [b"w" * 65536]
'''


def test_pipelined_flood_never_read(server):
    """A client pipelines 40 MB of requests for 64 KB responses and never
    reads: the server stops reading too (its memory stays bounded) and
    drops the client after body_timeout."""
    srv = server(WIDE_APP, {"log_output": False, "body_timeout": 1.0})
    still_serving(srv)
    rss0 = rss_kib(srv.pid)
    s = socket.create_connection(srv.address, timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    chunk = get("/flood", close=False) * 1000
    sent, dropped, t0 = 0, False, time.monotonic()
    while time.monotonic() - t0 < 20 and sent < 40 << 20:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)  # the server stopped reading: as it should
        except OSError:
            dropped = True
            break
    took = time.monotonic() - t0
    assert sent < 40 << 20, "the server read 40 MB it could not answer"
    assert dropped, "the server never dropped the client"
    print(f"flood never read: {sent >> 10} KiB taken, dropped after "
          f"{took:.1f} s, RSS grew {rss_kib(srv.pid) - rss0} KiB")
    assert took < 1.0 + 5
    assert rss_kib(srv.pid) - rss0 < 20 * 1024
    s.close()
    still_serving(srv)


# ---- writes to a peer that reset -------------------------------------------

RESET_APP = r'''
import os, signal
# Some apps want a CLI's default SIGPIPE; the server must not die of it.
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
BIG = os.path.join(STATE, "big")
with open(BIG, "wb") as f:
    f.write(b"f" * (16 << 20))

def app(environ, start_response):
    if environ["PATH_INFO"] == "/write":
        write = start_response("200 OK", [])
        try:
            for _ in range(2000):
                write(b"w" * 65536)
        except OSError as e:
            record("write", type(e).__name__)
            raise
        return []
    if environ["PATH_INFO"] == "/read-then-write":
        record("reading")
        try:
            environ["wsgi.input"].read()
        except OSError as e:  # the reset: the app carries on regardless
            record("read", type(e).__name__)
        start_response("200 OK", [])
        return [b"r" * 65536] * 4
    if environ["PATH_INFO"] == "/file":
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](open(BIG, "rb"))
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [])
        return (b"s" * 65536 for _ in range(2000))
    start_response("200 OK", [])
    return [b"alive"]
'''


def _reset_mid_response(srv, path):
    s = srv.connect(timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.sendall(get(path))
    assert s.recv(64).startswith(b"HTTP/1.1 200")
    if s.family != socket.AF_UNIX:  # a Unix socket just closes
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
    s.close()


def _reset_mid_body(srv, path):
    """RST while the app reads the request body: the app's read fails,
    it answers anyway, and that write meets a connection already reset
    (EPIPE, the case that raises SIGPIPE)."""
    n = srv.records().count("reading")
    s = socket.create_connection(srv.address, timeout=5)
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 100000\r\n\r\n0123456789")
    wait_until(lambda: srv.records().count("reading") > n or not srv.alive(),
               5, "the app")
    assert srv.alive(), f"the server died: {srv.proc.returncode}"
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.mark.parametrize("path,unix", [
    ("/write", False), ("/stream", False), ("/file", False),
    ("/file", True), ("/read-then-write", False)],
    ids=["write", "stream", "file", "file-unix", "read-then-write"])
def test_writes_to_a_peer_that_reset(server, tmp_path, path, unix):
    """The client resets the connection mid-response or mid-body, with
    SIGPIPE at its default (deadly) disposition: the server lives, the
    app's write() raises OSError, no fd is left behind. sendfile (the
    file_wrapper) meets the reset only now and then over TCP, hence more
    rounds; over a Unix socket every time."""
    srv = server(RESET_APP, {"log_output": False},
                 address=str(tmp_path / "s.sock") if unix else None)
    baseline = quiet_fds(srv)
    rounds = 200 if path == "/file" and not unix else 20
    for _ in range(rounds):
        if path == "/read-then-write":
            _reset_mid_body(srv, path)
        else:
            _reset_mid_response(srv, path)
    still_serving(srv)
    assert srv.alive(), f"the server died: {srv.proc.returncode}"
    assert settle_fds(srv, baseline) <= baseline
    if path == "/write":
        wait_until(lambda: sum(r.startswith("write ") for r in srv.records())
                   == 20, 5, "write() to raise in each request")
    if path == "/read-then-write":
        wait_until(lambda: sum(r.startswith("read ") for r in srv.records())
                   == 20, 5, "the body reads to fail")


# ---- SIGTERM under load ------------------------------------------------------

SLEEP_APP = r'''
import time

def app(environ, start_response):
    record("start")
    time.sleep(1)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done " + environ["PATH_INFO"].encode()]
'''


def _sent(crowd):
    return not any(k.events & selectors.EVENT_WRITE
                   for k in crowd.sel.get_map().values())


def test_sigterm_with_200_requests_in_flight(server):
    """SIGTERM with 200 requests in flight, each sleeping 1 s: 100 running
    and 100 sent on connections still in the listener's backlog (the
    server was stopped while they came). All 200 get their 200 OK, then
    the process exits 0."""
    srv = server(SLEEP_APP, {"log_output": False, "graceful_timeout": 10})
    running = Crowd(srv.address, [get(f"/r{i}") for i in range(100)])
    end = time.monotonic() + 10
    while len(srv.records()) < 100:
        assert time.monotonic() < end, f"{len(srv.records())} started"
        running.step(0.01)
    srv.kill(signal.SIGSTOP)
    try:
        backlog = Crowd(srv.address, [get(f"/r{i}") for i in range(100, 200)])
        while not _sent(backlog):
            assert time.monotonic() < end, "the requests could not be sent"
            backlog.step(0.01)
        srv.kill(signal.SIGTERM)
    finally:
        srv.kill(signal.SIGCONT)
    done = running.run(timeout=10) + backlog.run(timeout=10)
    bad = [(i, d) for i, d in enumerate(done)
           if status_of(d[1]) != 200 or not d[1].endswith(b"done /r%d" % i)]
    assert not bad, f"{len(bad)} requests failed: {bad[:3]}"
    assert srv.wait(timeout=10) == 0
    assert "abandoned" not in srv.stderr


# ---- the app raising at each stage -------------------------------------------

RAISE_APP = r'''
class Boom(Exception):
    pass

class Items:
    """An iterable failing where its path says."""
    def __init__(self, stage):
        self.stage = stage
        self.i = 0
    def __iter__(self):
        if self.stage == "iter":
            raise Boom("in __iter__")
        return self
    def __next__(self):
        self.i += 1
        if self.stage == "first" or (self.stage == "middle" and self.i == 3):
            raise Boom("in item %d" % self.i)
        if self.i > 4:
            raise StopIteration
        return b"item%d;" % self.i
    def close(self):
        if self.stage == "close":
            raise Boom("in close")

def app(environ, start_response):
    stage = environ["PATH_INFO"][1:]
    if stage == "before-start":
        raise Boom("before start_response")
    if stage == "bad-status":
        start_response(200, [])
    if stage == "bad-headers":
        start_response("200 OK", {"X-A": "1"})
    if stage == "bad-header-value":
        start_response("200 OK", [("X-A", "a\r\nSet-Cookie: x=1")])
    if stage == "hop-by-hop":
        start_response("200 OK", [("Transfer-Encoding", "chunked")])
    if stage == "after-start":
        start_response("200 OK", [])
        raise Boom("after start_response")
    if stage == "after-write":
        write = start_response("200 OK", [])
        write(b"written;")
        raise Boom("after write()")
    if stage == "gen-after-head":
        def gen():
            yield b"head is out;"
            raise Boom("in the generator")
        start_response("200 OK", [("Content-Length", "100")])
        return gen()
    if stage == "ok":
        start_response("200 OK", [])
        return [b"alive"]
    start_response("200 OK", [])
    return Items(stage)
'''

# stage -> what the client sees: 500, 'cut' (the head went out, the body
# is cut short by a close) or 200 (close() failed after a whole body)
STAGES = {
    "before-start": 500, "bad-status": 500, "bad-headers": 500,
    "bad-header-value": 500, "hop-by-hop": 500, "after-start": 500,
    "iter": 500, "first": 500, "middle": "cut", "after-write": "cut",
    "gen-after-head": "cut", "close": 200,
}


@pytest.fixture(scope="module")
def raising(module_server):
    return module_server(RAISE_APP, {"log_output": False})


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_app_raising_at_each_stage(raising, stage):
    """500 while nothing was sent; once the head is out, a connection cut
    short (never a well-formed short response); a traceback in the log;
    the server keeps serving."""
    srv = raising
    want = STAGES[stage]
    with srv.raw() as c:
        c.send(get(f"/{stage}", close=False))
        if want == 200:  # whole: close() failed after the last chunk
            code, h, body, framing = c.response()
            assert (code, body) == (200, b"item1;item2;item3;item4;")
        elif want == "cut":
            _, code, h, _ = c.head()
            assert code == 200
            rest = c.read_to_eof()
            if h.get("transfer-encoding") == "chunked":
                assert not rest.endswith(b"0\r\n\r\n"), rest
            else:
                assert int(h["content-length"]) > len(rest), rest
        else:
            code, h, body, _ = c.response()
            assert code == want
            assert h["connection"].lower() == "close"
            assert c.closed()
    assert srv.wait_output(rf"(?s)error in the WSGI app while serving GET "
                           rf"/{stage}:\n.*?Traceback.*?(Boom|TypeError|"
                           rf"ValueError)", timeout=5)
    still_serving(srv, "/ok")


def test_app_raising_mid_body_of_an_http10_response(raising):
    """HTTP/1.0 with no length: the body ends at the close, so a body cut
    by an error ends with a reset, never with the FIN of a whole one."""
    srv = raising
    s = srv.connect()
    s.sendall(b"GET /middle HTTP/1.0\r\n\r\n")
    data, err = b"", None
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except ConnectionResetError as e:
        err = e
    s.close()
    assert data.startswith(b"HTTP/1.0 200")
    assert err is not None, f"a clean end after {data!r}"
    still_serving(srv, "/ok")
