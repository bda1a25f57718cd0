# The throwaway PostgreSQL cluster the benchmark pools: initdb, start, admin queries, pgbench data, stop.
"""A PostgreSQL cluster in a temporary directory, on 127.0.0.1:<port> for the poolers and on a
Unix socket for the harness's own admin queries (which therefore never cross a pooler)."""

import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import pgwire
from procs import Child, chown, log, user_switch

HOST = "127.0.0.1"
ADMIN = "postgres"
BENCH_USER = "bench"
BENCH_DB = "bench"


class HarnessError(Exception):
    """The harness itself cannot go on (missing tool, PostgreSQL would not start...)."""


def find_pg_bindir():
    """$PG_BINDIR, else the newest Debian install, else pg_config, else initdb on PATH."""
    cands = [os.environ.get("PG_BINDIR")]
    cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in p.split("/")[-2].split(".") if x.isdigit()], reverse=True)
    if shutil.which("pg_config"):
        try:
            cands.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
        except OSError:
            pass
    if shutil.which("initdb"):
        cands.append(os.path.dirname(os.path.realpath(shutil.which("initdb"))))
    for d in cands:
        if d and all(os.access(os.path.join(d, t), os.X_OK) for t in ("initdb", "postgres")):
            return d
    raise HarnessError("PostgreSQL server binaries (initdb, postgres) not found: set PG_BINDIR "
                       "or run scripts/install-deps.sh bench")


def find_tool(bindir, name):
    p = os.path.join(bindir, name)
    if os.access(p, os.X_OK):
        return p
    p = shutil.which(name)
    if not p:
        raise HarnessError(f"{name} not found (scripts/install-deps.sh bench installs it)")
    return p


def clean_env(extra=None):
    """A child's environment without the caller's PG* variables (they would redirect clients)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra or {})
    return env


class Postgres:
    def __init__(self, bindir, workdir, port, run_as):
        self.bindir, self.workdir, self.port, self.run_as = bindir, workdir, port, run_as
        self.data = os.path.join(workdir, "pgdata")
        self.sock = os.path.join(workdir, "pgsock")
        self.log_path = os.path.join(workdir, "postgres.log")
        self.psql = find_tool(bindir, "psql")
        self.child = None

    @property
    def pid(self):
        return self.child.pid if self.child else None

    def settings(self):
        # Not crash-safe on purpose (fsync off...): the benchmark measures pooling, not disks.
        return {
            "listen_addresses": HOST, "port": self.port, "unix_socket_directories": self.sock,
            "max_connections": 200, "shared_buffers": "256MB",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_wal_size": "4GB", "checkpoint_timeout": "30min", "jit": "off",
            "password_encryption": "scram-sha-256",
            "log_connections": "off", "log_disconnections": "off", "log_min_messages": "warning",
        }

    def init_and_start(self):
        os.makedirs(self.sock, exist_ok=True)
        chown(self.sock, self.run_as)
        log(f"initdb in {self.data} (binaries {self.bindir})")
        res = subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", ADMIN, "-E", "UTF8",
                              "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
                             capture_output=True, text=True, cwd=self.workdir,
                             env=clean_env({"HOME": self.workdir}), **user_switch(self.run_as))
        if res.returncode != 0:
            raise HarnessError(f"initdb failed: {(res.stdout + res.stderr).strip().splitlines()[-1]}")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as fh:
            fh.write("\n# pgswift bench\n")
            for k, v in self.settings().items():
                fh.write(f"{k} = '{v}'\n")
        self.child = Child("postgres", [os.path.join(self.bindir, "postgres"), "-D", self.data],
                           self.log_path, user=self.run_as, env=clean_env({"HOME": self.workdir}), cwd=self.workdir)
        deadline = time.monotonic() + 60
        while True:
            if not self.child.alive():
                raise HarnessError(f"postgres exited while starting; see {self.log_path}:\n{tail(self.log_path)}")
            ok, _ = self.try_admin("SELECT 1", timeout=5)
            if ok:
                break
            if time.monotonic() > deadline:
                raise HarnessError(f"postgres did not answer within 60 s:\n{tail(self.log_path)}")
            time.sleep(0.2)
        log(f"postgres ready on {HOST}:{self.port} (pid {self.pid})")

    def try_admin(self, sql, db="postgres", timeout=600):
        argv = [self.psql, "-h", self.sock, "-p", str(self.port), "-U", ADMIN, "-d", db, "-XAtq",
                "-v", "ON_ERROR_STOP=1"]
        for stmt in ([sql] if isinstance(sql, str) else sql):
            argv += ["-c", stmt]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=clean_env())
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout} s"
        return r.returncode == 0, (r.stdout.strip() if r.returncode == 0 else (r.stderr or r.stdout).strip())

    def admin(self, sql, db="postgres", timeout=600):
        ok, out = self.try_admin(sql, db, timeout)
        if not ok:
            raise HarnessError(f"admin query {sql!r} failed: {out}")
        return out

    def create_bench(self, password, iterations, scale, pgbench):
        """Role `bench` with a SCRAM secret of `iterations` (the secret is computed here, so the
        count is ours), database `bench`, and pgbench's tables.  Returns the stored secret."""
        secret = pgwire.scram_secret(password, iterations)
        self.admin(f"CREATE ROLE {BENCH_USER} LOGIN PASSWORD '{secret}'")
        self.admin(f"CREATE DATABASE {BENCH_DB} OWNER {BENCH_USER}")
        stored = self.admin(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{BENCH_USER}'")
        if stored != secret:
            raise HarnessError("the role's stored secret is not the one we set")
        log(f"pgbench -i -s {scale}")
        r = subprocess.run([pgbench, "-i", "-s", str(scale), "-q", "-h", HOST, "-p", str(self.port),
                            "-U", BENCH_USER, BENCH_DB], capture_output=True, text=True,
                           env=clean_env({"PGPASSWORD": password, "PGSSLMODE": "disable"}))
        if r.returncode != 0:
            raise HarnessError(f"pgbench -i failed: {(r.stderr or r.stdout)[-800:]}")
        self.admin("CHECKPOINT")
        return stored

    def bench_backends(self):
        ok, out = self.try_admin("SELECT count(*) FROM pg_stat_activity WHERE usename = 'bench' "
                                 "AND backend_type = 'client backend'", timeout=10)
        return int(out) if ok and out.isdigit() else None

    def alive(self):
        return self.child is not None and self.child.alive()

    def stop(self):
        if self.child:
            log(f"stopping postgres (pid {self.pid}): {self.child.stop(signal.SIGINT, grace=60)}")
            self.child = None


def pick_port():
    """A free TCP port below the ephemeral range, so no outgoing connection (churn makes many)
    sits on it in TIME_WAIT when a target binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low = int(fh.read().split()[0])
    except (OSError, ValueError):
        low = 32768
    for _ in range(500):
        port = random.randint(20000, max(20001, low - 1))
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
                return port
            except OSError:
                continue
    raise HarnessError("no free port found")


def tail(path, n=15):
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return ""
