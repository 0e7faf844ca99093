#!/usr/bin/python3
"""tests/deploy/multihost.py - `make test-deploy`: three libgreen hosts
behind nginx, as docs/deploy.md sets them up, under load.

Three hosts, each the repository's build/libgreen (2 workers) in a
network namespace of its own, on a private bridge made by the test
(netns.py); nginx in front in a fourth namespace, running
docs/deploy/nginx-upstream.conf with only paths and addresses replaced
(lbnginx.py); 12 keep-alive clients through nginx, three requests in ten
a POST (loadgen.py). Four phases, each under that load:

  1 spread     each host answers a third of the requests, +-20 %
  2 reload     SIGHUP to one host's master: no request fails
  3 rolling    each host in turn stopped gracefully (SIGTERM, wait for
               its exit), started again, and given traffic by nginx
               before the next: no request fails
  4 hard kill  SIGKILL to one host's master and workers at once: no GET
               fails (nginx sends it to another host); each POST that
               fails is one nginx had sent to the killed host and that
               was unanswered at the kill. How many, and how many of
               them the app had started or finished, is printed.

Needs root, iproute2 (ip netns) and nginx; without them it says
why in one line and exits 77 (skipped). LIBGREEN_COMMAND=/usr/bin/libgreen
runs the hosts with an installed command instead of build/libgreen. Bounded (TIME_LIMIT); every
process it starts is killed by PID and every namespace it made is
deleted on every way out (finally, atexit, SIGTERM/SIGINT/SIGHUP; a
guard process if the test is killed outright: netns.py), and a leftover
of an earlier run that died anyway is removed first. Traffic stays in
the private namespaces.
"""

import atexit
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lbnginx  # noqa: E402
import netns  # noqa: E402
from hosts import Host  # noqa: E402
from loadgen import Load  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(os.environ.get("LIBGREEN_COMMAND") or REPO / "build" / "libgreen")
EXIT_SKIP = 77
TIME_LIMIT = 180         # seconds for the whole run
HOSTS = 3
CLIENTS = 12
SPREAD = 0.20            # each host within 20 % of a third
FAIL_TIMEOUT = 3.0       # the conf's fail_timeout: a host is tried again after it


def say(text):
    print(f"test-deploy: {text}", flush=True)


class Failed(Exception):
    pass


def check(cond, text):
    if not cond:
        raise Failed(text)


def unavailable():
    """None, or why this machine cannot run the test."""
    if os.geteuid() != 0:
        return "needs root (it makes network namespaces): run it as root"
    if not shutil.which("ip", path=lbnginx.SBIN_PATH):
        return "ip is not installed: install iproute2 (scripts/install-deps)"
    why = lbnginx.available()
    if why:
        return why
    if not LAUNCHER.is_file():
        return f"{LAUNCHER} not found: run `make` first"
    return None


# ---- the deployment ---------------------------------------------------------

