# server/workers.py - the processes of the `libgreen` command: a master
# that holds the listening sockets and runs no app code, and the workers
# it forks, each of which imports the app and runs libgreen.wsgi.server
# on those sockets.
#
# The master never makes a hub and never imports the app: it stays small
# (a bare interpreter's memory) and a broken app cannot take it down. It
# keeps its copy of every listening socket for its whole life, so a
# connection is never refused while workers come and go: it waits in the
# kernel's backlog until a worker accepts it.
#
# With --reuse-port (cli.py) the master binds, for each address, one
# SO_REUSEPORT socket per worker slot: the kernel spreads new connections
# over the slots' sockets by a hash, and worker slot i accepts on socket
# i only. A worker that dies, or is replaced by a reload, leaves its
# socket open in the master, so what the kernel queued there waits for
# the slot's next worker instead of being reset. The number of slots is
# fixed at start: SIGTTIN/SIGTTOU are refused then.
#
# Each worker has a pipe to the master, on which it writes
#   R          once the app is imported and the server is about to accept
#   .          from the server's heartbeat (about once a second), if the
#              server has that option
#   E<text>\n  why it could not start (the master prints it)
# The master acts on signals (see the table in cli.py's --help), restarts
# workers that die (with a growing delay when they die at once), kills
# those that stop beating, and reloads on SIGHUP without a gap: the old
# workers get SIGTERM only once every new one has said R. Under systemd
# (Type=notify) it says READY=1 once the workers serve, RELOADING=1 and
# READY=1 around a reload, and STOPPING=1.
#
# Embedded into libgreen_pyXY.so with cli.py (libgreen.workers).
# Comments only at the top: a string there would become the docstring.
import errno as _errno, os as _os, select as _select, signal as _signal
import sys as _sys, time as _time

import libgreen as _libgreen

BOOT_ERROR = 3         # a worker's exit status: the app or server did not start
QUICK_DEATH = 2.0      # seconds: a worker dying sooner died "at once"
BACKOFF_MAX = 30.0     # seconds between restarts of a worker that keeps dying
KILL_MARGIN = 5.0      # seconds past graceful_timeout before SIGKILL
ABORT_GRACE = 2.0      # seconds between SIGABRT and SIGKILL for a hung worker
# Passed on to every worker: USR1/USR2 for the app, and libgreen's own
# debugging toggles (USR2 dumps, RTMIN+1 flips the trace, RTMIN+2 prints
# statistics). The master runs no hub, so without this their default
# action would end it.
FORWARDED_SIGNALS = (_signal.SIGUSR1, _signal.SIGUSR2,
                     _signal.SIGRTMIN + 1, _signal.SIGRTMIN + 2)
MASTER_SIGNALS = (_signal.SIGHUP, _signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT,
                  _signal.SIGTTIN, _signal.SIGTTOU, _signal.SIGCHLD) + FORWARDED_SIGNALS


def log(message):
    'One line from the master (or about a worker) on stderr.'
    try:
        _os.write(2, ('(%d) libgreen: %s\n' % (_os.getpid(), message)).encode(
            'utf-8', 'replace'))
    except OSError:
        pass


def sd_notify(address, state):
    '''Tells systemd (Type=notify) our state: READY=1, RELOADING=1,
    STOPPING=1. address is $NOTIFY_SOCKET as the master found it (None:
    not started by systemd, nothing to do).'''
    if not address:
        return
    import socket
    if address.startswith('@'):
        address = '\0' + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError as e:
        log('could not notify systemd (%s): %s' % (address, e.strerror or e))


def _status_text(status):
    if _os.WIFSIGNALED(status):
        sig = _os.WTERMSIG(status)
        try:
            return 'was killed by %s' % _signal.Signals(sig).name
        except ValueError:
            return 'was killed by signal %d' % sig
    return 'exited with status %d' % _os.waitstatus_to_exitcode(status)


# ---- a worker, as the master sees it ----------------------------------------

