"""sidebyside/procs.py - starting, probing, measuring and stopping the
processes of one measurement.

Every process is started in its own session, pinned to its core (the
affinity call `taskset` makes) with its fd limit raised, and stopped by
its process group id (gunicorn's and uwsgi's children included). Memory
and CPU come from /proc: VmRSS, VmHWM and utime+stime of the server's
whole process tree.
"""
import os
import resource
import signal
import socket
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
FD_LIMIT_WANTED = 20000


def fd_limit():
    """The fd limit servers and wrk get: the hard limit, at most 20,000
    (enough for 10,000 connections plus the server's own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return FD_LIMIT_WANTED
    return min(hard, FD_LIMIT_WANTED)


def _preexec(cpus):
    n = fd_limit()

    def run():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
    return run


def spawn(argv, env, cwd, cpus, log_path, stdout=None):
    """Start argv pinned to `cpus` (None: anywhere), output to log_path."""
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=stdout or log, stderr=log,
                                start_new_session=True, preexec_fn=_preexec(cpus))
    finally:
        log.close()
    boost(proc.pid)
    return proc


def boost(pid):
    """BENCH_PRIORITY=N (-20..19, root): the scheduling weight of the new
    session. With autogroup scheduling (kernel.sched_autogroup_enabled,
    the default), each session gets an equal share of a CPU whatever its
    processes' nice values, so another user's `nice -n 10 make` takes as
    much of the server's core as the server gets; a negative autogroup
    nice gives the measured processes their cores back."""
    prio = os.environ.get("BENCH_PRIORITY")
    if not prio:
        return
    try:
        with open("/proc/%d/autogroup" % pid, "w") as f:
            f.write(prio)
    except OSError as e:
        raise SystemExit("side-by-side: BENCH_PRIORITY=%s: cannot set the autogroup nice "
                         "of pid %d (%s): it needs root, or unset it" % (prio, pid, e))


def stop(proc, sig=signal.SIGTERM, grace=5.0):
    """Stop proc's process group: sig, then SIGKILL after `grace` s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # Children (a gunicorn worker) may outlive a parent that exited.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(port, timeout=5.0):
    """One GET / answered with a 2xx status?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
        return head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2"))
    except OSError:
        return False


def wait_ready(proc, port, limit=30.0):
    """Wait until the server answers 200 (the readiness probe); False if
    it exited or did not answer within `limit` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if http_ok(port):
            return True
        time.sleep(0.05)
    return False


def tree(pid):
    """pid and all its descendants (scans /proc: no children files here)."""
    kids = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def status_kib(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def run_delay(pids, all_threads=True):
    """Seconds the threads of `pids` spent runnable but waiting for a CPU
    (schedstat's run-queue delay): the time other processes took from a
    process that wanted to run, which CPU shares cannot show (others may
    use a core's idle time without taking anything). all_threads=False
    counts each process's main thread only: a pool of 100 threads waiting
    for the GIL would otherwise add up to more than the window."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid) if all_threads else [str(pid)]
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


def socket_count(pid):
    """Open sockets of one process (its connections, plus listeners)."""
    n = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def cpu_times():
    """{cpu: (process time, irq + softirq, steal, total)} jiffies from
    /proc/stat. Loopback TCP does much of its work in softirqs, which
    /proc/PID/stat does not charge to the process that caused it."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals] + [0] * 8
                out[int(name[3:])] = (v[0] + v[1] + v[2], v[5] + v[6], v[7], sum(v[:8]))
    return out


class Sampler(threading.Thread):
    """Samples the server tree's summed VmRSS every 50 ms while running;
    `mark()` starts the measured window (the peak resets), `finish()`
    ends it and returns what happened in it."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.pids = tree(pid)
        self.running = True
        self.window = None
        self.sockets = {}
        self.lock = threading.Lock()
        self.start()

    def run(self):
        ticks = 0
        while self.running:
            if ticks % 20 == 0:  # the tree changes rarely: once a second
                self.pids = tree(self.pid)
            rss = sum(status_kib(p, "VmRSS") for p in self.pids)
            with self.lock:
                self.peak = max(self.peak, rss)
            ticks += 1
            time.sleep(0.05)

    def rss(self):
        return sum(status_kib(p, "VmRSS") for p in tree(self.pid))

    def mark(self):
        with self.lock:
            self.peak = 0
        self.pids = tree(self.pid)
        self.window = (time.monotonic(), {p: cpu_seconds([p]) for p in self.pids},
                       cpu_times(), run_delay(self.pids, all_threads=False))

    def note_sockets(self):
        """Connections per process now (the accept balance of workers)."""
        self.sockets = {p: socket_count(p) for p in tree(self.pid)}

    def finish(self):
        t0, c0, s0, d0 = self.window
        pids = tree(self.pid)
        delay = run_delay(pids, all_threads=False) - d0
        took = time.monotonic() - t0
        s1 = cpu_times()
        # CPU seconds of each process in the window (new ones: since birth)
        per = {p: cpu_seconds([p]) - c0.get(p, 0) for p in pids}
        with self.lock:
            peak = self.peak
        self.running = False
        return {
            "peak_rss_kib": peak,
            "hwm_kib": sum(status_kib(p, "VmHWM") for p in pids),
            "server_cpu": sum(per.values()) / took if took > 0 else 0,
            "server_wait": max(0.0, delay) / took if took > 0 else 0,
            "per_process_cpu": per,
            "cpu_stat": {c: tuple(b - a for a, b in zip(s0[c], s1[c])) for c in s1 if c in s0},
            "processes": len(pids),
        }
