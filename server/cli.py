# server/cli.py - the `libgreen` command: its flags (its own, and one per
# option of libgreen.wsgi.server, from libgreen.wsgi.options()), each
# also read from the environment; the listening sockets (--bind, or
# systemd's; with --reuse-port one SO_REUSEPORT socket per worker and
# address); root and the privilege drop. Then the master of
# server/workers.py runs the workers.
#
# Embedded into libgreen_pyXY.so like listen.py, but compiled only when
# the command runs (libgreen._cli_main, called by the C launcher
# server/launcher.c), so `import libgreen` never pays for argparse.
# Every mistake a user can make ends as one line on stderr and exit
# status 2 (UsageError). Comments only at the top: a string there would
# become the module's docstring.
import argparse as _argparse, os as _os, shlex as _shlex, socket as _socket
import sys as _sys
from types import SimpleNamespace as _SimpleNamespace

import libgreen as _libgreen
from libgreen import workers as _workers

PROG = 'libgreen'
DEFAULT_BIND = '127.0.0.1:8000'
DEFAULT_PORT = 8000
TRUE_WORDS = ('1', 'true', 'yes', 'on')
FALSE_WORDS = ('0', 'false', 'no', 'off')


class UsageError(Exception):
    'A mistake in the command line, environment or set-up: one line, exit 2.'


class _Parser(_argparse.ArgumentParser):
    def error(self, message):
        raise UsageError('%s (see %s --help)' % (message, PROG))


# ---- values ---------------------------------------------------------------

def _bool(text):
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError('not a yes/no value (use 1/0, true/false, yes/no, on/off)')


def _number(text, integer):
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise ValueError('not %s' % ('an integer' if integer else 'a number')) from None


def _key_values(items):
    'KEY=VALUE strings -> dict.'
    out = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ValueError('%r is not KEY=VALUE' % (item,))
        out[key] = value
    return out


def _option_value(opt, raw):
    '''The Python value for server option opt (a dict of options()) from
    the command line or environment (raw: a str, a list for a dict
    option, a bool for a bool option given as a flag). Raises ValueError
    with what is wrong.'''
    kind, default = opt['kind'], opt['default']
    if isinstance(raw, bool) or kind == 'dict':
        value = raw if isinstance(raw, bool) else _key_values(raw)
    elif kind == 'bool':
        value = _bool(raw)
    elif kind == 'bool_or_seconds':
        word = raw.strip().lower()
        value = _bool(word) if word in TRUE_WORDS + FALSE_WORDS else _number(word, False)
    elif kind in ('size_or_none', 'timeout') and raw.strip().lower() == 'none':
        value = None
    elif kind in ('size', 'size_or_none'):
        value = _number(raw, True)
    elif kind in ('seconds', 'timeout'):
        value = _number(raw, False)
    elif isinstance(default, bool):  # a kind added after this file: by its default
        value = _bool(raw)
    elif isinstance(default, (int, float)):
        value = _number(raw, isinstance(default, int))
    else:
        value = raw
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = opt.get('min'), opt.get('max')
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError('out of range')
    return value


# ---- the flags ------------------------------------------------------------

