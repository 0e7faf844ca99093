"""tests/deploy/loadgen.py - the clients of the multi-host test.

A fixed number of client threads, each with one keep-alive connection to
nginx, send requests back to back until stopped: three in ten are
`POST /order?id=N` (not idempotent), the rest `GET /?id=N`. Every
request is kept as a Result: its id, method, when it was sent and when
its answer (or error) came, the status, and which host answered. A
request fails if it gets anything but 200, or no answer at all.

A connection nginx closes after an answer that said "Connection: close"
(its keepalive_requests) is simply opened again: that is not a failure.
Nothing is retried by the client: every retry in these numbers is
nginx's.
"""

import http.client
import itertools
import threading
import time
from dataclasses import dataclass

POST_SHARE = 3      # out of 10 requests
TIMEOUT = 30.0      # seconds a client waits for an answer


@dataclass
class Result:
    rid: int
    method: str
    sent: float           # time.monotonic()
    done: float
    status: int = 0       # 0: no HTTP answer at all
    host: str = ""        # who answered (the app's first word)
    pid: int = 0          # which worker of it
    error: str = ""

    @property
    def failed(self):
        return self.status != 200


class Load:
    """with Load(port, clients) as load: ... -> load.results."""

    ids = itertools.count(1)   # unique across every Load of a run

    def __init__(self, port, clients=12):
        self.port = port
        self.results = []
        self.last = {}             # host -> when the newest request it answered was sent
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True)
                        for _ in range(clients)]

    def __enter__(self):
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=TIMEOUT + 5)
        self.ended = time.monotonic()

    def _one(self, conn, rid):
        post = rid % 10 < POST_SHARE
        r = Result(rid, "POST" if post else "GET", time.monotonic(), 0.0)
        try:
            if post:
                conn.request("POST", f"/order?id={rid}", body=b"x" * 200,
                             headers={"Content-Type": "text/plain"})
            else:
                conn.request("GET", f"/?id={rid}")
            resp = conn.getresponse()
            body = resp.read().decode("latin-1")
            r.status = resp.status
            if resp.status == 200:
                r.host, pid, _ = body.split(" ", 2)
                r.pid = int(pid)
            if resp.status != 200:
                r.error = body[:200]
        except (OSError, http.client.HTTPException) as e:
            r.error = f"{type(e).__name__}: {e}"
            conn.close()
        r.done = time.monotonic()
        return r

    def _client(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        while not self.stop.is_set():
            r = self._one(conn, next(self.ids))
            with self.lock:
                self.results.append(r)
                if r.host:
                    self.last[r.host] = max(self.last.get(r.host, 0.0), r.sent)
        conn.close()

    def snapshot(self):
        with self.lock:
            return list(self.results)

    def wait_served_by(self, host, since, timeout):
        """Waits until host answered a request sent after since (nginx
        sends it traffic again); returns how long that took."""
        end = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.last.get(host, 0.0) > since:
                    return time.monotonic() - since
            if time.monotonic() > end:
                raise RuntimeError(f"nginx sent {host} no request within {timeout} s "
                                   f"of its restart")
            time.sleep(0.02)
