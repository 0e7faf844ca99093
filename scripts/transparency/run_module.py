"""scripts/transparency/run_module.py - run one CPython test module and
record every test's verdict, one JSON object per line.

usage: python3 run_module.py MODULE OUT.jsonl green|plain

`green` runs the whole unittest run inside one libgreen green thread
(libgreen.spawn(...).wait(): the process must be started with the
preload); `plain` runs it as any program would. A "start" record is
written before each test, so a run that hangs still says where. The
last record is {"event": "end"}; a missing end record means the run
was killed or crashed.
"""
import json
import os
import sys
import time
import unittest

out = None  # the records file, opened by main()


def emit(**rec):
    out.write(json.dumps(rec) + "\n")


class Recorder(unittest.TextTestResult):
    def startTest(self, test):
        emit(event="start", id=test.id(), t=time.monotonic())
        super().startTest(test)

    def _verdict(self, test, verdict, detail=""):
        emit(event="verdict", id=test.id(), verdict=verdict,
             detail=detail[-2000:])

    def addSuccess(self, test):
        super().addSuccess(test)
        self._verdict(test, "ok")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._verdict(test, "FAIL", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        # errors of a class or module fixture have no test id of their own
        tid = test.id() if hasattr(test, "id") else str(test)
        emit(event="verdict", id=tid, verdict="ERROR",
             detail=self._exc_info_to_string(err, test)[-2000:])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._verdict(test, "skipped", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._verdict(test, "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._verdict(test, "unexpected success")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            emit(event="verdict", id=subtest.id(),
                 verdict="FAIL" if failed else "ERROR",
                 detail=self._exc_info_to_string(err, test)[-2000:])


def skipped_here():
    """Test ids (or prefixes) of skip.txt: tests that cannot run on this
    machine at all, in either mode. Each line there says why."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "skip.txt")
    with open(path) as f:
        return [l.split()[0] for l in f if l.strip() and not l.startswith("#")]


def prune(suite, prefixes):
    for t in list(suite):
        if isinstance(t, unittest.TestSuite):
            prune(t, prefixes)
    suite._tests = [t for t in suite._tests if isinstance(t, unittest.TestSuite)
                    or not t.id().startswith(tuple(prefixes))]


def run(module):
    from test import support
    # what regrtest would set: let resource-guarded tests run on loopback
    support.use_resources = ["network", "subprocess", "cpu"]
    suite = unittest.defaultTestLoader.loadTestsFromName("test." + module)
    prune(suite, skipped_here())
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2,
                                     resultclass=Recorder)
    r = runner.run(suite)
    return r.testsRun


def main():
    global out
    module, out_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    out = open(out_path, "w", buffering=1)
    if mode == "green":
        import libgreen
        n = libgreen.spawn(run, module).wait()
    else:
        n = run(module)
    emit(event="end", tests=n)
    out.close()
    sys.stdout.flush()
    sys.exit(0)  # a normal exit: the driver checks that it ends


# Only when run as the program: multiprocessing's spawn and forkserver
# children (test_asyncio, test_concurrent_futures ...) import the main
# module again, and must not start the whole run over (truncating the
# records) inside the child.
if __name__ == "__main__":
    main()
