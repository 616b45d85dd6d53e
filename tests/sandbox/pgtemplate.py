"""pgtemplate — the PostgreSQL cluster every ISP's database starts as: initdb,
the stubmail role and database, every migration applied, shut down
cleanly. Made once for each set of migrations and kept in
STUBMAIL_CACHE_DIR (default /var/cache/stubmail-test)/pg-template/KEY,
where KEY hashes what the cluster is made from (the PostgreSQL binaries,
sql/, stubmail-migrate, this file); each ISP copies it (cp -a) instead of
running initdb and the migrations again, a second or two of each
sandbox's start. Concurrent runs (two run_integration workers, another
worktree) take a lock per KEY: one builds, the others wait and copy."""

import fcntl
import glob
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from .common import MIGRATE, TOP, SandboxError, pg_bindir

CACHE_DIR = os.path.join(os.environ.get("STUBMAIL_CACHE_DIR", "/var/cache/stubmail-test"),
                         "pg-template")
# a template no run has used for this long is removed when another is built
STALE_AFTER = 7 * 24 * 3600
INITDB_ARGS = ["--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "-U", "postgres",
               "--no-sync"]


def template_cluster():
    """The data directory of the template cluster (stopped, owned by
    postgres), built first if this KEY has none yet."""
    key = _key()
    os.makedirs(CACHE_DIR, exist_ok=True)
    path = os.path.join(CACHE_DIR, key)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.utime(path + ".lock")        # used now: not stale
        if not os.path.isdir(path):
            _remove_stale(key)
            _build(path)
    return path


def _key():
    h = hashlib.sha256()
    h.update(pg_bindir().encode() + b"\0" + " ".join(INITDB_ARGS).encode() + b"\0")
    sources = [MIGRATE, os.path.abspath(__file__)] + sorted(
        glob.glob(os.path.join(TOP, "sql", "[0-9][0-9][0-9]_*.sql")))
    for p in sources:
        with open(p, "rb") as f:
            h.update(os.path.basename(p).encode() + b"\0" + f.read() + b"\0")
    # the server's own version: a minor upgrade in place keeps pg_bindir
    h.update(subprocess.run([os.path.join(pg_bindir(), "postgres"), "--version"],
                            capture_output=True).stdout)
    return h.hexdigest()[:24]


def _as_postgres(argv, what, env):
    r = subprocess.run(argv, user="postgres", group="postgres", extra_groups=[], cwd="/",
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SandboxError("PostgreSQL template: %s failed:\n%s%s" % (what, r.stdout, r.stderr))


def _build(path):
    pw = pwd.getpwnam("postgres")
    new = "%s.new-%d" % (path, os.getpid())
    shutil.rmtree(new, ignore_errors=True)
    os.makedirs(new, mode=0o700)
    os.chown(new, pw.pw_uid, pw.pw_gid)
    # unix socket only, in a directory of its own: no port to collide on
    sock = tempfile.mkdtemp(prefix="smpgt-", dir="/tmp")
    os.chown(sock, pw.pw_uid, pw.pw_gid)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": sock}
    server = None
    try:
        _as_postgres([os.path.join(pg_bindir(), "initdb"), "-D", new] + INITDB_ARGS,
                     "initdb", env)
        log = open(os.path.join(sock, "log"), "wb")
        server = subprocess.Popen(
            [os.path.join(pg_bindir(), "postgres"), "-D", new, "-c", "listen_addresses=",
             "-c", "unix_socket_directories=" + sock, "-c", "fsync=off", "-p", "5432"],
            user="postgres", group="postgres", extra_groups=[], cwd="/", env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while subprocess.run([os.path.join(pg_bindir(), "pg_isready"), "-q", "-h", sock,
                              "-p", "5432"]).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(sock, "log")) as f:
                    raise SandboxError("PostgreSQL template: the server did not start:\n"
                                       + f.read()[-2000:])
            time.sleep(0.05)
        su = "host=%s port=5432 dbname=postgres user=postgres" % sock
        for q in ("CREATE ROLE stubmail LOGIN", "CREATE DATABASE stubmail OWNER stubmail"):
            _as_postgres(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", su, "-c", q],
                         q, env)
        r = subprocess.run([MIGRATE, "host=%s port=5432 dbname=stubmail user=stubmail" % sock],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SandboxError("PostgreSQL template: stubmail-migrate failed:\n%s%s"
                               % (r.stdout, r.stderr))
        # a fast shutdown checkpoints: each copy starts without recovery
        server.send_signal(signal.SIGINT)
        if server.wait(60) != 0:
            raise SandboxError("PostgreSQL template: the server exited with %d"
                               % server.returncode)
        server = None
        os.rename(new, path)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)


def _remove_stale(keep):
    """Templates of other keys that no run used for STALE_AFTER (old
    migrations), each under its own lock, taken only if free."""
    now = time.time()
    for lock_path in glob.glob(os.path.join(CACHE_DIR, "*.lock")):
        key = os.path.basename(lock_path)[:-len(".lock")]
        if key == keep:
            continue
        try:
            if now - os.stat(lock_path).st_mtime < STALE_AFTER:
                continue
            with open(lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(os.path.join(CACHE_DIR, key), ignore_errors=True)
                os.unlink(lock_path)
        except OSError:
            continue                    # in use, or gone already
