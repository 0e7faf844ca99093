"""sidebyside/report.py - results.md (the tables, the targets, the checks
on the method) and chart.png from the raw runs.

Every number is the median over the runs of a cell, its spread the
runs' min-max. libgreen's ratio to a server is taken per round (the two
ran minutes apart at most) and its median and min-max are given.
"""
import os
import platform
import statistics
import subprocess
import time

from . import apps as apps_mod
from . import servers as servers_mod

PACKAGES = ["wrk", "python3", "python3-flask", "python3-psycopg2", "postgresql",
            "python3-gevent", "python3-eventlet", "gunicorn", "python3-waitress",
            "uwsgi-core", "uwsgi-plugin-python3", "uwsgi-plugin-gevent-python3"]


def machine(plan):
    def version(pkg):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                           capture_output=True, text=True)
        return r.stdout.strip() or "not installed"
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "runs": plan.runs, "quick": plan.quick, "warmup_s": plan.warmup,
            "server_cpus": sorted(plan.server_cpus or []),
            "load_cpus": sorted(plan.load_cpus or []),
            "packages": {p: version(p) for p in PACKAGES},
            "loadavg_start": os.getloadavg(), "notes": list(plan.notes),
            "estimate_s": plan.estimate_s(),
            "apps": {a.name: {"title": a.title, "conns": a.conns, "seconds": a.seconds}
                     for a in plan.apps}}


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _rng(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def _fmt(x, spec="%.0f", none="—"):
    return none if x is None else spec % x


def _ms(x):
    if x is None:
        return "—"
    return "%.1f s" % (x / 1000) if x >= 10000 else "%.2f ms" % x if x < 100 else "%.0f ms" % x


def aggregate(runs):
    """{(app, server): cell summary}"""
    cells = {}
    for r in runs:
        cells.setdefault((r["app"], r["server"]), []).append(r)
    lg = {(r["app"], r["round"]): r for r in runs if r["server"] == "libgreen" and "failed" not in r}
    out = {}
    for (app, server), rs in cells.items():
        ok = [r for r in rs if "failed" not in r]
        c = {"runs": len(rs), "ok": len(ok), "failed": [r["failed"] for r in rs if "failed" in r]}
        c["rps"] = _med(r["rps"] for r in ok)
        c["rps_range"] = _rng(r["rps"] for r in ok)
        c["p50"] = _med(r.get("p50_ms") for r in ok)
        c["p99"] = _med(r.get("p99_ms") for r in ok)
        worst = max(ok, key=lambda r: r.get("errors", 0), default=None)
        c["errors"] = worst.get("errors", 0) if worst else None
        c["error_detail"] = worst.get("error_detail", "") if worst else ""
        c["rss_mib"] = _med(max(r.get("hwm_kib", 0), r.get("peak_rss_kib", 0)) / 1024 for r in ok)
        c["inflight_kib"] = _med((r["peak_rss_kib"] - r["baseline_rss_kib"]) / r["conns"]
                                 for r in ok if "baseline_rss_kib" in r)
        c["wrk_cpu"] = _med(r.get("wrk_cpu") for r in ok)
        c["server_cpu"] = _med(r.get("server_cpu") for r in ok)
        c["died"] = [r["died"] for r in ok if "died" in r]
        ratios = [lg[(app, r["round"])]["rps"] / r["rps"] for r in ok
                  if (app, r["round"]) in lg and r["rps"]]
        c["ratio"] = _med(ratios)
        c["ratio_range"] = _rng(ratios)
        c["ratios"] = ratios
        out[(app, server)] = c
    return out


def _foreign(runs, cpus_key, meta):
    """Median share of the server's core used by other processes (busy
    minus the server's own CPU) and the median steal, over all runs."""
    cpus = meta.get(cpus_key) or []
    if not cpus:
        return None, None
    cpu = str(cpus[0])
    foreign, steal = [], []
    for r in runs:
        st = r.get("cpu_stat", {})
        st = st.get(cpu) or st.get(int(cpu)) if isinstance(st, dict) else None
        if not st or not st[3]:
            continue
        busy, _irq, stl, total = st
        own = r.get("server_cpu", 0) if cpus_key == "server_cpus" else r.get("wrk_cpu", 0)
        foreign.append(max(0.0, busy / total - own))
        steal.append(stl / total)
    return _med(foreign), _med(steal)


def _irq_share(r, meta):
    cpus = meta.get("load_cpus") or []
    st = r.get("cpu_stat") or {}
    st = (st.get(str(cpus[0])) or st.get(cpus[0])) if cpus else None
    return st[1] / st[3] if st and st[3] else None


def table(app, cells, servers):
    lines = ["| server | req/s | spread (min–max) | p50 | p99 | errors | peak RSS | "
             + ("KiB per in-flight request | " if app.startswith("sleep") else "")
             + "libgreen ÷ this (min–max) |",
             "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if app.startswith("sleep") else "")
             + "---:|"]
    for s in servers:
        c = cells.get((app, s))
        if c is None:
            continue
        if not c["ok"]:
            lines.append("| %s | did not run: %s |" % (s, c["failed"][0][:200].replace("|", "/")))
            continue
        lo, hi = c["rps_range"]
        err = "%d" % c["errors"]
        if c["errors"]:
            err += " (%s)" % c["error_detail"]
        if c["died"]:
            err += " (server died)"
        ratio = "—" if s == "libgreen" or c["ratio"] is None else "%.2f (%.2f–%.2f)" % (
            c["ratio"], *c["ratio_range"])
        row = [s, _fmt(c["rps"]), "%s–%s" % (_fmt(lo), _fmt(hi)), _ms(c["p50"]), _ms(c["p99"]),
               err, _fmt(c["rss_mib"], "%.1f MiB")]
        if app.startswith("sleep"):
            row.append(_fmt(c["inflight_kib"], "%.1f"))
        row.append(ratio)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def targets(cells, meta):
    """The issue's targets, each with its verdict and the number."""
    out = []

    def one(name, ok, text):
        out.append("| %s | %s | %s |" % (name, "met" if ok else "**not met**", text))

    def ratio_target(app, ref, label):
        c = cells.get((app, ref))
        if c and c["ratios"]:
            rs = c["ratios"]
            one("%s ≥ 95%% of %s" % (label, ref), _med(rs) >= 0.95,
                "median %.1f%%, runs %s" % (100 * _med(rs), ", ".join("%.1f%%" % (100 * x) for x in rs)))
    ratio_target("plain", "c-ceiling", "plain hello")
    ratio_target("flask", "app-only", "Flask hello")
    c = cells.get(("sleep50", "libgreen"))
    if c and c["ok"]:
        one("sleep(0.05) at 200 conns: p50 ≤ 50.5 ms, p99 < 55 ms, ≥ 3,950 req/s",
            c["p50"] <= 50.5 and c["p99"] < 55 and c["rps"] >= 3950,
            "p50 %s, p99 %s, %.0f req/s" % (_ms(c["p50"]), _ms(c["p99"]), c["rps"]))
    c = cells.get(("sleep1", "libgreen"))
    if c and c["ok"]:
        conns = meta["apps"]["sleep1"]["conns"]
        window = meta["apps"]["sleep1"]["seconds"]
        # 9,300 of the 9,333 a 15 s window can hold (nothing is answered in
        # its first second), scaled to quick mode's connections and window
        want = conns * (window - 1) / window * 9300 / 9333.3
        one("sleep(1) at %d conns: 0 errors, ≥ %.0f req/s, p99 < 1.1 s" % (conns, want),
            c["errors"] == 0 and c["rps"] >= want and c["p99"] < 1100,
            "%d errors (worst run), %.0f req/s, p99 %s" % (c["errors"], c["rps"], _ms(c["p99"])))
        if c["inflight_kib"] is not None:
            one("RSS per in-flight request ≤ 12 KB", c["inflight_kib"] * 1024 <= 12000,
                "%.1f KiB" % c["inflight_kib"])
    worst = []
    for (app, s), c in cells.items():
        lg = cells.get((app, "libgreen"))
        kind = servers_mod.BY_NAME[s].kind if s in servers_mod.BY_NAME else "wsgi"
        # a peer that did not hold the load (errors) kept its memory small
        # by refusing it: no comparison
        if (s == "libgreen" or kind != "wsgi" or not c["ok"] or c["errors"]
                or not lg or not lg["ok"]):
            continue
        if c["rss_mib"] <= lg["rss_mib"]:
            worst.append("%s %s %.1f ≤ libgreen %.1f MiB" % (app, s, c["rss_mib"], lg["rss_mib"]))
    if any(c["ok"] for (a, s), c in cells.items() if s != "libgreen"):
        one("peak RSS below every peer's (those that served the cell without errors)",
            not worst, "; ".join(worst) if worst else "lowest in every app")
    return out


def checks(runs, cells, meta):
    """What the method itself shows: is the load generator the limit, did
    other processes share the cores."""
    out = []
    c = cells.get(("plain", "c-ceiling"))
    if c and c["ok"]:
        irq = _med(_irq_share(r, meta) for r in runs
                   if r.get("server") == "c-ceiling" and "failed" not in r)
        busy = c["wrk_cpu"] + (irq or 0)
        out.append("- against the C ceiling wrk used %.0f%% of its core and interrupts/softirqs "
                   "(loopback TCP, charged to no process) %.0f%% more; the C server used %.0f%% "
                   "of its own: %s"
                   % (100 * c["wrk_cpu"], 100 * (irq or 0), 100 * c["server_cpu"],
                      "the ceiling is wrk's and the kernel's on wrk's core, not a server's"
                      if busy >= 0.9 and c["server_cpu"] < 0.9 else
                      "the C server's core is the limit" if c["server_cpu"] >= 0.9 else
                      "neither core was full: the machine was busy, or wake-ups limit it"))
    lg = cells.get(("plain", "libgreen"))
    if lg and lg["ok"]:
        out.append("- libgreen (plain) used %.0f%% of its core, wrk %.0f%% of its own"
                   % (100 * lg["server_cpu"], 100 * lg["wrk_cpu"]))
    ok = [r for r in runs if "failed" not in r and "server_wait" in r]
    if ok:
        sw = _med(r["server_wait"] for r in ok)
        ww = _med(r.get("wrk_wait") for r in ok) or 0
        worst = max(ok, key=lambda r: max(r["server_wait"], r.get("wrk_wait", 0)))
        _, ss = _foreign(ok, "server_cpus", meta)
        _, sl = _foreign(ok, "load_cpus", meta)
        out.append("- waiting for a CPU that another process had (run-queue delay, share of "
                   "the window): server %.1f%%, wrk %.1f%% (median over runs), worst %s/%s "
                   "%.1f%%/%.1f%%; steal time %.1f%% / %.1f%%"
                   % (100 * sw, 100 * ww, worst["app"], worst["server"],
                      100 * worst["server_wait"], 100 * worst.get("wrk_wait", 0),
                      100 * (ss or 0), 100 * (sl or 0)))
        if max(sw, ww) > 0.03:
            out.append("- **the machine was busy: these numbers measure the share of the "
                       "cores the servers got, not the servers.** Run on a quiet machine, or "
                       "as root with BENCH_PRIORITY=-20 (README, \"Why the ratio swung\")")
    spreads = []
    for (app, s), c in sorted(cells.items()):
        if c["ok"] > 1 and c["rps"]:
            lo, hi = c["rps_range"]
            spreads.append(((hi - lo) / c["rps"], app, s))
    if spreads:
        spreads.sort(reverse=True)
        out.append("- widest spread: %s" % ", ".join(
            "%s/%s %.0f%%" % (a, s, 100 * w) for w, a, s in spreads[:4]))
    out.append("- load average %.2f at the start, %.2f at the end"
               % (meta["loadavg_start"][0], (meta.get("loadavg_end") or [0])[0]))
    return out


def scale_table(scale):
    if not scale:
        return []
    by = {}
    for r in scale:
        by.setdefault(r["config"], []).append(r)
    lines = ["| configuration | req/s | spread (min–max) | p50 | p99 | errors | "
             "connections per worker | CPU share per worker |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for name, rs in by.items():
        ok = [r for r in rs if "failed" not in r]
        if not ok:
            lines.append("| %s | did not run: %s |" % (name, rs[0]["failed"][:200]))
            continue
        lo, hi = _rng(r["rps"] for r in ok)
        conns = "; ".join("/".join(str(x) for x in r["worker_conns"]) for r in ok)
        share = "; ".join("/".join("%.0f%%" % (100 * x) for x in r["worker_cpu_share"]) for r in ok)
        lines.append("| %s | %.0f | %.0f–%.0f | %s | %s | %d | %s | %s |" % (
            name, _med(r["rps"] for r in ok), lo, hi, _ms(_med(r["p50_ms"] for r in ok)),
            _ms(_med(r["p99_ms"] for r in ok)), max(r["errors"] for r in ok), conns, share))
    return lines


def write(data, out):
    meta, runs = data["meta"], data["runs"]
    cells = aggregate(runs)
    order = [s.name for s in servers_mod.SERVERS]
    titles = {a.name: a.title for a in apps_mod.apps(meta["quick"])}
    titles.update({k: v["title"] for k, v in meta.get("apps", {}).items()})
    md = ["# libgreen side by side", "",
          "%s; %s, %d CPUs, Linux %s. Servers pinned to cpu %s, wrk (-t1) to cpu %s. "
          "%d run(s) per cell, each on a freshly started server after %d s of warm-up; "
          "medians, spread = min–max over the runs.%s"
          % (meta["date"], meta["cpu"], meta["cpus"], meta["kernel"],
             ",".join(map(str, meta["server_cpus"])) or "any",
             ",".join(map(str, meta["load_cpus"])) or "any", meta["runs"], meta["warmup_s"],
             " **Quick mode: short windows, fewer servers - not for comparison.**"
             if meta["quick"] else ""), ""]
    for app in [a for a in titles if any(k[0] == a for k in cells)]:
        md += ["## " + titles[app], ""] + table(app, cells, order) + [""]
    t = targets(cells, meta)
    if t:
        md += ["## Targets", "", "| target | verdict | measured |", "|---|---|---|"] + t + [""]
    if data.get("scale"):
        md += ["## Two workers on two cores (nothing pinned, wrk -t2 on the same cores)", ""]
        md += scale_table(data["scale"]) + [""]
    md += ["## Checks on the method", ""] + checks(runs, cells, meta) + [""]
    notes = list(meta.get("notes", []))
    for (app, s), c in sorted(cells.items()):
        for f in c["failed"]:
            notes.append("%s/%s: %s" % (app, s, f[:300]))
    md += ["## Versions and configuration", ""]
    md += ["- %s %s" % (p, v) for p, v in meta["packages"].items()]
    md += ["- %s: %s" % (s.name, s.config) for s in servers_mod.SERVERS
           if any(k[1] == s.name for k in cells)]
    md += ["- took %.1f min (estimated %.1f min)" % (meta.get("took_s", 0) / 60,
                                                    meta.get("estimate_s", 0) / 60)]
    if notes:
        md += ["", "Notes:", ""] + ["- " + n for n in notes]
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")
    from . import chart
    chart.draw(cells, titles, order, data.get("scale"), os.path.join(out, "chart.png"), meta)
    return path
