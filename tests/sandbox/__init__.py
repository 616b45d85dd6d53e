"""sandbox — stubmail ISPs on loopback, with the real servers.

NAME
    sandbox - start and stop test ISPs: PostgreSQL, Apache httpd with
    mod_ssl and mod_stubmail, Postfix with stubmail-milter, and
    stubmail-pollerd; and a DNS server (dnsmasq) for all of them.

SYNOPSIS
    python3 tests/sandbox.py demo [--keep]
    python3 tests/sandbox.py start [DOMAIN...]     (runs until Ctrl-C)
    python3 tests/sandbox.py stop RUNDIR

    from sandbox import Sandbox        (with tests/ on sys.path)
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
    base+443 Apache with mod_ssl, base+432 PostgreSQL, base+92 pollerd's
    metrics (metrics_listen, GET /metrics).

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

FILES
    world.py (Sandbox: the ISPs of a run), isp.py (Isp: one ISP), one
    module per server (pg.py, httpd.py, postfix.py, milter.py,
    pollerd.py, dns.py), pki.py (CA, certificates, domain keys), procs.py
    (child processes, signals), common.py (paths, ports, helpers),
    demo.py (the command line), and templates/ with the configuration
    files the servers get (string.Template: ${name} is filled in, $$ is a
    "$"). tests/sandbox.py is the command: `import sandbox` finds this
    package, as a directory package comes before a module of the same name.

DIAGNOSTICS
    SandboxError with the tail of the failing server's log.
"""

from .common import (ALL_SERVICES, DOMAIN_IPS, KEYGEN, MIGRATE, MILTER_BIN, MODULE_SO,
                     POLLERD_BIN, PORT_SPAN, TOP, USERS, WKS_CLIENT, SandboxError, listening,
                     port_base_default, q, tail, wait_for)
from .demo import demo, main
from .dns import Dns
from .isp import Isp
from .pki import DomainKey
from .postfix import Swaks
from .procs import Proc, install_signal_handlers, reap_stale, stop_all_live
from .world import Sandbox

__all__ = [
    "ALL_SERVICES", "DOMAIN_IPS", "KEYGEN", "MIGRATE", "MILTER_BIN", "MODULE_SO",
    "POLLERD_BIN", "PORT_SPAN", "TOP", "USERS", "WKS_CLIENT", "SandboxError", "listening",
    "port_base_default", "q", "tail", "wait_for", "demo", "main", "Dns", "Isp",
    "DomainKey", "Swaks", "Proc", "install_signal_handlers", "reap_stale",
    "stop_all_live", "Sandbox",
]
