"""libgreen behind nginx and Apache httpd (issue 8, "Behind a reverse proxy").

Each proxy runs the file users are given, docs/nginx.conf or
docs/apache-libgreen.conf, with only its ports and paths replaced
(tests/integration/proxies.py), in front of a libgreen server started as
the other integration tests start theirs (conftest's `module_server`: the app
module ends in libgreen.wsgi.server(libgreen.listen(address), app)), over
TCP and over a Unix socket. Four stacks, every test on each:

  keep-alive     many requests through the proxy reach libgreen on a few
                 reused connections, not one connection each
  headers        Host, X-Forwarded-For (appended to), X-Forwarded-Proto
                 (replaced) as the app sees them
  forwarded      REMOTE_ADDR and wsgi.url_scheme from those headers only
                 when the proxy is trusted (forwarded_allow_ips, issue 8
                 contract A; skipped until the server has the option)
  upload         50 MiB with Content-Length and chunked, buffered by the
                 proxy and streamed through it, arrive intact (sha256)
  stream         the first part of a response the app yields in parts
                 reaches the client before the app makes the next
  concurrency    50 requests that each sleep 1 s, at once, take ~1 s

A test skips, saying why, when nginx or apache2 is not installed
(scripts/install-deps installs both). Clients are threads of this test
process; a client that must not look like the proxy (127.0.0.1) binds
127.0.0.2, another loopback address.
"""

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import proxies
from conftest import PYTHON, SO, child_env

pytestmark = pytest.mark.skipif(
    not SO.is_file(), reason=f"{SO} not found: run `make` (or set LIBGREEN_SO) first")

STACKS = [("nginx", "tcp"), ("nginx", "unix"), ("apache2", "tcp"), ("apache2", "unix")]
STACK_IDS = [f"{k}-{t}" for k, t in STACKS]
KINDS = {"nginx": (proxies.Nginx, proxies.find_nginx),
         "apache2": (proxies.Apache, proxies.find_apache)}
CLIENT = "127.0.0.2"     # a client address that is not the proxy's
SPOOF = "203.0.113.7"    # what a lying client puts in X-Forwarded-For
TIMEOUT = 30.0           # socket timeout of every client
UPLOAD_SIZE = 50 * 1024 * 1024
HOLD = 10.0              # seconds a streamed response waits for the client

