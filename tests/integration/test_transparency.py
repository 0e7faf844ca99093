"""With no hub running, libgreen.so must change nothing a program does.

Hard rule 12: every program a Python app starts inherits LD_PRELOAD, so
shells, coreutils, curl and plain Python scripts load libgreen without ever
starting a hub. Each test here runs one command three times - plain, with
LD_PRELOAD=<so>, and with LD_PRELOAD plus LD_BIND_NOW=1 (hard rule 13:
hardened binaries are linked -z now) - and asserts byte-identical stdout,
stderr and exit status, plus identical output files where the command
writes some.

The .so comes from $LIBGREEN_SO (default <repo>/build/libgreen.so); the
module is skipped if it is missing. Every child is waited for, and killed by
its PID if it outlives its timeout. Servers bind 127.0.0.1 port 0 only.
"""

import difflib
import fcntl
import hashlib
import http.server
import os
import random
import signal
import socket
import subprocess
import termios
import textwrap
import threading
from collections import namedtuple
from pathlib import Path

import pytest

from conftest import preload_value

REPO = Path(__file__).resolve().parents[2]
SO = Path(os.environ.get("LIBGREEN_SO") or REPO / "build" / "libgreen.so").resolve()
PY = "/usr/bin/python3"  # Debian's, the interpreter libgreen targets
TIMEOUT = 60  # seconds, for every child

pytestmark = pytest.mark.skipif(
    not SO.is_file(),
    reason=f"{SO} not found: run `make` (or set LIBGREEN_SO) first",
)

Result = namedtuple("Result", "returncode stdout stderr files")

VARIANTS = ("plain", "preload", "preload+bind_now")


# ---- environment and running children ---------------------------------------

def _base_env():
    """os.environ without anything that would preload, tune or disable
    libgreen, or make output depend on the caller's locale or proxies."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LD_", "LIBGREEN_", "PYTHON"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                 "no_proxy")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _env(variant, extra=None):
    env = _base_env()
    if variant != "plain":
        env["LD_PRELOAD"] = preload_value(SO)
    if variant == "preload+bind_now":
        env["LD_BIND_NOW"] = "1"
    if extra:
        env.update(extra)
    return env


def _reap(proc):
    """Waits for proc; kills it by its PID first if it is still running."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=TIMEOUT)


def _run(argv, env, *, input=None, stdin=None, stdout=subprocess.PIPE,
         cwd=None, timeout=TIMEOUT):
    """Runs argv to completion; stdin is the bytes `input` through a pipe,
    else the fd/file `stdin`, else /dev/null. Returns (rc, stdout, stderr)."""
    if input is not None:
        stdin = subprocess.PIPE
    elif stdin is None:
        stdin = subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout,
                            stderr=subprocess.PIPE, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(input, timeout=timeout)
        return proc.returncode, out if out is not None else b"", err
    finally:
        _reap(proc)


def _short(argv):
    """argv for a message: long arguments (programs) cut short."""
    return " ".join(repr(a if len(a) <= 60 else a[:57] + "...") for a in argv)


def _describe(a, b):
    """A readable account of how two byte strings differ."""
    if len(a) < 20000 and len(b) < 20000:
        try:
            sa, sb = a.decode(), b.decode()
        except UnicodeDecodeError:
            pass
        else:
            diff = "\n".join(difflib.unified_diff(
                sa.splitlines(), sb.splitlines(), "plain", "preloaded",
                lineterm=""))
            return diff[:4000]
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
             min(len(a), len(b)))
    return (f"lengths {len(a)} vs {len(b)}, first difference at byte {n}: "
            f"{a[n:n + 40]!r} vs {b[n:n + 40]!r}")


