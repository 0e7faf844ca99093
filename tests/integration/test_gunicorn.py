"""libgreen.GunicornWorker under Debian's gunicorn, for real:

    LD_PRELOAD=build/libgreen.so python3 -m gunicorn \\
        -k libgreen.GunicornWorker -b 127.0.0.1:0 app:app

Concurrency in one worker, graceful and quick stops, --max-requests
restarts with no failed request, the arbiter's --timeout killing a
worker whose hub a request blocks, and the heartbeat keeping an idle
worker alive past --timeout. Every process is found by its PID in
gunicorn's own log lines and killed by PID at the end."""

import concurrent.futures as cf
import http.client
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import PYTHON, SO, Output, child_env


APP = r'''
import os, time

def app(environ, start_response):
    what, _, arg = environ["QUERY_STRING"].partition("=")
    if what == "sleep":
        time.sleep(float(arg))
    elif what == "busy":             # pure Python: the hub never runs
        end = time.monotonic() + float(arg)
        while time.monotonic() < end:
            pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%d %s %s" % (os.getpid(), environ["REMOTE_ADDR"],
                           environ["wsgi.url_scheme"])).encode()]
'''


def have_gunicorn():
    r = subprocess.run([PYTHON, "-c", "import gunicorn"], capture_output=True,
                       env=child_env(preload=False), timeout=30)
    return r.returncode == 0


pytestmark = [
    pytest.mark.skipif(not SO.is_file(), reason=f"{SO} not built"),
    pytest.mark.skipif(not have_gunicorn(),
                       reason=f"{PYTHON} has no gunicorn (apt install gunicorn)"),
    pytest.mark.time_limit(60),  # seconds per test, whatever it waits on
]


