#!/usr/bin/env python3
# `make profile`: where each pooler's CPU goes per transaction (perf record), side by side, same set-up as make bench.
"""Profile the poolers under one pgbench scenario with Linux perf, and print where their CPU goes
per transaction: time in send, recv/read, epoll_wait, epoll_ctl, the rest of the kernel, and user
space, in perf samples per 1000 transactions and as a share of PgBouncer's total.

    python3 bench/profile.py [--targets pgbouncer:1,pgswift:1] [--seconds 10] [--clients 50]

Same PostgreSQL, role, secret and pooler configuration as `make bench` (bench/bench.py's set-up).
perf's sampling slows every process a little: compare the two columns, not absolute times. Needs
`perf` (Debian: linux-perf) and, as non-root, kernel.perf_event_paranoid <= 1.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
from cluster import BENCH_DB, BENCH_USER, HOST  # noqa: E402
from procs import cpu_model, log  # noqa: E402

# Leaf-most user-space entry point of each system call, as perf shows it (glibc's symbol names).
SYSCALLS = {
    "send": ("__send", "send", "__libc_send", "sendto", "__sendto", "writev", "__writev", "write", "__write",
             "__libc_write", "sendmsg", "__sendmsg"),
    "recv": ("recv", "__recv", "__libc_recv", "read", "__read", "__libc_read", "recvfrom", "readv", "recvmsg"),
    "epoll_wait": ("epoll_wait", "__epoll_wait", "epoll_pwait"),
    "epoll_ctl": ("epoll_ctl", "__epoll_ctl"),
}


def perf_children(data):
    """{symbol: children %} from perf report (inclusive time), and the sample count."""
    out = subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "sym", "--stdio", "-g", "none"],
                         capture_output=True, text=True).stdout
    inclusive = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[([.k])\]\s+(\S+)", line)
        if m:
            inclusive[(m.group(3), m.group(4))] = float(m.group(1))
    samples = 0
    m = re.search(r"# Samples: (\d+)([KM]?)", out)
    if m:
        samples = int(m.group(1)) * {"": 1, "K": 1000, "M": 1000000}[m.group(2)]
    return inclusive, samples


def user_kernel_split(data):
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym", "--stdio", "-g", "none"],
                         capture_output=True, text=True).stdout
    user = kernel = 0.0
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[([.k])\]", line)
        if m:
            if m.group(2) == "k":
                kernel += float(m.group(1))
            else:
                user += float(m.group(1))
    return user, kernel


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="pgbouncer:1,pgswift:1")
    p.add_argument("--seconds", type=int, default=10, help="perf record time per target")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--args", default="-S -M simple", help="pgbench arguments of the scenario")
    p.add_argument("--pgswift-bin-dir", default=os.environ.get("PGSWIFT_BIN_DIR", os.path.join(os.path.dirname(HERE), ".build", "release")))
    p.add_argument("--out", default=os.path.join(HERE, "PROFILE.md"), help="Markdown report (and .json beside it)")
    a = p.parse_args()
    a.pgswift_bin_dir = os.path.abspath(a.pgswift_bin_dir)   # the poolers start in their own directories
    if not shutil.which("perf"):
        sys.exit("perf not found (Debian: apt-get install linux-perf)")
    ba = bench.parse_args(["--targets", a.targets, "--scenarios", "select", "--pgswift-bin-dir", a.pgswift_bin_dir,
                           "--scale", "10"])
    b = bench.Bench(ba)
    b.tools()
    rows = []
    try:
        b.setup()
        workdir = b.workdir
        for t in b.targets:
            t.start()
            env = b.client_env
            base = ["pgbench", "-h", HOST, "-p", str(b.port), "-U", BENCH_USER, "-n", "-j", "2", "-c", str(a.clients)] + a.args.split()
            subprocess.run(base + ["-T", "2", BENCH_DB], env=env, capture_output=True)        # warm-up
            out = os.path.join(workdir, f"{t.name.replace(':', '-')}.perf")
            load = subprocess.Popen(base + ["-T", str(a.seconds + 4), BENCH_DB], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            time.sleep(2)
            pids = ",".join(str(x) for x in t.process_ids())
            log(f"perf record on {t.name} (pids {pids}) for {a.seconds} s")
            subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-g", "-p", pids, "-o", out, "--", "sleep",
                            str(a.seconds)], capture_output=True)
            text = load.communicate()[0]
            m = re.search(r"tps = ([\d.]+)", text)
            tps = float(m.group(1)) if m else 0.0
            t.stop()
            inclusive, samples = perf_children(out)
            user, kernel = user_kernel_split(out)
            tx = tps * a.seconds
            row = {"target": t.name, "tps": tps, "samples": samples, "tx": tx,
                   "user_pct": user, "kernel_pct": kernel}
            for name, syms in SYSCALLS.items():
                row[name] = max([inclusive.get((".", s), 0.0) for s in syms] + [0.0])
            rows.append(row)
    finally:
        for t in b.targets:
            try:
                t.stop()
            except Exception:
                pass
        if b.pg:
            b.pg.stop()
        if b.workdir:
            shutil.rmtree(b.workdir, ignore_errors=True)

    ref = next((r for r in rows if r["target"].startswith("pgbouncer")), rows[0])
    ref_per_tx = ref["samples"] / ref["tx"] if ref["tx"] else 0
    lines = [f"# Pooler CPU by system call, per transaction (perf record, `pgbench {a.args} -c {a.clients}`)", "",
             "perf samples per 1000 transactions (cpu-clock); × = share of " + ref["target"] + "'s total per transaction.", "",
             "| target | tps | total | × | send | × | recv/read | × | epoll_wait | epoll_ctl | other kernel | user space | × |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_tx = r["samples"] / r["tx"] if r["tx"] else 0

        def part(pct):
            return per_tx * pct / 100.0

        def x(v):
            return f"{v / ref_per_tx:.2f}" if ref_per_tx else "n/a"
        named = r["send"] + r["recv"] + r["epoll_wait"] + r["epoll_ctl"]
        other_kernel = max(0.0, r["kernel_pct"] - named)
        lines.append(f"| {r['target']} | {r['tps']:,.0f} | {per_tx * 1000:.0f} | {x(per_tx)} | {part(r['send']) * 1000:.0f} | "
                     f"{x(part(r['send']))} | {part(r['recv']) * 1000:.0f} | {x(part(r['recv']))} | "
                     f"{part(r['epoll_wait']) * 1000:.0f} | {part(r['epoll_ctl']) * 1000:.0f} | {part(other_kernel) * 1000:.0f} | "
                     f"{part(r['user_pct']) * 1000:.0f} | {x(part(r['user_pct']))} |")
    lines += ["", f"Machine: {cpu_model()}, {os.cpu_count()} cores, Linux {os.uname().release}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `python3 bench/profile.py --targets {a.targets}`.",
              "send/recv/epoll columns are inclusive (the kernel work under each call: for send on loopback TCP, "
              "the receiver's TCP processing and its wake-up run in the sender's context); 'user space' is "
              "samples outside the kernel, wherever they are."]
    report = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write(report)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as fh:
        json.dump(rows, fh, indent=1)
    print(report)


if __name__ == "__main__":
    main()
