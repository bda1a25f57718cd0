#!/usr/bin/env python3
# `make microbench`: instructions per transaction on pgswift's forward path, against a fake server (no PostgreSQL).
"""Micro-benchmark of the forward path: client -> pooler -> bench/fakeserver.py and back.

    python3 bench/microbench.py [--transactions N] [--clients C] [--modes simple,extended[,prepared]]
                                [--targets pgswift,pgbouncer] [--tool auto|perf|callgrind]

For each target (pgswift with workers=1, and PgBouncer for scale when installed) and protocol
mode it reports:

- instructions per transaction of the pooler's worker process: with `perf stat -e instructions`
  attached to the worker during the measured transactions when the CPU exposes the counter
  (user + kernel), otherwise with `valgrind --tool=callgrind` (user space only: syscalls
  themselves are not counted).  Callgrind cannot start counting at a given moment from outside
  reliably, so it runs twice, with N and 2N transactions, and reports the difference / N: login,
  start-up and shutdown cancel out.
- a native pass without any tool: the worker's CPU (user+sys from /proc) per transaction and the
  round-trip time the driver saw (the Python driver adds its own overhead to the latter).
- callgrind's top functions of the pooler (self cost, longer run) in bench/out/.

MICRO_TOP_FUNCTIONS=N lists N functions instead of 15 (to compare two builds function by function).
MB_DUMP_INSTR=yes in the environment makes callgrind record costs per instruction address (with
--keep-workdir, the outputs then tell which call site, e.g. of swift_beginAccess, runs per transaction).

A transaction is one simple Query ("SELECT 1") or one Parse/Bind/Describe/Execute/Sync (or, in the
`prepared` mode, not run by default, Bind/Execute/Sync of a statement each connection prepared once
under a name, as pgbench -M prepared, JDBC and asyncpg do), answered
by the fake server with RowDescription, one DataRow, CommandComplete, ReadyForQuery.  With
--clients C the driver keeps C transactions in flight (one per connection).  Transaction pooling,
trust authentication, one server connection.  It is a measurement tool, not a test.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import pgwire  # noqa: E402
from cluster import clean_env  # noqa: E402
from procs import Child, StartError, chown, cpu_model, descendants, log, proc_stat, CLK_TCK  # noqa: E402

HOST = "127.0.0.1"
USER, DB = "bench", "fake"


class MicroError(Exception):
    pass


# ---------------------------------------------------------------------------
# the driver: N transactions through the pooler

def tx_bytes(mode, sql="SELECT 1"):
    if mode == "simple":
        return pgwire.query_message(sql)
    m = pgwire.message
    if mode == "prepared":
        # Bind/Execute/Sync of the named statement each connection prepared once (`prepare_bytes`).
        return m(b"B", b"\0" + b"s1\0" + b"\0\0" + b"\0\0" + b"\0\0") + m(b"E", b"\0" + b"\0\0\0\0") + m(b"S")
    return (m(b"P", b"\0" + pgwire.cstr(sql) + b"\0\0")
            + m(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\0")
            + m(b"D", b"P\0") + m(b"E", b"\0" + b"\0\0\0\0") + m(b"S"))


def sql_text():
    return "SELECT 1"


class Driver:
    def __init__(self, port, clients, mode):
        self.mode = mode
        # MICRO_QUERY="... {n} ..." sends a different text each transaction (n counts up; 50,000
        # texts, more than any pattern cache), e.g. to measure query_stats' normalization.
        template = os.environ.get("MICRO_QUERY")
        self.payloads = [tx_bytes(mode, template.format(n=n)) for n in range(50_000)] if template else [tx_bytes(mode)]
        self.payload = self.payloads[0]
        self.sent = 0
        self.conns = [pgwire.Conn.connect(HOST, port, USER, DB, None, timeout=120) for _ in range(clients)]
        if mode == "prepared":
            # pgbench -M prepared's shape: Parse once per connection, then only Bind/Execute/Sync
            # (transaction pooling's prepared-statement tracking prepares it on each server).
            for c in self.conns:
                c.sock.sendall(pgwire.message(b"P", b"s1\0" + pgwire.cstr(sql_text()) + b"\0\0") + pgwire.message(b"S"))
                while c.read_message()[0] != b"Z":
                    pass

    def run(self, n):
        """n transactions, len(conns) in flight at a time; returns the wall seconds."""
        conns, payload = self.conns, self.payload
        t0 = time.perf_counter()
        done = 0
        while done < n:
            batch = conns[:min(len(conns), n - done)]
            for c in batch:
                if len(self.payloads) > 1:
                    payload = self.payloads[self.sent % len(self.payloads)]
                    self.sent += 1
                c.sock.sendall(payload)
            for c in batch:
                while True:
                    kind, body = c.read_message()
                    if kind == b"Z":
                        break
                    if kind == b"E":
                        raise MicroError(f"error through the pooler: {pgwire.error_text(pgwire.error_fields(body))}")
            done += len(batch)
        return time.perf_counter() - t0

    def close(self):
        for c in self.conns:
            c.close()


# ---------------------------------------------------------------------------
# poolers

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Pooler:
    """One pooler instance in front of the fake server, optionally wrapped by a tool."""

    def __init__(self, kind, workdir, fake_port, run_as, bin_dir, pgbouncer):
        self.kind, self.workdir, self.fake_port, self.run_as = kind, workdir, fake_port, run_as
        self.bin_dir, self.pgbouncer = bin_dir, pgbouncer
        self.child = None

    def config(self, port, worker_binary=None):
        ini = f"""\