class Gunicorn(Output):
    """A gunicorn master and its workers. workers(): the PIDs that booted,
    in order; port: where it listens."""

    def __init__(self, tmp, args):
        (tmp / "gapp.py").write_text(textwrap.dedent(APP))
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-k", "libgreen.GunicornWorker",
             "-b", "127.0.0.1:0", "--workers", "1", *args, "gapp:app"],
            cwd=tmp, env=child_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        super().__init__(self.proc)
        m = self.wait_output(r"Listening at: http://127\.0\.0\.1:(\d+)")
        assert m, self.output
        self.port = int(m.group(1))
        assert self.wait_output(r"\(\d+\) wsgi starting up on"), self.output

    output = Output.stdout  # stderr goes there too

    def wait_output(self, pattern, timeout=15, count=1):
        """The count-th match of pattern in the output so far, waiting up
        to timeout seconds for it; None if it does not come."""
        rx = re.compile(pattern, re.M)
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                found = list(rx.finditer("".join(self._out)))
                if len(found) >= count:
                    return found[count - 1]
                if time.monotonic() >= end:
                    return None
                self._cond.wait(0.05)

    def workers(self):
        return [int(p) for p in
                re.findall(r"Booting worker with pid: (\d+)", self.output)]

    def get(self, query="", timeout=20):
        """(status, worker pid, REMOTE_ADDR, scheme) of one request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)
        try:
            conn.request("GET", "/?" + query)
            resp = conn.getresponse()
            pid, addr, scheme = resp.read().decode().split()
            return resp.status, int(pid), addr, scheme
        finally:
            conn.close()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.kill_workers()
        self._join_readers()
        return self.proc.returncode

    def kill_workers(self):
        for pid in self.workers():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # gone
            if b"gunicorn" in cmd:
                os.kill(pid, signal.SIGKILL)


def wait_dead(pid, timeout=10):
    """True once pid has exited (gone, or a zombie not reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            return True
        if state in "ZX":
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def gunicorn(tmp_path):
    started = []

    def start(*args):
        g = Gunicorn(tmp_path, args)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop(signal.SIGKILL)


def test_serves_requests_concurrently(gunicorn):
    g = gunicorn("--worker-connections", "200")
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(100) as ex:
        results = list(ex.map(lambda i: g.get("sleep=0.5"), range(100)))
    elapsed = time.monotonic() - t0
    assert [r[0] for r in results] == [200] * 100
    assert {r[1] for r in results} == set(g.workers())  # one worker did all
    assert elapsed < 5, f"100 requests of 0.5 s took {elapsed:.1f} s"


def test_graceful_shutdown_on_term(gunicorn):
    g = gunicorn("--graceful-timeout", "10")
    with cf.ThreadPoolExecutor(3) as ex:
        inflight = [ex.submit(g.get, "sleep=1.5") for _ in range(3)]
        time.sleep(0.5)  # the requests are in the worker by now
        t0 = time.monotonic()
        os.kill(g.pid, signal.SIGTERM)
        assert [f.result()[0] for f in inflight] == [200] * 3
    assert g.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    assert g.wait_output(r"wsgi stopping: waiting up to 10 s for 3 request")
    assert "WORKER TIMEOUT" not in g.output


def test_quit_stops_at_once(gunicorn):
    g = gunicorn("--graceful-timeout", "30")
    worker = g.workers()[0]
    with cf.ThreadPoolExecutor(1) as ex:
        slow = ex.submit(g.get, "sleep=20", timeout=30)
        time.sleep(0.5)
        t0 = time.monotonic()
        os.kill(worker, signal.SIGQUIT)
        # the worker is gone long before its request or the grace period
        assert g.wait_output(rf"Worker exiting \(pid: {worker}\)", timeout=5)
        assert time.monotonic() - t0 < 3
        with pytest.raises(OSError):
            slow.result()
    # and the arbiter replaced it
    assert g.wait_output(r"Booting worker with pid", count=2)
    assert g.wait_output(r"wsgi starting up", count=2)
    assert g.get()[0] == 200


def test_max_requests_restarts_the_worker_without_failures(gunicorn):
    g = gunicorn("--max-requests", "5")
    pids = []
    for i in range(22):
        status, pid, _, _ = g.get()
        assert status == 200, f"request {i} failed"
        pids.append(pid)
    changes = [p for a, p in zip(pids, pids[1:]) if a != p]
    assert len(set(pids)) >= 4 and len(changes) >= 3, pids
    assert all(pids.count(p) == 5 for p in pids[:20]), pids
    assert "wsgi stopping after 5 requests (max_requests)" in g.output


def test_max_requests_under_concurrent_load(gunicorn):
    g = gunicorn("--max-requests", "20", "--max-requests-jitter", "10")

    def client(n):
        return [g.get("sleep=0.01")[:2] for _ in range(n)]

    with cf.ThreadPoolExecutor(4) as ex:
        results = [r for rs in ex.map(client, [25] * 4) for r in rs]
    assert all(status == 200 for status, _ in results)
    assert len({pid for _, pid in results}) >= 2


def test_timeout_kills_a_worker_whose_hub_is_blocked(gunicorn):
    g = gunicorn("--timeout", "2")
    first = g.workers()[0]
    assert g.get()[1] == first
    t0 = time.monotonic()
    with pytest.raises((OSError, http.client.HTTPException)):
        g.get("busy=30", timeout=25)   # the arbiter ends it, not the loop
    assert time.monotonic() - t0 < 15
    assert g.wait_output(rf"WORKER TIMEOUT \(pid:{first}\)")
    assert wait_dead(first), "the blocked worker is still running"
    assert g.wait_output(r"wsgi starting up", count=2)
    status, pid, _, _ = g.get()
    assert status == 200 and pid != first and pid in g.workers()


def test_heartbeat_keeps_an_idle_worker_alive(gunicorn):
    g = gunicorn("--timeout", "2")
    worker = g.workers()[0]
    time.sleep(5)                        # idle for two and a half timeouts
    assert g.get()[1] == worker
    assert "WORKER TIMEOUT" not in g.output
    assert g.workers() == [worker]


def test_reload_restarts_the_worker(gunicorn, tmp_path):
    """--reload: gunicorn's thread marks the worker dead; the heartbeat
    turns that into a graceful stop and the arbiter boots a new one."""
    g = gunicorn("--reload")
    first = g.workers()[0]
    time.sleep(1.5)  # the reloader has taken its first look
    app = tmp_path / "gapp.py"
    st = app.stat()
    os.utime(app, (st.st_atime + 10, st.st_mtime + 10))
    assert g.wait_output(r"Worker reloading: .*gapp\.py modified")
    assert g.wait_output(r"wsgi starting up", count=2)
    status, pid, _, _ = g.get()
    assert status == 200 and pid != first
    assert wait_dead(first)


def test_usr1_and_settings(gunicorn, tmp_path):
    """USR1 (reopen logs) leaves the worker serving; --access-logfile and
    --forwarded-allow-ips reach the server."""
    log = tmp_path / "access.log"
    g = gunicorn("--access-logfile", str(log), "--forwarded-allow-ips",
                 "10.0.0.0/8")
    worker = g.workers()[0]
    os.kill(worker, signal.SIGUSR1)
    assert g.get("u=1")[:2] == (200, worker)
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
    conn.request("GET", "/", headers={"X-Forwarded-For": "198.51.100.7",
                                      "X-Forwarded-Proto": "https"})
    # 127.0.0.1 is not in the list: the headers change nothing
    assert conn.getresponse().read().decode().split()[1:] == ["127.0.0.1",
                                                              "http"]
    conn.close()
    deadline = time.monotonic() + 5
    while "/?u=1" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "no access-log line"
        time.sleep(0.05)
    line = [x for x in log.read_text().splitlines() if "/?u=1" in x][0]
    # gunicorn's default format: common log format, referer, user agent
    assert re.fullmatch(r'127\.0\.0\.1 - - \[.*\] "GET /\?u=1 HTTP/1\.1" 200 '
                        r'\d+ "-" "-"', line), line


def test_found_lazily_by_gunicorns_loader(tmp_path):
    """`import libgreen` does not import gunicorn; gunicorn's own loader
    finds the class by its dotted name."""
    r = subprocess.run([PYTHON, "-c", textwrap.dedent('''
        import sys, libgreen
        print("gunicorn" in sys.modules)
        from gunicorn.util import load_class
        from gunicorn.workers.base import Worker
        cls = load_class("libgreen.GunicornWorker")
        print(cls is libgreen.GunicornWorker, issubclass(cls, Worker),
              cls.__module__)
        ''')], env=child_env(), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["False", "True", "True",
                                         "libgreen.gunicorn"]


def test_unsupported_access_log_atom_prints_dash(gunicorn):
    """As gunicorn prints '-' for an atom it has no value for, so does the
    worker for one libgreen does not write (response headers), with a
    warning instead of a worker that cannot boot."""
    g = gunicorn("--access-logfile", "-", "--access-logformat",
                 "%(h)s %({X-Resp}o)s %(s)s %({X-Req}i)s")
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
    conn.request("GET", "/", headers={"X-Req": "r1"})
    assert conn.getresponse().status == 200
    conn.close()
    assert g.wait_output(r"^127\.0\.0\.1 - 200 r1$")
    assert "the access log atom %({X-Resp}o)s is not supported" in g.output
