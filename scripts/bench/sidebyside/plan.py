"""sidebyside/plan.py - what one `make bench` measures, from the command
line and the environment, and how long it will take.

  BENCH_RUNS=N        runs of every cell (default 3; quick: 1)
  BENCH_QUICK=1       short windows, 2,000 instead of 10,000 connections,
                      five servers: for development and the harness test
  BENCH_ONLY=a,b      apps: plain, flask, sleep50, sleep1, pg, and scale
                      (the --workers 2 comparison); default all
  BENCH_SERVERS=x,y   servers (`side-by-side --list`); default all
  BENCH_CPUS=S,L      the server's core and the load generator's core
                      (default: the first two this process may use)
  BENCH_OUT=DIR       where results.md, chart.png and raw.json go
                      (default build/bench)
"""
import argparse
import os
from dataclasses import dataclass, field

from . import apps as apps_mod
from . import servers as servers_mod

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

# Seconds a run costs besides its warm-up and window: starting the server
# and its readiness probe, wrk's start, stopping (measured on the 2-core
# reference machine: Python servers start in 0.3-1 s, gunicorn's worker in
# about 1 s).
OVERHEAD_S = 1.5
OVERHEAD_SLEEP1_S = 5.0   # 10,000 connections to open and to close
SCALE_SECONDS = 5


@dataclass
class Plan:
    runs: int
    quick: bool
    apps: list
    servers: list
    scale: bool
    warmup: int
    server_cpus: object            # a set of cpus, or None (not pinned)
    load_cpus: object
    out: str
    root: str = ROOT
    preload: str = ""
    notes: list = field(default_factory=list)

    def cells(self):
        return [(a, s) for a in self.apps for s in self.servers if s.serves(a.name)]

    def estimate_s(self):
        per_round = 0.0
        for app, server in self.cells():
            per_round += app.seconds + (self.warmup if app.warm_conns else 0) + (
                OVERHEAD_SLEEP1_S if app.conns > 1000 else OVERHEAD_S)
        if self.scale:
            per_round += 5 * (SCALE_SECONDS + self.warmup + OVERHEAD_S)
        return per_round * self.runs + (10 if any(a.name == "pg" for a in self.apps) else 0)


def _runs(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError("BENCH_RUNS/--runs must be a whole number >= 1, "
                                         "not %r" % text)
    return n


def _csv(text):
    return [x.strip() for x in text.split(",") if x.strip()] if text else []


def parse(argv):
    env = os.environ
    ap = argparse.ArgumentParser(
        prog="side-by-side",
        description="libgreen next to the Debian-packaged WSGI servers, "
                    "one process each pinned to one core, wrk on another.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=_runs, default=env.get("BENCH_RUNS") or None,
                    help="runs per cell (BENCH_RUNS; default 3, quick 1)")
    ap.add_argument("--quick", action="store_true", default=env.get("BENCH_QUICK", "") not in ("", "0"))
    ap.add_argument("--only", default=env.get("BENCH_ONLY", ""))
    ap.add_argument("--servers", default=env.get("BENCH_SERVERS", ""))
    ap.add_argument("--cpus", default=env.get("BENCH_CPUS", ""))
    ap.add_argument("--out", default=env.get("BENCH_OUT") or os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--list", action="store_true", help="list apps and servers, then exit")
    ap.add_argument("--estimate", action="store_true", help="print the plan and its time, then exit")
    ap.add_argument("--spread", type=int, nargs="?", const=5, default=0, metavar="N",
                    help="where the spread comes from: libgreen's plain hello N times "
                         "(default 5) under variants of the method; writes OUT/spread.md")
    ap.add_argument("--publish", action="store_true",
                    help="copy OUT/results.md and chart.png to docs/bench/ and their "
                         "tables into README.md (make bench-publish)")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite results.md and chart.png from OUT/raw.json")
    args = ap.parse_args(argv)

    all_apps = apps_mod.apps(args.quick)
    names = _csv(args.only) or [a.name for a in all_apps] + ["scale"]
    unknown = set(names) - {a.name for a in all_apps} - {"scale"}
    if unknown:
        ap.error("unknown app(s) in BENCH_ONLY/--only: %s (known: %s, scale)"
                 % (", ".join(sorted(unknown)), ", ".join(a.name for a in all_apps)))
    default_servers = servers_mod.QUICK if args.quick else [s.name for s in servers_mod.SERVERS]
    snames = _csv(args.servers) or list(default_servers)
    unknown = set(snames) - set(servers_mod.BY_NAME)
    if unknown:
        ap.error("unknown server(s) in BENCH_SERVERS/--servers: %s (known: %s)"
                 % (", ".join(sorted(unknown)), ", ".join(servers_mod.BY_NAME)))
    if "libgreen" not in snames:
        snames.insert(0, "libgreen")  # every ratio is libgreen's

    plan = Plan(runs=args.runs or (1 if args.quick else 3), quick=args.quick,
                apps=[a for a in all_apps if a.name in names],
                servers=[servers_mod.BY_NAME[n] for n in servers_mod.BY_NAME if n in snames],
                scale="scale" in names, warmup=1, server_cpus=None, load_cpus=None,
                out=os.path.abspath(args.out))
    plan.preload = os.path.abspath(os.environ.get("LIBGREEN_SO") or
                                   os.path.join(ROOT, "build", "libgreen.so"))
    _pick_cpus(plan, args.cpus)
    return args, plan


def _pick_cpus(plan, text):
    usable = sorted(os.sched_getaffinity(0))
    if text:
        try:
            s, l = (int(x) for x in text.split(","))
        except ValueError:
            raise SystemExit("side-by-side: BENCH_CPUS/--cpus is SERVER_CPU,LOAD_CPU "
                             "(e.g. 0,1), not %r" % text)
        if not {s, l} <= set(usable) or s == l:
            raise SystemExit("side-by-side: BENCH_CPUS/--cpus %r: two different cpus of "
                             "those this process may use (%s)" % (text, usable))
        plan.server_cpus, plan.load_cpus = {s}, {l}
    elif len(usable) >= 2:
        plan.server_cpus, plan.load_cpus = {usable[0]}, {usable[1]}
    else:
        plan.notes.append("only one CPU: nothing is pinned, server and wrk share it")