;; generated by bench/microbench.py
[databases]
{DB} = host={HOST} port={self.fake_port} dbname={DB}

[pgbouncer]
listen_addr = {HOST}
listen_port = {port}
unix_socket_dir =
pool_mode = transaction
default_pool_size = 20
max_client_conn = 200
auth_type = trust
auth_file = userlist.txt
log_connections = 0
log_disconnections = 0
server_check_delay = 3600
"""
        if self.kind == "pgswift":
            ini += f"\n[pgswift]\nworkers = 1\nworker_binary = {worker_binary or os.path.join(self.bin_dir, 'pgswift-worker')}\n"
            # More [pgswift] lines, e.g. MICRO_PGSWIFT_EXTRA="query_stats = off" for an A/B run.
            ini += os.environ.get("MICRO_PGSWIFT_EXTRA", "").replace(";", "\n") + "\n"
        else:
            ini += "client_tls_sslmode = disable\nserver_tls_sslmode = disable\n"
        return ini

    def start(self, tag, callgrind_out=None):
        d = os.path.join(self.workdir, f"{self.kind}-{tag}")
        os.makedirs(d, exist_ok=True)
        chown(d, self.run_as)
        with open(os.path.join(d, "userlist.txt"), "w") as fh:
            fh.write(f'"{USER}" ""\n')
        vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind_out}", "--dump-instr=" + os.environ.get("MB_DUMP_INSTR", "no"),
              "--collect-jumps=no", "--trace-children=no"] if callgrind_out else []
        worker = None
        if self.kind == "pgswift" and vg:
            # The supervisor spawns worker_binary: a wrapper puts only the worker under callgrind.
            worker = os.path.join(d, "worker-under-callgrind.sh")
            with open(worker, "w") as fh:
                fh.write("#!/bin/sh\nexec " + " ".join(shlex.quote(x) for x in vg)
                         + " " + shlex.quote(os.path.join(self.bin_dir, "pgswift-worker")) + ' "$@"\n')
            os.chmod(worker, 0o755)
        self.port = free_port()
        ini = os.path.join(d, "config.ini")
        with open(ini, "w") as fh:
            fh.write(self.config(self.port, worker))
        for p in (ini, os.path.join(d, "userlist.txt")):
            chown(p, self.run_as)
        if self.kind == "pgswift":
            argv = [os.path.join(self.bin_dir, "pgswift"), ini]
        else:
            argv = vg + [self.pgbouncer, ini]
        self.log_path = os.path.join(d, "pooler.log")
        self.child = Child(f"{self.kind}-{tag}", argv, self.log_path, user=self.run_as,
                           env=clean_env({"HOME": d}), cwd=d)
        deadline = time.monotonic() + (120 if vg else 30)
        last = None
        while time.monotonic() < deadline:
            if not self.child.alive():
                raise MicroError(f"{self.kind} exited while starting: {tail(self.log_path)}")
            try:
                c = pgwire.Conn.connect(HOST, self.port, USER, DB, None, timeout=60)
                rows = c.query("SELECT 1")
                c.close()
                if rows == [["1"]]:
                    return
                last = f"unexpected answer {rows}"
            except (OSError, pgwire.PgError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
        raise MicroError(f"{self.kind} did not answer: {last}; {tail(self.log_path)}")

    def worker_pid(self):
        """The process that forwards: pgswift's worker (under valgrind: the same PID), or PgBouncer."""
        if self.kind != "pgswift":
            return self.child.pid
        pids, _ = descendants([self.child.pid])
        workers = [p for p in pids if p != self.child.pid]
        if len(workers) != 1:
            raise MicroError(f"expected one pgswift worker, found {workers}")
        return workers[0]

    def stop(self):
        if self.child:
            how = self.child.stop(signal.SIGTERM, grace=60.0,
                                  then=signal.SIGTERM if self.kind == "pgswift" else None)
            self.child = None
            return how
        return None


