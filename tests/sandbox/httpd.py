"""httpd — an ISP's Apache httpd: mod_ssl, mod_dbd and mod_stubmail
(templates/httpd.conf, templates/httpd-stubmail.conf), run in the
foreground, one per front end; and the error-log check every integration
test makes."""

import os
import re
import subprocess

from .common import (APACHE_MODULES, BENIGN_LOG, FRONT_END_PORTS, LOG_LEVEL_RE, MODULE_SO,
                     SandboxError, listening, render)


class FrontEnd:
    """One Apache of an ISP: its ports, run directory, logs and keyring.
    Every front end of an ISP serves the same database and spool with the
    same token and link keys, as machines behind a load balancer would; the
    first (n = 1) is the outbox that DNS names, a second
    (Sandbox(front_ends=2)) listens on the ISP's address at other ports."""

    def __init__(self, isp, n):
        if not 1 <= n <= len(FRONT_END_PORTS):
            raise SandboxError("at most %d front ends" % len(FRONT_END_PORTS))
        https, udp = FRONT_END_PORTS[n - 1]
        self.n = n
        self.name = "httpd" if n == 1 else "httpd%d" % n    # in Isp.procs too
        self.dir = isp.path(self.name)
        self.ip = isp.ip
        self.https_port = isp.port(https)
        self.udp_poll_address = "%s:%d" % (isp.ip, isp.port(udp))
        self.outbox_url = "https://%s:%d/stubmail" % (isp.ip, self.https_port)
        self.www_gnupg_home = isp.path("w" if n == 1 else "w%d" % n)
        self.conf = os.path.join(self.dir, "httpd.conf")
        self.error_log = os.path.join(self.dir, "error.log")
        self.access_log = os.path.join(self.dir, "access.log")

    def __repr__(self):
        return "<FrontEnd %d %s>" % (self.n, self.outbox_url)


class HttpdMixin:
    """Isp's Apache part."""

    def _setup_httpd(self):
        for fe in self.front_ends:
            self._setup_front_end(fe)

    def _setup_front_end(self, fe):
        """fe's httpd.conf from templates/httpd.conf, with
        templates/httpd-stubmail.conf in it when the module is loaded."""
        d = fe.dir
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
                   public_key=self.key.public, www_gnupg_home=fe.www_gnupg_home,
                   resolver=self.resolver,
                   token_keys="".join("StubmailTokenKey %s %s\n" % k for k in self.token_keys)
                   + "".join("StubmailLinkKey %s %s\n" % k for k in self.link_keys)
                   + ("StubmailUserStub %s\n" % self.stub_address if self.stubs else "")
                   + "StubmailFeedURL %s/feed\n" % self.outbox_url,
                   modules=APACHE_MODULES, htpasswd=self._write_htpasswd(d),
                   udp_responder=("StubmailUDPResponder %s\nStubmailUDPDatabase \"%s\"\n"
                                  % (fe.udp_poll_address, self.conninfo)
                                  if self.udp_poll else ""),
                   extra="".join("%s %s\n" % kv for kv in self.httpd_extra))
            with open(part) as f:
                stubmail = f.read()
            os.unlink(part)
        render("httpd.conf", fe.conf,
               domain=self.domain, dir=d, ip=fe.ip, https_port=fe.https_port,
               error_log=fe.error_log, access_log=fe.access_log,
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
        for fe in self.front_ends:
            self._spawn(fe.name, ["apache2", "-f", fe.conf, "-DFOREGROUND"],
                        os.path.join(fe.dir, "httpd.out"),
                        env={"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C"})
            # a configuration error goes to stderr (httpd.out), not the error log
            self._await(fe.name, lambda: listening(fe.ip, fe.https_port),
                        [os.path.join(fe.dir, "httpd.out"), fe.error_log])

    def restart_httpd(self):
        """Write httpd.conf again (after a change of httpd_extra) and restart
        every front end."""
        self.stop_httpd()
        self._setup_httpd()
        self.start_httpd()

    def stop_httpd(self):
        for fe in self.front_ends:
            p = self.procs.pop(fe.name, None)
            if p is not None:
                p.stop()

    def log_mark(self):
        """Start error-log scanning from here (tests call it in setUp)."""
        self._log_offset = {}
        for fe in self.front_ends:
            try:
                self._log_offset[fe.error_log] = os.path.getsize(fe.error_log)
            except OSError:
                self._log_offset[fe.error_log] = 0
        self.expected_log = []

    def expect_log(self, regex):
        """An Apache [warn]/[error] line matching regex is expected."""
        self.expected_log.append(re.compile(regex))

    def unexpected_log_lines(self):
        """[warn] and worse lines in the front ends' error logs since
        log_mark() that no expect_log() regex matches."""
        bad = []
        for fe in self.front_ends:
            try:
                with open(fe.error_log, "rb") as f:
                    f.seek(self._log_offset.get(fe.error_log, 0))
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            for line in text.splitlines():
                if LOG_LEVEL_RE.search(line) and not any(
                        r.search(line) for r in self.expected_log + BENIGN_LOG):
                    bad.append(line)
        return bad
