"""`libgreen --workers N --reuse-port` (server/cli.py, server/workers.py):
one SO_REUSEPORT socket per worker slot, made and kept by the master.
Connections spread over the workers; each worker holds its slot's socket
only; a reload or a worker's exit under load loses no request, because
the master keeps the sockets and a worker's successor takes over its
slot's; the cases it cannot serve (Unix sockets, systemd's sockets, a
port another server holds) fail at start with one line; and
libgreen.listen(reuse_port=True) underneath."""

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from clitools import HELLO, TIME_LIMIT, Command, LAUNCHER, libgreen, \
    require_launcher, run, write_app
from conftest import PYTHON, SO, child_env
from netclient import get
from test_workers import SLEEPY, Load, reload_thrice

require_launcher()
pytestmark = pytest.mark.time_limit(TIME_LIMIT)

CONNECTIONS = 200


def start(libgreen, tmp_path, source, *args, workers=2):
    write_app(tmp_path, "app", source)
    cmd = libgreen("--allow-root", "-b", "127.0.0.1:0", "-w", str(workers),
                   "--no-log-output", *args, "app:app")
    addrs = cmd.serving(workers=workers)
    assert len(addrs) == 1, addrs  # port 0: every socket on the one port
    return cmd, addrs[0]


def listening_inodes(port):
    """Inodes of the sockets listening on 127.0.0.1:port."""
    out = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == "0100007F:%04X" % port and fields[3] == "0A":
                out.add(int(fields[9]))
    return out