def tail(path, n=6):
    try:
        with open(path, errors="replace") as fh:
            return " | ".join(ln.strip() for ln in fh.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# tools

def perf_usable():
    if not shutil.which("perf"):
        return False
    r = subprocess.run(["perf", "stat", "-x,", "-e", "instructions", "true"], capture_output=True, text=True)
    return r.returncode == 0 and "<not supported>" not in r.stderr and "<not counted>" not in r.stderr


def callgrind_total(path):
    """Total Ir of a callgrind output file ('summary:' or 'totals:' line)."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise MicroError(f"no totals in {path}")


def function_costs(path):
    """{function: self Ir} from callgrind_annotate (empty when it is not installed)."""
    if not shutil.which("callgrind_annotate"):
        return {}
    r = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", path],
                       capture_output=True, text=True)
    costs = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)", line)
        if m and "PROGRAM TOTALS" not in line and "=>" not in line and ":" in m.group(2):
            name = m.group(2).strip()
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def marginal_functions(small, large, n_tx, limit=int(os.environ.get("MICRO_TOP_FUNCTIONS", 15))):
    """Per-function cost of the extra transactions of the longer run: start-up, login and
    shutdown cancel out, what is left is the forward path."""
    a, b = function_costs(small), function_costs(large)
    entries = sorted(set(a) | set(b))
    grouped = {}
    for raw, (sym, obj) in zip(entries, readable(entries)):
        g = grouped.setdefault(sym, [0, obj])
        g[0] += b.get(raw, 0) - a.get(raw, 0)
        g[1] = g[1] or obj
    total = sum(v for v, _ in grouped.values() if v > 0) or 1
    rows = sorted(((v, sym, obj) for sym, (v, obj) in grouped.items() if v > 0), reverse=True)[:limit]
    return [{"ir_per_tx": round(v / n_tx, 1), "pct": round(100.0 * v / total, 1),
             "function": (f"{sym} ({obj})" if obj else sym)[:160]} for v, sym, obj in rows]


def readable(entries):
    """'file:symbol [object]' -> (symbol, object file name or None), Swift symbols demangled
    when swift-demangle is on PATH."""
    short = []
    for e in entries:
        m = re.match(r"(?:(.*?):)?(\S.*?)(?:\s+\[(.*)\])?$", e)
        sym, obj = (m.group(2), m.group(3)) if m else (e, None)
        short.append((sym, os.path.basename(obj) if obj else None))
    tool = shutil.which("swift-demangle")
    if tool:
        try:
            r = subprocess.run([tool, "--simplified", "--compact"], input="\n".join(s for s, _ in short) + "\n",
                               capture_output=True, text=True, timeout=30)
            lines = r.stdout.splitlines()
            if len(lines) == len(short):
                short = [(d, o) for d, (_, o) in zip(lines, short)]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return short


# ---------------------------------------------------------------------------
# measurements

def measure_native(pooler, a, mode):
    pooler.start(f"native-{mode}")
    try:
        pid = pooler.worker_pid()
        d = Driver(pooler.port, a.clients, mode)
        d.run(a.warmup)
        st0 = proc_stat(pid)
        wall = d.run(a.transactions)
        st1 = proc_stat(pid)
        d.close()
        cpu = ((st1[3] + st1[4]) - (st0[3] + st0[4])) / CLK_TCK
        res = {"worker_cpu_us_per_tx": round(1e6 * cpu / a.transactions, 2),
               "round_trip_us": round(1e6 * wall / a.transactions * a.clients, 1),
               "tx_per_s": round(a.transactions / wall)}
        return res
    finally:
        pooler.stop()


def measure_syscalls(pooler, a, mode):
    """System calls per transaction, counted by `strace -c` attached to the worker during the
    measured transactions (the kernel work behind them is most of a pooler's CPU)."""
    pooler.start(f"strace-{mode}")
    try:
        pid = pooler.worker_pid()
        d = Driver(pooler.port, a.clients, mode)
        d.run(a.warmup)
        out = os.path.join(pooler.workdir, f"strace-{pooler.kind}-{mode}.txt")
        st = subprocess.Popen(["strace", "-c", "-o", out, "-p", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)     # attached (strace prints nothing we could wait for)
        n = a.syscall_transactions
        d.run(n)
        st.send_signal(signal.SIGINT)
        st.wait(30)
        d.close()
        calls = {}
        with open(out) as fh:
            for line in fh:
                f = line.split()
                if len(f) >= 5 and f[-1] != "total" and f[0][0].isdigit() and f[3].isdigit():
                    calls[f[-1]] = int(f[3])
        total = sum(calls.values())
        if not total:
            raise MicroError(f"strace counted nothing: {open(out).read()[-300:]}")
        top = [kv for kv in sorted(calls.items(), key=lambda kv: -kv[1])[:6] if kv[1] / n >= 0.01]
        return {"syscalls_per_tx": round(total / n, 2),
                "syscalls_detail": ", ".join(f"{k} {v / n:.2f}" for k, v in top)}
    finally:
        pooler.stop()


def measure_perf(pooler, a, mode):
    pooler.start(f"perf-{mode}")
    try:
        pid = pooler.worker_pid()
        d = Driver(pooler.port, a.clients, mode)
        d.run(a.warmup)
        out = os.path.join(pooler.workdir, f"perf-{pooler.kind}-{mode}.txt")
        perf = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", "instructions:u,instructions:k",
                                 "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        d.run(a.transactions)
        perf.send_signal(signal.SIGINT)
        perf.wait(30)
        d.close()
        counts = {}
        with open(out) as fh:
            for line in fh:
                f = line.strip().split(",")
                if len(f) > 2 and f[0].isdigit():
                    counts[f[2]] = int(f[0])
        u, k = counts.get("instructions:u"), counts.get("instructions:k")
        if u is None:
            raise MicroError(f"perf gave no instruction count: {open(out).read()[-300:]}")
        return {"instructions_per_tx_user": round(u / a.transactions),
                "instructions_per_tx_kernel": round(k / a.transactions) if k is not None else None,
                "tool": "perf stat (attached during the measured transactions)"}
    finally:
        pooler.stop()


def measure_callgrind(pooler, a, mode):
    totals = {}
    files = {}
    for n in (a.callgrind_transactions, 2 * a.callgrind_transactions):
        out = os.path.join(pooler.workdir, f"callgrind-{pooler.kind}-{mode}-{n}.out")
        files[n] = out
        log(f"  {pooler.kind} {mode}: callgrind run with {n} transactions")
        pooler.start(f"cg-{mode}-{n}", callgrind_out=out)
        try:
            d = Driver(pooler.port, a.clients, mode)
            d.run(a.warmup)
            d.run(n)
            d.close()
        finally:
            how = pooler.stop()
        deadline = time.monotonic() + 30
        while not os.path.exists(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not os.path.exists(out):
            raise MicroError(f"callgrind wrote no {out} (pooler stop: {how}); log: {tail(pooler.log_path)}")
        totals[n] = callgrind_total(out)
    n1, n2 = a.callgrind_transactions, 2 * a.callgrind_transactions
    return {"instructions_per_tx_user": round((totals[n2] - totals[n1]) / (n2 - n1)),
            "instructions_per_tx_kernel": None,
            "callgrind_totals": {str(k): v for k, v in totals.items()},
            "top_functions": marginal_functions(files[n1], files[n2], n2 - n1),
            "tool": f"valgrind --tool=callgrind, ({n2} tx run - {n1} tx run) / {n2 - n1}; user space only"}


# ---------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
    p.add_argument("--transactions", type=int, default=int(env("MICRO_TRANSACTIONS", 20000)),
                   help="transactions of the native and perf passes [MICRO_TRANSACTIONS]")
    p.add_argument("--callgrind-transactions", type=int, default=int(env("MICRO_CALLGRIND_TRANSACTIONS", 2000)),
                   help="N of the callgrind pair (N and 2N) [MICRO_CALLGRIND_TRANSACTIONS]")
    p.add_argument("--syscall-transactions", type=int, default=int(env("MICRO_SYSCALL_TRANSACTIONS", 3000)),
                   help="transactions counted by strace -c; 0: skip [MICRO_SYSCALL_TRANSACTIONS]")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--clients", type=int, default=int(env("MICRO_CLIENTS", 1)), help="transactions in flight [MICRO_CLIENTS]")
    p.add_argument("--modes", default=env("MICRO_MODES", "simple,extended"))
    p.add_argument("--targets", default=env("MICRO_TARGETS", "pgswift,pgbouncer"))
    p.add_argument("--tool", choices=("auto", "perf", "callgrind", "none"), default=env("MICRO_TOOL", "auto"))
    p.add_argument("--pgswift-bin-dir", default=env("PGSWIFT_BIN_DIR", os.path.join(ROOT, ".build", "release")))
    p.add_argument("--run-as", default=env("BENCH_RUN_AS", "postgres"), help="user for the poolers when root")
    p.add_argument("--json", default=env("MICRO_JSON", os.path.join(HERE, "MICROBENCH.json")))
    p.add_argument("--md", default=env("MICRO_MD", os.path.join(HERE, "MICROBENCH.md")))
    p.add_argument("--keep-workdir", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    kinds = [t.strip() for t in a.targets.split(",") if t.strip()]
    tool = a.tool
    if tool == "auto":
        tool = "perf" if perf_usable() else ("callgrind" if shutil.which("valgrind") else "none")
    elif tool == "perf" and not perf_usable():
        raise SystemExit("perf cannot count instructions here (no PMU access): use --tool callgrind")
    pgbouncer = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None)
    if "pgbouncer" in kinds and not pgbouncer:
        log("pgbouncer not installed: measuring pgswift only")
        kinds.remove("pgbouncer")
    for b in ("pgswift", "pgswift-worker"):
        if "pgswift" in kinds and not os.access(os.path.join(a.pgswift_bin_dir, b), os.X_OK):
            raise SystemExit(f"{a.pgswift_bin_dir}/{b} not found: run `make build`")
    run_as = a.run_as if os.geteuid() == 0 else None
    workdir = tempfile.mkdtemp(prefix="pgswift-microbench-")
    os.chmod(workdir, 0o755)
    chown(workdir, run_as)
    started = datetime.datetime.now().astimezone()
    results, status = [], 0
    fake = None
    try:
        fake = Child("fakeserver", [sys.executable, os.path.join(HERE, "fakeserver.py"), "--port", "0"],
                     os.path.join(workdir, "fakeserver.log"), stdout=subprocess.PIPE)
        line = fake.popen.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "ready":
            raise MicroError(f"fakeserver did not start: {tail(fake.log_path)}")
        fake_port = int(line[1])
        log(f"fakeserver on {HOST}:{fake_port}; instruction counts with: {tool}")
        for kind in kinds:
            pooler = Pooler(kind, workdir, fake_port, run_as, a.pgswift_bin_dir, pgbouncer)
            for mode in modes:
                row = {"target": kind + (" (workers=1)" if kind == "pgswift" else " (1 process)"),
                       "mode": mode, "clients": a.clients}
                try:
                    log(f"{kind} {mode}: native pass, {a.transactions} transactions")
                    row.update(measure_native(pooler, a, mode))
                    if a.syscall_transactions and shutil.which("strace"):
                        log(f"{kind} {mode}: strace -c, {a.syscall_transactions} transactions")
                        row.update(measure_syscalls(pooler, a, mode))
                    if tool == "perf":
                        row.update(measure_perf(pooler, a, mode))
                    elif tool == "callgrind":
                        row.update(measure_callgrind(pooler, a, mode))
                    row["status"] = "OK"
                except (MicroError, StartError, pgwire.PgError, OSError) as exc:
                    row["status"] = f"FAILED: {exc}"
                    status = 1
                    pooler.stop()
                log(f"  -> {row.get('instructions_per_tx_user')} instructions/tx, "
                    f"{row.get('worker_cpu_us_per_tx')} us CPU/tx ({row['status'][:200]})")
                results.append(row)
    except KeyboardInterrupt:
        status = 130
    finally:
        Child.stop_all()
        if not a.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    doc = {"tool": "pgswift bench/microbench.py", "started": started.isoformat(timespec="seconds"),
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "kernel": platform.release()},
           "command": " ".join(["python3", "bench/microbench.py"] + argv), "instruction_tool": tool,
           "transactions": a.transactions, "callgrind_transactions": a.callgrind_transactions,
           "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(doc, fh, indent=1)
    md = markdown(doc)
    with open(a.md, "w") as fh:
        fh.write(md)
    sys.stdout.write(md)
    log(f"wrote {a.md} and {a.json}")
    return status


def markdown(doc):
    out = [f"# pgswift micro-benchmark: forward path against bench/fakeserver.py\n",
           f"- Date: {doc['started']}; machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
           f"Linux {doc['machine']['kernel']}",
           f"- Command: `{doc['command']}`",
           f"- Instructions counted with: {doc['instruction_tool']}"
           + (" (user space only; perf cannot count instructions on this machine)" if doc["instruction_tool"] == "callgrind" else ""),
           "- A transaction: one `SELECT 1` (simple) or Parse/Bind/Describe/Execute/Sync (extended), "
           "answered by the fake server with one row; transaction pooling, one server connection.\n",
           "The native columns are rough: CPU comes in clock ticks and the Python driver, the fake "
           "server and other processes share the cores.\n",
           "| pooler | mode | clients | status | instructions / tx | × | kernel instr. / tx | syscalls / tx | × "
           "| worker CPU µs / tx (native) | round trip µs (native) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["mode"]: r for r in doc["results"] if r["target"].startswith("pgbouncer") and r["status"] == "OK"}
    for r in doc["results"]:
        b = base.get(r["mode"])
        def ratio(k):
            if r["target"].startswith("pgbouncer"):
                return "1"
            if b and r.get(k) and b.get(k):
                return f"**{r[k] / b[k]:.2f}**"
            return "n/a"
        f = lambda k: "n/a" if r.get(k) is None else f"{r[k]:,}"
        out.append(f"| {r['target']} | {r['mode']} | {r['clients']} | {r['status'][:120]} | "
                   f"{f('instructions_per_tx_user')} | {ratio('instructions_per_tx_user')} "
                   f"| {f('instructions_per_tx_kernel')} | {f('syscalls_per_tx')} | {ratio('syscalls_per_tx')} "
                   f"| {f('worker_cpu_us_per_tx')} | {f('round_trip_us')} |")
    details = [r for r in doc["results"] if r.get("syscalls_detail")]
    if details:
        out.append("\nSystem calls per transaction (strace -c on the worker):\n")
        for r in details:
            out.append(f"- {r['target']}, {r['mode']}: {r['syscalls_detail']}")
    for r in doc["results"]:
        # PgBouncer's package is stripped (addresses only): its per-function split stays in the JSON.
        if r.get("top_functions") and r["target"].startswith("pgswift"):
            out.append(f"\nWhere {r['target']} spends its instructions per transaction, {r['mode']} protocol "
                       f"(self cost, difference of the two callgrind runs):\n")
            out.append("| % | instructions / tx | function |")
            out.append("|---|---|---|")
            for t in r["top_functions"][:12]:
                out.append(f"| {t['pct']:.1f} | {t['ir_per_tx']:,.0f} | `{t['function'][:120]}` |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