def check_same(argv, *, input=None, stdin_file=None, files=(), cwd=None,
               env=None, stdin_fd=None):
    """Runs argv once per variant and asserts identical results.

    "{out}" in an argument becomes a fresh directory per variant (so output
    files do not overwrite each other); `files` names files inside it whose
    contents must be identical too. stdin_file: a path opened as stdin per
    run. stdin_fd: a callable making a fresh stdin fd per run (closed after).
    Returns the results, plain first."""
    results = {}
    for variant in VARIANTS:
        out_dir = Path(cwd or "/tmp") / f"out-{variant}" if files or any(
            "{out}" in a for a in argv) else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        args = [a.replace("{out}", str(out_dir)) if out_dir else a
                for a in argv]
        fd = None
        try:
            if stdin_file is not None:
                fd = os.open(stdin_file, os.O_RDONLY)
            elif stdin_fd is not None:
                fd = stdin_fd()
            rc, out, err = _run(args, _env(variant, env), input=input,
                                stdin=fd, cwd=cwd)
        finally:
            if fd is not None:
                os.close(fd)
        contents = {f: (out_dir / f).read_bytes()
                    if (out_dir / f).exists() else None for f in files}
        results[variant] = Result(rc, out, err, contents)

    base = results["plain"]
    for variant in VARIANTS[1:]:
        got = results[variant]
        what = f"{_short(argv)} under {variant}"
        assert got.returncode == base.returncode, (
            f"{what}: exit status {got.returncode}, plain {base.returncode}"
            f"\nstderr:\n{got.stderr[:2000]!r}")
        assert got.stdout == base.stdout, (
            f"{what}: stdout differs: {_describe(base.stdout, got.stdout)}")
        assert got.stderr == base.stderr, (
            f"{what}: stderr differs: {_describe(base.stderr, got.stderr)}")
        for f in files:
            assert got.files[f] == base.files[f], (
                f"{what}: output file {f} differs: "
                f"{_describe(base.files[f] or b'', got.files[f] or b'')}")
    return results


def check_ok(argv, **kw):
    """check_same for a command meant to succeed quietly: the plain run
    must exit 0 with nothing on stderr (else the test proves little)."""
    r = check_same(argv, **kw)
    plain = r["plain"]
    assert (plain.returncode, plain.stderr) == (0, b""), (
        f"the plain run itself failed: exit {plain.returncode}\n"
        f"{plain.stderr.decode(errors='replace')[:3000]}")
    return r


def py(source):
    """argv for /usr/bin/python3 -c <source>."""
    return [PY, "-c", textwrap.dedent(source)]


# ---- data ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("transparency-data")


@pytest.fixture(scope="module")
def binfile(data_dir):
    """4 MiB of seeded random bytes."""
    path = data_dir / "random.bin"
    path.write_bytes(random.Random(1234).randbytes(4 << 20))
    return path


@pytest.fixture(scope="module")
def lines():
    """200k lines of seeded random text, unsorted, with duplicates."""
    rnd = random.Random(42)
    words = ["alpha", "Beta", "gamma", "delta", "épsilon", "zeta", "10", "9",
             "-3", "", " lead", "tab\tbed"]
    return "".join(
        f"{rnd.choice(words)} {rnd.randrange(1 << 30)} {rnd.choice(words)}\n"
        for _ in range(200_000)).encode()


# ---- the preload really is there ------------------------------------------------

def test_preload_is_loaded():
    """Guards every other test: the variants must differ in what is mapped."""
    argv = py("print(sum('libgreen' in l for l in open('/proc/self/maps')) > 0)")
    seen = {}
    for variant in VARIANTS:
        rc, out, err = _run(argv, _env(variant))
        assert rc == 0 and err == b"", (variant, rc, err)
        seen[variant] = out
    assert seen == {"plain": b"False\n", "preload": b"True\n",
                    "preload+bind_now": b"True\n"}


# ---- sh --------------------------------------------------------------------------

def test_sh_pipeline_redirections(tmp_path):
    script = r'''
        set -u
        d=$1
        echo hello world | tr a-z A-Z
        printf '%s\n' one two three | (read a; echo "first=$a"; cat) > "$d/f1"
        cat < "$d/f1" | wc -l
        (echo sub-out; echo sub-err >&2) 2>&1 | sort
        exec 3>"$d/f2"; echo via-fd3 >&3; printf 'x%.0s' 1 2 3 >&3; exec 3>&-
        cat "$d/f2"; echo
        printf 'appended\n' >> "$d/f1"; tail -n 2 "$d/f1"
        (exit 5); echo "subshell said $?"
        v=$(printf 'a\nb\n' | sort -r | head -n 1); echo "v=$v"
        cat <<EOF | sed s/here/there/
here doc here
EOF
        read -r line < "$d/f1"; echo "read: $line"
        { echo grouped; echo grouped-err >&2; } 2>"$d/f3" | cat; cat "$d/f3"
        yes abc | head -c 100000 | wc -c
        echo to-stderr >&2
        exit 3
    '''
    r = check_same(["sh", "-c", script, "sh", "{out}"], cwd=tmp_path,
                   files=("f1", "f2", "f3"))
    assert r["plain"].returncode == 3
    assert b"HELLO WORLD" in r["plain"].stdout
    assert r["plain"].stderr == b"to-stderr\n"


def test_sh_reads_stdin_pipe(tmp_path):
    check_same(["sh", "-c", "while read -r a b; do echo \"$b:$a\"; done; "
                "echo done >&2; exit 0"],
               input=b"".join(b"%d w%d\n" % (i, i) for i in range(5000)),
               cwd=tmp_path)


