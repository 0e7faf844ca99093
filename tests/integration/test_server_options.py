"""The options of libgreen.wsgi.server(): one table (server/options.def)
behind the keyword arguments, their range checks, the docstring,
libgreen.wsgi.options() and the README's table."""

import json
import shutil
import subprocess
import textwrap

from conftest import PYTHON, REPO, child_env

APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ.get("EXTRA", "-").encode()]
'''


def run(tmp_path, source, timeout=30):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    r = subprocess.run([PYTHON, str(script)], env=child_env(), cwd=tmp_path,
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr.decode()}"
    return r.stdout.decode(), r.stderr.decode()


def options(tmp_path):
    out, _ = run(tmp_path, '''
        import json, libgreen
        print(json.dumps(libgreen.wsgi.options()))
    ''')
    return json.loads(out)


def server_errors(tmp_path, calls):
    """{call: 'ExcType: message'} for each call of server(sock, app, ...)
    given as the source of its arguments."""
    out, err = run(tmp_path, '''
        import json, sys, libgreen
        sock = libgreen.listen(("127.0.0.1", 0))
        app = lambda environ, start_response: []
        result = {}
        for call in json.loads(sys.argv[1] if len(sys.argv) > 1 else %r):
            try:
                eval("libgreen.wsgi.server(" + call + ")")
                result[call] = "returned"
            except Exception as e:
                result[call] = type(e).__name__ + ": " + str(e)
        print(json.dumps(result))
    ''' % json.dumps(calls))
    assert "starting up" not in err  # refused before anything was served
    return json.loads(out)


def test_out_of_range_values_name_option_value_and_range(tmp_path):
    got = server_errors(tmp_path, [
        "sock, app, max_size=0",
        "sock, app, header_timeout=-1",
        "sock, app, keepalive=float('nan')",
        "sock, app, graceful_timeout=1e10",
        "sock, app, url_length_limit=2**31",
        "sock, app, max_body_size=-5",
        "sock, app, body_timeout=10**400",
    ])
    assert got["sock, app, max_size=0"] == (
        "ValueError: libgreen.wsgi.server(): max_size=0 is out of range "
        "(allowed: an integer >= 1)")
    assert got["sock, app, header_timeout=-1"] == (
        "ValueError: libgreen.wsgi.server(): header_timeout=-1 is out of "
        "range (allowed: 0 to 1000000000 seconds; 0 or None: no limit)")
    assert got["sock, app, keepalive=float('nan')"].startswith(
        "ValueError: libgreen.wsgi.server(): keepalive=nan is out of range "
        "(allowed: True, False, or 0 to 1000000000 seconds)")
    assert got["sock, app, graceful_timeout=1e10"].startswith(
        "ValueError: libgreen.wsgi.server(): graceful_timeout=10000000000.0 ")
    assert got["sock, app, url_length_limit=2**31"] == (
        "ValueError: libgreen.wsgi.server(): url_length_limit=2147483648 is "
        "out of range (allowed: an integer from 0 to 2147483647)")
    assert "max_body_size=-5 is out of range" in got["sock, app, max_body_size=-5"]
    assert got["sock, app, body_timeout=10**400"].startswith(
        "ValueError: libgreen.wsgi.server(): body_timeout=1000")


def test_wrong_types_and_names_are_type_errors(tmp_path):
    got = server_errors(tmp_path, [
        "sock, app, body_timeout='5'",
        "sock, app, max_size=2.5",
        "sock, app, environ=[('A', 'b')]",
        "sock, app, max_sise=10",
        "sock, app, 1",
        "sock",
        "sock, app, sock=sock",
        "sock, 42",
    ])
    assert got["sock, app, body_timeout='5'"] == (
        "TypeError: libgreen.wsgi.server(): body_timeout='5' is of the wrong "
        "type, str (allowed: 0 to 1000000000 seconds; 0 or None: no limit)")
    assert got["sock, app, max_size=2.5"] == (
        "TypeError: libgreen.wsgi.server(): max_size=2.5 is of the wrong "
        "type, float (allowed: an integer >= 1)")
    assert "environ=[('A', 'b')] is of the wrong type, list (allowed: a dict, " \
        "or None)" in got["sock, app, environ=[('A', 'b')]"]
    unknown = got["sock, app, max_sise=10"]
    assert unknown.startswith("TypeError: libgreen.wsgi.server() got an "
                              "unexpected keyword argument 'max_sise'")
    assert "max_size" in unknown and "debug" in unknown
    assert "keyword-only" in got["sock, app, 1"]
    assert got["sock"].startswith("TypeError: libgreen.wsgi.server() missing "
                                  "required argument 'app'")
    assert "multiple values for argument 'sock'" in got["sock, app, sock=sock"]
    assert got["sock, 42"] == "TypeError: app must be a WSGI callable"


def test_none_and_false_mean_off(server):
    """None for max_body_size (unlimited) and for the timeouts, False for
    keepalive: accepted, and a request is served."""
    srv = server(APP, {"max_body_size": None, "body_timeout": None,
                       "header_timeout": 0, "keepalive": False,
                       "environ": {"EXTRA": "yes"}})
    status, headers, body = srv.request("POST", "/", body=b"x" * 100000)
    assert (status, body) == (200, b"yes")
    assert headers["Connection"].lower() == "close"


def test_every_option_accepts_its_listed_default(server, tmp_path):
    table = options(tmp_path)
    opts = {o["name"]: o["default"] for o in table}
    srv = server(APP, opts)
    assert srv.request()[0] == 200
    # and the table is complete: the names are the signature's
    out, _ = run(tmp_path, '''
        import inspect, libgreen
        sig = inspect.signature(libgreen.wsgi.server)
        print(" ".join(p.name for p in sig.parameters.values()))
        print(libgreen.wsgi.server.__doc__)
    ''')
    names, doc = out.split("\n", 1)
    assert names.split() == ["sock", "app"] + [o["name"] for o in table]
    flags = {"keepalive": "--keep-alive",  # gunicorn's spelling
             "heartbeat": None}            # a callable: Python only
    for o in table:
        assert o["flag"] == flags.get(o["name"],
                                      "--" + o["name"].replace("_", "-"))
        assert o["env"] in (None, "LIBGREEN_" + o["name"].upper())
        assert o["help"] and o["allowed"] and o["kind"]
        assert f"\n  {o['name']}\n" in doc


def test_readme_table_matches_the_option_table(tmp_path):
    script = REPO / "scripts" / "gen-options-doc"
    r = subprocess.run([PYTHON, str(script), "--check"], env=child_env(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    # ... and the check fails when they differ
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    readme.write_text(readme.read_text().replace(
        "| `max_size` | `1024` |", "| `max_size` | `512` |"))
    r = subprocess.run([PYTHON, str(script), "--check", "--readme",
                        str(readme)], env=child_env(), capture_output=True,
                       timeout=60)
    assert r.returncode == 1
    assert b"-| `max_size` | `512` |" in r.stdout
    assert b"+| `max_size` | `1024` |" in r.stdout
