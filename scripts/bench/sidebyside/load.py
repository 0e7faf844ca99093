"""sidebyside/load.py - the load generator: Debian's wrk, one thread,
pinned to its own core, and what its report says.

wrk keeps every connection alive and sends the next request as soon as
the previous answer is read (closed-loop load): req/s is what the server
sustains at that many connections, p50/p99 are wrk's per-request
latencies (from the request's send to its answer's end).
"""
import os
import re
import resource
import shutil
import subprocess
import time

from . import procs

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk_path():
    return shutil.which("wrk")


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse(out):
    """wrk's report -> a dict (rps None when wrk printed no result)."""
    res = {"rps": None, "requests": 0, "p50_ms": None, "p99_ms": None,
           "errors": 0, "error_detail": ""}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s+%s(?:\.000)?%%\s+(\S+)" % pct, out, re.M)
        if m:
            res[key] = _ms(m.group(1))
    detail = []
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        for name, n in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(n):
                res["errors"] += int(n)
                detail.append("%s %s" % (n, name))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
        detail.append("%s non-2xx" % m.group(1))
    if not res["requests"]:
        res["p50_ms"] = res["p99_ms"] = None
    res["error_detail"] = ", ".join(detail)
    return res


def count_unanswered(res, conns):
    """wrk counts no error for a request still unanswered when the window
    ends (a server that queues connections it cannot serve shows 0
    errors and few requests). Fewer answers than connections proves at
    least the difference never got one: counted as errors."""
    missing = conns - res["requests"]
    if missing > 0:
        res["errors"] += missing
        res["error_detail"] = ", ".join(x for x in (
            res["error_detail"], "%d connections never answered" % missing) if x)


def run(port, conns, seconds, timeout, cpus, log_path, threads=1, sampler=None):
    """wrk -t threads -c conns for `seconds` against 127.0.0.1:port.
    Returns parse()'s dict plus wrk's own CPU use (1.0 = one core busy).
    With a sampler, its window spans exactly wrk's run, and the server's
    connections per process are counted half-way through."""
    if conns + 16 > procs.fd_limit():
        raise RuntimeError("wrk needs %d fds for %d connections but the hard limit "
                           "is %d: raise it (ulimit -Hn, limits.conf)"
                           % (conns + 16, conns, procs.fd_limit()))
    argv = [wrk_path(), "-t%d" % threads, "-c%d" % conns, "-d%ds" % max(1, round(seconds)),
            "--timeout", "%ds" % timeout, "--latency", "http://127.0.0.1:%d/" % port]
    with open(log_path, "ab") as log:
        log.write(("$ %s\n" % " ".join(argv)).encode())
    t0 = time.monotonic()
    proc = procs.spawn(argv, dict(os.environ), None, cpus, log_path, stdout=subprocess.PIPE)
    if sampler:
        sampler.mark()
    try:
        half = t0 + seconds / 2
        while sampler and proc.poll() is None and time.monotonic() < half:
            time.sleep(0.05)
        if sampler and proc.poll() is None:
            sampler.note_sockets()
        # wrk's own CPU time: what our reaped children used grows by
        # exactly wrk's when it is reaped (servers are reaped later).
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        d0 = procs.run_delay([proc.pid])
        waited = 0.0
        end = time.monotonic() + seconds + timeout + 60
        while proc.poll() is None and time.monotonic() < end:
            waited = max(waited, procs.run_delay([proc.pid]) - d0)  # its last value
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=max(1, end - time.monotonic()))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    except subprocess.TimeoutExpired:
        procs.stop(proc, grace=1)
        raise RuntimeError("wrk did not finish within %.0f s" % (seconds + timeout + 60))
    took = time.monotonic() - t0
    wrk_cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    window = sampler.finish() if sampler else {}
    text = out.decode(errors="replace")
    with open(log_path, "ab") as log:
        log.write(out)
    res = parse(text)
    count_unanswered(res, conns)
    res["wall_s"] = took
    res["wrk_cpu"] = wrk_cpu / took if took > 0 else 0
    res["wrk_wait"] = waited / took if took > 0 else 0
    res.update(window)
    return res