# The command's own flags: (flags, dest, env, metavar or None for a
# switch, repeatable, help).
OWN_FLAGS = (
    (('-b', '--bind'), 'bind', 'LIBGREEN_BIND', 'ADDRESS', True,
     'where to listen: HOST:PORT, [IPv6]:PORT or unix:PATH; repeat it for '
     'several (default: %s). LIBGREEN_BIND takes several, separated by '
     'spaces. Ignored when systemd passes sockets (LISTEN_FDS)' % DEFAULT_BIND),
    (('-w', '--workers'), 'workers', 'LIBGREEN_WORKERS', 'N', False,
     'worker processes, each serving the app on every socket (default: 1; '
     'see --reuse-port); SIGTTIN/SIGTTOU add/remove one'),
    (('--reuse-port',), 'reuse_port', 'LIBGREEN_REUSE_PORT', None, False,
     'with --workers N: bind N sockets to each --bind address with '
     'SO_REUSEPORT, one per worker, so the kernel spreads new connections '
     'over the workers by a hash instead of the first worker awake taking '
     'them; the master keeps the sockets, so a replaced or reloaded worker '
     'takes over its socket and what waits in its queue. The number of '
     'workers is then fixed (SIGTTIN/SIGTTOU are ignored); with one worker '
     'it changes nothing. TCP only: an error with unix: addresses or '
     "systemd's sockets"),
    (('--backlog',), 'backlog', 'LIBGREEN_BACKLOG', 'N', False,
     'connections the kernel queues on each socket before refusing '
     '(default: 1024)'),
    (('-t', '--timeout'), 'timeout', 'LIBGREEN_TIMEOUT', 'SECONDS', False,
     'a worker that shows no sign of life for this long (it did not start, '
     'or a request keeps its event loop from running) is killed and '
     'replaced; 0 = never (default: 30)'),
    (('-u', '--user'), 'user', 'LIBGREEN_USER', 'USER', False,
     'run the workers and the master as USER (name or uid) once the '
     'sockets are bound; required when started as root'),
    (('-g', '--group'), 'group', 'LIBGREEN_GROUP', 'GROUP', False,
     "with --user: the group (name or gid); default: USER's group"),
    (('--allow-root',), 'allow_root', 'LIBGREEN_ALLOW_ROOT', None, False,
     'let the app run as root (in a container whose root is intended); '
     'without it libgreen refuses to start as root unless --user is given'),
    (('--python',), 'python', 'LIBGREEN_PYTHON', 'PATH', False,
     'the Python interpreter to run the app with (default: /usr/bin/python3; '
     'any 3.10-3.13 libgreen was built for)'),
    (('--chdir',), 'chdir', 'LIBGREEN_CHDIR', 'DIR', False,
     'change to DIR before binding and loading the app (the app module is '
     'looked for there first)'),
    (('-e', '--env'), 'env', 'LIBGREEN_ENV', 'KEY=VALUE', True,
     "set an environment variable for the app; repeat it for several "
     "(LIBGREEN_ENV: several, separated by spaces, shell-quoted)"),
    (('-p', '--pid'), 'pid', 'LIBGREEN_PID', 'FILE', False,
     "write the master's PID to FILE (as the --user, after binding); "
     'removed at exit'),
)

EPILOG = '''\
APP is MODULE:NAME (a WSGI callable), MODULE:FACTORY() or
MODULE:FACTORY(ARGS) (called once per worker; ARGS are Python literals),
or MODULE alone for MODULE:application. MODULE is imported by each worker
from the current directory (see --chdir) or PYTHONPATH, never by the
master. LIBGREEN_APP gives APP from the environment.

Every flag can also come from the environment variable named in its help;
a flag on the command line wins. Yes/no values: 1/0, true/false, yes/no,
on/off.

Signals to the master:
  TERM, INT   graceful stop: workers finish their requests (up to
              --graceful-timeout), then the master exits 0; a second one
              stops at once
  QUIT        stop at once (workers are killed)
  HUP         reload: start new workers (the app imported afresh), then
              stop the old ones gracefully once the new ones serve
  TTIN, TTOU  one worker more / one fewer (ignored with --reuse-port)
  USR1, USR2  passed on to every worker

Exit status: 0 after a stop, 2 for a usage or start-up error (one line on
stderr: a bad flag, an app that cannot be loaded, an address in use).
'''


def _help_text(text):
    return text.replace('%', '%%')


def _server_options():
    'The options of libgreen.wsgi.server() that have a flag.'
    return [o for o in _libgreen.wsgi.options() if o.get('flag')]


def _build_parser(server_opts):
    p = _Parser(prog=PROG, usage='%(prog)s [OPTIONS] APP',
                description='Serve a WSGI app with libgreen: green threads '
                'for every request, in one or more worker processes.',
                epilog=EPILOG, formatter_class=_argparse.RawDescriptionHelpFormatter,
                allow_abbrev=False)
    p.add_argument('app', nargs='?', metavar='APP',
                   help='MODULE:NAME or MODULE:FACTORY(ARGS) [LIBGREEN_APP]')
    p.add_argument('--version', action='version',
                   version='%(prog)s ' + _libgreen.__version__,
                   help="print libgreen's version and exit")
    own = p.add_argument_group('the command')
    taken = set()
    for flags, dest, env, metavar, many, text in OWN_FLAGS:
        taken.update(flags)
        text = _help_text('%s [%s]' % (text, env))
        if metavar is None:
            own.add_argument(*flags, dest=dest, action='store_true', default=None,
                             help=text)
        else:
            own.add_argument(*flags, dest=dest, metavar=metavar, help=text,
                             action='append' if many else 'store')
    srv = p.add_argument_group('the server (options of libgreen.wsgi.server)')
    for o in server_opts:
        if o['flag'] in taken:
            continue
        text = '%s (default: %s; allowed: %s)' % (o['help'], o['default_text'],
                                                  o['allowed'])
        if o.get('env'):
            text += ' [%s]' % o['env']
        kw = dict(dest='srv_' + o['name'], help=_help_text(text), default=None)
        if o['kind'] == 'bool':
            kw['action'] = _argparse.BooleanOptionalAction
        elif o['kind'] == 'dict':
            kw.update(action='append', metavar='KEY=VALUE')
        else:
            kw['metavar'] = 'SECONDS' if 'seconds' in o['kind'] or o['kind'] == 'timeout' \
                else 'N' if o['kind'].startswith('size') else 'VALUE'
        srv.add_argument(o['flag'], **kw)
    return p