# ---- cat -----------------------------------------------------------------------------

def test_cat_binary_file_to_pipe(binfile, tmp_path):
    r = check_ok(["cat", str(binfile)], cwd=tmp_path)
    assert r["plain"].stdout == binfile.read_bytes()


def test_cat_binary_through_pipeline(binfile, tmp_path):
    r = check_same(["sh", "-c", 'cat "$1" | cat | cat', "sh", str(binfile)],
                   cwd=tmp_path)
    assert r["plain"].stdout == binfile.read_bytes()


def test_cat_from_stdin_pipe(binfile, tmp_path):
    data = binfile.read_bytes()
    r = check_ok(["cat"], input=data, cwd=tmp_path)
    assert r["plain"].stdout == data


def test_cat_from_stdin_file_to_file(binfile, tmp_path):
    check_ok(["sh", "-c", 'cat > "$1/copy"', "sh", "{out}"],
               stdin_file=binfile, cwd=tmp_path, files=("copy",))


def test_cat_missing_file(tmp_path):
    r = check_same(["cat", str(tmp_path / "no-such-file")], cwd=tmp_path)
    assert r["plain"].returncode == 1


# ---- sort ----------------------------------------------------------------------------

def test_sort_stdin(lines, tmp_path):
    r = check_ok(["sort"], input=lines, cwd=tmp_path)
    assert len(r["plain"].stdout) == len(lines)


def test_sort_stdin_numeric_unique_reverse(lines, tmp_path):
    check_ok(["sort", "-k2,2n", "-u", "-r"], input=lines, cwd=tmp_path)


