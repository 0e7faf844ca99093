"""libgreen_command - the `libgreen` console script of the wheel.

It runs the C launcher shipped next to this file (server/launcher.c, the
same `libgreen` command the Debian package and `make install` install),
which puts the libgreen.so next to it in front of LD_PRELOAD and execs
the interpreter. Here the interpreter is this environment's own
(sys.executable, e.g. venv/bin/python3), so the app and its dependencies
installed in the venv are importable; --python PATH or LIBGREEN_PYTHON
still choose another.

Before that it checks what would otherwise fail obscurely after the exec:
libev missing on the host (the dynamic loader would only warn that it
cannot preload libgreen.so), or no server module for this Python version.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _fail(message):
    sys.stderr.write("libgreen: error: %s\n" % message)
    return 2


def _libev_missing():
    import ctypes
    try:
        ctypes.CDLL("libev.so.4")
    except OSError:
        return True
    return False


def _built_for():
    names = sorted(n for n in os.listdir(HERE) if n.startswith("libgreen_py"))
    return ", ".join("%s.%s" % (n[11], n[12:-3]) for n in names) or "none"


def _python_chosen(args):
    """True if the command line or the environment names the interpreter."""
    if os.environ.get("LIBGREEN_PYTHON"):
        return True
    for a in args:
        if a == "--":
            break
        if a == "--python" or a.startswith("--python="):
            return True
    return False


def main():
    launcher = os.path.join(HERE, "libgreen")
    args = sys.argv[1:]
    if _libev_missing():
        return _fail("libev is not installed on this machine (libgreen.so needs "
                     "libev.so.4): install it, e.g. `apt-get install libev4` on "
                     "Debian or Ubuntu, `dnf install libev` on Fedora")
    if not os.access(launcher, os.X_OK):
        return _fail("%s is missing or not executable: reinstall the libgreen "
                     "wheel with pip" % launcher)
    env = dict(os.environ)
    if not _python_chosen(args):
        so = os.path.join(HERE, "libgreen_py%d%d.so" % sys.version_info[:2])
        if not os.path.exists(so):
            return _fail("this libgreen wheel has no server module for Python %d.%d "
                         "(it has: %s): install it into a venv of one of those, or "
                         "give --python PATH" % (sys.version_info[:2] + (_built_for(),)))
        env["LIBGREEN_PYTHON"] = sys.executable
    argv0 = sys.argv[0] or "libgreen"
    try:
        os.execve(launcher, [argv0] + args, env)
    except OSError as e:
        return _fail("cannot run %s: %s" % (launcher, e.strerror or e))
