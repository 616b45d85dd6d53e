"""milter — an ISP's stubmail-milter (templates/milter.conf), on the TCP
port Postfix's smtpd_milters names, run in the foreground. With
Isp(milters=2) a second one, "milter2", on its own port behind its own
submission listener, stores into the same outbox and spool."""

import os

from .common import MILTER_BIN, SandboxError, listening, render


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
        if name != "milter":
            self._setup_milter(name)
        self._spawn(name, [MILTER_BIN, "-c", self.path(name + ".conf"), "-f"],
                    self.path(name + ".log"))
        self._await(name, lambda: listening(self.ip, self._milter_port_of(name)),
                    self.path(name + ".log"))

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
