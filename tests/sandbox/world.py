"""world — Sandbox: the ISPs of one test run and their one DNS server,
started together and stopped together (pollers first, databases last)."""

import os
import shutil
import sys
import tempfile

from .common import (ALL_SERVICES, DNS, DNSSEC_AUTH, DNSSEC_RESOLVER, DOMAIN_IPS,
                     USERS, SandboxError, port_base_default, q, tail)
from .dns import Dns
from .dnssec import Dnssec
from .isp import Isp
from .pki import make_ca
from .procs import kill_gpg_agents, live, reap_stale, starttime


class Sandbox:
    """The ISPs of one test run. services maps a domain to the services it
    runs (default: all five); e.g. {"c.example": ("postfix",)} makes
    c.example a plain Postfix that only receives, {"b.example": ("key",)} a
    domain with a published key and record but no servers. httpd_extra:
    (directive, value) lines for every ISP's httpd.conf. stubs: every
    pollerd listens for UDP stubs on IP:base+90 (Isp.stub_address), which
    the ISP's record publishes as udp=. pollerd_extra: "key value" lines
    for every pollerd.conf. pg_settings: (name, value) settings for every
    PostgreSQL (e.g. more max_connections for many databases in one).
    front_ends: Apaches per ISP that runs httpd (1 or 2), all on its one
    database and spool (Isp.front_ends; the first is the one DNS names).
    dnssec: domains whose records are served from zones signed with
    ldns-signzone, through a local validating unbound that every ISP uses
    as its resolver (tests/sandbox/dnssec.py); the other domains' records
    reach it unsigned.
    users: the local parts that have a Maildir at every ISP (default
    common.USERS).
    isp_options: {domain: {keyword: value}}, more Isp arguments for one
    ISP (e.g. {"a.example": {"milters": 2, "standby": True}})."""

    def __init__(self, domains=("a.example", "b.example"), port_base=None,
                 rundir=None, services=None, poll_interval="2s", keep=None,
                 httpd_extra=(), stubs=False, pollerd_extra=(), udp_poll=False,
                 pollerd_debug=False, pg_settings=(), front_ends=1, dnssec=(),
                 users=None, isp_options=None):
        self.domains = list(domains)
        self.front_ends = front_ends
        self.users = list(users or USERS)
        self.isp_options = isp_options or {}
        self.pg_settings = list(pg_settings)
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
        self.dnssec_domains = list(dnssec)
        self.dnssec = None

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
            f.write("%d %s\n" % (os.getpid(), starttime(os.getpid())))
        live.append(self)
        registry = os.path.join(self.rundir, "pids")
        try:
            ca_dir = os.path.join(self.rundir, "ca")
            make_ca(ca_dir)
            self.dns = Dns(self.port_base + DNS, self.rundir, registry)
            resolver = self.dns.address
            if self.dnssec_domains:
                self.dnssec = Dnssec(self.dnssec_domains, self.port_base + DNSSEC_RESOLVER,
                                     self.port_base + DNSSEC_AUTH, self.dns.address,
                                     self.rundir, registry)
                resolver = self.dnssec.address
            for dom in self.domains:
                name = dom.split(".")[0]
                isp = Isp(name, dom, DOMAIN_IPS[dom], self.port_base,
                          os.path.join(self.rundir, name),
                          services=self.services.get(dom, ALL_SERVICES),
                          poll_interval=self.poll_interval,
                          resolver=resolver, ca_dir=ca_dir,
                          httpd_extra=self.httpd_extra, stubs=self.stubs,
                          pollerd_extra=self.pollerd_extra, udp_poll=self.udp_poll,
                          pollerd_debug=self.pollerd_debug,
                          pg_settings=self.pg_settings, front_ends=self.front_ends,
                          users=self.users, **self.isp_options.get(dom, {}))
                isp.registry = registry
                self.isps[dom] = isp
                isp.make_identity()
                if isp.key:
                    self._records("_stubmail." + dom)["_stubmail." + dom] = isp.key.record
            self.dns.start()
            if self.dnssec is not None:
                self.dnssec.start()
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
        if self.dnssec is not None:
            try:
                self.dnssec.stop()
            except Exception as e:
                errors.append("unbound: %s" % e)
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
        if self in live:
            live.remove(self)
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
        if self.dnssec is not None and os.path.exists(self.dnssec.log):
            parts.append("--- unbound (%s)\n%s" % (self.dnssec.log, tail(self.dnssec.log, n)))
        return "\n".join(parts)

    # -- DNS ------------------------------------------------------------------
    def _records(self, name):
        """The owner name -> TXT text map that serves name: its signed
        zone's, or dnsmasq's."""
        zone = self.dnssec.zone_of(name) if self.dnssec is not None else None
        return self.dnssec.zones[zone] if zone else self.dns.records

    def set_txt(self, domain, text):
        """Publish text as _stubmail.<domain> (None: no record), signed if
        domain is one of dnssec, restart the DNS servers and forget cached
        answers about domain everywhere."""
        name = "_stubmail." + domain
        if self.dnssec is not None:
            self.dnssec.forged.pop(name, None)
        if text is None:
            self._records(name).pop(name, None)
        else:
            self._records(name)[name] = text
        self._restart_dns()
        self.forget_dns(domain)

    def forge_txt(self, domain, text):
        """Serve text as _stubmail.<domain> of a signed zone with the
        signature of the record that set_txt published: a record changed
        after signing, which a validating resolver finds bogus."""
        name = "_stubmail." + domain
        if self.dnssec is None or self.dnssec.zone_of(name) is None:
            raise SandboxError("%s is not in a signed zone (Sandbox(dnssec=...))" % domain)
        self.dnssec.forged[name] = text
        self._restart_dns()
        self.forget_dns(domain)

    def _restart_dns(self):
        self.dns.restart()
        if self.dnssec is not None:
            self.dnssec.restart()

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
