"""tests/integration/test_asan.py - the ASan run itself (make asan,
scripts/asan-pytest): a memory error in a process a test starts, under
the preload, is reported to a file and ends that process, so the run
fails even where no test would notice. Skipped outside that run."""

import os
import re
import subprocess

import pytest

from conftest import PYTHON, UNDER_ASAN, child_env

pytestmark = pytest.mark.skipif(
    not UNDER_ASAN, reason="only under scripts/asan-pytest (make asan)")

OVERFLOW = '''
import ctypes, libgreen
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(8)
ctypes.memmove(p, b"x" * 16, 16)
print("not reported", flush=True)
'''


def test_memory_error_in_a_child_is_reported_and_ends_it(tmp_path):
    # the run's own options, with the reports going to tmp_path instead
    opts = re.sub(r"log_path=[^:]*", f"log_path={tmp_path}/asan",
                  os.environ["ASAN_OPTIONS"])
    r = subprocess.run([PYTHON, "-c", OVERFLOW], capture_output=True,
                       text=True, timeout=60,
                       env=child_env(extra={"ASAN_OPTIONS": opts}))
    assert r.returncode != 0 and "not reported" not in r.stdout
    reports = list(tmp_path.glob("asan.*"))
    assert reports, f"no report file; stderr: {r.stderr}"
    assert "heap-buffer-overflow" in reports[0].read_text()