# ---- the settings: flags, then the environment, then defaults --------------

def _from_env(args, env):
    '''Fills what the command line left unset from the environment;
    args.source[dest] says where each value came from, for messages.'''
    args.source = {}
    for flags, dest, var, metavar, many, _ in OWN_FLAGS:
        raw = env.get(var)
        args.source[dest] = flags[-1] + ' '
        if getattr(args, dest) is not None or raw is None or raw == '':
            continue
        args.source[dest] = var + '='
        if metavar is None:
            try:
                setattr(args, dest, _bool(raw))
            except ValueError as e:
                raise UsageError('%s=%s: %s' % (var, raw, e)) from None
        elif many:
            words = _shlex.split(raw) if dest == 'env' else raw.replace(',', ' ').split()
            setattr(args, dest, words)
        else:
            setattr(args, dest, raw)
    if args.app is None:
        args.app = env.get('LIBGREEN_APP') or None


def _int_setting(text, what, lo, hi=None):
    '''text as an integer from lo to hi; what (a flag and a space, or
    VARIABLE=) names it in the error.'''
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < lo or (hi is not None and value > hi):
        raise UsageError('%s%s: not an integer%s' % (
            what, text, ' >= %d' % lo if hi is None else ' from %d to %d' % (lo, hi)))
    return value


def _server_kwargs(args, server_opts, env):
    '''The keyword arguments for libgreen.wsgi.server(): the options given
    by flag or environment (the others keep the server's defaults).'''
    kw = {}
    for o in server_opts:
        raw, where = getattr(args, 'srv_' + o['name'], None), o['flag']
        if raw is None and o.get('env') and env.get(o['env'], '') != '':
            raw, where = env[o['env']], o['env'] + '='
        if raw is None:
            continue
        try:
            kw[o['name']] = _option_value(o, raw)
        except ValueError as e:
            shown = ' '.join(raw) if isinstance(raw, list) else raw
            raise UsageError('%s%s%s: %s (allowed: %s)' % (
                where, '' if where.endswith('=') else ' ', shown, e,
                o['allowed'])) from None
    return kw


def parse(argv, env=None):
    '''What the command is asked to do, from the command line argv
    (without the program name) and the environment env (default
    os.environ), as a namespace. Raises UsageError.'''
    env = _os.environ if env is None else env
    server_opts = _server_options()
    args = _build_parser(server_opts).parse_args(argv)
    _from_env(args, env)
    if not args.app:
        raise UsageError('no APP given: name it as MODULE:NAME, e.g. '
                         '`%s myapp:app` (see %s --help)' % (PROG, PROG))
    defaults = {o['name']: o['default'] for o in _libgreen.wsgi.options()}
    kw = _server_kwargs(args, server_opts, env)
    graceful = kw.get('graceful_timeout', defaults.get('graceful_timeout', 30))
    try:
        timeout = float(args.timeout) if args.timeout is not None else 30.0
    except ValueError:
        timeout = -1
    if not timeout >= 0:
        raise UsageError('%s%s: not a number of seconds >= 0 (0: no timeout)'
                         % (args.source['timeout'], args.timeout))
    return _SimpleNamespace(
        app=args.app, binds=args.bind or [DEFAULT_BIND],
        bind_given=bool(args.bind),
        workers=_int_setting(args.workers or '1', args.source['workers'], 1, 1024),
        reuse_port=bool(args.reuse_port),
        reuse_port_source=args.source['reuse_port'].rstrip('= '),
        backlog=_int_setting(args.backlog or '1024', args.source['backlog'], 1, 1 << 20),
        timeout=timeout, timeout_given=args.timeout is not None,
        graceful_timeout=float(graceful or 0),
        user=args.user, group=args.group, allow_root=bool(args.allow_root),
        chdir=args.chdir,
        env=_key_value_setting(args.env or [], args.source['env'].rstrip()),
        pid=args.pid, server_kwargs=kw,
        heartbeat='heartbeat' in defaults)


