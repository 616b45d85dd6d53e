"""isp — one ISP of the sandbox: its address, ports and paths, starting and
stopping its servers in order, and the helpers tests call (address books,
peers, Maildirs, log tails)."""

import glob
import grp
import os
import pwd
import time

from .common import (ALL_SERVICES, DOMAIN_IPS, MILTER, MILTER2, PG, PG_STANDBY,
                     POLLERD_METRICS, REINJECT, SMTP, STUBMAIL_SERVICES, STUBS, SUBMISSION, SUBMISSION2,
                     USERS, WKS_CLIENT,
                     SandboxError, listening, q, run_checked, tail)
from .httpd import FrontEnd, HttpdMixin
from .janitor import JanitorMixin
from .milter import MilterMixin
from .pg import PgMixin
from .pki import DomainKey, make_server_cert
from .pollerd import PollerdMixin
from .postfix import PostfixMixin
from .procs import Proc
from .sendmail import SendmailMixin


class Isp(PgMixin, HttpdMixin, MilterMixin, PostfixMixin, SendmailMixin, PollerdMixin,
          JanitorMixin):
    """One ISP on its own loopback address: the servers of services, each
    from its mixin (pg.py, httpd.py, milter.py, postfix.py, sendmail.py
    (instead of postfix), pollerd.py),
    its addresses and paths, and what tests do to it."""

    def __init__(self, name, domain, ip, port_base, rundir, services=ALL_SERVICES,
                 routes=None, users=USERS, poll_interval="2s", module=True,
                 apache_loglevel="info", resolver=None, ca_dir=None,
                 httpd_extra=(), stubs=False, pollerd_extra=(), udp_poll=False,
                 pollerd_debug=False, pg_settings=(), front_ends=1, milters=1,
                 standby=False):
        self.name, self.domain, self.ip = name, domain, ip
        # 2: a second milter (milter2) behind a second submission listener,
        # both storing into the one outbox
        self.milters = milters
        # a synchronous streaming-replication standby of the database
        # (pg.py), and every program's conninfo names both servers
        self.standby = standby and "pg" in services
        # (name, value) settings PostgreSQL starts with, e.g. ("max_connections", "400")
        self.pg_settings = list(pg_settings)
        self.pollerd_debug = pollerd_debug  # pollerd -d: stubs, UDP polls in its log
        self.port_base, self.rundir = port_base, rundir
        self.services = tuple(services)
        self.users = list(users)
        self.poll_interval = poll_interval
        self.module = module
        self.apache_loglevel = apache_loglevel
        self.resolver = resolver        # "127.0.0.1:PORT" of the sandbox's DNS
        self.ca_dir = ca_dir
        # (directive, value) lines added to httpd.conf, e.g.
        # ("StubmailTokenLifetime", "3")
        self.httpd_extra = list(httpd_extra)
        # UDP stubs: pollerd listens on stub_address, the record says udp=
        self.stubs = stubs and "pollerd" in self.services
        # "key value" lines added to pollerd.conf, e.g. "introductions yes"
        self.pollerd_extra = list(pollerd_extra)
        # "key value" lines added to milter.conf, e.g. "expire_after 20s"
        self.milter_extra = []
        self.milter_kill_shim = None    # LD_PRELOAD of the milter (use_kill_after_commit)
        self.pollerd_kill_shim = None   # ... of pollerd (use_kill_before_record)
        # Apache runs the UDP poll responder on udp_poll_address
        self.udp_poll = udp_poll
        self.key = None                 # DomainKey
        self.token_keys = []            # [(key id, secret hex)], newest last
        self.link_keys = []             # the same for StubmailLinkKey (signed links, forms)
        # domain -> ip of every other ISP, for transport_maps
        self.routes = {d: i for d, i in (routes or DOMAIN_IPS).items() if d != domain}
        self.procs = {}
        self.registry = None        # file listing our children's pids
        self.expected_log = []      # regexes of Apache error-log lines a test expects
        self._log_offset = {}       # error log -> where the scan starts
        # the Apaches (with "httpd" in services): the first is the outbox DNS
        # names, more serve the same database and spool
        self.front_ends = [FrontEnd(self, n) for n in range(1, front_ends + 1)]

    # -- addresses -----------------------------------------------------------
    def port(self, offset):
        return self.port_base + offset

    @property
    def smtp_port(self):
        return self.port(SMTP)

    @property
    def submission_port(self):
        return self.port(SUBMISSION)

    @property
    def reinject_port(self):
        return self.port(REINJECT)

    @property
    def https_port(self):
        return self.front_ends[0].https_port

    @property
    def udp_poll_address(self):
        """mod_stubmail's StubmailUDPResponder, "IP:PORT" (the first front end's)."""
        return self.front_ends[0].udp_poll_address

    @property
    def stub_address(self):
        """pollerd's udp_listen, "IP:PORT" (whether or not stubs are on)."""
        return "%s:%d" % (self.ip, self.port(STUBS))

    @property
    def pollerd_metrics_address(self):
        """pollerd's metrics_listen, "IP:PORT" (its first instance's)."""
        return "%s:%d" % (self.ip, self.port(POLLERD_METRICS))

    @property
    def pollerd_metrics_url(self):
        """pollerd's Prometheus metrics, served at metrics_listen."""
        return "http://%s/metrics" % self.pollerd_metrics_address

    @property
    def has_stubmail(self):
        """Runs a stubmail part (or plays one): has a key and a record."""
        return any(s in self.services for s in STUBMAIL_SERVICES)

    @property
    def ca_file(self):
        return os.path.join(self.ca_dir, "ca.pem") if self.ca_dir else None

    @property
    def fpr(self):
        return self.key.fpr if self.key else None

    @property
    def gnupg_home(self):
        """The domain key's GnuPG home (milter, pollerd, a test's poller)."""
        return self.path("g")

    @property
    def www_gnupg_home(self):
        """Apache's own keyring (www-data): the keys of domains that logged in
        (the first front end's; each has its own)."""
        return self.front_ends[0].www_gnupg_home

    @property
    def pg_port(self):
        return self.port(PG)

    @property
    def pg_standby_port(self):
        return self.port(PG_STANDBY)

    @property
    def milter_port(self):
        return self.port(MILTER)

    @property
    def milter2_port(self):
        return self.port(MILTER2)

    @property
    def submission2_port(self):
        """Isp(milters=2): the submission listener of the second milter."""
        return self.port(SUBMISSION2)

    @property
    def outbox_url(self):
        return self.front_ends[0].outbox_url

    @property
    def metrics_url(self):
        """mod_stubmail's Prometheus metrics (SetHandler stubmail-metrics)."""
        return "https://%s:%d/stubmail-metrics" % (self.ip, self.https_port)

    @property
    def unsubscribe_url(self):
        """Our Apache's one-click unsubscribe endpoint, in pollerd's links."""
        return self.outbox_url + "/unsubscribe"

    @property
    def intro_url(self):
        """Our Apache's page for the introductions digest's links (pollerd's
        intro_url; the digest itself is off unless pollerd_extra turns it on)."""
        return self.outbox_url + "/introduction"

    @property
    def conninfo(self):
        if self.standby:
            # the servers in order; whichever takes writes is the primary
            return ("host=%s,%s port=%d,%d dbname=stubmail user=stubmail "
                    "target_session_attrs=read-write"
                    % (self.ip, self.ip, self.pg_port, self.pg_standby_port))
        return "host=%s port=%d dbname=stubmail user=stubmail" % (self.ip, self.pg_port)

    def path(self, *parts):
        return os.path.join(self.rundir, *parts)

    @property
    def spool_dir(self):
        return self.path("spool")

    @property
    def mail_dir(self):
        return self.path("mail")

    @property
    def postfix_dir(self):
        return self.path("postfix")

    @property
    def error_log(self):
        return self.front_ends[0].error_log

    @property
    def access_log(self):
        return self.front_ends[0].access_log

    @property
    def wkd_dir(self):
        """The openpgpkey/ directory Apache serves at /.well-known/openpgpkey."""
        return self.path("wkd", "openpgpkey")

    def wkd_path(self, address):
        """Where the WKD answer for address lives (hash by gpg-wks-client)."""
        out = run_checked([WKS_CLIENT, "--print-wkd-hash", address], "gpg-wks-client")
        return os.path.join(self.wkd_dir, address.rsplit("@", 1)[1].lower(), "hu",
                            out.split()[0])

    def wkd_install(self, home, fpr, address):
        """Publish key fpr of GnuPG home for address the way an admin does:
        gpg-wks-client --install-key, run in the directory above wkd_dir."""
        run_checked([WKS_CLIENT, "--install-key", fpr, address], "gpg-wks-client --install-key",
                    cwd=os.path.dirname(self.wkd_dir), env=dict(os.environ, GNUPGHOME=home))

    def wkd_publish(self, address, data):
        """Serve data (bytes, whatever a test wants) as address's WKD answer."""
        p = self.wkd_path(address)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o644)

    @property
    def maillog(self):
        return self.path("postfix", "maillog")

    @property
    def pollerd_log(self):
        return self.path("pollerd.log")

    @property
    def milter_log(self):
        return self.path("milter.log")

    @property
    def milter2_log(self):
        return self.path("milter2.log")

    def __repr__(self):
        return "<Isp %s %s:%d>" % (self.domain, self.ip, self.port_base)

    # -- lifecycle -----------------------------------------------------------
    def make_identity(self):
        """Before anything starts: the domain key (and the TXT
        record to publish), Apache's keyring, certificate and token key."""
        os.makedirs(self.rundir, exist_ok=True)
        os.chmod(self.rundir, 0o755)
        if not self.has_stubmail:
            return
        self.key = DomainKey(self.gnupg_home, self.domain, self.path("pubkey.asc"),
                             self.outbox_url, udp=self.stub_address if self.stubs else None)
        self.token_keys = [("k1", os.urandom(32).hex())]
        self.link_keys = [("u1", os.urandom(32).hex())]
        if "httpd" in self.services:
            www = pwd.getpwnam("www-data")
            for fe in self.front_ends:
                os.makedirs(fe.www_gnupg_home, mode=0o700, exist_ok=True)
                os.chown(fe.www_gnupg_home, www.pw_uid, www.pw_gid)
            self.tls_cert, self.tls_key = make_server_cert(
                self.ca_dir, self.path("tls"), self.domain, self.ip)

    def start(self):
        os.makedirs(self.rundir, exist_ok=True)
        os.chmod(self.rundir, 0o755)
        self._check_ports_free()
        self._make_spool()
        if "pg" in self.services:
            self._setup_pg()
            self.start_db()
            if self.standby:
                self.start_standby()
        if "httpd" in self.services:
            self._setup_httpd()
            self.start_httpd()
        if "milter" in self.services:
            self._setup_milter()
            self.start_milter()
            if self.milters > 1:
                self.start_milter("milter2")
        if "postfix" in self.services:
            self._setup_postfix()
            self.start_postfix()
        if "sendmail" in self.services:
            self._setup_sendmail()
            self.start_sendmail()
        if "pollerd" in self.services:
            self._setup_pollerd()
            self.start_pollerd()
        return self

    STOP_ORDER = (("pollerd", "pollerd2"),
                  ("httpd", "httpd2", "postfix", "sendmail", "milter", "milter2"),
                  ("pg", "pg_standby"))

    def stop(self, stages=STOP_ORDER):
        """Stop the servers, a stage at a time; within a stage all at once
        (libmilter alone takes 2-5 s to stop)."""
        errors = []
        for stage in stages:
            procs = [(n, self.procs.pop(n)) for n in stage if n in self.procs]
            for name, p in procs:
                try:
                    p.begin_stop()
                except Exception as e:
                    errors.append("%s: %s" % (name, e))
            for name, p in procs:
                try:
                    p.finish_stop()
                except Exception as e:  # keep stopping the others
                    errors.append("%s: %s" % (name, e))
        if errors:
            raise SandboxError("%s: stopping: %s" % (self.domain, "; ".join(errors)))

    def _check_ports_free(self):
        offsets = {"pg": [PG] + ([PG_STANDBY] if self.standby else []),
                   "httpd": [fe.https_port - self.port_base for fe in self.front_ends],
                   "milter": [MILTER] + ([MILTER2] if self.milters > 1 else []),
                   "postfix": [SMTP, REINJECT, SUBMISSION]
                   + ([SUBMISSION2] if self.milters > 1 else []),
                   "sendmail": [SMTP, SUBMISSION, REINJECT],
                   "pollerd": [POLLERD_METRICS]}
        for svc, offs in offsets.items():
            if svc not in self.services:
                continue
            for off in offs:
                if listening(self.ip, self.port(off)):
                    raise SandboxError(
                        "%s:%d is already in use (a stale sandbox? another "
                        "STUBMAIL_PORT_BASE?)" % (self.ip, self.port(off)))

    def _spawn(self, name, argv, log, **kw):
        old = self.procs.get(name)
        if old is not None and old.alive():
            raise SandboxError("%s %s already running" % (self.domain, name))
        p = Proc("%s %s" % (self.domain, name), argv, log, registry=self.registry,
                 **kw).start()
        self.procs[name] = p
        return p

    def _await(self, name, ready, log, timeout=20.0):
        """Wait until ready(); on failure, say why with the tail of log (or
        of each existing log of a list)."""
        p = self.procs[name]
        deadline = time.monotonic() + timeout
        while True:
            if not p.alive():
                rc = p.popen.returncode if p.popen else None
                p.stop()
                del self.procs[name]
                raise SandboxError("%s %s exited (status %s) while starting:\n%s"
                                   % (self.domain, name, rc, self._tails(log)))
            if ready():
                return
            if time.monotonic() > deadline:
                raise SandboxError("%s %s not ready after %.0fs:\n%s"
                                   % (self.domain, name, timeout, self._tails(log)))
            time.sleep(0.05)

    @staticmethod
    def _tails(logs):
        if isinstance(logs, str):
            return tail(logs)
        return "\n".join("--- %s\n%s" % (l, tail(l)) for l in logs if os.path.exists(l))

    def _make_spool(self):
        # Shared by the milter (writes, as root) and Apache (reads and deletes,
        # as www-data): setgid directory of group www-data, mode 2770.
        www = grp.getgrnam("www-data").gr_gid
        os.makedirs(self.spool_dir, exist_ok=True)
        os.chown(self.spool_dir, 0, www)
        os.chmod(self.spool_dir, 0o2770)

    def _key_settings(self):
        """The keys the milter and pollerd share, for their templates."""
        return dict(resolver=self.resolver, gnupg_home=self.gnupg_home, fpr=self.fpr,
                    ca_file=self.ca_file)

    # -- test helpers --------------------------------------------------------
    def add_contact(self, owner, contact, source="admin"):
        owner, contact = owner.lower(), contact.lower()
        self.sql("INSERT INTO address_book (owner, contact, contact_domain, source) "
                 "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
                 % (q(owner), q(contact), q(contact.split("@", 1)[1]), q(source)))

    def add_peer(self, other, pulling=True, both=True, fpr=None, outbox_url=None):
        """Peer rows (admin overrides): here for other and, with both, there
        for us. outbox_url and fpr, if given, go into our row for other (a
        domain name will do for other then, with both=False); otherwise the
        row names other's real outbox and no fpr (DNS says). DNS finds peers
        without any row."""
        pairs = [(self, other), (other, self)] if both else [(self, other)]
        for here, there in pairs:
            mine = here is self
            domain = there if isinstance(there, str) else there.domain
            url = outbox_url if mine and outbox_url else there.outbox_url
            fpr_ = fpr if mine else None
            here.sql("INSERT INTO peer (domain, outbox_url, pulling, fpr) "
                     "VALUES (%s, %s, %s, %s) ON CONFLICT (domain) DO UPDATE SET "
                     "outbox_url = EXCLUDED.outbox_url, "
                     "pulling = EXCLUDED.pulling, fpr = EXCLUDED.fpr"
                     % (q(domain), q(url),
                        "true" if pulling else "false", q(fpr_) if fpr_ else "NULL"))

    def maildir_messages(self, user):
        """[(path, bytes)] of the messages in user's Maildir (new and cur),
        oldest first."""
        out = []
        for sub in ("new", "cur"):
            for p in glob.glob(os.path.join(self.mail_dir, user, sub, "*")):
                try:
                    with open(p, "rb") as f:
                        out.append((os.stat(p).st_mtime, p, f.read()))
                except FileNotFoundError:
                    pass
        return [(p, data) for _, p, data in sorted(out)]

    def logs_tail(self, n=25):
        parts = []
        logs = ([("apache error log", fe.error_log) for fe in self.front_ends]
                + [("apache access log", fe.access_log) for fe in self.front_ends]
                + [("postfix maillog", self.maillog),
                   ("sendmail", self.path("sendmail.out")),
                   ("sendmail SMTP trace", self.path("sendmail", "trace.log")),
                   ("milter", self.milter_log),
                   ("milter2", self.milter2_log),
                   ("pollerd", self.pollerd_log),
                   ("pollerd2", self.path("pollerd2.log")),
                   ("postgresql", self.path("pg.log")),
                   ("postgresql standby", self.path("pg_standby.log"))])
        for label, path in logs:
            if os.path.exists(path):
                parts.append("--- %s %s (%s)\n%s" % (self.domain, label, path, tail(path, n)))
        return "\n".join(parts)
