"""common — what every part of the sandbox uses: where the built programs
are, the addresses and port offsets, SandboxError, waiting, running a
command, filling in a configuration template."""

import glob
import os
import re
import socket
import string
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
TEMPLATES = os.path.join(HERE, "templates")

DOMAIN_IPS = {
    "a.example": "127.0.0.2",
    "b.example": "127.0.0.3",
    "c.example": "127.0.0.4",
}

# Port offsets from the port base; every ISP has its own address, so the
# same offsets serve every ISP.
SMTP, REINJECT, MILTER, PG, SUBMISSION, HTTPS = 25, 26, 30, 432, 587, 443
# The sandbox's one DNS server listens on 127.0.0.1:base+DNS; with
# Sandbox(dnssec=...) a validating unbound on 127.0.0.1:base+DNSSEC_RESOLVER
# is every ISP's resolver, in front of an authoritative unbound for the signed
# zones on base+DNSSEC_AUTH.
DNS = 53
DNSSEC_RESOLVER, DNSSEC_AUTH = 153, 154
# pollerd's udp_listen for UDP stubs (Sandbox(stubs=True)): IP:base+STUBS,
# published as udp= in the ISP's _stubmail record.
STUBS = 90
# pollerd's metrics_listen (the first instance of every ISP with pollerd):
# http://IP:base+POLLERD_METRICS/metrics.
POLLERD_METRICS = 92
# mod_stubmail's UDP poll responder (Sandbox(udp_poll=True)): IP:base+UDPPOLL.
UDPPOLL = 444
# (HTTPS, UDP poll responder) of each Apache front end of an ISP
# (Sandbox(front_ends=2)): the first is the outbox DNS names.
FRONT_END_PORTS = ((HTTPS, UDPPOLL), (445, 446))
# Isp(milters=2): a second milter on base+MILTER2, behind a second
# submission listener on base+SUBMISSION2.
MILTER2, SUBMISSION2 = 31, 588
# Isp(standby=True): a streaming-replication standby of the ISP's
# PostgreSQL on base+PG_STANDBY.
PG_STANDBY = 433
# Every offset an integration test uses is below PORT_SPAN (tests/bench/run's
# domains section goes further): sandboxes whose bases are
# PORT_SPAN apart never share a port (tests/run_integration.py's workers).
PORT_SPAN = 1000

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "mallory"]

ALL_SERVICES = ("pg", "httpd", "postfix", "milter", "pollerd")
# An ISP with any of these has a domain key and a _stubmail record. "key"
# alone: a domain that publishes a record and key but runs no server here
# (a test plays its poller).
STUBMAIL_SERVICES = ("httpd", "milter", "pollerd", "key")

APACHE_MODULES = "/usr/lib/apache2/modules"
MODULE_SO = os.path.join(TOP, "mod_stubmail", ".libs", "mod_stubmail.so")
MILTER_BIN = os.path.join(TOP, "milter", "stubmail-milter")
POLLERD_BIN = os.path.join(TOP, "pollerd", "stubmail-pollerd")
JANITOR_BIN = os.path.join(TOP, "janitor", "stubmail-janitor")
MIGRATE = os.path.join(TOP, "sql", "stubmail-migrate")
KEYGEN = os.path.join(TOP, "admin", "stubmail-keygen")
KILL_SHIM_SRC = os.path.join(TOP, "tests", "faults", "kill_at_statement.c")
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


def run_checked(argv, what, **kw):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SandboxError("%s failed (exit %d): %s\n%s%s"
                           % (what, r.returncode, " ".join(argv), r.stdout, r.stderr))
    return r.stdout


def build_kill_shim(so):
    """tests/faults/kill_at_statement.c built into so (an LD_PRELOAD shim
    that SIGKILLs its process at a chosen SQL statement once armed)."""
    r = subprocess.run(["cc", "-shared", "-fPIC", "-I/usr/include/postgresql", "-o", so,
                        KILL_SHIM_SRC, "-ldl"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SandboxError("cannot build %s:\n%s" % (KILL_SHIM_SRC, r.stderr))
    return so


def render(template, path, **values):
    """Write the file path from templates/<template>, each ${name} replaced
    by values[name] ("$$" stands for a "$"); a name without a value is a
    KeyError, not an empty line."""
    with open(os.path.join(TEMPLATES, template)) as f:
        text = string.Template(f.read()).substitute(values)
    with open(path, "w") as f:
        f.write(text)


def q(s):
    """SQL string literal."""
    return "'" + str(s).replace("'", "''") + "'"
