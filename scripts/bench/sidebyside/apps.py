"""sidebyside/apps.py - the apps every server is measured with.

The WSGI apps are written as three small modules into the run's temporary
directory (plain ones, Flask, PostgreSQL), so a server only imports what
its cell needs: the plain hello's RSS does not carry Flask. Each App
says how it is loaded by the load generator (connections, seconds).
"""
import os
from dataclasses import dataclass

BENCHAPPS = r'''
"""benchapps - the plain apps of the side-by-side benchmark."""
import time

def plain(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", "13")])
    return [b"Hello, world!"]

def sleep50(environ, start_response):
    time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", "5")])
    return [b"slept"]

def sleep1(environ, start_response):
    time.sleep(1)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", "5")])
    return [b"slept"]
'''

BENCHFLASK = r'''
"""benchflask - Flask's hello world."""
from flask import Flask

app = Flask(__name__)

@app.route("/")
def hello():
    return "Hello, world!"
'''

# A pool of 10 connections per process, grown on demand: a connection per
# request would measure PostgreSQL's fork, not the server. queue and
# threading are what every server makes cooperative (or not) its own way.
BENCHPG = r'''
"""benchpg - one PostgreSQL round trip per request (SELECT 1)."""
import os, queue, threading
import psycopg2

DSN = os.environ["BENCH_PG_DSN"]
POOL_SIZE = 10
_idle = queue.LifoQueue()
_made = 0
_lock = threading.Lock()

def _take():
    global _made
    try:
        return _idle.get_nowait()
    except queue.Empty:
        pass
    with _lock:
        grow = _made < POOL_SIZE
        if grow:
            _made += 1
    if not grow:
        return _idle.get()
    conn = psycopg2.connect(DSN)
    conn.autocommit = True
    return conn

def app(environ, start_response):
    conn = _take()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            body = b"%d" % cur.fetchone()[0]
    finally:
        _idle.put(conn)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

# The app-only ceiling: the app called in a loop by this process, with an
# environ rebuilt per call as a server would, its body consumed and
# close() called. argv: MODULE:ATTR SECONDS WARMUP_SECONDS.
APP_LOOP = r'''
import importlib, io, sys, time
mod, attr = sys.argv[1].split(":")
app = getattr(importlib.import_module(mod), attr)
seconds, warmup = float(sys.argv[2]), float(sys.argv[3])
base = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/",
        "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000", "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False,
        "wsgi.run_once": False}
def start_response(status, headers, exc_info=None):
    return None
def run(limit):
    n = 0
    t0 = time.perf_counter()
    end = t0 + limit
    while True:
        for _ in range(100):
            env = dict(base)
            env["wsgi.input"] = io.BytesIO(b"")
            body = app(env, start_response)
            for chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        n += 100
        t = time.perf_counter()
        if t >= end:
            return n, t - t0
run(warmup)
n, took = run(seconds)
print("CALLS %d %.6f" % (n, took), flush=True)
'''


@dataclass(frozen=True)
class App:
    name: str         # the cell's name (BENCH_ONLY)
    title: str        # the table's heading
    target: str       # MODULE:ATTR
    conns: int        # wrk -c
    seconds: float    # the measured window
    # The warm-up's connections (its length: Plan.warmup). None for the
    # sleeping apps: a server that queues what it cannot serve would still
    # be sleeping through the warm-up's leftovers in the measured window,
    # and their code path is one call; their window holds the cold start.
    warm_conns: int
    timeout: float    # wrk --timeout: a slower answer is an error


def apps(quick):
    """Every app, in table order; quick mode shortens the windows and
    holds 2,000 connections instead of 10,000."""
    s = 1.0 if quick else 4.0
    return [
        App("plain", "plain hello (13 bytes, keep-alive, 200 connections)",
            "benchapps:plain", 200, s, 200, 5),
        App("flask", "Flask hello (200 connections)",
            "benchflask:app", 200, s, 200, 5),
        # 15 s, not 4: each connection completes whole 50 ms cycles, so in
        # a 4 s window no server can pass 79 of them per connection,
        # 3,937 req/s - the window, not the server, set the figure.
        App("sleep50", "time.sleep(0.05) at 200 connections, %d s window"
            % (1 if quick else 15),
            "benchapps:sleep50", 200, 1.0 if quick else 15.0, 0, 5),
        App("sleep1", ("time.sleep(1) at %s connections, %d s window"
                       % ("2,000" if quick else "10,000", 3 if quick else 15)),
            "benchapps:sleep1", 2000 if quick else 10000,
            3.0 if quick else 15.0, 0, 5),
        App("pg", "PostgreSQL round trip (SELECT 1, pool of 10) at 50 connections",
            "benchpg:app", 50, s, 50, 5),
    ]


def write_modules(directory):
    for name, text in (("benchapps", BENCHAPPS), ("benchflask", BENCHFLASK),
                       ("benchpg", BENCHPG), ("apploop", APP_LOOP)):
        with open(os.path.join(directory, name + ".py"), "w") as f:
            f.write(text)