APP = r'''
import hashlib
import json
import os
import time

KEYS = ("REMOTE_ADDR", "HTTP_HOST", "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_PROTO", "wsgi.url_scheme")


def sockets():
    """Inodes of every socket this process holds: the listener and each
    connection open now (a new connection is a new inode)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue   # closed meanwhile
        if link.startswith("socket:["):
            found.append(int(link[8:-1]))
    return found


def digest(environ):
    h, n, read = hashlib.sha256(), 0, environ["wsgi.input"].read
    while True:
        block = read(1 << 16)
        if not block:
            break
        h.update(block)
        n += len(block)
    return {"sha256": h.hexdigest(), "length": n,
            "content_length": environ.get("CONTENT_LENGTH", ""),
            "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING", "")}


def stream(flag):
    """A 64 KiB part, then nothing until the client says it has all of
    it (it creates `flag`), then the rest. More than a proxy buffer (4 or
    8 KiB): a buffering proxy holds its tail until more comes, and more
    only comes once the app stops waiting, after HOLD seconds."""
    yield b"a" * 65536
    deadline = time.monotonic() + HOLD
    while not os.path.exists(flag):
        if time.monotonic() > deadline:
            yield b"gave up waiting\n"
            return
        time.sleep(0.01)
    yield b"seen\n"
    yield b"end\n"


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/stream/") or path == "/live":
        headers = [("Content-Type", "text/plain")]
        if path == "/live":   # asks nginx itself not to buffer this one
            headers.append(("X-Accel-Buffering", "no"))
        start_response("200 OK", headers)
        return stream(os.path.join(STATE, environ["QUERY_STRING"]))
    if path == "/slow":
        time.sleep(1)
    if environ["REQUEST_METHOD"] == "POST":
        out = digest(environ)
    else:
        out = {k: environ.get(k) for k in KEYS}
        out["sockets"] = sockets()
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def server_has_forwarded_allow_ips():
    """Whether libgreen.wsgi.server takes forwarded_allow_ips (asked of
    the object under test, under the preload)."""
    if not SO.is_file():
        return False
    code = ("import libgreen; print(any(o['name'] == 'forwarded_allow_ips'"
            " for o in libgreen.wsgi.options()))")
    r = subprocess.run([PYTHON, "-c", code], env=child_env(),
                       capture_output=True, text=True, timeout=60)
    return r.stdout.strip() == "True"


needs_forwarded = pytest.mark.skipif(
    not server_has_forwarded_allow_ips(),
    reason="libgreen.wsgi.server has no forwarded_allow_ips option yet "
           "(issue 8 contract A, branch srvfeat)")


# ---- the stacks -----------------------------------------------------------

@pytest.fixture(scope="module")
def shared_dir():
    """A directory the proxies' workers (www-data when we are root) can
    enter: proxy configs, logs, temporary files and libgreen's socket."""
    d = Path(tempfile.mkdtemp(prefix="libgreen-proxy-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def backend(module_server, shared_dir):
    """backend(transport, **opts) -> Server: the libgreen server running
    APP, one per (transport, options), started on first use."""
    cache = {}

    def get(transport, **opts):
        key = (transport, tuple(sorted(opts.items())))
        if key not in cache:
            opts.setdefault("log_output", False)
            address = None
            if transport == "unix":
                address = str(shared_dir / f"libgreen{len(cache)}.sock")
            srv = module_server(f"HOLD = {HOLD}\n" + APP, opts, address=address)
            if transport == "unix":
                os.chmod(srv.address, 0o666)   # the proxy's workers connect
            cache[key] = srv
        return cache[key]

    return get


@pytest.fixture(scope="module")
def front(backend, shared_dir):
    """front(kind, transport, **opts) -> (proxy, server): the proxy of
    kind started from its docs file in front of backend(transport,
    **opts); skips when the proxy is not installed."""
    cache = {}

    def get(kind, transport, **opts):
        cls, find = KINDS[kind]
        if not find():
            pytest.skip(f"{kind} is not installed (scripts/install-deps installs it)")
        key = (kind, transport, tuple(sorted(opts.items())))
        if key not in cache:
            srv = backend(transport, **opts)
            d = shared_dir / f"{kind}-{transport}-{len(cache)}"
            d.mkdir(mode=0o755)
            target = srv.address if transport == "unix" else ("127.0.0.1", srv.port)
            cache[key] = (cls(d, target).start(), srv)
        return cache[key]

    yield get
    for proxy, _ in cache.values():
        proxy.stop()


@pytest.fixture(params=STACKS, ids=STACK_IDS)
def stack(request, front):
    return front(*request.param)


# ---- clients ----------------------------------------------------------------

def request(port, method="GET", path="/", body=None, headers=None,
            source=None, timeout=TIMEOUT):
    """One request on a new connection to 127.0.0.1:port, from source
    (an address to bind) if given: (status, body bytes)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout,
        source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def seen(target, path="/env", **kw):
    """What the app saw of a GET to target (a proxy or a server): its
    JSON answer."""
    status, body = request(target.port, path=path, **kw)
    assert status == 200, f"{status} {body[:2000]!r}\n{diagnose(target)}"
    return json.loads(body)


def diagnose(target):
    """The logs of a proxy, or the stderr of a libgreen server."""
    if isinstance(target, proxies.Proxy):
        return f"{target.name} logs:\n{target.log_text()}"
    return f"libgreen stderr:\n{target.stderr[-3000:]}"


# ---- keep-alive -------------------------------------------------------------

def test_upstream_connections_are_kept_alive(stack):
    """Requests through the proxy reach libgreen over a few reused
    connections, not one new connection each. Every answer lists the
    sockets libgreen holds; the new ones are counted. On one client
    connection, one proxy worker serves all the requests and needs one
    upstream connection; on a new client connection each, every worker
    process of the proxy (its own pool) may open one."""
    proxy, srv = stack
    before = set(seen(proxy)["sockets"])
    new = set()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=TIMEOUT)
    try:
        for _ in range(30):
            conn.request("GET", "/env")
            resp = conn.getresponse()
            new |= set(json.loads(resp.read())["sockets"]) - before
    finally:
        conn.close()
    assert len(new) <= 2, (
        f"30 requests through {proxy.name} on one client connection opened "
        f"{len(new)} connections to libgreen: no upstream keep-alive\n"
        f"{diagnose(proxy)}")
    for _ in range(30):
        new |= set(seen(proxy)["sockets"]) - before
    limit = 2 + proxy.workers()
    assert len(new) <= limit, (
        f"30 more requests through {proxy.name}, a client connection each, "
        f"made it {len(new)} connections to libgreen (expected at most "
        f"{limit}, one per worker process and two more)\n{diagnose(proxy)}")


# ---- forwarded headers ------------------------------------------------------

def test_proxy_passes_host_and_forwarded_headers(stack):
    """Host as the client sent it; the client's address appended to its
    own X-Forwarded-For; X-Forwarded-Proto replaced, not passed on."""
    proxy, srv = stack
    env = seen(proxy, source=CLIENT,
               headers={"Host": "www.example.com", "X-Forwarded-For": SPOOF,
                        "X-Forwarded-Proto": "https"})
    assert env["HTTP_HOST"] == "www.example.com"
    assert env["HTTP_X_FORWARDED_FOR"] == f"{SPOOF}, {CLIENT}"
    assert env["HTTP_X_FORWARDED_PROTO"] == "http"


@needs_forwarded
def test_remote_addr_is_the_client_the_proxy_saw(stack):
    """From the trusted proxy (default forwarded_allow_ips covers
    127.0.0.1 and Unix peers): REMOTE_ADDR is the client, not the proxy
    and not the entry the client made up; the scheme is the proxy's."""
    proxy, srv = stack
    assert seen(proxy, source=CLIENT)["REMOTE_ADDR"] == CLIENT
    env = seen(proxy, source=CLIENT,
               headers={"X-Forwarded-For": SPOOF, "X-Forwarded-Proto": "https"})
    assert env["REMOTE_ADDR"] == CLIENT, env
    assert env["wsgi.url_scheme"] == "http", env


@needs_forwarded
def test_forwarded_headers_from_an_untrusted_peer_are_ignored(backend):
    """A client talking to libgreen directly, from an address not in
    forwarded_allow_ips, cannot choose its REMOTE_ADDR or scheme."""
    srv = backend("tcp")
    env = seen(srv, source=CLIENT,
               headers={"X-Forwarded-For": SPOOF, "X-Forwarded-Proto": "https"})
    assert env["REMOTE_ADDR"] == CLIENT, env
    assert env["wsgi.url_scheme"] == "http", env
    assert env["HTTP_X_FORWARDED_FOR"] == SPOOF   # still there to read


@needs_forwarded
@pytest.mark.parametrize("kind,transport", STACKS, ids=STACK_IDS)
def test_forwarded_headers_from_an_untrusted_proxy_are_ignored(front, kind, transport):
    """A proxy libgreen was not told to trust is just a client: its
    X-Forwarded-For does not become REMOTE_ADDR."""
    proxy, srv = front(kind, transport, forwarded_allow_ips="192.0.2.1")
    env = seen(proxy, source=CLIENT)
    assert env["HTTP_X_FORWARDED_FOR"] == CLIENT
    assert env["REMOTE_ADDR"] == ("127.0.0.1" if transport == "tcp" else ""), env


# ---- bodies -----------------------------------------------------------------

@pytest.fixture(scope="module")
def upload():
    data = os.urandom(UPLOAD_SIZE)
    return data, hashlib.sha256(data).hexdigest()


# What libgreen receives: nginx buffers bodies outside /upload/ and sends
# them with a Content-Length; /upload/ and Apache pass them on as sent.
def framing_at_libgreen(kind, path, sent):
    if kind == "nginx" and not path.startswith("/upload/"):
        return "length"
    return sent


@pytest.mark.parametrize("path", ["/upload/file", "/file"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_large_upload_passes_intact(stack, upload, framing, path):
    proxy, srv = stack
    data, sha = upload
    if framing == "length":
        body, headers = data, {"Content-Length": str(len(data))}
    else:
        view = memoryview(data)
        body = (view[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20))
        headers = {}   # http.client sends an iterable chunked
    status, answer = request(proxy.port, "POST", path, body=body, headers=headers)
    assert status == 200, f"{status} {answer[:500]!r}\n{diagnose(proxy)}"
    got = json.loads(answer)
    assert got["length"] == len(data) and got["sha256"] == sha, got
    if framing_at_libgreen(proxy.name, path, framing) == "length":
        assert got["content_length"] == str(len(data)), got
    else:
        assert got["transfer_encoding"].lower() == "chunked", got


@pytest.mark.parametrize("path", ["/stream/events", "/live"])
def test_streamed_response_arrives_part_by_part(stack, path):
    """The client gets the whole first part (64 KiB) while the app is
    still waiting to make the next, which it does only once the client
    has it: under /stream/ by the proxy's configuration, elsewhere by the
    app's X-Accel-Buffering header (nginx; Apache needs neither)."""
    proxy, srv = stack
    flag = f"seen-{proxy.name}-{proxy.port}-{path.strip('/').replace('/', '-')}"
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=TIMEOUT)
    try:
        t0 = time.monotonic()
        conn.request("GET", f"{path}?{flag}")
        resp = conn.getresponse()
        assert resp.status == 200
        first = resp.read(65536)
        t_first = time.monotonic() - t0
        (srv.state / flag).touch()   # the app may go on
        rest = resp.read()
        t_end = time.monotonic() - t0
    finally:
        conn.close()
    assert first == b"a" * 65536
    assert rest == b"seen\nend\n", (
        f"{proxy.name} held the first part back until the app stopped "
        f"waiting for the client ({HOLD} s): first part complete after "
        f"{t_first:.3f} s, whole response {t_end:.3f} s\n{diagnose(proxy)}")


# ---- concurrency ------------------------------------------------------------

def test_slow_requests_overlap_end_to_end(stack):
    """50 requests that each sleep 1 s in the app, sent at once through
    the proxy, all answer in well under 50 s."""
    proxy, srv = stack
    statuses = []
    lock = threading.Lock()

    def one():
        try:
            status, _ = request(proxy.port, path="/slow")
        except OSError as e:
            status = repr(e)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(50)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    elapsed = time.monotonic() - t0
    assert statuses == [200] * 50, f"{statuses}\n{diagnose(proxy)}"
    assert elapsed < 5.0, f"50 x 1 s through {proxy.name} took {elapsed:.1f} s"
