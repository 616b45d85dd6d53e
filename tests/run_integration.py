#!/usr/bin/env python3
"""run_integration — run tests/integration/test_*.py with the real servers.

usage: python3 tests/run_integration.py [-k SUBSTRING] [-v] [-j N] [--shuffle SEED]
                                        [--slow] [--record FILE] [FILE...]

Prints one "ok - NAME" or "not ok - NAME" line per test (TAP-like; details
of a failure follow as '#' lines, with the tails of the servers' logs), then
"# N passed, N failed". Exit status 0 only if nothing failed.

The classes run in N worker processes at once (-j N, default the number
of cores), each class in a process of its own with its own sandbox; worker
i (from 0) takes ports from STUBMAIL_PORT_BASE + i * 1000. The longest
classes start first (tests/integration/class-seconds). A class's lines are
printed together when it ends, followed by "# CLASS: N passed, N failed in
Ns (worker i, port base B)"; "# start CLASS" says when each began.

No test may depend on what another left behind: --shuffle SEED runs the
classes, and the tests of each class, in an order drawn from SEED (each
class still starts its ISPs once), to show that they do not.

--slow (or STUBMAIL_SLOW=1) also runs the tests that are skipped otherwise
for their time and disk (a 2 GiB message end to end).

--record FILE writes each class's seconds in this run into FILE (merged
with what it lists already): tests/integration/class-seconds to refresh it.

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

import class_pool  # noqa: E402
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
    ap.add_argument("-j", dest="jobs", type=int, metavar="N",
                    help="classes run at once, in N worker processes (default: the cores)")
    ap.add_argument("--shuffle", metavar="SEED", type=int,
                    help="run classes and tests in an order drawn from SEED")
    ap.add_argument("--slow", action="store_true",
                    help="also the slow tests (a 2 GiB message end to end)")
    ap.add_argument("--record", metavar="FILE",
                    help="write each class's seconds into FILE (tests/integration/class-seconds)")
    ap.add_argument("--worker", action="store_true",
                    help="(internal) run the tests named, by id, in this process")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    if args.slow:
        os.environ["STUBMAIL_SLOW"] = "1"

    if os.geteuid() != 0:
        print("not ok - run_integration # must run as root (real servers)")
        print("# 0 passed, 1 failed")
        return 1
    sandbox.install_signal_handlers()
    if args.worker:
        return _run_here(args.files, args.v)
    return _run_pool(args)


def _run_pool(args):
    """The parent: find the tests, group them by class, run the classes on
    the workers, print the sums."""
    base = sandbox.port_base_default()
    jobs, why = _jobs(args.jobs, base)
    if why:
        print("not ok - run_integration # %s" % why)
        print("# 0 passed, 1 failed")
        return 1
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
    by_class = {}
    for t in _cases(suite):
        by_class.setdefault(class_pool.class_of(t.id()), []).append(t.id())
    order = list(by_class)      # the shuffled order, or the files' order
    if args.shuffle is None:
        order = class_pool.longest_first(order, class_pool.read_seconds())
    print("# %d classes on %d workers, port bases %s"
          % (len(order), jobs, ", ".join(str(base + i * sandbox.PORT_SPAN)
                                         for i in range(jobs))), flush=True)
    t0 = time.monotonic()
    passed, failed, skipped, seconds = class_pool.run_classes(
        [(c, by_class[c]) for c in order], jobs, base, verbose=args.v)
    if args.record:
        class_pool.write_seconds(args.record, seconds)
    print("# %d passed, %d failed%s in %.0fs"
          % (passed, failed, ", %d skipped" % skipped if skipped else "",
             time.monotonic() - t0), flush=True)
    return 0 if failed == 0 else 1


def _jobs(asked, base):
    """(workers, None), or (None, why not): the workers' ports must stay
    below the kernel's ephemeral range (docs/HACKING.md), so by default no
    more workers than fit, and an -j that does not fit is refused."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    room = (min(ephemeral, 65536) - base) // sandbox.PORT_SPAN
    if asked is not None:
        if asked < 1:
            return None, "-j %d: at least one worker" % asked
        if asked > room:
            return None, ("-j %d: port bases %d up to %d reach the ephemeral range (from %d)"
                          % (asked, base, base + asked * sandbox.PORT_SPAN, ephemeral))
        return asked, None
    # a base already in the range (which collides only now and then) gets
    # one worker, as the serial runner had: no more ports in it than before
    return max(1, min(os.cpu_count() or 1, room)), None


def _run_here(test_ids, verbose):
    """A worker: run the tests named by id, in this order, in this process
    (one class: its sandbox starts once)."""
    try:
        suite = unittest.TestLoader().loadTestsFromNames(test_ids)
    except Exception as e:
        print("not ok - %s # cannot load: %s" % (" ".join(test_ids[:1]), e), flush=True)
        print("# 0 passed, 1 failed in 0s")
        return 1
    result = TapResult(verbose=verbose)
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
