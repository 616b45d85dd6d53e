"""class_pool — the integration test classes run in parallel worker
processes, for tests/run_integration.py.

Each worker slot has a port base of its own (STUBMAIL_PORT_BASE plus
PORT_SPAN times the slot's number) and runs one class at a time, each
class in a new process (`run_integration.py --worker TEST_ID...`) whose
sandbox takes ports from that base and a run directory of its own. A free
slot takes the next class of the queue: the longest first by
tests/integration/class-seconds, or the --shuffle order. A class's output
is printed whole when its process ends, so that the records of two
classes never mix; the sums of the classes' summaries make the last
line."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from sandbox.common import PORT_SPAN
from sandbox.procs import set_pdeathsig

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "run_integration.py")
SECONDS_FILE = os.path.join(HERE, "integration", "class-seconds")
SUMMARY_RE = re.compile(r"^# (\d+) passed, (\d+) failed(?:, (\d+) skipped)? in \d+s$")


def class_of(test_id):
    """"test_pull.PullTest" of "test_pull.PullTest.test_x"; a setUpClass
    error holder's id names its class in parentheses."""
    m = re.search(r"\(([\w.]+)\)", test_id)
    return m.group(1) if m else test_id.rsplit(".", 1)[0]


def read_seconds(path=SECONDS_FILE):
    """{class: seconds} recorded in path (none if it is missing)."""
    seconds = {}
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) == 2 and not line.startswith("#"):
                    seconds[fields[0]] = float(fields[1])
    except FileNotFoundError:
        pass
    return seconds


def write_seconds(path, measured):
    """Merge measured {class: seconds} into path, keeping its header and the
    classes this run did not measure."""
    header, seconds = [], read_seconds(path)
    try:
        with open(path) as f:
            header = [l for l in f if l.startswith("#")]
    except FileNotFoundError:
        pass
    seconds.update(measured)
    with open(path, "w") as f:
        f.writelines(header)
        for name in sorted(seconds):
            f.write("%s %d\n" % (name, round(seconds[name])))


def longest_first(classes, seconds):
    """classes (names) ordered by their recorded seconds, longest first; an
    unrecorded class counts as the median."""
    known = sorted(seconds.values())
    median = known[len(known) // 2] if known else 0
    return sorted(classes, key=lambda c: (-seconds.get(c, median), c))


class Run:
    """One class running in a worker process."""

    def __init__(self, name, test_ids, slot, base, verbose):
        self.name, self.slot, self.base = name, slot, base
        self.out = tempfile.TemporaryFile()
        argv = [sys.executable, RUNNER, "--worker"] + (["-v"] if verbose else []) + test_ids
        # its own session: a Ctrl-C at the terminal reaches only the parent,
        # which stops each class once, cleanly (SIGTERM)
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=set_pdeathsig,
                                      env=dict(os.environ, STUBMAIL_PORT_BASE=str(base)))
        self.t0 = time.monotonic()
        self.seconds = None

    def done(self):
        if self.popen.poll() is None:
            return False
        if self.seconds is None:
            self.seconds = time.monotonic() - self.t0
        return True

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def report(self):
        """Print the class's output (its summary line as a comment naming the
        class); return (passed, failed, skipped)."""
        self.out.seek(0)
        lines = self.out.read().decode("utf-8", "replace").splitlines()
        self.out.close()
        summary = None
        for line in lines:
            m = SUMMARY_RE.match(line)
            if m:
                summary = m
                continue
            print(line)
        rc = self.popen.returncode
        if summary is None:
            # died before its summary: what it printed counts, and the death
            passed = sum(1 for l in lines if l.startswith("ok") and "# SKIP" not in l)
            failed = sum(1 for l in lines if l.startswith("not ok")) + 1
            print("not ok - %s # its worker exited with status %s before the end"
                  % (self.name, rc))
            skipped = 0
        else:
            passed, failed = int(summary.group(1)), int(summary.group(2))
            skipped = int(summary.group(3) or 0)
            if rc != 0 and failed == 0:
                failed = 1
                print("not ok - %s # its worker exited with status %s" % (self.name, rc))
        print("# %s: %d passed, %d failed%s in %.0fs (worker %d, port base %d)"
              % (self.name, passed, failed, ", %d skipped" % skipped if skipped else "",
                 self.seconds, self.slot + 1, self.base), flush=True)
        return passed, failed, skipped


def run_classes(queue, jobs, base, verbose=False):
    """Run queue, [(class name, [test id...])] in the order to start them,
    on jobs worker slots from port base. Returns (passed, failed, skipped,
    {class: seconds})."""
    free = list(range(jobs))
    running = []
    passed = failed = skipped = 0
    seconds = {}
    queue = list(queue)
    try:
        while queue or running:
            while queue and free:
                name, ids = queue.pop(0)
                slot = free.pop(0)
                print("# start %s (worker %d, port base %d)"
                      % (name, slot + 1, base + slot * PORT_SPAN), flush=True)
                running.append(Run(name, ids, slot, base + slot * PORT_SPAN, verbose))
            for run in [r for r in running if r.done()]:
                running.remove(run)
                free.append(run.slot)
                free.sort()
                p, f, s = run.report()
                passed, failed, skipped = passed + p, failed + f, skipped + s
                seconds[run.name] = run.seconds
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("# interrupted: stopping %s"
              % ", ".join(r.name for r in running), flush=True)
        for run in running:
            run.stop()
        for run in running:
            run.popen.wait()
            run.done()
            p, f, s = run.report()
            passed, failed, skipped = passed + p, failed + f, skipped + s
        failed += 1
    return passed, failed, skipped, seconds
