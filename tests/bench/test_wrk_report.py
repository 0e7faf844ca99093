"""tests/bench/test_wrk_report.py - what the harness reads from wrk's
report: req/s, percentiles in every unit wrk prints, and every kind of
error, including the connections wrk never counts (no answer at all)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))
from sidebyside import load  # noqa: E402

REPORT = """Running 15s test @ http://127.0.0.1:40001/
  1 threads and 10000 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02s    21.00ms   1.20s    90.00%
  Latency Distribution
     50%    1.01s
     75%    1.02s
     90%    1.04s
     99%  650.00us
  139000 requests in 15.02s, 11.00MB read
  Socket errors: connect 12, read 0, write 3, timeout 40
  Non-2xx or 3xx responses: 5
Requests/sec:   9254.33
Transfer/sec:    750.00KB
"""


def test_numbers_and_units():
    r = load.parse(REPORT)
    assert r["rps"] == 9254.33
    assert r["requests"] == 139000
    assert r["p50_ms"] == 1010.0
    assert abs(r["p99_ms"] - 0.65) < 1e-9


def test_every_error_kind_is_counted_and_named():
    r = load.parse(REPORT)
    assert r["errors"] == 12 + 3 + 40 + 5
    assert r["error_detail"] == "12 connect, 3 write, 40 timeout, 5 non-2xx"


def test_connections_never_answered_are_errors():
    r = load.parse(REPORT.replace("139000 requests", "9000 requests"))
    load.count_unanswered(r, 10000)
    assert r["errors"] == 60 + 1000
    assert r["error_detail"].endswith("1000 connections never answered")


def test_no_answer_at_all_has_no_percentiles():
    text = ("  Latency Distribution\n     50%    0.00us\n     99%    0.00us\n"
            "  0 requests in 15.05s, 0.00B read\nRequests/sec:      0.00\n")
    r = load.parse(text)
    load.count_unanswered(r, 10000)
    assert r["rps"] == 0 and r["p50_ms"] is None and r["p99_ms"] is None
    assert r["errors"] == 10000