class Deployment:
    """The network, the hosts and nginx of one run; cleanup() undoes all of
    it and may be called any number of times, from any way out."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix=f"{netns.PREFIX}{os.getpid()}-")
        os.chmod(self.tmp, 0o755)            # nginx workers and nobody read here
        records = os.path.join(self.tmp, "records")
        os.mkdir(records)
        os.chmod(records, 0o777)             # the app writes here as nobody
        shutil.copy(Path(__file__).with_name("app.py"), self.tmp)
        self.net = netns.Network(HOSTS)
        self.hosts = []
        self.nginx = None
        self.keep_tmp = True

    def up(self):
        self.net.create()
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        env["PYTHONUNBUFFERED"] = "1"
        for i, ns in enumerate(self.net.hosts):
            self.hosts.append(Host(f"h{i + 1}", ns, self.net.address(i), LAUNCHER,
                                   self.tmp, env, nginx_address=self.net.gateway))
        self.net.enter(self.net.lb)          # nginx and the clients live in lb
        for h in self.hosts:
            h.start()
        self.nginx = lbnginx.Nginx(self.tmp, ["%s:%d" % h.address for h in self.hosts])
        self.nginx.start()

    def records(self, host):
        """(ids the app on host started, ids it finished), from its files."""
        started, done = set(), set()
        folder = os.path.join(self.tmp, "records")
        for name in os.listdir(folder):
            if name.startswith(host.name + "-"):
                with open(os.path.join(folder, name)) as f:
                    for line in f:
                        kind, _, rid = line.partition(" ")
                        if rid.strip().isdigit():
                            (started if kind == "S" else done).add(int(rid))
        return started, done

    def cleanup(self):
        if self.nginx:
            self.nginx.stop()
            self.nginx = None
        for h in self.hosts:
            h.cleanup()
        self.net.destroy()
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---- the phases -------------------------------------------------------------

def summary(results):
    """'N requests (G GET, P POST), h1 a / h2 b / h3 c, F failed'."""
    hosts = {}
    for r in results:
        if r.host:
            hosts[r.host] = hosts.get(r.host, 0) + 1
    failed = sum(r.failed for r in results)
    posts = sum(r.method == "POST" for r in results)
    spread = " / ".join(f"{h} {n}" for h, n in sorted(hosts.items()))
    return (f"{len(results)} requests ({len(results) - posts} GET, {posts} POST), "
            f"{spread}, {failed} failed")


def retried(dep, results):
    """'nginx retried N (G GET, P POST)': requests nginx sent to more than
    one host."""
    log = dep.nginx.entries([r.rid for r in results])
    again = [r for r in results if r.rid in log and len(log[r.rid][1]) > 1]
    posts = sum(r.method == "POST" for r in again)
    return f"nginx retried {len(again)} ({len(again) - posts} GET, {posts} POST)"


def failures(results, limit=5):
    bad = [r for r in results if r.failed]
    return "; ".join(f"#{r.rid} {r.method} {r.status or r.error}" for r in bad[:limit])


def phase_spread(dep):
    with Load(lbnginx.PORT, CLIENTS) as load:
        time.sleep(4)                        # load for 4 s
    res = load.results
    check(not any(r.failed for r in res), f"spread: failed requests: {failures(res)}")
    third = len(res) / HOSTS
    for h in dep.hosts:
        n = sum(r.host == h.name for r in res)
        check(abs(n - third) <= SPREAD * third,
              f"spread: {h.name} answered {n} of {len(res)} (a third is {third:.0f})")
    say(f"1 spread: {summary(res)} in {load.ended - load.started:.1f} s")


def phase_reload(dep):
    h = dep.hosts[0]
    with Load(lbnginx.PORT, CLIENTS) as load:
        time.sleep(1)
        t0 = time.monotonic()
        old, new = h.reload()
        took = time.monotonic() - t0
        time.sleep(1)
    res = load.results
    check(not any(r.failed for r in res), f"reload: failed requests: {failures(res)}")
    served = {r.pid for r in res if r.host == h.name}
    check(served & new, f"reload: {h.name}'s new workers {new} served nothing")
    say(f"2 reload: SIGHUP to {h.name}, new workers serving and old ones gone "
        f"in {took:.2f} s: {summary(res)}; {retried(dep, res)}")


def phase_rolling(dep):
    steps = []
    with Load(lbnginx.PORT, CLIENTS) as load:
        time.sleep(1)
        for h in dep.hosts:
            t0 = time.monotonic()
            status = h.stop()
            check(status == 0, f"rolling: {h.name}'s master exited with {status}")
            t1 = time.monotonic()
            h.start()
            t2 = time.monotonic()
            back = load.wait_served_by(h.name, t2, FAIL_TIMEOUT + 10)
            steps.append(f"{h.name} stop {t1 - t0:.2f} s, start {t2 - t1:.2f} s, "
                         f"traffic again {back:.2f} s later")
        time.sleep(1)
    res = load.results
    check(not any(r.failed for r in res), f"rolling: failed requests: {failures(res)}")
    say(f"3 rolling restart: {summary(res)}; {retried(dep, res)}; "
        + "; ".join(steps))


def phase_kill(dep):
    victim = dep.hosts[1]
    vaddr = "%s:%d" % victim.address
    with Load(lbnginx.PORT, CLIENTS) as load:
        time.sleep(1.5)
        k0 = time.monotonic()
        group = victim.kill()
        k1 = time.monotonic()
        time.sleep(3)
    res = load.results
    log = dep.nginx.entries([r.rid for r in res])
    missing = [r.rid for r in res if r.rid not in log]
    check(not missing, f"kill: requests missing from nginx's log: {missing[:5]}")

    def first(r):
        return log[r.rid][1][0]
    # In flight on the victim at the kill: sent before every process of
    # it was gone, unanswered when the kill began, and sent there by nginx.
    inflight = [r for r in res if r.sent < k1 and r.done > k0 and first(r) == vaddr]
    in_get = [r for r in inflight if r.method == "GET"]
    in_post = [r for r in inflight if r.method == "POST"]
    failed = [r for r in res if r.failed]
    failed_get = [r for r in failed if r.method == "GET"]
    failed_post = [r for r in failed if r.method == "POST"]
    started, done = dep.records(victim)
    check(not failed_get, f"kill: GETs failed: {failures(failed_get)}")
    in_post_ids = {r.rid for r in in_post}
    odd = [r for r in failed_post if r.status != 502 or log[r.rid][1] != [vaddr]
           or r.rid not in in_post_ids]
    check(not odd, "kill: POSTs failed that were not in flight on the killed host: "
          + "; ".join(f"#{r.rid} {r.status or r.error} sent {r.sent - k0:+.3f} s "
                      f"nginx {log[r.rid]}" for r in odd))
    elsewhere = [r for r in in_get if not r.failed and r.host != victim.name]
    say(f"4 hard kill: SIGKILL to {victim.name}'s master and workers "
        f"({len(group)} processes, all gone {(k1 - k0) * 1000:.1f} ms later): "
        f"{summary(res)}")
    say(f"  in flight on {victim.name} at the kill: {len(in_get)} GET, "
        f"{len(in_post)} POST; GETs answered by another host (nginx retried "
        f"them): {len(elsewhere)}, failed: 0")
    lost = [r.rid for r in failed_post]
    say(f"  POSTs lost (502): {len(failed_post)} of the {len(in_post)} in flight "
        f"({sum(i in done for i in lost)} finished by the app, "
        f"{sum(i in started and i not in done for i in lost)} cut short in the app, "
        f"{sum(i not in started for i in lost)} never reached the app); "
        f"{retried(dep, res)}")


# ---- the run ----------------------------------------------------------------

def main():
    why = unavailable()
    if why:
        say(f"skipped: {why}")
        return EXIT_SKIP
    try:
        busy = netns.remove_leftovers(say)
    except RuntimeError as e:
        say(f"skipped: cannot use network namespaces here: {e}")
        return EXIT_SKIP
    if busy:
        say(f"note: another run is going on ({busy[0]}); this one uses its own names")
    dep = Deployment()
    atexit.register(dep.cleanup)

    def stop(signum, frame):
        raise SystemExit(f"test-deploy: stopped by {signal.Signals(signum).name}")

    def expired(signum, frame):
        raise Failed(f"took longer than its time limit of {TIME_LIMIT} s")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    signal.signal(signal.SIGALRM, expired)
    signal.alarm(TIME_LIMIT)
    t0 = time.monotonic()
    try:
        try:
            dep.up()
        except netns.Unavailable as e:
            say(f"skipped: {e}")
            dep.keep_tmp = False
            return EXIT_SKIP
        say(f"3 hosts ({', '.join('%s %s:%d' % ((h.name,) + h.address) for h in dep.hosts)}) "
            f"behind nginx, {CLIENTS} keep-alive clients, 3 in 10 requests POST")
        for phase in (phase_spread, phase_reload, phase_rolling, phase_kill):
            phase(dep)
        dep.keep_tmp = False
        say(f"passed in {time.monotonic() - t0:.1f} s")
        return 0
    except (Failed, RuntimeError) as e:
        say(f"FAILED: {e}")
        return 1
    finally:
        signal.alarm(0)
        dep.cleanup()
        if dep.keep_tmp:
            say(f"logs kept in {dep.tmp}")


if __name__ == "__main__":
    sys.exit(main())
