# `make fuzz`: a real PostgreSQL and pgswift, the regressions, the pre-auth and post-auth phases, the final checks.
"""Starts a throwaway PostgreSQL (bench/cluster.py) and pgswift from the built binaries, replays
fuzz/regressions/*.bin, runs `pgswift-fuzz run` for the pre-auth phase (a fresh Unix-socket
connection per input, md5, SCRAM, trust and unknown users) and the post-auth phase (logged-in
sessions reused, transaction pooling, a pool of a few servers), while a canary client on the same
pool must keep being answered; then checks that no pgswift process exited or restarted and that no
pool is left frozen (a normal client answered within 5 s, SHOW POOLS with no active client or server
left, no pgswift socket in CLOSE-WAIT, worker sockets back near their start count).

Environment: FUZZ_SECONDS (whole run, default 570), FUZZ_SEED (default: drawn and printed),
FUZZ_INPUTS (per phase, default 1000000), FUZZ_CONNS_PRE / FUZZ_CONNS_POST, FUZZ_POOL_SIZE (4),
FUZZ_WORKERS (2), FUZZ_OUT (fuzz/out), PGSWIFT_BIN_DIR (.build/release), PG_BINDIR.
Exit status: 0 all good, 1 a crash / frozen pool / failed regression / finding, 3 fewer inputs than
FUZZ_INPUTS in a phase (time ran out) and nothing else wrong."""

import hashlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import pgwire  # noqa: E402
from cluster import HOST, HarnessError, Postgres, clean_env, find_pg_bindir, pick_port, tail  # noqa: E402
from procs import (Child, become_subreaper, chown, descendants, log, raise_open_files,  # noqa: E402
                   reap_adopted, rss_bytes)

USER, MD5_USER, SCRAM_USER, ADMIN_USER = "fuzz", "fuzz_md5", "fuzz_scram", "fuzzadmin"
DB, TABLE = "fuzzdb", "fuzz_t"


class FuzzPostgres(Postgres):
    def settings(self):
        s = super().settings()
        # A million errors must not become a million log lines; fsync is already off.
        # "log" keeps FATALs and the postmaster's report of a crashed backend (with its query), not ERRORs.
        s.update({"log_min_messages": "log", "log_min_error_statement": "panic", "max_connections": 100,
                  "shared_buffers": "128MB"})
        return s


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


