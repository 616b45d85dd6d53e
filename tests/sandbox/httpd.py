"""httpd — an ISP's Apache httpd: mod_ssl, mod_dbd and mod_stubmail
(templates/httpd.conf, templates/httpd-stubmail.conf), run in the
foreground; and the error-log check every integration test makes."""

import os
import re
import subprocess

from .common import (APACHE_MODULES, BENIGN_LOG, LOG_LEVEL_RE, MODULE_SO, SandboxError,
                     listening, render)


class HttpdMixin:
    """Isp's Apache part."""

    def _setup_httpd(self):
        """httpd.conf from templates/httpd.conf, with
        templates/httpd-stubmail.conf in it when the module is loaded."""
        d = self.path("httpd")
        for sub in ("", "run", "htdocs"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        if self.module and not os.path.exists(MODULE_SO):
            raise SandboxError("%s is not built (run scripts/build)" % MODULE_SO)
        # users' keys, WKD style: a plain directory gpg-wks-client fills
        os.makedirs(self.wkd_dir, exist_ok=True)
        stubmail = ""
        if self.module:
            part = os.path.join(d, "stubmail.conf.part")
            render("httpd-stubmail.conf", part,
                   module_so=MODULE_SO, spool_dir=self.spool_dir, domain=self.domain,
                   public_key=self.key.public, www_gnupg_home=self.www_gnupg_home,
                   resolver=self.resolver,
                   token_keys="".join("StubmailTokenKey %s %s\n" % k for k in self.token_keys)
                   + "".join("StubmailLinkKey %s %s\n" % k for k in self.link_keys)
                   + ("StubmailUserStub %s\n" % self.stub_address if self.stubs else "")
                   + "StubmailFeedURL %s/feed\n" % self.outbox_url,
                   modules=APACHE_MODULES, htpasswd=self._write_htpasswd(d),
                   udp_responder=("StubmailUDPResponder %s\nStubmailUDPDatabase \"%s\"\n"
                                  % (self.udp_poll_address, self.conninfo)
                                  if self.udp_poll else ""),
                   extra="".join("%s %s\n" % kv for kv in self.httpd_extra))
            with open(part) as f:
                stubmail = f.read()
            os.unlink(part)
        self.httpd_conf = os.path.join(d, "httpd.conf")
        render("httpd.conf", self.httpd_conf,
               domain=self.domain, dir=d, ip=self.ip, https_port=self.https_port,
               error_log=self.error_log, access_log=self.access_log,
               loglevel=self.apache_loglevel, modules=APACHE_MODULES,
               conninfo=self.conninfo, tls_cert=self.tls_cert, tls_key=self.tls_key,
               stubmail=stubmail, wkd_dir=self.wkd_dir)

    def _write_htpasswd(self, d):
        """The users' passwords for the user's page (mod_authn_file), made by
        Apache's own htpasswd: USER-secret for each user."""
        path = os.path.join(d, "htpasswd")
        with open(path, "w") as f:
            for user in self.users:
                r = subprocess.run(["htpasswd", "-nbB", "-C", "4", user,
                                    self.user_password(user)],
                                   capture_output=True, text=True, check=True)
                f.write(r.stdout.strip() + "\n")
        os.chmod(path, 0o644)
        return path

    def user_password(self, user):
        return user + "-secret"

    def start_httpd(self):
        self._spawn("httpd", ["apache2", "-f", self.httpd_conf, "-DFOREGROUND"],
                    self.path("httpd.out"), env={"PATH": "/usr/sbin:/usr/bin:/bin",
                                                 "LANG": "C"})
        # a configuration error goes to stderr (httpd.out), not the error log
        self._await("httpd", lambda: listening(self.ip, self.https_port),
                    [self.path("httpd.out"), self.error_log])

    def restart_httpd(self):
        """Write httpd.conf again (after a change of httpd_extra) and restart."""
        self.stop_httpd()
        self._setup_httpd()
        self.start_httpd()

    def stop_httpd(self):
        p = self.procs.pop("httpd", None)
        if p is not None:
            p.stop()

    def log_mark(self):
        """Start error-log scanning from here (tests call it in setUp)."""
        try:
            self._log_offset = os.path.getsize(self.error_log)
        except OSError:
            self._log_offset = 0
        self.expected_log = []

    def expect_log(self, regex):
        """An Apache [warn]/[error] line matching regex is expected."""
        self.expected_log.append(re.compile(regex))

    def unexpected_log_lines(self):
        """[warn] and worse lines in Apache's error log since log_mark() that
        no expect_log() regex matches."""
        try:
            with open(self.error_log, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        bad = []
        for line in text.splitlines():
            if LOG_LEVEL_RE.search(line) and not any(
                    r.search(line) for r in self.expected_log + BENIGN_LOG):
                bad.append(line)
        return bad
