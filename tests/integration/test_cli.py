"""The `libgreen` command (server/launcher.c, server/cli.py): serving an
app by name, its flags and their environment variables, its one-line
errors, the listening sockets (TCP, IPv6, Unix, several, systemd's), root
and --user, and `make install`. Workers: test_workers.py."""

import json
import os
import pwd
import signal
import socket
import subprocess
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from clitools import (HELLO, LAUNCHER, TIME_LIMIT, Command, libgreen, require_launcher, run,
                      write_app)
from conftest import PYTHON, REPO, SO, child_env
from netclient import free_port, get

require_launcher()
pytestmark = pytest.mark.time_limit(TIME_LIMIT)

ENV_APP = '''
import json, os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"cwd": os.getcwd(), "pid": os.getpid(),
                        "euid": os.geteuid(), "env": os.environ.get("GREETING"),
                        "port": environ["SERVER_PORT"],
                        "listen_fds": os.environ.get("LISTEN_FDS"),
                        "name": environ["SERVER_NAME"]}).encode()]

def create_app(greeting="hello", *, suffix=""):
    def factory_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [(greeting + suffix).encode()]
    return factory_app
'''


def options():
    out = subprocess.run([PYTHON, "-c", "import json, libgreen; "
                          "print(json.dumps(libgreen.wsgi.options()))"],
                         env=child_env(), capture_output=True, check=True)
    return json.loads(out.stdout)


# ---- serving ------------------------------------------------------------

def test_serves_module_app(libgreen, tmp_path):
    write_app(tmp_path, "hello", HELLO)
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", "hello:app")
    (addr,) = cmd.serving()
    status, body = get(addr)
    assert status == 200
    assert int(body) in cmd.worker_pids()
    assert cmd.stop() == 0


@pytest.mark.parametrize("spec, expected", [
    ("envapp:create_app()", b"hello"),
    ("envapp:create_app('hi', suffix='!')", b"hi!"),
])
def test_serves_factory(libgreen, tmp_path, spec, expected):
    write_app(tmp_path, "envapp", ENV_APP)
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", spec)
    (addr,) = cmd.serving()
    assert get(addr) == (200, expected)


def test_module_alone_means_application(libgreen, tmp_path):
    write_app(tmp_path, "wsgi", HELLO.replace("def app(", "def application("))
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", "wsgi")
    (addr,) = cmd.serving()
    assert get(addr)[0] == 200


# ---- one line and exit 2 for every mistake ---------------------------------

