#!/usr/bin/env python3
"""sandbox — stubmail ISPs on loopback, with the real servers.

NAME
    sandbox.py - start and stop test ISPs: PostgreSQL, Apache httpd with
    mod_ssl and mod_stubmail, Postfix with stubmail-milter, and
    stubmail-pollerd; and a DNS server (dnsmasq) for all of them.

SYNOPSIS
    python3 tests/sandbox.py demo [--keep]
    python3 tests/sandbox.py start [DOMAIN...]     (runs until Ctrl-C)
    python3 tests/sandbox.py stop RUNDIR

    from sandbox import Sandbox
    with Sandbox(["a.example", "b.example"]) as sb:
        a, b = sb["a.example"], sb["b.example"]
        b.add_contact("bob@b.example", "alice@a.example")
        a.send("alice@a.example", "bob@b.example", message)
        ...

DESCRIPTION
    Each ISP gets its own loopback address (a.example 127.0.0.2, b.example
    127.0.0.3, c.example 127.0.0.4) and the same port layout above
    STUBMAIL_PORT_BASE (default 20000): base+25 inbound SMTP (milter),
    base+26 reinjection SMTP (no milter, pollerd delivers here), base+587
    submission (milter, daemon name ORIGINATING), base+30 the milter,
    base+443 Apache with mod_ssl, base+432 PostgreSQL.

    What docs/PROTOCOL.md specifies: one dnsmasq for the sandbox on
    127.0.0.1:base+53 serves _stubmail.<domain> for every ISP that runs a
    stubmail part; a throwaway CA (openssl) signs each ISP's server
    certificate (IP and DNS name); each ISP has a domain key made by
    stubmail-keygen in RUNDIR/x/g (milter and pollerd), a keyring of
    Apache's own in RUNDIR/x/w (www-data), and a token key. Peers find each
    other by DNS; Isp.add_peer writes admin overrides.

    Every server runs in the foreground as a child of this Python process,
    in its own session, and is stopped by its PID (then its process group)
    and waited for. Everything is stopped and the run directory removed on
    exit, on an exception, on Ctrl-C and on SIGTERM; set STUBMAIL_KEEP=1 to
    keep the run directory (logs) after the servers stopped. If this
    process is killed outright (SIGKILL), the next Sandbox.start stops what
    it left running, by the PIDs it recorded in RUNDIR/pids (reap_stale).

    Python 3 standard library only. Needs root (Postfix, Apache and
    PostgreSQL drop privileges themselves; PostgreSQL is started as the
    postgres user).

DIAGNOSTICS
    SandboxError with the tail of the failing server's log.
"""

import atexit
import csv
import ctypes
import glob
import io
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DOMAIN_IPS = {
    "a.example": "127.0.0.2",
    "b.example": "127.0.0.3",
    "c.example": "127.0.0.4",
}

# Port offsets from the port base; every ISP has its own address, so the
# same offsets serve every ISP.
SMTP, REINJECT, MILTER, PG, SUBMISSION, HTTPS = 25, 26, 30, 432, 587, 443
# The sandbox's one DNS server listens on 127.0.0.1:base+DNS.
DNS = 53
# pollerd's udp_listen for UDP stubs (Sandbox(stubs=True)): IP:base+STUBS,
# published as udp= in the ISP's _stubmail record.
STUBS = 90
# mod_stubmail's UDP poll responder (Sandbox(udp_poll=True)): IP:base+UDPPOLL.
UDPPOLL = 444

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "mallory"]

ALL_SERVICES = ("pg", "httpd", "postfix", "milter", "pollerd")
# An ISP with any of these has a domain key and a _stubmail record. "key" alone: a domain that publishes a record and key but runs no
# server here (a test plays its poller).
STUBMAIL_SERVICES = ("httpd", "milter", "pollerd", "key")

APACHE_MODULES = "/usr/lib/apache2/modules"
MODULE_SO = os.path.join(TOP, "mod_stubmail", ".libs", "mod_stubmail.so")
MILTER_BIN = os.path.join(TOP, "milter", "stubmail-milter")
POLLERD_BIN = os.path.join(TOP, "pollerd", "stubmail-pollerd")
MIGRATE = os.path.join(TOP, "sql", "stubmail-migrate")
KEYGEN = os.path.join(TOP, "admin", "stubmail-keygen")
WKS_CLIENT = "/usr/lib/gnupg/gpg-wks-client"    # Debian's path; not on PATH

# Apache error-log lines at these levels fail a test unless expected.
LOG_LEVEL_RE = re.compile(r"\] \[(?:[\w.]+:)?(warn|error|crit|alert|emerg)\] ")
# ... except these, which say nothing about stubmail: Debian's mod_ssl, built
# against a newer libssl3 than the one installed, warns at every start.
BENIGN_LOG = [re.compile(r"\[ssl:warn\] .*AH01882: ")]


class SandboxError(Exception):
    pass


def port_base_default():
    return int(os.environ.get("STUBMAIL_PORT_BASE", "20000"))


def pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2]))
    if not dirs:
        raise SandboxError("PostgreSQL not installed (no /usr/lib/postgresql/*/bin)")
    return dirs[-1]


def postfix_daemon_dir():
    if os.path.exists("/usr/lib/postfix/sbin/master"):    # Debian; postconf -d takes ~2 s
        return "/usr/lib/postfix/sbin"
    out = subprocess.run(["postconf", "-d", "-h", "daemon_directory"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(%s: %s)" % (path, e.strerror)


def port_open(ip, port, timeout=0.5):
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening(ip, port):
    """Is a TCP socket listening on ip:port? (/proc/net/tcp, so that no
    probe connection shows up in the servers' logs.)"""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(ip), "little"), port)
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":    # TCP_LISTEN
                    return True
    except OSError:
        return port_open(ip, port)
    return False


