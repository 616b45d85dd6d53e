"""dnssec — Sandbox(dnssec=DOMAINS): a local validating resolver (unbound
on 127.0.0.1:base+DNSSEC_RESOLVER) that every ISP asks instead of dnsmasq,
in front of an authoritative unbound (base+DNSSEC_AUTH) serving one zone
per signed domain, signed with ldns-signzone and anchored in the resolver.
The other domains' records stay in dnsmasq, which the resolver forwards
.example to without a trust anchor: their answers are insecure (no AD)."""

import os
import shutil
import socket
import time

from .common import SandboxError, render, run_checked, tail
from .dns import dns_txt_query
from .procs import Proc

SOA_TTL = 60


def txt_strings(text):
    """A TXT record's text as zone-file strings of at most 255 octets."""
    if '"' in text or "\\" in text:
        raise SandboxError("TXT record with a quote or backslash: %r" % text)
    return " ".join('"%s"' % text[i:i + 255] for i in range(0, len(text), 255))


class Dnssec:
    """The signed zones (domain -> {owner name: TXT text}), their keys, the
    two unbounds. forged: owner name -> text put in place of the signed
    text after signing (a record changed after signing: bogus)."""

    def __init__(self, domains, resolver_port, auth_port, dnsmasq_address, rundir, registry):
        self.zones = {d: {} for d in domains}
        self.forged = {}
        self.resolver_port, self.auth_port = resolver_port, auth_port
        self.dnsmasq = dnsmasq_address.replace(":", "@")
        self.dir = os.path.join(rundir, "dnssec")
        self.registry = registry
        self.keys = {}
        self.procs = {}
        for tool in ("unbound", "ldns-keygen", "ldns-signzone"):
            if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
                raise SandboxError("%s is missing (scripts/install-deps: unbound ldnsutils)"
                                   % tool)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.resolver_port

    @property
    def log(self):
        return os.path.join(self.dir, "unbound.log")

    def zone_of(self, name):
        """The signed zone an owner name is in, or None."""
        for dom in self.zones:
            if name == dom or name.endswith("." + dom):
                return dom
        return None

    def _key(self, dom):
        if dom not in self.keys:
            out = run_checked(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", dom],
                              "ldns-keygen for %s" % dom, cwd=self.dir)
            self.keys[dom] = os.path.join(self.dir, out.strip())
        return self.keys[dom]

    def _sign(self, dom):
        """Write the zone, sign it, then put forged texts in place."""
        path = os.path.join(self.dir, dom + ".zone")
        lines = ["$ORIGIN %s." % dom, "$TTL %d" % SOA_TTL,
                 "@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 %d" % (dom, dom, SOA_TTL),
                 "@ IN NS ns.%s." % dom, "ns IN A 127.0.0.1"]
        for name, text in sorted(self.zones[dom].items()):
            lines.append("%s. IN TXT %s" % (name, txt_strings(text)))
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        run_checked(["ldns-signzone", "-f", path + ".signed", path, self._key(dom)],
                    "ldns-signzone for %s" % dom)
        with open(path + ".signed") as f:
            signed = f.read().splitlines()
        for i, line in enumerate(signed):
            fields = line.split(None, 4)
            if len(fields) == 5 and fields[3] == "TXT" and fields[0].rstrip(".") in self.forged:
                fields[4] = txt_strings(self.forged[fields[0].rstrip(".")])
                signed[i] = "\t".join(fields)
        with open(path + ".signed", "w") as f:
            f.write("\n".join(signed) + "\n")
        return path + ".signed"

    def _write_configs(self):
        zones, anchors, stubs = [], [], []
        for dom in sorted(self.zones):
            zones.append('auth-zone:\n\tname: "%s."\n\tzonefile: "%s"\n'
                         '\tfor-downstream: yes\n\tfor-upstream: no\n'
                         % (dom, self._sign(dom)))
            with open(self._key(dom) + ".ds") as f:
                ds = " ".join(f.read().split())
            anchors.append('\ttrust-anchor: "%s"' % ds)
            stubs.append('stub-zone:\n\tname: "%s."\n\tstub-addr: 127.0.0.1@%d\n'
                         % (dom, self.auth_port))
        render("unbound-auth.conf", os.path.join(self.dir, "auth.conf"),
               port=self.auth_port, dir=self.dir, zones="\n".join(zones))
        render("unbound-resolver.conf", os.path.join(self.dir, "resolver.conf"),
               port=self.resolver_port, dir=self.dir, anchors="\n".join(anchors),
               dnsmasq=self.dnsmasq, stubs="\n".join(stubs))

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        self._write_configs()
        unbound = shutil.which("unbound") or "/usr/sbin/unbound"
        for name, port in (("auth", self.auth_port), ("resolver", self.resolver_port)):
            conf = os.path.join(self.dir, name + ".conf")
            self.procs[name] = Proc("unbound " + name, [unbound, "-d", "-c", conf], self.log,
                                    registry=self.registry).start()
            self._await(name, port)

    def _await(self, name, port):
        probe = dns_txt_query("ready.example")
        deadline = time.monotonic() + 10
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.2)
                try:
                    s.sendto(probe, ("127.0.0.1", port))
                    if len(s.recv(512)) >= 12:
                        return
                except OSError:
                    pass
            if not self.procs[name].alive() or time.monotonic() > deadline:
                raise SandboxError("unbound %s did not start on 127.0.0.1:%d:\n%s"
                                   % (name, port, tail(self.log)))
            time.sleep(0.05)

    def stop(self):
        for name in ("resolver", "auth"):
            p = self.procs.pop(name, None)
            if p is not None:
                p.stop()

    def restart(self):
        """Sign again and restart both (the resolver forgets what it
        validated, bogus answers too)."""
        self.stop()
        self.start()
