"""dns — the sandbox's one DNS server (dnsmasq on 127.0.0.1:base+53,
authoritative for .example), serving the ISPs' _stubmail TXT records."""

import os
import shutil
import socket
import struct
import time

from .common import SandboxError, listening, tail
from .procs import Proc


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