ERRORS = {
    "bad flag": (["--no-such-flag", "hello:app"], {},
                 r"unrecognized arguments: --no-such-flag"),
    "bad number": (["--workers", "many", "hello:app"], {}, r"--workers many"),
    "out of range": (["--max-size", "0", "hello:app"], {},
                     r"--max-size 0: out of range \(allowed: an integer >= 1\)"),
    "bad env value": (["hello:app"], {"LIBGREEN_KEEPALIVE": "sometimes"},
                      r"LIBGREEN_KEEPALIVE=sometimes: not a number"),
    "no app": ([], {}, r"no APP given"),
    "bad app syntax": (["hello:app[0]"], {}, r"after the colon give a name"),
    "no module": (["nosuchmodule:app"], {}, r"cannot import 'nosuchmodule': no module named"),
    "import raises": (["broken:app"], {}, r"importing 'broken' failed: ZeroDivisionError: "
                                          r"division by zero \(at .*broken\.py:2\)"),
    "no attribute": (["hello:nope"], {}, r"module 'hello' has no attribute 'nope'"),
    "factory raises": (["hello:factory()"], {}, r"'hello:factory\(\)' raised "
                                                r"RuntimeError: no database"),
    "not callable": (["hello:NUMBER"], {}, r"'hello:NUMBER' is a int, not a WSGI app"),
    "bad bind": (["-b", "::1:80", "hello:app"], {}, r"IPv6 address in brackets"),
    "bad chdir": (["--chdir", "/nonexistent", "hello:app"], {}, r"--chdir /nonexistent"),
    "no such user": (["--user", "no-such-user-x", "hello:app"], {},
                     r"--user no-such-user-x: no such user"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error_is_one_line_and_exit_2(tmp_path, case):
    args, env, pattern = ERRORS[case]
    write_app(tmp_path, "hello", HELLO + textwrap.dedent('''
        NUMBER = 42

        def factory():
            raise RuntimeError("no database")
    '''))
    write_app(tmp_path, "broken", "x = 1\ny = x / 0\n")
    flags = [] if case == "bad flag" else ["--allow-root", "-b", "127.0.0.1:0"]
    rc, out, err = run(flags + args, tmp_path, env)
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("libgreen: error: ")
    assert __import__("re").search(pattern, lines[0]), lines[0]


def test_port_in_use_is_one_line(tmp_path):
    write_app(tmp_path, "hello", HELLO)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc, _, err = run(["--allow-root", "-b", f"127.0.0.1:{port}", "hello:app"],
                         tmp_path)
    assert rc == 2
    assert err.splitlines() == [
        f"libgreen: error: cannot listen on 127.0.0.1:{port}: address already "
        "in use (another server listens there: stop it, or choose another --bind)"]


def test_boot_failure_with_workers_exits_2_once(tmp_path):
    """Every worker fails the same way: the master prints the reason once
    and exits 2 instead of restarting them."""
    write_app(tmp_path, "hello", HELLO)
    rc, _, err = run(["--allow-root", "-b", "127.0.0.1:0", "-w", "3", "hello:missing"],
                     tmp_path, timeout=20)
    assert rc == 2
    assert err.splitlines() == [
        "libgreen: error: module 'hello' has no attribute 'missing' "
        "(APP is 'hello:missing')"]


def test_unsupported_python_is_one_line(tmp_path):
    """--python names an interpreter libgreen has no module for."""
    rc, _, err = run(["--python", "/nonexistent/python3", "hello:app"], tmp_path)
    assert rc == 2
    assert err.splitlines() == [
        "libgreen: error: cannot run the Python interpreter /nonexistent/python3: "
        "No such file or directory (give another with --python PATH or "
        "LIBGREEN_PYTHON)"]


# ---- flags and their environment variables -----------------------------------

def test_help_documents_every_flag_and_variable(tmp_path):
    rc, out, _ = run(["--help"], tmp_path)
    assert rc == 0
    text = " ".join(out.split())
    for o in options():
        if o["flag"]:
            assert o["flag"] in text, o["flag"]
        if o["env"]:
            assert o["env"] in text, o["env"]
    for flag in ("--bind", "--workers", "--backlog", "--timeout", "--user", "--group",
                 "--python", "--chdir", "--env", "--pid", "--allow-root", "--reuse-port"):
        assert flag in text
        assert "LIBGREEN_" + flag[2:].upper().replace("-", "_") in text
    for sig in ("HUP", "TTIN", "TTOU", "TERM"):
        assert sig in text


def test_environment_instead_of_flags(libgreen, tmp_path):
    appdir = tmp_path / "site"
    appdir.mkdir()
    write_app(appdir, "envapp", ENV_APP)
    port = free_port()
    cmd = libgreen(env={"LIBGREEN_APP": "envapp:app", "LIBGREEN_ALLOW_ROOT": "1",
                        "LIBGREEN_BIND": f"127.0.0.1:{port}",
                        "LIBGREEN_WORKERS": "2", "LIBGREEN_CHDIR": str(appdir),
                        "LIBGREEN_ENV": "GREETING='from env'",
                        "LIBGREEN_LOG_OUTPUT": "off"})
    cmd.serving(workers=2)
    assert len(cmd.worker_pids()) == 2
    status, body = get(("127.0.0.1", port))
    seen = json.loads(body)
    assert seen["cwd"] == str(appdir)
    assert seen["env"] == "from env"
    assert seen["port"] == str(port)
    assert '"GET / HTTP/1.1" 200' not in cmd.stderr  # no access log
    assert cmd.stop() == 0


def test_flag_wins_over_environment(libgreen, tmp_path):
    write_app(tmp_path, "envapp", ENV_APP)
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", "--env", "GREETING=flag",
                   "--log-output", "envapp:app",
                   env={"LIBGREEN_ENV": "GREETING=env", "LIBGREEN_LOG_OUTPUT": "0",
                        "LIBGREEN_BIND": "127.0.0.1:1"})
    (addr,) = cmd.serving()
    assert json.loads(get(addr)[1])["env"] == "flag"
    cmd.wait_for(r'"GET / HTTP/1.1" 200')


def test_chdir_and_env(libgreen, tmp_path):
    appdir = tmp_path / "elsewhere"
    appdir.mkdir()
    write_app(appdir, "envapp", ENV_APP)
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", "--chdir", str(appdir),
                   "-e", "GREETING=hi there", "envapp:app")
    (addr,) = cmd.serving()
    seen = json.loads(get(addr)[1])
    assert (seen["cwd"], seen["env"]) == (str(appdir), "hi there")


