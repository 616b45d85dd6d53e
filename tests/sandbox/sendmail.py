"""sendmail — an ISP's Sendmail instead of Postfix (templates/sendmail.mc),
with stubmail-milter as its INPUT_MAIL_FILTER: the inbound MTA on the
sandbox's SMTP port (Name=MTA), the submission port (Name=ORIGINATING) and
the reinjection port without the filter (Name=REINJECT).

Debian's sendmail-bin conflicts with postfix, so it is not installed:
scripts/fetch-sendmail unpacks it (and sendmail-cf, libwrap0) into
SENDMAIL_ROOT, and it runs from there. Sendmail asks for its host's
canonical name before it reads its .cf, by DNS when the name has no dot;
so it runs in namespaces of its own (unshare: a UTS namespace with the
host name mail.DOMAIN, a mount namespace with a hosts file of ours over
/etc/hosts), where it needs no DNS. Sendmail logs only to syslog, which
the sandbox has not: its SMTP sessions go to trace.log (-X) instead."""

import os
import shutil
import subprocess

from .common import SandboxError, listening, render

SENDMAIL_ROOT = os.path.join(os.environ.get("STUBMAIL_SENDMAIL_DIR",
                                            "/var/cache/stubmail-test/sendmail"), "root")
SENDMAIL_BIN = os.path.join(SENDMAIL_ROOT, "usr", "libexec", "sendmail", "sendmail")
MAKEMAP_BIN = os.path.join(SENDMAIL_ROOT, "usr", "libexec", "sendmail", "makemap")
SENDMAIL_CF_DIR = os.path.join(SENDMAIL_ROOT, "usr", "share", "sendmail", "cf")
SENDMAIL_LIBS = os.path.join(SENDMAIL_ROOT, "usr", "lib", "x86_64-linux-gnu")


def sendmail_missing():
    """Why Sendmail cannot run here, or None."""
    for path in (SENDMAIL_BIN, MAKEMAP_BIN, os.path.join(SENDMAIL_CF_DIR, "m4", "cf.m4")):
        if not os.path.exists(path):
            return "%s is missing: run scripts/fetch-sendmail (scripts/install-deps does)" % path
    for prog in ("m4", "unshare"):
        if shutil.which(prog) is None:
            return "%s is not installed" % prog
    return None


class SendmailMixin:
    """Isp's Sendmail part."""

    @property
    def sendmail_dir(self):
        return self.path("sendmail")

    @property
    def sendmail_trace(self):
        return self.path("sendmail", "trace.log")

    def _sendmail_env(self):
        return dict(os.environ, LD_LIBRARY_PATH=SENDMAIL_LIBS)

    def _setup_sendmail(self):
        why = sendmail_missing()
        if why:
            raise SandboxError("Sendmail: " + why)
        d = self.sendmail_dir
        os.makedirs(os.path.join(d, "queue"), mode=0o700, exist_ok=True)
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n%s mail.%s\n" % (self.ip, self.domain))
        with open(os.path.join(d, "service.switch"), "w") as f:
            f.write("hosts files\naliases files\n")
        for name in ("aliases", "statistics", "helpfile"):
            open(os.path.join(d, name), "a").close()
        mc = os.path.join(d, "sendmail.mc")
        render("sendmail.mc", mc, domain=self.domain, dir=d, ip=self.ip,
               smtp_port=self.smtp_port, submission_port=self.submission_port,
               reinject_port=self.reinject_port, milter_port=self.milter_port)
        r = subprocess.run(["m4", "-D_CF_DIR_=%s/" % SENDMAIL_CF_DIR,
                            os.path.join(SENDMAIL_CF_DIR, "m4", "cf.m4"), mc],
                           capture_output=True)
        if r.returncode != 0 or r.stderr:
            raise SandboxError("m4 %s: %s" % (mc, r.stderr.decode().strip()))
        self.sendmail_cf = os.path.join(d, "sendmail.cf")
        with open(self.sendmail_cf, "wb") as f:
            f.write(r.stdout)
        # each other ISP by its address (transport_maps of the Postfix ISPs)
        with open(os.path.join(d, "mailertable.txt"), "w") as f:
            for dom, ip in sorted(self.routes.items()):
                f.write("%s esmtp:[%s]\n" % (dom, ip))
        with open(os.path.join(d, "mailertable.txt"), "rb") as f:
            r = subprocess.run([MAKEMAP_BIN, "-C", self.sendmail_cf, "hash",
                                os.path.join(d, "mailertable")], stdin=f,
                               capture_output=True, env=self._sendmail_env())
        if r.returncode != 0:
            raise SandboxError("makemap hash mailertable: %s" % r.stderr.decode().strip())

    def start_sendmail(self):
        d = self.sendmail_dir
        # exec: the PID the sandbox stops is Sendmail's daemon
        script = ("hostname mail.%s && mount --bind %s/hosts /etc/hosts && exec %s -C %s "
                  "-bD -q1m -X %s" % (self.domain, d, SENDMAIL_BIN, self.sendmail_cf,
                                      self.sendmail_trace))
        self._spawn("sendmail", ["unshare", "--mount", "--uts", "sh", "-c", script],
                    self.path("sendmail.out"), env=self._sendmail_env())
        ports = [self.smtp_port, self.submission_port, self.reinject_port]
        self._await("sendmail", lambda: all(listening(self.ip, p) for p in ports),
                    [self.path("sendmail.out"), self.sendmail_trace])

    def sendmail_queue(self):
        """The queue files (qf*) Sendmail holds now."""
        q = os.path.join(self.sendmail_dir, "queue")
        return sorted(n for n in os.listdir(q) if n.startswith("qf"))
