"""sidebyside/main.py - the whole run: check what is needed, state the
plan and its time, measure every cell for every round, write the report.
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import time

from . import apps as apps_mod
from . import load, plan as plan_mod, report, runner, scale, servers, spread


def check(plan):
    """Drop servers that cannot run here (said in the report); stop with a
    clear message if the load generator is missing."""
    if not load.wrk_path():
        sys.exit("side-by-side: wrk is not installed (scripts/install-deps installs it)")
    if not os.path.exists(plan.preload):
        sys.exit("side-by-side: %s is missing: run `make all` first" % plan.preload)
    kept = []
    for s in plan.servers:
        why = servers.missing(s, plan.root)
        if why:
            plan.notes.append("%s not measured: %s" % (s.name, why))
        else:
            kept.append(s)
    plan.servers = kept


def describe(plan):
    cells = plan.cells()
    mins = plan.estimate_s() / 60
    print("side-by-side: %d cells x %d run(s)%s; servers on cpu %s, wrk on cpu %s"
          % (len(cells), plan.runs, " + the --workers 2 comparison" if plan.scale else "",
             _cpus(plan.server_cpus), _cpus(plan.load_cpus)))
    print("side-by-side: apps: %s" % ", ".join(a.name for a in plan.apps))
    print("side-by-side: servers: %s" % ", ".join(s.name for s in plan.servers))
    print("side-by-side: estimated time: %.0f min (results in %s)" % (mins, plan.out), flush=True)
    for n in plan.notes:
        print("side-by-side: note: " + n)


def _cpus(c):
    return ",".join(map(str, sorted(c))) if c else "any"


def spread_only(plan, n):
    os.makedirs(os.path.join(plan.out, "logs"), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lgbench-") as tmp:
        apps_mod.write_modules(tmp)
        rows = spread.run(plan, tmp, n)
    path = spread.write(rows, plan.out)
    print(open(path).read())
    return 0


def _stop_on_signal(signum, frame):
    raise SystemExit("side-by-side: stopped by %s; every process it started "
                     "is stopped" % signal.Signals(signum).name)


def main(argv=None):
    args, plan = plan_mod.parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for a in apps_mod.apps(plan.quick):
            print("app     %-8s %s" % (a.name, a.title))
        print("app     %-8s %s" % ("scale", "--workers 2 (shared socket, --reuse-port) against gunicorn's gevent worker x2"))
        for s in servers.SERVERS:
            print("server  %-18s %s" % (s.name, s.config))
        return 0
    raw_path = os.path.join(plan.out, "raw.json")
    if args.publish:
        from . import publish
        publish.publish(plan.out, plan.root)
        return 0
    if args.report_only:
        with open(raw_path) as f:
            data = json.load(f)
        report.write(data, plan.out)
        return 0
    check(plan)
    if args.spread:
        return spread_only(plan, args.spread)
    describe(plan)
    if args.estimate:
        return 0
    # SIGTERM/SIGHUP (a CI timeout, a closed terminal) end the run as
    # Ctrl-C does, through the finally blocks that stop every server,
    # wrk and PostgreSQL by PID; the default action left them running.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)
    shutil.rmtree(os.path.join(plan.out, "logs"), ignore_errors=True)
    os.makedirs(os.path.join(plan.out, "logs"))
    data = {"meta": report.machine(plan), "runs": [], "scale": []}
    t0 = time.monotonic()
    pg = None
    with tempfile.TemporaryDirectory(prefix="lgbench-") as tmp:
        apps_mod.write_modules(tmp)
        try:
            if any(a.name == "pg" for a in plan.apps):
                from . import pg as pg_mod
                pg = pg_mod.Postgres(plan.load_cpus)
            runner.run_rounds(plan, tmp, pg.dsn if pg else None, data["runs"].append)
            if plan.scale:
                scale.run(plan, tmp, data["scale"].append)
        finally:
            if pg:
                pg.stop()
    data["meta"]["took_s"] = time.monotonic() - t0
    data["meta"]["loadavg_end"] = os.getloadavg()
    with open(raw_path, "w") as f:
        json.dump(data, f, indent=1)
    path = report.write(data, plan.out)
    print("side-by-side: took %.1f min; %s" % (data["meta"]["took_s"] / 60, path))
    return 0
