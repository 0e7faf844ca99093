"""The server's front door: starting it, GET/POST/HEAD, and the headers
every response carries."""

import email.utils
import os
import subprocess
import time

from conftest import PYTHON, SO, child_env  # helpers, not fixtures

ECHO_APP = '''
def app(environ, start_response):
    body = environ["wsgi.input"].read()
    out = ("%s %s %s|" % (environ["REQUEST_METHOD"], environ["PATH_INFO"],
                          environ["QUERY_STRING"])).encode() + body
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("X-Method", environ["REQUEST_METHOD"])])
    return [out]
'''


def test_get(server):
    srv = server(ECHO_APP)
    status, headers, body = srv.request("GET", "/hello?a=1&b=2")
    assert status == 200
    assert body == b"GET /hello a=1&b=2|"
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Length"] == str(len(body))


def test_post(server):
    srv = server(ECHO_APP)
    payload = b"x=1&y=" + b"z" * 5000
    status, headers, body = srv.request(
        "POST", "/form", body=payload,
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    assert body == b"POST /form |" + payload


def test_head_same_headers_no_body(server):
    srv = server(ECHO_APP.replace('environ["REQUEST_METHOD"], environ',
                                  '"GET", environ'))
    with srv.raw() as c:
        c.send("GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
        code, get_h, body, _ = c.response()
        c.send("HEAD /p HTTP/1.1\r\nHost: x\r\n\r\n")
        hcode, head_h, _, _ = c.response(head_only=True)
        # nothing may follow the HEAD response's head: the next request's
        # answer must be the next thing on the wire
        c.send("GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
        code2, _, body2, _ = c.response()
    assert code == hcode == code2 == 200
    assert body == body2 == b"GET /p |"
    for h in (get_h, head_h):
        h.pop("date")
        h.pop("x-method")
    assert head_h == get_h
    assert head_h["content-length"] == str(len(body))


def test_date_and_server_headers(server):
    srv = server(ECHO_APP)
    before = time.time()
    status, headers, _ = srv.request()
    assert headers["Server"] == "libgreen"
    date = email.utils.parsedate_to_datetime(headers["Date"])
    assert headers["Date"].endswith(" GMT")
    assert abs(date.timestamp() - before) < 5
    assert len(headers.get_all("Date")) == 1


def test_app_date_and_server_are_not_doubled(server):
    srv = server('''
def app(environ, start_response):
    start_response("200 OK", [("Server", "mine"),
                              ("Date", "Mon, 01 Jan 2001 00:00:00 GMT")])
    return [b"x"]
''')
    status, headers, _ = srv.request()
    assert headers.get_all("Server") == ["mine"]
    assert headers.get_all("Date") == ["Mon, 01 Jan 2001 00:00:00 GMT"]


def test_startup_line(server):
    srv = server(ECHO_APP)
    lines = srv.stderr.splitlines()
    assert lines[0] == f"({srv.pid}) wsgi starting up on http://127.0.0.1:{srv.port}"


def test_access_log_and_log_output_false(server):
    srv = server(ECHO_APP)
    srv.request("GET", "/logged?q=1")
    assert srv.wait_output(r'127\.0\.0\.1 - - \[.*\] "GET /logged\?q=1 HTTP/1\.1" 200 ')
    quiet = server(ECHO_APP, {"log_output": False})
    quiet.request("GET", "/quiet")
    quiet.stop()
    assert "/quiet" not in quiet.stderr


def test_import_from_any_cwd_without_pythonpath(tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = child_env()
    env.pop("PYTHONPATH", None)
    r = subprocess.run(
        [PYTHON, "-c", "import libgreen, sys; "
         "print(libgreen.__name__, callable(libgreen.wsgi.server), "
         "callable(libgreen.listen), callable(libgreen.spawn))"],
        cwd=cwd, env=env, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["libgreen", "True", "True", "True"]
    # and `import libgreen.wsgi` spelled out works too
    r = subprocess.run([PYTHON, "-c", "import libgreen.wsgi as w; print(w.__name__)"],
                       cwd="/", env=env, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.strip() == b"libgreen.wsgi"


def test_import_fails_without_preload(tmp_path):
    r = subprocess.run([PYTHON, "-c", "import libgreen"], cwd=tmp_path,
                       env=child_env(preload=False), capture_output=True,
                       timeout=30)
    assert r.returncode != 0
    assert b"ModuleNotFoundError" in r.stderr or b"ImportError" in r.stderr


def test_unknown_method_and_absolute_form(server):
    srv = server(ECHO_APP)
    with srv.raw() as c:
        c.send("PATCH http://example.com/abs/path?x=y HTTP/1.1\r\n"
               "Host: example.com\r\nContent-Length: 3\r\n\r\nabc")
        code, _, body, _ = c.response()
    assert code == 200
    assert body == b"PATCH /abs/path x=y|abc"


def test_many_sequential_requests_do_not_leak_fds(server):
    srv = server(ECHO_APP)
    srv.request()
    fds = len(os.listdir(f"/proc/{srv.pid}/fd"))
    for i in range(200):
        status, _, _ = srv.request("GET", f"/{i}")
        assert status == 200
    # closed connections are gone (allow for a little slack)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        now = len(os.listdir(f"/proc/{srv.pid}/fd"))
        if now <= fds + 2:
            break
        time.sleep(0.05)
    assert now <= fds + 2, f"{now - fds} file descriptors leaked"


def test_server_environment_is_clean(server, monkeypatch):
    """The server runs with LD_PRELOAD set to the object under test and
    without the caller's LD_LIBRARY_PATH or PYTHONPATH (a pyenv
    interpreter must load its own libpython)."""
    monkeypatch.setenv("LD_LIBRARY_PATH", "/nonexistent/lib")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent/py")
    srv = server('''
import os, sys

def app(environ, start_response):
    start_response("200 OK", [])
    return [repr((os.environ.get("LD_LIBRARY_PATH"), os.environ.get("PYTHONPATH"),
                  os.environ.get("LD_PRELOAD"), sys.executable)).encode()]
''')
    ld_path, py_path, preload, exe = eval(srv.request()[2])
    assert (ld_path, py_path) == (None, None)
    assert preload.split()[-1] == str(SO)
    assert os.path.realpath(exe) == os.path.realpath(PYTHON)
