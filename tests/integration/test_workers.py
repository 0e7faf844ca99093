"""The `libgreen` command's workers (server/workers.py): load shared
between them, a killed worker replaced, restarts slowed down for a
worker that keeps dying, SIGHUP reloads under load without one failed
request, SIGTTIN/SIGTTOU, the graceful stop on SIGTERM, the start-up
timeout, and (once the server has them) heartbeats and max_requests."""

import concurrent.futures as cf
import json
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from clitools import HELLO, TIME_LIMIT, libgreen, require_launcher, write_app
from conftest import PYTHON, child_env
from netclient import get

require_launcher()
pytestmark = pytest.mark.time_limit(TIME_LIMIT)

# Every request blocks its worker's hub for 0.1 s (a busy loop holds the
# GIL and never yields): the other worker must take the next connection.
BUSY = '''
import os, time

def app(environ, start_response):
    end = time.monotonic() + float(environ["QUERY_STRING"] or 0)
    while time.monotonic() < end:
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % os.getpid()]
'''

# Requests sleep (green: the worker serves others meanwhile); ?slow=S.
SLEEPY = '''
import os, time

VERSION = "v1"

def app(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%d %s" % (os.getpid(), VERSION)).encode()]
'''


def server_options():
    out = subprocess.run([PYTHON, "-c", "import json, libgreen; print(json.dumps("
                          "[o['name'] for o in libgreen.wsgi.options()]))"],
                         env=child_env(), capture_output=True, check=True)
    return set(json.loads(out.stdout))


def start(libgreen, tmp_path, source, *args, workers=1, name="app"):
    write_app(tmp_path, name, source)
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", "-w", str(workers),
                   "--no-log-output", *args, f"{name}:app")
    (addr,) = cmd.serving(workers=workers)
    return cmd, addr


def test_workers_share_the_load(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, BUSY, workers=2)
    with cf.ThreadPoolExecutor(6) as ex:
        pids = {int(body) for _, body in ex.map(lambda _: get(addr, "/?0.1"), range(12))}
    assert pids == set(cmd.worker_pids()) and len(pids) == 2


def test_killed_worker_is_replaced(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, HELLO, workers=2)
    old = cmd.worker_pids()
    victim = old[0]
    mark = cmd.mark()
    subprocess.run(["kill", "-9", str(victim)], check=True)
    new = cmd.wait_workers(lambda p: len(p) == 2 and victim not in p)
    cmd.wait_for(r"worker %d was killed by SIGKILL; restarting it" % victim, since=mark)
    (fresh,) = set(new) - set(old)
    cmd.wait_for(r"^\(%d\) wsgi starting up" % fresh)
    deadline = time.monotonic() + 10
    seen = set()
    while fresh not in seen:  # both workers answer, the new one included
        assert time.monotonic() < deadline
        with cf.ThreadPoolExecutor(4) as ex:
            seen |= {int(b) for _, b in ex.map(lambda _: get(addr), range(8))}
    assert seen <= set(new)


CRASHY = '''
import os, sys
if os.path.exists("crash"):
    sys.exit(1)   # this worker dies at once, every time
''' + HELLO


def test_worker_dying_at_once_backs_off(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, CRASHY)
    (tmp_path / "crash").touch()
    mark = cmd.mark()
    (victim,) = cmd.worker_pids()
    subprocess.run(["kill", "-9", str(victim)], check=True)
    delays = [float(m.group(1)) for m in cmd.wait_for(
        r"restarting it in ([\d.]+) s", count=3, timeout=15, since=mark)]
    assert delays[:3] == [0.5, 1, 2], delays
    assert cmd.proc.poll() is None, "the master gave up"
    (tmp_path / "crash").unlink()
    cmd.wait_workers(lambda p: len(p) == 1, timeout=15)
    deadline = time.monotonic() + 15
    while True:
        try:
            if get(addr, timeout=2)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, cmd.stderr
        time.sleep(0.1)


