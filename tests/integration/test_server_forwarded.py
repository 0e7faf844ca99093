"""forwarded_allow_ips: X-Forwarded-For and X-Forwarded-Proto set
REMOTE_ADDR and wsgi.url_scheme only when the peer is trusted (an
address, a network, 'unix' or '*'); a client cannot spoof its address
through a trusted proxy's chain; from anyone else the headers change
nothing (and stay visible to the app)."""

import json

import pytest

from test_server_options import server_errors

APP = r'''
import json

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps([environ["REMOTE_ADDR"], environ["wsgi.url_scheme"],
                        environ.get("HTTP_X_FORWARDED_FOR"),
                        environ.get("HTTP_X_FORWARDED_PROTO")]).encode()]
'''


def ask(srv, *headers):
    """(REMOTE_ADDR, wsgi.url_scheme, HTTP_X_FORWARDED_FOR,
    HTTP_X_FORWARDED_PROTO) the app saw for a request carrying headers
    ("Name: value" lines, repeated names allowed)."""
    with srv.raw() as c:
        c.send("GET / HTTP/1.1\r\nHost: x\r\n" +
               "".join(h + "\r\n" for h in headers) + "\r\n")
        code, _, body, _ = c.response()
    assert code == 200
    return tuple(json.loads(body))


def test_trusted_by_default_from_loopback(server):
    srv = server(APP)
    got = ask(srv, "X-Forwarded-For: 203.0.113.9",
              "X-Forwarded-Proto: https")
    assert got == ("203.0.113.9", "https", "203.0.113.9", "https")
    assert ask(srv) == ("127.0.0.1", "http", None, None)


def test_untrusted_peer_changes_nothing(server):
    srv = server(APP, {"forwarded_allow_ips": "10.0.0.0/8"})
    got = ask(srv, "X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https")
    assert got == ("127.0.0.1", "http", "203.0.113.9", "https")


@pytest.mark.parametrize("allowed, trusted", [
    ("127.0.0.0/8", True), ("127.0.0.2/32", False), ("127.0.0.1/32", True),
    ("::1, 10.0.0.0/8", False), ("::ffff:127.0.0.0/104", True),
    ("", False), ("*", True), (["10.0.0.0/8", "127.0.0.1"], True),
])
def test_networks(server, allowed, trusted):
    srv = server(APP, {"forwarded_allow_ips": allowed, "log_output": False})
    addr = ask(srv, "X-Forwarded-For: 198.51.100.7")[0]
    assert addr == ("198.51.100.7" if trusted else "127.0.0.1")


def test_spoofed_chain_gives_the_first_untrusted_hop(server):
    """Each proxy appends the address it was reached from: entries left of
    the first untrusted one (from the right) are the client's own word."""
    srv = server(APP, {"forwarded_allow_ips": "127.0.0.1, 10.0.0.0/8"})
    assert ask(srv, "X-Forwarded-For: 6.6.6.6, 198.51.100.7, 10.1.2.3")[0] \
        == "198.51.100.7"
    # field lines in order, as one list
    assert ask(srv, "X-Forwarded-For: 6.6.6.6",
               "X-Forwarded-For: 198.51.100.7, 10.1.2.3")[0] == "198.51.100.7"
    assert ask(srv, "X-Forwarded-For: 6.6.6.6, 198.51.100.7",
               "X-Forwarded-For: 10.1.2.3")[0] == "198.51.100.7"
    # every hop trusted: the leftmost
    assert ask(srv, "X-Forwarded-For: 10.0.0.1, 10.0.0.2")[0] == "10.0.0.1"
    # a hop that is no address: the header counts for nothing
    assert ask(srv, "X-Forwarded-For: 198.51.100.7, unknown, 10.0.0.2")[0] \
        == "127.0.0.1"
    # ... unless the walk stopped before it
    assert ask(srv, "X-Forwarded-For: unknown, 198.51.100.7")[0] \
        == "198.51.100.7"
    # forms proxies write, normalised
    assert ask(srv, "X-Forwarded-For: [2001:DB8::1]:443")[0] == "2001:db8::1"
    assert ask(srv, "X-Forwarded-For: 198.51.100.7:5555")[0] == "198.51.100.7"
    assert ask(srv, "X-Forwarded-For: 2001:db8::2")[0] == "2001:db8::2"


def test_star_trusts_every_hop(server):
    srv = server(APP, {"forwarded_allow_ips": "*"})
    assert ask(srv, "X-Forwarded-For: 6.6.6.6, 198.51.100.7")[0] == "6.6.6.6"


@pytest.mark.parametrize("proto, scheme", [
    ("https", "https"), ("HTTPS", "https"), ("http", "http"),
    ("ftp", "http"), ("https, http", "http"), ("", "http"),
])
def test_proto(server, proto, scheme):
    srv = server(APP, {"log_output": False})
    assert ask(srv, "X-Forwarded-Proto: " + proto)[1] == scheme


def test_unix_socket_peers(server, tmp_path):
    srv = server(APP, address=str(tmp_path / "d.sock"))  # 'unix' by default
    assert ask(srv, "X-Forwarded-For: 198.51.100.7",
               "X-Forwarded-Proto: https")[:2] == ("198.51.100.7", "https")
    srv = server(APP, {"forwarded_allow_ips": "127.0.0.1"},
                 address=str(tmp_path / "e.sock"))
    assert ask(srv, "X-Forwarded-For: 198.51.100.7",
               "X-Forwarded-Proto: https")[:2] == ("", "http")


def test_access_log_shows_the_resolved_client(server):
    srv = server(APP)
    ask(srv, "X-Forwarded-For: 203.0.113.9")
    assert srv.wait_output(r'^203\.0\.113\.9 - - \[.*\] "GET / HTTP/1\.1" 200 ')


def test_bad_entries_fail_at_start(tmp_path):
    got = server_errors(tmp_path, [
        "sock, app, forwarded_allow_ips='10.0.0.0/33'",
        "sock, app, forwarded_allow_ips='127.0.0.1, proxy.local'",
        "sock, app, forwarded_allow_ips=['10.0.0.1', 5]",
        "sock, app, forwarded_allow_ips=5",
    ])
    assert got["sock, app, forwarded_allow_ips='10.0.0.0/33'"] == (
        "ValueError: libgreen.wsgi.server(): forwarded_allow_ips: "
        "'10.0.0.0/33' is not an IP address, a network (address/bits), '*' "
        "or 'unix'")
    assert "'proxy.local' is not an IP address" in \
        got["sock, app, forwarded_allow_ips='127.0.0.1, proxy.local'"]
    assert got["sock, app, forwarded_allow_ips=['10.0.0.1', 5]"] == (
        "TypeError: libgreen.wsgi.server(): forwarded_allow_ips=['10.0.0.1', "
        "5] holds an item that is not a str (allowed: a str of "
        "comma-separated items, or a list of str; None: the default)")
    assert got["sock, app, forwarded_allow_ips=5"].startswith(
        "TypeError: libgreen.wsgi.server(): forwarded_allow_ips=5 is of the "
        "wrong type, int")
