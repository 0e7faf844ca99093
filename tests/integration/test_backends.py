"""Real client libraries, used unmodified (no psycogreen, no wait
callbacks, no monkey-patching), cooperate under libgreen against real
servers from Debian packages: PostgreSQL (psycopg2, SQLAlchemy's
QueuePool), Redis (redis-py), memcached (pymemcache), outbound HTTP(S)
(requests, urllib.request, pycurl/libcurl) and subprocess.

The servers are started by these tests (tests/integration/backends.py) on
127.0.0.1 or on a Unix socket in a private directory, and stopped by PID.
The code under test runs in a child process started with
LD_PRELOAD=<libgreen.so> and PYTHON (LIBGREEN_PYTHON, default
/usr/bin/python3); a test skips, saying why, when a server binary is
missing or when that interpreter cannot import the client library.

The clients are written so that without libgreen they run the same
functions one after another (backends.CLIENT_PRELUDE): the "identical"
tests run them without the preload too and compare what they returned.
Time bounds are generous but still tell "overlapped" from "sequential".
"""

import concurrent.futures as cf
import json
import subprocess
import time
import urllib.request

import pytest

import backends
from backends import client
from conftest import PYTHON, SO

pytestmark = pytest.mark.skipif(not SO.is_file(),
                                reason=f"{SO} not found: run `make` first")


def requires(*modules):
    """Skips (before any server is started) when PYTHON cannot import the
    client library under test - e.g. a pyenv interpreter without
    Debian's python3-* packages."""
    missing = backends.missing_modules(*modules)
    return pytest.mark.skipif(
        bool(missing), reason=f"{PYTHON} cannot import {', '.join(missing)} "
                              f"(the client library under test is not installed there)")


def _server_fixture(find, cls, what):
    if find() is None:
        pytest.skip(f"{what} is not installed (scripts/install-deps installs it)")
    srv = cls()
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture(scope="module")
def pg():
    yield from _server_fixture(backends.find_postgres, backends.Postgres,
                               "PostgreSQL (/usr/lib/postgresql/*/bin/initdb)")


@pytest.fixture(scope="module")
def redis_server():
    yield from _server_fixture(backends.find_redis, backends.Redis, "redis-server")


@pytest.fixture(scope="module")
def memcached():
    yield from _server_fixture(backends.find_memcached, backends.Memcached, "memcached")


@pytest.fixture(scope="module")
def slow_http():
    srv = backends.SlowHTTP()
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture(scope="module")
def slow_https():
    if backends.find_openssl() is None:
        pytest.skip("the openssl CLI is not installed (needed for the certificate)")
    srv = backends.SlowHTTP(tls=True)
    try:
        yield srv
    finally:
        srv.cleanup()


