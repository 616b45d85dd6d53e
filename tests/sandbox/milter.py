"""milter — an ISP's stubmail-milter (templates/milter.conf), on the TCP
port Postfix's smtpd_milters names, run in the foreground."""

import os

from .common import MILTER_BIN, SandboxError, listening, render


class MilterMixin:
    """Isp's stubmail-milter part."""

    def _setup_milter(self):
        if not os.path.exists(MILTER_BIN):
            raise SandboxError("%s is not built (run scripts/build)" % MILTER_BIN)
        self.milter_conf = self.path("milter.conf")
        render("milter.conf", self.milter_conf,
               domain=self.domain, milter_port=self.milter_port, ip=self.ip,
               conninfo=self.conninfo, spool_dir=self.spool_dir,
               extra="".join(line + "\n" for line in self.milter_extra),
               **self._key_settings())

    def start_milter(self):
        self._spawn("milter", [MILTER_BIN, "-c", self.milter_conf, "-f"], self.milter_log)
        self._await("milter", lambda: listening(self.ip, self.milter_port), self.milter_log)

    def restart_milter(self, extra=None):
        """Write milter.conf again (with extra as milter_extra, if given)
        and restart the milter."""
        if extra is not None:
            self.milter_extra = list(extra)
        self.stop_milter()
        self._setup_milter()
        self.start_milter()

    def stop_milter(self):
        p = self.procs.pop("milter", None)
        if p is not None:
            p.stop()
