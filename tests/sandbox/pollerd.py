"""pollerd — an ISP's stubmail-pollerd (templates/pollerd.conf), run in the
foreground; killed, restarted and woken (SIGUSR1) by the tests. A test may
start a second instance, "pollerd2", on the same database (its own
configuration, spool and log; no udp_listen and no metrics_listen, which
the first one has)."""

import os
import signal
import time

from .common import POLLERD_BIN, SandboxError, build_kill_shim, render

# the statement that records a delivery (pollerd/pd_db.c)
RECORD_STATEMENT = "INSERT INTO received"


class PollerdMixin:
    """Isp's stubmail-pollerd part: "pollerd", and any other instance a
    test starts by name."""

    def _setup_pollerd(self, name="pollerd"):
        if not os.path.exists(POLLERD_BIN):
            raise SandboxError("%s is not built (run scripts/build)" % POLLERD_BIN)
        spool = self.path(name + "-spool")
        for d in (spool, self.quarantine_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o700)
        conf = self.path(name + ".conf")
        if name == "pollerd":
            self.pollerd_conf = conf
        first = name == "pollerd"
        render("pollerd.conf", conf,
               domain=self.domain, conninfo=self.conninfo, ip=self.ip,
               reinject_port=self.reinject_port, interval=self.poll_interval,
               spool=spool, quarantine_dir=self.quarantine_dir,
               metrics_file=self.path(name + ".prom"),
               metrics_listen=("metrics_listen %s\n" % self.pollerd_metrics_address
                               if first else ""),
               udp_listen=("udp_listen %s\n" % self.stub_address
                           if self.stubs and first else ""),
               unsubscribe=("unsubscribe_url %s\nunsubscribe_key %s %s\nintro_url %s\n"
                            % ((self.unsubscribe_url,) + self.link_keys[-1]
                               + (self.intro_url,))
                            if self.module and "httpd" in self.services else ""),
               extra="".join(line + "\n" for line in self.pollerd_extra),
               **self._key_settings())

    @property
    def quarantine_dir(self):
        return self.path("quarantine")

    @property
    def pollerd_metrics_file(self):
        """pollerd's metrics_file: Prometheus text, written after every cycle
        (the second instance's is pollerd2.prom)."""
        return self.path("pollerd.prom")

    def start_pollerd(self, name="pollerd"):
        """Start pollerd (name: another instance, set up at its first start);
        the first one runs with pollerd_conf, which a test may point elsewhere."""
        conf = self.pollerd_conf if name == "pollerd" else self.path(name + ".conf")
        if not os.path.exists(conf):
            self._setup_pollerd(name)
        log = self.path(name + ".log")
        env = None
        if name == "pollerd" and self.pollerd_kill_shim:
            env = dict(os.environ, LD_PRELOAD=self.pollerd_kill_shim,
                       STUBMAIL_KILL_ARM=self.pollerd_kill_arm,
                       STUBMAIL_KILL_BEFORE_MATCH=RECORD_STATEMENT)
        p = self._spawn(name, [POLLERD_BIN, "-c", conf, "-f"]
                        + (["-d"] if self.pollerd_debug else []), log, env=env)
        time.sleep(0.2)
        if not p.alive():
            self._await(name, lambda: False, log)

    def restart_pollerd(self, extra=None):
        """Start pollerd again (stopped first if it runs); with extra,
        pollerd.conf is written again with it as this ISP's pollerd_extra."""
        self.kill_pollerd(sig=signal.SIGTERM)
        if extra is not None:
            self.pollerd_extra = list(extra)
            self._setup_pollerd()
        self.start_pollerd()

    def kill_pollerd(self, sig=signal.SIGKILL, name="pollerd"):
        """Kill pollerd (SIGKILL by default: a crash) and reap it."""
        p = self.procs.pop(name, None)
        if p is not None:
            p.stop(sig=sig, timeout=10)

    @property
    def pollerd_kill_arm(self):
        """The file whose existence arms pollerd's shim: its next record of
        a delivery is never made, pollerd dies first (and removes the file)."""
        return self.path("kill-before-record")

    def use_kill_before_record(self, on=True):
        """Restart pollerd with tests/faults/kill_at_statement.c preloaded
        and armed: it dies by SIGKILL right before it records a delivery
        its local MTA has taken (SMTP's hand-off window). on=False: restart
        it without the shim."""
        self.pollerd_kill_shim = (build_kill_shim(self.path("kill_at_statement.so"))
                                  if on else None)
        if on:
            open(self.pollerd_kill_arm, "w").close()
        self.kill_pollerd(sig=signal.SIGTERM)
        self.start_pollerd()

    def poll_now(self, name="pollerd"):
        """SIGUSR1: pollerd polls at once instead of at the next interval."""
        p = self.procs.get(name)
        if p is not None:
            p.signal(signal.SIGUSR1)
