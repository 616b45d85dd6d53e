"""pki — the sandbox's keys: a throwaway CA (openssl) and each ISP's server
certificate, and each domain's OpenPGP key as stubmail-keygen makes it."""

import os
import re

from .common import KEYGEN, SandboxError, run_checked


def make_ca(d):
    """A throwaway CA in d (P-256, a week): returns the certificate's path."""
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    cert = os.path.join(d, "ca.pem")
    run_checked(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", os.path.join(d, "ca.key"),
                 "-out", cert, "-days", "7", "-subj", "/CN=stubmail sandbox CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"], "making the CA")
    return cert


def make_server_cert(ca_dir, d, domain, ip):
    """Key and certificate for an ISP's Apache, signed by the CA in ca_dir,
    for its address (the outbox URLs name IPs) and its domain name.
    Returns (certificate, key)."""
    os.makedirs(d, exist_ok=True)
    key, csr, cert = (os.path.join(d, n) for n in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName = IP:%s, DNS:%s\n"
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n" % (ip, domain))
    run_checked(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr,
                 "-subj", "/CN=" + domain], "%s: certificate request" % domain)
    run_checked(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(ca_dir, "ca.pem"),
                 "-CAkey", os.path.join(ca_dir, "ca.key"), "-CAcreateserial", "-days", "7",
                 "-out", cert, "-extfile", ext], "%s: signing the certificate" % domain)
    return cert, key


class DomainKey:
    """A domain's OpenPGP key as stubmail-keygen makes it: home (GNUPGHOME
    with the secret key), fpr, public (the exported key file) and record
    (the _stubmail TXT text keygen says to publish)."""

    def __init__(self, home, domain, public, outbox_url, udp=None):
        if len(home) > 60:
            # gpg-agent's socket path (in the home) must fit sun_path
            raise SandboxError("GnuPG home %s is too long for the agent socket" % home)
        if not os.path.exists(KEYGEN):
            raise SandboxError("%s is not built (run scripts/build)" % KEYGEN)
        os.makedirs(home, mode=0o700, exist_ok=True)
        out = run_checked([KEYGEN, "-g", home, "-d", domain, "-o", public, "-u", outbox_url]
                          + (["-U", udp] if udp else []),
                          "%s: stubmail-keygen" % domain, timeout=60)
        fpr = re.search(r"^fingerprint ([0-9A-F]{40}(?:[0-9A-F]{24})?)$", out, re.M)
        rec = re.search(r'IN TXT "(v=stubmail1;[^"]*)"', out)
        if not fpr or not rec:
            raise SandboxError("%s: stubmail-keygen said:\n%s" % (domain, out))
        self.home, self.domain, self.public = home, domain, public
        self.fpr, self.record = fpr.group(1), rec.group(1)
        os.chmod(public, 0o644)