def _key_value_setting(items, what):
    try:
        return _key_values(items)
    except ValueError as e:
        raise UsageError('%s: %s' % (what, e)) from None


# ---- the listening sockets ------------------------------------------------

def parse_bind(text):
    '''--bind text -> a Unix socket path (str) or (host, port). Raises
    UsageError.'''
    if text.startswith('unix:'):
        if not text[5:]:
            raise UsageError('--bind %s: give the socket path, unix:PATH' % text)
        return text[5:]
    if text.startswith('['):
        host, sep, rest = text[1:].partition(']')
        if not sep or (rest and not rest.startswith(':')):
            raise UsageError('--bind %s: write an IPv6 address as [ADDRESS]:PORT'
                             % text)
        port = rest[1:] if rest else str(DEFAULT_PORT)
    else:
        host, sep, port = text.rpartition(':')
        if not sep:
            host, port = text, str(DEFAULT_PORT)
        elif ':' in host:
            raise UsageError('--bind %s: write an IPv6 address in brackets, '
                             '[ADDRESS]:PORT' % text)
    return (host or '0.0.0.0', _int_setting(port, '--bind %s: port ' % text, 0, 65535))


def _describe(address):
    if isinstance(address, str):
        return 'unix:' + address
    host, port = address[:2]
    return ('[%s]:%d' if ':' in host else '%s:%d') % (host, port)


def _listen_error(text, address, e):
    'The UsageError for OSError e while binding --bind text (address).'
    why = e.strerror or str(e)
    if e.errno == 98:  # EADDRINUSE
        why = 'address already in use (another server listens there: ' \
              'stop it, or choose another --bind)'
    elif e.errno == 13 and not isinstance(address, str) and address[1] < 1024:
        why = 'permission denied (ports below 1024 need root; ' \
              'libgreen binds them before dropping to --user)'
    elif isinstance(e, _socket.gaierror):
        why = 'cannot resolve %r (%s)' % (address[0], why)
    return UsageError('cannot listen on %s: %s' % (text, why))


def _listen(text, backlog):
    address = parse_bind(text)
    try:
        return _libgreen.listen(address, backlog)
    except OSError as e:
        raise _listen_error(text, address, e) from None
    except (TypeError, ValueError) as e:
        raise UsageError('cannot listen on %s: %s' % (text, e)) from None


def _listen_per_worker(text, backlog, count):
    '''count sockets on the TCP address of --bind text, each with
    SO_REUSEPORT: one per worker slot (--reuse-port). Raises UsageError.'''
    address = parse_bind(text)
    socks = []
    try:
        # A plain bind first (bound, never listening: it accepts nothing):
        # it fails if anything listens there already, as without
        # --reuse-port. Without it a second libgreen --reuse-port of the
        # same user would silently join this one's group and take a share
        # of its connections. It also turns a name into an address and
        # port 0 into one port.
        with _socket.socket(_socket.AF_INET6 if ':' in address[0] else
                            _socket.AF_INET) as probe:
            probe.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            probe.bind(address)
            address = probe.getsockname()[:2]
        for _ in range(count):
            socks.append(_libgreen.listen(address, backlog, reuse_port=True))
    except OSError as e:
        for sock in socks:
            sock.close()
        raise _listen_error(text, address, e) from None
    return socks


def systemd_sockets(env):
    '''The sockets systemd passed (socket activation), as [(socket, name)],
    or None when it passed none to this process. Consumes LISTEN_PID,
    LISTEN_FDS and LISTEN_FDNAMES, so the app's children do not see them.'''
    count, pid = env.get('LISTEN_FDS'), env.get('LISTEN_PID')
    if not count or pid != str(_os.getpid()):
        return None
    names = env.get('LISTEN_FDNAMES', '').split(':')
    for var in ('LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'):
        env.pop(var, None)
    n = _int_setting(count, 'LISTEN_FDS=', 1, 1024)  # what systemd passed
    socks = []
    for i in range(n):
        fd = 3 + i
        try:
            sock = _socket.socket(fileno=fd)
            listening = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN)
        except OSError as e:
            raise UsageError('LISTEN_FDS=%s: fd %d is not a socket (%s)'
                             % (count, fd, e.strerror or e)) from None
        if sock.type != _socket.SOCK_STREAM or not listening:
            raise UsageError('LISTEN_FDS=%s: fd %d is not a listening stream '
                             'socket (ListenStream= in the .socket unit)' % (count, fd))
        sock.set_inheritable(False)
        socks.append((sock, names[i] if i < len(names) and names[i] else 'fd %d' % fd))
    return socks


