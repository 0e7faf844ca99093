"""tests/integration/test_signals_green.py - the main thread under libgreen
(docs/DESIGN.md, "The main thread under libgreen").

While the main program waits in libgreen.spawn(fn).wait(), fn's green
thread is the main thread to Python: signal.signal() works in it, a
signal whose handler raises interrupts its blocking calls (EINTR, then
PEP 475) and the exception comes out of the call in fn, and
_thread.interrupt_main() raises KeyboardInterrupt there. Requests of the
WSGI server are never the main thread.

Each program runs under the preload and prints one JSON line.
"""
import json
import subprocess
import textwrap

import pytest

from conftest import PYTHON, SO, child_env

pytestmark = pytest.mark.skipif(not SO.is_file(), reason=f"{SO} not built")

PRELUDE = '''
import json, os, signal, socket, sys, threading, time, _thread
import libgreen

class Alarm(Exception):
    pass

def raise_alarm(signum, frame):
    raise Alarm

def in_main_green(fn):
    """fn() run as the main program's continuation; its result."""
    return libgreen.spawn(fn).wait()
'''


def run(code, timeout=30, helpers=""):
    proc = subprocess.run([PYTHON, "-c", PRELUDE + helpers + textwrap.dedent(code)],
                          env=child_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_signal_signal_works_and_green_thread_is_main():
    out = run('''
        def fn():
            old = signal.signal(signal.SIGUSR1, lambda s, f: None)
            return {"main": threading.current_thread() is threading.main_thread(),
                    "old_default": old is signal.SIG_DFL,
                    "ident": threading.get_ident()}
        r = in_main_green(fn)
        r["main_ident"] = threading.main_thread().ident
        r["after"] = threading.current_thread() is threading.main_thread()
        print(json.dumps(r))
    ''')
    assert out["main"] and out["old_default"] and out["after"]
    assert out["ident"] == out["main_ident"]


def test_spawned_by_main_green_is_not_main():
    out = run('''
        def inner():
            return threading.current_thread() is threading.main_thread()
        def fn():
            return {"inner": libgreen.spawn(inner).wait(),
                    "outer": threading.current_thread() is threading.main_thread()}
        print(json.dumps(in_main_green(fn)))
    ''')
    assert out == {"inner": False, "outer": True}


@pytest.mark.parametrize("call", ["recv", "sleep", "lock"])
def test_alarm_raising_handler_interrupts_blocking_call(call):
    out = run('''
        def fn():
            signal.signal(signal.SIGALRM, raise_alarm)
            a, b = socket.socketpair()
            lock = threading.Lock()
            lock.acquire()
            block = {"recv": lambda: a.recv(10), "sleep": lambda: time.sleep(10),
                     "lock": lock.acquire}[%r]
            t0 = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            try:
                block()
                return {"raised": False}
            except Alarm:
                return {"raised": True, "took": time.monotonic() - t0}
        print(json.dumps(in_main_green(fn)))
    ''' % call)
    assert out["raised"], out
    assert out["took"] < 2.0


def test_interrupt_main_from_another_os_thread():
    # As in a plain process, interrupt_main() sends no signal: the
    # KeyboardInterrupt comes at the next bytecode, not out of a sleep.
    out = run('''
        def fn():
            threading.Timer(0.2, _thread.interrupt_main).start()
            t0 = time.monotonic()
            try:
                for _ in range(200):
                    time.sleep(0.05)
                return {"raised": False}
            except KeyboardInterrupt:
                return {"raised": True, "took": time.monotonic() - t0}
        print(json.dumps(in_main_green(fn)))
    ''')
    assert out["raised"] and out["took"] < 2.0, out


# Python 3.13 flags a signal, and interrupt_main(), on one thread state
# (the runtime's main_tstate) and only code running on it stops for the
# handler: while the main program waits, that must be the green thread's
# (server/maintstate.c), and the main program's again once the wait ends.
# A pure-Python loop makes no call that could end with EINTR, so these
# hold only if the flag reaches the code that runs.

def test_interrupt_main_in_main_green_runs_the_handler_at_once():
    out = run(helpers=BUSY, code='''
        def fn():
            signal.signal(signal.SIGINT, note)
            _thread.interrupt_main()
            return {"ran": busy(10)}
        print(json.dumps(in_main_green(fn)))
    ''')
    assert out["ran"] is not None and out["ran"] < 0.5, out


# The handlers only note that they ran (CPython 3.13 itself may let an
# exception raised by a handler at a loop's first test escape the try).
BUSY = '''
ran = []

def note(signum, frame):
    ran.append(time.monotonic())

def busy(seconds):
    """A pure-Python loop (no blocking call) until a handler ran: the
    seconds it took, or None."""
    t0 = time.monotonic()
    while not ran and time.monotonic() - t0 < seconds:
        pow(12345, 6789, 10000019)
    return ran[0] - t0 if ran else None
'''


def test_handler_runs_in_a_pure_python_loop_of_main_green():
    out = run(helpers=BUSY, code='''
        def fn():
            signal.signal(signal.SIGALRM, note)
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            return {"ran": busy(10)}
        print(json.dumps(in_main_green(fn)))
    ''')
    assert out["ran"] is not None and out["ran"] < 2.0, out


@pytest.mark.parametrize("how", ["finished", "timed_out"])
def test_handler_runs_in_main_program_after_the_wait(how):
    # after the green thread ended, or after a wait that timed out while
    # it still runs, signals are the main program's again
    out = run(helpers=BUSY, code='''
        signal.signal(signal.SIGALRM, note)
        g = libgreen.spawn(time.sleep, 0 if %r == "finished" else 0.5)
        try:
            g.wait(timeout=0.05)
        except TimeoutError:
            pass
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        r = {"ran": busy(10), "dead": g.dead}
        g.wait()
        print(json.dumps(r))
    ''' % how)
    assert out["ran"] is not None and out["ran"] < 2.0, out
    assert out["dead"] == (how == "finished")


def test_python_handler_runs_promptly_while_parked_in_sleep():
    out = run('''
        def fn():
            ran = []
            def handler(signum, frame):
                ran.append(time.monotonic())
                raise Alarm  # ends the sleep so the test need not wait 10 s
            signal.signal(signal.SIGUSR1, handler)
            t0 = time.monotonic()
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            try:
                time.sleep(10)
            except Alarm:
                pass
            return {"latency": ran[0] - t0 - 0.1 if ran else None}
        print(json.dumps(in_main_green(fn)))
    ''')
    assert out["latency"] is not None and out["latency"] < 0.5, out


def test_handler_not_raising_lets_sleep_continue():
    out = run('''
        def fn():
            ran = []
            signal.signal(signal.SIGUSR1, lambda s, f: ran.append(time.monotonic()))
            t0 = time.monotonic()
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            time.sleep(0.6)
            return {"ran_at": ran[0] - t0 if ran else None,
                    "slept": time.monotonic() - t0}
        print(json.dumps(in_main_green(fn)))
    ''')
    assert out["ran_at"] is not None and out["ran_at"] < 0.5, out
    assert out["slept"] >= 0.6  # PEP 475: the sleep goes on after the handler


APP = r'''
import signal, threading

def app(environ, start_response):
    try:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        allowed = "yes"
    except ValueError:
        allowed = "no"
    main = threading.current_thread() is threading.main_thread()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("main=%s signal=%s" % (main, allowed)).encode()]
'''


def test_requests_are_never_the_main_thread(server):
    srv = server(APP)
    status, _, body = srv.request("GET", "/")
    assert status == 200
    assert body == b"main=False signal=no"


def test_wait_for_a_running_green_thread_keeps_signals_in_main():
    # g ran (and used its identity) before the wait: it stays its own
    # thread, so the main program's wait runs the handler, as any wait
    out = run('''
        signal.signal(signal.SIGALRM, raise_alarm)
        def fn():
            ident = threading.get_ident()
            for _ in range(20):
                time.sleep(0.05)
            return ident
        g = libgreen.spawn(fn)
        libgreen.sleep(0.01)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        try:
            g.wait()
            r = {"raised": False}
        except Alarm:
            r = {"raised": True, "took": time.monotonic() - t0}
        r["main_ident_in_g"] = g.wait() == threading.get_ident()
        print(json.dumps(r))
    ''')
    assert out["raised"] and out["took"] < 2.0, out
    assert not out["main_ident_in_g"]
