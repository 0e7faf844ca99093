"""libgreen.so and libgreen_pyXY.so from different builds refuse to mix.

The server reaches the hub through a table whose layout is whatever
hub/api.def said when it was built, so a libgreen_pyXY.so copied next to
a libgreen.so of another build would call through the wrong slots. Both
carry the build id the Makefile wrote to <build dir>/gen/build_id.h, and
`import libgreen` compares them (server/api.c).

A pair from different builds is made by copying the built pair to a
temporary directory and rewriting the id in one of the copies: the same
bytes a rebuild after a source edit would change, without a second build.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, SO, child_env, preload_value


def build_id():
    header = SO.parent / "gen" / "build_id.h"
    m = re.search(r'LIBGREEN_BUILD_ID "([0-9a-zA-Z]+)"', header.read_text())
    assert m, f"no LIBGREEN_BUILD_ID in {header}"
    return m.group(1)


def server_module():
    r = subprocess.run(
        [PYTHON, "-c", "import sys; print('%d%d' % sys.version_info[:2])"],
        env=child_env(preload=False), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    path = SO.parent / f"libgreen_py{r.stdout.decode().strip()}.so"
    if not path.is_file():
        pytest.skip(f"{path} not built for {PYTHON}")
    return path


def copy_pair(dest):
    """libgreen.so and this interpreter's libgreen_pyXY.so, copied into
    dest (boot.c opens the server module next to libgreen.so)."""
    py = server_module()
    dest.mkdir()
    return (Path(shutil.copy(SO, dest / SO.name)),
            Path(shutil.copy(py, dest / py.name)))


def rewrite_id(path, old, new):
    data = path.read_bytes()
    assert data.count(old.encode()) >= 1, f"build id {old} not in {path}"
    path.write_bytes(data.replace(old.encode(), new.encode()))


def import_under(so):
    return subprocess.run(
        [PYTHON, "-c",
         "import libgreen\n"
         "libgreen.spawn(print, 'spawned').wait(5)\n"
         "libgreen.sleep(0.01)\n"
         "print('imported')"],
        cwd=so.parent, env=child_env(extra={"LD_PRELOAD": preload_value(so)}),
        capture_output=True, timeout=30)


def test_same_build_imports_from_a_copy(tmp_path):
    so, _ = copy_pair(tmp_path / "same")
    r = import_under(so)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["spawned", "imported"]


@pytest.mark.parametrize("changed", ["libgreen.so", "libgreen_pyXY.so"])
def test_different_builds_fail_loudly(tmp_path, changed):
    old = build_id()
    new = "".join("0" if c != "0" else "1" for c in old)
    so, py = copy_pair(tmp_path / "mixed")
    rewrite_id(so if changed == "libgreen.so" else py, old, new)
    so_id, py_id = (new, old) if changed == "libgreen.so" else (old, new)

    r = import_under(so)
    err = r.stderr.decode()
    assert r.returncode == 1, err          # an exception, not a crash
    assert "ImportError" in err, err
    assert f"{so} is build {so_id}" in err, err
    assert f"{py} is build {py_id}" in err, err
    assert ("Rebuild with make; libgreen.so and libgreen_pyXY.so must come "
            "from the same build") in err, err
    assert "imported" not in r.stdout.decode()
