"""sidebyside/chart.py - chart.png: one panel per app, req/s per server
(median, with the runs' min-max as a whisker), libgreen in green, the
ceilings in grey; the two-worker comparison in the last panel."""
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GREEN, GREY, BLUE, RED = "#2e9d4e", "#9a9a9a", "#4a78b5", "#c0392b"


def _panel(ax, title, names, meds, ranges, colours, failed, notes=None):
    y = list(range(len(names)))[::-1]
    lo = [m - r[0] for m, r in zip(meds, ranges)]
    hi = [r[1] - m for m, r in zip(meds, ranges)]
    ax.barh(y, meds, color=colours, xerr=[lo, hi], capsize=2, ecolor="#333")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    top = max(meds + [1])
    for yy, m, f, note in zip(y, meds, failed, notes or [""] * len(names)):
        ax.text(m + top * 0.01, yy, "failed" if f else "%.0f%s" % (m, note), va="center",
                fontsize=7, color=RED if f else "#000")
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("req/s", fontsize=7)


def _ms(x):
    return "%.2f s" % (x / 1000) if x >= 1000 else "%.0f ms" % x if x >= 10 else "%.1f ms" % x


def draw(cells, titles, order, scale, path, meta):
    apps = [a for a in titles if any(k[0] == a for k in cells)]
    panels = len(apps) + (1 if scale else 0)
    cols = 2 if panels > 1 else 1
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.2 * rows), squeeze=False)
    for i, app in enumerate(apps):
        names, meds, ranges, colours, failed, notes = [], [], [], [], [], []
        for s in order:
            c = cells.get((app, s))
            if c is None:
                continue
            names.append(s)
            ok = bool(c["ok"])
            meds.append(c["rps"] if ok else 0)
            ranges.append(c["rps_range"] if ok else (0, 0))
            failed.append(not ok)
            note = "  p99 %s" % _ms(c["p99"]) if ok and c["p99"] is not None else ""
            if ok and c["errors"]:
                note += ", %d errors" % c["errors"]
            notes.append(note)
            colours.append(GREEN if s == "libgreen" else GREY if s in ("c-ceiling", "app-only")
                           else BLUE)
        _panel(axes[i // cols][i % cols], titles[app], names, meds, ranges, colours, failed,
               notes)
    if scale:
        by = {}
        for r in scale:
            if "failed" not in r:
                by.setdefault(r["config"], []).append(r["rps"])
        names = list(by)
        meds = [statistics.median(v) for v in by.values()]
        ranges = [(min(v), max(v)) for v in by.values()]
        colours = [GREEN if n.startswith("libgreen") else BLUE for n in names]
        _panel(axes[(panels - 1) // cols][(panels - 1) % cols],
               "plain hello, 2 cores shared with wrk -t2", names, meds, ranges, colours,
               [False] * len(names))
    for j in range(panels, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("libgreen side by side (%s, %d run(s) per bar%s)"
                 % (meta["date"], meta["runs"], ", QUICK MODE" if meta["quick"] else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
