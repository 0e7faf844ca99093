# server/gunicorn.py - libgreen.GunicornWorker: gunicorn's master (the
# "arbiter") running libgreen's server in each worker process.
#
#   LD_PRELOAD=/path/to/libgreen.so gunicorn -k libgreen.GunicornWorker MODULE:APP
#
# Embedded into libgreen_pyXY.so like listen.py, but run only when
# libgreen.GunicornWorker is first looked up (server/lazy.c), as the
# module libgreen.gunicorn: a plain `import libgreen` never imports
# gunicorn.
"""gunicorn worker class for libgreen's WSGI server."""

import os as _os
import re as _re
import signal as _signal

from gunicorn.workers.base import Worker as _Worker

import libgreen as _libgreen

# The access-log atoms libgreen writes (server/log_format.c); gunicorn
# prints "-" for any other, and so does this worker.
_ATOM = _re.compile(r"%\(([^)]*)\)s")
_KNOWN = set("hlutrsmUqHbBfaTMDLp")

# Request limits: gunicorn's 0 means "no limit", libgreen's means "the
# default"; no limit is the whole head, which max_head_size bounds.
_HEAD_MAX = 65536
_FIELDS_MAX = 32768      # gunicorn's own cap on limit_request_fields


def _access_log_format(fmt, warn):
    def atom(m):
        name = m.group(1)
        if name in _KNOWN or (name.startswith("{") and name.endswith("}i")):
            return m.group(0)
        warn("libgreen.GunicornWorker: the access log atom %s is not "
             "supported and prints '-'" % m.group(0))
        return "-"
    return _ATOM.sub(atom, fmt)


class GunicornWorker(_Worker):
    """Serves with libgreen.wsgi.server on gunicorn's listening sockets:
    every request in its own green thread, up to worker_connections at
    once.

    Signals (gunicorn's meanings): TERM stops gracefully (requests in
    progress get graceful_timeout seconds); QUIT stops at once; INT is
    a graceful stop while serving (a Ctrl+C reaches the arbiter too,
    which then sends QUIT); USR1 reopens gunicorn's log files (libgreen's
    access log notices a rotated file by itself); ABRT, the arbiter's
    timeout, stops at once. heartbeat() tells the arbiter the worker is
    alive once a second: a request that keeps the hub busy without
    yielding for longer than --timeout gets the worker killed and
    replaced."""

    def handle_quit(self, sig, frame):
        # Raised from the server's signal tick, an exception stops it at
        # once (server/serve.c); server() raises it again, and gunicorn
        # takes SystemExit as the worker's end.
        self.alive = False
        self.cfg.worker_int(self)
        raise SystemExit(0)

    _stop_sent = False

    def heartbeat(self):
        """Called by the server about once a second while its hub runs."""
        if self.alive and self.ppid != _os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False
        if not self.alive and not self._stop_sent:
            # gunicorn's way to end a worker from elsewhere (--reload's
            # thread, the check above): a graceful stop, as on TERM
            self._stop_sent = True
            _os.kill(_os.getpid(), _signal.SIGTERM)
        self.notify()  # also while draining: the arbiter still watches

    def server_options(self):
        """gunicorn's settings as libgreen.wsgi.server's options."""
        cfg = self.cfg
        if cfg.is_ssl:
            raise RuntimeError(
                "libgreen.GunicornWorker does not speak TLS: remove "
                "--certfile/--keyfile and let a proxy in front (nginx) "
                "terminate TLS")
        if cfg.timeout and cfg.timeout < 2:
            self.log.warning("libgreen.GunicornWorker: --timeout %s is "
                             "shorter than two heartbeats (one a second); "
                             "idle workers may be killed", cfg.timeout)
        opts = dict(
            keepalive=cfg.keepalive if cfg.keepalive > 0 else False,
            graceful_timeout=cfg.graceful_timeout,
            max_size=cfg.worker_connections,
            max_requests=self.max_requests if cfg.max_requests > 0 else 0,
            max_requests_jitter=0,  # gunicorn drew it: self.max_requests
            url_length_limit=cfg.limit_request_line or _HEAD_MAX,
            max_header_count=(cfg.limit_request_fields
                              if 0 < cfg.limit_request_fields <= _FIELDS_MAX
                              else _FIELDS_MAX),
            max_header_size=cfg.limit_request_field_size or _HEAD_MAX,
            # gunicorn trusts peers on Unix sockets whatever the list says
            forwarded_allow_ips=list(cfg.forwarded_allow_ips) + ["unix"],
            environ={"wsgi.multiprocess": cfg.workers > 1},
        )
        if cfg.accesslog:
            opts["access_log"] = cfg.accesslog
            opts["access_log_format"] = _access_log_format(
                cfg.access_log_format, self.log.warning)
        else:
            opts["log_output"] = False  # gunicorn logs no access by default
        return opts

    def run(self):
        if not self.alive:  # TERM while the app was being loaded
            return
        socks = [s.sock for s in self.sockets]
        _libgreen.wsgi.server(socks[0] if len(socks) == 1 else socks,
                              self.wsgi, heartbeat=self.heartbeat,
                              **self.server_options())