def _warn_public(sock):
    try:
        host = sock.getsockname()[0] if sock.family != _socket.AF_UNIX else None
    except OSError:
        return
    if host in ('0.0.0.0', '::'):
        _workers.log('warning: listening on every interface (%s): a reverse '
                     'proxy in front of libgreen can be bypassed by connecting '
                     'to this port directly; behind a proxy bind 127.0.0.1 or a '
                     'unix: socket' % _describe(sock.getsockname()))


def _bind_texts(s):
    'Every --bind address, one by one (LIBGREEN_BIND may use commas).'
    return [one.strip() for text in s.binds for one in text.split(',') if one.strip()]


def _check_reuse_port(s, passed):
    '''--reuse-port needs TCP addresses libgreen binds itself: a clear
    error for systemd's sockets and Unix socket paths, whatever --workers
    says (a setting that works with one worker must not break with two).'''
    flag = s.reuse_port_source
    if passed is not None:
        raise UsageError('%s cannot apply to the %d socket(s) systemd passed '
                         '(LISTEN_FDS): libgreen must bind one SO_REUSEPORT socket '
                         'per worker itself; leave %s out (the workers then share '
                         "systemd's sockets), or drop the .socket unit and use --bind"
                         % (flag, len(passed), flag))
    for text in _bind_texts(s):
        if isinstance(parse_bind(text), str):
            raise UsageError('%s cannot apply to --bind %s: SO_REUSEPORT shares '
                             'TCP addresses only; bind HOST:PORT, or leave %s out '
                             '(the workers then share the Unix socket)'
                             % (flag, text, flag))


def open_sockets(s):
    '''The listening sockets: systemd's, or those of --bind. Returns
    (socks, slots): socks is [(socket, description, owned)], owned being
    (path, inode) of a Unix socket file we made (to remove at exit, if it
    is still ours), or None; slots is None when every worker serves every
    socket or, with --reuse-port and several workers, the sockets of each
    worker slot (slots[i]: worker slot i's socket for each --bind).'''
    passed = systemd_sockets(_os.environ)
    if s.reuse_port:
        _check_reuse_port(s, passed)
    out, slots = [], None
    if passed is not None:
        if s.bind_given:
            _workers.log('warning: --bind is ignored: systemd passed %d socket(s)'
                         % len(passed))
        for sock, name in passed:
            out.append((sock, '%s (systemd socket %s)' % (
                _describe(sock.getsockname()), name), None))
    elif s.reuse_port and s.workers > 1:
        per_bind = [_listen_per_worker(text, s.backlog, s.workers)
                    for text in _bind_texts(s)]
        for socks in per_bind:
            out += [(sock, _describe(sock.getsockname()), None) for sock in socks]
        slots = [[socks[i] for socks in per_bind] for i in range(s.workers)]
    else:
        for text in _bind_texts(s):
            sock = _listen(text, s.backlog)
            owned = None
            if sock.family == _socket.AF_UNIX:
                path = sock.getsockname()
                owned = (path, _os.stat(path).st_ino)
            out.append((sock, _describe(sock.getsockname()), owned))
    for sock in slots[0] if slots else [sock for sock, _, _ in out]:
        _warn_public(sock)
    return out, slots


# ---- root and privileges --------------------------------------------------

ROOT_REFUSAL = ('refusing to run the app as root: give --user USER (libgreen '
                'binds its sockets as root, then runs as USER) or, in a '
                'container where root is intended, --allow-root '
                '(LIBGREEN_ALLOW_ROOT=1)')


def _lookup_user(s):
    'The (name, uid, gid, home) to run as, or None to stay who we are.'
    import grp, pwd
    if not s.user:
        if s.group:
            raise UsageError('--group %s needs --user' % s.group)
        return None
    try:
        pw = pwd.getpwuid(int(s.user)) if s.user.isdigit() else pwd.getpwnam(s.user)
    except (KeyError, OverflowError):
        raise UsageError('--user %s: no such user' % s.user) from None
    gid = pw.pw_gid
    if s.group:
        try:
            gid = grp.getgrgid(int(s.group)).gr_gid if s.group.isdigit() \
                else grp.getgrnam(s.group).gr_gid
        except (KeyError, OverflowError):
            raise UsageError('--group %s: no such group' % s.group) from None
    return pw.pw_name, pw.pw_uid, gid, pw.pw_dir


