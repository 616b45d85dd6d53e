"""soak — what tests/integration/test_soak.py runs: mail from many senders
to many recipients (a.example to b.example) submitted by clients that
retry every 4xx as an MTA would, faults at random moments meanwhile, and
the tally by Message-ID at the end. One seed draws the messages and the
faults' kinds and moments, so a failing run can be repeated
(STUBMAIL_SOAK_SEED); the threads' interleaving is not drawn."""

import collections
import email
import email.utils
import re
import smtplib
import socket
import threading
import time

from support import make_message

MSGID_RE = re.compile(rb"^Message-ID:[ \t]*<([^>\r\n]+)>", re.I | re.M)

# what a client retries (as an MTA retries a 4xx): the server's 4xx, and
# no server at all (Postfix stopped, the connection cut)
RETRYABLE = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, ConnectionError,
             socket.timeout, OSError)


class Workload:
    """count messages from senders to one or two of recipients, submitted
    to sender_isp's submission port by `clients` threads spread over
    `duration` seconds; each message is sent again after every 4xx or
    broken connection until it gets 250 or `give_up` seconds have
    passed."""

    def __init__(self, rng, isp, senders, recipients, count, duration, clients=4,
                 give_up=300):
        self.isp, self.duration, self.clients, self.give_up = isp, duration, clients, give_up
        self.messages = []              # (msgid, sender, [recipients], bytes)
        for i in range(count):
            sender = rng.choice(senders)
            rcpts = rng.sample(recipients, rng.choice((1, 1, 1, 2)))
            data, tag = make_message(sender, rcpts, "soak %d" % i)
            msgid = MSGID_RE.search(data).group(1).decode()
            self.messages.append((msgid, sender, rcpts, data))
        self.accepted = set()           # msgids answered 250
        self.refused = {}               # msgid: the 5xx, or why the client gave up
        self.attempts_failed = 0        # 4xx answers and broken sessions, retried
        self.lock = threading.Lock()
        self.threads = []

    def start(self):
        self.t0 = time.monotonic()
        for n in range(self.clients):
            t = threading.Thread(target=self._client, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)

    def join(self):
        for t in self.threads:
            t.join()

    def _client(self, n):
        step = self.duration / max(1, len(self.messages))
        for i in range(n, len(self.messages), self.clients):
            due = self.t0 + i * step
            time.sleep(max(0.0, due - time.monotonic()))
            self._submit(*self.messages[i])

    def _submit(self, msgid, sender, rcpts, data):
        deadline = time.monotonic() + self.give_up
        while True:
            try:
                with smtplib.SMTP(self.isp.ip, self.isp.submission_port, timeout=60,
                                  source_address=(self.isp.ip, 0)) as s:
                    refused = s.sendmail(sender, rcpts, data)
                if refused:
                    raise smtplib.SMTPRecipientsRefused(refused)
                with self.lock:
                    self.accepted.add(msgid)
                return
            except smtplib.SMTPRecipientsRefused as e:
                codes = [c for c, _ in e.recipients.values()]
                why = "recipients refused: %r" % e.recipients
                final = any(c >= 500 for c in codes)
            except smtplib.SMTPResponseException as e:
                why = "%d %s" % (e.smtp_code, e.smtp_error.decode("utf-8", "replace"))
                final = e.smtp_code >= 500
            except RETRYABLE as e:
                why = "%s: %s" % (type(e).__name__, e)
                final = False
            if final or time.monotonic() > deadline:
                with self.lock:
                    self.refused[msgid] = why
                return
            with self.lock:
                self.attempts_failed += 1
            time.sleep(0.5)

    def pairs(self):
        """(recipient, msgid) of every accepted message."""
        return [(r, m) for m, _, rcpts, _ in self.messages if m in self.accepted
                for r in rcpts]


