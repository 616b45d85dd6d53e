"""support — what the integration tests share: a sandbox per test class,
message builders, curl for the HTTP API, a poller's login done by hand
(gpg signs the statement), and the Apache error-log check.

Each test class starts its own ISPs (setUpClass) and stops them
(tearDownClass); each test fails on an unexpected [warn]/[error] line in an
Apache error log (see Isp.expect_log)."""

import base64
import email.utils
import hashlib
import hmac
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox import Sandbox, wait_for, q, SandboxError, DomainKey, TOP  # noqa: E402,F401


def make_message(sender, to, subject, body=None, extra_headers=()):
    """An RFC 5322 message with CRLF line ends, a unique Message-ID and a
    body full of things SMTP relays like to damage."""
    tag = uuid.uuid4().hex[:12]
    if body is None:
        body = ("Hello,\r\n"
                "\r\n"
                ".a line starting with a dot\r\n"
                ".\r\n"
                "..two dots\r\n"
                "From the start of a line\r\n"
                "trailing blanks   \r\n"
                "\ttab first\r\n"
                "tag " + tag + "\r\n"
                "\r\n"
                "-- \r\n"
                "sender\r\n")
    to_list = [to] if isinstance(to, str) else list(to)
    headers = [
        "From: <%s>" % sender,
        "To: " + ", ".join("<%s>" % t for t in to_list),
        "Subject: %s [%s]" % (subject, tag),
        "Date: " + email.utils.formatdate(),
        "Message-ID: <%s@%s>" % (tag, sender.split("@")[1]),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
    ] + list(extra_headers)
    head = "".join(h + "\r\n" for h in headers)
    return (head + "\r\n" + body).encode(), tag


def split_message(data):
    """(headers, body) of a message with LF or CRLF line ends, both as
    LF-ended bytes."""
    data = data.replace(b"\r\n", b"\n")
    head, _, body = data.partition(b"\n\n")
    return head + b"\n", body


def header_lines(head):
    """Unfolded header fields of a header block (bytes) as a list of str."""
    out = []
    for line in head.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        if line[0] in " \t" and out:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out



