"""tests/deploy/lbnginx.py - nginx in front of the hosts of the multi-host
test, running docs/deploy/nginx-upstream.conf.

The file runs as users get it, with only its paths and addresses
replaced (each replaced line must be there exactly once: see
tests/integration/proxies.py's substitute). nginx starts in the "lb"
namespace (the test's main thread is in it when it starts nginx),
listens on 127.0.0.1:8080 there, keeps its pid file, logs and temporary
files in the run's directory, runs in the foreground as our child, and is
stopped by PID (SIGTERM, then SIGKILL to the master and its workers).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from proxies import SBIN_PATH, find_nginx, substitute  # noqa: E402

from hosts import children  # noqa: E402

CONF = REPO / "docs" / "deploy" / "nginx-upstream.conf"
DOC_HOSTS = ["10.0.0.11:8000", "10.0.0.12:8000", "10.0.0.13:8000"]
PORT = 8080
START_TIMEOUT = 15.0

# One line of the log_format "upstreams" of the conf file.
LOG_RE = re.compile(r'"(?P<method>\S+) \S*[?&]id=(?P<rid>\d+)\S* HTTP/[\d.]+" '
                    r'(?P<status>\d+) \d+ rt=\S+ upstream=(?P<upstreams>.*?) '
                    r'upstream_status=(?P<ustatus>.*?) ut=')


class Nginx:
    def __init__(self, tmp, hosts):
        self.tmp = Path(tmp)
        self.hosts = hosts              # ["ADDR:PORT"] in the conf's order
        self.error_log = self.tmp / "nginx-error.log"
        self.access_log = self.tmp / "nginx-access.log"
        self.pid_file = self.tmp / "nginx.pid"
        self.proc = None
        self.workers = set()

    def config(self):
        t = self.tmp
        swaps = [("pid /run/nginx.pid;", f"pid {self.pid_file};"),
                 ("error_log /var/log/nginx/error.log;", f"error_log {self.error_log};"),
                 ("access_log /var/log/nginx/libgreen.access.log upstreams;",
                  f"access_log {self.access_log} upstreams;"),
                 ("client_body_temp_path /var/lib/nginx/body;",
                  f"client_body_temp_path {t}/nginx-body;"),
                 ("proxy_temp_path /var/lib/nginx/proxy;", f"proxy_temp_path {t}/nginx-proxy;"),
                 ("listen 80;", f"listen 127.0.0.1:{PORT};")]
        swaps += [(f"server {doc} ", f"server {ours} ")
                  for doc, ours in zip(DOC_HOSTS, self.hosts)]
        return substitute(CONF.read_text(), swaps, CONF)

    def start(self):
        conf = self.tmp / "nginx.conf"
        conf.write_text(self.config())
        argv = [find_nginx(), "-p", str(self.tmp),
                "-c", str(conf), "-e", str(self.error_log), "-g", "daemon off;"]
        with open(self.tmp / "nginx.out", "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"nginx did not start (status {self.proc.poll()}):\n"
                                   f"{self.log_text()}")
            time.sleep(0.02)   # readiness probe, polled
        self.workers = children(self.proc.pid)
        return self

    def _ready(self):
        try:
            if int(self.pid_file.read_text()) != self.proc.pid:
                return False
            socket.create_connection(("127.0.0.1", PORT), 1).close()
            return True
        except (OSError, ValueError):
            return False

    def log_text(self):
        parts = []
        for p in (self.tmp / "nginx.out", self.error_log):
            try:
                parts.append(p.read_text(errors="replace")[-3000:])
            except OSError:
                pass
        return "\n".join(parts)

    def entries(self, rids=(), timeout=5.0):
        """{request id: (status, [hosts tried], [their statuses])} from the
        access log, once it has a line for each of rids (nginx writes it
        just after the answer, which a client may have read already)."""
        end = time.monotonic() + timeout
        while True:
            found = {}
            for line in self.access_log.read_text(errors="replace").splitlines():
                m = LOG_RE.search(line)
                if m:
                    found[int(m.group("rid"))] = (int(m.group("status")),
                                                  m.group("upstreams").split(", "),
                                                  m.group("ustatus").split(", "))
            if all(r in found for r in rids) or time.monotonic() > end:
                return found
            time.sleep(0.05)

    def stop(self):
        """SIGTERM, then SIGKILL to the master and its workers, by PID."""
        if self.proc is None:
            return
        pids = self.workers | children(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None


def available():
    """None, or why nginx cannot be run."""
    if not find_nginx():
        return f"nginx is not installed (not on {SBIN_PATH}): run scripts/install-deps"
    return None