class Faults:
    """The faults of the soak at moments drawn from rng within `duration`
    seconds: `plan` maps each kind to how often. run() does them in the
    calling thread, which must be the one that started the servers: the
    sandbox's children get SIGTERM when the thread that started them ends
    (PR_SET_PDEATHSIG), so no other thread may start one. Each fault is a
    step now and, where it stops something, a step later that starts it
    again; the milter killed after its commit is watched for its death."""

    KINDS = ("pollerd_kill", "milter_kill", "milter_kill_after_commit", "pg_restart",
             "httpd_restart", "postfix_stop")
    ARMED_MAX = 20          # seconds an armed shim may wait for a commit

    def __init__(self, rng, a, b, plan, duration, postfix_down=20):
        self.a, self.b = a, b
        self.postfix_down = postfix_down
        self.done = collections.Counter()
        self.missed = collections.Counter()   # armed, but nothing committed meanwhile
        self.errors = []
        # (when, kind, pause): the seed draws the moments and the pauses
        self.steps = sorted((rng.uniform(0.05, 0.85) * duration, kind, rng.uniform(0.3, 2.0))
                            for kind, n in sorted(plan.items()) for _ in range(n))
        self.armed_at = None
        self.log = []           # "HH:MM:SS.mmm step", in the servers' logs' UTC
        self.pollerd_kills = [] # time.time() of each

    def run(self):
        t0 = time.monotonic()
        while self.steps or self.armed_at is not None:
            now = time.monotonic() - t0
            self._watch_armed(now)
            if self.steps and self.steps[0][0] <= now:
                at, kind, pause = self.steps.pop(0)
                if kind.startswith("milter") and self.armed_at is not None:
                    self._later(now + 1, kind, pause)     # one milter fault at a time
                    continue
                t = time.time()
                self.log.append("%s.%03d %s" % (time.strftime("%H:%M:%S", time.gmtime(t)),
                                                int(t * 1000) % 1000, kind))
                try:
                    getattr(self, kind)(now, pause)
                except Exception as e:  # the tally says so; go on with the others
                    self.errors.append("%s at %.1f s: %s" % (kind, at, e))
                continue
            time.sleep(0.1)

    def _later(self, at, kind, pause=0.0):
        self.steps.append((at, kind, pause))
        self.steps.sort()

    def _watch_armed(self, now):
        if self.armed_at is None:
            return
        if self.a.milter_alive():
            if now - self.armed_at < self.ARMED_MAX:
                return
            self.a.disarm_kill_after_commit()
            self.missed["milter_kill_after_commit"] += 1
        else:
            self.a.reap_milter()
            self.a.start_milter()
            self.done["milter_kill_after_commit"] += 1
        self.armed_at = None

    def pollerd_kill(self, now, pause):
        self.pollerd_kills.append(time.time())
        self.b.kill_pollerd()
        self._later(now + pause, "pollerd_start")
        self.done["pollerd_kill"] += 1

    @staticmethod
    def _start(isp, name, start):
        """Start one that an overlapping fault of its kind has not already."""
        p = isp.procs.get(name)
        if p is None or not p.alive():
            start()

    def pollerd_start(self, now, pause):
        self._start(self.b, "pollerd", self.b.start_pollerd)

    def milter_kill(self, now, pause):
        self.a.kill_milter()
        self._later(now + pause, "milter_start")
        self.done["milter_kill"] += 1

    def milter_start(self, now, pause):
        self._start(self.a, "milter", self.a.start_milter)

    def milter_kill_after_commit(self, now, pause):
        self.a.arm_kill_after_commit()
        self.armed_at = now

    def pg_restart(self, now, pause):
        self.a.stop_db()
        self._later(now + pause, "pg_start")
        self.done["pg_restart"] += 1

    def pg_start(self, now, pause):
        self._start(self.a, "pg", self.a.start_db)

    def httpd_restart(self, now, pause):
        self.a.stop_httpd()
        self._later(now + pause, "httpd_start")
        self.done["httpd_restart"] += 1

    def httpd_start(self, now, pause):
        self._start(self.a, "httpd", self.a.start_httpd)

    def postfix_stop(self, now, pause):
        self.b.stop_postfix()
        self._later(now + self.postfix_down, "postfix_start")
        self.done["postfix_stop"] += 1

    def postfix_start(self, now, pause):
        self._start(self.b, "postfix", self.b.start_postfix)


def delivered(isp, users):
    """Counter of (user, msgid) over users' Maildirs at isp."""
    got = collections.Counter()
    for user in users:
        for _, data in isp.maildir_messages(user):
            m = MSGID_RE.search(data)
            got[(user, m.group(1).decode() if m else None)] += 1
    return got


def handed_over(isp, user, msgid):
    """[(when, outbox id)] of each copy of msgid in user's Maildir at isp:
    when the receiving Postfix took it (its Received line's date, whole
    seconds) and the outbox id pollerd's Received line names."""
    out = []
    for _, data in isp.maildir_messages(user):
        m = MSGID_RE.search(data)
        if not m or m.group(1).decode() != msgid:
            continue
        received = email.message_from_bytes(data).get_all("Received") or []
        when = email.utils.parsedate_to_datetime(received[0].rsplit(";", 1)[1].strip())
        ids = [i for r in received for i in re.findall(r"with HTTP id ([0-9a-f]{32})", r)]
        out.append((when.timestamp(), ids[0] if ids else None))
    return sorted(out)


def smtp_window(isp, user, msgid, kills):
    """Did msgid come twice to user because pollerd died in SMTP's hand-off
    window? The local MTA took the first copy (at most a second before a
    kill: its date has whole seconds) and pollerd recorded the delivery
    only after that kill, so the killed pollerd had delivered it and had
    not recorded it (docs/admin-guide.md: at least once). RFC 1047: no
    protocol can close that window between the MTA's 250 and the client's
    record of it."""
    copies = handed_over(isp, user, msgid)
    if len(copies) != 2 or copies[0][1] is None:
        return False
    recorded = isp.sql_value("SELECT extract(epoch FROM delivered_at) FROM received "
                             "WHERE message_id = '%s' AND recipient = '%s@%s'"
                             % (copies[0][1], user, isp.domain))
    return recorded is not None and any(
        copies[0][0] - 1 <= k < float(recorded) for k in kills)


def trace(isp, msgid):
    """What isp's Postfix and pollerd logged about the message msgid: the
    maillog lines of its queue ids, and pollerd's lines of the outbox ids
    that were delivered as those queue ids (why it came twice)."""
    def lines(path):
        try:
            with open(path, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []
    maillog, pollerd = lines(isp.maillog), lines(isp.pollerd_log)
    qids = {m.group(1) for l in maillog
            for m in [re.search(r"\]: ([0-9A-F]+): message-id=<%s>" % re.escape(msgid), l)] if m}
    ids = {w for l in pollerd for q_ in qids if "queued as %s" % q_ in l
           for w in l.split() if re.fullmatch(r"[0-9a-f]{32}:?", w)}
    ids = {i.rstrip(":") for i in ids}
    return ([l for l in maillog if any(q_ in l for q_ in qids)]
            + [l for l in pollerd if any(i in l for i in ids)])

