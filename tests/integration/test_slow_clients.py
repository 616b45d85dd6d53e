"""Slow clients (issue 12): mod_stubmail reads a request's whole body before
it takes a database connection, and mod_reqtimeout (RequestReadTimeout in
the sandbox's httpd.conf, as in the sample configuration) cuts off a client
that drips its request.

a.example runs PostgreSQL and one Apache child whose mod_dbd pool holds two
connections (DBDMax 2); c.example only publishes a key: the test is its
poller, and puts its messages into a.example's outbox with SQL, as the
milter would. Checked:

- SLOW clients, three times the pool, each send the headers of an
  authenticated POST (polls and acks) and then drip its body a byte at a
  time; meanwhile the poller's ordinary requests that need the database (a
  fetch, an ack, a poll) are all answered while every slow client is still
  connected and unanswered (had a slow client held a pooled connection,
  they would wait until mod_reqtimeout cut the slow ones off); then the
  slow clients send the rest at once and are answered too.
- SLOW clients fetch a large body each and read none of it: the fetch
  gives its connection back before it sends the body, so meanwhile the
  ordinary requests are answered too.
- A client that drips its headers, and one that drips a body, are both
  cut off, within a bound far above RequestReadTimeout's (a hang guard,
  not a measurement)."""

import json
import os
import socket
import ssl
import threading
import time

from support import SandboxTest, curl, get_token, q, tls_connect, wait_for

RECIPIENT = "carol@c.example"
POOL = 2                # DBDMax of a.example's one child
SLOW = 3 * POOL         # slow clients at once
DRIP = 0.2              # seconds between two bytes of a slow client
CUT_BOUND = 90          # seconds: RequestReadTimeout says 20 at most
BIG = 32 * 1024 * 1024  # octets of a body no socket buffers hold


class SlowClient:
    """One connection that sends a request's headers and then its body a
    byte at a time, from a thread of its own (which alone touches the
    connection until it ends), until told to finish or answered."""

    def __init__(self, isp, head, body):
        self.sock = tls_connect(isp.ip, isp.https_port)
        self.head, self.body = head, body
        self.sent = 0                   # body octets sent so far
        self.answer = None              # what the server said or did meanwhile
        self.finish = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)

    def start(self):
        self.sock.sendall(self.head)
        self.thread.start()
        return self

    def _drip(self):
        try:
            self.sock.settimeout(DRIP)
            while not self.finish.is_set() and self.sent < len(self.body) - 1:
                self.sock.sendall(self.body[self.sent:self.sent + 1])
                self.sent += 1
                try:
                    got = self.sock.recv(4096)      # waits DRIP for an answer
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                self.answer = got or b"(closed)"
                break
        except OSError as e:
            self.answer = ("(%s)" % e).encode()

    def complete(self):
        """Send the rest of the body at once; the answer's status line."""
        self.finish.set()
        self.thread.join()
        self.sock.settimeout(30)
        self.sock.sendall(self.body[self.sent:])
        raw = b""
        while b"\r\n" not in raw:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            raw += chunk
        return raw.split(b"\r\n", 1)[0].decode("iso-8859-1")

    def close(self):
        self.finish.set()
        self.thread.join()
        self.sock.close()


