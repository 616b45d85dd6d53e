"""bigmail — what the tests of big messages share: a message of any size
written to a file and sent from it by SMTP without ever being in memory,
its body's digest and a Maildir's as streams, raised Postfix size limits,
peak memory (VmHWM) of the servers, a watch for plaintext in a directory,
and a TCP proxy on loopback that cuts or stalls a connection after so many
bytes."""

import base64
import hashlib
import os
import socket
import threading
import time
import uuid

from sandbox import wait_for

MIB = 1 << 20


def write_message(path, size, sender, to):
    """An RFC 5322 message with a body of size octets and a line end
    (base64 lines of random data, CRLF) in path; returns its tag (in the
    Subject)."""
    tag = uuid.uuid4().hex[:12]
    with open(path, "wb") as f:
        f.write(("From: <%s>\r\nTo: <%s>\r\nSubject: big %d [%s]\r\n"
                 "Message-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n"
                 "Content-Type: application/octet-stream\r\n"
                 "Content-Transfer-Encoding: base64\r\n\r\n"
                 % (sender, to, size, tag, tag, sender.split("@")[1])).encode())
        left = size
        while left > 0:
            data = base64.encodebytes(os.urandom(57 * 1024)).replace(b"\n", b"\r\n")
            f.write(data[:left])
            left -= len(data)
        f.write(b"\r\n")
    return tag


def _reply(f):
    """The code of one SMTP reply (all its lines read)."""
    while True:
        line = f.readline()
        if not line:
            raise AssertionError("SMTP: connection closed")
        if line[3:4] != b"-":
            return int(line[:3]), line


def send_file(isp, sender, to, path, timeout=900):
    """Send the message in path to isp's submission port, streamed in 1 MiB
    pieces (base64 lines never start with a dot: no dot-stuffing needed)."""
    with socket.create_connection((isp.ip, isp.submission_port), timeout=timeout,
                                  source_address=(isp.ip, 0)) as s:
        f = s.makefile("rb")

        def cmd(line, want):
            if line:
                s.sendall(line + b"\r\n")
            code, text = _reply(f)
            if code != want:
                raise AssertionError("SMTP %r: %r" % (line, text))
        cmd(None, 220)
        cmd(b"EHLO client." + isp.domain.encode(), 250)
        cmd(b"MAIL FROM:<%s> SIZE=%d" % (sender.encode(), os.path.getsize(path)), 250)
        cmd(b"RCPT TO:<%s>" % to.encode(), 250)
        cmd(b"DATA", 354)
        with open(path, "rb") as m:
            while True:
                chunk = m.read(MIB)
                if not chunk:
                    break
                s.sendall(chunk)
        s.sendall(b".\r\n")       # write_message ends the body with a line end
        code, text = _reply(f)
        if code != 250:
            raise AssertionError("SMTP end of data: %r" % text)
        s.sendall(b"QUIT\r\n")


def body_digest(path):
    """(sha256, length) of the body of the message file in path (after the
    first empty line), with CRLF made LF: what a Maildir file holds of it."""
    h, n, carry = hashlib.sha256(), 0, b""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        crlf = head.find(b"\r\n\r\n")
        f.seek(crlf + 4 if crlf >= 0 else head.index(b"\n\n") + 2)
        while True:
            chunk = f.read(1 << 22)
            if not chunk:
                break
            chunk = carry + chunk
            carry = b"\r" if chunk.endswith(b"\r") else b""
            if carry:
                chunk = chunk[:-1]
            chunk = chunk.replace(b"\r\n", b"\n")
            h.update(chunk)
            n += len(chunk)
    h.update(carry)
    return h.hexdigest(), n + len(carry)


