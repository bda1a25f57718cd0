# Turns the benchmark's runs into summary rows (medians over repeats) and the Markdown report.
"""Summaries and the Markdown report.  pgswift:N is compared with pgbouncer:N (the same
number of processes, the same pool size per process); ratios are pgswift / PgBouncer."""

import statistics

PGB_METRICS = ("tps", "latency_ms", "p99_ms", "pooler_cpu_s_per_1000_tx", "pooler_peak_rss_mib",
               "pooler_core_pct", "postgres_cpu_s", "pgbench_cpu_s", "other_cpu_s", "machine_busy_pct",
               "server_connections_mid_run")
IDLE_METRICS = ("connected", "login_s", "logins_per_s", "pooler_rss_before_mib", "pooler_rss_after_mib",
                "pooler_peak_rss_mib", "bytes_per_idle_conn", "pooler_cpu_s_per_1000_logins",
                "server_connections_while_idle")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(doc):
    """One row per (scenario, target), in run order, with medians of the OK runs."""
    idle = {s["name"] for s in doc["scenarios"] if s["name"] == "idle"}
    rows, index = [], {}
    for r in doc["runs"]:
        key = (r["scenario"], r["target"])
        if key not in index:
            index[key] = {"scenario": r["scenario"], "target": r["target"], "runs": []}
            rows.append(index[key])
        index[key]["runs"].append(r)
    for row in rows:
        runs = row.pop("runs")
        ok = [r for r in runs if r["status"] == "OK"]
        row["runs"], row["ok"] = len(runs), len(ok)
        if len(ok) == len(runs):
            row["status"] = "OK"
        elif not ok:
            row["status"] = "FAILED"
        else:
            row["status"] = f"PARTIAL ({len(ok)}/{len(runs)} ok)"
        row["errors"] = sorted({r["error"] for r in runs if r.get("error")})
        for m in (IDLE_METRICS if row["scenario"] in idle else PGB_METRICS):
            row[m] = median(r.get(m) for r in ok)
        if row["scenario"] not in idle and ok:
            row["tps_min"] = min(r["tps"] for r in ok)
            row["tps_max"] = max(r["tps"] for r in ok)
            row["other_cpu_s_max"] = max(r.get("other_cpu_s") or 0 for r in ok)
    for row in rows:
        kind, _, n = row["target"].partition(":")
        base = index.get((row["scenario"], f"pgbouncer:{n}")) if kind.startswith("pgswift") else None
        row["baseline"] = base["target"] if base else None
        row["ratios"] = {}
        if base and row["ok"] and base["ok"]:
            for m in ("tps", "p99_ms", "latency_ms", "pooler_cpu_s_per_1000_tx", "pooler_peak_rss_mib",
                      "bytes_per_idle_conn", "pooler_cpu_s_per_1000_logins", "logins_per_s"):
                if row.get(m) is not None and base.get(m):
                    row["ratios"][m] = round(row[m] / base[m], 3)
    return rows


def query_stats_cost(rows):
    """(scenario, N, pooler CPU per 1000 tx with query_stats on, off, on/off, tps on/off) for every
    scenario where both pgswift:N and pgswift-nostats:N ran OK."""
    return variant_cost(rows, "pgswift-nostats", on_is_variant=False)


def routing_cost(rows):
    """The same for routing=read-write-split (pgswift-routing:N) against routing off (pgswift:N)."""
    return variant_cost(rows, "pgswift-routing", on_is_variant=True)


def variant_cost(rows, variant, on_is_variant):
    index = {(r["scenario"], r["target"]): r for r in rows}
    out = []
    for row in rows:
        kind, _, n = row["target"].partition(":")
        other = index.get((row["scenario"], f"{variant}:{n}")) if kind == "pgswift" else None
        if not other:
            continue
        r, off = (other, row) if on_is_variant else (row, other)
        if not r["ok"] or not off["ok"]:
            continue
        on_cpu, off_cpu = r.get("pooler_cpu_s_per_1000_tx"), off.get("pooler_cpu_s_per_1000_tx")
        if on_cpu is None or not off_cpu or not off.get("tps"):
            continue
        out.append((r["scenario"], int(n or 1), on_cpu, off_cpu, on_cpu / off_cpu, r["tps"] / off["tps"]))
    return out


def fmt(v, digits=1):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def ratio(row, m):
    if row["target"].startswith("pgbouncer"):
        return "1"
    r = row["ratios"].get(m)
    return f"**{r:.2f}**" if r is not None else "n/a"


def status_cell(row):
    if row["status"] == "OK":
        return "OK"
    first = row["errors"][0] if row["errors"] else "?"
    return f"{row['status']}: {short(first)}"


