"""libgreen.wsgi.server() on several listening sockets at once (a list
or tuple): one start-up line each, SERVER_NAME/SERVER_PORT of the socket
a request came in on, the max_size pause applying to all of them, and a
stop that closes them all."""

import socket
import subprocess
import textwrap
import threading
import time

import pytest

from conftest import PYTHON, child_env
from netclient import get

SCRIPT = '''
import os, sys, libgreen

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        libgreen.sleep(1.0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%s %s" % (environ["SERVER_NAME"], environ["SERVER_PORT"])).encode()]

socks = [libgreen.listen(("127.0.0.1", 0)), libgreen.listen(("127.0.0.1", 0)),
         libgreen.listen(sys.argv[1])]
libgreen.wsgi.server(tuple(socks) if "tuple" in sys.argv else socks, app,
                     max_size=1, log_output=False)
print("returned", flush=True)
'''


def start(tmp_path, *extra):
    script = tmp_path / "several.py"
    script.write_text(SCRIPT)
    path = str(tmp_path / "u.sock")
    proc = subprocess.Popen([PYTHON, str(script), path, *extra], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = [proc.stderr.readline().decode() for _ in range(3)]
    urls = [l.split(" on ", 1)[1].strip() for l in lines if "wsgi starting up on" in l]
    assert len(urls) == 3, lines
    assert len({l.split(")")[0] for l in lines}) == 1  # one process
    tcp = [("127.0.0.1", int(u.rsplit(":", 1)[1])) for u in urls if u.startswith("http")]
    assert urls[2] == "unix:" + path
    return proc, tcp, path


@pytest.mark.parametrize("kind", ["list", "tuple"])
def test_every_socket_serves_with_its_own_address(tmp_path, kind):
    proc, (a, b), path = start(tmp_path, kind)
    try:
        assert get(a) == (200, b"127.0.0.1 %d" % a[1])
        assert get(b) == (200, b"127.0.0.1 %d" % b[1])
        assert get(path) == (200, f"{path} ".encode())
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read().strip() == b"returned"
        for addr in (a, b):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(addr, timeout=2).close()
    finally:
        proc.kill()
        proc.wait()


def accept_queue(port):
    """Connections waiting in the kernel's accept queue of the listening
    socket on 127.0.0.1:port (rx_queue of a LISTEN row of /proc/net/tcp)."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "0100007F:%04X" % port and f[3] == "0A":
            return int(f[4].split(":")[1], 16)
    raise AssertionError(f"no listening socket on port {port}")


def test_max_size_pauses_every_socket(tmp_path):
    """With max_size=1 and a request running (accepted on one socket), a
    connection to another socket stays in the kernel's queue - not
    accepted - until the request ends; then it is served."""
    proc, (a, b), path = start(tmp_path)
    try:
        done = {}
        slow = threading.Thread(target=lambda: done.setdefault("slow", get(a, "/slow")))
        slow.start()
        time.sleep(0.3)
        with socket.create_connection(b, timeout=10) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            time.sleep(0.2)
            assert accept_queue(b[1]) == 1, "accepted while max_size requests ran"
            assert c.recv(100).startswith(b"HTTP/1.1 200")
        slow.join()
        assert done["slow"][0] == 200
        assert accept_queue(b[1]) == 0
    finally:
        proc.kill()
        proc.wait()


def test_empty_list_is_refused(tmp_path):
    r = subprocess.run([PYTHON, "-c", textwrap.dedent('''
        import libgreen
        try:
            libgreen.wsgi.server([], lambda e, s: [])
        except ValueError as e:
            print(e)
    ''')], env=child_env(), capture_output=True, timeout=30)
    assert r.stdout.decode().strip() == (
        "libgreen.wsgi.server(): the list of listening sockets is empty")
