"""sidebyside/spread.py - `side-by-side --spread`: where the run-to-run
spread comes from. libgreen's plain hello (and the C ceiling) measured N
times under each variant of the method, interleaved; for every variant
the spread of req/s next to the spread of requests per CPU-second of the
server, and what each run got of the machine: the server's and wrk's
share of a core and what other processes took from the two cores.

A spread that vanishes per CPU-second was the server not getting its
core (other load, or sharing it with wrk); one that stays is the
server's own.
"""
import copy
import dataclasses
import os
import statistics

from . import apps as apps_mod
from . import runner, servers


def variants(plan):
    both = (plan.server_cpus or set()) | (plan.load_cpus or set()) or None
    return [
        # name, server cpus, load cpus, warm-up s, connections, server
        ("pinned, 200 conns, warm-up (the method)", plan.server_cpus, plan.load_cpus, 1, 200, "libgreen"),
        ("not pinned (server and wrk anywhere)", both, both, 1, 200, "libgreen"),
        ("pinned, no warm-up", plan.server_cpus, plan.load_cpus, 0, 200, "libgreen"),
        ("pinned, 50 conns", plan.server_cpus, plan.load_cpus, 1, 50, "libgreen"),
        ("pinned, 10 conns", plan.server_cpus, plan.load_cpus, 1, 10, "libgreen"),
        ("C ceiling, pinned, 200 conns", plan.server_cpus, plan.load_cpus, 1, 200, "c-ceiling"),
        ("C ceiling, pinned, 50 conns", plan.server_cpus, plan.load_cpus, 1, 50, "c-ceiling"),
    ]


def _foreign(res, cpus):
    st = res.get("cpu_stat") or {}
    shares = [st[c][0] / st[c][3] for c in sorted(cpus or []) if c in st and st[c][3]]
    own = res.get("server_cpu", 0) + res.get("wrk_cpu", 0)
    return max(0.0, sum(shares) - own) if shares else None


def _irq(res, cpus):
    """Share of the load generator's core(s) spent in interrupts and
    softirqs (loopback TCP), charged to no process."""
    st = res.get("cpu_stat") or {}
    shares = [st[c][1] / st[c][3] for c in sorted(cpus or []) if c in st and st[c][3]]
    return sum(shares) / len(shares) if shares else None


def run(plan, tmp, n):
    plain = next(a for a in apps_mod.apps(plan.quick) if a.name == "plain")
    rows = {v[0]: [] for v in variants(plan)}
    for i in range(1, n + 1):
        for name, scpu, lcpu, warm, conns, sname in variants(plan):
            p = copy.copy(plan)
            p.server_cpus, p.load_cpus, p.warmup = scpu, lcpu, warm
            app = dataclasses.replace(plain, conns=conns, warm_conns=conns)
            log = os.path.join(plan.out, "logs", "spread-%d-%s.log" % (i, name[:20].replace(" ", "_")))
            res = runner.measure(p, app, servers.BY_NAME[sname], tmp, None, log)
            if "failed" in res:
                print("[spread %d/%d] %-40s FAILED %s" % (i, n, name, res["failed"][:120]))
                continue
            res["foreign"] = _foreign(res, (scpu or set()) | (lcpu or set()))
            res["irq"] = _irq(res, lcpu)
            res["per_cpu_s"] = res["rps"] / res["server_cpu"] if res["server_cpu"] else None
            rows[name].append(res)
            print("[spread %d/%d] %-40s %s  other load %s" % (
                i, n, name, runner.summary(res),
                "%.0f%%" % (100 * res["foreign"]) if res["foreign"] is not None else "?"),
                flush=True)
    return rows


def _spread(xs):
    xs = [x for x in xs if x]
    if len(xs) < 2:
        return "—"
    m = statistics.median(xs)
    return "%.0f (%.0f–%.0f, ±%.0f%%)" % (m, min(xs), max(xs), 50 * (max(xs) - min(xs)) / m)


def write(rows, out):
    md = ["# Where the spread comes from", "",
          "libgreen's plain hello, each variant run in turn, N rounds. ± is half "
          "the min–max range over the median.", "",
          "| variant | req/s | requests per server CPU-second | server's core share | "
          "wrk's core share | softirq on wrk's core | other processes (cores used) |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rs in rows.items():
        if not rs:
            continue
        md.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            name, _spread([r["rps"] for r in rs]), _spread([r["per_cpu_s"] for r in rs]),
            " ".join("%.0f%%" % (100 * r["server_cpu"]) for r in rs),
            " ".join("%.0f%%" % (100 * r["wrk_cpu"]) for r in rs),
            " ".join("%.0f%%" % (100 * r["irq"]) if r["irq"] is not None else "?" for r in rs),
            " ".join("%.2f" % r["foreign"] if r["foreign"] is not None else "?" for r in rs)))
    path = os.path.join(out, "spread.md")
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")
    return path
