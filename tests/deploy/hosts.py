"""tests/deploy/hosts.py - one libgreen host of the multi-host test.

A host is the repository's build/libgreen command run in the host's
network namespace, as an operator would run it on a machine of its own:

    ip netns exec NS build/libgreen --user nobody --bind ADDR:8000 \\
        --workers 2 --chdir DIR -e DEPLOY_HOST=hN ... app:app

It gets a session of its own (its process group is the master's pid,
which the workers share), so a hard kill reaches master and workers at
once. Its stderr goes to hN.log in the run's directory;
the test waits on that file and on HTTP probes, never on fixed sleeps.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from netclient import get  # noqa: E402

START_TIMEOUT = 20.0    # seconds for a host to answer after its start
STOP_TIMEOUT = 20.0     # seconds for a graceful stop (graceful_timeout is 10)
PORT = 8000


def children(pid):
    """PIDs of pid's children (a master's workers), from /proc."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def alive(pid):
    """Whether pid exists and is not a zombie (whose sockets are closed)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class Host:
    def __init__(self, name, netns, address, launcher, workdir, env, nginx_address):
        self.name, self.netns, self.address = name, netns, (address, PORT)
        self.nginx_address = nginx_address
        self.launcher, self.workdir, self.env = launcher, workdir, env
        self.log = os.path.join(workdir, f"{name}.log")
        self.proc = None
        self.started = []      # every master we started: cleanup kills each group

    def argv(self):
        return ["ip", "netns", "exec", self.netns, str(self.launcher),
                "--user", "nobody", "--bind", "%s:%d" % self.address,
                "--workers", "2", "--forwarded-allow-ips", self.nginx_address,
                "--graceful-timeout", "10", "--no-log-output",
                "--chdir", self.workdir,
                "-e", f"DEPLOY_HOST={self.name}",
                "-e", f"DEPLOY_RECORDS={os.path.join(self.workdir, 'records')}",
                "app:app"]

    def start(self):
        """Starts the master (ip execs it in place: one pid)
        and returns once the host answers."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, env=self.env,
                                         start_new_session=True)
        self.started.append(self.proc)
        self.wait_ready()
        return self

    def wait_ready(self):
        end = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status "
                                   f"{self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                status, body = get(self.address, "/health", timeout=2.0)
                if status == 200 and body.startswith(f"{self.name} ".encode()):
                    return
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"{self.name} did not answer on "
                                   f"{self.address} within {START_TIMEOUT} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)   # readiness probe, polled

    def log_text(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self):
        return self.log_text()[-3000:]

    def wait_log(self, pattern, since, timeout=STOP_TIMEOUT):
        """Waits until pattern (regex) shows in the log after offset since."""
        end = time.monotonic() + timeout
        while not re.search(pattern, self.log_text()[since:], re.M):
            if time.monotonic() > end:
                raise RuntimeError(f"{self.name}: no {pattern!r} within {timeout} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def workers(self):
        return children(self.proc.pid)

    def reload(self):
        """SIGHUP; returns once the new workers serve and the old ones
        have finished their requests and exited."""
        old, mark = self.workers(), len(self.log_text())
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log(r"libgreen: reloaded: worker\(s\)", mark)
        end = time.monotonic() + STOP_TIMEOUT
        while any(alive(p) for p in old):
            if time.monotonic() > end:
                raise RuntimeError(f"{self.name}: old workers {old} still run "
                                   f"{STOP_TIMEOUT} s after the reload")
            time.sleep(0.02)
        return old, self.workers()

    def stop(self):
        """Graceful stop (SIGTERM to the master); returns its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_TIMEOUT)

    def kill(self):
        """SIGKILL to the master and its workers at once (the process
        group); returns once none of them is alive."""
        group = {self.proc.pid} | self.workers()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        end = time.monotonic() + 10
        while any(alive(p) for p in group):
            if time.monotonic() > end:
                raise RuntimeError(f"{self.name}: {group} survived SIGKILL")
            time.sleep(0.001)
        return group

    def cleanup(self):
        """Kills every process group this host ever had (each is the pid
        of a master we started, shared by its workers)."""
        for proc in self.started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=10)
        self.started = []