def test_server_option_reaches_the_server(libgreen, tmp_path):
    """A flag generated from options() is passed to libgreen.wsgi.server:
    --max-header-count 3 makes a request with 4 fields get 431."""
    write_app(tmp_path, "hello", HELLO)
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", "--max-header-count", "3",
                   "hello:app")
    (addr,) = cmd.serving()
    assert get(addr)[0] == 200
    assert get(addr, headers={"A": "1", "B": "2"})[0] == 431


def test_pid_file_written_and_removed(libgreen, tmp_path):
    write_app(tmp_path, "hello", HELLO)
    pid_file = tmp_path / "run" / "libgreen.pid"
    pid_file.parent.mkdir()
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", "--pid", str(pid_file),
                   "hello:app")
    cmd.serving()
    assert pid_file.read_text() == f"{cmd.pid}\n"
    # a second command with the same pid file refuses to start
    rc, _, err = run(["--allow-root", "-b", "127.0.0.1:0", "--pid", str(pid_file),
                      "hello:app"], tmp_path)
    assert rc == 2 and f"already running as PID {cmd.pid}" in err
    assert cmd.stop() == 0
    assert not pid_file.exists()


# ---- sockets ---------------------------------------------------------------

def test_unix_socket(libgreen, tmp_path):
    write_app(tmp_path, "hello", HELLO)
    path = tmp_path / "web.sock"
    cmd = libgreen("--allow-root", "-b", f"unix:{path}", "hello:app")
    assert cmd.serving() == [str(path)]
    assert get(str(path))[0] == 200
    assert cmd.stop() == 0
    assert not path.exists(), "the socket file is left behind"


def test_ipv6(libgreen, tmp_path):
    write_app(tmp_path, "envapp", ENV_APP)
    port = free_port("::1")
    cmd = libgreen("--allow-root", "-b", f"[::1]:{port}", "envapp:app")
    assert cmd.serving() == [("::1", port)]
    seen = json.loads(get(("::1", port))[1])
    assert (seen["name"], seen["port"]) == ("::1", str(port))


def test_several_binds(libgreen, tmp_path):
    """One server on every socket: a start-up line per socket, and
    SERVER_PORT / SERVER_NAME of the socket the request came in on."""
    write_app(tmp_path, "envapp", ENV_APP)
    p1, p2 = free_port(), free_port()
    path = tmp_path / "s.sock"
    cmd = libgreen("--allow-root", "-b", f"127.0.0.1:{p1}", "-b", f"127.0.0.1:{p2}",
                   "-b", f"unix:{path}", "envapp:app")
    cmd.serving()
    lines = cmd.wait_for(r"^\((\d+)\) wsgi starting up on (\S+)$", count=3)
    assert {m.group(2) for m in lines} == {f"http://127.0.0.1:{p1}",
                                          f"http://127.0.0.1:{p2}", f"unix:{path}"}
    assert len({m.group(1) for m in lines}) == 1  # one worker, one server()
    assert json.loads(get(("127.0.0.1", p1))[1])["port"] == str(p1)
    assert json.loads(get(("127.0.0.1", p2))[1])["port"] == str(p2)
    assert json.loads(get(str(path))[1])["name"] == str(path)
    assert cmd.stop() == 0
    for port in (p1, p2):  # every socket closed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_every_interface_warns(libgreen, tmp_path):
    write_app(tmp_path, "hello", HELLO)
    port = free_port("0.0.0.0")
    cmd = libgreen("--allow-root", "-b", f"0.0.0.0:{port}", "hello:app")
    cmd.serving()
    cmd.wait_for(r"warning: listening on every interface \(0\.0\.0\.0:\d+\): a reverse "
                 r"proxy in front of libgreen can be bypassed")