def stored_body(isp, mid):
    """The stored (sealed) body of message mid at isp: from its row
    (sql/010: a small one) or its spool file; None when it is gone."""
    row = isp.sql("SELECT spool_name, encode(body, 'base64') FROM message WHERE id = %s"
                  % q(mid))
    if not row:
        return None
    spool_name, b64 = row[0]
    if not spool_name:
        return base64.b64decode(b64) if b64 else None
    try:
        with open(os.path.join(isp.spool_dir, spool_name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


RECEIPT_NAME = re.compile(rb'name="stubmail-receipt\.([A-Za-z0-9_-]{43})"')


def receipt_of(reader, isp, mid, body=None):
    """The receipt sealed in message mid stored at isp (docs/PROTOCOL.md
    "Receipts"), as a domain running plain gpg finds it: the literal data's
    file name that `gpg --list-packets` shows once reader's key decrypts
    the body (body: the stored body, when it is gone from isp already)."""
    data = body if body is not None else stored_body(isp, mid)
    r = subprocess.run(["gpg", "--homedir", reader.gnupg_home, "--batch", "--pinentry-mode",
                        "loopback", "--passphrase", "", "--list-packets"], input=data,
                       capture_output=True, timeout=30)
    m = RECEIPT_NAME.search(r.stdout)
    if not m:
        raise AssertionError("no receipt in message %s at %s: %s" % (mid, isp.domain,
                                                                     r.stderr.decode()))
    return m.group(1).decode()


def replace_body(isp, mid, data):
    """Put data where message mid's body is stored (its row, or its spool
    file in place: the file keeps its owner and mode), size with it."""
    spool_name = isp.sql_value("SELECT spool_name FROM message WHERE id = %s" % q(mid))
    if spool_name:
        with open(os.path.join(isp.spool_dir, spool_name), "r+b") as f:
            f.write(data)
            f.truncate()
        isp.sql("UPDATE message SET size = %d WHERE id = %s" % (len(data), q(mid)))
    else:
        isp.sql("UPDATE message SET body = decode('%s', 'base64'), size = %d WHERE id = %s"
                % (base64.b64encode(data).decode(), len(data), q(mid)))

class Http:
    """One curl request's outcome."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "<HTTP %s %r %r>" % (self.status, self.headers.get("content-type"),
                                    self.body[:300])


# The CA that signed the running sandbox's certificates (set by
# SandboxTest.setUpClass): curl trusts it for https:// URLs.
ca_file = None


def curl(url, method="GET", user=None, data=None, data_file=None, headers=(),
         content_type="application/json", extra=(), timeout=30, bearer=None, cacert=None):
    """Run curl (a real HTTP client) and return an Http. data (bytes/str) or
    data_file is sent as the body; bearer: a token for Authorization."""
    argv = ["curl", "-sS", "-i", "--http1.1", "-X", method, "--max-time", str(timeout),
            "-H", "Expect:"]
    if url.startswith("https:") and (cacert or ca_file):
        argv += ["--cacert", cacert or ca_file]
    if user is not None:
        argv += ["-u", user]
    if bearer is not None:
        argv += ["-H", "Authorization: Bearer " + bearer]
    if data is not None or data_file is not None:
        if content_type:
            argv += ["-H", "Content-Type: " + content_type]
        argv += ["--data-binary", "@" + (data_file or "-")]
    for h in headers:
        argv += ["-H", h]
    argv += list(extra) + [url]
    if isinstance(data, str):
        data = data.encode()
    r = subprocess.run(argv, input=data if data_file is None else None,
                       capture_output=True, timeout=timeout + 5)
    if r.returncode != 0:
        raise AssertionError("curl %s %s failed (%d): %s"
                             % (method, url, r.returncode, r.stderr.decode().strip()))
    raw = r.stdout
    # skip interim 1xx responses
    while True:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError("curl: no HTTP response from %s: %r" % (url, raw[:200]))
        status_line = head.split(b"\r\n", 1)[0].decode()
        status = int(status_line.split()[1])
        if 100 <= status < 200:
            raw = rest
            continue
        break
    hdrs = {}
    for line in head.decode("iso-8859-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return Http(status, hdrs, rest)


def tls_connect(ip, port, timeout=30):
    """A TLS connection to ip:port that trusts the sandbox's CA, for
    requests curl will not send as written (folded headers, framing)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False
    return ctx.wrap_socket(socket.create_connection((ip, port), timeout=timeout))


def raw_https(ip, port, data, timeout=30):
    """Send data (bytes, the whole request as written) over TLS; the
    answer: (status, {header: value}, body bytes), read until the server
    closes the connection."""
    with tls_connect(ip, port, timeout) as s:
        s.sendall(data)
        raw = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ssl.SSLEOFError, ConnectionResetError):
                break
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        raise AssertionError("no HTTP answer from %s:%d: %r" % (ip, port, raw[:200]))
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, body


# -- the poller's side of docs/PROTOCOL.md, by hand -----------------------------

def rfc3339(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def login_statement(server, domain, when, nonce):
    """The octets a login signature covers (PROTOCOL.md, POST /v1/login)."""
    return ("stubmail-login-v1\nserver:%s\ndomain:%s\ntime:%s\nnonce:%s\n"
            % (server, domain, when, nonce)).encode()


def gpg_sign(home, fpr, data):
    """An ASCII-armored detached signature over data by key fpr in home."""
    r = subprocess.run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
                        "--passphrase", "", "--local-user", fpr, "--detach-sign", "--armor",
                        "-o", "-"], input=data, capture_output=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError("gpg --detach-sign in %s failed: %s" % (home, r.stderr.decode()))
    return r.stdout.decode()


def login_body(key, server, domain=None, when=None, nonce=None, key_text=None,
               statement=None):
    """A login request as a dict, signed with key (a sandbox DomainKey);
    every member can be overridden to make it wrong."""
    domain = domain or key.domain
    when = when or rfc3339()
    nonce = nonce or os.urandom(16).hex()
    if key_text is None:
        with open(key.public) as f:
            key_text = f.read()
    signed = statement if statement is not None else login_statement(server, domain, when, nonce)
    return {"domain": domain, "server": server, "time": when, "nonce": nonce,
            "key": key_text, "signature": gpg_sign(key.home, key.fpr, signed)}


def login(server_isp, body):
    """POST /v1/login to server_isp with body (a dict or raw text)."""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return curl(server_isp.outbox_url + "/v1/login", "POST", data=data)


def get_token(server_isp, client_isp):
    """Log client_isp in at server_isp; return the token (fails the test
    unless the login is answered 200)."""
    r = login(server_isp, login_body(client_isp.key, server_isp.domain))
    if r.status != 200:
        raise AssertionError("login of %s at %s: %r" % (client_isp.domain, server_isp.domain, r))
    return r.json()["token"]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_token(server_isp, domain, expiry, key_id=None, secret_hex=None):
    """A token as server_isp's mod_stubmail would issue it (PROTOCOL.md,
    Token), made with its secret: for expired tokens without waiting."""
    if key_id is None or secret_hex is None:
        key_id, secret_hex = server_isp.token_keys[-1]
    payload = b64url(("%s|%d|%s" % (domain, expiry, key_id)).encode())
    mac = hmac.new(bytes.fromhex(secret_hex), ("v1." + payload).encode(), hashlib.sha256)
    return "v1.%s.%s" % (payload, b64url(mac.digest()))


def submit(isp, sender, to, data, port=None, timeout=60):
    """Send one message to isp's submission port (or port) from isp's
    address with smtplib, quicker than swaks for many messages: the reply
    code to the end of DATA (or to the command that failed), 0 when the
    connection itself failed."""
    try:
        with smtplib.SMTP(isp.ip, port or isp.submission_port, "client." + isp.domain,
                          timeout=timeout, source_address=(isp.ip, 0)) as s:
            s.sendmail(sender, [to] if isinstance(to, str) else list(to), data)
            return 250
    except smtplib.SMTPRecipientsRefused as e:
        return min(code for code, _ in e.recipients.values())
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    except (smtplib.SMTPException, OSError):
        return 0


def message_ids_in_maildirs(isp):
    """{Message-ID: number of copies} over every user's Maildir at isp."""
    seen = {}
    for user in isp.users:
        for _, data in isp.maildir_messages(user):
            m = re.search(rb"^Message-ID:\s*<([^>]+)>", data, re.M | re.I)
            if m:
                mid = m.group(1).decode()
                seen[mid] = seen.get(mid, 0) + 1
    return seen


class SandboxTest(unittest.TestCase):
    """Base class: ISPs started once per class; log checks per test."""

    DOMAINS = ("a.example", "b.example")
    SERVICES = {}
    POLL_INTERVAL = "2s"
    HTTPD_EXTRA = ()        # (directive, value) for every httpd.conf
    UDP_POLL = False        # Apaches run the UDP poll responder
    FRONT_ENDS = 1          # Apaches per ISP, on one database and spool
    DNSSEC = ()             # domains whose records are signed (Sandbox(dnssec=))
    USERS = None            # local parts with a Maildir at every ISP (None: the sandbox's)
    ISP_OPTIONS = {}        # {domain: {Isp argument: value}}, e.g. milters, standby
    sb = None

    @classmethod
    def setUpClass(cls):
        global ca_file
        cls.sb = Sandbox(cls.DOMAINS, services=cls.SERVICES,
                         poll_interval=cls.POLL_INTERVAL,
                         httpd_extra=cls.HTTPD_EXTRA, udp_poll=cls.UDP_POLL,
                         front_ends=cls.FRONT_ENDS, dnssec=cls.DNSSEC, users=cls.USERS,
                         isp_options=cls.ISP_OPTIONS)
        cls.sb.start()
        ca_file = cls.sb.ca_file
        try:
            for isp in cls.sb:
                setattr(cls, isp.name, isp)
            cls.sb.log_mark()
            cls.setUpWorld()
        except BaseException:
            cls.sb.stop()
            raise

    @classmethod
    def setUpWorld(cls):
        """Peers, address books: what every test of the class starts from."""

    @classmethod
    def tearDownClass(cls):
        if cls.sb is not None:
            cls.sb.stop()
            cls.sb = None

    def setUp(self):
        self.sb.log_mark()

    def tearDown(self):
        bad = self.sb.unexpected_log_lines()
        if bad:
            self.fail("unexpected lines in Apache's error log:\n" + "\n".join(bad))

    def diagnostics(self):
        """Log tails the runner prints when a test fails."""
        return self.sb.logs_tail() if self.sb else ""

    # -- helpers ------------------------------------------------------------
    def send_ok(self, isp, sender, to, data):
        r = isp.send(sender, to, data)
        self.assertTrue(r.ok, "swaks should succeed:\n%s" % r)
        return r

    def wait_maildir(self, isp, user, tag, timeout=30, count=1):
        """Wait until `count` messages carrying tag are in user's Maildir at
        isp; return them as [(path, bytes)]."""
        def found():
            got = [(p, d) for p, d in isp.maildir_messages(user) if tag.encode() in d]
            return got if len(got) >= count else None
        return wait_for(found, timeout=timeout,
                        what="%d message(s) tagged %s in %s@%s's Maildir"
                        % (count, tag, user, isp.domain))

    def wait_polls(self, isp, n, poller="b.example"):
        """Wait until poller has polled isp n more times (isp's access log)."""
        def polls():
            with open(isp.access_log) as f:
                return sum(1 for l in f if "/v1/poll" in l and " %s " % poller in l)
        start = polls()
        wait_for(lambda: polls() >= start + n, timeout=30,
                 what="%d more polls from %s" % (n, poller))

    def in_maildir(self, isp, user, tag):
        return [(p, d) for p, d in isp.maildir_messages(user) if tag.encode() in d]

    def outbox_rows(self, isp, message_id=None):
        """Rows (id, sender, recipient, retrieved_at, body_deleted_at, spool_name)
        of isp's outbox, of one message or all."""
        where = "m.id = %s" % q(message_id) if message_id else "true"
        return isp.sql(
            "SELECT m.id, m.sender, o.recipient, o.retrieved_at, m.body_deleted_at, "
            "m.spool_name FROM message m JOIN outbox o ON o.message_id = m.id "
            "WHERE %s ORDER BY m.created_at, o.recipient" % where)

    def send_stored(self, isp, sender, to, data, timeout=15):
        """Send with swaks (must succeed), then wait for the message in
        isp's outbox; return its outbox rows. (Found as the message that
        was not there before: its body may already be gone from the spool
        if the recipient pulled it at once.)"""
        before = {r[0] for r in isp.sql("SELECT id FROM message")}
        self.send_ok(isp, sender, to, data)
        return wait_for(lambda: [r for r in self.outbox_rows(isp) if r[0] not in before],
                        timeout=timeout, what="the message from %s in %s's outbox"
                        % (sender, isp.domain))

    def access_lines(self, isp, pattern):
        try:
            with open(isp.access_log) as f:
                return [l for l in f if re.search(pattern, l)]
        except OSError:
            return []
