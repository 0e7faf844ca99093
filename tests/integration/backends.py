"""tests/integration/backends.py - real servers for test_backends.py.

Each server is started by the tests from its Debian package's binary,
on 127.0.0.1 (a free port) or on a Unix socket in a private temporary
directory, and stopped by PID. Nothing here runs under the preload: these
are the *other side* of the connections the code under test makes.

  Postgres()        initdb + postgres as the `postgres` user when we are
                    root (initdb refuses root), Unix socket only
                    (listen_addresses=''), trust authentication
  Redis()           redis-server on 127.0.0.1:<free port>, no persistence
  Memcached()       memcached on 127.0.0.1:<free port> (-u nobody as root)
  SlowHTTP(tls=...) a threaded Python HTTP(S) server whose handler sleeps
                    ?delay= seconds (default 0.5); with tls, a self-signed
                    certificate for IP:127.0.0.1 made with the openssl CLI

Every class has .stop() (idempotent) and works as a context manager.
find_*() return None when the binary is missing, so the tests can skip
with a clear reason.

client(code, cfg, preload=...) runs a client program (under the preload,
or without it) with a JSON config in argv[1] and returns the JSON object
its last stdout line holds. CLIENT_PRELUDE gives such a program `CFG`,
`GREEN`, `spawn` (libgreen.spawn, or a sequential stand-in that runs the
function at once when libgreen is absent) and `emit(obj)`.
"""

import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from conftest import PYTHON, child_env
from netclient import free_port

START_TIMEOUT = 30.0   # seconds a server gets to become ready
STOP_TIMEOUT = 15.0    # seconds between a polite signal and SIGKILL


def is_root():
    return os.geteuid() == 0


def _stop_pid(proc, first=signal.SIGTERM, second=None, timeout=STOP_TIMEOUT):
    """Signals proc (by its PID) and waits; escalates to `second` (if any)
    and then SIGKILL when it overstays."""
    if proc is None or proc.poll() is not None:
        return
    for sig in [s for s in (first, second) if s is not None] + [signal.SIGKILL]:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=timeout)


class _Server:
    """Common lifetime: a Popen whose output goes to a log file."""

    proc = None
    tmp = None

    def _popen(self, argv, log_name, **kw):
        self.log = Path(self.tmp) / log_name
        with open(self.log, "wb") as log:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, **kw)

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except (AttributeError, OSError):
            return ""

    def _wait_ready(self, probe, what):
        end = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with status {self.proc.returncode}"
                                   f" before it was ready:\n{self.log_text()}")
            try:
                if probe():
                    return
            except OSError as e:
                last = e
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{what} not ready within {START_TIMEOUT} s"
                           f" (last error: {last}):\n{self.log_text()}")

    def stop(self):
        _stop_pid(self.proc)

    def cleanup(self):
        try:
            self.stop()
        finally:
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


# ---------------------------------------------------------------- PostgreSQL

