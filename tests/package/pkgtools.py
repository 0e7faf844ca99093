"""Helpers of the package tests (test_deb.py, test_wheel.py): an app that
lives outside this repository, a `libgreen` command run as a user runs
it, and an HTTP GET over TCP or a Unix socket.

The command's readiness probe is its master's "master: N worker(s) serve"
line; every process it started is killed by PID at the end (the master,
and each worker that printed its start-up line).
"""

import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import netclient  # noqa: E402
from netclient import free_port  # noqa: E402,F401 (for the tests)

START_TIMEOUT = 30.0
SERVING_RE = re.compile(r"^\((\d+)\) libgreen: master: (\d+) worker\(s\) serve", re.M)
WORKER_RE = re.compile(r"^\((\d+)\) wsgi starting up on ", re.M)

# The app: a module of a package installed (or placed) where the test
# says, never in this repository. It reports where it runs from, which
# user runs it, and sleeps when asked, so a test can see the requests of
# one worker overlap (the preload works, not only the server).
APP_SOURCE = '''\
"""greenshop.wsgi - a tiny WSGI app for libgreen's package tests."""
import json
import os
import pwd
import sys
import time


def application(environ, start_response):
    seconds = float(environ.get("QUERY_STRING") or 0)
    if seconds:
        time.sleep(seconds)
    body = json.dumps({
        "prefix": sys.prefix,
        "file": __file__,
        "python": "%d.%d" % sys.version_info[:2],
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "pid": os.getpid(),
        "preload": os.environ.get("LD_PRELOAD", ""),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def write_app_project(directory):
    """A pip-installable project `greenshop` in directory; returns it."""
    pkg = directory / "greenshop"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "wsgi.py").write_text(APP_SOURCE)
    (directory / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='greenshop', version='1.0', packages=['greenshop'])\n")
    return directory


# One GET over TCP or a Unix socket: (status, body). A package's first
# requests may take a while (a fresh interpreter, nobody's cold caches).
get = functools.partial(netclient.get, timeout=20.0)


def concurrent_gets(address, n, path):
    """n GETs at once, each on its own connection: (seconds, [(status, body)])."""
    results = [None] * n

    def one(i):
        results[i] = get(address, path)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return time.monotonic() - start, results


class Server:
    """A process that serves (the libgreen command, or what starts it),
    its stderr collected as it comes."""

    def __init__(self, argv, env, cwd=None, preexec_fn=None, pass_fds=()):
        self.argv = argv
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec_fn, pass_fds=pass_fds)
        self.pid = self.proc.pid
        self._lines = []
        self._eof = False
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in iter(self.proc.stdout.readline, b""):
            with self._cond:
                self._lines.append(line.decode("utf-8", "replace"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def output(self):
        with self._cond:
            return "".join(self._lines)

    def wait_for(self, regex, timeout=START_TIMEOUT):
        """The match of regex in the output, once it is there."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = regex.search("".join(self._lines))
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(f"{self.argv[0]}: no {regex.pattern!r} "
                                         f"(exit status {self.proc.poll()}):\n"
                                         + "".join(self._lines))
                self._cond.wait(min(left, 0.5))

    def serving(self):
        return self.wait_for(SERVING_RE)

    def stop(self, timeout=30.0):
        """SIGTERM to the master (a graceful stop); its exit status. Then
        every worker PID seen is killed, in case one outlived it."""
        status = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            status = self.proc.returncode
        for pid in {int(p) for p in WORKER_RE.findall(self.output)}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return status