def short(text, n=90):
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= n else text[:n - 1] + "…"


def markdown(doc):
    rows = doc.get("summary") or summarize(doc)
    m, v, s = doc["machine"], doc["versions"], doc["settings"]
    nb = doc.get("noise", {})
    out = []
    w = out.append
    w("# pgswift benchmark results\n")
    if doc.get("incomplete"):
        w(f"**INCOMPLETE: {short(doc['incomplete'], 600)}**\n")
    w(f"- Date: {doc['started']} (took {doc['elapsed_s'] / 60:.1f} min)")
    w(f"- Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, {m['os']}, {m['memory_gib']} GiB RAM")
    w(f"- Command: `{doc['command']}`")
    w(f"- Versions: {v.get('pgswift', 'pgswift n/a')}; {v.get('pgbouncer', 'PgBouncer n/a')}; "
      f"{v.get('postgres', '?')}")
    w(f"- Settings: pgbench -j {s['threads']}, {s['duration_s']} s per run after a {s['warmup_s']} s warm-up, "
      f"{s['repeats']} repeat(s) interleaved (A,B,C,D,A,B,...), {s['clients']} clients "
      f"({s['many_clients']} for select-many); transaction pooling, default_pool_size={s['pool_size_per_process']} "
      f"per process, max_client_conn={s['max_client_conn']}; pgbench -i -s {s['scale']}; PostgreSQL with "
      f"fsync=off, max_connections=200, on the same machine")
    w(f"- Authentication: SCRAM-SHA-256 for every client; the role's secret has **{s['scram_iterations']} "
      f"iterations** (not 4096) so that churn measures the poolers, not the client's PBKDF2; both poolers read "
      f"the secret from auth_file and never run PBKDF2 themselves")
    nbf = nb.get("before", {}).get("other_cpu_pct_of_machine")
    naf = nb.get("after", {}).get("other_cpu_pct_of_machine")
    worst = max((r.get("other_cpu_s") or 0 for r in doc["runs"]), default=0)
    measured = [r for r in doc["runs"] if r.get("other_cpu_pct_of_machine") is not None]
    busy = sum(1 for r in measured if r["other_cpu_pct_of_machine"] > 10)
    w(f"- Noise: other processes used {fmt(nbf)}% of the machine's CPU before the runs and {fmt(naf)}% after "
      f"(idle probes); during the pgbench runs they took more than 10% of the machine in {busy} of "
      f"{len(measured)} runs, at worst {fmt(worst, 2)} CPU s in one run (`other CPU s` column). The machine is "
      f"shared: quote ratios from one report, not absolute figures.")
    w("")
    w("## pgswift vs PgBouncer, same number of processes\n")
    w("× = pgswift:N / pgbouncer:N. tps: higher is better; p99, pooler CPU and RSS: lower is better. "
      "Medians over the repeats; tps shows min–max.\n")
    w("| scenario | target | status | tps (min–max) | × | mean ms | p99 ms | × | pooler CPU s / 1000 tx | × "
      "| peak RSS MiB | × | server conns | other CPU s |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["scenario"] == "idle":
            continue
        ok = r["ok"] > 0
        tps = f"{fmt(r['tps'], 0)} ({fmt(r['tps_min'], 0)}–{fmt(r['tps_max'], 0)})" if ok else "—"
        w(f"| {r['scenario']} | {r['target']} | {status_cell(r)} | {tps} | {ratio(r, 'tps') if ok else '—'} "
          f"| {fmt(r['latency_ms'], 2) if ok else '—'} | {fmt(r['p99_ms'], 2) if ok else '—'} "
          f"| {ratio(r, 'p99_ms') if ok else '—'} | {fmt(r['pooler_cpu_s_per_1000_tx'], 3) if ok else '—'} "
          f"| {ratio(r, 'pooler_cpu_s_per_1000_tx') if ok else '—'} | {fmt(r['pooler_peak_rss_mib']) if ok else '—'} "
          f"| {ratio(r, 'pooler_peak_rss_mib') if ok else '—'} | {fmt(r['server_connections_mid_run'], 0) if ok else '—'} "
          f"| {fmt(r['other_cpu_s'], 2) if ok else '—'} |")
    cost = query_stats_cost(rows)
    if cost:
        w("\n## Cost of query statistics (query_stats on / off)\n")
        w("pgswift:N (query_stats = on, the default) against pgswift-nostats:N (query_stats = off), same run; "
          "CPU per transaction: lower is better.\n")
        w("| scenario | workers | pooler CPU s / 1000 tx on | off | on ÷ off | tps on ÷ off |")
        w("|---|---|---|---|---|---|")
        for sc, n, on, off, r, t in cost:
            w(f"| {sc} | {n} | {fmt(on, 3)} | {fmt(off, 3)} | **{r:.3f}** | {t:.3f} |")
    rcost = routing_cost(rows)
    if rcost:
        w("\n## Cost of routing (routing=read-write-split / none)\n")
        w("pgswift-routing:N (routing=read-write-split; the bench has no standby, so reads fall back to the "
          "primary) against pgswift:N (routing off), same run; CPU per transaction: lower is better.\n")
        w("| scenario | workers | pooler CPU s / 1000 tx on | off | on ÷ off | tps on ÷ off |")
        w("|---|---|---|---|---|---|")
        for sc, n, on, off, r, t in rcost:
            w(f"| {sc} | {n} | {fmt(on, 3)} | {fmt(off, 3)} | **{r:.3f}** | {t:.3f} |")
    idle = [r for r in rows if r["scenario"] == "idle"]
    if idle:
        n = s["idle_clients"]
        w(f"\n## Idle connections ({n:,} logged-in clients held open)\n")
        w("RSS is the sum over the pooler's processes (pgswift: supervisor + workers), read before the first "
          "login and 2 s after the last; bytes per connection = difference / connections.\n")
        w("| target | status | connected | logins/s | RSS before → after MiB | bytes per idle conn | × "
          "| pooler CPU s / 1000 logins | × |")
        w("|---|---|---|---|---|---|---|---|---|")
        for r in idle:
            ok = r["ok"] > 0
            w(f"| {r['target']} | {status_cell(r)} | {fmt(r['connected'], 0) if ok else '—'} "
              f"| {fmt(r['logins_per_s'], 0) if ok else '—'} "
              f"| {fmt(r['pooler_rss_before_mib']) + ' → ' + fmt(r['pooler_rss_after_mib']) if ok else '—'} "
              f"| {fmt(r['bytes_per_idle_conn'], 0) if ok else '—'} | {ratio(r, 'bytes_per_idle_conn') if ok else '—'} "
              f"| {fmt(r['pooler_cpu_s_per_1000_logins'], 3) if ok else '—'} "
              f"| {ratio(r, 'pooler_cpu_s_per_1000_logins') if ok else '—'} |")
    fails = [(r["scenario"], r["target"], e) for r in rows for e in r["errors"]]
    if fails:
        w("\n## Failures\n")
        for sc, t, e in fails:
            w(f"- {sc} on {t}: {e}")
    notes = [(x["run"], x["scenario"], x["target"], x["repeat"], n) for x in doc["runs"] for n in x.get("notes", [])]
    if notes:
        w("\n## Notes on individual runs\n")
        for k, sc, t, rep, n in notes:
            w(f"- run {k} ({sc}, {t}, repeat {rep}): {n}")
    w("\n## Scenarios\n")
    w("| scenario | what | pgbench arguments |")
    w("|---|---|---|")
    for sc in doc["scenarios"]:
        args = " ".join(sc["pgbench_args"]) + f" -c {sc['clients']}" if sc["name"] != "idle" else \
            f"bench/idleclients.py --count {sc['clients']}"
        w(f"| {sc['name']} | {sc['title']} | `{args}` |")
    w(f"\nEvery pgbench run is `pgbench -h 127.0.0.1 -p PORT -U bench -n -j {s['threads']} -T {s['duration_s']} "
      f"-c C ARGS -l --sampling-rate={s['sampling_rate']} bench` (exact commands in the JSON).\n")
    w("## How the figures are taken\n")
    w("- tps, mean latency: pgbench's own report (tps without the initial connection time; for churn, tps "
      "including reconnections). p99: from pgbench's per-transaction log (`-l`, sampled).")
    w("- pooler CPU: user+sys of all the pooler's processes (reaped children included) from /proc/PID/stat, "
      "over the whole pgbench process (connect, run, disconnect), divided by the transactions of the run. "
      "Loopback TCP work done in softirq context is charged to no process and is not in it, for either pooler.")
    w("- peak RSS: largest sum of RSS over the pooler's processes, sampled every 0.25 s (shared pages count "
      "once per process).")
    w("- other CPU s: CPU the machine spent in processes outside the benchmark during the run; clearly above 0 "
      "means the run was disturbed.")
    w("- select-prepared: named prepared statements in transaction pooling need statement tracking in the "
      "pooler (PgBouncer has it only from 1.21 on); a FAILED row there is a result, not a harness problem, "
      "and a pgswift row whose PgBouncer row failed has no ratio.")
    w("- pgbench, PostgreSQL and the pooler share the cores; absolute tps says as much about the machine as "
      "about the pooler. CPU per transaction is the figure to compare.")
    return "\n".join(out) + "\n"
