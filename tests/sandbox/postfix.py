"""postfix — an ISP's private Postfix instance (templates/main.cf,
templates/master.cf): inbound SMTP and submission through the milter, a
reinjection port without it, Maildirs; and sending with swaks."""

import grp
import json
import os
import pwd
import re
import signal
import subprocess
import tempfile
import time

from .common import SMTP, SandboxError, listening, postfix_daemon_dir, render


class PostfixMixin:
    """Isp's Postfix part."""

    def _setup_postfix(self):
        d = self.postfix_dir
        etc = os.path.join(d, "etc")
        for sub in ("etc", "queue", "data"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        pf = pwd.getpwnam("postfix")
        os.chown(os.path.join(d, "data"), pf.pw_uid, pf.pw_gid)
        nobody = pwd.getpwnam("nobody")
        os.makedirs(self.mail_dir, exist_ok=True)
        os.chown(self.mail_dir, nobody.pw_uid, nobody.pw_gid)
        os.chmod(self.mail_dir, 0o755)
        transports = ", ".join("%s=smtp:[%s]:%d" % (dom, ip, self.port(SMTP))
                               for dom, ip in sorted(self.routes.items()))
        mailboxes = ", ".join("%s@%s=%s/" % (u, self.domain, u) for u in self.users)
        with_milter = "milter" in self.services
        milter = "inet:%s:%d" % (self.ip, self.milter_port) if with_milter else ""
        render("main.cf", os.path.join(etc, "main.cf"),
               domain=self.domain, dir=d, ip=self.ip, transports=transports,
               mail=self.mail_dir, mailboxes=mailboxes, uid=nobody.pw_uid,
               gid=nobody.pw_gid, milter=milter)
        second = ""
        if with_milter and self.milters > 1:
            # Isp(milters=2): local users' second way in, through milter2
            second = ("%s:%d  inet  n  -  n  -  -  smtpd\n"
                      "  -o syslog_name=postfix/submission2\n"
                      "  -o milter_macro_daemon_name=ORIGINATING\n"
                      "  -o cleanup_service_name=cleanup-outbound\n"
                      "  -o smtpd_milters=inet:%s:%d\n"
                      % (self.ip, self.submission2_port, self.ip, self.milter2_port))
        render("master.cf", os.path.join(etc, "master.cf"),
               domain=self.domain, ip=self.ip, smtp_port=self.smtp_port,
               submission_port=self.submission_port, reinject_port=self.reinject_port,
               second_submission=second)
        self.postfix_etc = etc
        self._age_postfix_conf()
        # What "postfix check" would create (it takes ~2 s): the queue's
        # subdirectories with Postfix's ownership and modes.
        pd = grp.getgrnam("postdrop").gr_gid
        queue = os.path.join(d, "queue")
        for sub, uid, gid, mode in (
                [(q_, pf.pw_uid, 0, 0o700) for q_ in (
                    "active", "bounce", "corrupt", "defer", "deferred", "flush",
                    "hold", "incoming", "private", "saved", "trace")]
                + [("maildrop", pf.pw_uid, pd, 0o730), ("public", pf.pw_uid, pd, 0o710),
                   ("pid", 0, 0, 0o755)]):
            p_ = os.path.join(queue, sub)
            os.makedirs(p_, exist_ok=True)
            os.chown(p_, uid, gid)
            os.chmod(p_, mode)

    def _age_postfix_conf(self):
        # Postfix will not read a main.cf or master.cf changed within the
        # last second (it may be half written): every daemon that starts
        # then sleeps in 300 ms steps first, 1.5 s at each sandbox start.
        # Ours are written whole before anything reads them.
        past = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(os.path.join(self.postfix_etc, name), (past, past))

    def start_postfix(self):
        master = os.path.join(postfix_daemon_dir(), "master")
        self._spawn("postfix", [master, "-c", self.postfix_etc, "-s"],
                    self.path("postfix.out"))
        ports = [self.smtp_port, self.submission_port, self.reinject_port]
        self._await("postfix", lambda: all(listening(self.ip, p) for p in ports),
                    self.maillog)

    def postconf(self, **settings):
        """Set main.cf parameters (postconf -e: each one line, replaced, so
        that no "overriding earlier entry" warning floods postlogd) and
        tell the running Postfix to reload them."""
        r = subprocess.run(["postconf", "-c", self.postfix_etc, "-e"]
                           + ["%s=%s" % kv for kv in sorted(settings.items())],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SandboxError("postconf -e %s: %s" % (settings, r.stderr.strip()))
        self._age_postfix_conf()
        if "postfix" in self.procs:
            self.procs["postfix"].signal(signal.SIGHUP)

    def stop_postfix(self):
        p = self.procs.pop("postfix", None)
        if p is not None:
            p.stop()

    def postqueue(self):
        """The queue as postqueue -j objects (one dict per message)."""
        # a wedged Postfix must fail the test that asks, not hang the run
        r = subprocess.run(["postqueue", "-c", self.postfix_etc, "-j"],
                           capture_output=True, text=True, timeout=30)
        return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]

    def flush_queue(self):
        subprocess.run(["postqueue", "-c", self.postfix_etc, "-f"], capture_output=True)

    def send(self, sender, recipients, data, port=None, extra=(), timeout=60):
        """Send data (bytes, an RFC 5322 message) with swaks from our own
        address to our submission port (or port). Returns a Swaks result."""
        if isinstance(recipients, str):
            recipients = [recipients]
        # swaks ends DATA with CRLF "." CRLF after what it is given: strip the
        # message's own final line end, or the message grows by an empty line.
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        fd, msgfile = tempfile.mkstemp(prefix="msg-", dir=self.rundir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        argv = ["swaks", "--server", self.ip, "--port", str(port or self.submission_port),
                "--local-interface", self.ip, "--helo", "client." + self.domain,
                "--from", sender, "--to", ",".join(recipients),
                "--data", "@" + msgfile, "--timeout", "30"] + list(extra)
        try:
            r = subprocess.run(argv, capture_output=True, timeout=timeout)
        finally:
            os.unlink(msgfile)
        return Swaks(argv, r.returncode, r.stdout.decode("utf-8", "replace"),
                     r.stderr.decode("utf-8", "replace"))


class Swaks:
    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    @property
    def ok(self):
        return self.rc == 0

    def replies(self):
        """Server reply lines ('<-' and '<~' and their error forms)."""
        return [l for l in self.out.splitlines() if re.match(r"\s*<[-~*]+ ", l)]

    def saw(self, code_re):
        return any(re.match(r"\s*<[-~*]+ +" + code_re, l) for l in self.replies())

    def __str__(self):
        return "swaks exit %d\n%s%s" % (self.rc, self.out, self.err)
