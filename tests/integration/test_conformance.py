"""Issue 14: the conformance checker (tests/conformance/run) against
mod_stubmail, with its UDP poll responder. It runs as a polling domain
that plays its poller by hand (b.example: its Apache serves its key, no
pollerd), with a message waiting for it that it fetches and acks; and once
more as c.example for the poll limit alone (a long interval, so that no
poll comes back while it counts). Every requirement
docs/PROTOCOL-requirements.md gives to the checker must be reported met."""

import os
import re
import subprocess
import sys

from support import SandboxTest, TOP, make_message

CHECKER = os.path.join(TOP, "tests", "conformance", "run")
REQUIREMENTS_MD = os.path.join(TOP, "docs", "PROTOCOL-requirements.md")
BURST = 40


def checker_requirements():
    """The ids the mapping gives to a check of the checker."""
    with open(REQUIREMENTS_MD, encoding="utf-8") as f:
        return {m.group(1) for m in re.finditer(r"(?m)^\| (R-[A-Z0-9-]+) \|.*`checker:", f.read())}


class ConformanceTest(SandboxTest):
    DOMAINS = ("a.example", "b.example", "c.example")
    SERVICES = {"b.example": ("pg", "httpd"), "c.example": ("key",)}
    HTTPD_EXTRA = (("StubmailMinPollInterval", "3600"), ("StubmailPollBurst", str(BURST)))
    UDP_POLL = True

    def run_checker(self, client, *extra):
        a = self.a
        argv = [sys.executable, CHECKER, "--outbox", a.outbox_url, "--server", a.domain,
                "--server-fpr", a.fpr, "--domain", client.domain, "--gnupg-home",
                client.key.home, "--ca-file", self.sb.ca_file, "--strict"] + list(extra)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        return r.returncode, r.stdout + r.stderr

    def met(self, out):
        return set(re.findall(r"(?m)^pass (R-[A-Z0-9-]+) ", out))

    def test_mod_stubmail_conforms(self):
        sys.path.insert(0, os.path.dirname(CHECKER))
        import checks
        # the checker's acks without the receipt, refused as they must be
        self.a.expect_log(r"\[stubmail:warn\] .*: ack of bob@b\.example refused, the message "
                          r"stays: (no receipt|the receipt is not this message's)")
        msg, _ = make_message("alice@a.example", "bob@b.example", "conformance")
        self.send_stored(self.a, "alice@a.example", "bob@b.example", msg)
        everything_else = ",".join(c.name for c in checks.CHECKS if c.name != "poll_limit")
        rc, out = self.run_checker(self.b, "--pair", "alice@a.example", "bob@b.example",
                                   "--may-ack", "--only", everything_else)
        self.assertEqual(rc, 0, out)
        rc, limit = self.run_checker(self.c, "--poll-burst", str(BURST), "--only",
                                     "poll_limit")
        self.assertEqual(rc, 0, limit)
        missing = checker_requirements() - self.met(out) - self.met(limit)
        self.assertEqual(sorted(missing), [], "requirements mapped to the checker that it "
                         "did not report met:\n" + out + limit)
