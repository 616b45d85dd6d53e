#!/usr/bin/env python3
"""run_integration — run tests/integration/test_*.py with the real servers.

usage: python3 tests/run_integration.py [-k SUBSTRING] [-v] [--shuffle SEED] [--slow] [FILE...]

Prints one "ok - NAME" or "not ok - NAME" line per test (TAP-like; details
of a failure follow as '#' lines, with the tails of the servers' logs), then
"# N passed, N failed". Exit status 0 only if nothing failed.

No test may depend on what another left behind: --shuffle SEED runs the
classes, and the tests of each class, in an order drawn from SEED (each
class still starts its ISPs once), to show that they do not.

--slow (or STUBMAIL_SLOW=1) also runs the tests that are skipped otherwise
for their time and disk (a 2 GiB message end to end).

Environment: STUBMAIL_PORT_BASE (default 20000), STUBMAIL_KEEP=1 keeps the
run directories (/tmp/smt-*) for a look at the logs."""

import argparse
import glob
import os
import random
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "integration"))

import sandbox  # noqa: E402


def _comment(text):
    return "\n".join("# " + l for l in str(text).rstrip().splitlines())


class TapResult(unittest.TestResult):
    def __init__(self, verbose=False):
        super().__init__()
        self.verbose = verbose
        self.passed = 0
        self.failed = 0
        self.skipped_n = 0
        self._t0 = {}
        self._diagnosed = set()

    @staticmethod
    def name(test):
        return test.id()

    def startTest(self, test):
        super().startTest(test)
        self._t0[test] = time.monotonic()
        if self.verbose:
            print("# running %s" % self.name(test), flush=True)

    def _elapsed(self, test):
        return time.monotonic() - self._t0.get(test, time.monotonic())

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1
        print("ok - %s (%.1fs)" % (self.name(test), self._elapsed(test)), flush=True)

    def _bad(self, test, err, kind):
        self.failed += 1
        case = getattr(test, "test_case", test)     # a subtest's test
        if case is test:
            print("not ok - %s (%.1fs)" % (self.name(test), self._elapsed(test)), flush=True)
        else:
            print("not ok - %s" % self.name(test), flush=True)
        print(_comment("%s: %s" % (kind, self._exc_info_to_string(err, test))), flush=True)
        diag = getattr(case, "diagnostics", None)
        if case in self._diagnosed:
            return
        self._diagnosed.add(case)
        if callable(diag):
            try:
                print(_comment(diag()), flush=True)
            except Exception as e:
                print("# (no diagnostics: %s)" % e, flush=True)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._bad(test, err, "FAIL")

    def addError(self, test, err):
        super().addError(test, err)
        # errors in setUpClass arrive with a _ErrorHolder "test"
        self._bad(test, err, "ERROR")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "FAIL" if issubclass(err[0], test.failureException) else "ERROR"
            self._bad(subtest, err, kind)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skipped_n += 1
        print("ok - %s # SKIP %s" % (self.name(test), reason), flush=True)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.passed += 1
        print("ok - %s # TODO expected failure" % self.name(test), flush=True)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.failed += 1
        print("not ok - %s # unexpected success" % self.name(test), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", dest="pattern", help="only tests whose name contains this")
    ap.add_argument("-v", action="store_true", help="say which test starts")
    ap.add_argument("--shuffle", metavar="SEED", type=int,
                    help="run classes and tests in an order drawn from SEED")
    ap.add_argument("--slow", action="store_true",
                    help="also the slow tests (a 2 GiB message end to end)")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    if args.slow:
        os.environ["STUBMAIL_SLOW"] = "1"

    if os.geteuid() != 0:
        print("not ok - run_integration # must run as root (real servers)")
        print("# 0 passed, 1 failed")
        return 1
    sandbox.install_signal_handlers()
    files = args.files or sorted(glob.glob(os.path.join(HERE, "integration", "test_*.py")))
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for f in files:
        mod = os.path.splitext(os.path.basename(f))[0]
        try:
            tests = loader.loadTestsFromName(mod)
        except Exception as e:
            print("not ok - %s # cannot load: %s" % (mod, e), flush=True)
            print("# 0 passed, 1 failed")
            return 1
        if args.pattern:
            tests = _filter(tests, args.pattern)
        suite.addTests(tests)
    if args.shuffle is not None:
        print("# shuffled with seed %d" % args.shuffle, flush=True)
        suite = _shuffle(suite, random.Random(args.shuffle))
    result = TapResult(verbose=args.v)
    t0 = time.monotonic()
    try:
        suite.run(result)
    except KeyboardInterrupt:
        print("# interrupted", flush=True)
        result.failed += 1
    finally:
        sandbox.stop_all_live()
    print("# %d passed, %d failed%s in %.0fs"
          % (result.passed, result.failed,
             ", %d skipped" % result.skipped_n if result.skipped_n else "",
             time.monotonic() - t0), flush=True)
    return 0 if result.failed == 0 else 1


def _cases(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _cases(t)
        else:
            yield t


def _shuffle(suite, rng):
    """The tests of suite with the classes, and the tests within each
    class, in a random order; a class's tests stay together, so that its
    sandbox starts once."""
    by_class = {}
    for t in _cases(suite):
        by_class.setdefault(type(t), []).append(t)
    classes = list(by_class)
    rng.shuffle(classes)
    out = unittest.TestSuite()
    for c in classes:
        rng.shuffle(by_class[c])
        out.addTests(by_class[c])
    return out


def _filter(suite, pattern):
    out = unittest.TestSuite()
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            out.addTests(_filter(t, pattern))
        elif pattern in t.id():
            out.addTest(t)
    return out


if __name__ == "__main__":
    sys.exit(main())
