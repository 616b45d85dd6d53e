"""janitor — an ISP's stubmail-janitor (templates/janitor.conf): not a
server, one pass per run, as cron would run it."""

import os
import subprocess

from .common import JANITOR_BIN, SandboxError, render


class JanitorMixin:
    """Isp's stubmail-janitor part."""

    def janitor_conf(self, extra=(), name="janitor.conf"):
        """Write a janitor configuration (extra: "key value" lines) and
        return its path. Written aside and renamed into place: a janitor
        started a moment before reads a whole file, never a truncated one
        (two janitors at once got exit 78 that way)."""
        if not os.path.exists(JANITOR_BIN):
            raise SandboxError("%s is not built (run scripts/build)" % JANITOR_BIN)
        path = self.path(name)
        render("janitor.conf", path + ".new", domain=self.domain, conninfo=self.conninfo,
               spool_dir=self.spool_dir, ip=self.ip, reinject_port=self.reinject_port,
               extra="".join(line + "\n" for line in extra))
        os.replace(path + ".new", path)
        return path

    def start_janitor(self, extra=()):
        """One pass in the background, logging to stderr: a Popen whose
        communicate() gives its log."""
        return subprocess.Popen([JANITOR_BIN, "-f", "-c", self.janitor_conf(extra)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def run_janitor(self, extra=(), timeout=60):
        """One pass; (exit status, its log)."""
        p = self.start_janitor(extra)
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