class Worker:
    def __init__(self, pid, gen, slot, pipe, first_boot):
        self.pid, self.gen, self.slot, self.pipe = pid, gen, slot, pipe
        self.first_boot = first_boot  # spawned before anything ever served
        self.started = self.seen = _time.monotonic()
        self.ready = False
        self.stopping = False
        self.kill_at = None           # monotonic time of the SIGKILL, if stopping
        self.error = None             # the E line, if it sent one
        self.eof = False              # its pipe is closed: nothing more to read
        self.buf = b''

    def feed(self, data):
        'Takes what the worker wrote on its pipe.'
        if data:
            self.seen = _time.monotonic()
        self.buf += data
        while self.buf:
            if self.buf[:1] == b'E':
                line, nl, rest = self.buf[1:].partition(b'\n')
                if not nl:
                    return
                self.error = line.decode('utf-8', 'replace')
                self.buf = rest
            else:
                self.ready = self.ready or self.buf[:1] == b'R'
                self.buf = self.buf[1:]

    def read(self):
        'Reads the pipe until it is empty or closed.'
        while not self.eof:
            try:
                data = _os.read(self.pipe, 4096)
            except BlockingIOError:
                return
            except OSError:
                data = b''
            if not data:
                self.eof = True
            self.feed(data)

    def signal(self, sig):
        try:
            _os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


# ---- the worker process -------------------------------------------------------

def _report(pipe, text):
    'Tells the master why this worker could not start (stderr as a fallback).'
    line = ('E%s\n' % text.replace('\n', ' ')).encode('utf-8', 'replace')
    try:
        _os.write(pipe, line)
    except OSError:
        _os.write(2, b'libgreen: error: ' + line[1:])


def _heartbeat(pipe, beats):
    'The server calls it about once a second while its hub runs.'
    def heartbeat():
        if not beats:
            beats.append(1)
        try:
            _os.write(pipe, b'.')
        except BlockingIOError:
            pass  # a full pipe: the master is behind, not us
        except OSError:
            _os.kill(_os.getpid(), _signal.SIGTERM)  # the master is gone: stop
    return heartbeat


def _die_with_master(master):
    '''Asks the kernel for SIGTERM when the master dies (a worker left
    alone would serve on, out of anyone's control).'''
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(_signal.SIGTERM), 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass
    if _os.getppid() != master:
        _os.kill(_os.getpid(), _signal.SIGTERM)


def _worker_signals(saved):
    '''The master's handlers go: the app starts with what the master
    found at start, except that HUP, TTIN and TTOU - meant for the master,
    but sent to a process group by a terminal or `kill -HUP -PGID` - do
    not stop a worker (a no-op handler, not SIG_IGN: exec resets a
    handler, so the app's children still get the defaults).'''
    for sig, handler in saved.items():
        _signal.signal(sig, handler)
    for sig in (_signal.SIGHUP, _signal.SIGTTIN, _signal.SIGTTOU):
        _signal.signal(sig, lambda signum, frame: None)
    # While the app loads, SIGINT and SIGTERM end the worker quietly; the
    # server takes them over (graceful stop) while it runs.
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)


def worker_main(settings, socks, pipe, saved_signals, master):
    'The body of a worker process; returns its exit status.'
    from libgreen import appload
    _worker_signals(saved_signals)
    _die_with_master(master)
    try:
        app = appload.load(settings.app)
    except appload.AppError as e:
        _report(pipe, str(e))
        return BOOT_ERROR
    _os.set_blocking(pipe, False)  # a stuck master must not stop the worker
    kw = dict(settings.server_kwargs)
    beats = []
    if settings.heartbeat:
        kw['heartbeat'] = _heartbeat(pipe, beats)
    try:
        _os.write(pipe, b'R')
    except OSError:
        return 1  # the master is gone
    try:
        _libgreen.wsgi.server([s for s, _, _ in socks], app, **kw)
    except Exception as e:
        _report(pipe, 'the server %s: %s: %s' % ('stopped' if beats else 'could not start',
                                               type(e).__name__, e))
        return 1 if beats else BOOT_ERROR  # it ran, or it never started
    return 0