SYSTEMD_EMULATOR = r'''
import os, socket, sys
# What systemd does for a .socket unit: bind, then exec the service
# with the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID = the service's PID
# (the PID stays the same through exec).
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(128)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)  # dup2 makes the copy inheritable
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web")
os.execv(sys.argv[2], sys.argv[2:])
'''


def test_systemd_socket_activation_and_notify(libgreen, tmp_path):
    """Socket activation (LISTEN_FDS) and Type=notify (NOTIFY_SOCKET): the
    master serves systemd's socket and says READY=1 once the workers
    serve, RELOADING=1 then READY=1 around a reload, STOPPING=1."""
    write_app(tmp_path, "envapp", ENV_APP)
    (tmp_path / "systemd.py").write_text(SYSTEMD_EMULATOR)
    port = free_port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    env = {"LIBGREEN_SO": str(SO), "NOTIFY_SOCKET": str(tmp_path / "notify")}
    cmd = Command([str(tmp_path / "systemd.py"), str(port), str(LAUNCHER), "--allow-root",
                   "-w", "2", "envapp:app"], tmp_path, env, launcher=PYTHON)
    try:
        cmd.serving(workers=2)
        assert notify.recv(100) == b"READY=1"
        cmd.wait_for(r"serve envapp:app on 127\.0\.0\.1:%d \(systemd socket web\)" % port)
        seen = json.loads(get(("127.0.0.1", port))[1])
        assert seen["port"] == str(port)
        assert seen["listen_fds"] is None  # consumed by the master
        cmd.send(signal.SIGHUP)
        assert notify.recv(100) == b"RELOADING=1"
        assert notify.recv(100) == b"READY=1"
        assert cmd.stop() == 0
        assert notify.recv(100) == b"STOPPING=1"
    finally:
        cmd.kill_all()
        notify.close()


# ---- root -------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

ROOT_APP = '''
import json, os

def app(environ, start_response):
    with open(os.path.join(environ["QUERY_STRING"], "written"), "w") as f:
        f.write("x")
    try:
        os.setuid(0)
        regained = True
    except PermissionError:
        regained = False
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"uid": os.getuid(), "euid": os.geteuid(),
                        "gid": os.getgid(), "regained": regained,
                        "groups": os.getgroups()}).encode()]
'''


@needs_root
def test_root_refused_without_user(tmp_path):
    write_app(tmp_path, "hello", HELLO)
    rc, _, err = run(["-b", "127.0.0.1:0", "hello:app"], tmp_path)
    assert rc == 2
    (line,) = err.splitlines()
    assert "refusing to run the app as root" in line
    assert "--user" in line and "--allow-root" in line and "LIBGREEN_ALLOW_ROOT=1" in line


@pytest.fixture
def nobody_dir():
    """A directory nobody can reach and write (pytest's are root's, 0700)."""
    path = tempfile.mkdtemp(prefix="libgreen-nobody-")
    os.chmod(path, 0o777)
    yield Path(path)
    shutil.rmtree(path)


def usable_by_nobody():
    """Whether the interpreter under test runs as nobody (a pyenv build
    under /root does not)."""
    try:
        r = subprocess.run([PYTHON, "-c", "import ast, json"], user="nobody",
                           cwd="/", env=child_env(preload=False), capture_output=True)
    except OSError:  # cannot even be executed
        return False
    return r.returncode == 0


