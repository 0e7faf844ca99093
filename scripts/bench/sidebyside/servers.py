"""sidebyside/servers.py - how each server is started.

One entry per server: its command line for an app (MODULE:ATTR) on a
port, what it is (a WSGI server, the C ceiling, or the app-only loop),
how it is configured and how it is stopped. Every server gets the same
chances: backlog 4096, room for 10,000 connections or requests where it
has such a knob, 100 threads where it has a thread pool, no access log,
one process (gunicorn: a master and one worker; both are counted).
"""
import os
import shutil
import signal
from dataclasses import dataclass, field

PY = "/usr/bin/python3"

# argv: MODULE:ATTR PORT. Each prints nothing we rely on: readiness is
# probed over HTTP.
LOAD_APP = ("import importlib, sys\n"
            "_mod, _attr = sys.argv[1].split(':')\n"
            "app = getattr(importlib.import_module(_mod), _attr)\n"
            "port = int(sys.argv[2])\n")

SCRIPTS = {
    "libgreen": LOAD_APP + (
        "import libgreen\n"
        "sock = libgreen.listen(('127.0.0.1', port), backlog=4096)\n"
        "libgreen.wsgi.server(sock, app, log_output=False, max_size=10000)\n"),
    "eventlet": "import eventlet\neventlet.monkey_patch()\n" + LOAD_APP + (
        "import eventlet.wsgi\n"
        "sock = eventlet.listen(('127.0.0.1', port), backlog=4096)\n"
        "eventlet.wsgi.server(sock, app, log_output=False, max_size=10000)\n"),
    # pywsgi writes the head and the body in two sends: without
    # TCP_NODELAY, Nagle's algorithm and the client's delayed ACK hold the
    # second for up to 40 ms on every keep-alive request.
    "gevent": "from gevent import monkey\nmonkey.patch_all()\n" + LOAD_APP + (
        "import socket\n"
        "from gevent.pywsgi import WSGIServer\n"
        "class NoDelayServer(WSGIServer):\n"
        "    def handle(self, sock, address):\n"
        "        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
        "        super().handle(sock, address)\n"
        "NoDelayServer(('127.0.0.1', port), app, log=None, backlog=4096).serve_forever()\n"),
    # poll, not select: select() cannot take an fd above 1023
    "waitress": LOAD_APP + (
        "import waitress\n"
        "waitress.serve(app, host='127.0.0.1', port=port, threads=100,\n"
        "               connection_limit=10000, backlog=4096,\n"
        "               asyncore_use_poll=True, _quiet=True)\n"),
}


@dataclass(frozen=True)
class Server:
    name: str
    config: str                  # how it is set up, for the report
    kind: str = "wsgi"           # "wsgi", "ceiling" (C) or "loop" (app only)
    apps: tuple = ()             # the only apps it serves; () = all
    stop_signal: int = signal.SIGTERM
    extra: tuple = field(default=())

    def serves(self, app):
        return not self.apps or app in self.apps

    def package(self):
        """The Debian package whose version the report names."""
        return PACKAGES.get(self.name.split("-")[0])


PACKAGES = {"eventlet": "python3-eventlet", "gevent": "python3-gevent",
            "gunicorn": "gunicorn", "waitress": "python3-waitress",
            "uwsgi": "uwsgi-core", "app": "python3-flask"}

