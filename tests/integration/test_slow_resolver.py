"""tests/integration/test_slow_resolver.py - a slow DNS server stalls only
the green thread that asked (hard rule 9), and a fork made while a lookup
waits for it leaves a child that resolves (hard rule 6).

Each test runs in private mount and network namespaces (unshare, as root):
its own loopback, a DNS responder on 127.0.0.1:53 that answers after a
delay, and /etc/resolv.conf bind-mounted to point at it. Nothing leaves
the namespace. Skipped where namespaces cannot be made (not root, no
unshare).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from conftest import preload_value

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SO = os.environ.get("LIBGREEN_SO", os.path.join(ROOT, "build", "libgreen.so"))
PYTHON = os.environ.get("LIBGREEN_PYTHON", "/usr/bin/python3")

DNS_SERVER = r'''
import socket, struct, threading, time, sys
DELAY = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
def answer(pkt, addr):
    time.sleep(DELAY)
    qid, flags, qd = struct.unpack("!HHH", pkt[:6])
    end = 12
    while pkt[end] != 0:
        end += pkt[end] + 1
    question = pkt[12:end + 5]
    qtype = struct.unpack("!H", pkt[end + 1:end + 3])[0]
    if qtype == 1:  # A: 10.9.8.7, an address nobody contacts
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 9, 8, 7])
        head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    else:        # no AAAA record
        rr = b""
        head = struct.pack("!HHHHHH", qid, 0x8180, 1, 0, 0, 0)
    s.sendto(head + question + rr, addr)
while True:
    pkt, addr = s.recvfrom(512)
    threading.Thread(target=answer, args=(pkt, addr), daemon=True).start()
'''

CLIENT = r'''
import json, socket, time, libgreen
t0 = time.monotonic()
done = {}
def lookup():
    addr = socket.getaddrinfo("slow.libgreen.test", 80, socket.AF_INET,
                              socket.SOCK_STREAM)[0][4][0]
    done["lookup"] = time.monotonic() - t0
    return addr
def worker(i):
    for _ in range(5):
        time.sleep(0.02)
    done.setdefault("workers", []).append(time.monotonic() - t0)
g = libgreen.spawn(lookup)
ws = [libgreen.spawn(worker, i) for i in range(10)]
[w.wait() for w in ws]
addr = g.wait()
print(json.dumps({"addr": addr, "lookup": done["lookup"],
                  "workers_max": max(done["workers"])}))
'''


def _can_unshare():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    r = subprocess.run(["unshare", "-mn", "true"], capture_output=True, timeout=30)
    return r.returncode == 0


def run_in_netns(client, delay):
    """Runs the client program under the preload in private namespaces
    whose DNS server answers after delay seconds; returns its JSON line."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "dns.py"), "w") as f:
            f.write(DNS_SERVER)
        with open(os.path.join(tmp, "client.py"), "w") as f:
            f.write(client)
        with open(os.path.join(tmp, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:5 attempts:1\n")
        script = textwrap.dedent("""
            set -e
            ip link set lo up
            mount --bind {tmp}/resolv.conf /etc/resolv.conf
            {py} {tmp}/dns.py {delay} > {tmp}/dns.out 2>&1 &
            dns=$!
            trap 'kill $dns 2>/dev/null' EXIT
            for i in $(seq 100); do grep -q ready {tmp}/dns.out && break; sleep 0.05; done
            LD_PRELOAD="{so}" {py} {tmp}/client.py
        """).format(tmp=tmp, py=PYTHON, so=preload_value(SO), delay=delay)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_", "PYTHON"))}
        proc = subprocess.run(["unshare", "-mn", "bash", "-c", script], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])


pytestmark = [
    pytest.mark.skipif(not os.path.exists(SO), reason="build/libgreen.so not built"),
    pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare -mn (namespaces)"),
]


def test_slow_dns_stalls_only_the_caller():
    r = run_in_netns(CLIENT, 1.0)
    assert r["addr"] == "10.9.8.7"
    assert r["lookup"] >= 0.9            # the answer really was slow
    assert r["workers_max"] < 0.6        # and nobody else waited for it


# A fork while a resolver worker waits for the slow answer: the fork waits
# for lookups in flight only briefly (about a second), the child resolves
# at once from its main context and from a green thread, and the parent's
# lookup still gets its answer.
FORK_CLIENT = r'''
import json, os, signal, socket, time, libgreen
def lookup(name):
    return socket.getaddrinfo(name, 80, socket.AF_INET,
                              socket.SOCK_STREAM)[0][4][0]
t0 = time.monotonic()
g = libgreen.spawn(lookup, "slow.libgreen.test")
libgreen.sleep(0.2)                  # the worker now waits on the server
f0 = time.monotonic()
pid = os.fork()
if pid == 0:
    signal.alarm(10)
    c0 = time.monotonic()
    ok = (lookup("localhost") == "127.0.0.1" and
          libgreen.spawn(lookup, "localhost").wait(timeout=8) == "127.0.0.1")
    os._exit(0 if ok and time.monotonic() - c0 < 2 else 1)
fork = time.monotonic() - f0
_, status = os.waitpid(pid, 0)
print(json.dumps({"child": os.waitstatus_to_exitcode(status), "fork": fork,
                  "addr": g.wait(timeout=10), "lookup": time.monotonic() - t0}))
'''


def test_fork_while_a_lookup_waits_on_the_dns_server():
    r = run_in_netns(FORK_CLIENT, 3.0)
    assert r["child"] == 0
    assert r["fork"] < 2.0               # not held for the whole lookup
    assert r["addr"] == "10.9.8.7"
    assert r["lookup"] >= 2.9