def wait_for(predicate, timeout=20.0, interval=0.2, what="condition"):
    """Call predicate until it returns something true; return that value.
    Raise AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def _starttime(pid):
    """Start time of pid (clock ticks since boot), or None: with the pid it
    names one process, whatever pid reuse happens later."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def reap_stale(verbose=True):
    """Stop what sandboxes whose Python process died (SIGKILL, a CI
    timeout) left running, by the pids they recorded, and remove their run
    directories. Called by Sandbox.start; no-op if there are none."""
    for owner_file in glob.glob("/tmp/smt-*/owner.pid"):
        rundir = os.path.dirname(owner_file)
        try:
            pid, start = open(owner_file).read().split()
            pid = int(pid)
        except (OSError, ValueError):
            continue
        if _starttime(pid) == start:
            continue                    # its owner is alive
        if verbose:
            sys.stderr.write("sandbox: cleaning up after a dead sandbox in %s\n" % rundir)
        try:
            with open(os.path.join(rundir, "pids")) as f:
                entries = [l.split() for l in f if l.strip()]
        except OSError:
            entries = []
        for entry in entries:
            try:
                cpid, cstart = int(entry[0]), entry[1]
            except (ValueError, IndexError):
                continue
            if _starttime(cpid) != cstart:
                continue                # gone, or the pid is someone else's now
            for kill in (lambda: os.killpg(cpid, signal.SIGKILL),
                         lambda: os.kill(cpid, signal.SIGKILL)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
        kill_gpg_agents(rundir)
        shutil.rmtree(rundir, ignore_errors=True)


def kill_gpg_agents(rundir):
    """Stop the gpg-agents started with a GnuPG home below rundir (by the
    servers, keygen or a test's gpg): they detach from the process groups
    the sandbox stops. With no /run/user here, each agent's socket lives in
    its home."""
    homes = {os.path.dirname(s) for s in
             glob.glob(os.path.join(rundir, "**", "S.gpg-agent*"), recursive=True)}
    for home in sorted(homes):
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def _set_pdeathsig():
    # Last resort if this Python process is SIGKILLed: the direct children
    # get SIGTERM. (The normal path stops them explicitly.)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# ---------------------------------------------------------------------------
# One foreground child process.

class Proc:
    """A server run in the foreground as our child, in its own session,
    output appended to a log file. stop() signals its PID, waits, then
    SIGKILLs what is left of its process group."""

    def __init__(self, name, argv, log, stop_signal=signal.SIGTERM,
                 stop_timeout=15.0, user=None, group=None, env=None, cwd=None,
                 registry=None):
        self.name, self.argv, self.log = name, argv, log
        self.registry = registry
        self.stop_signal, self.stop_timeout = stop_signal, stop_timeout
        self.user, self.group, self.env, self.cwd = user, group, env, cwd
        self.popen = None

    def start(self):
        logf = open(self.log, "ab")
        kw = {}
        if self.user:
            kw["user"] = self.user
            kw["group"] = self.group or self.user
            kw["extra_groups"] = []
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_set_pdeathsig, env=self.env, cwd=self.cwd, **kw)
        finally:
            logf.close()
        if self.registry:
            # for reap_stale(), should this Python process die by SIGKILL
            with open(self.registry, "a") as f:
                f.write("%d %s %s\n" % (self.popen.pid, _starttime(self.popen.pid),
                                         self.name.replace(" ", "_")))
        return self

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, sig=None, timeout=None):
        self.begin_stop(sig)
        return self.finish_stop(timeout)

    def begin_stop(self, sig=None):
        """Send the stop signal (without waiting: stop several at once)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig or self.stop_signal)

    def finish_stop(self, timeout=None):
        """Wait for the process after begin_stop; SIGKILL it and its
        process group if it takes longer than timeout."""
        if self.popen is None:
            return None
        pid = self.popen.pid
        try:
            self.popen.wait(timeout if timeout is not None else self.stop_timeout)
        except subprocess.TimeoutExpired:
            sys.stderr.write("sandbox: %s (pid %d) did not stop; killing\n"
                             % (self.name, pid))
            self.popen.kill()
            self.popen.wait()
        # Whatever the server left in its session (Apache children, Postfix
        # daemons, PostgreSQL backends) goes with it.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        rc = self.popen.returncode
        self.popen = None
        return rc


# ---------------------------------------------------------------------------
# Certificates, domain keys, DNS.

def _run(argv, what, **kw):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SandboxError("%s failed (exit %d): %s\n%s%s"
                           % (what, r.returncode, " ".join(argv), r.stdout, r.stderr))
    return r.stdout


def make_ca(d):
    """A throwaway CA in d (P-256, a week): returns the certificate's path."""
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    cert = os.path.join(d, "ca.pem")
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
          "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", os.path.join(d, "ca.key"),
          "-out", cert, "-days", "7", "-subj", "/CN=stubmail sandbox CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"], "making the CA")
    return cert


def make_server_cert(ca_dir, d, domain, ip):
    """Key and certificate for an ISP's Apache, signed by the CA in ca_dir,
    for its address (the outbox URLs name IPs) and its domain name.
    Returns (certificate, key)."""
    os.makedirs(d, exist_ok=True)
    key, csr, cert = (os.path.join(d, n) for n in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName = IP:%s, DNS:%s\n"
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n" % (ip, domain))
    _run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
          "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr,
          "-subj", "/CN=" + domain], "%s: certificate request" % domain)
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(ca_dir, "ca.pem"),
          "-CAkey", os.path.join(ca_dir, "ca.key"), "-CAcreateserial", "-days", "7",
          "-out", cert, "-extfile", ext], "%s: signing the certificate" % domain)
    return cert, key


class DomainKey:
    """A domain's OpenPGP key as stubmail-keygen makes it: home (GNUPGHOME
    with the secret key), fpr, public (the exported key file) and record
    (the _stubmail TXT text keygen says to publish)."""

    def __init__(self, home, domain, public, outbox_url, udp=None):
        if len(home) > 60:
            # gpg-agent's socket path (in the home) must fit sun_path
            raise SandboxError("GnuPG home %s is too long for the agent socket" % home)
        if not os.path.exists(KEYGEN):
            raise SandboxError("%s is not built (run scripts/build)" % KEYGEN)
        os.makedirs(home, mode=0o700, exist_ok=True)
        out = _run([KEYGEN, "-g", home, "-d", domain, "-o", public, "-u", outbox_url]
                   + (["-U", udp] if udp else []),
                   "%s: stubmail-keygen" % domain, timeout=60)
        fpr = re.search(r"^fingerprint ([0-9A-F]{40}(?:[0-9A-F]{24})?)$", out, re.M)
        rec = re.search(r'IN TXT "(v=stubmail1;[^"]*)"', out)
        if not fpr or not rec:
            raise SandboxError("%s: stubmail-keygen said:\n%s" % (domain, out))
        self.home, self.domain, self.public = home, domain, public
        self.fpr, self.record = fpr.group(1), rec.group(1)
        os.chmod(public, 0o644)


