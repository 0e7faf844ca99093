"""The Debian package (`make test-deb`, as root): `apt-get install` of
build/libgreen_*.deb, an app outside this repository served through the
installed units, then `apt-get purge`, after which nothing of the package
is left: no file, no directory, no libgreen user or group.

Where systemd is PID 1 the app is served by systemd itself
(`systemctl start libgreen@NAME.socket`, a connection starts the
service). Where it is not (containers), the test does what systemd would
do with the installed unit files, read from /lib/systemd/system: it binds
the socket of libgreen@.socket, runs ExecStart= of libgreen@.service as
its User=/Group= with its EnvironmentFile= and Environment=, passes the
socket as LISTEN_FDS and a NOTIFY_SOCKET, and waits for READY=1. Either
way the units, the command, the user and the env file are the installed
ones.

It changes the system for about a minute (a package, a user), so it is
not part of `make test`; it skips itself when libgreen is already
installed or a libgreen user exists (it would not remove what it did not
make).
"""

import fnmatch
import glob
import grp
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
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pkgtools import APP_SOURCE, Server, concurrent_gets, get  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NAME = "pkgtest"
UNITS = Path("/lib/systemd/system")
LIBDIR = "/usr/lib/x86_64-linux-gnu/libgreen"
EXAMPLE = "/usr/share/doc/libgreen/examples/app.conf"
MANPAGE = "/usr/share/man/man1/libgreen.1.gz"
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-y", "-q"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("apt-get"),
                                reason="installs a package: needs root and apt-get")


def sh(*argv, timeout=300, check=True):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if check:
        assert r.returncode == 0, f"{' '.join(argv)}: {r.returncode}\n{r.stdout}{r.stderr}"
    return r


def installed():
    r = sh("dpkg-query", "-W", "-f=${Status}", "libgreen", check=False)
    return "install ok installed" in r.stdout


def user_exists(name="libgreen"):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name="libgreen"):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def dpkg_excludes(path):
    """True if dpkg is told not to install path (path-exclude in
    /etc/dpkg/dpkg.cfg.d, as slim container images do for /usr/share/man
    and /usr/share/doc); the last matching rule wins."""
    excluded = False
    for cfg in sorted(glob.glob("/etc/dpkg/dpkg.cfg.d/*")):
        for line in Path(cfg).read_text(errors="replace").splitlines():
            rule, _, pattern = line.strip().partition(" ")
            if rule in ("path-exclude", "path-include") and fnmatch.fnmatch(path, pattern.strip()):
                excluded = rule == "path-exclude"
    return excluded


def systemd_runs():
    return os.path.isdir("/run/systemd/system")


def the_deb():
    debs = sorted((REPO / "build").glob("libgreen_*_amd64.deb"))
    if not debs:
        pytest.fail("no build/libgreen_*_amd64.deb: run `make deb` (make test-deb does)")
    return debs[-1]


# ---- the unit files, read as systemd reads them (the keys used here) ------

def unit_settings(path, instance):
    """{key: [values]} of a unit file, %i replaced by instance;
    continuation lines joined, comments and section headers skipped."""
    settings, logical = {}, ""
    for line in Path(path).read_text().splitlines():
        if logical:
            line = logical + " " + line.strip()
            logical = ""
        stripped = line.strip()
        if stripped.endswith("\\"):
            logical = stripped[:-1].rstrip()
            continue
        if not stripped or stripped[0] in "#;[":
            continue
        key, _, value = stripped.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip().replace("%i", instance))
    return settings


def one(settings, key, default=None):
    values = [v for v in settings.get(key, []) if v]
    return values[-1] if values else default


