# asyncpg through pgswift: usage `asyncpg_check.py MODE [DSN]` (DSN else $PGSWIFT_DSN); MODE is
# basic (statement_cache_size=0: unnamed statements only), prepared (the default named cache) or
# large (40 kB text and JSON parameters, larger than pgswift's 32 KiB buffer, both ways).
# Prints one "OK ..." line and exits 0, or prints the failure and exits 1.
import asyncio
import json
import os
import sys

import asyncpg

CLIENTS = 4
ROUNDS = 40


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def one_client(dsn, n, cache_size):
    conn = await asyncpg.connect(dsn, statement_cache_size=cache_size)
    try:
        for i in range(ROUNDS):
            # Simple query protocol: execute() without arguments, several statements.
            await conn.execute("select 1; select 2")
            # Parameters, text, unicode and NULL.
            row = await conn.fetchrow("select $1::int + $2::int as s, $3::text as t, $4::text is null as z",
                                      n, i, "zürich €", None)
            check((row["s"], row["t"], row["z"]) == (n + i, "zürich €", True), f"parameters gave {row}")
            check(await conn.fetchval("select $1::bigint * 2", 21) == 42, "fetchval")
            # A transaction: one backend throughout, its temp table gone at commit.
            async with conn.transaction():
                pid = await conn.fetchval("select pg_backend_pid()")
                await conn.execute("create temp table t (i int, s text) on commit drop")
                await conn.executemany("insert into t values ($1, $2)", [(k, f"row {k}") for k in range(50)])
                total = await conn.fetchrow("select count(*) as c, sum(i) as s from t")
                check((total["c"], total["s"]) == (50, sum(range(50))), f"executemany inserted {total}")
                again = await conn.fetchval("select pg_backend_pid()")
                check(again == pid, f"backend changed inside a transaction: {pid} then {again}")
            # A failed transaction is rolled back and leaves nothing open.
            try:
                async with conn.transaction():
                    await conn.execute("set local work_mem = '77MB'")
                    await conn.execute("select 1/0")
            except asyncpg.exceptions.DivisionByZeroError:
                pass
            check(await conn.fetchval("select txid_current_if_assigned() is null"), "transaction left open")
            # Autocommit executemany (one Sync for all the rows' Bind/Execute).
            await conn.executemany("select $1::int", [(k,) for k in range(20)])
            rows = await conn.fetch("select g, g * $1::int as d from generate_series(1, 100) g", 3)
            check([r["d"] for r in rows] == [g * 3 for g in range(1, 101)], "fetch")
    finally:
        await conn.close()


async def run(dsn, cache_size):
    results = await asyncio.gather(*(one_client(dsn, n, cache_size) for n in range(CLIENTS)),
                                   return_exceptions=True)
    errors = [f"client {n}: {type(e).__name__}: {e}" for n, e in enumerate(results) if isinstance(e, BaseException)]
    if errors:
        raise AssertionError("; ".join(errors))
    return f"{CLIENTS} connections x {ROUNDS} rounds"


def large_values(seed):
    """A 40 kB text (multi-byte characters, quotes, backslashes) and the JSON text of a 40 kB object."""
    unit = f"{seed}:zürich € 'quote' \\back\\ \"dq\" line\n"
    text = (unit * (40_000 // len(unit) + 1))[:40_000]
    doc = {f"key{k}": {"n": k * seed, "s": "é" * (k % 7), "l": [k, None, True]} for k in range(900)}
    return text, json.dumps(doc)


async def large(dsn):
    """Parameters larger than pgswift's 32 KiB I/O buffer, sent and returned, with asyncpg's default
    named statements and (statement_cache_size=0) unnamed ones: `select $1::text`, `select $1::json`
    (asyncpg passes JSON as text), and an INSERT then SELECT of both. Values are compared exactly."""
    done = 0
    for cache_size in (100, 0):
        conn = await asyncpg.connect(dsn, statement_cache_size=cache_size)
        try:
            for rnd in range(3):
                text, doc = large_values(rnd + cache_size)
                check(len(text.encode()) > 40_000 and len(doc) > 40_000, "values too small")
                check(await conn.fetchval("select $1::text", text) == text,
                      f"select text (cache {cache_size}, round {rnd}) differs")
                check(await conn.fetchval("select $1::json", doc) == doc,
                      f"select json (cache {cache_size}, round {rnd}) differs")
                # A temp table lives on one server: the INSERT and SELECT share a transaction.
                async with conn.transaction():
                    await conn.execute("create temp table large_values (k text, t text, j json) on commit drop")
                    await conn.execute("insert into large_values (k, t, j) values ($1, $2, $3)", "k", text, doc)
                    row = await conn.fetchrow("select t, j from large_values where k = $1", "k")
                check((row["t"], row["j"]) == (text, doc), f"insert/select (cache {cache_size}, round {rnd}) differs")
                done += 1
            check(await conn.fetchval("select 41 + 1") == 42, "connection usable at the end")
        finally:
            await conn.close()
    return f"{done} rounds of 40 kB text and JSON, named and unnamed, both directions"


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("basic", "prepared", "large"):
        print("usage: asyncpg_check.py basic|prepared|large [DSN]", file=sys.stderr)
        return 2
    mode = sys.argv[1]
    dsn = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("PGSWIFT_DSN", "")
    try:
        if mode == "large":
            detail = asyncio.run(asyncio.wait_for(large(dsn), 240))
        else:
            detail = asyncio.run(asyncio.wait_for(run(dsn, 0 if mode == "basic" else 100), 240))
    except BaseException as e:
        print(f"FAIL asyncpg {asyncpg.__version__} {mode}: {type(e).__name__}: {e}")
        return 1
    print(f"OK asyncpg {asyncpg.__version__} {mode}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
