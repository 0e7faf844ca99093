"""tests/integration/proxies.py - nginx and Apache httpd for test_proxy.py.

Each proxy runs the configuration the users get, docs/nginx.conf or
docs/apache-libgreen.conf, with only its ports and paths replaced: every
replacement names a line of the docs file that must be there exactly
once, so a docs edit that drops or changes one makes the tests fail
loudly instead of testing something else.

  Nginx(tmp, backend)   nginx -g 'daemon off;' with the docs file as its
                        whole configuration
  Apache(tmp, backend)  apache2 -DFOREGROUND with a small server config
                        (ServerRoot, PidFile, Listen, LoadModule lines)
                        that Includes the docs file

backend is ("127.0.0.1", port) or the path of libgreen's Unix socket.
Each listens on 127.0.0.1:<free port>, keeps its pid file, logs and
temporary files in tmp, runs in the foreground as our child (no system
service), and is stopped by PID: SIGTERM to the master, then SIGKILL to
the master and to the workers it had. find_nginx()/find_apache() return
None when the binary is not installed, so the tests can skip saying why.

tmp must be reachable by the proxies' unprivileged workers (www-data when
we are root): the tests make it with tempfile.mkdtemp in /tmp, mode 0755,
and put libgreen's Unix socket there too, mode 0666.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from netclient import free_port

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
APACHE_MODULES = Path("/usr/lib/apache2/modules")
START_TIMEOUT = 15.0   # seconds a proxy gets to accept connections
STOP_TIMEOUT = 10.0    # seconds between SIGTERM and SIGKILL


def find_nginx():
    return shutil.which("nginx", path=SBIN_PATH)


def find_apache():
    return shutil.which("apache2", path=SBIN_PATH)


def substitute(text, replacements, source):
    """text with each (old, new) replaced; old must occur exactly once."""
    for old, new in replacements:
        n = text.count(old)
        if n != 1:
            raise AssertionError(
                f"{source}: expected the line {old!r} once, found it {n} "
                f"times; the docs file changed: update tests/integration/"
                f"proxies.py with it")
        text = text.replace(old, new)
    return text


def _children(pid):
    """PIDs of pid's children (the proxy's workers), read from /proc."""
    kids = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.update(int(p) for p in f.read().split())
    except OSError:
        pass
    return kids


class _PortTaken(Exception):
    pass


class Proxy:
    """One proxy: .name, .port (where clients connect), .proc (the
    master), start(), workers(), log_text(), stop()."""

    name = "proxy"

    def __init__(self, tmp, backend):
        self.tmp = Path(tmp)
        self.backend = backend
        self.port = free_port()
        self.proc = None
        self.log = self.tmp / f"{self.name}.out"
        self.error_log = self.tmp / f"{self.name}-error.log"
        self.pid_file = self.tmp / f"{self.name}.pid"

    def start(self):
        """Runs the proxy; returns self once it accepts connections. The
        port was free a moment ago: if another process took it since, a
        new one is tried."""
        for _ in range(3):
            try:
                return self._spawn(self.argv())
            except _PortTaken:
                self.port = free_port()
        raise RuntimeError(f"{self.name}: no free port after 3 tries:\n"
                           f"{self.log_text()}")

    def _spawn(self, argv):
        for stale in (self.error_log, self.pid_file):   # this run's only
            stale.unlink(missing_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=str(self.tmp))
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                if "Address already in use" in self.log_text():
                    raise _PortTaken()
                raise RuntimeError(f"{self.name} exited with status "
                                   f"{self.proc.returncode} at start:\n"
                                   f"{self.log_text()}")
            if self._ready():
                return self
            time.sleep(0.02)   # readiness probe, polled
        self.stop()
        raise RuntimeError(f"{self.name} not ready on port {self.port} "
                           f"within {START_TIMEOUT} s:\n{self.log_text()}")

    def _ready(self):
        """Its pid file names it (both write it once their listening
        sockets are bound, so a connect cannot reach someone else's) and
        the port accepts."""
        try:
            if int(self.pid_file.read_text()) != self.proc.pid:
                return False
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except (OSError, ValueError):
            return False

    def workers(self):
        """How many worker processes the proxy runs now."""
        return len(_children(self.proc.pid))

    def log_text(self):
        """The tail of its stdout/stderr and error log."""
        parts = []
        for p in (self.log, self.error_log):
            try:
                parts.append(p.read_text(errors="replace")[-3000:])
            except OSError:
                pass
        return "\n".join(parts)

    def stop(self):
        """SIGTERM to the master, by PID; SIGKILL to it and its workers if
        it overstays. Idempotent."""
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = _children(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()   # by PID; a no-op if it has just exited
            self.proc.wait(timeout=STOP_TIMEOUT)
        for pid in workers:   # normally gone with their master
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class Nginx(Proxy):
    name = "nginx"
    DOC = DOCS / "nginx.conf"

    def config(self):
        if isinstance(self.backend, tuple):
            server = "server %s:%d;" % self.backend
        else:
            server = f"server unix:{self.backend};"
        t = self.tmp
        return substitute(self.DOC.read_text(), [
            ("pid /run/nginx.pid;", f"pid {self.pid_file};"),
            ("error_log /var/log/nginx/error.log;",
             f"error_log {self.error_log};"),
            ("access_log /var/log/nginx/libgreen.access.log;",
             f"access_log {t}/nginx-access.log;"),
            ("client_body_temp_path /var/lib/nginx/body;",
             f"client_body_temp_path {t}/nginx-body;"),
            ("proxy_temp_path /var/lib/nginx/proxy;",
             f"proxy_temp_path {t}/nginx-proxy;"),
            ("server unix:/run/libgreen/libgreen.sock;", server),
            ("listen 80;", f"listen 127.0.0.1:{self.port};"),
        ], self.DOC)

    def argv(self):
        conf = self.tmp / "nginx.conf"
        conf.write_text(self.config())
        # -e: the log nginx writes before it has read the configuration
        # (Debian's is stderr already; other builds open /var/log/nginx).
        return [find_nginx(), "-p", str(self.tmp), "-c", str(conf),
                "-e", str(self.error_log), "-g", "daemon off;"]


class Apache(Proxy):
    name = "apache2"
    DOC = DOCS / "apache-libgreen.conf"
    # authz_core: with no authorization module loaded httpd answers every
    # request 500 ("couldn't check user"); the others are the site's.
    MODULES = ("mpm_event", "authz_core", "proxy", "proxy_http", "headers")

    def config(self):
        if isinstance(self.backend, tuple):
            backend = 'Define LIBGREEN_BACKEND "http://%s:%d"' % self.backend
        else:
            backend = f'Define LIBGREEN_BACKEND "unix:{self.backend}|http://localhost"'
        return substitute(self.DOC.read_text(), [
            ('Define LIBGREEN_BACKEND "unix:/run/libgreen/libgreen.sock|http://localhost"',
             backend),
            ("<VirtualHost *:80>", f"<VirtualHost *:{self.port}>"),
        ], self.DOC)

    def server_config(self, site):
        """What Debian's apache2.conf, ports.conf and mods-enabled/ would
        give, reduced to what the site needs, in tmp."""
        t = self.tmp
        lines = [f"ServerRoot {t}", f"DefaultRuntimeDir {t}",
                 f"PidFile {self.pid_file}", f"ErrorLog {self.error_log}",
                 "LogLevel warn", "ServerName localhost",
                 f"Listen 127.0.0.1:{self.port}"]
        for m in self.MODULES:
            lines.append(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so")
        if os.geteuid() == 0:   # httpd refuses to serve as root
            lines += ["User www-data", "Group www-data"]
        lines.append(f"Include {site}")
        return "\n".join(lines) + "\n"

    def argv(self):
        site = self.tmp / "apache-libgreen.conf"
        site.write_text(self.config())
        conf = self.tmp / "apache2.conf"
        conf.write_text(self.server_config(site))
        return [find_apache(), "-d", str(self.tmp), "-f", str(conf),
                "-DFOREGROUND"]
