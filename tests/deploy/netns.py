"""tests/deploy/netns.py - the private network of the multi-host test.

One "lb" namespace holds a bridge (br0, 10.203.0.1/24) and nginx; each
host namespace holds the other end of a veth pair (eth0, 10.203.0.1N/24)
whose first end is a port of that bridge. Both ends of every veth are
created directly inside their namespaces, so nothing - no link, no
address, no route - is ever added to the machine's own network
namespace: the addresses cannot collide with the machine's networks, and
a leftover cannot disturb them.

Every name starts with PREFIX + "<pid of the test>-", so cleanup is by
exact name, and a leftover of a run that died (its pid is gone or is no
longer this test) is recognised and removed before the next run starts.

Cleanup of a namespace: kill every process still in it (by PID, as
`ip netns pids` lists them), then delete it; the kernel removes its veth
ends and the bridge with it. The test does that itself on every way out
it can see; a guard process (`netns.py guard NAME...`, started before
the first namespace) does it when the test dies without a chance to,
killed with SIGKILL say: it waits for the end of a pipe only the test
writes to. (A parent-death signal would not do: the hosts drop to user
nobody, and a change of user clears it.)
"""

import ctypes
import os
import re
import signal
import subprocess
import sys
import time

PREFIX = "lgdeploy-"
SUBNET = "10.203.0"          # .1: the bridge (nginx's side); .1N: host N
CLONE_NEWNET = 0x40000000
SCRIPT_MARK = "tests/deploy/"  # in the cmdline of a live run of this test


class Unavailable(Exception):
    """This machine cannot run the test (the message says why)."""


def ip(*args, check=True):
    """Runs `ip ARGS`; raises RuntimeError with ip's message on failure."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


def list_namespaces():
    """Names of every named network namespace (`ip netns list`)."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _is_live_run(pid):
    """Whether pid is a running copy of this test (not a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return SCRIPT_MARK.encode() in f.read()
    except OSError:
        return False


def pids_in(name):
    """PIDs of the processes in namespace name, ourselves excluded."""
    out = ip("netns", "pids", name, check=False)
    return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]


def kill_pids(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def delete_namespace(name):
    """Kills what runs in it, by PID, and deletes it. Idempotent."""
    for _ in range(50):
        pids = pids_in(name)
        if not pids:
            break
        kill_pids(pids)
        time.sleep(0.02)   # the kernel reaps them; look again
    if name in list_namespaces():
        ip("netns", "delete", name)


def remove_leftovers(log):
    """Deletes the namespaces of earlier runs that died without cleaning
    up; returns the names of those that belong to a run still going."""
    busy = []
    for name in list_namespaces():
        m = re.match(re.escape(PREFIX) + r"(\d+)-", name)
        if not m:
            continue
        # Our own pid in a name can only be a dead run's (pids are reused).
        if int(m.group(1)) != os.getpid() and _is_live_run(int(m.group(1))):
            busy.append(name)
            continue
        log(f"removing {name}, left over by a run that died (pid {m.group(1)})")
        delete_namespace(name)
    return busy


class Network:
    """The namespaces of one run: .lb and .hosts[i] are their names,
    .address(i) host i's address. Made by create(), removed by destroy()
    (which also undoes enter())."""

    def __init__(self, hosts):
        base = f"{PREFIX}{os.getpid()}-"
        self.lb = base + "lb"
        self.hosts = [f"{base}h{i + 1}" for i in range(hosts)]
        self.gateway = f"{SUBNET}.1"
        self.made = []
        self._home = None
        self._guard = None

    def address(self, i):
        return f"{SUBNET}.{11 + i}"

    def create(self):
        existing = set(list_namespaces())
        clash = [n for n in [self.lb] + self.hosts if n in existing]
        if clash:
            raise RuntimeError(f"network namespace {clash[0]} exists already "
                               f"(ip netns list): delete it with `ip netns delete "
                               f"{clash[0]}` if no test runs")
        # Its own session: a Ctrl+C meant for the test does not reach it.
        self._guard = subprocess.Popen([sys.executable, __file__, "guard", self.lb, *self.hosts],
                                       stdin=subprocess.PIPE, start_new_session=True)
        self._add(self.lb)
        ip("-n", self.lb, "link", "set", "lo", "up")
        ip("-n", self.lb, "link", "add", "br0", "type", "bridge")
        ip("-n", self.lb, "addr", "add", f"{self.gateway}/24", "dev", "br0")
        ip("-n", self.lb, "link", "set", "br0", "up")
        for i, ns in enumerate(self.hosts):
            self._add(ns)
            port = f"h{i + 1}"
            ip("-n", self.lb, "link", "add", port, "type", "veth",
               "peer", "name", "eth0", "netns", ns)
            ip("-n", self.lb, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")

    def _add(self, name):
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            msg = r.stderr.strip()
            if "ermission" in msg or "not permitted" in msg:
                raise Unavailable(f"cannot make network namespaces here ({msg})")
            raise RuntimeError(f"ip netns add {name}: {msg}")
        self.made.append(name)

    def enter(self, name):
        """Moves this process's main thread (and the threads and children
        it starts from now on) into namespace name."""
        libc = ctypes.CDLL(None, use_errno=True)
        if self._home is None:
            self._home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns into {name}: {os.strerror(e)}")
        finally:
            os.close(fd)

    def destroy(self):
        """Back to our own namespace, then every namespace deleted."""
        if self._home is not None:
            ctypes.CDLL(None, use_errno=True).setns(self._home, CLONE_NEWNET)
            os.close(self._home)
            self._home = None
        for name in reversed(self.made):
            try:
                delete_namespace(name)
            except RuntimeError as e:
                print(f"test-deploy: cleanup: {e}", flush=True)
        self.made = []
        if self._guard is not None:
            self._guard.stdin.close()      # nothing left for it to do
            self._guard.wait(timeout=30)
            self._guard = None


def guard(names):
    """Waits until stdin ends (the test closed it, or died), then deletes
    those of names that still exist, with what runs in them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()
    left = set(list_namespaces())
    for name in names:
        if name in left:
            delete_namespace(name)


if __name__ == "__main__" and sys.argv[1:2] == ["guard"]:
    guard(sys.argv[2:])
