"""PEP 3333 to the letter: wsgiref.validate runs clean, the environ's
types and values, start_response with exc_info, header injection."""

import json
import re
import time

import pytest

VALIDATED_APP = r'''
import io, gc
from wsgiref.validate import validator

def inner(environ, start_response):
    path = environ["PATH_INFO"]
    inp = environ["wsgi.input"]
    environ["wsgi.errors"].write("")
    environ["wsgi.errors"].flush()
    if path == "/post":
        body = inp.read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got:" + body]
    if path == "/lines":
        first = inp.readline()
        rest = inp.readlines()
        more = list(inp)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [first, b"|", b"".join(rest), b"|%d" % len(more)]
    if path == "/chunked-request":
        body = b"".join(iter(lambda: inp.read(4), b""))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/gen":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"g%d" % i for i in range(5))
    if path == "/file":
        f = open(environ["HTTP_X_FILE"], "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)
    if path == "/bytesio":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"in memory" * 1000), 100)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"w1;")
        return [b"r1"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]

_validated = validator(inner)

def app(environ, start_response):
    record("call", environ["PATH_INFO"])
    try:
        return _validated(environ, start_response)
    finally:
        gc.collect()  # a wrapper never closed complains in __del__
'''


@pytest.fixture(scope="module")
def vsrv(module_server):
    # WSGIWarning (and every other warning) is an error: a warning raised
    # in the app turns into a 500 and a traceback on stderr.
    return module_server(VALIDATED_APP, python_args=("-W", "error::Warning"))


def assert_clean(srv):
    time.sleep(0.1)  # let stderr catch up
    err = srv.stderr
    for bad in ("Traceback", "Warning", "AssertionError", "Exception ignored",
                "garbage collected", "libgreen: "):
        assert bad not in err, f"{bad!r} on the server's stderr:\n{err}"


def test_validator_get(vsrv):
    status, h, body = vsrv.request("GET", "/?x=1")
    assert (status, body) == (200, b"hello")
    assert_clean(vsrv)


def test_validator_post(vsrv):
    status, h, body = vsrv.request("POST", "/post", body=b"payload" * 100,
                                   headers={"Content-Type": "text/plain"})
    assert (status, body) == (200, b"got:" + b"payload" * 100)
    status, h, body = vsrv.request("POST", "/lines", body=b"l1\nl2\nl3\n")
    assert (status, body) == (200, b"l1\n|l2\nl3\n|0")
    assert_clean(vsrv)


def test_validator_head(vsrv):
    with vsrv.raw() as c:
        c.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        code, h, _, _ = c.response(head_only=True)
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"hello"
    assert code == 200
    assert_clean(vsrv)


