"""pollerd — an ISP's stubmail-pollerd (templates/pollerd.conf), run in the
foreground; killed, restarted and woken (SIGUSR1) by the tests."""

import os
import signal
import time

from .common import POLLERD_BIN, SandboxError, render


class PollerdMixin:
    """Isp's stubmail-pollerd part."""

    def _setup_pollerd(self):
        if not os.path.exists(POLLERD_BIN):
            raise SandboxError("%s is not built (run scripts/build)" % POLLERD_BIN)
        spool = self.path("pollerd-spool")
        for d in (spool, self.quarantine_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o700)
        self.pollerd_conf = self.path("pollerd.conf")
        render("pollerd.conf", self.pollerd_conf,
               domain=self.domain, conninfo=self.conninfo, ip=self.ip,
               reinject_port=self.reinject_port, interval=self.poll_interval,
               spool=spool, quarantine_dir=self.quarantine_dir,
               metrics_file=self.pollerd_metrics_file,
               udp_listen="udp_listen %s\n" % self.stub_address if self.stubs else "",
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
        """pollerd's metrics_file: Prometheus text, written after every cycle."""
        return self.path("pollerd.prom")

    def start_pollerd(self):
        p = self._spawn("pollerd", [POLLERD_BIN, "-c", self.pollerd_conf, "-f"]
                        + (["-d"] if self.pollerd_debug else []), self.pollerd_log)
        time.sleep(0.2)
        if not p.alive():
            self._await("pollerd", lambda: False, self.pollerd_log)

    restart_pollerd = start_pollerd

    def kill_pollerd(self, sig=signal.SIGKILL):
        """Kill pollerd (SIGKILL by default: a crash) and reap it."""
        p = self.procs.pop("pollerd", None)
        if p is not None:
            p.stop(sig=sig, timeout=10)

    def poll_now(self):
        """SIGUSR1: pollerd polls at once instead of at the next interval."""
        p = self.procs.get("pollerd")
        if p is not None:
            p.signal(signal.SIGUSR1)
