"""Every request in its own green thread: blocking calls overlap, and the
per-thread state of Python (contextvars, threading.local, exception
state, thread identity, Flask's request context) stays per request."""

import concurrent.futures as cf
import json
import os
import subprocess
import time
import urllib.request

import pytest

from conftest import PYTHON, child_env

SLEEP_APP = r'''
import time

def app(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or 0.5))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]
'''


def fetch(url, timeout=20):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def run_concurrently(fn, args, workers):
    with cf.ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, args))


def test_200_concurrent_sleeps_overlap(server):
    srv = server(SLEEP_APP, {"log_output": False})
    t0 = time.monotonic()
    results = run_concurrently(lambda i: fetch(srv.url(f"/r{i}?0.5")),
                               range(200), 200)
    elapsed = time.monotonic() - t0
    assert [r for r in results] == [(200, f"/r{i}".encode()) for i in range(200)]
    assert elapsed < 3, f"200 requests sleeping 0.5 s took {elapsed:.2f} s"


def test_max_size_limits_concurrency(server):
    """max_size=5: at most 5 requests run at once; the others wait their
    turn (and are not refused)."""
    srv = server(SLEEP_APP, {"log_output": False, "max_size": 5})
    t0 = time.monotonic()
    results = run_concurrently(lambda i: fetch(srv.url(f"/m{i}?0.3")), range(15), 15)
    elapsed = time.monotonic() - t0
    assert all(status == 200 for status, _ in results)
    assert 0.85 <= elapsed < 4, elapsed  # 3 waves of 0.3 s


