"""tests/bench/test_side_by_side.py - `make bench`'s harness works.

Runs scripts/bench/side-by-side in quick mode against libgreen and the
C ceiling only (about ten seconds) and checks what a reader of the
results gets: the table with a number for each, libgreen's ratio, the
target verdict, the checks on the method, and a PNG chart. Timing is
not asserted: the machine may be busy. `make bench-check` runs it.
"""
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench" / "side-by-side"


def run(tmp_path, *args, **env):
    full = dict(os.environ, BENCH_OUT=str(tmp_path), **env)
    return subprocess.run(["/usr/bin/python3", str(SCRIPT), *args], env=full,
                          capture_output=True, text=True, timeout=300)


def test_quick_mode_writes_the_table_and_the_chart(tmp_path):
    r = run(tmp_path, BENCH_QUICK="1", BENCH_ONLY="plain", BENCH_SERVERS="libgreen,c-ceiling")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "estimated time" in r.stdout
    md = (tmp_path / "results.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")
            for line in md.splitlines() if line.startswith("| libgreen") or
            line.startswith("| c-ceiling")}
    assert set(rows) == {"libgreen", "c-ceiling"}, md
    for name, cells in rows.items():
        assert float(cells[2]) > 0, (name, md)   # req/s
    assert "plain hello ≥ 95% of c-ceiling" in md
    assert "wrk used" in md and "of its core" in md
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert {(x["app"], x["server"]) for x in raw["runs"]} == {
        ("plain", "libgreen"), ("plain", "c-ceiling")}
    for x in raw["runs"]:
        assert "failed" not in x, x


def test_report_only_rewrites_from_raw(tmp_path):
    r = run(tmp_path, BENCH_QUICK="1", BENCH_ONLY="plain", BENCH_SERVERS="c-ceiling")
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "results.md").unlink()
    r = run(tmp_path, "--report-only")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| c-ceiling |" in (tmp_path / "results.md").read_text()


def test_unknown_names_are_refused_with_the_known_ones(tmp_path):
    r = run(tmp_path, BENCH_SERVERS="libgreen,nginx")
    assert r.returncode == 2
    assert "unknown server(s) in BENCH_SERVERS/--servers: nginx" in r.stderr
    assert "gunicorn-gevent" in r.stderr
    r = run(tmp_path, BENCH_ONLY="plain,hello")
    assert r.returncode == 2 and "unknown app(s)" in r.stderr and "sleep1" in r.stderr


def test_the_full_run_states_its_time_up_front(tmp_path):
    r = run(tmp_path, "--estimate")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if "estimated time" in l)
    minutes = int(line.split("estimated time: ")[1].split()[0])
    assert 5 <= minutes <= 40, line