class Dns:
    """The sandbox's DNS server: dnsmasq on 127.0.0.1:port, authoritative
    for .example (unknown names NXDOMAIN), serving records: owner name ->
    TXT text. Changing the records restarts it (dnsmasq rereads no
    command-line records on SIGHUP); that takes a few milliseconds."""

    def __init__(self, port, rundir, registry):
        self.port, self.rundir, self.registry = port, rundir, registry
        self.records = {}
        self.proc = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def log(self):
        return os.path.join(self.rundir, "dnsmasq.log")

    def argv(self):
        dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        argv = [dnsmasq, "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--listen-address=127.0.0.1", "--bind-interfaces",
                "--port=%d" % self.port, "--local=/example/", "--local-ttl=60",
                "--pid-file=", "--log-facility=-", "--log-queries"]
        for name, text in sorted(self.records.items()):
            # one argv element each, so blanks need no quoting; dnsmasq
            # splits strings at commas, and our records have none
            if "," in text:
                raise SandboxError("TXT record with a comma: %r" % text)
            argv.append("--txt-record=%s,%s" % (name, text))
        return argv

    def start(self):
        if listening("127.0.0.1", self.port):
            raise SandboxError("127.0.0.1:%d (DNS) is already in use (a stale sandbox? "
                               "another STUBMAIL_PORT_BASE?)" % self.port)
        self.proc = Proc("dnsmasq", self.argv(), self.log, registry=self.registry).start()
        probe = dns_txt_query("ready.example")
        deadline = time.monotonic() + 10
        while not self._answers(probe):
            if not self.proc.alive() or time.monotonic() > deadline:
                self.stop()
                raise SandboxError("dnsmasq did not start on %s:\n%s"
                                   % (self.address, tail(self.log)))
            time.sleep(0.05)

    def _answers(self, query):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(query, ("127.0.0.1", self.port))
                return len(s.recv(512)) >= 12
            except OSError:
                return False

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def running(self):
        return self.proc is not None and self.proc.alive()

    def restart(self):
        self.stop()
        self.start()


def dns_txt_query(name, qid=4711):
    """A DNS query packet: TXT, class IN, recursion desired."""
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", 16, 1)


# ---------------------------------------------------------------------------
# One ISP.