def maildir_files(isp, user, tag):
    """Paths of the messages in user's Maildir at isp whose first 64 KiB
    carry tag (the file is never read whole)."""
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(isp.mail_dir, user, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                if tag.encode() in f.read(1 << 16):
                    out.append(p)
    return out


def wait_maildir_file(isp, user, tag, timeout):
    return wait_for(lambda: maildir_files(isp, user, tag), timeout=timeout,
                    what="the message tagged %s in %s@%s's Maildir" % (tag, user, isp.domain))


def raise_size_limits(isp, size):
    """Let Postfix take (message_size_limit) and virtual(8) deliver
    (virtual_mailbox_limit) a message of size octets, and the milter store
    it: the users of isp get no byte quota (a sender_quota row each, whose
    default of 100M is below the big messages)."""
    isp.postconf(message_size_limit=size + (size >> 2), virtual_mailbox_limit=0)
    if "pg" in isp.services:
        isp.sql("INSERT INTO sender_quota (address, max_bytes) SELECT u || '@%s', 0 FROM "
                "unnest(ARRAY[%s]) AS u ON CONFLICT (address) DO UPDATE SET max_bytes = 0"
                % (isp.domain, ", ".join("'%s'" % u for u in isp.users)))
    time.sleep(1)


# -- peak resident memory ---------------------------------------------------------

def _status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


class Peaks:
    """Peak RSS (KiB) of the milter, the Apache children and pollerd over
    what happens between reset() and read()."""

    def __init__(self, sender, receiver):
        self.sender, self.receiver = sender, receiver

    def _pids(self):
        return {"milter": [self.sender.procs["milter"].pid],
                "apache": children(self.sender.procs["httpd"].pid),
                "pollerd": [self.receiver.procs["pollerd"].pid]}

    def reset(self):
        for pids in self._pids().values():
            for pid in pids:
                with open("/proc/%d/clear_refs" % pid, "w") as f:
                    f.write("5")

    def read(self):
        return {k: max(_status(p, "VmHWM") for p in pids) for k, pids in self._pids().items()}


# -- plaintext on disk -------------------------------------------------------------

class PlaintextWatch(threading.Thread):
    """Every file under top, read at its start every 50 ms until stop(),
    searched for needle (a message's plaintext begins with its headers:
    write_message's tag is in its Subject)."""

    def __init__(self, top, needle):
        super().__init__(daemon=True)
        self.top, self.needle = top, needle.encode()
        self.seen, self.found = set(), set()
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.05):
            self.scan()

    def scan(self):
        for root, _, names in os.walk(self.top):
            for name in names:
                path = os.path.join(root, name)
                try:
                    with open(path, "rb") as f:
                        head = f.read(1 << 16)
                except OSError:
                    continue        # gone while we looked
                self.seen.add(path)
                if self.needle in head:
                    self.found.add(path)

    def stop(self):
        """The files that held needle."""
        self.done.set()
        self.join()
        self.scan()
        return self.found


# -- a proxy that breaks a connection ------------------------------------------------

class CutProxy:
    """Forwards TCP connections from (ip, port) to target. Once one
    connection has sent `after` bytes towards the client, it is cut
    (mode "cut": both sides closed) or held (mode "stall": nothing more
    goes to the client until release()); only the first connection to get
    there, the others pass untouched. stop() ends it all."""

    def __init__(self, ip, port, target, after, mode="cut"):
        self.target, self.after, self.mode = target, after, mode
        self.tripped = threading.Event()
        self.released = threading.Event()
        self.fired = False
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=10)
            except OSError:
                c.close()
                continue
            for args in ((c, u, False), (u, c, True)):
                t = threading.Thread(target=self._pipe, args=args, daemon=True)
                t.start()
                self.threads.append(t)

    def _pipe(self, src, dst, to_client):
        sent = 0
        armed = to_client
        src.settimeout(0.5)
        try:
            while not self.stopping:
                try:
                    data = src.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                if armed and sent + len(data) >= self.after:
                    with self.lock:
                        mine = not self.fired
                        self.fired = True
                    armed = False
                    if mine:
                        dst.sendall(data[:self.after - sent])
                        self.tripped.set()
                        if self.mode == "cut":
                            break
                        while not self.released.wait(0.2) and not self.stopping:
                            pass
                        break       # the client that waited is gone by now
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def release(self):
        self.released.set()

    def stop(self):
        self.stopping = True
        self.released.set()
        self.sock.close()
        for t in self.threads:
            t.join(timeout=5)
