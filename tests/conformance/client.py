"""client — the poller's side of docs/PROTOCOL.md for the conformance
checker: HTTP requests to an outbox (Python's http.client over TLS, one
connection per request, every header and the body as the checker wants
them, wrong ones too) and logins signed with gpg in the domain's GnuPG
home, or in throwaway homes for the keys that must be refused."""

import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.parse


class Answer:
    """One HTTP answer: status, headers (lowercase names), body (bytes)."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "HTTP %d %s %r" % (self.status, self.header("content-type"), self.body[:200])


class Outbox:
    """An outbox base URL and how to reach it."""

    def __init__(self, url, ca_file=None, timeout=30):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("https", "http"):
            raise ValueError("outbox URL %s: not http(s)" % url)
        self.url, self.scheme, self.host = url, u.scheme, u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.base = u.path.rstrip("/")
        self.timeout = timeout
        self.ctx = None
        if u.scheme == "https":
            self.ctx = ssl.create_default_context(cafile=ca_file)

    def _conn(self):
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                               timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method, path, body=None, token=None, content_type="application/json",
                headers=(), length=True):
        """method path (below the base URL). body: dict/list (sent as JSON),
        str or bytes; length False sends no Content-Length."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn = self._conn()
        try:
            conn.putrequest(method, self.base + path, skip_accept_encoding=True)
            if token is not None:
                conn.putheader("Authorization", "Bearer " + token)
            if body is not None and content_type:
                conn.putheader("Content-Type", content_type)
            if body is not None and length:
                conn.putheader("Content-Length", str(len(body)))
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            if body is not None and length:
                conn.send(body)
            r = conn.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            return Answer(r.status, hdrs, data)
        finally:
            conn.close()


def rfc3339(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def statement(server, domain, when, nonce):
    """The octets a login signs (PROTOCOL.md, POST /v1/login)."""
    return ("stubmail-login-v1\nserver:%s\ndomain:%s\ntime:%s\nnonce:%s\n"
            % (server, domain, when, nonce)).encode()


def gpg(home, *args, data=None):
    r = subprocess.run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
                        "--passphrase", ""] + list(args), input=data, capture_output=True,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError("gpg %s in %s failed: %s" % (" ".join(args), home,
                                                         r.stderr.decode().strip()))
    return r.stdout


class Signer:
    """A GnuPG home holding a domain's secret key: signs login statements
    and exports the public key."""

    def __init__(self, home, domain, fpr=None):
        self.home, self.domain = home, domain
        self.fpr = fpr or self._only_secret_key()

    def _only_secret_key(self):
        out = gpg(self.home, "--with-colons", "--list-secret-keys").decode()
        fprs, primary = [], False
        for line in out.splitlines():
            f = line.split(":")
            if f[0] == "sec":
                primary = True
            elif f[0] == "fpr" and primary:
                fprs.append(f[9])
                primary = False
            elif f[0] == "ssb":
                primary = False
        if len(fprs) != 1:
            raise RuntimeError("%s holds %d secret keys: name one with --key"
                               % (self.home, len(fprs)))
        return fprs[0]

    def public_key(self, *more):
        return gpg(self.home, "--armor", "--export", self.fpr, *more).decode()

    def sign(self, data, digest=None, signer=None):
        args = ["--armor", "--detach-sign", "--local-user", signer or self.fpr, "-o", "-"]
        if digest:
            args = ["--digest-algo", digest] + args
        return gpg(self.home, *args, data=data).decode()

    def login_body(self, server, when=None, nonce=None, key=None, signature=None,
                   signed=None, digest=None, signer=None, domain=None):
        """A login request (dict); every member can be made wrong."""
        domain = domain or self.domain
        when = when or rfc3339()
        nonce = nonce or os.urandom(16).hex()
        if signature is None:
            signature = self.sign(signed if signed is not None
                                  else statement(server, domain, when, nonce),
                                  digest=digest, signer=signer)
        return {"domain": domain, "server": server, "time": when, "nonce": nonce,
                "key": key if key is not None else self.public_key(),
                "signature": signature}


class ScratchHome:
    """A throwaway GnuPG home (short path: the agent's socket lives there),
    removed with its agent on close."""

    def __init__(self, copy_of=None):
        self.home = tempfile.mkdtemp(prefix="smc", dir="/tmp")
        os.chmod(self.home, 0o700)
        if copy_of:
            for name in ("pubring.kbx", "trustdb.gpg", "private-keys-v1.d", "gpg.conf"):
                src = os.path.join(copy_of, name)
                if os.path.isdir(src):
                    shutil.copytree(src, os.path.join(self.home, name))
                elif os.path.exists(src):
                    shutil.copy2(src, os.path.join(self.home, name))

    def close(self):
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"],
                       capture_output=True, timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)

    def new_key(self, uid):
        gpg(self.home, "--quick-gen-key", uid, "ed25519", "sign", "1d")
        out = gpg(self.home, "--with-colons", "--list-keys", uid).decode()
        return [l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:")][0]

    def add_signing_subkey(self, fpr):
        """A new signing subkey of fpr; its fingerprint."""
        before = set(self._fprs(fpr))
        gpg(self.home, "--quick-add-key", fpr, "ed25519", "sign", "1d")
        return [f for f in self._fprs(fpr) if f not in before][0]

    def _fprs(self, fpr):
        out = gpg(self.home, "--with-colons", "--list-keys", fpr).decode()
        return [l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:")]