class Canary(threading.Thread):
    """A normal client on the fuzzed pool (TCP, trust): `select 1` every 50 ms on a kept connection,
    reconnecting when pgswift drops it. Records the slowest answer and any failure."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop_flag = threading.Event()
        self.queries = self.failures = self.reconnects = 0
        self.slowest = 0.0
        self.last_error = None

    def run(self):
        conn = None
        while not self.stop_flag.is_set():
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = pgwire.Conn.connect(HOST, self.port, USER, DB, timeout=10)
                    self.reconnects += 1
                conn.query("select 1")
                self.queries += 1
                self.slowest = max(self.slowest, time.monotonic() - t0)
            except (OSError, pgwire.PgError) as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.slowest = max(self.slowest, time.monotonic() - t0)
                if conn is not None:
                    conn.sock.close()
                conn = None
            self.stop_flag.wait(0.05)
        if conn is not None:
            conn.close()


class Fuzz:
    def __init__(self):
        self.seconds = env_int("FUZZ_SECONDS", 570)
        self.seed = env_int("FUZZ_SEED", secrets.randbelow(2**31))
        self.inputs = env_int("FUZZ_INPUTS", 1_000_000)
        self.conns_pre = env_int("FUZZ_CONNS_PRE", 64)
        self.conns_post = env_int("FUZZ_CONNS_POST", 48)
        self.pool_size = env_int("FUZZ_POOL_SIZE", 4)
        self.workers = env_int("FUZZ_WORKERS", 2)
        self.out = os.path.abspath(os.environ.get("FUZZ_OUT") or os.path.join(HERE, "out"))
        self.bin = os.path.abspath(os.environ.get("PGSWIFT_BIN_DIR") or os.path.join(ROOT, ".build", "release"))
        self.run_as = os.environ.get("FUZZ_RUN_AS", "postgres") if os.geteuid() == 0 else None
        self.started = time.monotonic()
        self.failures, self.notes, self.results = [], [], {}
        self.pg = self.px = None

    # -- set-up
    def setup(self):
        for b in ("pgswift", "pgswift-worker", "pgswift-fuzz"):
            if not os.access(os.path.join(self.bin, b), os.X_OK):
                raise HarnessError(f"{self.bin}/{b} not found: run `swift build -c release` (or set PGSWIFT_BIN_DIR)")
        os.makedirs(self.out, exist_ok=True)
        for f in os.listdir(self.out):
            if f.endswith(".bin") or f in ("findings.txt",):
                os.unlink(os.path.join(self.out, f))
        raise_open_files(20000)
        self.work = tempfile.mkdtemp(prefix="pgswift-fuzz-")
        os.chmod(self.work, 0o755)
        chown(self.work, self.run_as)
        log(f"work directory {self.work}, output {self.out}")
        self.pg_port, self.port = pick_port(), pick_port()
        while self.port == self.pg_port:
            self.port = pick_port()
        self.pg = FuzzPostgres(find_pg_bindir(), self.work, self.pg_port, self.run_as)
        self.pg.init_and_start()
        self.password = "fz-" + secrets.token_hex(8)
        self.pg.admin([f"CREATE ROLE {USER} LOGIN PASSWORD '{pgwire.scram_secret(self.password, 16)}'",
                       f"CREATE DATABASE {DB} OWNER {USER}",
                       # A mutated query must not run for long; errors are answered quietly.
                       f"ALTER ROLE {USER} SET statement_timeout = '2s'",
                       f"ALTER ROLE {USER} SET client_min_messages = 'error'"])
        self.pg.admin([f"CREATE TABLE {TABLE} (a int, b text)", f"ALTER TABLE {TABLE} OWNER TO {USER}",
                       f"INSERT INTO {TABLE} SELECT g, 'row ' || g FROM generate_series(1, 5) g"], db=DB)
        self.start_pgswift()

    def start_pgswift(self):
        d = os.path.join(self.work, "pgswift")
        self.sockdir = os.path.join(d, "sock")
        os.makedirs(self.sockdir)
        md5 = "md5" + hashlib.md5((self.password + MD5_USER).encode()).hexdigest()
        files = {
            "userlist.txt": f'"{USER}" "{self.password}"\n"{MD5_USER}" "{md5}"\n'
                            f'"{SCRAM_USER}" "{pgwire.scram_secret(self.password, 4096)}"\n'
                            f'"{ADMIN_USER}" "{self.password}"\n',
            # Unix socket: trust for the fuzzing user (post-auth sessions cost no hashing), md5 and SCRAM
            # for the others, md5 for unknown names. TCP: the canary (trust) and the admin console.
            "hba.conf": f"local all {USER} trust\nlocal all {MD5_USER} md5\nlocal all {SCRAM_USER} scram-sha-256\n"
                        f"local all all md5\nhost all {USER} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 md5\n",
            "pgswift.ini": f"""\
;; generated by fuzz/fuzz.py
[databases]
{DB} = host={HOST} port={self.pg_port} dbname={DB}

[pgbouncer]
listen_addr = {HOST}
listen_port = {self.port}
unix_socket_dir = {self.sockdir}
pool_mode = transaction
default_pool_size = {self.pool_size}
; pgswift-fuzz counts a pre-auth connection pgswift has not closed 5 s after the client's half-close as
; a finding and stops waiting; the login timeout bounds how many such connections pile up in pgswift
; (max_client_conn reached would refuse everything after them).
max_client_conn = 10000
client_login_timeout = 15
auth_type = hba
auth_hba_file = hba.conf
auth_file = userlist.txt
admin_users = {ADMIN_USER}
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0