@needs_root
def test_user_nobody(libgreen, nobody_dir):
    if not usable_by_nobody():
        pytest.skip(f"{PYTHON} cannot be run by nobody")
    nobody = pwd.getpwnam("nobody")
    write_app(nobody_dir, "rootapp", ROOT_APP)
    path = nobody_dir / "web.sock"
    cmd = libgreen("--user", "nobody", "-b", f"unix:{path}", "-b", "127.0.0.1:0",
                   "--chdir", str(nobody_dir), "rootapp:app")
    addrs = cmd.serving()
    assert os.stat(f"/proc/{cmd.pid}").st_uid == nobody.pw_uid  # the master too
    for addr in addrs:
        seen = json.loads(get(addr, f"/?{nobody_dir}")[1])
        assert (seen["uid"], seen["euid"], seen["gid"]) == (
            nobody.pw_uid, nobody.pw_uid, nobody.pw_gid)
        assert seen["regained"] is False
        assert 0 not in seen["groups"]
        assert os.stat(nobody_dir / "written").st_uid == nobody.pw_uid
        os.unlink(nobody_dir / "written")
    assert os.stat(path).st_uid == nobody.pw_uid  # usable, and removable at exit
    assert cmd.stop() == 0
    assert not path.exists(), "the master (as nobody) did not remove its socket"


@needs_root
def test_allow_root_opt_in(libgreen, tmp_path):
    write_app(tmp_path, "rootapp", ROOT_APP)
    for args, env in ((["--allow-root"], {}), ([], {"LIBGREEN_ALLOW_ROOT": "1"})):
        cmd = libgreen(*args, "-b", "127.0.0.1:0", "rootapp:app", env=env)
        (addr,) = cmd.serving()
        assert json.loads(get(addr, f"/?{tmp_path}")[1])["euid"] == 0
        assert cmd.stop() == 0


# ---- installing -----------------------------------------------------------

def test_version_is_the_changelogs(tmp_path):
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    version = first.split("(", 1)[1].split(")", 1)[0]
    status, out, err = run(["--version"], tmp_path)
    assert (status, out, err) == (0, f"libgreen {version}\n", "")


# the default layout, and the Debian package's (lib/TRIPLET/libgreen)
@pytest.mark.parametrize("libdir", ["lib/libgreen", "lib/x86_64-linux-gnu/libgreen"])
def test_make_install_works_from_anywhere(tmp_path, libdir):
    dest = tmp_path / "dest"
    r = subprocess.run(["make", "-s", "-C", str(REPO), "install", "PREFIX=/opt/lg",
                        f"LIBDIR=/opt/lg/{libdir}", f"DESTDIR={dest}"],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    prefix = dest / "opt" / "lg"
    assert os.access(prefix / "bin" / "libgreen", os.X_OK)
    assert (prefix / libdir / "libgreen.so").is_file()
    assert list((prefix / libdir).glob("libgreen_py3*.so"))
    assert r"\-\-bind" in (prefix / "share" / "man" / "man1" / "libgreen.1").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_app(elsewhere, "hello", HELLO)
    env = child_env(preload=False)
    if PYTHON != "/usr/bin/python3":
        env["LIBGREEN_PYTHON"] = PYTHON
    cmd = subprocess.Popen([str(prefix / "bin" / "libgreen"), "--allow-root", "-b",
                            "127.0.0.1:0", "hello:app"], cwd=elsewhere, env=env,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        line = b""
        while b"wsgi starting up" not in line:
            line = cmd.stderr.readline()
            assert line, "the installed command did not start"
        port = int(line.rsplit(b":", 1)[1])
        assert get(("127.0.0.1", port))[0] == 200
        maps = open(f"/proc/{cmd.pid}/maps").read()
        assert str(prefix / libdir / "libgreen.so") in maps
    finally:
        cmd.send_signal(signal.SIGTERM)
        try:
            assert cmd.wait(timeout=15) == 0
        finally:
            if cmd.poll() is None:
                cmd.kill()
                cmd.wait()


def test_master_stays_small(libgreen, tmp_path):
    """The master runs no app code: its memory is a bare interpreter's,
    whatever the app imports."""
    write_app(tmp_path, "heavy", HELLO + "\nimport json, email.message, http.client\n"
              "BALLAST = bytearray(20 * 1024 * 1024)\n")
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", "-w", "2", "heavy:app")
    cmd.serving(workers=2)

    def rss(pid):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    master = rss(cmd.pid)
    workers = [rss(p) for p in cmd.worker_pids()]
    print(f"master RSS {master} KiB, workers {workers} KiB")
    assert master < 20 * 1024, f"master RSS {master} KiB"
    assert all(w > master + 15 * 1024 for w in workers)
