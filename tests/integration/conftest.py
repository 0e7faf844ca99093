"""Shared fixtures for the server integration tests (test_server_*.py).

Each test describes a WSGI app as Python source; the `server` fixture
writes it to a module in a temporary directory and runs it under the
preload, exactly as a user would:

    LD_PRELOAD=<libgreen.so> python3 app.py

where app.py ends with

    libgreen.wsgi.server(libgreen.listen(('127.0.0.1', 0)), app, **opts)
    print('returned', flush=True)

The port comes from the server's start-up line on stderr,
"(PID) wsgi starting up on http://127.0.0.1:PORT" - that line is the
readiness probe, there is no fixed sleep anywhere. Teardown sends SIGTERM
to the PID, waits, and falls back to SIGKILL; stdout and stderr are
collected continuously (so a chatty server never blocks on a full pipe)
and kept for assertions.

Environment knobs:
  LIBGREEN_SO      the preloaded object (default <repo>/build/libgreen.so)
  LIBGREEN_PYTHON  the interpreter (default /usr/bin/python3), e.g. a
                   pyenv 3.12 or 3.13 build; LD_LIBRARY_PATH is never
                   passed on (pyenv builds must find their own libpython)
  LIBGREEN_PRELOAD_FIRST  preloaded before it, e.g. for build/asan:
                   LIBGREEN_SO=build/asan/libgreen.so
                   LIBGREEN_PRELOAD_FIRST=$(gcc -print-file-name=libasan.so)
                   ASAN_OPTIONS=detect_leaks=0
                   (scripts/asan-pytest sets all of it; every test that
                   preloads an object itself uses preload_value())
  LIBGREEN_SANITIZER_REPORTS  a directory the sanitizers write their
                   reports to (their log_path): a test after which a new
                   report is there fails, naming it

Every app module gets a prelude with `STATE` (a private directory) and
`record(*parts)`, which appends one line to STATE/calls; tests read the
lines back with `srv.records()` to prove what the app saw, or that it
was never called at all.

Only 127.0.0.1 (and Unix sockets under the test's tmp dir) are used.
"""

import os
import re
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SO = Path(os.environ.get("LIBGREEN_SO") or REPO / "build" / "libgreen.so").resolve()
PYTHON = os.environ.get("LIBGREEN_PYTHON") or "/usr/bin/python3"
# Loaded before libgreen.so: the ASan runtime for a MODE=asan build.
PRELOAD_FIRST = os.environ.get("LIBGREEN_PRELOAD_FIRST", "")
UNDER_ASAN = "libasan" in PRELOAD_FIRST

STARTUP_RE = re.compile(
    r"^\((\d+)\) wsgi starting up on (http://127\.0\.0\.1:(\d+)|unix:(\S+))$",
    re.M)
START_TIMEOUT = 15.0   # seconds for the start-up line to appear
STOP_TIMEOUT = 10.0    # seconds SIGTERM gets before SIGKILL
IO_TIMEOUT = 10.0      # default socket timeout in tests


# The tests that cannot hold under ASan (scripts/asan-pytest), by node id
# prefix, with the reason. Keep it short: a test that fails under ASan
# for any other reason has found something.
ASAN_SKIPS = {
    "test_transparency.py::test_curl_":
        "curl hangs in setlocale() at start with the ASan runtime "
        "preloaded, with or without libgreen",
    "test_transparency.py::test_dd_between_pipes":
        "dd calls aligned_alloc(4096, 1000), which glibc allows and ASan "
        "reports as dd's own error",
    "test_cli.py::test_master_stays_small":
        "it measures RSS, which ASan's shadow memory and quarantine inflate",
    "test_backends.py::test_redis_blpop_with_timeouts":
        "timing bounds (ticks within 0.15 s) that ASan's slowdown breaks",
    "test_backends.py::test_memcached_concurrent_set_get":
        "timing bounds (ticks within 0.15 s) that ASan's slowdown breaks",
    "test_backends.py::test_outbound_http_timeouts_are_per_green_thread":
        "timing bounds (a timeout within 0.45 s) that ASan's slowdown breaks",
    "test_backends.py::test_outbound_https_overlaps":
        "timing bounds (TLS in Python) that ASan's slowdown breaks",
}


def pytest_collection_modifyitems(config, items):
    """Skip the server tests when the object was not built, and under
    ASan the few tests of ASAN_SKIPS."""
    if UNDER_ASAN:
        for item in items:
            node = item.nodeid.rpartition("/")[2]
            for prefix, why in ASAN_SKIPS.items():
                if node.startswith(prefix):
                    item.add_marker(pytest.mark.skip(reason=f"under ASan: {why}"))
    if SO.is_file():
        return
    skip = pytest.mark.skip(
        reason=f"{SO} not found: run `make` (or set LIBGREEN_SO) first")
    for item in items:
        if item.fspath.basename.startswith("test_server_"):
            item.add_marker(skip)


def preload_value(so=None):
    """The LD_PRELOAD value that loads so (default: the object under
    test), after LIBGREEN_PRELOAD_FIRST if set."""
    return " ".join(filter(None, [PRELOAD_FIRST, str(so or SO)]))


