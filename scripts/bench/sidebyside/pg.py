"""sidebyside/pg.py - a throw-away PostgreSQL for the "pg" app: initdb in
a temporary directory, postgres on a Unix socket there (no TCP), trust
authentication, pinned with the load generator so the server's core is
the server's alone; stopped by PID.
"""
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

from . import procs


def bindir():
    """The newest /usr/lib/postgresql/N/bin with initdb and postgres."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        d = os.path.dirname(initdb)
        m = re.search(r"/postgresql/(\d+)/", initdb)
        if m and os.access(os.path.join(d, "postgres"), os.X_OK):
            found.append((int(m.group(1)), d))
    return max(found)[1] if found else None


class Postgres:
    PORT = 5432  # names the socket file only

    def __init__(self, cpus):
        bins = bindir()
        if bins is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/install-deps)")
        # a Unix socket path must fit in 107 bytes: a short directory
        self.tmp = tempfile.mkdtemp(prefix="lgbench-pg-", dir="/tmp")
        data = os.path.join(self.tmp, "data")
        user = pwd.getpwuid(os.geteuid()).pw_name
        kw = {}
        if os.geteuid() == 0:  # initdb refuses root: the cluster is postgres's
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            user = "postgres"
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}
        self.proc = None
        try:
            init = subprocess.run(
                [os.path.join(bins, "initdb"), "-D", data, "-U", user, "-A", "trust",
                 "-E", "UTF8", "--locale=C", "--no-sync"],
                cwd=self.tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, timeout=120, **kw)
            if init.returncode:
                raise RuntimeError("initdb failed:\n" + init.stdout.decode(errors="replace"))
            log = open(os.path.join(self.tmp, "postgres.log"), "wb")
            self.proc = subprocess.Popen(
                [os.path.join(bins, "postgres"), "-D", data, "-k", self.tmp,
                 "-p", str(self.PORT), "-c", "listen_addresses=",
                 "-c", "max_connections=300", "-c", "shared_buffers=32MB",
                 "-c", "fsync=off", "-c", "synchronous_commit=off"],
                cwd=self.tmp, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True,
                preexec_fn=lambda: os.sched_setaffinity(0, cpus) if cpus else None, **kw)
            log.close()
            self.dsn = "host=%s port=%d user=%s dbname=postgres" % (self.tmp, self.PORT, user)
            self._wait(os.path.join(bins, "pg_isready"), user, env, kw)
        except BaseException:
            self.stop()
            raise

    def _wait(self, isready, user, env, kw):
        sock = os.path.join(self.tmp, ".s.PGSQL.%d" % self.PORT)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            if os.path.exists(sock) and subprocess.run(
                    [isready, "-q", "-h", self.tmp, "-p", str(self.PORT), "-U", user,
                     "-d", "postgres", "-t", "2"], env=env, timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        with open(os.path.join(self.tmp, "postgres.log"), errors="replace") as f:
            raise RuntimeError("postgres did not start:\n" + f.read()[-2000:])

    def stop(self):
        if self.proc is not None:
            procs.stop(self.proc, signal.SIGINT, grace=10)  # SIGINT: fast shutdown
            self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)