class Load:
    """Clients hammering the server until stopped: half on keep-alive
    connections, half on a new connection per request. A keep-alive
    connection the server closed while it was idle is retried once on a
    new one - what RFC 9112 9.3.1 lets a client do, and what urllib3,
    Go and nginx do - when not one byte of the response had come; those
    are counted apart. Anything else that is not a 200 is a failure."""

    def __init__(self, addr, clients=8, path="/?0.005"):
        self.addr, self.path = addr, path
        self.ok = 0
        self.retried = 0
        self.failures = []
        self.pids = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i % 2 == 0,),
                                         daemon=True) for i in range(clients)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)

    def _request(self, sock):
        sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise EOFError(len(data))
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                raise EOFError(len(data) + len(body))
            body += chunk
        return int(head.split()[1]), body, b"connection: close" in head.lower()

    def _client(self, keepalive):
        sock = None
        while not self.stop.is_set():
            reused = sock is not None
            try:
                if sock is None:
                    sock = socket.create_connection(self.addr, timeout=10)
                status, body, close = self._request(sock)
            except (OSError, EOFError) as e:
                nothing = isinstance(e, (ConnectionResetError, BrokenPipeError)) or \
                    (isinstance(e, EOFError) and e.args[0] == 0)
                if sock is not None:
                    sock.close()
                sock = None
                with self.lock:
                    if reused and nothing:
                        self.retried += 1
                    else:
                        self.failures.append(repr(e))
                continue
            with self.lock:
                if status == 200:
                    self.ok += 1
                    self.pids.add(int(body.split()[0]))
                else:
                    self.failures.append(f"status {status}")
            if close or not keepalive:
                sock.close()
                sock = None
        if sock is not None:
            sock.close()


def reload_thrice(cmd):
    """Three SIGHUPs half a second apart, each waited for until its two
    new workers serve and the old ones are gone: the new generations'
    pids, in order."""
    generations = []
    for n in range(3):
        time.sleep(0.5)
        mark = cmd.mark()
        before = set(cmd.worker_pids())
        cmd.send(signal.SIGHUP)
        cmd.wait_for(r"reloaded: worker\(s\) (\d+), (\d+) serve", since=mark)
        new = cmd.wait_workers(lambda p: len(p) == 2 and not set(p) & before)
        generations.append(set(new))
    return generations


@pytest.mark.time_limit(90)
def test_reload_under_load_fails_no_request(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, SLEEPY, workers=2)
    generations = [set(cmd.worker_pids())]
    t0 = time.monotonic()
    with Load(addr) as load:
        generations += reload_thrice(cmd)
        time.sleep(0.5)
        with load.lock:
            served_by_last = load.pids & generations[-1]
    elapsed = time.monotonic() - t0
    print(f"\nreload under load: {load.ok} requests in {elapsed:.1f} s, 3 SIGHUPs, "
          f"{len(load.failures)} failed, {load.retried} idle keep-alive "
          f"connections closed and retried")
    assert load.failures == []
    assert load.ok > 200
    assert served_by_last, "the last generation served nothing"
    assert all(len(g) == 2 for g in generations)
    assert len(set().union(*generations)) == 8  # 4 generations of 2
    assert cmd.stop() == 0


def test_reload_picks_up_new_code_and_survives_a_broken_one(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, SLEEPY)
    assert get(addr)[1].endswith(b"v1")
    (tmp_path / "app.py").write_text(SLEEPY.replace('"v1"', '"v2"'))
    mark = cmd.mark()
    cmd.send(signal.SIGHUP)
    cmd.wait_for(r"reloaded", since=mark)
    cmd.wait_workers(lambda p: len(p) == 1)
    assert get(addr)[1].endswith(b"v2")
    (tmp_path / "app.py").write_text("raise ImportError('half-deployed')\n")
    mark = cmd.mark()
    cmd.send(signal.SIGHUP)
    cmd.wait_for(r"reload failed: importing 'app' failed: ImportError: half-deployed "
                 r"\(at .*app\.py:1\); the old workers keep serving", since=mark)
    assert get(addr)[1].endswith(b"v2")
    assert cmd.proc.poll() is None


def test_workers_end_with_the_master(libgreen, tmp_path):
    """A master killed outright (kill -9) takes its workers with it
    (they get SIGTERM from the kernel and stop gracefully): none is left
    serving out of anyone's control."""
    cmd, addr = start(libgreen, tmp_path, HELLO, workers=2)
    workers = cmd.worker_pids()
    subprocess.run(["kill", "-9", str(cmd.pid)], check=True)
    cmd.wait(timeout=10)
    deadline = time.monotonic() + 10
    for pid in workers:
        while True:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ", 1)[1].startswith("Z"):
                        break
            except FileNotFoundError:
                break
            assert time.monotonic() < deadline, f"worker {pid} outlived its master"
            time.sleep(0.02)