def child_env(preload=True, extra=None):
    """os.environ without anything that preloads, tunes or redirects
    libgreen or Python, and without LD_LIBRARY_PATH (a pyenv interpreter
    must load its own libpython, not one found through the caller's
    path). With preload, LD_PRELOAD is set to the object under test."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LD_", "LIBGREEN_", "PYTHON"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                 "no_proxy")}
    env["LC_ALL"] = "C.UTF-8"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if preload:
        env["LD_PRELOAD"] = preload_value()
    if extra:
        env.update(extra)
    return env


PRELUDE = '''\
import os as _lg_os
import sys as _lg_sys
import libgreen

STATE = {state!r}


def record(*parts):
    """One line in STATE/calls: what the app saw (regular file, so it is
    never a green wait)."""
    with open(_lg_os.path.join(STATE, "calls"), "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\\n")

'''

EPILOGUE = '''

if __name__ == "__main__":
    _lg_sock = libgreen.listen({address!r})
    libgreen.wsgi.server(_lg_sock, app, **{opts!r})
    print("returned", flush=True)
'''


class Output:
    """A child's stderr and stdout (those of proc's that are pipes), read
    line by line as they come by threads of their own, so a chatty child
    never blocks on a full pipe; _cond is notified at every line. A
    subclass's _line(text) sees each line as it arrives."""

    def __init__(self, proc):
        self._err = []
        self._out = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(pipe, sink), daemon=True)
            for pipe, sink in ((proc.stderr, self._err), (proc.stdout, self._out))
            if pipe is not None]
        for t in self._readers:
            t.start()

    def _pump(self, pipe, sink):
        for line in iter(pipe.readline, b""):
            text = line.decode("utf-8", "replace")
            with self._cond:
                sink.append(text)
                self._line(text)
                self._cond.notify_all()
        pipe.close()

    def _line(self, text):
        pass

    def _join_readers(self):
        for t in self._readers:
            t.join(timeout=2)

    @property
    def stderr(self):
        with self._cond:
            return "".join(self._err)

    @property
    def stdout(self):
        with self._cond:
            return "".join(self._out)