class Isp:
    def __init__(self, name, domain, ip, port_base, rundir, services=ALL_SERVICES,
                 routes=None, users=USERS, poll_interval="2s", module=True,
                 apache_loglevel="info", resolver=None, ca_dir=None,
                 httpd_extra=(), stubs=False, pollerd_extra=(), udp_poll=False,
                 pollerd_debug=False):
        self.name, self.domain, self.ip = name, domain, ip
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
        # Apache runs the UDP poll responder on udp_poll_address
        self.udp_poll = udp_poll
        self.key = None                 # DomainKey
        self.token_keys = []            # [(key id, secret hex)], newest last
        # domain -> ip of every other ISP, for transport_maps
        self.routes = {d: i for d, i in (routes or DOMAIN_IPS).items() if d != domain}
        self.procs = {}
        self.registry = None        # file listing our children's pids
        self.expected_log = []      # regexes of Apache error-log lines a test expects
        self._log_offset = 0

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
        return self.port(HTTPS)

    @property
    def udp_poll_address(self):
        """mod_stubmail's StubmailUDPResponder, "IP:PORT"."""
        return "%s:%d" % (self.ip, self.port(UDPPOLL))

    @property
    def stub_address(self):
        """pollerd's udp_listen, "IP:PORT" (whether or not stubs are on)."""
        return "%s:%d" % (self.ip, self.port(STUBS))

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
        """Apache's own keyring (www-data): the keys of domains that logged in."""
        return self.path("w")

    @property
    def pg_port(self):
        return self.port(PG)

    @property
    def milter_port(self):
        return self.port(MILTER)

    @property
    def outbox_url(self):
        return "https://%s:%d/stubmail" % (self.ip, self.https_port)

    @property
    def conninfo(self):
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
        return self.path("httpd", "error.log")

    @property
    def access_log(self):
        return self.path("httpd", "access.log")

    @property
    def wkd_dir(self):
        """The openpgpkey/ directory Apache serves at /.well-known/openpgpkey."""
        return self.path("wkd", "openpgpkey")

    def wkd_path(self, address):
        """Where the WKD answer for address lives (hash by gpg-wks-client)."""
        out = _run([WKS_CLIENT, "--print-wkd-hash", address], "gpg-wks-client")
        return os.path.join(self.wkd_dir, address.rsplit("@", 1)[1].lower(), "hu",
                            out.split()[0])

    def wkd_install(self, home, fpr, address):
        """Publish key fpr of GnuPG home for address the way an admin does:
        gpg-wks-client --install-key, run in the directory above wkd_dir."""
        _run([WKS_CLIENT, "--install-key", fpr, address], "gpg-wks-client --install-key",
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
        if "httpd" in self.services:
            www = pwd.getpwnam("www-data")
            os.makedirs(self.www_gnupg_home, mode=0o700, exist_ok=True)
            os.chown(self.www_gnupg_home, www.pw_uid, www.pw_gid)
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
            self._create_db()
        if "httpd" in self.services:
            self._setup_httpd()
            self.start_httpd()
        if "milter" in self.services:
            self._setup_milter()
            self.start_milter()
        if "postfix" in self.services:
            self._setup_postfix()
            self.start_postfix()
        if "pollerd" in self.services:
            self._setup_pollerd()
            self.start_pollerd()
        return self

    STOP_ORDER = (("pollerd",), ("httpd", "postfix", "milter"), ("pg",))

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
        offsets = {"pg": [PG], "httpd": [HTTPS], "milter": [MILTER],
                   "postfix": [SMTP, REINJECT, SUBMISSION]}
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

    # -- PostgreSQL ----------------------------------------------------------
    def _setup_pg(self):
        pw = pwd.getpwnam("postgres")
        self.pg_data = self.path("pg", "data")
        self.pg_sock = self.path("pg", "sock")
        for d in (self.path("pg"), self.pg_data, self.pg_sock):
            os.makedirs(d, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o700 if d == self.pg_data else 0o755)
        r = subprocess.run(
            [os.path.join(pg_bindir(), "initdb"), "-D", self.pg_data, "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "-U", "postgres", "--no-sync"],
            user="postgres", group="postgres", extra_groups=[], cwd="/",
            capture_output=True, text=True, env=self._pg_env())
        if r.returncode != 0:
            raise SandboxError("%s initdb failed:\n%s%s" % (self.domain, r.stdout, r.stderr))

    def _pg_env(self):
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": self.path("pg")}

    def start_db(self):
        """Start PostgreSQL (again) and wait until it accepts queries."""
        argv = [os.path.join(pg_bindir(), "postgres"), "-D", self.pg_data,
                "-c", "listen_addresses=" + self.ip, "-p", str(self.pg_port),
                "-c", "unix_socket_directories=" + self.pg_sock,
                "-c", "max_connections=100", "-c", "log_min_messages=warning"]
        self._spawn("pg", argv, self.path("pg.log"), stop_signal=signal.SIGINT,
                    stop_timeout=30, user="postgres", group="postgres",
                    env=self._pg_env(), cwd="/")
        isready = os.path.join(pg_bindir(), "pg_isready")
        self._await("pg", lambda: subprocess.run(
            [isready, "-q", "-h", self.ip, "-p", str(self.pg_port), "-U", "postgres",
             "-d", "postgres"]).returncode == 0,
            self.path("pg.log"))

    def stop_db(self):
        """Fast shutdown of PostgreSQL (clients are disconnected)."""
        p = self.procs.pop("pg", None)
        if p is not None:
            p.stop()

    def db_running(self):
        p = self.procs.get("pg")
        return p is not None and p.alive()

    def _create_db(self):
        su = "host=%s port=%d dbname=postgres user=postgres" % (self.ip, self.pg_port)
        for q in ("CREATE ROLE stubmail LOGIN", "CREATE DATABASE stubmail OWNER stubmail"):
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", su, "-c", q],
                           check=True, capture_output=True)
        r = subprocess.run([MIGRATE, self.conninfo], capture_output=True, text=True)
        if r.returncode != 0:
            raise SandboxError("%s stubmail-migrate failed:\n%s%s"
                               % (self.domain, r.stdout, r.stderr))

    def sql(self, query, timeout=30):
        """Run query with psql as the stubmail role; return the rows of the
        last statement as lists of strings (NULL and '' both read as '')."""
        r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-t",
                            "-d", self.conninfo, "-c", query],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise SandboxError("%s sql failed: %s\n%s" % (self.domain, query, r.stderr.strip()))
        # a row of one NULL/empty column is an empty line, which csv reads as []
        return [row or [""] for row in csv.reader(io.StringIO(r.stdout))]

    def sql_value(self, query):
        rows = self.sql(query)
        return rows[0][0] if rows and rows[0] else None

    def count(self, table, where="true"):
        return int(self.sql_value("SELECT count(*) FROM %s WHERE %s" % (table, where)))

    def table_counts(self, tables=("peer", "message", "outbox", "address_book", "received")):
        return {t: self.count(t) for t in tables}

    # -- Apache httpd --------------------------------------------------------
    def _setup_httpd(self):
        d = self.path("httpd")
        for sub in ("", "run", "htdocs"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        if self.module and not os.path.exists(MODULE_SO):
            raise SandboxError("%s is not built (run scripts/build)" % MODULE_SO)
        lines = [
            'ServerRoot "%s"' % d,
            "ServerName %s" % self.domain,
            "Listen %s:%d" % (self.ip, self.https_port),
            'PidFile "%s/httpd.pid"' % d,
            'DefaultRuntimeDir "%s/run"' % d,
            'ErrorLog "%s"' % self.error_log,
            "LogLevel %s" % self.apache_loglevel,
            'LogFormat "%h %u [%{%Y-%m-%d %H:%M:%S}t] \\"%r\\" %>s %B" stubmail',
            'CustomLog "%s" stubmail' % self.access_log,
            "LoadModule mpm_event_module %s/mod_mpm_event.so" % APACHE_MODULES,
            "LoadModule authz_core_module %s/mod_authz_core.so" % APACHE_MODULES,
            "LoadModule dbd_module %s/mod_dbd.so" % APACHE_MODULES,
            "User www-data",
            "Group www-data",
            "StartServers 1",
            "ServerLimit 2",
            "ThreadsPerChild 16",
            "MaxRequestWorkers 32",
            "MinSpareThreads 8",
            "MaxSpareThreads 32",
            'DocumentRoot "%s/htdocs"' % d,
            "<Directory />",
            "    Require all denied",
            "</Directory>",
            "DBDriver pgsql",
            'DBDParams "%s"' % self.conninfo,
            "DBDMax 8",
            "LoadModule socache_shmcb_module %s/mod_socache_shmcb.so" % APACHE_MODULES,
            "LoadModule ssl_module %s/mod_ssl.so" % APACHE_MODULES,
            # its info lines (one per connection) would drown ours
            "LogLevel %s ssl:warn" % self.apache_loglevel,
            'SSLSessionCache "shmcb:%s/run/ssl_scache(512000)"' % d,
            "<VirtualHost %s:%d>" % (self.ip, self.https_port),
            "    ServerName %s" % self.domain,
            "    SSLEngine on",
            '    SSLCertificateFile "%s"' % self.tls_cert,
            '    SSLCertificateKeyFile "%s"' % self.tls_key,
            "</VirtualHost>",
        ]
        if self.module:
            lines += [
                "LoadModule stubmail_module %s" % MODULE_SO,
                'StubmailSpoolDir "%s"' % self.spool_dir,
                "StubmailDomain %s" % self.domain,
                'StubmailPublicKey "%s"' % self.key.public,
                'StubmailGnupgHome "%s"' % self.www_gnupg_home,
                "StubmailResolver %s" % self.resolver,
            ] + ["StubmailTokenKey %s %s" % k for k in self.token_keys]
            if self.udp_poll:
                lines += [
                    "StubmailUDPResponder %s" % self.udp_poll_address,
                    'StubmailUDPDatabase "%s"' % self.conninfo,
                ]
            # tests log in by hand far more often than pollers do; a test of
            # the login limits sets its own in httpd_extra (later wins)
            lines += ["StubmailLoginRate 1000/60", "StubmailLoginAddressRate 1000/60"]
            lines += ["%s %s" % kv for kv in self.httpd_extra]
            lines += [
                "<Location /stubmail>",
                "    SetHandler stubmail",
                "    Require all granted",
                "</Location>",
            ]
        # users' keys, WKD style on the outbox origin (docs/admin-guide.md):
        # a plain directory that gpg-wks-client --install-key fills
        os.makedirs(self.wkd_dir, exist_ok=True)
        lines += [
            "LoadModule alias_module %s/mod_alias.so" % APACHE_MODULES,
            'Alias /.well-known/openpgpkey "%s"' % self.wkd_dir,
            '<Directory "%s">' % self.wkd_dir,
            "    Require all granted",
            "</Directory>",
        ]
        self.httpd_conf = os.path.join(d, "httpd.conf")
        with open(self.httpd_conf, "w") as f:
            f.write("# written by tests/sandbox.py for %s\n" % self.domain)
            f.write("\n".join(lines) + "\n")

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

    # -- stubmail-milter -----------------------------------------------------
    def _setup_milter(self):
        if not os.path.exists(MILTER_BIN):
            raise SandboxError("%s is not built (run scripts/build)" % MILTER_BIN)
        self.milter_conf = self.path("milter.conf")
        with open(self.milter_conf, "w") as f:
            f.write("# written by tests/sandbox.py for %s\n" % self.domain)
            f.write("socket inet:%d@%s\n" % (self.milter_port, self.ip))
            f.write("database %s\n" % self.conninfo)
            f.write("spool_dir %s\n" % self.spool_dir)
            f.write("originating_daemon ORIGINATING\n")
            f.write("trusted_networks %s/32\n" % self.ip)
            f.write("db_connections 2\n")
            f.write(self._pgp_conf())

    def start_milter(self):
        self._spawn("milter", [MILTER_BIN, "-c", self.milter_conf, "-f"], self.milter_log)
        self._await("milter", lambda: listening(self.ip, self.milter_port), self.milter_log)

    def stop_milter(self):
        p = self.procs.pop("milter", None)
        if p is not None:
            p.stop()

    # -- Postfix -------------------------------------------------------------
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
        main = """\
# written by tests/sandbox.py for {domain}
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
myhostname = mx.{domain}
mydomain = {domain}
myorigin = $mydomain
mydestination =
# Postfix accepts only addresses configured on an interface here, and
# 127.0.0.2.. are merely routed to lo: the listeners in master.cf name the
# ISP's address explicitly, and proxy_interfaces makes it "myself".
inet_interfaces = 127.0.0.1
proxy_interfaces = {ip}
inet_protocols = ipv4
smtp_bind_address = {ip}
mynetworks = {ip}/32
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_banner = $myhostname ESMTP stubmail sandbox
transport_maps = inline:{{ {transports} }}
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = inline:{{ {mailboxes} }}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtpd_milters = {milter}
non_smtpd_milters = {milter}
milter_default_action = tempfail
milter_connect_timeout = 10s
delay_warning_time = 0
queue_run_delay = 3s
minimal_backoff_time = 3s
maximal_backoff_time = 6s
smtp_connect_timeout = 5s
""".format(domain=self.domain, d=d, ip=self.ip, transports=transports,
           mail=self.mail_dir, mailboxes=mailboxes, uid=nobody.pw_uid,
           gid=nobody.pw_gid, milter=milter)
        listen = "%s:%%d  inet  n  -  n  -  -  smtpd" % self.ip
        master = "\n".join([
            "# written by tests/sandbox.py for %s" % self.domain,
            "# inbound: mail from other ISPs (milter sees it, must not divert)",
            listen % self.smtp_port,
            "# submission: local users (milter diverts outbound mail)",
            listen % self.submission_port,
            "  -o syslog_name=postfix/submission",
            "  -o milter_macro_daemon_name=ORIGINATING",
            "# reinjection: pollerd delivers pulled mail here, no milter",
            listen % self.reinject_port,
            "  -o syslog_name=postfix/reinject",
            "  -o smtpd_milters=",
            "pickup    unix  n  -  n  60   1  pickup",
            "cleanup   unix  n  -  n  -    0  cleanup",
            "qmgr      unix  n  -  n  300  1  qmgr",
            "rewrite   unix  -  -  n  -    -  trivial-rewrite",
            "bounce    unix  -  -  n  -    0  bounce",
            "defer     unix  -  -  n  -    0  bounce",
            "trace     unix  -  -  n  -    0  bounce",
            "verify    unix  -  -  n  -    1  verify",
            "flush     unix  n  -  n  1000? 0 flush",
            "proxymap  unix  -  -  n  -    -  proxymap",
            "proxywrite unix -  -  n  -    1  proxymap",
            "smtp      unix  -  -  n  -    -  smtp",
            "relay     unix  -  -  n  -    -  smtp",
            "showq     unix  n  -  n  -    -  showq",
            "error     unix  -  -  n  -    -  error",
            "retry     unix  -  -  n  -    -  error",
            "discard   unix  -  -  n  -    -  discard",
            "local     unix  -  n  n  -    -  local",
            "virtual   unix  -  n  n  -    -  virtual",
            "lmtp      unix  -  -  n  -    -  lmtp",
            "anvil     unix  -  -  n  -    1  anvil",
            "scache    unix  -  -  n  -    1  scache",
            "postlog   unix-dgram n - n -  1  postlogd",
        ]) + "\n"
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write(main)
        with open(os.path.join(etc, "master.cf"), "w") as f:
            f.write(master)
        self.postfix_etc = etc
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

    def start_postfix(self):
        master = os.path.join(postfix_daemon_dir(), "master")
        self._spawn("postfix", [master, "-c", self.postfix_etc, "-s"],
                    self.path("postfix.out"))
        ports = [self.smtp_port, self.submission_port, self.reinject_port]
        self._await("postfix", lambda: all(listening(self.ip, p) for p in ports),
                    self.maillog)

    def postqueue(self):
        """The queue as postqueue -j objects (one dict per message)."""
        import json
        r = subprocess.run(["postqueue", "-c", self.postfix_etc, "-j"],
                           capture_output=True, text=True)
        return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]

    def flush_queue(self):
        subprocess.run(["postqueue", "-c", self.postfix_etc, "-f"], capture_output=True)

    # -- stubmail-pollerd ----------------------------------------------------
    def _setup_pollerd(self):
        if not os.path.exists(POLLERD_BIN):
            raise SandboxError("%s is not built (run scripts/build)" % POLLERD_BIN)
        spool = self.path("pollerd-spool")
        for d in (spool, self.quarantine_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o700)
        self.pollerd_conf = self.path("pollerd.conf")
        with open(self.pollerd_conf, "w") as f:
            f.write("# written by tests/sandbox.py for %s\n" % self.domain)
            f.write("domain %s\n" % self.domain)
            f.write("database %s\n" % self.conninfo)
            f.write("deliver_to smtp://%s:%d\n" % (self.ip, self.reinject_port))
            f.write("interval %s\n" % self.poll_interval)
            f.write("concurrency 4\n")
            f.write("timeout 20s\n")
            f.write("spool_dir %s\n" % spool)
            f.write(self._pgp_conf())
            f.write("quarantine_dir %s\n" % self.quarantine_dir)
            if self.stubs:
                f.write("udp_listen %s\n" % self.stub_address)
            for line in self.pollerd_extra:
                f.write(line + "\n")

    @property
    def quarantine_dir(self):
        return self.path("quarantine")

    def _pgp_conf(self):
        """The keys the milter and pollerd share."""
        return ("resolver %s\ngnupg_home %s\ndomain_key %s\nca_file %s\n"
                % (self.resolver, self.gnupg_home, self.fpr, self.ca_file))

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

    def logs_tail(self, n=25):
        parts = []
        for label, path in (("apache error log", self.error_log),
                            ("apache access log", self.access_log),
                            ("postfix maillog", self.maillog),
                            ("milter", self.milter_log),
                            ("pollerd", self.pollerd_log),
                            ("postgresql", self.path("pg.log"))):
            if os.path.exists(path):
                parts.append("--- %s %s (%s)\n%s" % (self.domain, label, path, tail(path, n)))
        return "\n".join(parts)


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


