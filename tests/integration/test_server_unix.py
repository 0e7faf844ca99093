"""The server on a Unix socket: libgreen.listen('/path/to/sock')."""

import http.client
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over AF_UNIX."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


UNIX_APP = r'''
def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%s|%s|%s|%s" % (environ["PATH_INFO"], environ["SERVER_NAME"],
                              environ["SERVER_PORT"], environ["REMOTE_ADDR"])).encode() + body]
'''


def test_unix_socket(server, tmp_path):
    path = str(tmp_path / "srv.sock")
    srv = server(UNIX_APP, address=path)
    assert srv.address == path
    assert srv.stderr.splitlines()[0] == f"({srv.pid}) wsgi starting up on unix:{path}"
    conn = UnixHTTPConnection(path)
    try:
        for i in range(3):  # keep-alive over AF_UNIX too
            conn.request("POST", f"/u{i}", body=b"data")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            assert body.startswith(f"/u{i}|".encode()) and body.endswith(b"data")
    finally:
        conn.close()
    with srv.raw() as c:
        c.send("GET /raw HTTP/1.0\r\n\r\n")
        code, h, body, _ = c.response()
        assert code == 200 and body.startswith(b"/raw|")


def test_unix_socket_stale_file_replaced(server, tmp_path):
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # leaves the socket file behind, like a crashed server
    srv = server(UNIX_APP, address=str(path))
    assert srv.address == str(path)
    conn = UnixHTTPConnection(str(path))
    try:
        conn.request("GET", "/fresh")
        assert conn.getresponse().read().startswith(b"/fresh|")
    finally:
        conn.close()


def test_unix_socket_refuses_to_remove_regular_file(server, tmp_path):
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    srv = server(UNIX_APP, address=str(path), expect_start=False)
    rc = srv.wait(timeout=20)
    assert rc != 0
    assert path.read_text() == "keep me"
    assert "Address already in use" in srv.stderr or "OSError" in srv.stderr
