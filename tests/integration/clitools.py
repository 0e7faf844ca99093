"""Running the `libgreen` command in tests (test_cli.py, test_workers.py).

`Command` starts build/libgreen (the C launcher) as a user would, with a
clean environment, collects its stderr as it comes, and knows the PIDs
of the master (the launcher execs Python in place, so it is the Popen
PID) and of every worker that printed its start-up line. `stop()` and
the `libgreen` fixture's teardown end them all, by PID.

Readiness probes only: the master's "master: N worker(s) serve" line
(printed once the first workers serve) and the workers' "(PID) wsgi
starting up on URL" lines; no fixed sleeps.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PRELOAD_FIRST, PYTHON, SO, Output, child_env, preload_value

LAUNCHER = SO.parent / "libgreen"
STARTUP_RE = re.compile(
    r"^\((\d+)\) wsgi starting up on (http://(?:\[([^\]]+)\]|([\d.]+)):(\d+)|unix:(\S+))$",
    re.M)
SERVING_RE = r"^\((\d+)\) libgreen: master: (\d+) worker\(s\) serve"
START_TIMEOUT = 20.0
# Every test of test_cli.py and test_workers*.py ends within this, or fails
# (conftest's _time_limit, through each module's pytestmark).
TIME_LIMIT = 60.0

HELLO = '''
import os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % os.getpid()]
'''


def command_env(extra=None):
    """The environment of a command under test: no preload (the launcher
    sets it), LIBGREEN_SO naming the object under test."""
    env = child_env(preload=False)
    env["LIBGREEN_SO"] = str(SO)
    if PRELOAD_FIRST:  # the launcher keeps it first (server/launcher.c)
        env["LD_PRELOAD"] = preload_value()
    if PYTHON != "/usr/bin/python3":
        env["LIBGREEN_PYTHON"] = PYTHON
    env.update(extra or {})
    return env


class Command(Output):
    """One run of the libgreen command."""

    def __init__(self, args, cwd, env=None, launcher=LAUNCHER):
        self.argv = [str(launcher), *args]
        self.proc = subprocess.Popen(
            self.argv, cwd=str(cwd), env=command_env(env),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self._seen_pids = set()
        super().__init__(self.proc)

    def _line(self, text):
        for m in STARTUP_RE.finditer(text):
            self._seen_pids.add(int(m.group(1)))

    def wait_for(self, pattern, timeout=START_TIMEOUT, count=1, since=0):
        """Waits until pattern (regex) matched count times on stderr (from
        character offset since); returns the list of matches or fails."""
        rx = re.compile(pattern, re.M)
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                found = list(rx.finditer("".join(self._err)[since:]))
                if len(found) >= count:
                    return found
                if time.monotonic() >= end or (self.proc.poll() is not None
                                               and not any(t.is_alive() for t in self._readers)):
                    pytest.fail(f"no {count} x {pattern!r} within {timeout} s; "
                                f"exit status {self.proc.poll()}; stderr:\n{''.join(self._err)}")
                self._cond.wait(0.05)

    def mark(self):
        """An offset into stderr: wait_for(..., since=mark) sees only what
        comes after."""
        with self._cond:
            return len("".join(self._err))

    def serving(self, workers=1):
        """Waits for the master's 'serve' line; returns the addresses the
        workers listen on, as their start-up lines give them."""
        self.wait_for(SERVING_RE)
        lines = self.wait_for(STARTUP_RE.pattern, count=workers)
        addrs = []
        for m in lines:
            addr = m.group(6) or (m.group(3) or m.group(4), int(m.group(5)))
            if addr not in addrs:
                addrs.append(addr)
        return addrs

    def worker_pids(self):
        """PIDs of the master's live children."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return sorted(int(p) for p in f.read().split())
        except OSError:
            return []

    def wait_workers(self, pred, timeout=START_TIMEOUT):
        """Waits until pred(worker_pids()) is true; returns the PIDs."""
        end = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if pred(pids):
                return pids
            if time.monotonic() > end:
                pytest.fail(f"workers {pids} never matched; stderr:\n{self.stderr}")
            time.sleep(0.02)

    def wait(self, timeout=20.0):
        rc = self.proc.wait(timeout=timeout)
        self._join_readers()
        return rc

    def send(self, sig):
        os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Signal, wait, then SIGKILL the master and every worker left."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
                self.proc.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill_all()
        return self.proc.returncode

    def kill_all(self):
        pids = set(self.worker_pids()) | self._seen_pids
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._join_readers()


def run(args, cwd, env=None, timeout=30, launcher=LAUNCHER):
    """Runs the command to its end: (exit status, stdout, stderr)."""
    r = subprocess.run([str(launcher), *args], cwd=str(cwd), env=command_env(env),
                       stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def write_app(directory, name, source):
    path = Path(directory) / f"{name}.py"
    path.write_text(source)
    return path


@pytest.fixture
def libgreen(tmp_path):
    """libgreen(*args, cwd=tmp_path, env=None) -> Command; all stopped and
    killed by PID at teardown."""
    started = []

    def start(*args, cwd=None, env=None, launcher=LAUNCHER):
        cmd = Command(args, cwd or tmp_path, env, launcher)
        started.append(cmd)
        return cmd

    yield start
    for cmd in started:
        cmd.stop(timeout=10)


def require_launcher():
    if not LAUNCHER.is_file():
        pytest.skip(f"{LAUNCHER} not found: run `make` first", allow_module_level=True)