def check_root(s):
    '''Refuses to go on as root without --user or --allow-root; returns
    the user to become (see _lookup_user). Before anything is bound.'''
    target = _lookup_user(s)
    if target and target[1] == 0 and not s.allow_root:
        raise UsageError(ROOT_REFUSAL)
    if _os.geteuid() == 0 and not target and not s.allow_root:
        raise UsageError(ROOT_REFUSAL)
    if target and _os.geteuid() != 0 and (target[1], target[2]) != (_os.geteuid(), _os.getegid()):
        raise UsageError('--user %s needs root (libgreen runs as uid %d): start '
                         'it as root, or leave --user out' % (s.user, _os.geteuid()))
    return target


def drop_privileges(target, unix_paths):
    '''Becomes target (name, uid, gid, home) for good: groups, gid, uid -
    real, effective and saved - and checks root cannot be regained. The
    Unix sockets we created are given to that user, so it can still
    accept on them and remove them at exit.'''
    name, uid, gid, home = target
    for path in unix_paths:
        _os.chown(path, uid, gid)
    if _os.geteuid() != 0:
        return
    try:
        _os.initgroups(name, gid)
        _os.setresgid(gid, gid, gid)
        _os.setresuid(uid, uid, uid)
    except OSError as e:
        raise UsageError('cannot become user %s (uid %d, gid %d): %s'
                         % (name, uid, gid, e.strerror or e)) from None
    if uid != 0:
        try:
            _os.setuid(0)
        except PermissionError:
            pass
        else:
            raise UsageError('root could be regained after becoming %s: refusing '
                             'to run' % name)
    if _os.getresuid() != (uid, uid, uid) or _os.getresgid() != (gid, gid, gid):
        raise UsageError('the privilege drop to %s did not hold: refusing to run'
                         % name)
    _os.environ.update(HOME=home, USER=name, LOGNAME=name)


# ---- the pid file ---------------------------------------------------------

def write_pid_file(path):
    'Writes our PID to path; refuses when a live libgreen already wrote it.'
    try:
        with open(path) as f:
            old = int(f.read().strip() or 0)
        with open('/proc/%d/cmdline' % old, 'rb') as f:
            running = b'libgreen' in f.read()
    except (OSError, ValueError):
        running = False
    if running and old != _os.getpid():
        raise UsageError('already running as PID %d (pid file %s)' % (old, path))
    try:
        with open(path, 'w') as f:
            f.write('%d\n' % _os.getpid())
    except OSError as e:
        raise UsageError('cannot write the pid file %s: %s (it is written as '
                         'the --user, after binding)' % (path, e.strerror or e)) from None
    return _os.path.abspath(path)


# ---- the command ----------------------------------------------------------

def _prepare(s):
    'chdir, the environment, sockets, privileges, pid file: the master set-up.'
    if s.chdir:
        try:
            _os.chdir(s.chdir)
        except OSError as e:
            raise UsageError('--chdir %s: %s' % (s.chdir, e.strerror or e)) from None
    _os.environ.update(s.env)
    # systemd's notification socket is the master's alone (it says when
    # the workers serve, workers.sd_notify): the app does not inherit it.
    s.notify_socket = _os.environ.pop('NOTIFY_SOCKET', None)
    target = check_root(s)
    socks, slots = open_sockets(s)
    unix = [owned[0] for _, _, owned in socks if owned]
    if target:
        drop_privileges(target, unix)
    pid_file = write_pid_file(s.pid) if s.pid else None
    return socks, slots, pid_file


def main(argv=None):
    '''Runs the command: argv defaults to sys.argv as the launcher leaves
    it (['-c', program, args...]). Returns the exit status.'''
    if argv is None:
        argv = _sys.argv[2:]
        _sys.argv = [_sys.argv[1] if len(_sys.argv) > 1 else PROG] + argv
    try:
        s = parse(argv)
        socks, slots, pid_file = _prepare(s)
    except UsageError as e:
        _sys.stderr.write('%s: error: %s\n' % (PROG, e))
        return 2
    if _os.getcwd() not in _sys.path:
        _sys.path.insert(0, _os.getcwd())
    return _workers.Master(s, socks, pid_file, slots).run()