def q(s):
    """SQL string literal."""
    return "'" + str(s).replace("'", "''") + "'"


# ---------------------------------------------------------------------------
# A set of ISPs, stopped together.

_live = []


def _stop_all_live():
    for sb in list(_live):
        try:
            sb.stop()
        except Exception as e:
            sys.stderr.write("sandbox: %s\n" % e)


def _on_signal(signum, frame):
    # SIGTERM/SIGHUP behave like Ctrl-C: unwind, run finally/__exit__.
    raise KeyboardInterrupt("signal %d" % signum)


def install_signal_handlers():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    # Ctrl-C, even if started from a shell that ignores SIGINT in the background
    signal.signal(signal.SIGINT, signal.default_int_handler)


atexit.register(_stop_all_live)


class Sandbox:
    """The ISPs of one test run. services maps a domain to the services it
    runs (default: all five); e.g. {"c.example": ("postfix",)} makes
    c.example a plain Postfix that only receives, {"b.example": ("key",)} a
    domain with a published key and record but no servers. httpd_extra:
    (directive, value) lines for every ISP's httpd.conf. stubs: every
    pollerd listens for UDP stubs on IP:base+90 (Isp.stub_address), which
    the ISP's record publishes as udp=. pollerd_extra: "key value" lines
    for every pollerd.conf."""

    def __init__(self, domains=("a.example", "b.example"), port_base=None,
                 rundir=None, services=None, poll_interval="2s", keep=None,
                 httpd_extra=(), stubs=False, pollerd_extra=(), udp_poll=False,
                 pollerd_debug=False):
        self.domains = list(domains)
        self.pollerd_debug = pollerd_debug
        self.port_base = port_base if port_base is not None else port_base_default()
        self.services = services or {}
        self.poll_interval = poll_interval
        self.keep = keep if keep is not None else bool(os.environ.get("STUBMAIL_KEEP"))
        self.rundir = rundir
        self.httpd_extra = list(httpd_extra)
        self.stubs = stubs                  # pollerds listen for UDP stubs
        self.pollerd_extra = list(pollerd_extra)
        self.udp_poll = udp_poll            # Apaches run the UDP poll responder
        self.isps = {}
        self.dns = None

    @property
    def ca_file(self):
        return os.path.join(self.rundir, "ca", "ca.pem")

    def start(self):
        if os.geteuid() != 0:
            raise SandboxError("the sandbox runs real servers: run it as root")
        reap_stale()
        if self.rundir is None:
            # short: gpg agent sockets later live below it
            self.rundir = tempfile.mkdtemp(prefix="smt-", dir="/tmp")
        os.chmod(self.rundir, 0o755)
        with open(os.path.join(self.rundir, "owner.pid"), "w") as f:
            f.write("%d %s\n" % (os.getpid(), _starttime(os.getpid())))
        _live.append(self)
        registry = os.path.join(self.rundir, "pids")
        try:
            ca_dir = os.path.join(self.rundir, "ca")
            make_ca(ca_dir)
            self.dns = Dns(self.port_base + DNS, self.rundir, registry)
            for dom in self.domains:
                name = dom.split(".")[0]
                isp = Isp(name, dom, DOMAIN_IPS[dom], self.port_base,
                          os.path.join(self.rundir, name),
                          services=self.services.get(dom, ALL_SERVICES),
                          poll_interval=self.poll_interval,
                          resolver=self.dns.address, ca_dir=ca_dir,
                          httpd_extra=self.httpd_extra, stubs=self.stubs,
                          pollerd_extra=self.pollerd_extra, udp_poll=self.udp_poll,
                          pollerd_debug=self.pollerd_debug)
                isp.registry = registry
                self.isps[dom] = isp
                isp.make_identity()
                if isp.key:
                    self.dns.records["_stubmail." + dom] = isp.key.record
            self.dns.start()
            for isp in self.isps.values():
                isp.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop every ISP (pollers first, databases last, each stage across
        all ISPs at once), the DNS server and the gpg-agents, and remove the
        run directory."""
        errors = []
        for stage in Isp.STOP_ORDER:
            procs = []
            for isp in self.isps.values():
                procs += [(isp, n, isp.procs.pop(n)) for n in stage if n in isp.procs]
            for isp, name, p in procs:
                try:
                    p.begin_stop()
                except Exception as e:
                    errors.append("%s %s: %s" % (isp.domain, name, e))
            for isp, name, p in procs:
                try:
                    p.finish_stop()
                except Exception as e:
                    errors.append("%s %s: %s" % (isp.domain, name, e))
        if self.dns is not None:
            try:
                self.dns.stop()
            except Exception as e:
                errors.append("dnsmasq: %s" % e)
        if self.rundir and os.path.isdir(self.rundir):
            try:
                kill_gpg_agents(self.rundir)
            except Exception as e:
                errors.append("gpg-agents: %s" % e)
        if self in _live:
            _live.remove(self)
        if self.rundir and os.path.isdir(self.rundir):
            if self.keep:
                sys.stderr.write("sandbox: kept %s\n" % self.rundir)
            else:
                shutil.rmtree(self.rundir, ignore_errors=True)
        if errors:
            raise SandboxError("; ".join(errors))

    def __getitem__(self, domain):
        return self.isps[domain]

    def __iter__(self):
        return iter(self.isps.values())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def logs_tail(self, n=25):
        parts = [isp.logs_tail(n) for isp in self]
        if self.dns is not None and os.path.exists(self.dns.log):
            parts.append("--- dnsmasq (%s)\n%s" % (self.dns.log, tail(self.dns.log, n)))
        return "\n".join(parts)

    # -- DNS ------------------------------------------------------------------
    def set_txt(self, domain, text):
        """Publish text as _stubmail.<domain> (None: no record), restart the
        DNS server and forget cached answers about domain everywhere."""
        name = "_stubmail." + domain
        if text is None:
            self.dns.records.pop(name, None)
        else:
            self.dns.records[name] = text
        self.dns.restart()
        self.forget_dns(domain)

    def forget_dns(self, domain=None):
        """Empty the dns_cache rows (for domain, or all) of every running
        database, so the next lookup asks the DNS server."""
        where = "domain = %s" % q(domain) if domain else "true"
        for isp in self:
            if isp.db_running():
                isp.sql("DELETE FROM dns_cache WHERE " + where)

    def dns_down(self):
        """Stop the DNS server (lookups fail temporarily: the port is closed)."""
        self.dns.stop()

    def dns_up(self):
        if not self.dns.running():
            self.dns.start()

    def unexpected_log_lines(self):
        return [l for isp in self for l in isp.unexpected_log_lines()]

    def log_mark(self):
        for isp in self:
            isp.log_mark()


# ---------------------------------------------------------------------------
# The demo: alice@a.example -> bob@b.example, by pull, step by step.

DEMO_MESSAGE = (
    "From: Alice <alice@a.example>\r\n"
    "To: Bob <bob@b.example>\r\n"
    "Subject: lunch on Thursday?\r\n"
    "Date: %s\r\n"
    "Message-ID: <demo-%d@a.example>\r\n"
    "\r\n"
    "Hi Bob,\r\n"
    "\r\n"
    "this mail waits in a.example's outbox until b.example pulls it.\r\n"
    "\r\n"
    "Alice\r\n")


def _say(*a):
    print(*a, flush=True)


def demo(keep=False):
    import email.utils
    install_signal_handlers()
    # A poll interval of ten minutes: the UDP stub, not the interval, makes
    # the mail arrive at once; idle checks go by UDP.
    sb = Sandbox(["a.example", "b.example"], keep=False, poll_interval="10m",
                 stubs=True, udp_poll=True, pollerd_debug=True)
    _say("== starting a.example (127.0.0.2) and b.example (127.0.0.3): PostgreSQL, "
         "Apache + mod_stubmail + mod_ssl (+ its UDP poll responder), Postfix + "
         "stubmail-milter, stubmail-pollerd (polling every 10 minutes, listening "
         "for UDP stubs)")
    sb.start()
    supervisor_ok = False
    try:
        a, b = sb["a.example"], sb["b.example"]
        _say("   run directory %s, ports from %d" % (sb.rundir, sb.port_base))
        _say("== each has a domain key (stubmail-keygen) and a certificate from a "
             "throwaway CA; dnsmasq on %s publishes:" % sb.dns.address)
        for name, text in sorted(sb.dns.records.items()):
            _say('   %s. IN TXT "%s"' % (name, text))
        b.add_contact("bob@b.example", "alice@a.example")
        _say("== bob@b.example has alice@a.example in his address book")

        msg = (DEMO_MESSAGE % (email.utils.formatdate(), os.getpid())).encode()
        _say("== swaks: alice@a.example -> bob@b.example, to a.example's submission "
             "port %s:%d" % (a.ip, a.submission_port))
        t_sent = time.monotonic()
        r = a.send("alice@a.example", "bob@b.example", msg)
        for l in r.replies()[-3:]:
            _say("   " + l.strip())
        if not r.ok:
            raise SandboxError("swaks failed:\n%s" % r)

        row = wait_for(lambda: a.sql(
            "SELECT m.id, m.sender, o.recipient, m.size, m.created_at FROM message m "
            "JOIN outbox o ON o.message_id = m.id ORDER BY m.created_at DESC LIMIT 1"),
            timeout=15, what="the message in a.example's outbox")[0]
        mid = row[0]
        _say("== stored in a.example's outbox (SQL on a.example):")
        _say("   id %s  from %s  to %s  %s bytes  at %s" % tuple(row))
        fmt, spool_name = a.sql("SELECT format, spool_name FROM message WHERE id = %s"
                                % q(mid))[0]
        try:
            with open(os.path.join(a.spool_dir, spool_name), "rb") as f:
                head = f.read(64)
        except OSError:         # already pulled and deleted
            head = b""
        _say("   stored as %s: signed by a.example, encrypted to b.example's key "
             "(first bytes %s)" % (fmt, head[:16].hex() or "gone"))

        def grep(path, regex):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    return [l.rstrip("\n") for l in f if re.search(regex, l)]
            except OSError:
                return []

        def step(title, sources, timeout=60):
            """Wait until every (path, regex) of sources matches; print them."""
            found = wait_for(lambda: [grep(p, r) for p, r in sources]
                             if all(grep(p, r) for p, r in sources) else None,
                             timeout=timeout, what=title)
            _say("== " + title + ":")
            for lines in found:
                _say("   " + lines[-1].strip())

        step("a.example's milter sent a UDP stub to b.example's published udp= "
             "address; b.example's pollerd polls a.example now, not in 10 minutes",
             [(b.pollerd_log, r"stub from .*<alice@a\.example> to <bob@b\.example>.*"
               r"polling a\.example")], timeout=15)
        step("b.example logged in at a.example with its domain key (a.example's "
             "Apache checked the key against b.example's DNS record)",
             [(a.access_log, r"POST /stubmail/v1/login .* 200 "),
              (a.error_log, r"domain=b\.example .*login")])
        step("b.example subscribed to (alice, bob) and polled (a.example's Apache)",
             [(a.error_log, r"domain=b\.example .*subscription: .*added"),
              (a.access_log, r" b\.example .*GET /stubmail/v1/poll\?version=\d+ .* 200 "),
              (a.error_log, r"domain=b\.example .*poll: .*[1-9]\d* listed")])
        step("fetched by b.example (a.example's Apache)",
             [(a.access_log, r"GET /stubmail/v1/message/%s .* 200 " % mid),
              (a.error_log, r"id=%s: fetch" % mid)])
        step("delivered into bob's Maildir (b.example's pollerd and Postfix)",
             [(b.pollerd_log, mid + r".*delivered"),
              (b.maillog, r"to=<bob@b\.example>, relay=virtual.*status=sent")])
        _say("   in bob's Maildir %.1f s after swaks sent it" % (time.monotonic() - t_sent))
        step("acked to a.example",
             [(a.access_log, r"POST /stubmail/v1/message/%s/ack .* 200 " % mid),
              (b.pollerd_log, mid + r".*acked")])
        wait_for(lambda: a.sql_value("SELECT retrieved_at FROM outbox WHERE message_id = %s"
                                     % q(mid)), timeout=10, what="retrieved_at")
        _say("== retrieved, as a.example sees it (SQL on a.example):")
        for row in a.sql("SELECT o.recipient, o.retrieved_at, m.body_deleted_at "
                         "FROM outbox o JOIN message m ON m.id = o.message_id "
                         "WHERE o.message_id = %s" % q(mid)):
            _say("   %s retrieved at %s; body deleted at %s"
                 % (row[0], row[1], row[2] or "(not yet)"))
        path, data = b.maildir_messages("bob")[-1]
        _say("== bob's Maildir: %s" % path)
        for line in data.decode("utf-8", "replace").splitlines():
            _say("   | " + line)
        # An idle check: one authenticated datagram each way, no HTTP. The
        # first cycle after a delivery may poll by HTTP once to learn the idle
        # ETag (the UDP poll's cursor); the next one asks by UDP only.
        _say("== idle checks (SIGUSR1 makes b.example's pollerd poll now):")
        http_re, idle_re = r" b\.example .*/stubmail/v1/poll", r"a\.example: UDP poll says nothing new"
        for attempt in range(3):
            polls, idles = len(grep(a.access_log, http_re)), len(grep(b.pollerd_log, idle_re))
            b.poll_now()
            time.sleep(3)
            http = grep(a.access_log, http_re)[polls:]
            for l in http:
                _say("   check %d by HTTP: %s" % (attempt + 1, l.strip()))
            if grep(b.pollerd_log, idle_re)[idles:]:
                _say("   check %d by UDP: %s" % (attempt + 1, grep(b.pollerd_log, idle_re)[-1].strip()))
                if not http:
                    _say("   one datagram each way to a.example's responder, no HTTP request")
                    break
        _say("== done: pulled, not pushed")
        if keep:
            supervisor_ok = True
            return sb
    finally:
        if not supervisor_ok:
            _say("== stopping everything")
            sb.stop()
    return None


def _supervise(sb, notify_fd):
    """--keep: the servers' parent stays alive in the background until told
    to stop (SIGTERM / SIGINT), then stops them and removes the run dir."""
    state = os.path.join(sb.rundir, "sandbox.pid")
    with open(state, "w") as f:
        f.write("%d\n" % os.getpid())
    os.write(notify_fd, b"ok")
    os.close(notify_fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    log = os.open(os.path.join(sb.rundir, "sandbox.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        sb.stop()
    os._exit(0)


def demo_keep():
    """Run the demo in a child that becomes the servers' long-lived parent;
    return when the demo is done and print how to stop it."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        os.setsid()
        try:
            sb = demo(keep=True)
        except BaseException as e:
            sys.stderr.write("demo: %s\n" % e)
            sys.stderr.flush()
            os._exit(1)
        _supervise(sb, wfd)
    os.close(wfd)
    got = b""
    while True:
        chunk = os.read(rfd, 16)
        if not chunk:
            break
        got += chunk
    if got != b"ok":
        os.waitpid(pid, 0)
        return 1
    rundir = _find_rundir(pid)
    print("== still running (supervisor pid %d). Stop with: python3 %s stop %s"
          % (pid, os.path.relpath(os.path.abspath(__file__)), rundir), flush=True)
    return 0