def find_postgres():
    """The newest /usr/lib/postgresql/N/bin holding initdb and postgres."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = os.path.dirname(initdb)
        if os.access(os.path.join(bindir, "postgres"), os.X_OK):
            m = re.search(r"/postgresql/(\d+)", bindir)
            found.append((int(m.group(1)) if m else 0, bindir))
    return max(found)[1] if found else None


class Postgres(_Server):
    """A throw-away cluster. .sockdir is the socket directory (also the
    cluster's parent directory), .dsn a libpq connection string."""

    PORT = 5432  # names the socket file only: there is no TCP listener

    def __init__(self, max_connections=200):
        bindir = find_postgres()
        if bindir is None:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb")
        # short path: a Unix socket path must fit in 107 bytes
        self.tmp = tempfile.mkdtemp(prefix="lgpg-", dir="/tmp")
        self.sockdir = self.tmp
        data = os.path.join(self.tmp, "data")
        kw = {"cwd": self.tmp,
              "env": {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C",
                      "TZ": "UTC"}}
        user = pwd.getpwuid(os.geteuid()).pw_name
        if is_root():
            # initdb refuses to run as root: the cluster belongs to postgres
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            kw.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
            user = "postgres"
        try:
            init = subprocess.run(
                [os.path.join(bindir, "initdb"), "-D", data, "-U", user,
                 "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, timeout=120, **kw)
            if init.returncode != 0:
                raise RuntimeError("initdb failed:\n" + init.stdout.decode(errors="replace"))
            self.proc = self._popen(
                [os.path.join(bindir, "postgres"), "-D", data,
                 "-k", self.sockdir, "-p", str(self.PORT),
                 "-c", "listen_addresses=",
                 "-c", f"max_connections={max_connections}",
                 "-c", "shared_buffers=32MB",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off",
                 "-c", "logging_collector=off"],
                "postgres.log", **kw)
            sock = os.path.join(self.sockdir, f".s.PGSQL.{self.PORT}")
            isready = os.path.join(bindir, "pg_isready")

            def probe():
                if not os.path.exists(sock):
                    return False
                r = subprocess.run([isready, "-q", "-h", self.sockdir, "-p",
                                    str(self.PORT), "-U", user, "-d", "postgres",
                                    "-t", "2"], timeout=10, **{k: v for k, v in kw.items()
                                                              if k in ("env", "cwd")})
                return r.returncode == 0

            self._wait_ready(probe, "postgres")
        except BaseException:
            self.cleanup()
            raise
        self.user = user
        self.dsn = (f"host={self.sockdir} port={self.PORT} user={user} "
                    f"dbname=postgres connect_timeout=10")

    def stop(self):
        # SIGINT = fast shutdown (aborts sessions); SIGQUIT = immediate
        _stop_pid(self.proc, signal.SIGINT, signal.SIGQUIT)


# ---------------------------------------------------------------- Redis

def find_redis():
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)


def _probe_tcp(port, request, expect):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(request)
        data = b""
        while len(data) < len(expect):
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        return data.startswith(expect)


class _TCPServer(_Server):
    """A server on 127.0.0.1:<free port>; retries with another port if the
    chosen one was taken in between."""

    name = "?"

    def _start(self, argv_for_port, probe_request, probe_expect):
        self.tmp = tempfile.mkdtemp(prefix=f"lg{self.name}-", dir="/tmp")
        try:
            for attempt in range(3):
                self.port = free_port()
                self.proc = self._popen(argv_for_port(self.port), f"{self.name}.log",
                                        cwd=self.tmp)
                try:
                    self._wait_ready(lambda: _probe_tcp(self.port, probe_request,
                                                        probe_expect), self.name)
                    return
                except RuntimeError:
                    self.stop()
                    if attempt == 2:
                        raise
        except BaseException:
            self.cleanup()
            raise


class Redis(_TCPServer):
    name = "redis"

    def __init__(self):
        binary = find_redis()
        if binary is None:
            raise RuntimeError("redis-server not found")
        self._start(lambda port: [binary, "--bind", "127.0.0.1", "--port", str(port),
                                  "--save", "", "--appendonly", "no",
                                  "--daemonize", "no", "--dir", self.tmp,
                                  "--loglevel", "warning"],
                    b"PING\r\n", b"+PONG")


# ---------------------------------------------------------------- memcached

def find_memcached():
    return shutil.which("memcached") or (
        "/usr/bin/memcached" if os.access("/usr/bin/memcached", os.X_OK) else None)


class Memcached(_TCPServer):
    name = "memcached"

    def __init__(self):
        binary = find_memcached()
        if binary is None:
            raise RuntimeError("memcached not found")
        # as root, memcached insists on -u: drop to nobody (it only listens)
        user = ["-u", "nobody"] if is_root() else []
        self._start(lambda port: [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                                  "-m", "64", "-c", "1024", "-t", "2", *user],
                    b"version\r\n", b"VERSION")


# ---------------------------------------------------------------- slow HTTP(S)

SLOW_SERVER = r'''
import json, socket, ssl, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # socket timeout of each connection

    def setup(self):
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # in this thread, not in accept()

    def do_GET(self):
        u = urlsplit(self.path)
        delay = float(parse_qs(u.query).get("delay", ["0.5"])[0])
        time.sleep(delay)
        body = json.dumps({"path": u.path, "delay": delay}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients that time out leave broken pipes behind

srv = Server(("127.0.0.1", 0), Handler)
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True,
                                 do_handshake_on_connect=False)
print("READY", srv.server_address[1], flush=True)
srv.serve_forever()
'''


def find_openssl():
    return shutil.which("openssl")


class SlowHTTP(_Server):
    """.url is the base URL ('http://127.0.0.1:PORT' or https); with tls,
    .cafile is the self-signed certificate (SAN IP:127.0.0.1) to trust."""

    def __init__(self, tls=False):
        self.tmp = tempfile.mkdtemp(prefix="lghttp-", dir="/tmp")
        self.cafile = None
        try:
            args = []
            if tls:
                cert = os.path.join(self.tmp, "cert.pem")
                key = os.path.join(self.tmp, "key.pem")
                r = subprocess.run(
                    [find_openssl() or "openssl", "req", "-x509", "-newkey", "ec",
                     "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", key, "-out", cert, "-days", "2",
                     "-subj", "/CN=127.0.0.1",
                     "-addext", "subjectAltName=IP:127.0.0.1",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, timeout=60)
                if r.returncode != 0:
                    raise RuntimeError("openssl req failed:\n" + r.stdout.decode(errors="replace"))
                self.cafile = cert
                args = [cert, key]
            script = os.path.join(self.tmp, "slow_server.py")
            Path(script).write_text(SLOW_SERVER)
            # not under the preload: sys.executable with a clean environment
            self.proc = self._popen([sys.executable, script, *args], "http.log",
                                    cwd=self.tmp, env=child_env(preload=False))
            port = []

            def probe():
                m = re.search(r"^READY (\d+)$", self.log_text(), re.M)
                if m:
                    port.append(int(m.group(1)))
                return bool(m)

            self._wait_ready(probe, "slow HTTP server")
            self.port = port[0]
            self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        except BaseException:
            self.cleanup()
            raise


# ---------------------------------------------------------------- clients

CLIENT_PRELUDE = r'''
import json, sys, time
CFG = json.loads(sys.argv[1])
try:
    import libgreen
    spawn = libgreen.spawn
    GREEN = True
except ImportError:
    # without the preload: the same functions, one after another
    GREEN = False

    class _Ran:
        def __init__(self, fn, args, kw):
            try:
                self._res = (True, fn(*args, **kw))
            except BaseException as e:
                self._res = (False, e)

        def wait(self, timeout=None):
            ok, value = self._res
            if ok:
                return value
            raise value

    def spawn(fn, *args, **kw):
        return _Ran(fn, args, kw)


def emit(obj):
    obj["green"] = GREEN
    print(json.dumps(obj), flush=True)
'''


def client(code, cfg=None, preload=True, timeout=90, env=None):
    """Runs CLIENT_PRELUDE + code with PYTHON, LD_PRELOAD set or not;
    returns the JSON object of the last stdout line. If it overstays
    timeout, it is killed and subprocess.TimeoutExpired (with .output and
    .stderr) is raised."""
    src = CLIENT_PRELUDE + textwrap.dedent(code)
    tmp = tempfile.mkdtemp(prefix="lgcli-", dir="/tmp")
    try:
        proc = subprocess.Popen([PYTHON, "-c", src, json.dumps(cfg or {})],
                                env=child_env(preload=preload, extra=env), cwd=tmp,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(proc.args[:2], timeout, output=out,
                                            stderr=err) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    where = "under the preload" if preload else "without the preload"
    assert proc.returncode == 0, (f"client {where} exited {proc.returncode}\n"
                                  f"stdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}")
    lines = out.strip().splitlines()
    assert lines, f"client {where} printed nothing; stderr:\n{err[-5000:]}"
    res = json.loads(lines[-1])
    assert res["green"] is preload, f"client {where}: libgreen importable = {res['green']}"
    return res


_missing_cache = {}


def missing_modules(*modules):
    """The modules PYTHON cannot import (checked once each, no preload)."""
    out = []
    for m in modules:
        if m not in _missing_cache:
            r = subprocess.run([PYTHON, "-c", f"import {m}"], capture_output=True,
                               text=True, timeout=60, env=child_env(preload=False))
            _missing_cache[m] = r.returncode != 0
        if _missing_cache[m]:
            out.append(m)
    return out