def test_validator_chunked(vsrv):
    with vsrv.raw() as c:
        c.send("POST /chunked-request HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert c.response()[2] == b"hello world"
        c.send("GET /gen HTTP/1.1\r\nHost: x\r\n\r\n")
        code, h, body, framing = c.response()
        assert (body, framing) == (b"g0g1g2g3g4", "chunked")
        c.send("GET /write HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"w1;r1"
    assert_clean(vsrv)


def test_validator_file_wrapper(vsrv, tmp_path):
    f = tmp_path / "v.bin"
    f.write_bytes(b"0123456789" * 10000)
    status, h, body = vsrv.request("GET", "/file", headers={"X-File": str(f)})
    assert (status, body) == (200, b"0123456789" * 10000)
    status, h, body = vsrv.request("GET", "/bytesio")
    assert (status, body) == (200, b"in memory" * 1000)
    assert_clean(vsrv)


def test_validator_warning_is_an_error(vsrv):
    """The set-up is able to fail: an unknown method makes wsgiref.validate
    warn, -W error turns that into a 500 and a traceback (so a clean run
    above means something)."""
    with vsrv.raw() as c:
        c.send("FROB / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[0] == 500
    assert vsrv.wait_output(r"WSGIWarning: Unknown REQUEST_METHOD: 'FROB'")
    # the stderr assertions of the other tests start from here
    vsrv.clear_output()


# ---- the environ ---------------------------------------------------------

ENV_APP = r'''
import json, sys

def app(environ, start_response):
    out = {}
    for k, v in environ.items():
        out[k] = [type(v).__name__, v if isinstance(v, (str, bool, int)) or v is None else repr(v)]
    out["wsgi.version"] = ["tuple", list(environ["wsgi.version"])]
    out["_exc_info"] = repr(sys.exc_info())
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]
'''


@pytest.fixture(scope="module")
def esrv(module_server):
    return module_server(ENV_APP, {"environ": {"custom.key": "custom value",
                                               "EXTRA_CGI": "x"}})


def environ_of(srv, raw_request):
    with srv.raw() as c:
        c.send(raw_request)
        code, h, body, _ = c.response()
    assert code == 200, body
    return json.loads(body)


def test_environ_native_strings(esrv):
    env = environ_of(esrv, "GET /a/b?c=d HTTP/1.1\r\nHost: h\r\n\r\n")
    for key, item in env.items():
        if "." not in key and not key.startswith("_"):
            typ = item[0]
            assert typ == "str", f"{key} is {typ}, not str"
    assert env["wsgi.version"] == ["tuple", [1, 0]]
    assert env["wsgi.url_scheme"] == ["str", "http"]
    assert env["wsgi.multithread"] == ["bool", True]
    assert env["wsgi.multiprocess"] == ["bool", False]
    assert env["wsgi.run_once"] == ["bool", False]
    assert env["wsgi.input_terminated"] == ["bool", True]
    assert env["SERVER_PROTOCOL"][1] == "HTTP/1.1"
    assert env["REQUEST_METHOD"][1] == "GET"


def test_path_info_latin1_from_percent_encoding(esrv):
    env = environ_of(esrv, "GET /caf%C3%A9/x%2Fy%20z HTTP/1.1\r\nHost: h\r\n\r\n")
    assert env["PATH_INFO"][1] == "/caf\u00c3\u00a9/x/y z"
    assert env["PATH_INFO"][1] == "/café/x/y z".encode("utf-8").decode("latin-1")
    # raw bytes above 0x7f in the path also arrive as latin-1
    env = environ_of(esrv, b"GET /\xe9t\xe9 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert env["PATH_INFO"][1] == "/\u00e9t\u00e9"


def test_query_string_raw(esrv):
    env = environ_of(esrv, "GET /p?a=%20b&c=%C3%A9&d=e+f HTTP/1.1\r\nHost: h\r\n\r\n")
    assert env["QUERY_STRING"][1] == "a=%20b&c=%C3%A9&d=e+f"
    env = environ_of(esrv, "GET /p HTTP/1.1\r\nHost: h\r\n\r\n")
    assert env["QUERY_STRING"] == ["str", ""]


def test_script_name_server_name_port(esrv):
    env = environ_of(esrv, "GET / HTTP/1.1\r\nHost: example.org:8080\r\n\r\n")
    assert env["SCRIPT_NAME"] == ["str", ""]
    assert env["PATH_INFO"] == ["str", "/"]
    assert env["SERVER_NAME"] == ["str", "127.0.0.1"]
    assert env["SERVER_PORT"] == ["str", str(esrv.port)]
    assert env["HTTP_HOST"] == ["str", "example.org:8080"]
    assert env["REMOTE_ADDR"] == ["str", "127.0.0.1"]
    assert env["REMOTE_PORT"][1].isdigit()


def test_absolute_form_target(esrv):
    """RFC 9112 3.2.2: an absolute-form target's authority is the host
    (the Host field is ignored); PATH_INFO and QUERY_STRING are split out."""
    env = environ_of(esrv, "GET http://example.com:8080/p/q?x=1 HTTP/1.1\r\n"
                           "Host: other.invalid\r\n\r\n")
    assert env["HTTP_HOST"] == ["str", "example.com:8080"]
    assert env["PATH_INFO"] == ["str", "/p/q"]
    assert env["QUERY_STRING"] == ["str", "x=1"]
    assert env["REQUEST_URI"] == ["str", "http://example.com:8080/p/q?x=1"]


def test_content_type_and_length(esrv):
    env = environ_of(esrv, "POST / HTTP/1.1\r\nHost: h\r\nContent-Type: text/x\r\n"
                           "Content-Length: 3\r\n\r\nabc")
    assert env["CONTENT_TYPE"] == ["str", "text/x"]
    assert env["CONTENT_LENGTH"] == ["str", "3"]
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_http_headers(esrv):
    env = environ_of(esrv, "GET / HTTP/1.1\r\nHost: h\r\nX-Custom-Header: v1\r\n"
                           "x-lower: lower\r\nAccept: a\r\nAccept: b\r\n"
                           "Cookie: c=1\r\nCookie: d=2\r\n"
                           "X-Latin: caf\xe9\r\n\r\n")
    assert env["HTTP_X_CUSTOM_HEADER"] == ["str", "v1"]
    assert env["HTTP_X_LOWER"] == ["str", "lower"]
    assert env["HTTP_ACCEPT"] == ["str", "a,b"]
    assert env["HTTP_COOKIE"] == ["str", "c=1; d=2"]
    assert env["HTTP_X_LATIN"] == ["str", "caf\u00e9"]


def test_headers_with_underscore_dropped(esrv):
    env = environ_of(esrv, "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n"
                           "X_Forwarded_For: 6.6.6.6\r\nX_Evil: yes\r\n\r\n")
    assert env["HTTP_X_FORWARDED_FOR"] == ["str", "1.2.3.4"]
    assert "HTTP_X_EVIL" not in env
    env = environ_of(esrv, "GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n")
    assert "HTTP_X_FORWARDED_FOR" not in env


def test_environ_option_and_http10(esrv):
    env = environ_of(esrv, "GET / HTTP/1.0\r\n\r\n")
    assert env["custom.key"] == ["str", "custom value"]
    assert env["EXTRA_CGI"] == ["str", "x"]
    assert env["SERVER_PROTOCOL"] == ["str", "HTTP/1.0"]


def test_environ_fresh_per_request(esrv):
    """A key one request's app added is not seen by the next one."""
    srv = esrv
    a = environ_of(srv, "GET / HTTP/1.1\r\nHost: h\r\nX-Only-Once: 1\r\n\r\n")
    b = environ_of(srv, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert "HTTP_X_ONLY_ONCE" in a and "HTTP_X_ONLY_ONCE" not in b


# ---- start_response and exc_info -----------------------------------------

EXC_APP = r'''
import sys

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/replace":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("503 Service Unavailable",
                           [("Content-Type", "text/plain"), ("X-Second", "2")],
                           sys.exc_info())
        return [b"replaced"]
    if path == "/too-late":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first chunk;"
            try:
                raise KeyError("late")
            except KeyError as e:
                try:
                    start_response("500 Oops", [], sys.exc_info())
                except KeyError as again:
                    record("reraised", again is e)
                    raise
                record("not-reraised")
            yield b"never"
        return gen()
    if path == "/twice":
        start_response("200 OK", [])
        try:
            start_response("201 Created", [])
        except AssertionError:
            record("twice-refused")
            raise
        return [b"no"]
    if path == "/crlf-value":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        return [b"should not be sent"]
    if path == "/lf-value":
        start_response("200 OK", [("X-Bad", "a\nInjected: yes")])
        return [b"should not be sent"]
    if path == "/bad-name":
        start_response("200 OK", [("X Bad", "v")])
        return [b"should not be sent"]
    if path == "/hop-by-hop":
        start_response("200 OK", [("Transfer-Encoding", "chunked")])
        return [b"should not be sent"]
    if path == "/cl-conflict":
        start_response("200 OK", [("Content-Length", "5"),
                                  ("Content-Length", "18")])
        return [b"should not be sent"]
    if path == "/cl-same-twice":
        start_response("200 OK", [("Content-Length", "5"),
                                  ("content-length", "05")])
        return [b"hello"]
    if path == "/bad-replacement":
        start_response("200 OK", [("Content-Length", "5")])
        try:
            raise ValueError("oops")
        except ValueError:
            try:
                start_response("503 Service Unavailable", [("X Bad", "v")],
                               sys.exc_info())
            except ValueError:
                record("replacement-refused")
        return [b"hello"]
    if path == "/crlf-caught":
        try:
            start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        except ValueError:
            record("crlf-refused")
        start_response("200 OK", [("X-Good", "yes")])
        return [b"recovered"]
    start_response("200 OK", [])
    return [b"ok"]
'''


@pytest.fixture(scope="module")
def xsrv(module_server):
    return module_server(EXC_APP)


def test_exc_info_before_head_replaces_response(xsrv):
    with xsrv.raw() as c:
        c.send("GET /replace HTTP/1.1\r\nHost: x\r\n\r\n")
        code, h, body, _ = c.response()
        assert (code, body) == (503, b"replaced")
        assert h["x-second"] == "2" and "x-first" not in h
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"ok"


def test_exc_info_after_head_reraises(xsrv):
    with xsrv.raw() as c:
        c.send("GET /too-late HTTP/1.1\r\nHost: x\r\n\r\n")
        status, code, h, _ = c.head()
        assert code == 200
        rest = c.read_to_eof()
        assert b"first chunk;" in rest
        assert not rest.endswith(b"0\r\n\r\n"), "a failed response looked complete"
        assert b"never" not in rest
    deadline = time.monotonic() + 5
    while "reraised True" not in xsrv.records() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "reraised True" in xsrv.records()
    assert "not-reraised" not in xsrv.records()


def test_refused_replacement_leaves_first_response_whole(xsrv):
    """start_response with exc_info and a bad header raises and changes
    nothing: the first response goes out as it was, with its one
    Content-Length."""
    with xsrv.raw() as c:
        c.send("GET /bad-replacement HTTP/1.1\r\nHost: x\r\n\r\n")
        status, code, h, hlist = c.head()
        assert code == 200, status
        assert [n for n, _ in hlist if n.lower() == "content-length"] == \
            ["Content-Length"], hlist
        assert c.read_exact(5) == b"hello"
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"ok"
    assert "replacement-refused" in xsrv.records()


def test_second_start_response_without_exc_info_refused(xsrv):
    status, h, body = xsrv.request("GET", "/twice")
    assert status == 500
    assert "twice-refused" in xsrv.records()


@pytest.mark.parametrize("path", ["/crlf-value", "/lf-value", "/bad-name",
                                  "/hop-by-hop", "/cl-conflict"])
def test_bad_response_header_gives_500_never_sent(xsrv, path):
    with xsrv.raw() as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
        code, h, body, _ = c.response()
        rest = c.read_to_eof()
    assert code == 500
    assert "injected" not in h and "x-bad" not in h
    assert b"should not be sent" not in body + rest
    assert b"Injected" not in body + rest
    assert xsrv.wait_output(r"libgreen: error in the WSGI app while serving GET " +
                            re.escape(path))


def test_conflicting_content_lengths_named_in_the_error(xsrv):
    """Found by fuzz/fuzz_frame.c: two Content-Lengths of different values
    went out as given, and a client could frame the body by either."""
    assert xsrv.request("GET", "/cl-conflict")[0] == 500
    assert xsrv.wait_output(r"'18' contradicts an earlier Content-Length")


def test_repeated_equal_content_length_sent_once(xsrv):
    with xsrv.raw() as c:
        c.send("GET /cl-same-twice HTTP/1.1\r\nHost: x\r\n\r\n")
        status, code, h, hlist = c.head()
        assert code == 200, status
        assert [(n, v) for n, v in hlist if n.lower() == "content-length"] == \
            [("Content-Length", "5")], hlist
        assert c.read_exact(5) == b"hello"
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[2] == b"ok"


def test_refused_header_can_be_recovered_from(xsrv):
    status, h, body = xsrv.request("GET", "/crlf-caught")
    assert (status, body) == (200, b"recovered")
    assert h["X-Good"] == "yes" and "X-Bad" not in h and "Injected" not in h
    assert "crlf-refused" in xsrv.records()