def test_sort_file_to_output_file(lines, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(lines)
    r = check_ok(["sort", "-o", "{out}/sorted", str(src)], cwd=tmp_path,
                   files=("sorted",))
    assert len(r["plain"].files["sorted"]) == len(lines)
    assert r["plain"].stdout == b""


def test_sort_with_temp_files_and_threads(lines, tmp_path):
    """A small buffer makes sort spill to temporary files and merge them."""
    src = tmp_path / "in.txt"
    src.write_bytes(lines)
    check_ok(["sort", "-S", "256K", "--parallel=4", "-T", "{out}",
                "-o", "{out}/sorted", str(src)], cwd=tmp_path,
               files=("sorted",))


# ---- curl against a local HTTP server --------------------------------------------

BIG_BODY = random.Random(7).randbytes(3 << 20)
NOT_FOUND = b"no such page\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code, body, ctype="application/octet-stream"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path == "/big":
            self._send(200, BIG_BODY)
        elif self.path == "/text":
            self._send(200, b"hello from the test server\n", "text/plain")
        else:
            self._send(404, NOT_FOUND, "text/plain")

    do_HEAD = do_GET

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(200, b"%d %s\n" % (len(body),
                                       hashlib.sha256(body).hexdigest().encode()),
                   "text/plain")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def _curl(*args):
    # -q: ignore ~/.curlrc; no proxy; a time limit below ours.
    return ["curl", "-q", "--noproxy", "*", "--max-time", "50", *args]


def test_curl_big_body(http_url, tmp_path):
    r = check_ok(_curl("-s", http_url + "/big"), cwd=tmp_path)
    assert r["plain"].returncode == 0
    assert r["plain"].stdout == BIG_BODY


def test_curl_big_body_to_file(http_url, tmp_path):
    r = check_ok(_curl("-s", "-o", "{out}/body", http_url + "/big"),
                   cwd=tmp_path, files=("body",))
    assert r["plain"].files["body"] == BIG_BODY


def test_curl_404(http_url, tmp_path):
    r = check_same(_curl("-s", http_url + "/missing"), cwd=tmp_path)
    assert (r["plain"].returncode, r["plain"].stdout) == (0, NOT_FOUND)
    r = check_same(_curl("-s", "-f", http_url + "/missing"), cwd=tmp_path)
    assert r["plain"].returncode == 22


def test_curl_status_and_head(http_url, tmp_path):
    check_ok(_curl("-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}\n",
                     http_url + "/text", http_url + "/missing", http_url + "/big"),
               cwd=tmp_path)
    check_ok(_curl("-s", "-I", "-o", "/dev/null", "-w", "%{http_code}\n",
                     http_url + "/big"), cwd=tmp_path)


def test_curl_post_from_stdin(http_url, tmp_path, binfile):
    r = check_ok(_curl("-s", "--data-binary", "@-", http_url + "/post"),
                   input=binfile.read_bytes(), cwd=tmp_path)
    assert r["plain"].stdout.startswith(b"%d " % binfile.stat().st_size)


def test_curl_closed_port(tmp_path):
    # A socket bound but not listening: connecting is refused, and nobody
    # else can take the port while we hold it.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = check_same(_curl("-s", "http://127.0.0.1:%d/" % port), cwd=tmp_path)
        assert r["plain"].returncode == 7
    finally:
        s.close()


# ---- /usr/bin/python3 -c ---------------------------------------------------------

def test_python_file_io(tmp_path):
    prog = py(r"""
        import os, shutil, sys, hashlib
        d = sys.argv[1]
        p = os.path.join(d, "a.bin")
        data = bytes(range(256)) * 1000
        with open(p, "wb") as f:
            f.write(data)
        with open(p, "rb") as f:
            f.seek(1000)
            print(len(f.read()), f.tell())
        fd = os.open(p, os.O_RDWR)
        os.pwrite(fd, b"XYZ", 10)
        print(os.pread(fd, 16, 5))
        print(os.lseek(fd, 0, os.SEEK_END), os.fstat(fd).st_size)
        print(os.read(fd, 10))
        fd2 = os.dup(fd)
        os.lseek(fd2, 0, os.SEEK_SET)
        print(os.read(fd, 4))
        os.close(fd2)
        os.dup2(fd, 9)
        print(os.read(9, 4))
        os.close(9)
        os.close(fd)
        shutil.copyfile(p, p + ".copy")
        with open(p + ".copy", "rb") as f:
            print(hashlib.sha256(f.read()).hexdigest())
        with open(os.path.join(d, "t.txt"), "w") as f:
            for i in range(10000):
                print(i, file=f)
        with open(os.path.join(d, "t.txt")) as f:
            print(sum(int(l) for l in f))
        print(sorted(os.listdir(d)))
        import fcntl
        fd = os.open(p, os.O_RDONLY)
        print(fcntl.fcntl(fd, fcntl.F_GETFL) & ~0o100000, fcntl.fcntl(fd, fcntl.F_GETFD))
        fcntl.flock(fd, fcntl.LOCK_EX); fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        try:
            os.read(fd, 1)
        except OSError as e:
            print("closed:", e.errno)
    """)
    check_ok(prog + ["{out}"], cwd=tmp_path,
               files=("a.bin", "a.bin.copy", "t.txt"))


def test_python_subprocess_pipeline(tmp_path):
    prog = py(r"""
        import subprocess, sys
        r = subprocess.run(["sh", "-c", "printf 'c\\nb\\na\\n' | sort; echo err >&2; exit 4"],
                           capture_output=True, timeout=60)
        print(r.returncode, r.stdout, r.stderr)
        p1 = subprocess.Popen(["printf", "%s\\n", "z", "y", "x"], stdout=subprocess.PIPE)
        p2 = subprocess.Popen(["sort"], stdin=p1.stdout, stdout=subprocess.PIPE)
        p1.stdout.close()
        out, _ = p2.communicate(timeout=60)
        p1.wait(60)
        print(out, p1.returncode, p2.returncode)
        big = b"abc\n" * 250000
        r = subprocess.run([sys.executable, "-c",
                            "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().upper())"],
                           input=big, capture_output=True, timeout=60)
        print(r.returncode, len(r.stdout), r.stdout == big.upper())
        print(subprocess.check_output("echo $((6 * 7))", shell=True, timeout=60))
        try:
            subprocess.run(["false"], check=True, timeout=60)
        except subprocess.CalledProcessError as e:
            print("false ->", e.returncode)
        try:
            subprocess.run(["/nonexistent/program"], timeout=60)
        except FileNotFoundError as e:
            print("missing ->", e.errno)
        p = subprocess.Popen(["sleep", "30"])
        p.kill()
        print("killed ->", p.wait(60))
    """)
    check_ok(prog, cwd=tmp_path)


def test_python_socket_echo_thread(tmp_path):
    prog = py(r"""
        import hashlib, socket, threading
        data = bytes(range(256)) * 4096 * 2          # 2 MiB
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)

        def echo():
            c, _ = srv.accept()
            with c:
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    c.sendall(d)

        t = threading.Thread(target=echo)
        t.start()
        cli = socket.create_connection(srv.getsockname(), timeout=30)

        def send():
            cli.sendall(data)
            cli.shutdown(socket.SHUT_WR)

        s = threading.Thread(target=send)
        s.start()
        got = bytearray()
        while True:
            d = cli.recv(1 << 16)
            if not d:
                break
            got += d
        s.join(); t.join()
        cli.close(); srv.close()
        print(len(got), hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest())

        # a receive timeout, datagrams, and fd passing over a socketpair
        a, b = socket.socketpair()
        a.settimeout(0.05)
        try:
            a.recv(1)
        except socket.timeout:
            print("recv timed out")
        u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u1.bind(("127.0.0.1", 0))
        u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u2.sendto(b"datagram", u1.getsockname())
        msg, addr = u1.recvfrom(100)
        print(msg, addr[0], addr[1] == u2.getsockname()[1])
        import array, os
        r, w = os.pipe()
        socket.send_fds(b, [b"fd"], [w])
        m, fds, flags, _ = socket.recv_fds(a, 10, 4)
        os.write(fds[0], b"through passed fd")
        print(m, len(fds), flags, os.read(r, 100))
        b.sendmsg([b"one", b"two"])
        print(a.recvmsg(100)[0])
        a.settimeout(None)
        b.send(b"x" * 10, socket.MSG_DONTWAIT)
        print(a.recv(4, socket.MSG_PEEK), a.recv(10, socket.MSG_WAITALL))
        try:
            a.recv(1, socket.MSG_DONTWAIT)
        except BlockingIOError as e:
            print("EAGAIN", e.errno)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        c = socket.socket()
        try:
            c.connect(closed.getsockname())
        except OSError as e:
            print("connect ->", e.errno)
        c.close(); closed.close()
        print(a.getblocking(), a.gettimeout(), b.getblocking())
    """)
    check_ok(prog, cwd=tmp_path)


def test_python_select_poll_timeouts(tmp_path):
    prog = py(r"""
        import os, select, selectors, socket, time
        r, w = os.pipe()
        print("fds", r, w)

        def timed(f):
            t = time.monotonic()
            res = f()
            return res, time.monotonic() - t >= 0.049

        print(timed(lambda: select.select([r], [], [], 0.05)))
        os.write(w, b"x")
        print(select.select([r], [w], [], 1.0) == ([r], [w], []))
        p = select.poll()
        p.register(r, select.POLLIN)
        print(p.poll(50) == [(r, select.POLLIN)])
        os.read(r, 1)
        print(timed(lambda: p.poll(50)))
        ep = select.epoll()
        ep.register(r, select.EPOLLIN)
        print(timed(lambda: ep.poll(0.05)))
        os.write(w, b"y")
        print(ep.poll(1.0) == [(r, select.EPOLLIN)])
        os.read(r, 1)
        ep.close()
        sel = selectors.DefaultSelector()
        sel.register(r, selectors.EVENT_READ)
        print(timed(lambda: sel.select(0.05)))
        sel.close()
        print(select.select([], [], [], 0) == ([], [], []))
        print(timed(lambda: select.select([], [], [], 0.05)))
        os.close(w)
        print(select.select([r], [], [], 1.0) == ([r], [], []), os.read(r, 1))
        a, b = socket.socketpair()
        a.settimeout(0.05)
        t = time.monotonic()
        try:
            a.recv(1)
        except TimeoutError:
            print("timeout", time.monotonic() - t >= 0.049)
        try:
            select.select([1000], [], [], 0.01)
        except (OSError, ValueError) as e:
            print(type(e).__name__, getattr(e, "errno", None))
    """)
    check_ok(prog, cwd=tmp_path)


def test_python_sleep(tmp_path):
    prog = py(r"""
        import time
        t = time.monotonic()
        time.sleep(0.05)
        d = time.monotonic() - t
        print(d >= 0.049, d < 5)
        time.sleep(0)
        t = time.monotonic()
        for _ in range(5):
            time.sleep(0.01)
        print(time.monotonic() - t >= 0.049)
    """)
    check_ok(prog, cwd=tmp_path)
    check_same(["sh", "-c", "sleep 0.05; echo slept"], cwd=tmp_path)


def test_python_reads_stdin(tmp_path, binfile):
    prog = py(r"""
        import hashlib, sys
        data = sys.stdin.buffer.read()
        print(len(data), hashlib.sha256(data).hexdigest())
    """)
    r = check_ok(prog, input=binfile.read_bytes(), cwd=tmp_path)
    assert r["plain"].stdout.startswith(b"%d " % binfile.stat().st_size)
    prog = py(r"""
        import sys
        n = 0
        for line in sys.stdin:
            n += len(line.split())
        print(n, input is not None)
    """)
    check_ok(prog, input=b"a b c\n" * 100000, cwd=tmp_path)
    check_ok(py("print(repr(input('prompt> ')))"), input=b"typed\n",
               cwd=tmp_path)
    check_same(py("print(repr(input('prompt> ')))"), cwd=tmp_path)  # EOFError


def test_python_writes_1mb_stdout(tmp_path):
    prog = py(r"""
        import sys
        print("start")
        sys.stdout.flush()
        sys.stdout.buffer.write(bytes(range(256)) * 4096)
        sys.stdout.buffer.flush()
        for i in range(1000):
            print("line", i)
        print("to stderr", file=sys.stderr)
    """)
    r = check_same(prog, cwd=tmp_path)
    assert len(r["plain"].stdout) > 1 << 20


def test_python_failing_traceback(tmp_path):
    prog = py(r"""
        import sys
        def inner(x):
            return 1 / x
        def outer():
            try:
                inner(0)
            except ZeroDivisionError as e:
                raise ValueError("wrapped") from e
        print("before", flush=True)
        print("err before", file=sys.stderr, flush=True)
        outer()
    """)
    r = check_same(prog, cwd=tmp_path)
    assert r["plain"].returncode == 1
    assert b"ValueError: wrapped" in r["plain"].stderr
    r = check_same(py("import sys; print('x'); sys.exit(7)"), cwd=tmp_path)
    assert r["plain"].returncode == 7
    r = check_same(py("import sys; sys.exit('fatal message')"), cwd=tmp_path)
    assert r["plain"].returncode == 1
    r = check_same(py("import os; print('lost'); os._exit(9)"), cwd=tmp_path)
    assert (r["plain"].returncode, r["plain"].stdout) == (9, b"")
    r = check_same(py("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"),
                   cwd=tmp_path)
    assert r["plain"].returncode == -signal.SIGTERM
    r = check_same(py("raise SystemExit(None)"), cwd=tmp_path)
    assert r["plain"].returncode == 0
    r = check_same(py("syntax error here"), cwd=tmp_path)
    assert r["plain"].returncode == 1


def test_python_libc_errno_contracts(tmp_path):
    """The interposed calls reached directly through ctypes, on the error
    paths a Python program rarely takes: same results, same errno."""
    prog = py(r"""
        import ctypes, errno, fcntl, os, socket, termios
        libc = ctypes.CDLL(None, use_errno=True)

        def call(name, *args):
            ctypes.set_errno(0)
            r = getattr(libc, name)(*args)
            print(name, r, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()),
                  flush=True)

        s = socket.socket()
        r, w = os.pipe()
        call("close", -1)
        call("close", 999)
        call("dup", 999)
        call("dup2", r, r)
        call("dup2", 999, 50)
        call("dup3", r, r, 0)
        call("fcntl", 999, fcntl.F_GETFL)
        call("fcntl", r, fcntl.F_GETFL)
        call("fcntl", s.fileno(), fcntl.F_SETFL, os.O_NONBLOCK)
        call("fcntl", s.fileno(), fcntl.F_GETFL)
        call("fcntl", s.fileno(), fcntl.F_SETFL, 0)
        call("fcntl", s.fileno(), fcntl.F_GETFL)
        call("ioctl", 999, termios.FIONBIO, ctypes.byref(ctypes.c_int(1)))
        call("ioctl", r, termios.FIONBIO, ctypes.byref(ctypes.c_int(1)))
        call("fcntl", r, fcntl.F_GETFL)
        call("ioctl", r, termios.FIONBIO, ctypes.byref(ctypes.c_int(0)))
        call("fcntl", r, fcntl.F_GETFL)
        call("ioctl", s.fileno(), termios.FIONBIO, None)
        call("read", r, None, 0)
        call("write", 999, b"x", 1)
        call("read", s.fileno(), ctypes.create_string_buffer(1), 1)
        call("recv", r, ctypes.create_string_buffer(1), 1, 0)
        call("send", s.fileno(), b"x", 1, 0)
        call("accept", s.fileno(), None, None)
        call("close_range", 900, 800, 0)
        call("usleep", 1000)
        call("sleep", 0)
        call("nanosleep", ctypes.byref((ctypes.c_long * 2)(0, 2000000000)), None)
        call("clock_nanosleep", 1, 0, ctypes.byref((ctypes.c_long * 2)(0, -1)), None)
        call("poll", None, 0, 10)
        call("select", 0, None, None, None, ctypes.byref((ctypes.c_long * 2)(0, 10000)))
        call("select", -1, None, None, None, None)
        call("epoll_wait", 999, None, 1, 0)
        call("pipe2", ctypes.byref((ctypes.c_int * 2)()), -1)
        call("socket", 12345, 1, 0)
        call("socketpair", 12345, 1, 0, ctypes.byref((ctypes.c_int * 2)()))
        call("setsockopt", s.fileno(), 1, 12345, None, 0)
        call("connect", 999, None, 0)
    """)
    check_ok(prog, cwd=tmp_path)


def test_python_ioctl_fionbio_bad_pointer(tmp_path):
    """ioctl(FIONBIO) with a pointer the kernel cannot read fails with
    EFAULT; it must not crash the program instead."""
    prog = py(r"""
        import ctypes, errno, os, socket, termios
        libc = ctypes.CDLL(None, use_errno=True)
        r, w = os.pipe()
        s = socket.socket()
        for fd in (r, s.fileno()):
            ctypes.set_errno(0)
            res = libc.ioctl(fd, termios.FIONBIO, ctypes.c_void_p(8))
            print(res, errno.errorcode[ctypes.get_errno()], flush=True)
    """)
    r = check_same(prog, cwd=tmp_path)
    assert r["plain"].stdout == b"-1 EFAULT\n-1 EFAULT\n"


# ---- env, dd ---------------------------------------------------------------------

def test_exec_through_env(tmp_path):
    check_ok(["env", "A=1", "B=two", PY, "-c",
                "import os; print(os.environ['A'], os.environ['B'])"],
               cwd=tmp_path)
    check_same(["env", "GREETING=hi", "sh", "-c", 'echo "$GREETING"; exit 4'],
               cwd=tmp_path)
    check_ok(["env", "env", "env", "printf", "%s|%s\n", "a", "b"],
               cwd=tmp_path)
    r = check_same(["env", "/nonexistent/program"], cwd=tmp_path)
    assert r["plain"].returncode == 127


def test_dd_between_pipes(binfile, tmp_path):
    data = binfile.read_bytes()
    r = check_same(["dd", "bs=65536", "iflag=fullblock", "status=noxfer"],
                   input=data, cwd=tmp_path)
    assert r["plain"].stdout == data
    r = check_same(["sh", "-c",
                    'cat "$1" | dd bs=1M iflag=fullblock status=noxfer | cat',
                    "sh", str(binfile)], cwd=tmp_path)
    assert r["plain"].stdout == data
    check_ok(["dd", "bs=4096", "count=100", "iflag=fullblock", "status=none"],
               input=data, cwd=tmp_path)
    check_same(["dd", "bs=1000", "skip=3", "count=7", "status=noxfer",
                "if=" + str(binfile), "of={out}/part"], cwd=tmp_path,
               files=("part",))


# ---- a socket as stdout (and stdin) ------------------------------------------------

def _run_socket_stdio(argv, env, stdin_data=None, sock_stdin=False):
    """Runs argv with stdout one end of a socketpair, read by a thread from
    the other end; stdin optionally a socket too. Returns (rc, out, err,
    O_NONBLOCK of our end of the child's stdout after the run)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    in_ours = in_theirs = None
    chunks, feeder_err = [], []
    threads = []
    proc = None
    try:
        if sock_stdin:
            in_ours, in_theirs = socket.socketpair(socket.AF_UNIX,
                                                   socket.SOCK_STREAM)
        proc = subprocess.Popen(
            argv, env=env, stdout=theirs.fileno(), stderr=subprocess.PIPE,
            stdin=in_theirs.fileno() if in_theirs else subprocess.DEVNULL)
        theirs.close()
        if in_theirs is not None:
            in_theirs.close()

        def reader():
            while True:
                d = ours.recv(1 << 16)
                if not d:
                    return
                chunks.append(d)

        def feeder():
            try:
                in_ours.sendall(stdin_data or b"")
                in_ours.shutdown(socket.SHUT_WR)
            except OSError as e:  # the child may exit without reading
                feeder_err.append(e)

        threads.append(threading.Thread(target=reader, daemon=True))
        if in_ours is not None:
            threads.append(threading.Thread(target=feeder, daemon=True))
        for t in threads:
            t.start()
        _, err = proc.communicate(timeout=TIMEOUT)
        for t in threads:
            t.join(TIMEOUT)
            assert not t.is_alive(), "socket reader/feeder did not finish"
        flags = fcntl.fcntl(ours.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        return proc.returncode, b"".join(chunks), err, flags
    finally:
        if proc is not None:
            _reap(proc)
        for s in (ours, theirs, in_ours, in_theirs):
            if s is not None:
                s.close()


@pytest.mark.parametrize("name", ["cat-file", "python-1mb", "sh", "cat-socket-stdin"])
def test_stdout_is_a_socket(name, binfile):
    data = binfile.read_bytes()
    cases = {
        "cat-file": (["cat", str(binfile)], None),
        "python-1mb": (py("""
            import sys
            print("head")
            sys.stdout.flush()
            sys.stdout.buffer.write(bytes(range(256)) * 4096)
            sys.stdout.flush()
            print("tail", file=sys.stderr)
            sys.exit(2)
        """), None),
        "sh": (["sh", "-c", "echo one; printf 'two\\n'; (echo three); "
                "echo four | cat; echo err >&2; exit 6"], None),
        "cat-socket-stdin": (["cat"], data),
    }
    argv, stdin_data = cases[name]
    results = {}
    for variant in VARIANTS:
        results[variant] = _run_socket_stdio(argv, _env(variant), stdin_data,
                                             sock_stdin=stdin_data is not None)
    base = results["plain"]
    for variant in VARIANTS[1:]:
        got = results[variant]
        assert got[0] == base[0], (variant, got[0], base[0], got[2])
        assert got[1] == base[1], f"{variant}: {_describe(base[1], got[1])}"
        assert got[2] == base[2], f"{variant}: {_describe(base[2], got[2])}"
        assert got[3] == base[3] == 0, (variant, "O_NONBLOCK on the socket")
    if name in ("cat-file", "cat-socket-stdin"):
        assert base[1] == data


# ---- flags of shared pipes and ttys stay as they were ------------------------------

NB_PROBE = ('import fcntl, os, sys; '
            'print(fcntl.fcntl(0, fcntl.F_GETFL) & os.O_NONBLOCK, '
            'fcntl.fcntl(1, fcntl.F_GETFL) & os.O_NONBLOCK)')


def test_nonblock_flag_of_stdin_pipe():
    outs = {}
    for variant in VARIANTS:
        r, w = os.pipe()
        try:
            os.write(w, b"unread input\n")
            rc, out, err = _run([PY, "-c", NB_PROBE], _env(variant), stdin=r)
            assert (rc, err) == (0, b""), (variant, rc, err)
            outs[variant] = out
            assert os.get_blocking(r) and os.get_blocking(w), variant
        finally:
            os.close(r)
            os.close(w)
    assert outs == dict.fromkeys(VARIANTS, b"0 0\n")


@pytest.mark.parametrize("argv", [
    ["cat"],
    [PY, "-c", "import sys, select; select.select([0], [], [], 0.01); "
               "sys.stdout.write(sys.stdin.read())"],
    [PY, "-c", "import os, time; time.sleep(0.01); "
               "os.write(1, os.read(0, 100))"],
    ["sh", "-c", "read a; echo \"$a\"; cat"],
], ids=["cat", "python-select", "python-os-read", "sh-read"])
def test_pipe_flags_unchanged_after_run(argv):
    """The child reads our pipe and writes our other pipe: the open file
    descriptions are shared, so any O_NONBLOCK it set would show here."""
    outs = {}
    for variant in VARIANTS:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        proc = None
        try:
            os.write(in_w, b"line one\nline two\n")
            os.close(in_w)
            in_w = -1
            proc = subprocess.Popen(argv, env=_env(variant), stdin=in_r,
                                    stdout=out_w, stderr=subprocess.PIPE)
            os.close(out_w)
            out_w = -1
            _, err = proc.communicate(timeout=TIMEOUT)
            out = b""
            while True:
                d = os.read(out_r, 65536)
                if not d:
                    break
                out += d
            outs[variant] = (proc.returncode, out, err)
            assert os.get_blocking(in_r), f"{variant}: stdin pipe made non-blocking"
            assert os.get_blocking(out_r), f"{variant}: stdout pipe made non-blocking"
        finally:
            if proc is not None:
                _reap(proc)
            for fd in (in_r, in_w, out_r, out_w):
                if fd >= 0:
                    os.close(fd)
    assert outs["preload"] == outs["plain"]
    assert outs["preload+bind_now"] == outs["plain"]
    assert outs["plain"][0] == 0 and outs["plain"][1] == b"line one\nline two\n"


def test_tty_flags_and_attrs_unchanged():
    """A pseudo-terminal as stdin: the probe sees the same O_NONBLOCK, and
    the terminal's flags and attributes are the same after each run."""
    outs = {}
    for variant in VARIANTS:
        master, slave = os.openpty()
        try:
            before = (fcntl.fcntl(slave, fcntl.F_GETFL),
                      termios.tcgetattr(slave))
            argv = [PY, "-c", NB_PROBE + "; import os, select; "
                    "print(os.isatty(0), select.select([0], [], [], 0.02)[0])"]
            rc, out, err = _run(argv, _env(variant), stdin=slave)
            outs[variant] = (rc, out, err)
            after = (fcntl.fcntl(slave, fcntl.F_GETFL), termios.tcgetattr(slave))
            assert after == before, f"{variant}: tty changed: {before} -> {after}"
        finally:
            os.close(master)
            os.close(slave)
    assert outs["plain"] == (0, b"0 0\nTrue []\n", b"")
    assert outs["preload"] == outs["plain"]
    assert outs["preload+bind_now"] == outs["plain"]
