"""The access log: the default line (the same bytes as before formats
existed), access_log to stdout or to a file (appended, collected and
flushed, reopened when rotated away), access_log_format's gunicorn atoms,
and the errors a bad destination or format gives at start."""

import base64
import os
import re
import time

from test_server_options import server_errors

APP = r'''
import time

def app(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"].partition("sleep=")[2] or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
'''

# The line this server has always written: common log format, UTC, and
# the seconds the request took with six decimals.
DEFAULT_LINE = (r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d '
                r'\+0000\] "GET /p\?q=1 HTTP/1\.1" 200 5 \d+\.\d{6}')


def wait_file_lines(path, n, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_default_line_unchanged(server):
    srv = server(APP)
    srv.request("GET", "/p?q=1")
    m = srv.wait_output(rf"^{DEFAULT_LINE}$")
    assert m, srv.stderr
    # exactly that line and nothing else per request
    assert len(re.findall(r'"GET /p\?q=1', srv.stderr)) == 1


def test_to_stdout(server):
    srv = server(APP, {"access_log": "-"})
    srv.request("GET", "/p?q=1")
    assert srv.wait_output(rf"^{DEFAULT_LINE}$", stream="stdout")
    assert "/p?q=1" not in srv.stderr


def test_to_file_appends_and_flushes(server, tmp_path):
    log = tmp_path / "access.log"
    log.write_text("an earlier line\n")
    srv = server(APP, {"access_log": str(log)})
    for i in range(50):
        srv.request("GET", "/p?q=1")
    lines = wait_file_lines(log, 51)
    assert lines[0] == "an earlier line"
    assert len(lines) == 51
    assert all(re.fullmatch(DEFAULT_LINE, line) for line in lines[1:]), lines[1]
    assert "/p?q=1" not in srv.stderr and "/p?q=1" not in srv.stdout


def test_file_lines_are_written_at_stop(server, tmp_path):
    """Lines still collected when the server stops reach the file."""
    log = tmp_path / "access.log"
    srv = server(APP, {"access_log": str(log)})
    srv.request("GET", "/last")
    srv.stop()
    assert "/last" in log.read_text()


def test_rotated_file_is_reopened(server, tmp_path):
    log = tmp_path / "access.log"
    srv = server(APP, {"access_log": str(log)})
    srv.request("GET", "/before")
    assert len(wait_file_lines(log, 1)) == 1
    os.rename(log, tmp_path / "access.log.1")   # what logrotate does
    deadline = time.monotonic() + 5
    while not log.exists():   # reopened within about a second
        assert time.monotonic() < deadline, "the log file was not reopened"
        srv.request("GET", "/between")
        time.sleep(0.1)
    srv.request("GET", "/after")
    assert any("/after" in line for line in wait_file_lines(log, 1))
    old = (tmp_path / "access.log.1").read_text()
    assert "/before" in old and "/after" not in old


def test_access_log_without_log_output(server, tmp_path):
    """A destination given logs, whatever log_output says."""
    log = tmp_path / "access.log"
    srv = server(APP, {"access_log": str(log), "log_output": False})
    srv.request("GET", "/p?q=1")
    assert len(wait_file_lines(log, 1)) == 1


FORMAT = ('%(h)s|%(l)s|%(u)s|%(t)s|%(r)s|%(s)s|%(m)s|%(U)s|%(q)s|%(H)s|'
          '%(b)s|%(B)s|%(f)s|%(a)s|%(T)s|%(M)s|%(D)s|%(L)s|%(p)s|'
          '%({X-Custom}i)s|%({x-absent}i)s|100%%')


def test_format_atoms(server):
    srv = server(APP, {"access_log_format": FORMAT})
    auth = base64.b64encode(b"alice:s3cret").decode()
    srv.request("GET", "/a/b?sleep=0.25", headers={
        "Authorization": "Basic " + auth, "Referer": "http://ref/",
        "User-Agent": "tester/1", "x-custom": "custom value"})
    m = srv.wait_output(r"^127\.0\.0\.1\|.*$")
    assert m, srv.stderr
    f = m.group(0).split("|")
    assert f[:3] == ["127.0.0.1", "-", "alice"]
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]", f[3])
    assert f[4:14] == ["GET /a/b?sleep=0.25 HTTP/1.1", "200", "GET", "/a/b",
                       "sleep=0.25", "HTTP/1.1", "5", "5", "http://ref/",
                       "tester/1"]
    seconds, ms, us, decimal = int(f[14]), int(f[15]), int(f[16]), f[17]
    assert seconds == 0 and 250 <= ms < 2000 and ms == us // 1000
    assert re.fullmatch(r"0\.\d{6}", decimal) and int(decimal[2:]) == us
    assert f[18] == f"<{srv.pid}>"
    assert f[19:] == ["custom value", "-", "100%"]
    assert "s3cret" not in srv.stderr


def test_user_atom_escapes_what_could_fake_a_line(server):
    srv = server(APP, {"access_log_format": "%(u)s END"})
    auth = base64.b64encode(b'ev"il\nfake line:pw').decode()
    srv.request("GET", "/", headers={"Authorization": "Basic " + auth})
    assert srv.wait_output(r'^ev\\x22il\\x0afake line END$'), srv.stderr


def test_bad_destination_and_format_fail_at_start(tmp_path):
    got = server_errors(tmp_path, [
        "sock, app, access_log='/nonexistent-dir/x.log'",
        "sock, app, access_log=''",
        "sock, app, access_log=5",
        "sock, app, access_log_format='%(h)s %(zz)s'",
        "sock, app, access_log_format='%({X-Resp}o)s'",
        "sock, app, access_log_format='50% done'",
        "sock, app, access_log_format='a\\x00b'",
    ])
    assert got["sock, app, access_log='/nonexistent-dir/x.log'"] == (
        "OSError: libgreen.wsgi.server(): access_log='/nonexistent-dir/x.log'"
        " cannot be opened for appending: No such file or directory")
    assert got["sock, app, access_log=''"] == (
        "ValueError: libgreen.wsgi.server(): access_log='' is empty: None "
        "means stderr, '-' stdout, anything else a file path")
    assert got["sock, app, access_log=5"] == (
        "TypeError: libgreen.wsgi.server(): access_log=5 is of the wrong "
        "type, int (allowed: a str, or None)")
    assert got["sock, app, access_log_format='%(h)s %(zz)s'"] == (
        "ValueError: libgreen.wsgi.server(): access_log_format='%(h)s "
        "%(zz)s' has an unknown atom %(zz)s (known: h l u t r s m U q H b B "
        "f a T M D L p {Header}i)")
    assert "only request headers, %({Name}i)s, can be logged" in \
        got["sock, app, access_log_format='%({X-Resp}o)s'"]
    assert "has a '%' that does not start an atom like %(h)s (write %% for " \
        "a percent sign)" in got["sock, app, access_log_format='50% done'"]
    assert "contains a NUL character" in \
        got["sock, app, access_log_format='a\\x00b'"]
