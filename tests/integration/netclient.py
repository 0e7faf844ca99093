"""tests/integration/netclient.py - the plain client side that tests of
several directories share: a port that is free, and one GET on a new
connection over TCP or a Unix socket.

It needs neither pytest nor a build, so tests/package and the
tests/deploy script (which run as root, the latter outside pytest)
import it too, with tests/integration on their sys.path.
"""

import socket


def free_port(host="127.0.0.1"):
    """A TCP port on host that was free a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def get(address, path="/", timeout=10.0, headers=None):
    """One GET on a new connection to (host, port) or a Unix socket path,
    read until the server closes it: (status, body bytes). An answer that
    is not HTTP/1.x (none at all, say) raises OSError, as a refused or
    reset connection does."""
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(address)
    else:
        s = socket.create_connection(address, timeout=timeout)
    with s:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"
                  .encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise OSError(f"not an HTTP answer: {data[:80]!r}")
    return int(head.split()[1]), body
