"""milter — an ISP's stubmail-milter (templates/milter.conf), on the TCP
port Postfix's smtpd_milters names, run in the foreground. With
Isp(milters=2) a second one, "milter2", on its own port behind its own
submission listener, stores into the same outbox and spool. For fault
tests, the first one is killed (SIGKILL) at any moment or, through
tests/faults/kill_at_statement.c (LD_PRELOAD), right after its outbox
commit."""

import os
import signal

from .common import MILTER_BIN, SandboxError, build_kill_shim, listening, render


class MilterMixin:
    """Isp's stubmail-milter part: "milter", and "milter2" if milters=2."""

    def _milter_port_of(self, name):
        return self.milter2_port if name == "milter2" else self.milter_port

    def _setup_milter(self, name="milter"):
        if not os.path.exists(MILTER_BIN):
            raise SandboxError("%s is not built (run scripts/build)" % MILTER_BIN)
        conf = self.path(name + ".conf")
        if name == "milter":
            self.milter_conf = conf
        render("milter.conf", conf,
               domain=self.domain, milter_port=self._milter_port_of(name), ip=self.ip,
               conninfo=self.conninfo, spool_dir=self.spool_dir,
               extra="".join(line + "\n" for line in self.milter_extra),
               **self._key_settings())

    def start_milter(self, name="milter"):
        env = None
        if name != "milter":
            self._setup_milter(name)
        elif self.milter_kill_shim:
            env = dict(os.environ, LD_PRELOAD=self.milter_kill_shim,
                       STUBMAIL_KILL_ARM=self.milter_kill_arm)
        self._spawn(name, [MILTER_BIN, "-c", self.path(name + ".conf"), "-f"],
                    self.path(name + ".log"), env=env)
        self._await(name, lambda: listening(self.ip, self._milter_port_of(name)),
                    self.path(name + ".log"))

    @property
    def milter_kill_arm(self):
        """The file whose existence arms the shim: the next outbox commit
        kills the milter (and removes the file)."""
        return self.path("kill-after-commit")

    def use_kill_after_commit(self):
        """Build tests/faults/kill_at_statement.c into the run directory and
        restart the milter with it preloaded (disarmed)."""
        so = build_kill_shim(self.path("kill_at_statement.so"))
        self.disarm_kill_after_commit()
        self.milter_kill_shim = so
        self.stop_milter()
        self.start_milter()

    def arm_kill_after_commit(self):
        open(self.milter_kill_arm, "w").close()

    def disarm_kill_after_commit(self):
        try:
            os.unlink(self.milter_kill_arm)
        except FileNotFoundError:
            pass

    def milter_alive(self):
        p = self.procs.get("milter")
        return p is not None and p.alive()

    def kill_milter(self):
        """SIGKILL the milter (a crash) and reap it; start_milter brings it back."""
        p = self.procs.pop("milter", None)
        if p is not None:
            p.stop(sig=signal.SIGKILL, timeout=10)

    def reap_milter(self):
        """Forget a milter that died by itself (the shim killed it)."""
        p = self.procs.get("milter")
        if p is not None and not p.alive():
            self.procs.pop("milter").stop(timeout=10)

    def restart_milter(self, extra=None, name="milter"):
        """Write milter.conf again (with extra as milter_extra, if given)
        and restart the milter."""
        if extra is not None:
            self.milter_extra = list(extra)
        self.stop_milter(name)
        self._setup_milter(name)
        self.start_milter(name)

    def stop_milter(self, name="milter"):
        p = self.procs.pop(name, None)
        if p is not None:
            p.stop()
