"""The wheel (`make test-wheel`): built by `make wheel`, installed with
pip (no index) into a fresh venv of Debian's python3 and of each pyenv
CPython 3.10-3.13 the wheel has a server module for, its `libgreen`
console script serves an app installed into that venv, with that venv's
interpreter.

Run as root or not; the libev check needs root (a private mount
namespace hides libev.so.4).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pkgtools import Server, concurrent_gets, free_port, get, write_app_project  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PYENV_ROOT = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")


def the_wheel():
    wheels = sorted((REPO / "build" / "wheel").glob("libgreen-*-py3-none-linux_x86_64.whl"))
    if not wheels:
        pytest.fail("no wheel in build/wheel: run `make wheel` (make test-wheel does)")
    return wheels[-1]


def wheel_minors(wheel):
    with zipfile.ZipFile(wheel) as z:
        return sorted(int(n.rsplit("libgreen_py3", 1)[1][:-3]) for n in z.namelist()
                      if "/libgreen_command/libgreen_py3" in n)


def interpreters():
    """Debian's python3 and one pyenv build per minor version 3.10-3.13."""
    found = [("debian", "/usr/bin/python3")]
    for minor in (10, 11, 12, 13):
        builds = sorted(glob.glob(f"{PYENV_ROOT}/versions/3.{minor}.*/bin/python3"))
        if builds:
            found.append((f"pyenv-3.{minor}", builds[-1]))
    return found


def minor_of(python):
    out = subprocess.run([python, "-c", "import sys; print(sys.version_info[1])"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.fixture(scope="module")
def app_wheel(tmp_path_factory):
    """The app `greenshop`, a project outside this repository, built into
    a pure wheel once (Debian's setuptools), for pip to install offline."""
    project = write_app_project(tmp_path_factory.mktemp("greenshop-src"))
    out = tmp_path_factory.mktemp("greenshop-wheel")
    subprocess.run(["/usr/bin/python3", "-m", "pip", "wheel", "-q", "--no-index",
                    "--no-build-isolation", "--no-deps", "-w", str(out), str(project)],
                   check=True, capture_output=True, timeout=120)
    return next(out.glob("greenshop-*.whl"))


_VENVS = {}


def make_venv(python, where, wheel, app_wheel):
    """A venv of python at where with the wheel and the app installed;
    made once per interpreter (the tests of one run share it)."""
    if python in _VENVS:
        return _VENVS[python]
    subprocess.run([python, "-m", "venv", str(where)], check=True, timeout=180,
                   capture_output=True)
    pip = [str(where / "bin" / "python3"), "-m", "pip", "install", "-q",
           "--no-index", "--disable-pip-version-check"]
    r = subprocess.run(pip + [str(wheel), str(app_wheel)], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    _VENVS[python] = where
    return where


def command_env():
    """A user's environment: no preload, no libgreen variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIBGREEN_", "LD_PRELOAD", "PYTHON"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


def root_args():
    return ["--allow-root"] if os.geteuid() == 0 else []


@pytest.mark.parametrize("name,python", interpreters(), ids=[n for n, _ in interpreters()])
def test_venv_serves_its_app(name, python, tmp_path, app_wheel):
    wheel = the_wheel()
    minor = minor_of(python)
    if minor not in wheel_minors(wheel):
        pytest.skip(f"the wheel has no server module for 3.{minor} (no headers at build time)")
    venv = make_venv(python, tmp_path / "venv", wheel, app_wheel)
    command = venv / "bin" / "libgreen"
    assert command.is_file(), "pip made no libgreen console script"
    port = free_port()
    # run from an unrelated directory: the app is importable only from the venv
    server = Server([str(command), *root_args(), "--workers", "1", "--bind",
                     f"127.0.0.1:{port}", "greenshop.wsgi:application"],
                    env=command_env(), cwd="/")
    try:
        server.serving()
        status, body = get(("127.0.0.1", port))
        assert status == 200, body
        info = json.loads(body)
        assert info["prefix"] == str(venv)
        assert info["file"].startswith(str(venv / "lib")), info
        assert info["python"] == f"3.{minor}"
        site = Path(info["file"]).parents[1]
        assert info["preload"].split()[0] == str(site / "libgreen_command" / "libgreen.so")
        # one worker, four requests sleeping 1 s each: they overlap
        seconds, results = concurrent_gets(("127.0.0.1", port), 4, "/?1")
        assert [s for s, _ in results] == [200] * 4
        assert len({json.loads(b)["pid"] for _, b in results}) == 1
        assert seconds < 3.0, f"4 sleeping requests took {seconds:.1f} s: not concurrent"
    finally:
        assert server.stop() == 0, server.output


def test_import_without_the_command_says_how(tmp_path, app_wheel):
    venv = make_venv("/usr/bin/python3", tmp_path / "venv", the_wheel(), app_wheel)
    r = subprocess.run([str(venv / "bin" / "python3"), "-c", "import libgreen"],
                       capture_output=True, text=True, env=command_env(), timeout=60)
    assert r.returncode == 1
    assert "libgreen works only when preloaded" in r.stderr
    assert "libgreen MODULE:APP" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="hiding libev needs root and unshare (a private mount namespace)")
def test_missing_libev_is_named(tmp_path, app_wheel):
    venv = make_venv("/usr/bin/python3", tmp_path / "venv", the_wheel(), app_wheel)
    libev = subprocess.run(["/usr/bin/python3", "-c",
                            "import ctypes.util; print(ctypes.util.find_library('ev'))"],
                           capture_output=True, text=True).stdout.strip()
    paths = [p for p in glob.glob("/usr/lib/*/libev.so.4*") + glob.glob("/lib/*/libev.so.4*")
             if not os.path.islink(p)]
    assert paths, f"no libev.so.4 found to hide ({libev})"
    hide = " && ".join(f"mount --bind /dev/null {p}" for p in paths)
    r = subprocess.run(["unshare", "--mount", "sh", "-c",
                        f"{hide} && exec {venv}/bin/libgreen --allow-root greenshop.wsgi:application"],
                       capture_output=True, text=True, env=command_env(), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "libev is not installed" in r.stderr
    assert "libev4" in r.stderr