def http_get_json(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def concurrent_gets(urls, timeout=30):
    """GETs all urls at once from threads of this (pytest) process;
    returns ([(status, json)...], seconds)."""
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(max_workers=len(urls)) as ex:
        results = list(ex.map(lambda u: http_get_json(u, timeout), urls))
    return results, time.monotonic() - t0


# ------------------------------------------------------------ PostgreSQL

PG_WSGI_APP = r'''
import json, os, time
import psycopg2

DSN = os.environ["LG_PG_DSN"]

def app(environ, start_response):
    t0 = time.monotonic()
    conn = psycopg2.connect(DSN)          # its own connection, per request
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_sleep(0.2), pg_backend_pid()")
        pid = cur.fetchone()[1]
    finally:
        conn.close()
    body = json.dumps({"path": environ["PATH_INFO"], "pid": pid,
                       "t": time.monotonic() - t0}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


@requires("psycopg2")
def test_psycopg2_requests_overlap_in_the_wsgi_server(pg, server):
    srv = server(PG_WSGI_APP, {"log_output": False}, env={"LG_PG_DSN": pg.dsn})
    results, elapsed = concurrent_gets([srv.url(f"/q{i}") for i in range(50)])
    assert [s for s, _ in results] == [200] * 50
    assert [j["path"] for _, j in results] == [f"/q{i}" for i in range(50)]
    assert len({j["pid"] for _, j in results}) == 50  # 50 backends at once
    assert all(0.19 <= j["t"] < 1.9 for _, j in results), [j["t"] for _, j in results]
    assert elapsed < 2, f"50 x pg_sleep(0.2) took {elapsed:.2f} s (sequential: 10 s)"


PG_SPAWN_CLIENT = r'''
import psycopg2

def one(i):
    t = time.monotonic()
    conn = psycopg2.connect(CFG["dsn"])
    try:
        cur = conn.cursor()
        cur.execute("SELECT %s, pg_backend_pid() FROM pg_sleep(%s)", (i, CFG["sleep"]))
        got, pid = cur.fetchone()
    finally:
        conn.close()
    return [got, pid, time.monotonic() - t]

t0 = time.monotonic()
gs = [spawn(one, i) for i in range(CFG["n"])]
res = [g.wait(timeout=60) for g in gs]
emit({"res": res, "elapsed": time.monotonic() - t0})
'''


@requires("psycopg2")
def test_psycopg2_green_threads_overlap(pg):
    r = client(PG_SPAWN_CLIENT, {"dsn": pg.dsn, "n": 50, "sleep": 0.2})
    assert [x[0] for x in r["res"]] == list(range(50))
    assert len({x[1] for x in r["res"]}) == 50
    assert r["elapsed"] < 2, f"50 x pg_sleep(0.2) took {r['elapsed']:.2f} s (sequential: 10 s)"


SQLA_WSGI_APP = r'''
import json, os, threading, time
import psycopg2
from sqlalchemy import create_engine, text
from sqlalchemy.pool import QueuePool

DSN = os.environ["LG_PG_DSN"]
engine = create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(DSN),
                       poolclass=QueuePool, pool_size=2, max_overflow=0,
                       pool_timeout=30)
state = {"inside": 0, "max_inside": 0}
lock = threading.Lock()

