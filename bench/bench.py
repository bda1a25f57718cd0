#!/usr/bin/env python3
# `make bench`: pgswift against PgBouncer (same pool settings, same process count), interleaved, on a throwaway PostgreSQL.
"""pgswift's benchmark (issue #4).  See bench/README.md for what it measures and how to read it.

    python3 bench/bench.py [--quick] [options]        (make bench / make bench-quick)

Every option has an environment variable (BENCH_DURATION, BENCH_REPEATS...), shown by --help.
Progress goes to stderr; the Markdown report to stdout and to --md (bench/RESULTS.md); every
run, with its exact command, to --json.  Exit status: 0 the benchmark ran (a FAILED scenario
is a result), 1 the harness broke, 2 bad arguments, 130 interrupted.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import random
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import report  # noqa: E402
from cluster import (BENCH_DB, BENCH_USER, HOST, HarnessError, Postgres, clean_env,  # noqa: E402
                     find_pg_bindir, find_tool, pick_port)
from procs import (CLK_TCK, Child, become_subreaper, chown, cpu_model, descendants, log,  # noqa: E402
                   machine_jiffies, raise_open_files, reap_adopted, rss_by_process, tree_cpu, tree_rss)
from targets import PgBouncer, PgSwift, PgSwiftNoStats, PgSwiftRouting, Settings, TargetError  # noqa: E402


class Interrupted(BaseException):
    pass


def _interrupt(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


# ---------------------------------------------------------------------------
# Scenarios where make bench also runs pgswift with query_stats = off (pgswift-nostats:N targets).
QUERY_STATS_SCENARIOS = ("select", "select-extended", "tpcb")
# ... and with routing=read-write-split (pgswift-routing:N targets).
ROUTING_SCENARIOS = ("select",)

# scenarios

class Scenario:
    def __init__(self, name, title, args, clients="clients", writes=False, idle=False, tls=False):
        self.name, self.title, self.args = name, title, args
        self.clients_key, self.writes, self.idle, self.tls = clients, writes, idle, tls

    def clients(self, a):
        return getattr(a, self.clients_key)

    def info(self, a):
        i = {"name": self.name, "title": self.title, "pgbench_args": self.args, "clients": self.clients(a)}
        if self.tls:
            i["client_tls"] = "pgbench with PGSSLMODE=require; poolers with client_tls_sslmode=prefer"
        return i


SCENARIOS = [
    Scenario("select", "select-only, simple protocol", ["-S", "-M", "simple"]),
    Scenario("select-many", "select-only, simple protocol, more clients than server connections",
             ["-S", "-M", "simple"], clients="many_clients"),
    Scenario("select-extended", "select-only, extended protocol (unnamed statements)", ["-S", "-M", "extended"]),
    Scenario("select-prepared", "select-only, named prepared statements in transaction pooling",
             ["-S", "-M", "prepared"]),
    Scenario("tpcb", "pgbench's TPC-B-like default script", ["-M", "simple"], writes=True),
    Scenario("churn", "a new connection (SCRAM login) per transaction, select-only",
             ["-S", "-M", "simple", "-C"]),
    Scenario("idle", "idle logged-in connections held open: pooler memory per connection", [],
             clients="idle_clients", idle=True),
    # Client TLS (the poolers talk plaintext to PostgreSQL in every scenario).
    Scenario("select-tls", "select-only, simple protocol, clients on TLS (sslmode=require)",
             ["-S", "-M", "simple"], tls=True),
    Scenario("churn-tls", "a new TLS connection (handshake + SCRAM login) per transaction, select-only",
             ["-S", "-M", "simple", "-C"], tls=True),
]


# ---------------------------------------------------------------------------
# pgbench output

def parse_pgbench(text):
    out = {}
    for key, pat in {"transactions": r"^number of transactions actually processed: (\d+)",
                     "failed_transactions": r"^number of failed transactions: (\d+)",
                     "latency_ms": r"^latency average = ([\d.]+) ms",
                     "initial_connection_ms": r"^initial connection time = ([\d.]+) ms",
                     "average_connection_ms": r"^average connection time = ([\d.]+) ms"}.items():
        m = re.search(pat, text, re.M)
        if m:
            out[key] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    m = re.search(r"^tps = ([\d.]+) \(([^)]*)\)", text, re.M)
    if m:
        out["tps"], out["tps_basis"] = float(m.group(1)), m.group(2)
    return out


def first_error(text):
    for ln in text.splitlines():
        if re.search(r"error|FATAL|ERROR|aborted|could not|failed", ln):
            return ln.strip()[:300]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def latency_percentiles(prefix):
    """p50/p99/max in ms from pgbench's per-transaction logs (`-l`): the third field of each
    line is the transaction's latency in microseconds ('failed'/'skipped' lines are skipped)."""
    lat = []
    for path in glob.glob(glob.escape(prefix) + ".*"):
        with open(path, errors="replace") as fh:
            for line in fh:
                f = line.split(None, 3)
                if len(f) >= 3 and f[2].isdigit():
                    lat.append(int(f[2]))
        os.unlink(path)
    if not lat:
        return {}
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, max(0, int(-(-q * len(lat) // 1)) - 1))] / 1000.0
    return {"p50_ms": round(pick(0.50), 3), "p99_ms": round(pick(0.99), 3),
            "max_ms": round(lat[-1] / 1000.0, 3), "latency_samples": len(lat)}


# ---------------------------------------------------------------------------
# the harness

class Bench:
    def __init__(self, a):
        self.a = a
        self.runs = []
        self.noise = {}
        self.pg = None
        self.targets = []
        self.workdir = None
        self.started = datetime.datetime.now().astimezone()

    # -- set-up
    def tools(self):
        a = self.a
        self.bindir = find_pg_bindir()
        self.pgbench = find_tool(self.bindir, "pgbench")
        self.versions = {"postgres": version(os.path.join(self.bindir, "postgres")),
                         "pgbench": version(self.pgbench)}
        kinds = {"pgswift" if t.startswith("pgswift") else t.split(":")[0] for t in a.targets}
        if "pgbouncer" in kinds:
            self.pgbouncer = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None)
            if not self.pgbouncer:
                raise HarnessError("pgbouncer not found (scripts/install-deps.sh bench installs it)")
            self.versions["pgbouncer"] = version(self.pgbouncer)
        if "pgswift" in kinds:
            for b in ("pgswift", "pgswift-worker"):
                if not os.access(os.path.join(a.pgswift_bin_dir, b), os.X_OK):
                    raise HarnessError(f"{a.pgswift_bin_dir}/{b} not found: run `make build` (or set PGSWIFT_BIN_DIR)")
            self.versions["pgswift"] = version(os.path.join(a.pgswift_bin_dir, "pgswift")) + git_revision()

    def setup(self):
        a = self.a
        self.run_as = a.run_as if os.geteuid() == 0 else None
        self.workdir = tempfile.mkdtemp(prefix="pgswift-bench-")
        os.chmod(self.workdir, 0o755)
        chown(self.workdir, self.run_as)     # PostgreSQL and the poolers write their files there
        self.rundir = os.path.join(self.workdir, "runs")
        os.makedirs(self.rundir)
        log(f"work directory {self.workdir}")
        need = a.idle_clients + 2048
        self.nofile = raise_open_files(need)
        if self.nofile < need:
            log(f"warning: open-files limit {self.nofile} is below {need}: the idle scenario may fail")
        pg_port, self.port = pick_port(), pick_port()
        while self.port == pg_port:
            self.port = pick_port()
        self.pg = Postgres(self.bindir, self.workdir, pg_port, self.run_as)
        self.pg.init_and_start()
        self.password = "bench-" + secrets.token_hex(12)
        self.secret = self.pg.create_bench(self.password, a.scram_iterations, a.scale, self.pgbench)
        s = Settings(self.port, pg_port, a.pool_size, max(a.max_client_conn, a.idle_clients + 100),
                     self.secret, self.password, self.run_as, self.workdir)
        self.settings = s
        for t in a.targets:
            kind, _, n = t.partition(":")
            n = int(n or 1)
            if kind == "pgbouncer":
                self.targets.append(PgBouncer(s, n, self.pgbouncer, self.versions["pgbouncer"]))
            elif kind == "pgswift-nostats":
                self.targets.append(PgSwiftNoStats(s, n, a.pgswift_bin_dir, self.versions["pgswift"]))
            elif kind == "pgswift-routing":
                self.targets.append(PgSwiftRouting(s, n, a.pgswift_bin_dir, self.versions["pgswift"]))
            else:
                self.targets.append(PgSwift(s, n, a.pgswift_bin_dir, self.versions["pgswift"]))
        if any(sc.tls for sc in a.scenario_list):
            s.client_tls = self.make_certificate()
        self.client_env = clean_env({"PGPASSWORD": self.password, "PGSSLMODE": "disable", "PGGSSENCMODE": "disable",
                                     "PGCONNECT_TIMEOUT": "10"})

    def make_certificate(self):
        """A self-signed certificate and key for the poolers' client TLS (the openssl CLI)."""
        d = os.path.join(self.workdir, "tls")
        os.makedirs(d)
        cert, key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError(f"openssl req failed: {r.stderr.strip()[-500:]}")
        for f in (d, cert, key):
            chown(f, self.run_as)
        os.chmod(key, 0o600)
        return cert, key

    def env_for(self, sc):
        if not sc.tls:
            return self.client_env
        e = dict(self.client_env)
        e["PGSSLMODE"] = "require"
        return e

    # -- noise
    def background(self, seconds=3.0):
        """Share of the machine's CPU that processes outside the benchmark used while nothing was
        measured (PostgreSQL idle, no target running)."""
        m0, pg0, me0 = machine_jiffies(), tree_cpu([self.pg.pid]), own_cpu()
        time.sleep(seconds)
        m1, pg1, me1 = machine_jiffies(), tree_cpu([self.pg.pid]), own_cpu()
        total = (m1["total"] - m0["total"]) / CLK_TCK
        ours = (pg1[0] + pg1[1] - pg0[0] - pg0[1]) + (me1 - me0)
        other = max(0.0, (m1["proc"] - m0["proc"]) / CLK_TCK - ours)
        return {"other_cpu_pct_of_machine": round(100.0 * other / total, 1) if total else None,
                "seconds": seconds, "loadavg_1min": round(os.getloadavg()[0], 2)}

    # -- the loop
    def run(self):
        a = self.a
        self.noise["before"] = self.background()
        log(f"noise before: other processes used {self.noise['before']['other_cpu_pct_of_machine']}% of the "
            f"machine (load {self.noise['before']['loadavg_1min']})")
        # The query_stats = off targets only where the issue measures the statistics' cost.
        plan = [(sc, rep, t) for sc in self.scenarios for rep in range(a.idle_repeats if sc.idle else a.repeats)
                for t in self.targets if t.kind == "pgswift" or t.kind == "pgbouncer"
                or (t.kind == "pgswift-nostats" and sc.name in QUERY_STATS_SCENARIOS)
                or (t.kind == "pgswift-routing" and sc.name in ROUTING_SCENARIOS)]
        for k, (sc, rep, t) in enumerate(plan, 1):
            log(f"[{k}/{len(plan)}] {sc.name} on {t.name}, repeat {rep + 1}")
            rec = self.run_idle(sc, t, rep, k) if sc.idle else self.run_pgbench(sc, t, rep, k)
            self.runs.append(rec)
            if rec["status"] == "OK":
                if sc.idle:
                    log(f"    {rec['connected']} idle connections, {rec.get('bytes_per_idle_conn')} B each, "
                        f"logins {rec.get('login_s')} s")
                else:
                    log(f"    tps {rec['tps']:.0f}, latency {rec.get('latency_ms')} ms, p99 {rec.get('p99_ms')} ms, "
                        f"pooler CPU {rec.get('pooler_cpu_s')} s")
            else:
                log(f"    FAILED: {rec['error']}")
            if not self.pg.alive():
                raise HarnessError("PostgreSQL died during the run")
        self.noise["after"] = self.background()
        log(f"noise after: {self.noise['after']['other_cpu_pct_of_machine']}%")

    def new_record(self, sc, t, rep, k):
        return {"run": k, "scenario": sc.name, "target": t.name, "repeat": rep + 1, "clients": sc.clients(self.a),
                "status": "FAILED", "error": None, "notes": []}

    def pgbench_argv(self, sc, duration, log_prefix=None):
        a = self.a
        argv = [self.pgbench, "-h", HOST, "-p", str(self.port), "-U", BENCH_USER, "-n", "-j", str(a.threads),
                "-T", str(duration), "-c", str(sc.clients(a))] + sc.args
        if log_prefix:
            argv += ["-l", f"--log-prefix={log_prefix}", f"--sampling-rate={a.sampling_rate}"]
        return argv + [BENCH_DB]

    def run_pgbench(self, sc, t, rep, k):
        a = self.a
        rec = self.new_record(sc, t, rep, k)
        try:
            t.client_tls = sc.tls
            t.start(a.start_timeout)
        except TargetError as exc:
            rec["error"] = f"target did not start: {exc}"
            return rec
        try:
            rec["processes"] = len(t.process_ids())
            if a.warmup > 0:
                rec["warmup"] = self.warmup(sc, k)
            self.maintenance(sc)
            self.measure(sc, t, rec)
            self.after_run(t, rec)
        finally:
            rec["target_stop"] = t.stop()
        return rec

    def warmup(self, sc, k):
        """Unmeasured: fills the pooler's server pool and the caches."""
        path = os.path.join(self.rundir, f"{k:03d}-warmup.log")
        p = Child("pgbench-warmup", self.pgbench_argv(sc, self.a.warmup), path, env=self.env_for(sc), cwd=self.rundir)
        try:
            p.popen.wait(self.a.warmup + 60)
        except BaseException:
            p.stop(grace=3)
            raise
        p.stop()
        with open(path, errors="replace") as fh:
            text = fh.read()
        return {"exit": p.popen.returncode, "transactions": parse_pgbench(text).get("transactions"),
                "error": first_error(text) if p.popen.returncode else None}

    def maintenance(self, sc):
        # Through the admin socket, never the target: the measured window holds only pgbench's traffic.
        if sc.writes:
            self.pg.admin(["VACUUM pgbench_branches", "VACUUM pgbench_tellers", "TRUNCATE pgbench_history"], db=BENCH_DB)
        self.pg.admin("CHECKPOINT")

    def measure(self, sc, t, rec):
        a = self.a
        roots = t.roots()
        stem = os.path.join(self.rundir, f"{rec['run']:03d}-{sc.name}-{t.name.replace(':', '-')}")
        argv = self.pgbench_argv(sc, a.duration, stem + "-tx")
        rec["command"] = " ".join(shlex.quote(x) for x in argv)
        peak = tree_rss(roots)
        c0, pg0, m0, me0 = tree_cpu(roots), tree_cpu([self.pg.pid]), machine_jiffies(), own_cpu()
        t0 = time.monotonic()
        p = Child("pgbench", argv, stem + ".log", env=self.env_for(sc), cwd=self.rundir)
        limit = a.duration + 30 + a.duration / 2
        ru, conns, timed_out, next_sample = None, None, False, t0
        try:
            while True:
                ru = p.poll_rusage()
                if ru is not None:
                    break
                now = time.monotonic()
                if now >= next_sample:
                    peak = max(peak, tree_rss(roots))
                    next_sample = now + a.sample_interval
                if conns is None and now - t0 >= a.duration / 2:
                    conns = self.pg.bench_backends()
                if now - t0 > limit:
                    timed_out = True
                    p.stop(grace=3)
                    break
                time.sleep(0.02)
        except BaseException:
            p.stop(grace=3)
            raise
        t1 = time.monotonic()
        c1, pg1, m1, me1 = tree_cpu(roots), tree_cpu([self.pg.pid]), machine_jiffies(), own_cpu()
        peak = max(peak, tree_rss(roots))
        rec["pooler_rss_mib_by_process"] = rss_by_process(roots)
        if p in Child.running:
            p.stop()
        with open(stem + ".log", errors="replace") as fh:
            text = fh.read()
        rec.update(parse_pgbench(text))
        rec.update(latency_percentiles(stem + "-tx"))
        wall = t1 - t0
        d = {k: m1[k] - m0[k] for k in m0}
        pooler = (c1[0] - c0[0]) + (c1[1] - c0[1])
        pg_cpu = (pg1[0] - pg0[0]) + (pg1[1] - pg0[1])
        pgbench_cpu = (ru.ru_utime + ru.ru_stime) if ru else 0.0
        mine = me1 - me0     # the harness and its children (pgbench included, psql for the mid-run count)
        rec.update({
            "pgbench_exit": p.popen.returncode, "wall_s": round(wall, 2),
            "pooler_cpu_s": round(pooler, 2), "pooler_cpu_user_s": round(c1[0] - c0[0], 2),
            "pooler_cpu_sys_s": round(c1[1] - c0[1], 2),
            "pooler_core_pct": round(100 * pooler / wall, 1) if wall else None,
            "pooler_peak_rss_mib": round(peak / 1048576, 1), "pooler_processes": c1[2],
            "postgres_cpu_s": round(pg_cpu, 2), "pgbench_cpu_s": round(pgbench_cpu, 2),
            "harness_cpu_s": round(mine - pgbench_cpu, 2),
            "other_cpu_s": round(max(0.0, d["proc"] / CLK_TCK - pooler - pg_cpu - mine), 2),
            "machine_busy_pct": round(100 * (d["total"] - d["idle"]) / d["total"], 1) if d["total"] else None,
            "other_cpu_pct_of_machine": round(100 * max(0.0, d["proc"] / CLK_TCK - pooler - pg_cpu - mine)
                                              / (d["total"] / CLK_TCK), 1) if d["total"] else None,
            "machine_steal_pct": round(100 * d["steal"] / d["total"], 1) if d["total"] else None,
            "machine_irq_cpu_s": round(d["irq"] / CLK_TCK, 2),
            "server_connections_mid_run": conns,
            "pgbench_output": trim_lines(text),
        })
        tx = rec.get("transactions")
        if tx:
            rec["pooler_cpu_s_per_1000_tx"] = round(1000 * pooler / tx, 4)
        if timed_out:
            rec["error"] = f"pgbench did not finish within {limit:g} s and was stopped"
        elif p.popen.returncode != 0 or re.search(r"aborted", text):
            rec["error"] = f"pgbench exit {p.popen.returncode}: {first_error(text)}"
        elif not tx or "tps" not in rec:
            rec["error"] = "no transaction completed"
        else:
            rec["status"] = "OK"
            if rec.get("failed_transactions"):
                rec["notes"].append(f"{rec['failed_transactions']} failed transactions")
            ic = rec.get("initial_connection_ms", 0) / 1000
            if ic > 0.2 * a.duration:
                rec["notes"].append(f"connecting the clients took {ic:.1f} s of the {a.duration} s run")

    def after_run(self, t, rec):
        dead = t.dead()
        changed = t.changes()
        problems = t.new_log_problems()
        if problems:
            rec["pooler_log_problems"] = problems[:20]
            rec["notes"].append(f"{len(problems)} WARNING/ERROR line(s) in the pooler's log, first: {problems[0][:200]}")
        if dead or changed:
            rec["status"] = "FAILED"
            rec["error"] = (rec["error"] + "; " if rec["error"] else "") + (dead or changed)

    # -- idle connections
    def run_idle(self, sc, t, rep, k):
        a = self.a
        rec = self.new_record(sc, t, rep, k)
        try:
            t.start(a.start_timeout)
        except TargetError as exc:
            rec["error"] = f"target did not start: {exc}"
            return rec
        p = None
        try:
            roots = t.roots()
            time.sleep(1.0)
            before = tree_rss(roots)
            c0 = tree_cpu(roots)
            argv = [sys.executable, os.path.join(HERE, "idleclients.py"), "--host", HOST, "--port", str(self.port),
                    "--user", BENCH_USER, "--db", BENCH_DB, "--count", str(a.idle_clients),
                    "--concurrency", str(a.idle_concurrency)]
            rec["command"] = " ".join(shlex.quote(x) for x in argv)
            stem = os.path.join(self.rundir, f"{k:03d}-idle-{t.name.replace(':', '-')}")
            p = Child("idleclients", argv, stem + ".log", env=self.client_env, stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE)
            peak = before
            t0 = time.monotonic()
            done = None
            deadline = t0 + a.idle_timeout
            while done is None:
                ev = read_event(p, deadline, on_wait=lambda: None)
                peak = max(peak, tree_rss(roots))
                if ev is None:
                    raise TargetError(f"the idle client stopped answering or exceeded {a.idle_timeout} s")
                if ev["event"] == "connected":
                    done = ev
            login_s = time.monotonic() - t0
            c1 = tree_cpu(roots)
            time.sleep(a.idle_settle)         # let lazily freed memory settle before reading RSS
            after = tree_rss(roots)
            peak = max(peak, after)
            pids = descendants(roots)[0]
            rec["pooler_rss_mib_by_process"] = rss_by_process(roots)
            rec.update({"connected": done["connected"], "login_failures": done["failed"],
                        "first_login_error": done["first_error"], "login_s": round(login_s, 2),
                        "logins_per_s": round(done["connected"] / login_s, 1) if login_s else None,
                        "pooler_rss_before_mib": round(before / 1048576, 1),
                        "pooler_rss_after_mib": round(after / 1048576, 1),
                        "pooler_peak_rss_mib": round(peak / 1048576, 1),
                        "pooler_processes": len(pids),
                        "pooler_login_cpu_s": round(c1[0] + c1[1] - c0[0] - c0[1], 2)})
            if done["connected"]:
                rec["bytes_per_idle_conn"] = round((after - before) / done["connected"])
                rec["pooler_cpu_s_per_1000_logins"] = round(1000 * rec["pooler_login_cpu_s"] / done["connected"], 4)
            conns = self.pg.bench_backends()
            rec["server_connections_while_idle"] = conns
            p.popen.stdin.write(f"check {a.idle_check}\n".encode())
            p.popen.stdin.flush()
            ev = read_event(p, time.monotonic() + 120)
            rec["check"] = ev
            p.popen.stdin.write(b"close\n")
            p.popen.stdin.flush()
            read_event(p, time.monotonic() + 60)
            if done["failed"]:
                rec["error"] = f"{done['failed']} of {a.idle_clients} logins failed, first: {done['first_error']}"
            elif not ev or ev.get("failed") or not ev.get("ok"):
                rec["error"] = f"held connections did not answer SELECT 1: {ev}"
            else:
                rec["status"] = "OK"
            self.after_run(t, rec)
        except TargetError as exc:
            rec["error"] = str(exc)
        finally:
            if p is not None and p in Child.running:
                p.stop(grace=5)
            rec["target_stop"] = t.stop()
        return rec

    # -- output
    def machine(self):
        return {"cpu": cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
                "os": os_name(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                "open_files_limit": getattr(self, "nofile", None)}

    def document(self, incomplete=None):
        a = self.a
        return {
            "tool": "pgswift bench/bench.py", "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "elapsed_s": round(time.time() - self.started.timestamp(), 1),
            "incomplete": incomplete, "command": self.command, "machine": self.machine(),
            "versions": getattr(self, "versions", {}),
            "settings": {"duration_s": a.duration, "repeats": a.repeats, "warmup_s": a.warmup,
                         "threads": a.threads, "clients": a.clients, "many_clients": a.many_clients,
                         "idle_clients": a.idle_clients, "idle_repeats": a.idle_repeats,
                         "pool_size_per_process": a.pool_size,
                         "max_client_conn": getattr(getattr(self, "settings", None), "max_clients", None),
                         "scram_iterations": a.scram_iterations, "scale": a.scale,
                         "sampling_rate": a.sampling_rate, "quick": a.quick,
                         "postgres": self.pg.settings() if self.pg else None},
            "noise": self.noise,
            "targets": [t.info() for t in self.targets],
            "scenarios": [sc.info(a) for sc in self.scenarios],
            "runs": self.runs,
        }

    def cleanup(self):
        for t in self.targets:
            if t.children:
                t.stop()
        Child.stop_all()
        if self.workdir and not self.a.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.workdir:
            log(f"kept {self.workdir}")


# ---------------------------------------------------------------------------
# small helpers

def own_cpu():
    """CPU seconds of this process and of its children already waited for."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def read_event(p, deadline, on_wait=None):
    """The next JSON line the idle client prints, or None (exited or too slow)."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.popen.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=0.25):
                line = p.popen.stdout.readline()
                if not line:
                    return None
                try:
                    return json.loads(line)
                except ValueError:
                    continue
            if on_wait:
                on_wait()
    finally:
        sel.close()
    return None


def trim_lines(text, head=30, tail=6):
    lines = text.splitlines()
    return lines if len(lines) <= head + tail else lines[:head] + ["..."] + lines[-tail:]


def version(binary):
    try:
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def git_revision():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", "Sources"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f" (git {rev}{', Sources/ modified' if dirty else ''})" if rev else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def os_name():
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


# ---------------------------------------------------------------------------
# command line

def env(name, default, conv=str):
    v = os.environ.get(name)
    return conv(v) if v not in (None, "") else default


def parse_args(argv):
    quick = env("BENCH_QUICK", "0") not in ("0", "", "no", "false") or "--quick" in argv
    Q = lambda full, short: short if quick else full
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults shown are for the full run; --quick (BENCH_QUICK=1) shortens them.")
    add = p.add_argument
    add("--quick", action="store_true", default=quick, help="smoke run: a few seconds per scenario [BENCH_QUICK]")
    add("--duration", type=int, default=env("BENCH_DURATION", Q(10, 3), int), help="seconds per measured run [BENCH_DURATION]")
    add("--repeats", type=int, default=env("BENCH_REPEATS", Q(3, 1), int), help="runs per scenario and target [BENCH_REPEATS]")
    add("--warmup", type=int, default=env("BENCH_WARMUP", Q(2, 1), int), help="unmeasured seconds before each run [BENCH_WARMUP]")
    add("--scenarios", default=env("BENCH_SCENARIOS", ",".join(s.name for s in SCENARIOS)),
        help="comma list [BENCH_SCENARIOS]")
    add("--targets", default=env("BENCH_TARGETS", "pgbouncer:1,pgswift:1,pgswift-nostats:1,pgswift-routing:1,pgbouncer:2,pgswift:2,pgswift-nostats:2"),
        help="comma list of pgbouncer:N / pgswift:N / pgswift-nostats:N (query_stats = off; only in the "
             "select, select-extended and tpcb scenarios) / pgswift-routing:N (routing=read-write-split; select "
             "only), run in this order [BENCH_TARGETS]")
    add("--clients", type=int, default=env("BENCH_CLIENTS", 50, int), help="[BENCH_CLIENTS]")
    add("--many-clients", type=int, default=env("BENCH_MANY_CLIENTS", 400, int), help="select-many [BENCH_MANY_CLIENTS]")
    add("--idle-clients", type=int, default=env("BENCH_IDLE_CLIENTS", Q(10000, 1000), int), help="[BENCH_IDLE_CLIENTS]")
    add("--idle-repeats", type=int, default=env("BENCH_IDLE_REPEATS", 1, int), help="[BENCH_IDLE_REPEATS]")
    add("--idle-concurrency", type=int, default=env("BENCH_IDLE_CONCURRENCY", 64, int), help="logins in flight")
    add("--idle-timeout", type=int, default=env("BENCH_IDLE_TIMEOUT", 300, int), help="seconds to log them all in")
    add("--idle-settle", type=float, default=2.0, help="seconds between the last login and the RSS reading")
    add("--idle-check", type=int, default=100, help="held connections that must answer SELECT 1 afterwards")
    add("--threads", type=int, default=env("BENCH_THREADS", 2, int), help="pgbench -j [BENCH_THREADS]")
    add("--pool-size", type=int, default=env("BENCH_POOL_SIZE", 20, int), help="default_pool_size per process [BENCH_POOL_SIZE]")
    add("--max-client-conn", type=int, default=1000, help="raised to idle clients + 100 when lower")
    add("--scram-iterations", type=int, default=env("BENCH_SCRAM_ITERATIONS", 16, int),
        help="iterations of the role's SCRAM secret; low, so that churn measures the pooler, not the client's PBKDF2 [BENCH_SCRAM_ITERATIONS]")
    add("--scale", type=int, default=env("BENCH_SCALE", Q(10, 2), int), help="pgbench -i -s [BENCH_SCALE]")
    add("--sampling-rate", type=float, default=env("BENCH_SAMPLING_RATE", 0.2, float),
        help="share of transactions pgbench logs for p99 [BENCH_SAMPLING_RATE]")
    add("--sample-interval", type=float, default=0.25, help="seconds between RSS samples")
    add("--start-timeout", type=float, default=30.0)
    add("--run-as", default=env("BENCH_RUN_AS", "postgres"), help="user for PostgreSQL and the poolers when root [BENCH_RUN_AS]")
    add("--pgswift-bin-dir", default=env("PGSWIFT_BIN_DIR", os.path.join(ROOT, ".build", "release")),
        help="where pgswift and pgswift-worker are [PGSWIFT_BIN_DIR]")
    add("--md", default=env("BENCH_MD", os.path.join(HERE, "out", "quick.md") if quick else os.path.join(HERE, "RESULTS.md")),
        help="Markdown report file [BENCH_MD]")
    add("--json", default=env("BENCH_JSON", os.path.join(HERE, "out", "quick.json") if quick else os.path.join(HERE, "RESULTS.json")),
        help="JSON file with every run [BENCH_JSON]")
    add("--keep-workdir", action="store_true", default=env("BENCH_KEEP_WORKDIR", "0") not in ("0", ""))
    a = p.parse_args(argv)
    a.targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in a.targets:
        if not re.fullmatch(r"(pgbouncer|pgswift|pgswift-nostats|pgswift-routing)(:\d+)?", t):
            p.error(f"unknown target {t!r} (pgbouncer:N, pgswift:N, pgswift-nostats:N or pgswift-routing:N)")
    names = {s.name: s for s in SCENARIOS}
    wanted = [x.strip() for x in a.scenarios.split(",") if x.strip()]
    for w in wanted:
        if w not in names:
            p.error(f"unknown scenario {w!r}; known: {', '.join(names)}")
    a.scenario_list = [s for s in SCENARIOS if s.name in wanted]
    return a


def command_line(argv):
    shown = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
             if (k.startswith("BENCH_") or k == "PGSWIFT_BIN_DIR") and k not in ("BENCH_MAKE_TARGET", "BENCH_QUICK")]
    if os.environ.get("BENCH_QUICK") and not os.environ.get("BENCH_MAKE_TARGET"):
        shown.insert(0, f"BENCH_QUICK={shlex.quote(os.environ['BENCH_QUICK'])}")
    target = os.environ.get("BENCH_MAKE_TARGET")
    py = " ".join(shlex.quote(x) for x in ["python3", os.path.relpath(os.path.abspath(__file__), os.getcwd())] + argv)
    return " ".join(shown + ([f"make {target}"] if target else [py])), py


def estimate(a):
    pg = sum(1 for s in a.scenario_list if not s.idle) * a.repeats * len(a.targets) * (a.duration + a.warmup + 1)
    idle = sum(1 for s in a.scenario_list if s.idle) * a.idle_repeats * len(a.targets) * (a.idle_clients / 1000 + 5)
    return pg + idle + 30


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    b = Bench(a)
    b.scenarios = a.scenario_list
    b.command, b.python_command = command_line(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    become_subreaper()
    status, incomplete = 0, None
    log(f"plan: {len(b.scenarios)} scenarios x {len(a.targets)} targets, {a.repeats} repeat(s) of {a.duration} s; "
        f"about {estimate(a) / 60:.0f} min")
    try:
        b.tools()
        b.setup()
        b.run()
    except Interrupted as exc:
        status, incomplete = 130, f"interrupted ({exc})"
        log(incomplete)
    except HarnessError as exc:
        status, incomplete = 1, f"harness error: {exc}"
        log(incomplete)
    except Exception as exc:   # a bug in the harness: still write what we have
        import traceback
        traceback.print_exc()
        status, incomplete = 1, f"harness bug: {type(exc).__name__}: {exc}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        b.cleanup()
        reap_adopted()
    doc = b.document(incomplete)
    doc["summary"] = report.summarize(doc)
    md = report.markdown(doc)
    sys.stdout.write(md)
    for path, text in ((a.md, md), (a.json, json.dumps(doc, indent=1) + "\n")):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    log(f"wrote {a.md} and {a.json} ({doc['elapsed_s'] / 60:.1f} min)")
    return status


if __name__ == "__main__":
    sys.exit(main())