def held(pid, inodes):
    """Which of the socket inodes process pid has open."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m and int(m.group(1)) in inodes:
            found.add(int(m.group(1)))
    return found


def request(sock):
    """One keep-alive GET on sock: the body (the worker's PID)."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "connection closed before the response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk
        body += chunk
    return int(body)


def spread(addr):
    """Opens CONNECTIONS connections at once, then makes one request on
    each: {worker PID: connections it answered}."""
    socks = [socket.create_connection(addr, timeout=10) for _ in range(CONNECTIONS)]
    try:
        count = {}
        for s in socks:
            pid = request(s)
            count[pid] = count.get(pid, 0) + 1
        return count
    finally:
        for s in socks:
            s.close()


def test_connections_spread_over_the_workers(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, HELLO, "--reuse-port")
    cmd.wait_for(r"serve app:app on 127\.0\.0\.1:%d \(SO_REUSEPORT: a socket per "
                 r"worker\)" % addr[1])
    workers = cmd.worker_pids()
    # Two sockets on the port, both the master's; each worker holds one
    # of them, not the same.
    inodes = listening_inodes(addr[1])
    assert len(inodes) == 2
    assert held(cmd.pid, inodes) == inodes
    mine = [held(pid, inodes) for pid in workers]
    assert all(len(m) == 1 for m in mine) and mine[0] != mine[1], mine
    count = spread(addr)
    print(f"\n--reuse-port: {CONNECTIONS} connections per worker: {sorted(count.values())}")
    assert set(count) == set(workers)
    # The kernel hashes the 4-tuple: a fair coin per connection; 20 % is
    # more than 8 standard deviations below half.
    assert min(count.values()) >= CONNECTIONS // 5, count


def test_without_reuse_port_the_workers_share_one_socket(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, HELLO)
    workers = cmd.worker_pids()
    inodes = listening_inodes(addr[1])
    assert len(inodes) == 1
    assert all(held(pid, inodes) == inodes for pid in workers + [cmd.pid])
    count = spread(addr)
    print(f"\nshared socket: {CONNECTIONS} connections per worker: "
          f"{sorted(count.values())}")
    assert sum(count.values()) == CONNECTIONS and set(count) <= set(workers)


def test_one_worker_with_reuse_port_is_one_plain_socket(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, HELLO, "--reuse-port", workers=1)
    assert len(listening_inodes(addr[1])) == 1
    assert get(addr)[0] == 200
    # No SO_REUSEPORT on it: nothing else can join its port.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError):
            s.bind(addr)


@pytest.mark.time_limit(90)
def test_reload_and_worker_exit_under_load_fail_no_request(libgreen, tmp_path):
    """Three SIGHUPs, then one worker told to stop by itself (the master
    starts its successor at once), while 8 clients keep connecting: the
    connections the kernel queued on an outgoing worker's socket are
    served by the slot's next worker, none is reset."""
    cmd, addr = start(libgreen, tmp_path, SLEEPY, "--reuse-port")
    inodes = listening_inodes(addr[1])
    t0 = time.monotonic()
    with Load(addr) as load:
        reload_thrice(cmd)
        time.sleep(0.5)
        victim, other = cmd.worker_pids()
        mark = cmd.mark()
        os.kill(victim, signal.SIGTERM)
        cmd.wait_for(r"worker %d exited .*; starting another" % victim, since=mark)
        last = cmd.wait_workers(lambda p: len(p) == 2 and victim not in p)
        time.sleep(0.5)
        with load.lock:
            ok_before = load.ok
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    print(f"\n--reuse-port under load: {load.ok} requests in {elapsed:.1f} s, "
          f"3 SIGHUPs and a worker's exit, {len(load.failures)} failed, "
          f"{load.retried} idle keep-alive connections closed and retried")
    assert load.failures == []
    assert load.ok > 200 and load.ok > ok_before, "the load stalled"
    assert set(last) & load.pids, "the last workers served nothing"
    # The same two sockets throughout, one per worker.
    assert listening_inodes(addr[1]) == inodes == held(cmd.pid, inodes)
    mine = [held(pid, inodes) for pid in last]
    assert all(len(m) == 1 for m in mine) and mine[0] != mine[1], mine
    assert cmd.stop() == 0
    with pytest.raises(ConnectionRefusedError):  # every slot's socket closed
        socket.create_connection(addr, timeout=2).close()


def test_ttin_ttou_are_refused(libgreen, tmp_path):
    cmd, addr = start(libgreen, tmp_path, HELLO, "--reuse-port")
    pids = cmd.worker_pids()
    for sig in ("TTIN", "TTOU"):
        mark = cmd.mark()
        cmd.send(getattr(signal, "SIG" + sig))
        cmd.wait_for(r"SIG%s ignored: with --reuse-port the master bound one socket "
                     r"per worker at start, so the number of workers stays 2" % sig,
                     since=mark)
    assert cmd.worker_pids() == pids
    assert get(addr)[0] == 200


# ---- what it cannot do: one line, exit 2 ----------------------------------

def one_line_error(tmp_path, args, env=None):
    write_app(tmp_path, "app", HELLO)
    rc, _, err = run(["--allow-root", "-w", "2", "--no-log-output", *args, "app:app"],
                     tmp_path, env)
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def test_unix_socket_is_refused(tmp_path):
    path = tmp_path / "s.sock"
    assert one_line_error(tmp_path, ["--reuse-port", "-b", f"unix:{path}"]) == (
        f"libgreen: error: --reuse-port cannot apply to --bind unix:{path}: "
        "SO_REUSEPORT shares TCP addresses only; bind HOST:PORT, or leave "
        "--reuse-port out (the workers then share the Unix socket)")
    assert not path.exists()


def test_unix_socket_is_refused_from_the_environment(tmp_path):
    err = one_line_error(tmp_path, ["-b", "127.0.0.1:0", "-b", "unix:x.sock"],
                         {"LIBGREEN_REUSE_PORT": "1"})
    assert err.startswith("libgreen: error: LIBGREEN_REUSE_PORT cannot apply to "
                          "--bind unix:x.sock"), err


def test_port_held_by_another_server_is_refused(tmp_path):
    """Even one that set SO_REUSEPORT itself: without the check the new
    sockets would join its group and take a share of its connections."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert one_line_error(tmp_path, ["--reuse-port", "-b", f"127.0.0.1:{port}"]) == (
            f"libgreen: error: cannot listen on 127.0.0.1:{port}: address already "
            "in use (another server listens there: stop it, or choose another --bind)")


SYSTEMD_EMULATOR = r'''
import os, socket, sys
# What systemd does for a .socket unit: the socket as fd 3, LISTEN_FDS=1,
# LISTEN_PID = this PID (it stays the same through exec).
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(16)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[1], sys.argv[1:])
'''


def test_systemd_sockets_are_refused(tmp_path):
    write_app(tmp_path, "app", HELLO)
    (tmp_path / "systemd.py").write_text(SYSTEMD_EMULATOR)
    cmd = Command([str(tmp_path / "systemd.py"), str(LAUNCHER), "--allow-root", "-w", "2",
                   "--reuse-port", "app:app"], tmp_path, {"LIBGREEN_SO": str(SO)},
                  launcher=PYTHON)
    try:
        assert cmd.wait(timeout=20) == 2
        assert cmd.stderr.strip() == (
            "libgreen: error: --reuse-port cannot apply to the 1 socket(s) systemd "
            "passed (LISTEN_FDS): libgreen must bind one SO_REUSEPORT socket per "
            "worker itself; leave --reuse-port out (the workers then share "
            "systemd's sockets), or drop the .socket unit and use --bind")
    finally:
        cmd.kill_all()


LISTEN_API = '''
import json, socket, libgreen
a = libgreen.listen(("127.0.0.1", 0), reuse_port=True)
port = a.getsockname()[1]
b = libgreen.listen(("127.0.0.1", port), reuse_port=True)
try:
    libgreen.listen(("127.0.0.1", port))
    plain = "bound"
except OSError as e:
    plain = e.strerror
try:
    libgreen.listen("x.sock", reuse_port=True)
    unix = "bound"
except ValueError as e:
    unix = str(e)
print(json.dumps([b.getsockname()[1] == port, plain, unix]))
'''


def test_listen_reuse_port(tmp_path):
    """libgreen.listen(reuse_port=True): two sockets on one port; a plain
    one cannot join them; a Unix path is refused."""
    out = subprocess.run([PYTHON, "-c", LISTEN_API], cwd=tmp_path, env=child_env(),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        True, "Address already in use",
        "reuse_port applies to TCP addresses, not to a Unix socket path"]
    assert not (tmp_path / "x.sock").exists()