def app(environ, start_response):
    t0 = time.monotonic()
    with engine.connect() as conn:             # waits here for a pooled connection
        waited = time.monotonic() - t0
        with lock:
            state["inside"] += 1
            state["max_inside"] = max(state["max_inside"], state["inside"])
        try:
            pid = conn.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.1)")).scalar()
        finally:
            with lock:
                state["inside"] -= 1
    body = json.dumps({"path": environ["PATH_INFO"], "pid": pid, "waited": waited,
                       "max_inside": state["max_inside"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


@requires("psycopg2", "sqlalchemy")
def test_sqlalchemy_queuepool_waits_are_cooperative(pg, server):
    srv = server(SQLA_WSGI_APP, {"log_output": False}, env={"LG_PG_DSN": pg.dsn})
    results, elapsed = concurrent_gets([srv.url(f"/s{i}") for i in range(20)])
    assert [s for s, _ in results] == [200] * 20
    assert [j["path"] for _, j in results] == [f"/s{i}" for i in range(20)]
    assert max(j["max_inside"] for _, j in results) == 2  # the pool's limit held
    assert len({j["pid"] for _, j in results}) <= 2       # two connections, reused
    assert max(j["waited"] for _, j in results) > 0.5     # some waited in the pool
    # 20 x 0.1 s over 2 connections: ~1 s; a blocking pool wait would stall it
    assert 0.9 <= elapsed < 4, f"20 requests through a 2-connection pool took {elapsed:.2f} s"


# ------------------------------------------------------------ Redis

REDIS_CLIENT = r'''
import redis

r = redis.Redis(host="127.0.0.1", port=CFG["port"], socket_timeout=30,
                socket_connect_timeout=10)
n, prefix = CFG["n"], CFG["prefix"]
pushed = list(range(0, n, 2))
key = lambda i: "%s:%d" % (prefix, i)
r.delete(*[key(i) for i in range(n)])
t0 = time.monotonic()

def pusher():
    time.sleep(CFG["push_after"])
    for i in pushed:
        r.lpush(key(i), "value-%d" % i)
    return time.monotonic() - t0

def popper(i):
    t = time.monotonic()
    v = r.blpop([key(i)], timeout=CFG["timeout"])
    return [None if v is None else [v[0].decode(), v[1].decode()], time.monotonic() - t]

gp = spawn(pusher)
gs = [spawn(popper, i) for i in range(n)]
res = [g.wait(timeout=60) for g in gs]
pushed_at = gp.wait(timeout=60)
emit({"values": [x[0] for x in res], "times": [x[1] for x in res],
      "pushed_at": pushed_at, "elapsed": time.monotonic() - t0})
'''


@requires("redis")
def test_redis_blpop_with_timeouts(redis_server):
    r = client(REDIS_CLIENT, {"port": redis_server.port, "n": 20, "prefix": "blpop-a",
                              "push_after": 0.2, "timeout": 1})
    for i, (v, t) in enumerate(zip(r["values"], r["times"])):
        if i % 2 == 0:
            assert v == [f"blpop-a:{i}", f"value-{i}"]
            assert 0.15 <= t < 0.6, f"pushed key {i} popped after {t:.2f} s"
        else:
            assert v is None
            assert 0.9 <= t < 2.0, f"empty key {i} timed out after {t:.2f} s"
    assert r["elapsed"] < 2.5, f"20 BLPOPs took {r['elapsed']:.2f} s"


# ------------------------------------------------------------ memcached

MEMCACHED_CLIENT = r'''
import hashlib
from pymemcache.client.base import Client

t0 = time.monotonic()

def sleeper():
    ticks = []
    for _ in range(CFG["ticks"]):
        time.sleep(0.2)
        ticks.append(time.monotonic() - t0)
    return ticks

def worker(i):
    c = Client(("127.0.0.1", CFG["port"]), connect_timeout=10, timeout=30)
    try:
        key = "%s-%d" % (CFG["prefix"], i)
        value = (("value-%d-" % i) * 10000).encode()[:CFG["size"] + i]
        c.set(key, value)
        time.sleep(0.01)             # let the others' traffic interleave
        got = c.get(key)
    finally:
        c.close()
    return [i, len(got or b""), hashlib.sha1(got or b"").hexdigest(), got == value,
            time.monotonic() - t0]

gsl = spawn(sleeper)
gs = [spawn(worker, i) for i in range(CFG["n"])]
res = [g.wait(timeout=60) for g in gs]
ticks = gsl.wait(timeout=60)
emit({"values": [x[:4] for x in res], "ntick": len(ticks), "ticks": ticks,
      "workers_done": max(x[4] for x in res), "elapsed": time.monotonic() - t0})
'''


@requires("pymemcache")
def test_memcached_concurrent_set_get(memcached):
    r = client(MEMCACHED_CLIENT, {"port": memcached.port, "n": 100, "prefix": "mc-a",
                                  "size": 30000, "ticks": 3})
    assert [v[0] for v in r["values"]] == list(range(100))
    assert all(v[3] for v in r["values"]), [v for v in r["values"] if not v[3]]
    assert [v[1] for v in r["values"]] == [30000 + i for i in range(100)]
    # the sleeper was not starved: every tick on time...
    for k, t in enumerate(r["ticks"], 1):
        assert 0.2 * k - 0.02 <= t < 0.2 * k + 0.15, r["ticks"]
    # ...and the 100 workers all ran while it slept
    assert r["workers_done"] < r["ticks"][-1], (r["workers_done"], r["ticks"])
    assert r["elapsed"] < 1.2, r["elapsed"]


# ------------------------------------------------------------ outbound HTTP

HTTP_CLIENT = r'''
import io, socket, ssl, urllib.error, urllib.request

_libs = {j["lib"] for j in CFG["jobs"]}
if "requests" in _libs:
    import requests
if "pycurl" in _libs:
    import pycurl

def via_requests(url, timeout, cafile):
    try:
        resp = requests.get(url, timeout=timeout, verify=cafile or True)
        return ["ok", resp.status_code, resp.text]
    except requests.exceptions.Timeout as e:
        return ["timeout", type(e).__name__]

def via_urllib(url, timeout, cafile):
    ctx = None
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return ["ok", resp.status, resp.read().decode()]
    except (socket.timeout, TimeoutError) as e:
        return ["timeout", type(e).__name__]
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            return ["timeout", "URLError(%s)" % type(e.reason).__name__]
        raise

def via_pycurl(url, timeout, cafile):
    buf = io.BytesIO()
    c = pycurl.Curl()
    try:
        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.WRITEDATA, buf)
        c.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000))
        c.setopt(pycurl.NOSIGNAL, 1)
        if cafile:
            c.setopt(pycurl.CAINFO, cafile)
        try:
            c.perform()
        except pycurl.error as e:
            if e.args[0] == pycurl.E_OPERATION_TIMEDOUT:
                return ["timeout", "E_OPERATION_TIMEDOUT"]
            raise
        return ["ok", c.getinfo(pycurl.RESPONSE_CODE), buf.getvalue().decode()]
    finally:
        c.close()

LIBS = {"requests": via_requests, "urllib": via_urllib, "pycurl": via_pycurl}

def job(j):
    t = time.monotonic()
    out = LIBS[j["lib"]](j["url"], j["timeout"], j.get("cafile"))
    return [out, time.monotonic() - t]

t0 = time.monotonic()
gs = [spawn(job, j) for j in CFG["jobs"]]
res = [g.wait(timeout=60) for g in gs]
emit({"values": [x[0] for x in res], "times": [x[1] for x in res],
      "elapsed": time.monotonic() - t0})
'''

LIB_MODULES = {"requests": ["requests"], "urllib": [], "pycurl": ["pycurl"]}


def libs(*names):
    return [pytest.param(n, marks=requires(*LIB_MODULES[n])) for n in names]


def _expected_body(path, delay):
    return json.dumps({"path": path, "delay": delay})


@pytest.mark.parametrize("lib", libs("requests", "urllib", "pycurl"))
def test_outbound_http_overlaps(lib, slow_http):
    jobs = [{"lib": lib, "url": f"{slow_http.url}/h{i}?delay=0.5", "timeout": 10}
            for i in range(20)]
    r = client(HTTP_CLIENT, {"jobs": jobs})
    assert r["values"] == [["ok", 200, _expected_body(f"/h{i}", 0.5)] for i in range(20)]
    assert all(0.45 <= t < 1.9 for t in r["times"]), r["times"]
    assert r["elapsed"] < 2, f"20 x 0.5 s via {lib} took {r['elapsed']:.2f} s (sequential: 10 s)"


@pytest.mark.parametrize("lib", libs("requests", "urllib", "pycurl"))
def test_outbound_http_timeouts_are_per_green_thread(lib, slow_http):
    """Even jobs time out after 0.2 s (the server takes 0.5 s); odd jobs,
    running at the same time, are unaffected."""
    jobs = [{"lib": lib, "url": f"{slow_http.url}/t{i}?delay=0.5",
             "timeout": 0.2 if i % 2 == 0 else 10} for i in range(20)]
    r = client(HTTP_CLIENT, {"jobs": jobs})
    for i, (v, t) in enumerate(zip(r["values"], r["times"])):
        if i % 2 == 0:
            assert v[0] == "timeout", (i, v)
            assert 0.18 <= t < 0.45, f"job {i}: timeout raised after {t:.2f} s"
        else:
            assert v == ["ok", 200, _expected_body(f"/t{i}", 0.5)], (i, v)
            assert 0.45 <= t < 1.9, f"job {i}: answered after {t:.2f} s"
    assert r["elapsed"] < 2, r["elapsed"]


@pytest.mark.parametrize("lib", libs("urllib", "requests", "pycurl"))
def test_outbound_https_overlaps(lib, slow_https):
    jobs = [{"lib": lib, "url": f"{slow_https.url}/s{i}?delay=0.5", "timeout": 10,
             "cafile": slow_https.cafile} for i in range(20)]
    r = client(HTTP_CLIENT, {"jobs": jobs})
    assert r["values"] == [["ok", 200, _expected_body(f"/s{i}", 0.5)] for i in range(20)]
    assert r["elapsed"] < 2, f"20 x 0.5 s over TLS via {lib} took {r['elapsed']:.2f} s"


LAZY_IMPORT_CLIENT = r'''
def fetch(url):
    if CFG["module"] == "requests":
        import requests                      # imported where first needed
        return requests.get(url, timeout=10).text
    import logging                           # stdlib; imports threading
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()

import urllib.request
emit({"body": spawn(fetch, CFG["url"]).wait(timeout=30)})
'''


@pytest.mark.parametrize("module", [pytest.param("requests", marks=requires("requests")),
                                    "logging"])
def test_client_library_imported_inside_a_green_thread(module, slow_http):
    """Libraries are often imported lazily, in the first request that
    needs them (SQLAlchemy dialects, plugins). If that import is the
    first `import threading` of the process, threading's main-thread
    object belongs to the green thread: the program must still exit."""
    url = f"{slow_http.url}/lazy?delay=0.1"
    try:
        r, timed_out = client(LAZY_IMPORT_CLIENT, {"url": url, "module": module},
                              timeout=6), None
    except subprocess.TimeoutExpired as e:
        r, timed_out = None, e
    if timed_out and '"body"' in (timed_out.output or ""):
        pytest.fail(f"a green thread imported {module} (and with it threading) first: "
                    "the program did its work but did not exit within 6 s "
                    f"(it printed {timed_out.output.strip()!r})", pytrace=False)
    if timed_out:
        pytest.fail(f"a green thread importing {module} lazily: no result within 6 s\n"
                    f"stdout:\n{timed_out.output}\nstderr:\n{timed_out.stderr}")
    assert r["body"] == _expected_body("/lazy", 0.1)


# ------------------------------------------------------------ subprocess

SUBPROCESS_CLIENT = r'''
import hashlib, subprocess

def shell():
    p = subprocess.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True)
    return [p.args, p.returncode, p.stdout.decode(), p.stderr.decode()]

def cat_big():
    data = bytes(range(256)) * 4096      # 1 MiB through a pipe each way
    p = subprocess.run(["cat"], input=data, capture_output=True)
    return [p.returncode, len(p.stdout), hashlib.sha1(p.stdout).hexdigest(),
            p.stdout == data, p.stderr.decode()]

def sleeper(capture):
    t = time.monotonic()
    p = subprocess.run(["sleep", str(CFG["sleep"])], capture_output=capture)
    return [p.returncode, time.monotonic() - t]

out = {"shell": spawn(shell).wait(timeout=30), "cat": spawn(cat_big).wait(timeout=30)}
if CFG.get("sleepers"):
    t0 = time.monotonic()
    gs = [spawn(sleeper, CFG["capture"]) for _ in range(CFG["sleepers"])]
    out["sleepers"] = [g.wait(timeout=60) for g in gs]
    out["elapsed"] = time.monotonic() - t0
emit(out)
'''

SUBPROCESS_WSGI_APP = r'''
import json, subprocess

def app(environ, start_response):
    p = subprocess.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True)
    body = json.dumps([p.args, p.returncode, p.stdout.decode(),
                       p.stderr.decode()]).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture(scope="module")
def subprocess_reference():
    """What the subprocess calls return without the preload."""
    return client(SUBPROCESS_CLIENT, {}, preload=False)


def test_subprocess_output_is_exactly_as_without_the_preload(subprocess_reference):
    ref = subprocess_reference
    assert ref["shell"] == [["sh", "-c", "echo out; echo err >&2; exit 3"], 3,
                            "out\n", "err\n"]
    assert ref["cat"][3] is True
    r = client(SUBPROCESS_CLIENT, {})
    assert r["shell"] == ref["shell"]
    assert r["cat"] == ref["cat"]


def test_subprocess_in_a_request_is_exactly_as_without_the_preload(
        subprocess_reference, server):
    srv = server(SUBPROCESS_WSGI_APP, {"log_output": False})
    results, _ = concurrent_gets([srv.url(f"/p{i}") for i in range(10)])
    assert results == [(200, subprocess_reference["shell"])] * 10


@pytest.mark.parametrize("capture", [False, True], ids=["plain", "capture_output"])
def test_concurrent_subprocesses_overlap(capture):
    """10 green threads each run `sleep 0.3` through subprocess.run:
    0.3 s in all, not 3 s."""
    r = client(SUBPROCESS_CLIENT, {"sleepers": 10, "sleep": 0.3, "capture": capture})
    assert [x[0] for x in r["sleepers"]] == [0] * 10
    assert r["elapsed"] < 1.5, (f"10 x subprocess.run(['sleep', '0.3']"
                                f"{', capture_output=True' if capture else ''}) "
                                f"took {r['elapsed']:.2f} s (sequential: 3 s)")


# ------------------------------------------------------------ identical results

@requires("redis")
def test_redis_identical_without_the_preload(redis_server):
    # small, so the sequential run (one BLPOP timeout after another) stays short
    cfg = {"port": redis_server.port, "n": 6, "push_after": 0.2, "timeout": 1}
    green = client(REDIS_CLIENT, dict(cfg, prefix="blpop-g"))
    plain = client(REDIS_CLIENT, dict(cfg, prefix="blpop-g"), preload=False)
    assert green["values"] == plain["values"]
    assert green["values"] == [["blpop-g:0", "value-0"], None, ["blpop-g:2", "value-2"],
                               None, ["blpop-g:4", "value-4"], None]
    assert green["elapsed"] < 2.5 and plain["elapsed"] >= 3  # overlapped vs one by one


@requires("pymemcache")
def test_memcached_identical_without_the_preload(memcached):
    cfg = {"port": memcached.port, "n": 100, "prefix": "mc-b", "size": 30000, "ticks": 3}
    green = client(MEMCACHED_CLIENT, cfg)
    plain = client(MEMCACHED_CLIENT, cfg, preload=False)
    assert green["values"] == plain["values"]
    assert green["ntick"] == plain["ntick"] == 3
    assert all(v[3] for v in green["values"])
    assert green["elapsed"] < plain["elapsed"]


def test_http_identical_without_the_preload(slow_http, slow_https):
    libs = [lib for lib in ("requests", "urllib", "pycurl")
            if not backends.missing_modules(*LIB_MODULES[lib])]
    jobs = []
    for lib in libs:
        jobs += [{"lib": lib, "url": f"{slow_http.url}/{lib}-ok?delay=0.3", "timeout": 10},
                 {"lib": lib, "url": f"{slow_http.url}/{lib}-to?delay=0.3", "timeout": 0.1},
                 {"lib": lib, "url": f"{slow_https.url}/{lib}-tls?delay=0.3", "timeout": 10,
                  "cafile": slow_https.cafile}]
    green = client(HTTP_CLIENT, {"jobs": jobs})
    plain = client(HTTP_CLIENT, {"jobs": jobs}, preload=False)
    assert green["values"] == plain["values"]
    assert [v[0] for v in green["values"]] == ["ok", "timeout", "ok"] * len(libs)
    assert green["elapsed"] < 1.5, green["elapsed"]  # all at once: ~0.3 s