def test_max_size_holds_for_open_connections(server):
    """Connections accepted earlier (keep-alive clients) that all send a
    request at once still run at most max_size at a time."""
    srv = server(SLEEP_APP, {"log_output": False, "max_size": 2})
    conns = [srv.raw() for _ in range(6)]
    try:
        time.sleep(0.2)  # all six accepted while the server is idle
        t0 = time.monotonic()
        for i, c in enumerate(conns):
            c.send(f"GET /k{i}?0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
        for i, c in enumerate(conns):
            assert c.response()[2] == f"/k{i}".encode()
        elapsed = time.monotonic() - t0
    finally:
        for c in conns:
            c.close()
    assert 0.85 <= elapsed < 4, f"6 requests, max_size 2, 0.3 s each: {elapsed:.2f} s"


ISOLATION_APP = r'''
import contextvars, sys, threading, time

var = contextvars.ContextVar("var", default=None)
local = threading.local()
lock = threading.Lock()
rlock = threading.RLock()
shared = {"inside": 0, "max_inside": 0}

def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = environ["QUERY_STRING"]
    start_exc = repr(sys.exc_info())
    start_var = var.get()
    start_local = getattr(local, "value", None)
    out = {"start_exc": start_exc, "start_var": start_var,
           "start_local": start_local, "ident": threading.get_ident(),
           "t0": time.monotonic()}
    if path == "/iso":
        var.set(q)
        local.value = q
        time.sleep(0.2)
        out["var"] = var.get()
        out["local"] = local.value
        out["ident_after"] = threading.get_ident()
        out["t1"] = time.monotonic()
    elif path == "/exc":
        try:
            raise ValueError(q)
        except ValueError:
            time.sleep(0.2)
            out["exc_after_sleep"] = str(sys.exc_info()[1])
    elif path == "/lock":
        with lock:
            shared["inside"] += 1
            shared["max_inside"] = max(shared["max_inside"], shared["inside"])
            time.sleep(0.02)
            shared["inside"] -= 1
        out["max_inside"] = shared["max_inside"]
    elif path == "/rlock-hold":
        with rlock:
            time.sleep(0.5)
        out["held"] = True
    elif path == "/rlock-try":
        got = rlock.acquire(timeout=0.1)
        if got:
            rlock.release()
        out["got"] = got
    elif path == "/threads":
        threading.current_thread()  # makes a dummy Thread for this thread
        time.sleep(0.05)
        out["active"] = len(threading._active)
    elif path == "/recurse":
        def down(n):
            return 0 if n == 0 else 1 + down(n - 1)
        time.sleep(0.05)
        out["depth"] = down(int(q))
    start_response("200 OK", [("Content-Type", "application/json")])
    import json
    return [json.dumps(out).encode()]
'''


@pytest.fixture(scope="module")
def isrv(module_server):
    return module_server(ISOLATION_APP, {"log_output": False})


def get_json(srv, path):
    status, body = fetch(srv.url(path))
    assert status == 200
    return json.loads(body)


def test_contextvar_and_threading_local_isolated(isrv):
    results = run_concurrently(lambda i: get_json(isrv, f"/iso?v{i}"), range(100), 100)
    for i, r in enumerate(results):
        assert r["var"] == f"v{i}" and r["local"] == f"v{i}", r
        assert r["start_var"] is None, "a ContextVar leaked from another request"
        assert r["start_local"] is None, "a threading.local leaked"
        assert r["ident"] == r["ident_after"]
    # requests running at the same time are different threads to Python
    # (an ident may be reused once its request is over)
    same = [(a, b) for a in results for b in results
            if a is not b and a["ident"] == b["ident"]
            and a["t0"] < b["t1"] and b["t0"] < a["t1"]]
    assert not same, f"overlapping requests shared threading.get_ident(): {same[:2]}"
    assert len({r["ident"] for r in results}) > 10


def test_exception_state_does_not_leak(isrv):
    paths = [f"/exc?e{i}" if i % 2 else f"/iso?c{i}" for i in range(60)]
    results = run_concurrently(lambda p: get_json(isrv, p), paths, 60)
    for p, r in zip(paths, results):
        assert r["start_exc"] == "(None, None, None)", (p, r)
        if p.startswith("/exc"):
            assert r["exc_after_sleep"] == p.split("?")[1]
    # and after all of them, a fresh request starts clean too
    assert get_json(isrv, "/iso?final")["start_exc"] == "(None, None, None)"


def test_threading_lock_between_requests(isrv):
    results = run_concurrently(lambda i: get_json(isrv, "/lock"), range(30), 30)
    assert max(r["max_inside"] for r in results) == 1


def test_rlock_is_not_shared_between_requests(isrv):
    with cf.ThreadPoolExecutor(2) as ex:
        hold = ex.submit(get_json, isrv, "/rlock-hold")
        time.sleep(0.15)
        other = get_json(isrv, "/rlock-try")
        assert other["got"] is False, \
            "a second request re-entered an RLock another request holds"
        assert hold.result()["held"] is True
    assert get_json(isrv, "/rlock-try")["got"] is True


def test_dummy_threads_do_not_pile_up(isrv):
    """threading.current_thread() in a request makes a dummy Thread; they
    must not accumulate one per request."""
    def burst():
        return run_concurrently(lambda i: get_json(isrv, "/threads"), range(200), 50)
    burst()
    first = max(r["active"] for r in burst())
    for _ in range(2):
        burst()
    last = max(r["active"] for r in burst())
    assert last <= first + 10, f"threading._active grew from {first} to {last}"
    assert last < 200


def test_deep_recursion_in_many_requests(isrv):
    results = run_concurrently(lambda i: get_json(isrv, "/recurse?500"), range(20), 20)
    assert all(r["depth"] == 500 for r in results)


FLASK_APP = r'''
import contextvars, threading, time
import flask

app = flask.Flask(__name__)
var = contextvars.ContextVar("var")
local = threading.local()

@app.route("/v/<value>")
def view(value):
    flask.g.value = value
    var.set(value)
    local.value = value
    time.sleep(0.2)
    return flask.jsonify(g=flask.g.value, var=var.get(), local=local.value,
                         arg=flask.request.args.get("a"),
                         path=flask.request.path)
'''


FLASK_STACK = ("flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous",
               "click")


def interpreter_has(python, module, env=None):
    r = subprocess.run([python, "-c", f"import {module}"],
                       env=child_env(False, env), capture_output=True, timeout=30)
    return r.returncode == 0


def flask_env(tmp_path):
    """{} if the interpreter under test has Flask; else a PYTHONPATH that
    lends it Debian's pure-Python Flask stack (python3-flask), so a pyenv
    3.12/3.13 runs the same test. None if neither has Flask."""
    if interpreter_has(PYTHON, "flask"):
        return {}
    r = subprocess.run(["/usr/bin/python3", "-c", "import sys, importlib\n"
                        f"for m in {FLASK_STACK!r}:\n"
                        "    print(importlib.import_module(m).__path__[0])"],
                       env=child_env(False), capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        return None
    lent = tmp_path / "flask-stack"
    lent.mkdir()
    for pkg_dir in r.stdout.split():
        (lent / os.path.basename(pkg_dir)).symlink_to(pkg_dir)
    env = {"PYTHONPATH": str(lent)}
    return env if interpreter_has(PYTHON, "flask", env) else None


def test_300_concurrent_flask_requests_isolated(server, tmp_path):
    env = flask_env(tmp_path)
    if env is None:
        pytest.skip(f"no Flask for {PYTHON} (Debian: python3-flask)")
    srv = server(FLASK_APP, {"log_output": False}, env=env)

    def one(i):
        return get_json(srv, f"/v/val{i}?a=arg{i}")

    t0 = time.monotonic()
    results = run_concurrently(one, range(300), 300)
    elapsed = time.monotonic() - t0
    wrong = [(i, r) for i, r in enumerate(results)
             if r != {"g": f"val{i}", "var": f"val{i}", "local": f"val{i}",
                      "arg": f"arg{i}", "path": f"/v/val{i}"}]
    assert not wrong, f"{len(wrong)} of 300 got another request's values: {wrong[:3]}"
    assert elapsed < 10, elapsed
