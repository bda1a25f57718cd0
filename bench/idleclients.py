#!/usr/bin/env python3
# Logs in thousands of connections through a pooler and holds them idle; steered by the harness over stdin/stdout.
"""Idle-connection client for the benchmark's `idle` scenario.

    idleclients.py --host H --port P --user U --db D --count N [--concurrency C]

The password comes from $PGPASSWORD.  It logs in N connections (at most C logins in flight, so
the pooler's listen backlog never overflows), prints one JSON line per event on stdout, then
holds the connections and waits for commands on stdin:

    check K   run SELECT 1 on K connections spread over the set (they must still work)
    close     send Terminate on every connection, close them and exit

EOF on stdin means close.  Events: progress (every second while logging in), connected,
checked, closed.
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def main(a):
    password = os.environ.get("PGPASSWORD")
    keys = {}   # the salted password is derived once: this client's PBKDF2 must not pace the logins
    conns, failures = [], []
    gate = asyncio.Semaphore(a.concurrency)
    t0 = time.monotonic()

    async def one():
        async with gate:
            try:
                conns.append(await asyncio.wait_for(
                    pgwire.login_async(a.host, a.port, a.user, a.db, password, keys,
                                       {"application_name": "idleclients"}), a.timeout))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, pgwire.PgError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    async def progress():
        while True:
            await asyncio.sleep(1.0)
            emit(event="progress", connected=len(conns), failed=len(failures),
                 seconds=round(time.monotonic() - t0, 2))

    ticker = asyncio.create_task(progress())
    await asyncio.gather(*(one() for _ in range(a.count)))
    ticker.cancel()
    emit(event="connected", connected=len(conns), failed=len(failures),
         first_error=failures[0] if failures else None, seconds=round(time.monotonic() - t0, 3))

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.split()
        if not cmd or cmd[0] == "close":
            break
        if cmd[0] == "check":
            k = max(1, min(int(cmd[1]) if len(cmd) > 1 else 100, len(conns) or 1))
            ok, errors = 0, []
            step = max(1, len(conns) // k)
            for reader, writer in conns[::step][:k]:
                try:
                    rows = await asyncio.wait_for(pgwire.query_async(reader, writer, "SELECT 1"), a.timeout)
                    if rows == [["1"]]:
                        ok += 1
                    else:
                        errors.append(f"unexpected rows {rows!r}")
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, pgwire.PgError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
            emit(event="checked", asked=k, ok=ok, failed=len(errors), first_error=errors[0] if errors else None)

    for _, writer in conns:
        try:
            writer.write(pgwire.message(b"X"))
            writer.close()
        except OSError:
            pass
    await asyncio.sleep(0.2)
    emit(event="closed", connections=len(conns))


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per login or query")
    return p.parse_args()


if __name__ == "__main__":
    args = parse()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(args))
