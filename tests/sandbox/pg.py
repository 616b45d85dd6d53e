"""pg — an ISP's PostgreSQL: a throwaway cluster (a copy of the template
of pgtemplate.py: trust, the stubmail role and database with every
migration applied; fsync off), and
psql for the tests (Isp.sql). With Isp(standby=True) a synchronous
streaming-replication standby (pg_basebackup) on base+PG_STANDBY, which a
test may promote after killing the primary (a failover)."""

import csv
import io
import os
import pwd
import signal
import subprocess
import time

from .common import SandboxError, pg_bindir, run_checked
from .pgtemplate import template_cluster


class PgMixin:
    """Isp's PostgreSQL part (Isp.start runs _setup_pg, then start_db)."""

    def _setup_pg(self):
        """The ISP's cluster: a copy of the template (pgtemplate.py), which
        has the stubmail role and database with every migration."""
        pw = pwd.getpwnam("postgres")
        self.pg_data = self.path("pg", "data")
        self.pg_sock = self.path("pg", "sock")
        for d in (self.path("pg"), self.pg_sock):
            os.makedirs(d, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o755)
        run_checked(["cp", "-a", "--reflink=auto", template_cluster(), self.pg_data],
                    "%s: copying the PostgreSQL template" % self.domain)

    def _pg_env(self):
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": self.path("pg")}

    def start_db(self, name="pg"):
        """Start PostgreSQL (again) and wait until it accepts queries
        (name "pg_standby": the standby)."""
        data, port = self.pg_data, self.pg_port
        if name == "pg_standby":
            data, port = self.pg_standby_data, self.pg_standby_port
        argv = [os.path.join(pg_bindir(), "postgres"), "-D", data,
                "-c", "listen_addresses=" + self.ip, "-p", str(port),
                "-c", "unix_socket_directories=" + self.pg_sock,
                "-c", "max_connections=100", "-c", "log_min_messages=warning",
                # a test's server need not survive a power cut; a crashed
                # postgres (kill_db) loses nothing: the kernel has its writes
                "-c", "fsync=off"]
        # later -c wins: Isp(pg_settings=...) overrides the ones above
        for setting, value in self.pg_settings:
            argv += ["-c", "%s=%s" % (setting, value)]
        self._spawn(name, argv, self.path(name + ".log"), stop_signal=signal.SIGINT,
                    stop_timeout=30, user="postgres", group="postgres",
                    env=self._pg_env(), cwd="/")
        isready = os.path.join(pg_bindir(), "pg_isready")
        self._await(name, lambda: subprocess.run(
            [isready, "-q", "-h", self.ip, "-p", str(port), "-U", "postgres",
             "-d", "postgres"]).returncode == 0,
            self.path(name + ".log"))

    @property
    def pg_standby_data(self):
        return self.path("pg", "standby")

    def _pg_as_postgres(self, argv, what):
        r = subprocess.run(argv, user="postgres", group="postgres", extra_groups=[],
                           cwd="/", capture_output=True, text=True, env=self._pg_env())
        if r.returncode != 0:
            raise SandboxError("%s %s failed:\n%s%s" % (self.domain, what, r.stdout, r.stderr))

    def _pg_super(self, port, query):
        su = "host=%s port=%d dbname=postgres user=postgres" % (self.ip, port)
        return subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                               "-d", su, "-c", query],
                              check=True, capture_output=True, text=True).stdout.strip()

    def start_standby(self):
        """Copy the primary with pg_basebackup (-R: a standby that streams
        from it), start it, and make the primary's commits wait for it
        (synchronous_standby_names, set after the copy so that the standby,
        once promoted, does not wait for a standby of its own)."""
        self._pg_as_postgres(
            [os.path.join(pg_bindir(), "pg_basebackup"), "-h", self.ip,
             "-p", str(self.pg_port), "-U", "postgres", "-D", self.pg_standby_data,
             "-R", "-X", "stream", "--no-sync", "-c", "fast"], "pg_basebackup")
        os.chmod(self.pg_standby_data, 0o700)
        self.start_db("pg_standby")
        self._pg_super(self.pg_port, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        self._pg_super(self.pg_port, "SELECT pg_reload_conf()")
        # synchronous once the primary says so
        deadline = time.monotonic() + 20
        while self.sync_state() != "sync":
            if time.monotonic() > deadline:
                raise SandboxError("%s: the standby did not become synchronous" % self.domain)
            time.sleep(0.1)

    def sync_state(self):
        """The primary's view of its standby: "sync" while commits wait for it."""
        return self._pg_super(self.pg_port, "SELECT string_agg(sync_state, ',') "
                              "FROM pg_stat_replication")

    def kill_db(self):
        """SIGKILL the primary and everything in its process group: a crash."""
        p = self.procs.pop("pg", None)
        if p is not None:
            p.stop(sig=signal.SIGKILL, timeout=10)

    def promote_standby(self):
        """pg_ctl promote: the standby takes writes (and is waited for until it does)."""
        self._pg_as_postgres([os.path.join(pg_bindir(), "pg_ctl"), "promote", "-w",
                              "-D", self.pg_standby_data], "pg_ctl promote")

    def stop_db(self):
        """Fast shutdown of PostgreSQL (clients are disconnected)."""
        p = self.procs.pop("pg", None)
        if p is not None:
            p.stop()

    def db_running(self):
        p = self.procs.get("pg")
        return p is not None and p.alive()

    def sql(self, query, timeout=30):
        """Run query with psql as the stubmail role; return the rows of the
        last statement as lists of strings (NULL and '' both read as '')."""
        r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-t",
                            "-d", self.conninfo, "-c", query],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise SandboxError("%s sql failed: %s\n%s" % (self.domain, query, r.stderr.strip()))
        # a row of one NULL/empty column is an empty line, which csv reads as []
        return [row or [""] for row in csv.reader(io.StringIO(r.stdout))]

    def sql_value(self, query):
        rows = self.sql(query)
        return rows[0][0] if rows and rows[0] else None

    def count(self, table, where="true"):
        return int(self.sql_value("SELECT count(*) FROM %s WHERE %s" % (table, where)))

    def table_counts(self, tables=("peer", "message", "outbox", "address_book", "received")):
        return {t: self.count(t) for t in tables}