[pgswift]
workers = {self.workers}
worker_binary = {os.path.join(self.bin, "pgswift-worker")}
"""}
        for name, text in files.items():
            p = os.path.join(d, name)
            with open(p, "w") as fh:
                fh.write(text)
            os.chmod(p, 0o600)
            chown(p, self.run_as)
        for p in (d, self.sockdir):
            chown(p, self.run_as)
        self.px_log = os.path.join(d, "pgswift.log")
        self.px = Child("pgswift", [os.path.join(self.bin, "pgswift"), os.path.join(d, "pgswift.ini")], self.px_log,
                        user=self.run_as, env=clean_env({"HOME": d}), cwd=d)
        self.socket = os.path.join(self.sockdir, f".s.PGSQL.{self.port}")
        deadline = time.monotonic() + 30
        while True:
            if not self.px.alive():
                raise HarnessError(f"pgswift exited while starting:\n{tail(self.px_log)}")
            try:
                if os.path.exists(self.socket):
                    c = pgwire.Conn.connect(HOST, self.port, USER, DB, timeout=5)
                    c.query("select 1")
                    c.close()
                    break
            except (OSError, pgwire.PgError):
                pass
            if time.monotonic() > deadline:
                raise HarnessError(f"pgswift did not answer within 30 s:\n{tail(self.px_log)}")
            time.sleep(0.1)
        self.pids = self.pgswift_pids()
        self.fd_baseline = self.socket_fds()
        self.rss_start = rss_bytes(self.pids)
        log(f"pgswift ready on {HOST}:{self.port} and {self.socket} (pids {self.pids})")

    # -- probes
    def pgswift_pids(self):
        return sorted(descendants([self.px.pid])[0])

    def socket_fds(self):
        n = 0
        for pid in self.pids:
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                            n += 1
                    except OSError:
                        pass
            except OSError:
                pass
        return n

    def close_wait(self):
        rows = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as fh:
                    for row in fh.read().splitlines()[1:]:
                        cols = row.split()
                        if len(cols) > 3 and cols[3] == "08" and int(cols[1].rsplit(":", 1)[1], 16) == self.port:
                            rows.append(row.strip())
            except OSError:
                pass
        return rows

    def show_pools(self):
        """SHOW POOLS rows as dicts (column names from RowDescription), through the admin console."""
        c = pgwire.Conn.connect(HOST, self.port, ADMIN_USER, "pgbouncer", self.password, timeout=10)
        try:
            c.sock.sendall(pgwire.query_message("SHOW POOLS"))
            cols, rows = [], []
            while True:
                kind, payload = c.read_message()
                if kind == b"T":
                    n, pos = struct.unpack_from("!h", payload)[0], 2
                    for _ in range(n):
                        end = payload.index(b"\0", pos)
                        cols.append(payload[pos:end].decode())
                        pos = end + 1 + 18
                elif kind == b"D":
                    n, pos, row = struct.unpack_from("!h", payload)[0], 2, []
                    for _ in range(n):
                        ln = struct.unpack_from("!i", payload, pos)[0]
                        pos += 4
                        row.append(None if ln < 0 else payload[pos:pos + ln].decode())
                        pos += max(ln, 0)
                    rows.append(dict(zip(cols, row)))
                elif kind == b"E":
                    raise pgwire.PgError(pgwire.error_text(pgwire.error_fields(payload)))
                elif kind == b"Z":
                    return rows
        finally:
            c.close()

    def crashed(self):
        """Exits and restarts of pgswift's processes since the start (pids, and the supervisor's log)."""
        problems = []
        self.stalls = []
        if not self.px.alive():
            problems.append(f"the supervisor exited (status {self.px.popen.returncode})")
        now = self.pgswift_pids()
        if now != self.pids:
            problems.append(f"pgswift processes changed: {self.pids} -> {now}")
        with open(self.px_log, errors="replace") as fh:
            for line in fh:
                # A worker silent on its stats channel for a while (a stalled loop, or a starved CPU) has
                # not exited: reported apart (`stalls`), not as a crash.
                if re.search(r"worker \d+ \(pid \d+\) (has sent no stats|reports stats again)", line):
                    if "has sent no stats" in line:
                        self.stalls.append(line.strip()[:200])
                    continue
                if re.search(r"worker \d+ \(pid \d+\) ", line) or re.search(r"\b(PANIC|Fatal error|fatalError)\b", line):
                    problems.append("log: " + line.strip()[:300])
        return problems

    # -- runs
    def fuzz_bin(self):
        return os.path.join(self.bin, "pgswift-fuzz")

    def regressions(self):
        d = os.path.join(HERE, "regressions")
        files = sorted(f for f in os.listdir(d) if f.endswith(".bin")) if os.path.isdir(d) else []
        for f in files:
            phase = "pre" if f.startswith("pre-") else "post"
            # Post-auth files twice: followed by CopyFail, Sync and the canary query (must be answered),
            # and followed by a half-close (pgswift must close); then a normal query must be answered.
            for mode in (["--canary"], []) if phase == "post" else ([],):
                argv = [self.fuzz_bin(), "replay-file", os.path.join(d, f), "--phase", phase, "--socket", self.socket,
                        "--repeat", "25"] + mode
                try:
                    r = subprocess.run(argv, capture_output=True, text=True, timeout=400)
                    ok, text = r.returncode == 0, r.stdout
                except subprocess.TimeoutExpired:
                    ok, text = False, "timed out after 400 s"
                verdict = "ok" if ok else "FAILED"
                how = "then canary" if mode else "then half-close"
                log(f"regression {f} ({phase}-auth, 25 times, {how}): {verdict}")
                self.results[f"regression {f}, {how}"] = verdict
                if not ok:
                    self.failures.append(f"regression {f} ({how}) failed:\n{text[-1500:]}")

    def phase(self, name, conns, budget):
        argv = [self.fuzz_bin(), "run", "--phase", name, "--seed", str(self.seed), "--inputs", str(self.inputs),
                "--seconds", str(max(5, int(budget))), "--conns", str(conns), "--socket", self.socket,
                "--out", self.out, "--user", USER, "--md5-user", MD5_USER, "--scram-user", SCRAM_USER,
                "--database", DB, "--table", TABLE]
        log(f"{name}-auth phase: seed {self.seed}, up to {self.inputs} inputs in {int(budget)} s ({conns} connections)")
        log("  " + " ".join(argv))
        r = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), "")
        res = dict(kv.split("=", 1) for kv in re.findall(r'(\w+=(?:"[^"]*"|\S+))', line))
        self.results[f"{name}-auth"] = line[len("RESULT "):]
        log(f"  {line}")
        if r.returncode != 0 or not line:
            self.failures.append(f"{name}-auth driver failed (status {r.returncode}): {line or 'no RESULT line'}")
            return res
        for key in ("timeouts", "garbled", "crossed", "server_down"):
            if int(res.get(key, 0)):
                self.failures.append(f"{name}-auth: {res[key]} input(s) {key} (see {self.out}/findings.txt)")
        if int(res.get("inputs", 0)) < self.inputs:
            self.notes.append(f"{name}-auth: {res.get('inputs')} inputs, fewer than {self.inputs} (time ran out)")
        return res

    def run(self):
        if os.environ.get("FUZZ_HOLD"):
            # Debugging: keep PostgreSQL and pgswift up for replays, until interrupted.
            log(f"holding: socket {self.socket}, admin console {HOST}:{self.port} as {ADMIN_USER} "
                f"password {self.password}; Ctrl-C to stop")
            while True:
                time.sleep(3600)
        if os.environ.get("FUZZ_REGRESSIONS", "1") != "0":
            self.regressions()
        canary = Canary(self.port)
        canary.start()
        pg_sessions0 = self.pg_sessions()
        left = self.seconds - (time.monotonic() - self.started) - 30
        self.phase("pre", self.conns_pre, left * 0.4)
        left = self.seconds - (time.monotonic() - self.started) - 30
        self.phase("post", self.conns_post, left)
        canary.stop_flag.set()
        canary.join(15)
        self.results["canary"] = (f"{canary.queries} queries, slowest {canary.slowest:.2f} s, {canary.failures} failures, "
                                  f"{canary.reconnects} connections")
        log(f"canary: {self.results['canary']}" + (f" (last error: {canary.last_error})" if canary.last_error else ""))
        if canary.failures or canary.slowest > 10:
            self.failures.append(f"canary: {self.results['canary']}; last error: {canary.last_error}")
        s1 = self.pg_sessions()
        if pg_sessions0 is not None and s1 is not None:
            self.results["postgres sessions opened during the phases"] = s1 - pg_sessions0
        self.final_checks()

    def pg_sessions(self):
        ok, out = self.pg.try_admin(f"SELECT sessions FROM pg_stat_database WHERE datname = '{DB}'", timeout=10)
        return int(out) if ok and out.isdigit() else None

    def final_checks(self):
        crashes = self.crashed()
        self.results["crashes"] = len(crashes)
        if self.stalls:
            self.results["worker stats silences"] = f"{len(self.stalls)} (first: {self.stalls[0]})"
            self.notes.append(f"a worker sent no stats for seconds {len(self.stalls)} time(s) (stalled or starved of CPU)")
        self.failures += [f"crash: {c}" for c in crashes]
        # A normal client, answered within 5 s.
        t0 = time.monotonic()
        try:
            c = pgwire.Conn.connect(HOST, self.port, USER, DB, timeout=5)
            c.sock.settimeout(max(0.1, 5 - (time.monotonic() - t0)))
            ok = c.query("select 1") == [["1"]]
            c.close()
        except (OSError, pgwire.PgError) as exc:
            ok = False
            self.failures.append(f"frozen: a normal client got no answer within 5 s ({exc})")
        took = time.monotonic() - t0
        self.results["normal client"] = f"answered in {took:.2f} s" if ok else "NOT answered"
        # SHOW POOLS: nothing active left once the fuzzers are gone (generous wait: 30 s).
        deadline, pools, busy = time.monotonic() + 30, [], None
        while True:
            try:
                pools = [p for p in self.show_pools() if p.get("database") == DB]
                busy = [p for p in pools if any(int(p.get(k) or 0) for k in ("cl_active", "cl_waiting", "sv_active"))]
            except (OSError, pgwire.PgError) as exc:
                busy = [f"SHOW POOLS failed: {exc}"]
            if not busy or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.results["SHOW POOLS"] = "; ".join(
            f"{p.get('user')}: cl_active={p.get('cl_active')} cl_waiting={p.get('cl_waiting')} "
            f"sv_active={p.get('sv_active')} sv_idle={p.get('sv_idle')}" for p in pools if isinstance(p, dict)) or "no pool"
        if busy:
            self.failures.append(f"frozen: SHOW POOLS after 30 s: {busy}")
        cw = self.close_wait()
        self.results["CLOSE-WAIT sockets"] = len(cw)
        if cw:
            self.failures.append(f"frozen: {len(cw)} pgswift socket(s) in CLOSE-WAIT: {cw[:5]}")
        limit = self.fd_baseline + 2 * self.pool_size * self.workers + 16
        deadline = time.monotonic() + 30
        while (fds := self.socket_fds()) > limit and time.monotonic() < deadline:
            time.sleep(0.5)
        self.results["pgswift sockets"] = f"{fds} (at start {self.fd_baseline})"
        if fds > limit:
            self.failures.append(f"frozen: pgswift holds {fds} sockets, {self.fd_baseline} at start")
        self.results["pgswift RSS"] = f"{rss_bytes(self.pids) / 1048576:.1f} MiB (at start {self.rss_start / 1048576:.1f})"
        if not self.pg.alive():
            self.failures.append("PostgreSQL died")
        # A PostgreSQL backend that crashed on what pgswift forwarded (the postmaster then restarts all).
        with open(self.pg.log_path, errors="replace") as fh:
            crashes = [ln.strip() for ln in fh if "terminated by signal" in ln or "Failed process was running" in ln]
        self.results["PostgreSQL backend crashes"] = sum(1 for ln in crashes if "terminated by signal" in ln)
        if crashes:
            self.failures.append("PostgreSQL backend crashed (postgres.log in the output folder): "
                                 + " | ".join(c[:300] for c in crashes[:4]))

    def cleanup(self):
        if self.px is not None:
            log(f"stopping pgswift: {self.px.stop(signal.SIGTERM, grace=10.0, then=signal.SIGTERM)}")
            try:
                shutil.copy(self.px_log, os.path.join(self.out, "pgswift.log"))
            except OSError:
                pass
        if self.pg is not None:
            try:
                shutil.copy(self.pg.log_path, os.path.join(self.out, "postgres.log"))
            except OSError:
                pass
        if self.pg is not None:
            self.pg.stop()
        reap_adopted()
        if getattr(self, "work", None):
            shutil.rmtree(self.work, ignore_errors=True)


def _stop(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main():
    become_subreaper()
    # SIGINT too: a job started in the background by a shell ignores it unless told otherwise.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    f = Fuzz()
    log(f"pgswift fuzz: seed {f.seed} (replay with FUZZ_SEED={f.seed}), budget {f.seconds} s, "
        f"{f.inputs} inputs per phase")
    status = 0
    try:
        f.setup()
        f.run()
    except HarnessError as exc:
        f.failures.append(f"harness: {exc}")
    except KeyboardInterrupt:
        f.failures.append("interrupted")
    finally:
        f.cleanup()
    elapsed = time.monotonic() - f.started
    print(f"\n== pgswift fuzz, seed {f.seed}, {elapsed:.0f} s ==")
    for k, v in f.results.items():
        print(f"{k}: {v}")
    for n in f.notes:
        print(f"note: {n}")
    for x in f.failures:
        print(f"FAILURE: {x}")
    if os.path.exists(os.path.join(f.out, "findings.txt")):
        print(f"findings: {os.path.join(f.out, 'findings.txt')} (replay: pgswift-fuzz replay --phase P --seed {f.seed} "
              f"--index I --socket ...)")
    pre, post = f.results.get("pre-auth", ""), f.results.get("post-auth", "")
    verdict = "FAILED" if f.failures else ("SHORT" if f.notes else "OK")
    print(f"SUMMARY {verdict} seed={f.seed} seconds={elapsed:.0f} "
          f"pre=[{' '.join(x for x in pre.split() if x.split('=')[0] in ('inputs', 'seconds', 'rate'))}] "
          f"post=[{' '.join(x for x in post.split() if x.split('=')[0] in ('inputs', 'seconds', 'rate'))}] "
          f"crashes={f.results.get('crashes', '?')} frozen={'yes' if any(x.startswith('frozen') for x in f.failures) else 'no'}")
    if f.failures:
        status = 1
    elif f.notes:
        status = 3
    return status


if __name__ == "__main__":
    sys.exit(main())
