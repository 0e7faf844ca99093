"""libgreen.spawn / GreenThread.wait / libgreen.sleep from Python."""

import subprocess
import textwrap

from conftest import PYTHON, child_env


def run(tmp_path, source, timeout=30):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    r = subprocess.run([PYTHON, str(script)], env=child_env(), cwd=tmp_path,
                       capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def check(tmp_path, source):
    rc, out, err = run(tmp_path, source)
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    return out, err


def test_spawn_returns_handle_and_wait_returns_value(tmp_path):
    out, _ = check(tmp_path, '''
        import libgreen
        def add(a, b, scale=1):
            return (a + b) * scale
        g = libgreen.spawn(add, 2, 3, scale=10)
        print(type(g).__name__, g.dead)
        print(g.wait())
        print(g.dead, g.wait())  # waiting again gives the value again
    ''')
    assert out.split("\n")[:3] == ["GreenThread False", "50", "True 50"]


def test_wait_reraises_exception(tmp_path):
    out, err = check(tmp_path, '''
        import libgreen
        class Custom(Exception):
            pass
        def fail():
            raise Custom("from the green thread")
        g = libgreen.spawn(fail)
        try:
            g.wait()
        except Custom as e:
            print("caught", e)
            print("tb", e.__traceback__ is not None)
        else:
            print("not raised")
    ''')
    assert out.split("\n")[:2] == ["caught from the green thread", "tb True"]
    assert "exception in a green thread" in err


def test_wait_timeout(tmp_path):
    out, _ = check(tmp_path, '''
        import libgreen, time
        g = libgreen.spawn(time.sleep, 0.5)
        t0 = time.monotonic()
        try:
            g.wait(timeout=0.1)
        except TimeoutError:
            print("timeout", round(time.monotonic() - t0, 1))
        print("dead", g.dead)
        print("value", g.wait())
        print("total<1", time.monotonic() - t0 < 1)
    ''')
    assert out.split("\n")[:4] == ["timeout 0.1", "dead False", "value None",
                                   "total<1 True"]


def test_sleep_in_main_runs_green_threads(tmp_path):
    out, _ = check(tmp_path, '''
        import libgreen, time
        done = []
        def worker(i):
            time.sleep(0.1)         # a blocking call: parks this green thread
            done.append(i)
        gs = [libgreen.spawn(worker, i) for i in range(50)]
        t0 = time.monotonic()
        libgreen.sleep(0.4)
        print(len(done), time.monotonic() - t0 < 1)
        print(all(g.dead for g in gs))
    ''')
    assert out.split("\n")[:2] == ["50 True", "True"]


def test_green_threads_overlap(tmp_path):
    out, _ = check(tmp_path, '''
        import libgreen, time
        t0 = time.monotonic()
        gs = [libgreen.spawn(time.sleep, 0.3) for _ in range(100)]
        for g in gs:
            g.wait()
        print(time.monotonic() - t0 < 1.5)
    ''')
    assert out.strip() == "True"


def test_spawn_and_wait_inside_green_thread(tmp_path):
    out, _ = check(tmp_path, '''
        import libgreen, time
        def child(x):
            time.sleep(0.05)
            return x * 2
        def parent():
            kids = [libgreen.spawn(child, i) for i in range(5)]
            try:
                libgreen.spawn(time.sleep, 1).wait(timeout=0.05)
            except TimeoutError:
                pass
            return [k.wait() for k in kids]
        print(libgreen.spawn(parent).wait())
    ''')
    assert out.strip() == "[0, 2, 4, 6, 8]"


def test_sleep_rejects_negative(tmp_path):
    out, _ = check(tmp_path, '''
        import libgreen
        try:
            libgreen.sleep(-1)
        except ValueError:
            print("ValueError")
    ''')
    assert out.strip() == "ValueError"


def test_spawn_from_a_request(server):
    srv = server(r'''
import libgreen, time

def app(environ, start_response):
    gs = [libgreen.spawn(lambda i: (time.sleep(0.1), i * i)[1], i) for i in range(10)]
    t0 = time.monotonic()
    out = [g.wait() for g in gs]
    start_response("200 OK", [])
    return [("%r %s" % (out, time.monotonic() - t0 < 0.5)).encode()]
''')
    status, _, body = srv.request()
    assert (status, body) == (200, b"[0, 1, 4, 9, 16, 25, 36, 49, 64, 81] True")


def test_threading_first_imported_in_green_thread_exits(tmp_path):
    """`threading` imported for the first time inside a green thread makes
    that thread threading's main thread; the process must still exit."""
    script = tmp_path / "first_import.py"
    script.write_text(textwrap.dedent('''
        import sys
        assert "threading" not in sys.modules, "imported too early"
        import libgreen
        def first():
            import threading
            return threading.main_thread().name
        print(libgreen.spawn(first).wait(), flush=True)
    '''))
    r = subprocess.run([PYTHON, "-S", str(script)], env=child_env(), cwd=tmp_path,
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.strip() == b"MainThread"


def test_threading_first_imported_in_request_exits(server):
    srv = server(r'''
def app(environ, start_response):
    import threading
    threading.current_thread()
    start_response("200 OK", [])
    return [b"imported"]
''', python_args=("-S",))
    assert srv.request()[2] == b"imported"
    assert srv.stop(timeout=8) == 0
    assert srv.stdout.strip() == "returned"