SERVERS = [
    Server("libgreen", "libgreen.wsgi.server under LD_PRELOAD, max_size=10000"),
    Server("c-ceiling", "scripts/bench/ceiling.c: epoll, fixed response, no parsing",
           kind="ceiling", apps=("plain",)),
    Server("app-only", "the app called in a loop by one process, no server, no socket",
           kind="loop", apps=("flask",)),
    Server("eventlet", "eventlet.monkey_patch(), eventlet.wsgi.server, max_size=10000"),
    Server("gevent", "monkey.patch_all(), gevent.pywsgi with TCP_NODELAY on each connection"),
    Server("gunicorn-sync", "-w 1 -k sync", extra=("-k", "sync")),
    Server("gunicorn-gthread", "-w 1 -k gthread --threads 100 --worker-connections 10000",
           extra=("-k", "gthread", "--threads", "100", "--worker-connections", "10000")),
    Server("gunicorn-eventlet", "-w 1 -k eventlet --worker-connections 10000",
           extra=("-k", "eventlet", "--worker-connections", "10000")),
    Server("gunicorn-gevent", "-w 1 -k gevent --worker-connections 10000",
           extra=("-k", "gevent", "--worker-connections", "10000")),
    Server("waitress", "threads=100, connection_limit=10000, poll()"),
    Server("uwsgi", "--http11-socket (keep-alive), 1 process, --threads 100",
           stop_signal=signal.SIGINT,
           extra=("--plugin", "python3", "--threads", "100")),
    # Its --http11-socket (keep-alive) aborts in Debian's uwsgi 2.0.21 with
    # gevent 22.10 on the second request of a connection ("'io' object
    # has no attribute 'stop'", then a libev assertion): it gets the
    # HTTP/1.0-style socket, a connection per request, said with
    # "Connection: close" so that wrk reconnects instead of counting an
    # error per request.
    Server("uwsgi-gevent", "--http-socket (a connection per request: its keep-alive "
           "socket aborts with gevent 22.10), 1 process, --gevent 10000 --gevent-monkey-patch",
           stop_signal=signal.SIGINT,
           extra=("--plugin", "python3,gevent_python3", "--gevent", "10000",
                  "--gevent-monkey-patch", "--add-header", "Connection: close")),
]

BY_NAME = {s.name: s for s in SERVERS}
QUICK = ("libgreen", "c-ceiling", "app-only", "gevent", "gunicorn-gevent")


def command(server, target, port, ctx):
    """(argv, extra environment) that serve `target` on 127.0.0.1:port.
    ctx: .tmp (the app modules), .root (the repository), .preload,
    .seconds/.warmup (for the app-only loop)."""
    if server.kind == "ceiling":
        return [os.path.join(ctx.root, "build", "bench", "ceiling"), str(port)], {}
    if server.kind == "loop":
        return [PY, os.path.join(ctx.tmp, "apploop.py"), target,
                str(ctx.seconds), str(ctx.warmup)], {}
    if server.name in SCRIPTS:
        env = {"LD_PRELOAD": ctx.preload} if server.name == "libgreen" else {}
        return [PY, "-c", SCRIPTS[server.name], target, str(port)], env
    if server.name.startswith("gunicorn"):
        return [shutil.which("gunicorn") or "/usr/bin/gunicorn", "-w", "1",
                "-b", "127.0.0.1:%d" % port, "--backlog", "4096",
                "--log-level", "warning", "--chdir", ctx.tmp,
                *server.extra, target], {}
    if server.name.startswith("uwsgi"):
        # the plugins first: they define the options that follow
        return [shutil.which("uwsgi") or "/usr/bin/uwsgi", *server.extra,
                "--http-socket" if server.name == "uwsgi-gevent" else "--http11-socket",
                "127.0.0.1:%d" % port, "--chdir", ctx.tmp,
                "--wsgi", target, "--listen", "4096", "--disable-logging",
                "--need-app"], {}
    raise ValueError("no command for server %r" % server.name)


def missing(server, root):
    """Why this server cannot run here, or None."""
    if server.kind == "ceiling":
        path = os.path.join(root, "build", "bench", "ceiling")
        return None if os.access(path, os.X_OK) else "build/bench/ceiling is not built (make bench builds it)"
    if server.name.startswith("gunicorn") and not shutil.which("gunicorn"):
        return "gunicorn is not installed (scripts/install-deps)"
    if server.name.startswith("uwsgi"):
        if not shutil.which("uwsgi"):
            return "uwsgi is not installed (scripts/install-deps)"
        plugin = "gevent_python3" if server.name == "uwsgi-gevent" else "python3"
        if not os.path.exists("/usr/lib/uwsgi/plugins/%s_plugin.so" % plugin):
            return "uwsgi's %s plugin is not installed (scripts/install-deps)" % plugin
    return None