def test_ttin_ttou(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, HELLO, workers=2)
    cmd.send(signal.SIGTTIN)
    three = cmd.wait_workers(lambda p: len(p) == 3)
    cmd.wait_for(r"SIGTTIN: 3 worker\(s\)")
    cmd.send(signal.SIGTTOU)
    two = cmd.wait_workers(lambda p: len(p) == 2)
    assert set(two) < set(three)
    cmd.send(signal.SIGTTOU)
    one = cmd.wait_workers(lambda p: len(p) == 1)
    cmd.send(signal.SIGTTOU)  # never fewer than one
    cmd.wait_for(r"SIGTTOU: 1 worker\(s\)", count=2)
    assert cmd.worker_pids() == one
    assert get(addr)[0] == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_graceful_stop(libgreen, tmp_path, sig):
    cmd, addr = start(libgreen, tmp_path, SLEEPY, "--graceful-timeout", "10", workers=2)
    workers = cmd.worker_pids()
    with cf.ThreadPoolExecutor(4) as ex:
        inflight = [ex.submit(get, addr, "/?1") for _ in range(4)]
        time.sleep(0.3)  # the requests are in the app (1 s each)
        t0 = time.monotonic()
        cmd.send(sig)
        cmd.wait_for(r"stopping: 2 worker\(s\) finish their requests")
        assert [f.result()[0] for f in inflight] == [200] * 4
    assert cmd.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            import os
            os.kill(pid, 0)
    assert "master exiting" in cmd.stderr
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(addr, timeout=2).close()


def test_graceful_stop_kills_after_the_grace_period(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, BUSY, "--graceful-timeout", "0.2")
    with cf.ThreadPoolExecutor(1) as ex:
        stuck = ex.submit(get, addr, "/?30")  # blocks its hub: SIGTERM cannot end it
        time.sleep(0.3)
        t0 = time.monotonic()
        cmd.send(signal.SIGTERM)
        assert cmd.wait(timeout=15) == 0
        assert 4 < time.monotonic() - t0 < 10  # graceful_timeout + the 5 s margin
        with pytest.raises(Exception):
            stuck.result()
    assert "1 worker(s) did not stop in time: killing them" in cmd.stderr


SLOW_IMPORT = '''
import time
time.sleep(30)
''' + HELLO


def test_worker_that_never_starts_hits_timeout(tmp_path):
    from clitools import run
    write_app(tmp_path, "slow", SLOW_IMPORT)
    t0 = time.monotonic()
    rc, _, err = run(["--allow-root", "-b", "127.0.0.1:0", "--timeout", "1", "slow:app"],
                     tmp_path, timeout=20)
    assert rc == 2
    assert time.monotonic() - t0 < 10
    assert re.fullmatch(r"libgreen: error: worker \d+ did not start within --timeout 1 s "
                        r"\(does loading the app take longer\? raise --timeout\)\n", err)


@pytest.mark.skipif("heartbeat" not in server_options(),
                    reason="libgreen.wsgi.server has no heartbeat option yet")
def test_hung_worker_is_killed_and_replaced(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, BUSY, "--timeout", "2", workers=2)
    old = cmd.worker_pids()
    with cf.ThreadPoolExecutor(1) as ex:
        hung = ex.submit(get, addr, "/?60")
        m = cmd.wait_for(r"worker (\d+) sent no heartbeat for 2 s: aborting it",
                         timeout=15)[0]
        victim = int(m.group(1))
        assert victim in old
        cmd.wait_workers(lambda p: len(p) == 2 and victim not in p)
        with pytest.raises(Exception):
            hung.result()
    assert get(addr)[0] == 200


@pytest.mark.skipif("max_requests" not in server_options(),
                    reason="libgreen.wsgi.server has no max_requests option yet")
def test_max_requests_replaces_the_worker(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, HELLO, "--max-requests", "3")
    (first,) = cmd.worker_pids()
    for _ in range(3):
        assert int(get(addr)[1]) == first
    cmd.wait_for(r"worker %d exited \(max_requests reached\)" % first)
    (second,) = cmd.wait_workers(lambda p: len(p) == 1 and first not in p)
    assert int(get(addr)[1]) == second


def test_master_passes_debug_signals_to_workers(libgreen, tmp_path):
    """The master runs no hub: libgreen's debugging signals sent to it
    must reach the workers, not end the master."""
    cmd, addr = start(libgreen, tmp_path, HELLO, workers=2)
    pids = cmd.worker_pids()
    mark = cmd.mark()
    cmd.send(signal.SIGRTMIN + 2)          # statistics, from every worker
    cmd.wait_for(r'"event":"libgreen.stats"', since=mark, count=2)
    cmd.send(signal.SIGRTMIN + 1)          # trace on, then off again
    cmd.send(signal.SIGRTMIN + 1)
    cmd.send(signal.SIGUSR2)               # a dump
    assert get(addr)[0] == 200
    assert cmd.worker_pids() == pids       # nobody died, master included
    assert cmd.proc.poll() is None