def environment_file(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


# ---- serving: with systemd, or as systemd would ---------------------------

def serve_with_systemd(check):
    sh("systemctl", "daemon-reload")
    sh("systemctl", "start", f"libgreen@{NAME}.socket")
    try:
        path = one(unit_settings(UNITS / "libgreen@.socket", NAME), "ListenStream")
        check(path)
        assert sh("systemctl", "is-active", f"libgreen@{NAME}.service").stdout.strip() == "active"
    finally:
        sh("systemctl", "stop", f"libgreen@{NAME}.socket", f"libgreen@{NAME}.service",
           check=False)
    assert not os.path.exists(path), "RemoveOnStop=yes: the socket file should be gone"


def serve_like_systemd(check):
    sock_unit = unit_settings(UNITS / "libgreen@.socket", NAME)
    svc_unit = unit_settings(UNITS / "libgreen@.service", NAME)
    assert one(svc_unit, "Type") == "notify"
    path = one(sock_unit, "ListenStream")
    assert path.startswith("/"), f"expected a Unix socket, ListenStream={path}"
    made_dir = not os.path.isdir(os.path.dirname(path))
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server = None
    try:
        listener.bind(path)
        os.chown(path, pwd.getpwnam(one(sock_unit, "SocketUser")).pw_uid,
                 grp.getgrnam(one(sock_unit, "SocketGroup")).gr_gid)
        os.chmod(path, int(one(sock_unit, "SocketMode"), 8))
        listener.listen(int(one(sock_unit, "Backlog", "128")))
        notify_name = f"@libgreen-test-notify-{os.getpid()}"
        notify.bind("\0" + notify_name[1:])
        notify.settimeout(30)

        user = pwd.getpwnam(one(svc_unit, "User"))
        gid = grp.getgrnam(one(svc_unit, "Group")).gr_gid
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "HOME": user.pw_dir, "USER": user.pw_name,
               "LOGNAME": user.pw_name, "SHELL": user.pw_shell}
        for assignment in svc_unit.get("Environment", []):
            key, _, value = assignment.partition("=")
            env[key] = value
        env.update(environment_file(one(svc_unit, "EnvironmentFile")))
        env.update(LISTEN_FDS="1", LISTEN_FDNAMES=one(sock_unit, "FileDescriptorName"),
                   NOTIFY_SOCKET=notify_name)
        exec_start = one(svc_unit, "ExecStart").split()
        fd = listener.fileno()

        def as_the_service():
            os.setgroups([])
            os.setgid(gid)
            os.setuid(user.pw_uid)
            os.dup2(fd, 3)

        # LISTEN_PID is the PID that execs ExecStart: sh's own ($$)
        server = Server(["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', *exec_start],
                        env=env, cwd="/", preexec_fn=as_the_service, pass_fds=(3,))
        assert notify.recv(4096) == b"READY=1", server.output
        server.serving()
        check(path)
        os.kill(server.pid, signal.Signals[one(svc_unit, "KillSignal", "SIGTERM")])
        assert server.proc.wait(60) == 0, server.output
        assert notify.recv(4096) == b"STOPPING=1", server.output
        assert "systemd socket " + NAME in server.output, server.output
    finally:
        if server:
            server.stop()
        listener.close()
        notify.close()
        if os.path.exists(path):
            os.unlink(path)
        if made_dir:
            os.rmdir(os.path.dirname(path))


# ---- the test -------------------------------------------------------------

@pytest.fixture
def app_dir():
    """The app, in a directory of its own the libgreen user can read
    (not /tmp: the service has PrivateTmp=yes)."""
    base = Path(tempfile.mkdtemp(prefix="libgreen-pkgtest-", dir="/srv"))
    base.chmod(0o755)
    (base / "greenshop").mkdir(mode=0o755)
    (base / "greenshop" / "__init__.py").write_text("")
    (base / "greenshop" / "wsgi.py").write_text(APP_SOURCE)
    yield base
    shutil.rmtree(base)


def test_install_serve_purge(app_dir):
    if installed() or user_exists() or group_exists():
        pytest.skip("libgreen is installed or a libgreen user/group exists already: "
                    "this test would remove them")
    deb = the_deb()
    conf = Path(f"/etc/libgreen/{NAME}.conf")
    files = []
    try:
        sh(*APT, "install", "--no-install-recommends", str(deb))
        files = sh("dpkg", "-L", "libgreen").stdout.split()
        check_installed(files)
        example = Path(EXAMPLE if not dpkg_excludes(EXAMPLE)
                       else REPO / "debian" / "app.conf").read_text()
        conf.write_text(re.sub(r"(?m)^LIBGREEN_APP=.*$", "LIBGREEN_APP=greenshop.wsgi:application",
                        re.sub(r"(?m)^LIBGREEN_CHDIR=.*$", f"LIBGREEN_CHDIR={app_dir}",
                        re.sub(r"(?m)^LIBGREEN_WORKERS=.*$", "LIBGREEN_WORKERS=1", example))))
        check_units_verify()
        (serve_with_systemd if systemd_runs() else serve_like_systemd)(
            lambda path: check_served(path, app_dir))
    finally:
        conf.unlink(missing_ok=True)
        if installed() or files:
            sh(*APT, "purge", "libgreen")
    check_purged(files)


def check_installed(files):
    assert "/usr/bin/libgreen" in files
    for so in ("libgreen.so", "libgreen_py%d%d.so" % sys.version_info[:2]):
        assert f"{LIBDIR}/{so}" in files
    assert not [f for f in files if "libev" in f or "libunwind" in f], "vendored libraries"
    depends = sh("dpkg-query", "-W", "-f=${Depends}", "libgreen").stdout
    for dep in ("libev4", "libunwind8", "python3 (>= 3.", "adduser"):
        assert dep in depends, depends
    ldd = sh("ldd", f"{LIBDIR}/libgreen.so").stdout
    assert re.search(r"libev\.so\.4 => /(usr/)?lib/x86_64-linux-gnu/libev\.so\.4", ldd), ldd
    if not dpkg_excludes(MANPAGE):
        assert sh("man", "-w", "libgreen").stdout.strip() == MANPAGE
        page = sh("man", "-P", "cat", "libgreen").stdout
        assert "--bind" in page and "LISTEN_FDS" in page
    r = sh("/usr/bin/libgreen", "--help")
    assert "--workers" in r.stdout
    user = pwd.getpwnam("libgreen")
    assert user.pw_uid < 1000 and user.pw_shell.endswith("nologin"), user
    assert grp.getgrgid(user.pw_gid).gr_name == "libgreen"
    assert os.path.isdir("/etc/libgreen")


def check_units_verify():
    """systemd's own check of the installed units (it runs without a
    running systemd too)."""
    if not shutil.which("systemd-analyze"):
        return
    r = sh("systemd-analyze", "verify", f"libgreen@{NAME}.socket",
           f"libgreen@{NAME}.service", check=False)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


def check_served(path, app_dir):
    status, body = get(path)
    assert status == 200, body
    info = json.loads(body)
    assert info["user"] == "libgreen"
    assert info["file"] == f"{app_dir}/greenshop/wsgi.py"
    assert info["preload"].split()[0] == f"{LIBDIR}/libgreen.so"
    # one worker, four requests sleeping 1 s each: they overlap
    seconds, results = concurrent_gets(path, 4, "/?1")
    assert [s for s, _ in results] == [200] * 4
    assert seconds < 3.0, f"4 sleeping requests took {seconds:.1f} s: not concurrent"


def check_purged(files):
    assert not installed()
    left = [f for f in files if os.path.lexists(f) and not os.path.isdir(f)]
    assert not left, f"files left after purge: {left}"
    for d in (LIBDIR, "/etc/libgreen", "/usr/share/doc/libgreen"):
        assert not os.path.exists(d), f"{d} left after purge"
    assert not user_exists() and not group_exists(), "the libgreen user or group is left"
    assert not glob.glob("/etc/systemd/system/*.wants/libgreen@*")