def _find_rundir(pid):
    for p in glob.glob("/tmp/smt-*/sandbox.pid"):
        try:
            if int(open(p).read().strip()) == pid:
                return os.path.dirname(p)
        except (OSError, ValueError):
            pass
    return "?"


def stop_kept(rundir):
    state = os.path.join(rundir, "sandbox.pid")
    try:
        pid = int(open(state).read().strip())
    except (OSError, ValueError):
        print("sandbox: no sandbox.pid in %s" % rundir, file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("sandbox: supervisor %d is gone" % pid, file=sys.stderr)
        shutil.rmtree(rundir, ignore_errors=True)
        return 1

    def gone():
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().split(") ", 1)[1].startswith("Z")   # zombie: done
        except OSError:
            return True
    try:
        wait_for(gone, timeout=60, what="the sandbox to stop")
    except AssertionError as e:
        print("sandbox: %s" % e, file=sys.stderr)
        return 1
    print("stopped; removed %s" % rundir)
    return 0


def main(argv):
    if len(argv) >= 1 and argv[0] == "demo":
        if "--keep" in argv[1:]:
            return demo_keep()
        try:
            demo()
        except KeyboardInterrupt:
            return 130
        except SandboxError as e:
            print("demo failed: %s" % e, file=sys.stderr)
            return 1
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        return stop_kept(argv[1])
    if len(argv) >= 1 and argv[0] == "start":
        install_signal_handlers()
        doms = argv[1:] or ["a.example", "b.example"]
        services = {}
        if os.environ.get("SANDBOX_SERVICES"):
            services = {d: tuple(os.environ["SANDBOX_SERVICES"].split(",")) for d in doms}
        sb = Sandbox(doms, services=services)
        try:
            sb.start()
            for isp in sb:
                print("%s: %s outbox %s smtp %d submission %d reinject %d pg '%s' logs %s"
                      % (isp.domain, isp.ip, isp.outbox_url, isp.smtp_port,
                         isp.submission_port, isp.reinject_port, isp.conninfo,
                         isp.rundir), flush=True)
            print("DNS %s, CA %s" % (sb.dns.address, sb.ca_file), flush=True)
            print("running; Ctrl-C stops", flush=True)
            while True:
                signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            sb.stop()
        return 0
    print(__doc__.split("DESCRIPTION")[0].strip(), file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