class SlowClientsTest(SandboxTest):
    DOMAINS = ("a.example", "c.example")
    SERVICES = {"a.example": ("pg", "httpd"), "c.example": ("key",)}
    HTTPD_EXTRA = (("StubmailMinPollInterval", "0"),
                   # one child with threads to spare: its pool is the pool
                   ("StartServers", "1"),
                   ("ServerLimit", "1"),
                   ("ThreadsPerChild", "16"),
                   ("MaxRequestWorkers", "16"),
                   ("MinSpareThreads", "1"),
                   ("MaxSpareThreads", "16"),
                   ("DBDMax", str(POOL)),
                   ("DBDKeep", str(POOL)))

    @classmethod
    def setUpWorld(cls):
        cls.token = get_token(cls.a, cls.c)

    def setUp(self):
        super().setUp()
        self.a.sql("DELETE FROM message")

    # -- c.example's poller, by hand ------------------------------------------
    def put_outbox(self):
        """A message to RECIPIENT straight into a.example's outbox; its id."""
        mid = os.urandom(16).hex()
        with open(os.path.join(self.a.spool_dir, mid), "wb") as f:
            f.write(b"0123456789")
        self.a.sql("INSERT INTO message (id, sender, size, spool_name)"
                   " VALUES (%s, 'alice@a.example', 10, %s);"
                   "INSERT INTO outbox (message_id, recipient, recipient_domain)"
                   " VALUES (%s, %s, 'c.example')" % (q(mid), q(mid), q(mid), q(RECIPIENT)))
        return mid

    def put_big(self, n):
        """n messages whose spool files are hard links of one BIG file."""
        first = os.path.join(self.a.spool_dir, "big-%d" % os.getpid())
        with open(first, "wb") as f:
            f.truncate(BIG)
        self.addCleanup(os.unlink, first)
        mids = []
        for _ in range(n):
            mid = os.urandom(16).hex()
            os.link(first, os.path.join(self.a.spool_dir, mid))
            self.addCleanup(os.unlink, os.path.join(self.a.spool_dir, mid))
            self.a.sql("INSERT INTO message (id, sender, size, spool_name)"
                       " VALUES (%s, 'alice@a.example', %d, %s);"
                       "INSERT INTO outbox (message_id, recipient, recipient_domain)"
                       " VALUES (%s, %s, 'c.example')" % (q(mid), BIG, q(mid), q(mid),
                                                          q(RECIPIENT)))
            mids.append(mid)
        return mids

    def req(self, method, path, body=None):
        return curl(self.a.outbox_url + path, method, bearer=self.token,
                    data=json.dumps(body) if body is not None else None)

    def slow(self, path, body):
        """A slow client of an authenticated POST of body (JSON, padded so
        that the drip lasts), started."""
        data = (json.dumps(body) + " " * 2000).encode()
        head = ("POST /stubmail%s HTTP/1.1\r\nHost: a.example\r\n"
                "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (path, self.token, len(data))).encode()
        c = SlowClient(self.a, head, data)
        self.addCleanup(c.close)
        return c.start()

    # -- the tests ----------------------------------------------------------------
    def test_ordinary_requests_are_served_while_more_slow_bodies_than_connections_drip(self):
        waiting = [self.put_outbox() for _ in range(SLOW // 2 + 1)]
        poll = {"pairs": [{"from": "*@a.example", "to": RECIPIENT}]}
        slow = [self.slow("/v1/poll", poll) if i % 2 else
                self.slow("/v1/message/%s/ack" % waiting[i // 2], {"to": RECIPIENT})
                for i in range(SLOW)]
        # every slow client is inside its body: the handler has it
        deadline = time.monotonic() + 30
        while min(c.sent for c in slow) < 5 and time.monotonic() < deadline:
            time.sleep(DRIP)
        self.assertGreaterEqual(min(c.sent for c in slow), 5, "the slow clients did not start")

        mine = waiting[-1]
        r = self.req("GET", "/v1/message/%s" % mine)
        self.assertEqual((r.status, r.body), (200, b"0123456789"), r)
        r = self.req("POST", "/v1/poll", poll)
        self.assertEqual(r.status, 200, r)
        self.assertIn(mine, [m["id"] for m in r.json()["messages"]], r)
        r = self.req("POST", "/v1/message/%s/ack" % mine, {"to": RECIPIENT})
        self.assertEqual(r.status, 200, r)

        for c in slow:
            self.assertIsNone(c.answer, "a slow client was answered or cut off before the "
                              "ordinary requests were: %r" % c.answer)
        self.assertEqual([c.complete() for c in slow], ["HTTP/1.1 200 OK"] * SLOW)
        self.assertEqual(self.a.sql_value("SELECT count(*) FROM outbox WHERE"
                                          " retrieved_at IS NULL"), "0")

    def test_ordinary_requests_are_served_while_more_slow_readers_than_connections_wait(self):
        big = self.put_big(SLOW)
        offset = os.path.getsize(self.a.error_log)
        readers = []
        for mid in big:
            s = tls_connect(self.a.ip, self.a.https_port)
            self.addCleanup(s.close)
            s.sendall(("GET /stubmail/v1/message/%s HTTP/1.1\r\nHost: a.example\r\n"
                       "Authorization: Bearer %s\r\n\r\n" % (mid, self.token)).encode())
            readers.append(s)

        def sending():
            with open(self.a.error_log, errors="replace") as f:
                f.seek(offset)
                return f.read().count("fetch: %d bytes from" % BIG) == SLOW or None
        wait_for(sending, timeout=30, what="every slow reader's body to be on its way "
                 "(a fetch that holds its connection while it sends lets only %d start)"
                 % POOL)

        mine = self.put_outbox()
        r = self.req("GET", "/v1/message/%s" % mine)
        self.assertEqual((r.status, r.body), (200, b"0123456789"), r)
        r = self.req("POST", "/v1/poll", {"pairs": [{"from": "*@a.example", "to": RECIPIENT}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json()["messages"]), SLOW + 1, r)
        r = self.req("POST", "/v1/message/%s/ack" % mine, {"to": RECIPIENT})
        self.assertEqual(r.status, 200, r)
        for s in readers:
            s.settimeout(30)
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200 "))

    def test_dripping_headers_and_bodies_are_cut_off(self):
        header_drip = SlowClient(self.a, b"GET /stubmail/v1/key HTTP/1.1\r\n",
                                 b"X-Slow: " + b"s" * 4000)
        self.addCleanup(header_drip.close)
        header_drip.start()
        body_drip = self.slow("/v1/poll", {"pairs": []})
        deadline = time.monotonic() + CUT_BOUND
        while time.monotonic() < deadline and not (header_drip.answer and body_drip.answer):
            time.sleep(0.5)
        self.assertTrue(header_drip.answer, "a client dripping its headers was not cut "
                        "off in %d s" % CUT_BOUND)
        self.assertTrue(body_drip.answer, "a client dripping its body was not cut off "
                        "in %d s" % CUT_BOUND)
        # the answers, if any came before the close: 408 for the headers, the
        # module's 400 for the body it could not read
        self.assertRegex(header_drip.answer, rb"^(HTTP/1.1 408 |\()", header_drip.answer)
        self.assertRegex(body_drip.answer, rb"^(HTTP/1.1 400 |\()", body_drip.answer)
