"""procs — the servers as foreground child processes: Proc (start, stop by
PID, then its process group), the pid registry that reap_stale() reads
after a SIGKILLed run, gpg-agent cleanup, and the signal handling that
makes SIGTERM/SIGHUP unwind like Ctrl-C so that every running sandbox
(live) is stopped."""

import atexit
import ctypes
import glob
import os
import shutil
import signal
import subprocess
import sys

def starttime(pid):
    """Start time of pid (clock ticks since boot), or None: with the pid it
    names one process, whatever pid reuse happens later."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def reap_stale(verbose=True):
    """Stop what sandboxes whose Python process died (SIGKILL, a CI
    timeout) left running, by the pids they recorded, and remove their run
    directories. Called by Sandbox.start; no-op if there are none."""
    for owner_file in glob.glob("/tmp/smt-*/owner.pid"):
        rundir = os.path.dirname(owner_file)
        try:
            pid, start = open(owner_file).read().split()
            pid = int(pid)
        except (OSError, ValueError):
            continue
        if starttime(pid) == start:
            continue                    # its owner is alive
        if verbose:
            sys.stderr.write("sandbox: cleaning up after a dead sandbox in %s\n" % rundir)
        try:
            with open(os.path.join(rundir, "pids")) as f:
                entries = [l.split() for l in f if l.strip()]
        except OSError:
            entries = []
        for entry in entries:
            try:
                cpid, cstart = int(entry[0]), entry[1]
            except (ValueError, IndexError):
                continue
            if starttime(cpid) != cstart:
                continue                # gone, or the pid is someone else's now
            for kill in (lambda: os.killpg(cpid, signal.SIGKILL),
                         lambda: os.kill(cpid, signal.SIGKILL)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
        kill_gpg_agents(rundir)
        shutil.rmtree(rundir, ignore_errors=True)


def kill_gpg_agents(rundir):
    """Stop the gpg-agents started with a GnuPG home below rundir (by the
    servers, keygen or a test's gpg): they detach from the process groups
    the sandbox stops. With no /run/user here, each agent's socket lives in
    its home."""
    homes = {os.path.dirname(s) for s in
             glob.glob(os.path.join(rundir, "**", "S.gpg-agent*"), recursive=True)}
    for home in sorted(homes):
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def set_pdeathsig():
    # Last resort if this Python process is SIGKILLed: the direct children
    # get SIGTERM. (The normal path stops them explicitly.)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Proc:
    """A server run in the foreground as our child, in its own session,
    output appended to a log file. stop() signals its PID, waits, then
    SIGKILLs what is left of its process group."""

    def __init__(self, name, argv, log, stop_signal=signal.SIGTERM,
                 stop_timeout=15.0, user=None, group=None, env=None, cwd=None,
                 registry=None):
        self.name, self.argv, self.log = name, argv, log
        self.registry = registry
        self.stop_signal, self.stop_timeout = stop_signal, stop_timeout
        self.user, self.group, self.env, self.cwd = user, group, env, cwd
        self.popen = None

    def start(self):
        logf = open(self.log, "ab")
        kw = {}
        if self.user:
            kw["user"] = self.user
            kw["group"] = self.group or self.user
            kw["extra_groups"] = []
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=set_pdeathsig, env=self.env, cwd=self.cwd, **kw)
        finally:
            logf.close()
        if self.registry:
            # for reap_stale(), should this Python process die by SIGKILL
            with open(self.registry, "a") as f:
                f.write("%d %s %s\n" % (self.popen.pid, starttime(self.popen.pid),
                                         self.name.replace(" ", "_")))
        return self

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, sig=None, timeout=None):
        self.begin_stop(sig)
        return self.finish_stop(timeout)

    def begin_stop(self, sig=None):
        """Send the stop signal (without waiting: stop several at once)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig or self.stop_signal)

    def finish_stop(self, timeout=None):
        """Wait for the process after begin_stop; SIGKILL it and its
        process group if it takes longer than timeout."""
        if self.popen is None:
            return None
        pid = self.popen.pid
        try:
            self.popen.wait(timeout if timeout is not None else self.stop_timeout)
        except subprocess.TimeoutExpired:
            sys.stderr.write("sandbox: %s (pid %d) did not stop; killing\n"
                             % (self.name, pid))
            self.popen.kill()
            self.popen.wait()
        # Whatever the server left in its session (Apache children, Postfix
        # daemons, PostgreSQL backends) goes with it.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        rc = self.popen.returncode
        self.popen = None
        return rc


# every started Sandbox not yet stopped (Sandbox.start adds, stop removes)
live = []


def stop_all_live():
    for sb in list(live):
        try:
            sb.stop()
        except Exception as e:
            sys.stderr.write("sandbox: %s\n" % e)


def _on_signal(signum, frame):
    # SIGTERM/SIGHUP behave like Ctrl-C: unwind, run finally/__exit__.
    raise KeyboardInterrupt("signal %d" % signum)


def install_signal_handlers():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    # Ctrl-C, even if started from a shell that ignores SIGINT in the background
    signal.signal(signal.SIGINT, signal.default_int_handler)


atexit.register(stop_all_live)
