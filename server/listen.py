# server/listen.py - libgreen.listen(), the one piece of the module that
# is Python: it only configures a socket, which Python says best.
#
# Embedded into libgreen_pyXY.so at build time (the Makefile turns it into
# a C array under build/) and run in the namespace of the `libgreen`
# module at import, so everything defined here is an attribute of
# libgreen. Comments only at the top: a string there would replace the
# module's docstring.
import os as _os, socket as _socket, stat as _stat


def listen(address, backlog=1024, reuse_port=False):
    '''A listening socket for libgreen.wsgi.server().

    address is (host, port) - IPv4 or IPv6, port 0 picks a free port -
    or a filesystem path for a Unix socket (a stale socket file left
    there by an earlier run is removed; any other file is an error).
    reuse_port=True sets SO_REUSEPORT before binding, so several such
    sockets of the same user can listen on one TCP address and the
    kernel spreads new connections over them (TCP only).'''
    if isinstance(address, (str, bytes, _os.PathLike)):
        if reuse_port:
            raise ValueError('reuse_port applies to TCP addresses, not to a '
                             'Unix socket path')
        path = _os.fspath(address)
        try:
            if _stat.S_ISSOCK(_os.stat(path).st_mode):
                _os.unlink(path)
        except FileNotFoundError:
            pass
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock
    try:
        host, port = address
    except (TypeError, ValueError):
        raise TypeError('address must be (host, port) or a Unix socket '
                        'path, not %r' % (address,)) from None
    family = _socket.AF_INET6 if ':' in host else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