def _run_worker(settings, socks, pipe, saved_signals, master):
    '''In the child after fork: runs the worker and exits, never returning
    into the master's code (whose finally blocks would remove the pid
    file and the socket files).'''
    status = 1
    try:
        status = worker_main(settings, socks, pipe, saved_signals, master)
    except SystemExit as e:
        status = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    except BaseException as e:
        _report(pipe, 'the worker failed: %s: %s' % (type(e).__name__, e))
    finally:
        try:
            import atexit
            atexit._run_exitfuncs()
            _sys.stdout.flush()
            _sys.stderr.flush()
        finally:
            _os._exit(status)


# ---- the master -----------------------------------------------------------

class Master:
    def __init__(self, settings, socks, pid_file, slots=None):
        self.s = settings
        self.socks = socks              # [(socket, description, owned)]: cli.py
        # None: every worker serves every socket; else (--reuse-port)
        # slots[i] are the sockets of worker slot i, one per address.
        self.slots = slots
        self.pid_file = pid_file
        self.workers = {}               # pid -> Worker
        self.count = settings.workers   # wanted
        self.gen = 1                    # the generation being started or serving
        self.last_gen = 1
        self.serving_gen = 0            # the newest generation fully up; 0: none yet
        self.backoff = 0.0
        self.next_spawn = 0.0
        self.stop_deadline = None       # set by SIGTERM/SIGINT
        self.fatal = None               # the error that ends the start-up
        self.saved_signals = {}

    # ---- set-up -------------------------------------------------------

    def _install_signals(self):
        '''Signals are read as bytes from a self-pipe, in the main loop. A
        signal whose handler was set from C (getsignal() is None: a
        debugging toggle of libgreen.so, say) is left alone: Python could
        not give it back to the workers.'''
        self.wake_r, self.wake_w = _os.pipe()
        _os.set_blocking(self.wake_r, False)
        _os.set_blocking(self.wake_w, False)
        _signal.set_wakeup_fd(self.wake_w)
        for sig in MASTER_SIGNALS:
            if _signal.getsignal(sig) is not None:
                self.saved_signals[sig] = _signal.signal(sig, lambda signum, frame: None)

    def _spawn(self, slot):
        r, w = _os.pipe()
        first = self.serving_gen == 0
        master = _os.getpid()
        socks = self.socks
        if self.slots is not None:
            socks = [x for x in self.socks if x[0] in self.slots[slot]]
        pid = _os.fork()
        if pid == 0:
            _signal.set_wakeup_fd(-1)  # before its fd closes
            for fd in [r, self.wake_r, self.wake_w] + [x.pipe for x in self.workers.values()]:
                _os.close(fd)
            # The other slots' sockets are not this worker's to hold (the
            # master keeps them; only the child's copies close).
            for x in self.socks:
                if x not in socks:
                    x[0].close()
            _run_worker(self.s, socks, w, self.saved_signals, master)
        _os.close(w)
        _os.set_blocking(r, False)
        self.workers[pid] = Worker(pid, self.gen, slot, r, first)

    def _stop_worker(self, w, sig=_signal.SIGTERM, grace=None):
        if w.stopping and sig == _signal.SIGTERM:
            return
        w.stopping = True
        if grace is None:
            grace = self.s.graceful_timeout + KILL_MARGIN
        w.kill_at = _time.monotonic() + grace
        w.signal(sig)

    # ---- events ------------------------------------------------------

    def _on_signal(self, sig):
        if sig in (_signal.SIGTERM, _signal.SIGINT):
            if self.stop_deadline is None:
                self._begin_stop()
            else:
                log('second %s: stopping at once' % _signal.Signals(sig).name)
                self._kill_all()
        elif sig == _signal.SIGQUIT:
            log('SIGQUIT: stopping at once')
            self._begin_stop()
            self._kill_all()
        elif self.stop_deadline is not None or self.fatal:
            return
        elif sig == _signal.SIGHUP:
            self.last_gen += 1
            self.gen = self.last_gen
            log('SIGHUP: reloading: starting %d new worker(s)' % self.count)
            sd_notify(self.s.notify_socket, 'RELOADING=1')
        elif sig in (_signal.SIGTTIN, _signal.SIGTTOU) and self.slots is not None:
            log('%s ignored: with --reuse-port the master bound one socket per '
                'worker at start, so the number of workers stays %d (restart '
                'with another --workers to change it)'
                % (_signal.Signals(sig).name, self.count))
        elif sig == _signal.SIGTTIN:
            self.count += 1
            log('SIGTTIN: %d worker(s)' % self.count)
        elif sig == _signal.SIGTTOU:
            if self.count > 1:
                self.count -= 1
            log('SIGTTOU: %d worker(s)' % self.count)
        elif sig in FORWARDED_SIGNALS:
            for w in self.workers.values():
                w.signal(sig)

    def _begin_stop(self):
        sd_notify(self.s.notify_socket, 'STOPPING=1')
        self.stop_deadline = _time.monotonic() + self.s.graceful_timeout + KILL_MARGIN
        if self.workers and not self.fatal:
            log('stopping: %d worker(s) finish their requests (up to %g s)'
                % (len(self.workers), self.s.graceful_timeout))
        for w in self.workers.values():
            self._stop_worker(w)
        # New connections are refused once the workers closed theirs too.
        for sock, _, _ in self.socks:
            sock.close()

    @staticmethod
    def _kill(w):
        w.stopping, w.kill_at = True, None
        w.signal(_signal.SIGKILL)

    def _kill_all(self):
        for w in self.workers.values():
            self._kill(w)

    def _reaped(self, w, status):
        'Worker w ended with wait status status.'
        w.read()
        _os.close(w.pipe)
        now = _time.monotonic()
        if w.stopping:
            if w.error and not self.fatal:
                log('worker %d: %s' % (w.pid, w.error))
            return
        code = _os.waitstatus_to_exitcode(status)
        why = w.error or 'worker %d %s before it could serve' % (w.pid, _status_text(status))
        if w.first_boot and (not w.ready or code == BOOT_ERROR):
            if self.fatal is None:
                self.fatal = why
                self._begin_stop()
            return
        if w.gen != self.gen:  # of a generation on its way out: not replaced
            log('worker %d %s' % (w.pid, _status_text(status)))
            return
        if self.gen != self.serving_gen and (not w.ready or code == BOOT_ERROR):
            log('reload failed: %s; the old workers keep serving' % why)
            self.gen = self.serving_gen
            sd_notify(self.s.notify_socket, 'READY=1')
            return
        if code == 0 and w.ready:
            log('worker %d exited (max_requests reached); starting another' % w.pid)
            return
        lived = now - w.started
        if lived < QUICK_DEATH or code == BOOT_ERROR or not w.ready:
            self.backoff = min(max(self.backoff * 2, 0.5), BACKOFF_MAX)
        else:
            self.backoff = 0.0
        self.next_spawn = now + self.backoff
        log('%s; %s' % (w.error or 'worker %d %s' % (w.pid, _status_text(status)),
                        'restarting it in %g s' % self.backoff if self.backoff
                        else 'restarting it'))

    def _reap(self):
        while self.workers:
            try:
                pid, status = _os.waitpid(-1, _os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is not None:
                self._reaped(w, status)

    # ---- keeping the wanted workers --------------------------------------

    def _maintain(self):
        now = _time.monotonic()
        current = [w for w in self.workers.values() if w.gen == self.gen and not w.stopping]
        if len(current) < self.count and now >= self.next_spawn:
            # The lowest free slots: with --reuse-port a replacement takes
            # over its predecessor's socket (and the new generation of a
            # reload one socket each).
            taken = {w.slot for w in current}
            free = [i for i in range(len(current) + self.count) if i not in taken]
            for slot in free[:self.count - len(current)]:
                self._spawn(slot)
            current = [w for w in self.workers.values()
                       if w.gen == self.gen and not w.stopping]
        for w in sorted(current, key=lambda w: w.started)[:max(0, len(current) - self.count)]:
            self._stop_worker(w)
        if self.gen != self.serving_gen and len(current) >= self.count and \
                all(w.ready for w in current):
            if self.serving_gen:
                log('reloaded: worker(s) %s serve; the old ones finish their '
                    'requests' % ', '.join(str(w.pid) for w in current))
            else:
                self._banner()
            self.serving_gen = self.gen
            sd_notify(self.s.notify_socket, 'READY=1')
        # Older generations go once the newest serves; one that never
        # served (a reload overtaken by another, or failed) goes now.
        for w in list(self.workers.values()):
            if w.gen != self.gen and (w.gen != self.serving_gen or
                                      self.serving_gen == self.gen):
                self._stop_worker(w)

    def _check_timeouts(self):
        now, limit = _time.monotonic(), self.s.timeout
        for w in list(self.workers.values()):
            if w.stopping:
                if w.kill_at is not None and now >= w.kill_at:
                    log('worker %d did not stop in time: killing it' % w.pid)
                    w.kill_at = None
                    w.signal(_signal.SIGKILL)
            elif limit > 0 and (not w.ready or self.s.heartbeat) and now - w.seen > limit:
                if w.first_boot and not w.ready:
                    if self.fatal is None:
                        self.fatal = ('worker %d did not start within --timeout %g s '
                                      '(does loading the app take longer? raise '
                                      '--timeout)' % (w.pid, limit))
                        self._begin_stop()
                    self._kill(w)
                    continue
                log('worker %d %s for %g s: aborting it (SIGABRT, then SIGKILL)'
                    % (w.pid, 'sent no heartbeat' if w.ready else 'did not start',
                       limit))
                self._stop_worker(w, _signal.SIGABRT, ABORT_GRACE)

    def _wait(self):
        'Waits for a signal, a pipe or the next deadline (at most 1 s).'
        now, wake = _time.monotonic(), 1.0
        if self.next_spawn > now:
            wake = min(wake, self.next_spawn - now)
        pipes = {w.pipe: w for w in self.workers.values() if not w.eof}
        try:
            ready, _, _ = _select.select([self.wake_r] + list(pipes), [], [], max(wake, 0.01))
        except InterruptedError:
            return []
        for fd in ready:
            if fd in pipes:
                pipes[fd].read()
        if self.wake_r not in ready:
            return []
        try:
            return list(_os.read(self.wake_r, 256))
        except BlockingIOError:
            return []

    # ---- the run ----------------------------------------------------------

    def _banner(self):
        '''Once the first workers serve (before, the only line a failed
        start prints is its error).'''
        where = []
        for _, desc, _ in self.socks:
            if desc not in where:
                where.append(desc)
        log('master: %d worker(s) serve %s on %s%s; heartbeat timeout %s' % (
            self.count, self.s.app, ', '.join(where),
            ' (SO_REUSEPORT: a socket per worker)' if self.slots else '',
            '%g s' % self.s.timeout if self.s.timeout > 0 else 'off'))
        if self.s.timeout_given and self.s.timeout > 0 and not self.s.heartbeat:
            log('warning: this libgreen.wsgi.server has no heartbeat option: '
                '--timeout only bounds the start of a worker')

    def _cleanup(self):
        for sock, _, owned in self.socks:
            sock.close()
            try:
                if owned and _os.stat(owned[0]).st_ino == owned[1]:
                    _os.unlink(owned[0])
            except OSError:
                pass  # gone, or not ours to remove
        if self.pid_file:
            try:
                _os.unlink(self.pid_file)
            except OSError as e:
                log('could not remove the pid file %s: %s' % (self.pid_file,
                                                              e.strerror))

    def run(self):
        'Runs until stopped; returns the exit status.'
        self._install_signals()
        try:
            while True:
                self._reap()
                if self.stop_deadline is not None:
                    if not self.workers:
                        break
                    if _time.monotonic() > self.stop_deadline:
                        log('%d worker(s) did not stop in time: killing them'
                            % len(self.workers))
                        self._kill_all()
                        self.stop_deadline = float('inf')
                else:
                    self._maintain()
                self._check_timeouts()
                for sig in self._wait():
                    self._on_signal(sig)
        finally:
            self._cleanup()
        if self.fatal:
            _sys.stderr.write('libgreen: error: %s\n' % self.fatal)
            return 2
        log('master exiting')
        return 0
