"""sidebyside/runner.py - one measurement of one server with one app, and
the rounds that repeat them.

A measurement: start the server pinned to its core, probe it until it
answers, note its RSS, warm it up (1 s of wrk, then a fresh wrk), measure
one window while sampling its RSS and CPU, stop it. The server is started
afresh for every run, so no run inherits another's heap or connections.

Runs are interleaved: round 1 measures every cell once, then round 2 ...
A slow drift of the machine (another job, a CPU's clock) then lands on
all servers alike, and libgreen's ratio to each is taken within a round.
"""
import os
import subprocess
import time

from . import load, procs, servers


class Context:
    """What servers.command() needs to know about this run."""

    def __init__(self, plan, tmp, app):
        self.tmp = tmp
        self.root = plan.root
        self.preload = plan.preload
        self.seconds = app.seconds
        self.warmup = plan.warmup


def _env(extra, tmp, pg_dsn):
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = tmp
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if pg_dsn:
        env["BENCH_PG_DSN"] = pg_dsn
    env.update(extra)
    return env


def _tail(path, n=6):
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip() for l in f if l.strip() and not l.startswith("$ ")]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


def measure_loop(plan, app, server, tmp, log):
    """The app-only ceiling: calls per second of the app in a loop."""
    argv, extra = servers.command(server, app.target, 0, Context(plan, tmp, app))
    proc = procs.spawn(argv, _env(extra, tmp, None), tmp, plan.server_cpus, log,
                       stdout=subprocess.PIPE)
    out = proc.stdout.read()
    proc.stdout.close()
    # wait4, not wait(): its rusage holds this process's own peak RSS
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.decode(errors="replace")
    if not text.startswith("CALLS "):
        return {"failed": "the loop printed no result: " + _tail(log)}
    n, took = text.split()[1:3]
    return {"rps": int(n) / float(took), "requests": int(n), "p50_ms": None,
            "p99_ms": None, "errors": 0, "error_detail": "",
            "hwm_kib": ru.ru_maxrss, "peak_rss_kib": ru.ru_maxrss,
            "server_cpu": (ru.ru_utime + ru.ru_stime) / (float(took) + plan.warmup)}


def measure(plan, app, server, tmp, pg_dsn, log):
    """One run of one cell: a dict of numbers, or {"failed": why}."""
    if server.kind == "loop":
        return measure_loop(plan, app, server, tmp, log)
    port = procs.free_port()
    argv, extra = servers.command(server, app.target, port, Context(plan, tmp, app))
    with open(log, "ab") as f:
        f.write(("$ %s\n" % " ".join(argv)).encode())
    proc = procs.spawn(argv, _env(extra, tmp, pg_dsn), tmp, plan.server_cpus, log)
    try:
        if not procs.wait_ready(proc, port):
            why = "exited" if proc.poll() is not None else "did not answer in 30 s"
            return {"failed": "%s %s: %s" % (server.name, why, _tail(log))}
        sampler = procs.Sampler(proc.pid)
        baseline = sampler.rss()
        if plan.warmup and app.warm_conns:
            load.run(port, app.warm_conns, plan.warmup, app.timeout, plan.load_cpus, log)
        res = load.run(port, app.conns, app.seconds, app.timeout, plan.load_cpus, log,
                       sampler=sampler)
        res["baseline_rss_kib"] = baseline
        if proc.poll() is not None:
            res["died"] = "the server exited during the run: " + _tail(log)
        if res["rps"] is None:
            res["failed"] = "wrk gave no result: " + _tail(log)
        return res
    except RuntimeError as e:
        return {"failed": str(e)}
    finally:
        procs.stop(proc, server.stop_signal)


def run_rounds(plan, tmp, pg_dsn, record):
    """Every cell once per round, plan.runs rounds; record(dict) each."""
    cells = plan.cells()
    total = len(cells) * plan.runs
    done = 0
    t_start = time.monotonic()
    for rnd in range(1, plan.runs + 1):
        for app, server in cells:
            done += 1
            log = os.path.join(plan.out, "logs", "%s-%s-%d.log" % (app.name, server.name, rnd))
            res = measure(plan, app, server, tmp, pg_dsn, log)
            res.update({"app": app.name, "server": server.name, "round": rnd,
                        "conns": app.conns, "seconds": app.seconds,
                        "loadavg": os.getloadavg()[0]})
            record(res)
            left = (time.monotonic() - t_start) / done * (total - done)
            print("[%3d/%d] %-8s %-18s %s   (%.0f s left)"
                  % (done, total, app.name, server.name, summary(res), left), flush=True)


def summary(res):
    if "failed" in res:
        return "FAILED: " + res["failed"][:160]
    parts = ["%9.0f req/s" % res["rps"]]
    if res.get("p50_ms") is not None:
        parts.append("p50 %7.2f ms  p99 %8.2f ms" % (res["p50_ms"], res["p99_ms"] or 0))
    if res.get("errors"):
        parts.append("errors %d (%s)" % (res["errors"], res["error_detail"]))
    if "wrk_cpu" in res:
        parts.append("cpu srv %3.0f%% wrk %3.0f%%" % (100 * res["server_cpu"], 100 * res["wrk_cpu"]))
        parts.append("waited %2.0f%% %2.0f%%" % (100 * res.get("server_wait", 0),
                                                 100 * res.get("wrk_wait", 0)))
    return "  ".join(parts)
