# The poolers under test: PgBouncer with N processes (so_reuseport) and pgswift with N workers, same pool settings.
"""Targets.  Each one is started fresh for every run, checked (it answers SELECT 1 as `bench`,
it proxies to our PostgreSQL, every listener on its port is one of its own processes), measured
through its process tree, and stopped by PID."""

import os
import re
import signal
import time

import pgwire
from cluster import BENCH_DB, BENCH_USER, HOST, clean_env, tail
from procs import Child, StartError, chown, descendants, inode_owners, listening_inodes, snapshot


class TargetError(Exception):
    """The target did not start or answer; the run is recorded as FAILED with this text."""


class Settings:
    """What every target shares, so that they are compared with equal pool settings."""

    def __init__(self, port, pg_port, pool_size, max_clients, secret, password, run_as, workdir):
        self.port, self.pg_port, self.pool_size, self.max_clients = port, pg_port, pool_size, max_clients
        self.secret, self.password, self.run_as, self.workdir = secret, password, run_as, workdir
        # (certificate, key) for client TLS, made when a TLS scenario is planned.
        self.client_tls = None


class Target:
    kind = "?"

    def __init__(self, s, processes):
        self.s = s
        self.processes = processes
        self.name = f"{self.kind}:{processes}"
        self.dir = os.path.join(s.workdir, "targets", self.name.replace(":", "-"))
        os.makedirs(self.dir, exist_ok=True)
        chown(self.dir, s.run_as)
        self.children = []
        self.log_offsets = {}
        # Set per run: serve client TLS (sslmode=prefer, so the plaintext readiness check still gets in).
        self.client_tls = False

    # -- to be provided by subclasses
    def config_text(self):
        raise NotImplementedError

    def commands(self, ini):
        raise NotImplementedError

    def describe(self):
        raise NotImplementedError

    def tls_ini(self):
        if not (self.client_tls and self.s.client_tls):
            return "client_tls_sslmode = disable\n"
        cert, key = self.s.client_tls
        return f"client_tls_sslmode = prefer\nclient_tls_cert_file = {cert}\nclient_tls_key_file = {key}\n"

    # -- lifecycle
    def write_files(self):
        userlist = os.path.join(self.dir, "userlist.txt")
        with open(userlist, "w") as fh:
            fh.write(f'"{BENCH_USER}" "{self.s.secret}"\n')
        os.chmod(userlist, 0o600)
        chown(userlist, self.s.run_as)
        ini = os.path.join(self.dir, "config.ini")
        with open(ini, "w") as fh:
            fh.write(self.config_text())
        chown(ini, self.s.run_as)
        return ini

    def start(self, timeout=30.0):
        busy = listening_inodes(self.s.port)
        if busy:
            owners = inode_owners(busy)
            raise TargetError(f"port {self.s.port} is already in use (pids {sorted(owners) or '?'})")
        ini = self.write_files()
        for i, argv in enumerate(self.commands(ini)):
            try:
                self.children.append(Child(f"{self.name}#{i}", argv, os.path.join(self.dir, f"process{i}.log"),
                                           user=self.s.run_as, env=clean_env({"HOME": self.dir}), cwd=self.dir))
            except StartError as exc:
                self.stop()
                raise TargetError(str(exc)) from None
        try:
            self.wait_ready(timeout)
        except TargetError:
            self.stop()
            raise
        self.started_processes = self.process_ids()
        self.log_offsets = {c.log_path: os.path.getsize(c.log_path) for c in self.children}

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            dead = self.dead()
            if dead:
                raise TargetError(f"{dead}; log: {self.log_tail()}")
            inodes = listening_inodes(self.s.port)
            if len(inodes) >= self.processes:
                try:
                    c = pgwire.Conn.connect(HOST, self.s.port, BENCH_USER, BENCH_DB, self.s.password, timeout=5)
                    try:
                        port = c.query("SELECT inet_server_port()")[0][0]
                    finally:
                        c.close()
                    if port != str(self.s.pg_port):
                        raise TargetError(f"the target answers, but from server port {port}, not our PostgreSQL")
                    mine = descendants(self.roots())[0]
                    strangers = inode_owners(inodes) - mine
                    if strangers:
                        raise TargetError(f"processes we did not start also listen on {self.s.port}: {sorted(strangers)}")
                    self.listeners = len(inodes)
                    return
                except (OSError, pgwire.PgError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
            else:
                last = f"{len(inodes)} of {self.processes} listening sockets"
            time.sleep(0.1)
        raise TargetError(f"not ready within {timeout:g} s ({last}); log: {self.log_tail()}")

    def roots(self):
        return [c.pid for c in self.children]

    def process_ids(self):
        """The pooler's processes now (supervisor and workers for pgswift)."""
        return sorted(descendants(self.roots())[0])

    def dead(self):
        gone = [f"{c.label} (pid {c.pid}) exited with status {c.popen.returncode}"
                for c in self.children if not c.alive()]
        return "; ".join(gone) if gone else None

    def changes(self):
        """Processes that appeared or vanished since the start (a pgswift worker that crashed
        and was respawned), or None."""
        now = self.process_ids()
        if now != self.started_processes:
            return f"pooler processes changed during the run: {self.started_processes} -> {now}"
        return None

    def new_log_problems(self):
        """WARNING/ERROR/FATAL/PANIC lines logged since the start or the last call."""
        lines = []
        for c in self.children:
            try:
                with open(c.log_path, "rb") as fh:
                    fh.seek(self.log_offsets.get(c.log_path, 0))
                    text = fh.read().decode("utf-8", "replace")
                    self.log_offsets[c.log_path] = fh.tell()
            except OSError:
                continue
            lines += [ln for ln in text.splitlines() if re.search(r"\b(WARNING|ERROR|FATAL|PANIC)\b", ln)]
        return lines

    def log_tail(self):
        return " | ".join(tail(c.log_path, 5).strip().replace("\n", " | ") for c in self.children)[-1200:]

    def stop(self):
        how = []
        for c in self.children:
            how.append(self.stop_child(c))
        self.children = []
        return "; ".join(how)

    def stop_child(self, c):
        return c.stop(signal.SIGTERM, grace=10.0)

    def info(self):
        return {"name": self.name, "kind": self.kind, "processes": self.processes,
                "description": self.describe(), "config": self.config_text()}


def common_ini(s, extra_comment=""):
    """The [databases] and [pgbouncer] part both poolers read (pgswift takes pgbouncer.ini)."""
    return f"""\
;; generated by bench/bench.py{extra_comment}
[databases]
{BENCH_DB} = host={HOST} port={s.pg_port} dbname={BENCH_DB}

[pgbouncer]
listen_addr = {HOST}
listen_port = {s.port}
; TCP only: N processes would fight over one Unix socket path
unix_socket_dir =
pool_mode = transaction
; per process: N processes open up to N x default_pool_size server connections
default_pool_size = {s.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {s.max_clients}
auth_type = scram-sha-256
auth_file = userlist.txt
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
ignore_startup_parameters = extra_float_digits
"""


class PgBouncer(Target):
    kind = "pgbouncer"

    def __init__(self, s, processes, binary, version):
        super().__init__(s, processes)
        self.binary, self.version = binary, version

    def config_text(self):
        return common_ini(self.s) + """\
; N processes share the TCP port, the kernel spreads new connections
so_reuseport = 1
server_tls_sslmode = disable
stats_period = 60
""" + self.tls_ini()

    def commands(self, ini):
        return [[self.binary, ini] for _ in range(self.processes)]

    def describe(self):
        return (f"{self.version}, {self.processes} process(es) with so_reuseport=1, transaction pooling, "
                f"default_pool_size={self.s.pool_size} per process")


class PgSwift(Target):
    kind = "pgswift"
    # More [pgswift] lines (the query_stats = off variant below).
    extra = ""

    def __init__(self, s, processes, bindir, version):
        super().__init__(s, processes)
        self.bindir, self.version = bindir, version

    def config_text(self):
        # pgswift's pool size holds for the whole service (split over the workers), PgBouncer's per
        # process: give pgswift N x pool_size so both may open the same number of server connections.
        ini = common_ini(self.s).replace(
            f"; per process: N processes open up to N x default_pool_size server connections\ndefault_pool_size = {self.s.pool_size}",
            f"; pgswift: for the whole service, = PgBouncer's per-process size x {self.processes} processes\n"
            f"default_pool_size = {self.s.pool_size * self.processes}")
        # pgswift's server_tls_sslmode defaults to prefer (as PgBouncer's): plaintext here, as for PgBouncer.
        # so_reuseport = 1: one SO_REUSEPORT socket per worker, as PgBouncer's processes here (and the N
        # listening sockets `wait_ready` counts); pgswift's default, one socket shared by the workers,
        # would be one.
        return ini + "server_tls_sslmode = disable\nso_reuseport = 1\n" + self.tls_ini() + f"""\

[pgswift]
workers = {self.processes}
worker_binary = {os.path.join(self.bindir, "pgswift-worker")}
""" + self.extra

    def commands(self, ini):
        return [[os.path.join(self.bindir, "pgswift"), ini]]

    def stop_child(self, c):
        # SIGTERM waits for clients to leave (there are none left by now); a second one exits at once.
        return c.stop(signal.SIGTERM, grace=10.0, then=signal.SIGTERM)

    def describe(self):
        return (f"{self.version}, supervisor + {self.processes} worker(s) on one SO_REUSEPORT port, "
                f"transaction pooling, default_pool_size={self.s.pool_size * self.processes} for the service "
                f"(= {self.s.pool_size} per PgBouncer process x {self.processes})")


class PgSwiftRouting(PgSwift):
    """pgswift with `routing=read-write-split` on the bench database (issue 20). The bench has no
    standby, so every read falls back to the primary: what it measures is the routing work on the
    data path (the first statement of each transaction lexed and classified, the server picked by
    role, the fallback counted), against pgswift:N, which has routing off."""
    kind = "pgswift-routing"

    def config_text(self):
        ini = super().config_text()
        line = f"{BENCH_DB} = host={HOST} port={self.s.pg_port} dbname={BENCH_DB}"
        assert line in ini
        # Routing needs the host's role from the health check, which cannot log in with a SCRAM secret
        # (it has no client to take keys from): the entry forces the bench user with its password.
        return ini.replace(line, line + f" routing=read-write-split user={BENCH_USER} password={self.s.password}", 1)

    def describe(self):
        return super().describe() + ", routing=read-write-split (no standby: reads fall back to the primary)"


class PgSwiftNoStats(PgSwift):
    """pgswift with `query_stats = off`: the cost of per-pattern query statistics (issue 21) is
    pgswift:N's pooler CPU per transaction over this target's."""
    kind = "pgswift-nostats"
    extra = "query_stats = off\n"

    def describe(self):
        return super().describe() + ", query_stats = off"