class Server(Output):
    """One server process. Attributes: proc, pid, port (None for Unix
    sockets), address (what to connect to), state (its STATE dir)."""

    def __init__(self, proc, state, address):
        self.proc = proc
        self.pid = proc.pid
        self.state = Path(state)
        self.address = address
        self.port = address[1] if isinstance(address, tuple) else None
        super().__init__(proc)

    # ---- output ------------------------------------------------------
    def wait_output(self, pattern, timeout=5.0, stream="stderr"):
        """Waits until `pattern` (regex) appears on stderr (or stdout);
        returns the match or None after timeout."""
        rx = re.compile(pattern, re.M)
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                text = "".join(self._err if stream == "stderr" else self._out)
                m = rx.search(text)
                if m or time.monotonic() >= end:
                    return m
                self._cond.wait(min(0.05, max(0.0, end - time.monotonic())))

    def clear_output(self):
        """Forgets what stderr and stdout held so far (later assertions
        then see only what came after)."""
        with self._cond:
            self._err.clear()
            self._out.clear()

    def records(self):
        """Lines the app wrote with record()."""
        try:
            return (self.state / "calls").read_text().splitlines()
        except FileNotFoundError:
            return []

    # ---- clients -----------------------------------------------------
    def connect(self, timeout=IO_TIMEOUT):
        """A connected raw socket."""
        if isinstance(self.address, tuple):
            s = socket.create_connection(self.address, timeout=timeout)
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.address)
        return s

    def raw(self, timeout=IO_TIMEOUT):
        return RawConn(self.connect(timeout))

    def http(self, timeout=IO_TIMEOUT):
        import http.client
        return http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)

    def request(self, method="GET", path="/", body=None, headers=None,
                timeout=IO_TIMEOUT):
        """One request on a fresh connection: (status, headers, body)."""
        conn = self.http(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    # ---- lifetime ----------------------------------------------------
    def alive(self):
        return self.proc.poll() is None

    def kill(self, sig):
        """Sends sig to the server's PID."""
        os.kill(self.pid, sig)

    def wait(self, timeout=STOP_TIMEOUT):
        """Waits for exit; returns the exit status (raises TimeoutExpired)."""
        rc = self.proc.wait(timeout=timeout)
        self._join_readers()
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Signal, wait, SIGKILL if it overstays. Returns the exit status."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=timeout)
        self._join_readers()
        return self.proc.returncode


class RawConn:
    """A raw socket with an HTTP/1.x response reader that keeps unread
    bytes (pipelined responses stay separate)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data
        return data

    def read_until(self, marker):
        while marker not in self.buf:
            self._more()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        """Everything until the peer closes (ConnectionResetError counts
        as a close too)."""
        try:
            while True:
                self._more()
        except (EOFError, ConnectionResetError):
            pass
        out, self.buf = self.buf, b""
        return out

    def head(self):
        """(status line, status code, headers dict lower-case -> value,
        header list) of the next response head."""
        raw = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = raw.split("\r\n")[:-2]
        status = lines[0]
        hdrs = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            hdrs.append((name.strip(), value.strip()))
        return status, int(status.split()[1]), {k.lower(): v for k, v in hdrs}, hdrs

    def response(self, head_only=False):
        """The next response: (code, headers dict, body bytes, framing)
        where framing is 'length', 'chunked', 'close' or 'none'. With
        head_only (a HEAD request), no body is read."""
        status, code, h, _ = self.head()
        if head_only or code in (204, 304) or 100 <= code < 200:
            return code, h, b"", "none"
        if h.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                line = self.read_until(b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.read_until(b"\r\n")  # no trailers from us
                    return code, h, body, "chunked"
                body += self.read_exact(size)
                assert self.read_exact(2) == b"\r\n", "chunk not CRLF-ended"
        if "content-length" in h:
            return code, h, self.read_exact(int(h["content-length"])), "length"
        return code, h, self.read_to_eof(), "close"

    def closed(self, timeout=5.0):
        """True if the server closes the connection (EOF or reset) within
        timeout, with no further bytes; False if bytes arrive or it stays
        open."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return not self.buf
        if data:
            self.buf += data
            return False
        return not self.buf


def _start(tmp_dir, app_source, opts, *, address=None, python_args=(),
           env=None, name="app", expect_start=True):
    tmp_dir = Path(tmp_dir)
    state = tmp_dir / f"{name}-state"
    state.mkdir(parents=True, exist_ok=True)
    if address is None:
        address = ("127.0.0.1", 0)
    src = (PRELUDE.format(state=str(state)) + textwrap.dedent(app_source)
           + EPILOGUE.format(address=address, opts=dict(opts or {})))
    path = tmp_dir / f"{name}.py"
    path.write_text(src)
    proc = subprocess.Popen([PYTHON, *python_args, str(path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env(extra=env),
                            cwd=str(tmp_dir))
    srv = Server(proc, state, None)
    if not expect_start:
        return srv
    m = srv.wait_output(STARTUP_RE.pattern, timeout=START_TIMEOUT)
    if not m:
        srv.stop(signal.SIGKILL)
        pytest.fail(f"the server did not start within {START_TIMEOUT} s "
                    f"(exit status {proc.returncode}); stderr:\n{srv.stderr}")
    assert int(m.group(1)) == proc.pid, "start-up line names another PID"
    if m.group(3):
        srv.address = ("127.0.0.1", int(m.group(3)))
        srv.port = int(m.group(3))
    else:
        srv.address = m.group(4)
    return srv


@pytest.fixture
def server(tmp_path):
    """server(app_source, opts=None, *, address=None, python_args=(),
    env=None, expect_start=True) -> Server. Every server started is
    stopped (SIGTERM, then SIGKILL) at teardown."""
    started = []
    n = [0]

    def start(app_source, opts=None, **kw):
        n[0] += 1
        srv = _start(tmp_path, app_source, opts, name=f"app{n[0]}", **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """Like `server`, shared by the tests of one module (a server that
    survives many tests is also a test of its own)."""
    started = []
    tmp = tmp_path_factory.mktemp("srv")
    n = [0]

    def start(app_source, opts=None, **kw):
        n[0] += 1
        srv = _start(tmp, app_source, opts, name=f"app{n[0]}", **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


SANITIZER_REPORTS = os.environ.get("LIBGREEN_SANITIZER_REPORTS")


@pytest.fixture(autouse=True)
def _sanitizer_reports():
    """Under scripts/asan-pytest: fails the test after which a sanitizer
    report appeared (from any process it started), with the report."""
    if not SANITIZER_REPORTS:
        yield
        return
    before = set(os.listdir(SANITIZER_REPORTS))
    yield
    new = sorted(set(os.listdir(SANITIZER_REPORTS)) - before)
    if new:
        text = "".join(f"---- {n}\n" + Path(SANITIZER_REPORTS, n).read_text(
            errors="replace")[:20000] for n in new)
        pytest.fail(f"sanitizer report(s) during this test:\n{text}",
                    pytrace=False)


TEST_TIME_LIMIT = float(os.environ.get("LIBGREEN_TEST_TIME_LIMIT", "60"))


@pytest.fixture(autouse=True)
def _time_limit(request):
    """Bounds a test in time (Debian's pytest has no pytest-timeout):
    SIGALRM fails the test, whatever it is blocked in. A server test
    (test_server_*) gets TEST_TIME_LIMIT seconds; a test marked
    @pytest.mark.time_limit(seconds), itself or through its module's
    pytestmark, gets that; any other test runs unbounded."""
    mark = request.node.get_closest_marker("time_limit")
    if mark:
        limit = mark.args[0]
    elif request.node.fspath.basename.startswith("test_server_"):
        limit = TEST_TIME_LIMIT
    else:
        limit = None
    if limit is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        pytest.fail(f"test exceeded its time limit of {limit} s",
                    pytrace=True)

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "time_limit(seconds): fail the test after seconds")


@pytest.fixture
def python():
    """The interpreter under test."""
    return PYTHON
