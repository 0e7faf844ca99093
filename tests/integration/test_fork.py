"""tests/integration/test_fork.py - a forked child resolves names, takes
locks and sleeps in green threads, as its parent did (hard rule 6).

The program under the preload first uses all three from green threads
(socket.getaddrinfo, so the resolver pool has started; a contended
threading.Lock; time.sleep), leaves a green thread holding a lock through
a sleep and another waiting for it, then forks: once from the main
context, once from inside a green thread (the child goes on there), and
once from a green thread whose function then returns in the child (the
child must end with status 0, as when its last thread returns). Every
child does the same work from the context that forked and from green
threads of its own, and reports through a pipe; an alarm kills a child
that hangs. The parent asserts, then finishes its own parked threads.
"""
import json
import os
import subprocess

import pytest

from conftest import PYTHON, SO, preload_value

pytestmark = pytest.mark.skipif(not SO.is_file(), reason="build/libgreen.so not built")

PROGRAM = r'''
import json, os, signal, socket, threading, time, traceback, libgreen

def lookup():
    return socket.getaddrinfo("localhost", 80, socket.AF_INET,
                              socket.SOCK_STREAM)[0][4][0]

def workout():
    """Lookups, a contended lock and sleeps in green threads, from any
    context; what a user would see of each."""
    lock = threading.Lock()
    st = {"n": 0, "addrs": set()}
    def contender():
        st["addrs"].add(lookup())
        for _ in range(10):
            with lock:           # read, sleep, write: a lost update shows
                n = st["n"]
                time.sleep(0.001)
                st["n"] = n + 1
    for g in [libgreen.spawn(contender) for _ in range(5)]:
        g.wait(timeout=15)
    t0 = time.monotonic()
    for g in [libgreen.spawn(time.sleep, 0.1) for _ in range(5)]:
        g.wait(timeout=15)
    return {"n": st["n"], "addrs": sorted(st["addrs"]),
            "sleeps_overlap": time.monotonic() - t0 < 0.4}

def plain():
    """The same calls outside green threads: libc's own, so a ready green
    thread does not run while they wait."""
    ran = []
    g = libgreen.spawn(ran.append, 1)
    lock = threading.Lock()
    with lock:
        time.sleep(0.02)
    out = {"addr": lookup(), "blocked": not ran}
    g.wait(timeout=15)
    return out

def child(w):
    signal.alarm(20)             # a hang dies here, not in the test run
    try:
        out = {"plain": plain(), "green": workout()}
    except BaseException:
        out = {"error": traceback.format_exc()}
    os.write(w, json.dumps(out).encode() + b"\n")
    os.close(w)

def fork_and_report(how):
    r, w = os.pipe()
    def forker(returns):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            child(w)
            if returns:
                return None      # the forking green thread ends the child
            os._exit(0)
        return pid
    if how == "main":
        pid = forker(False)
    else:
        pid = libgreen.spawn(forker, how == "green_returns").wait(timeout=15)
    os.close(w)
    with os.fdopen(r) as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    return {"status": os.waitstatus_to_exitcode(status),
            "report": json.loads(report) if report else None}

result = {"parent_before": workout()}
held = threading.Lock()
def holder():
    with held:
        time.sleep(0.3)
def waiter():
    time.sleep(0.01)
    with held:
        return "got it"
busy = [libgreen.spawn(holder), libgreen.spawn(waiter),
        libgreen.spawn(lookup)]
libgreen.sleep(0.05)             # runs them until they park
for how in ("main", "green", "green_returns"):
    result[how] = fork_and_report(how)
result["parent_after"] = workout()
result["parent_busy"] = [g.wait(timeout=15) for g in busy]
print(json.dumps(result))
'''

WORK = {"n": 50, "addrs": ["127.0.0.1"], "sleeps_overlap": True}


def run(timeout=90):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LD_", "PYTHON", "LIBGREEN_"))}
    env["LD_PRELOAD"] = preload_value()
    proc = subprocess.Popen([PYTHON, "-c", PROGRAM], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "exit %s\nstdout:\n%s\nstderr:\n%s" % (
        proc.returncode, out, err)
    return json.loads(out.strip().splitlines()[-1])


def check(r):
    assert r["parent_before"] == WORK
    for how in ("main", "green", "green_returns"):
        child = r[how]
        assert child["report"] == {"plain": {"addr": "127.0.0.1", "blocked": True},
                                   "green": WORK}, how
        assert child["status"] == 0, how
    assert r["parent_after"] == WORK
    assert r["parent_busy"] == [None, "got it", "127.0.0.1"]


def test_child_resolves_locks_and_sleeps_after_fork():
    check(run())


# Green threads that finished in the parent left their Python thread states
# in the server's pool; CPython frees every thread state but the forking
# one in the child (PyOS_AfterFork_Child). PYTHONMALLOC=debug poisons freed
# memory, so a child green thread given a freed state crashes at once.
# (Only sleeps here: the debug allocator's GIL check does not know green
# threads' own thread states, and aborts on allocations made in them.)
REUSE_PROGRAM = r'''
import os, time, libgreen
work = lambda: (time.sleep(0.01), 1)[1]
assert [libgreen.spawn(work).wait(timeout=15) for _ in range(3)] == [1, 1, 1]
pid = os.fork()
if pid == 0:
    ok = [libgreen.spawn(work).wait(timeout=15) for _ in range(3)] == [1, 1, 1]
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
'''


def test_child_green_threads_get_live_thread_states():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LD_", "PYTHON", "LIBGREEN_"))}
    env.update(LD_PRELOAD=preload_value(), PYTHONMALLOC="debug")
    proc = subprocess.run([PYTHON, "-c", REUSE_PROGRAM], env=env, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0"], proc.stderr
