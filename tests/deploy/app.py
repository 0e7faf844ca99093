"""tests/deploy/app.py - the app every host of the multi-host test serves.

  GET  /?id=N       idempotent: 5 ms of (green) sleep, then the answer
  POST /order?id=N  not idempotent: reads the body, 20 ms, then the answer
  GET  /health      at once (the test's readiness probe)

Every answer is "HOST PID ID": which host (DEPLOY_HOST, given with
`libgreen -e`) and which worker served it. Around the sleep each request
appends "S ID" and "D ID" to a file of its own worker process under
DEPLOY_RECORDS, so after a host is killed the test knows which requests
its app had started and which it had finished.
"""

import os
import time

HOST = os.environ["DEPLOY_HOST"]
RECORDS = os.environ["DEPLOY_RECORDS"]
DELAY = {"GET": 0.005, "POST": 0.020}
_out = {}   # pid -> fd: one file per worker (opened after the fork)


def record(line):
    fd = _out.get(os.getpid())
    if fd is None:
        path = os.path.join(RECORDS, f"{HOST}-{os.getpid()}.log")
        fd = _out[os.getpid()] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())


def app(environ, start_response):
    method = environ["REQUEST_METHOD"]
    rid = environ["QUERY_STRING"].partition("id=")[2] or "-"
    if environ["PATH_INFO"] != "/health":
        if method == "POST":
            environ["wsgi.input"].read()
        record(f"S {rid}\n")
        time.sleep(DELAY.get(method, 0))
        record(f"D {rid}\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{HOST} {os.getpid()} {rid}".encode()]
