"""demo — the command line of tests/sandbox.py: the demo (alice@a.example
-> bob@b.example, by pull, step by step; scripts/demo runs it), "start"
(ISPs until Ctrl-C) and "stop" (of a demo kept running with --keep)."""

import base64
import email.utils
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from .common import TOP, SandboxError, q, wait_for
from .procs import install_signal_handlers
from .world import Sandbox

# what users run (scripts/demo): its path is in the demo's last words
SCRIPT = os.path.join(TOP, "tests", "sandbox.py")


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


def _grep(path, regex):
    """The lines of the file at path that match regex (none if it is not there)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [l.rstrip("\n") for l in f if re.search(regex, l)]
    except OSError:
        return []


def _step(title, sources, timeout=60):
    """Wait until every (path, regex) of sources matches; print them."""
    found = wait_for(lambda: [_grep(p, r) for p, r in sources]
                     if all(_grep(p, r) for p, r in sources) else None,
                     timeout=timeout, what=title)
    _say("== " + title + ":")
    for lines in found:
        _say("   " + lines[-1].strip())


def _demo_store(sb, a, b):
    """What the ISPs publish; alice's message into a.example's outbox.
    Returns its id and when swaks sent it."""
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
    # a small body is in its row (sql/010), a big one in the spool
    fmt, spool_name, b64 = a.sql("SELECT format, spool_name, encode(substring(body for 16), "
                                 "'base64') FROM message WHERE id = %s" % q(mid))[0]
    try:
        if spool_name:
            with open(os.path.join(a.spool_dir, spool_name), "rb") as f:
                head = f.read(64)
        else:
            head = base64.b64decode(b64)
    except OSError:         # already pulled and deleted
        head = b""
    _say("   stored as %s: signed by a.example, encrypted to b.example's key "
         "(first bytes %s)" % (fmt, head[:16].hex() or "gone"))
    return mid, t_sent


def _demo_pull(a, b, mid, t_sent):
    """The message's way from the stub to bob's Maildir and the ack, as the
    servers' logs tell it."""
    _step("a.example's milter sent a UDP stub to b.example's published udp= "
          "address; b.example's pollerd polls a.example now, not in 10 minutes",
          [(b.pollerd_log, r"stub from .*<alice@a\.example> to <bob@b\.example>.*"
            r"polling a\.example")], timeout=15)
    _step("b.example logged in at a.example with its domain key (a.example's "
          "Apache checked the key against b.example's DNS record)",
          [(a.access_log, r"POST /stubmail/v1/login .* 200 "),
           (a.error_log, r"domain=b\.example .*login")])
    _step("b.example subscribed to (alice, bob) and polled (a.example's Apache)",
          [(a.error_log, r"domain=b\.example .*subscription: .*added"),
           (a.access_log, r" b\.example .*GET /stubmail/v1/poll\?version=\d+ .* 200 "),
           (a.error_log, r"domain=b\.example .*poll: .*[1-9]\d* listed")])
    _step("fetched by b.example (a.example's Apache)",
          [(a.access_log, r"GET /stubmail/v1/message/%s .* 200 " % mid),
           (a.error_log, r"id=%s: fetch" % mid)])
    _step("delivered into bob's Maildir (b.example's pollerd and Postfix)",
          [(b.pollerd_log, mid + r".*delivered"),
           (b.maillog, r"to=<bob@b\.example>, relay=virtual.*status=sent")])
    _say("   in bob's Maildir %.1f s after swaks sent it" % (time.monotonic() - t_sent))
    _step("acked to a.example (acks go in batches: POST /v1/ack)",
          [(a.access_log, r"POST /stubmail/v1/ack .* 200 "),
           (a.error_log, r"id=%s: ack: bob@b\.example retrieved" % mid),
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


def _demo_people(a, b):
    """What the two users see: bob's Unsubscribe button, alice's page."""
    _, data = b.maildir_messages("bob")[-1]
    link = re.search(rb"^List-Unsubscribe: <([^>]+)>", data, re.M)
    _say("== bob's mail program shows an Unsubscribe button (RFC 8058): its link goes to "
         "b.example, not to alice:\n   %s" % (link.group(1).decode() if link else "(none!)"))
    url = "https://%s:%d/mail/sent" % (a.ip, a.https_port)
    r = subprocess.run(["curl", "-sS", "--cacert", a.ca_file, "-u",
                        "alice:" + a.user_password("alice"), "-H", "Accept: application/json",
                        url], capture_output=True, text=True, timeout=30)
    _say("== alice's own page at a.example (%s, behind Apache's login) says:" % url)
    try:
        for m in json.loads(r.stdout)["messages"][:1]:
            for rcpt in m["recipients"]:
                _say("   your message of %s to %s: %s %s" % (
                    m["sent"], rcpt["to"], rcpt["status"], rcpt.get("retrieved", "")))
    except (ValueError, KeyError) as e:
        _say("   (no answer: %s %s)" % (e, r.stderr.strip()))


def _demo_idle(a, b):
    """Idle checks: one authenticated datagram each way, no HTTP. The first
    cycle after a delivery may poll by HTTP once to learn the idle ETag (the
    UDP poll's cursor); the next one asks by UDP only."""
    _say("== idle checks (SIGUSR1 makes b.example's pollerd poll now):")
    http_re, idle_re = r" b\.example .*/stubmail/v1/poll", r"a\.example: UDP poll says nothing new"
    for attempt in range(3):
        polls, idles = len(_grep(a.access_log, http_re)), len(_grep(b.pollerd_log, idle_re))
        b.poll_now()
        time.sleep(3)
        http = _grep(a.access_log, http_re)[polls:]
        for l in http:
            _say("   check %d by HTTP: %s" % (attempt + 1, l.strip()))
        if _grep(b.pollerd_log, idle_re)[idles:]:
            _say("   check %d by UDP: %s"
                 % (attempt + 1, _grep(b.pollerd_log, idle_re)[-1].strip()))
            if not http:
                _say("   one datagram each way to a.example's responder, no HTTP request")
                break


def demo(keep=False):
    """alice@a.example -> bob@b.example, by pull, step by step. With keep,
    return the running Sandbox instead of stopping it."""
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
        mid, t_sent = _demo_store(sb, a, b)
        _demo_pull(a, b, mid, t_sent)
        _demo_people(a, b)
        _demo_idle(a, b)
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
          % (pid, os.path.relpath(SCRIPT), rundir), flush=True)
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
    usage = sys.modules[__package__].__doc__     # the package's NAME and SYNOPSIS
    print(usage.split("DESCRIPTION")[0].strip(), file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
