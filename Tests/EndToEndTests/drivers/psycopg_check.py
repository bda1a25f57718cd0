# psycopg 3 through pgswift: usage `psycopg_check.py MODE [DSN]` (DSN else $PGSWIFT_DSN); MODE is
# basic (no server-side prepared statements), prepared (prepare_threshold=0), cancel, names or
# large (40 kB text and JSON parameters, larger than pgswift's 32 KiB buffer, both ways).
# Prints one "OK ..." line and exits 0, or prints the failure and exits 1.
import os
import sys
import threading
import time

import psycopg

CLIENTS = 4
ROUNDS = 40


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def one_client(dsn, n, prepare_threshold, errors):
    try:
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=prepare_threshold) as conn:
            for i in range(ROUNDS):
                # Simple query, several statements in one string (no parameters, never prepared:
                # the simple protocol).
                cur = conn.execute("select 1; select 'two'", prepare=False)
                check(cur.fetchone() == (1,), "first result of a two-statement string")
                check(cur.nextset() and cur.fetchone() == ("two",), "second result of a two-statement string")
                # Parameters (extended protocol), text, unicode and NULL.
                row = conn.execute("select %s::int + %s::int, %s::text, %s::text is null",
                                   (n, i, "zürich €", None)).fetchone()
                check(row == (n + i, "zürich €", True), f"parameters gave {row}")
                # A transaction: one backend throughout, its temp table gone at commit.
                with conn.transaction():
                    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
                    conn.execute("create temp table t (i int, s text) on commit drop")
                    with conn.cursor() as c:
                        c.executemany("insert into t values (%s, %s)", [(k, f"row {k}") for k in range(50)])
                    total = conn.execute("select count(*), sum(i) from t").fetchone()
                    check(total == (50, sum(range(50))), f"executemany inserted {total}")
                    again = conn.execute("select pg_backend_pid(), txid_current_if_assigned() is not null").fetchone()
                    check(again == (pid, True), f"backend changed inside a transaction: {pid} then {again}")
                # A rolled-back transaction leaves nothing behind.
                try:
                    with conn.transaction():
                        conn.execute("set local work_mem = '77MB'")
                        conn.execute("select 1/0")
                except psycopg.errors.DivisionByZero:
                    pass
                check(conn.execute("select txid_current_if_assigned() is null").fetchone() == (True,),
                      "a transaction stayed open after rollback")
                # Autocommit executemany and a pipeline: many syncs in flight on one server.
                with conn.cursor() as c:
                    c.executemany("select %s::int * 2", [(k,) for k in range(20)], returning=True)
                    got = []
                    while True:
                        got.append(c.fetchone()[0])
                        if not c.nextset():
                            break
                    check(got == [k * 2 for k in range(20)], f"executemany returning gave {got}")
                with conn.pipeline():
                    curs = [conn.execute("select %s::int + 1000", (k,)) for k in range(10)]
                check([c.fetchone()[0] for c in curs] == [k + 1000 for k in range(10)], "pipeline results")
    except Exception as e:  # report every client's failure, not just the first
        errors.append(f"client {n}: {type(e).__name__}: {e}")


def run_clients(dsn, prepare_threshold):
    errors = []
    threads = [threading.Thread(target=one_client, args=(dsn, n, prepare_threshold, errors)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise AssertionError("; ".join(errors))
    return f"{CLIENTS} connections x {ROUNDS} rounds"


def cancel(dsn):
    """conn.cancel() from another thread while pg_sleep runs: QueryCanceled (57014), quickly."""
    timings = []
    for _ in range(5):
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
            def fire():
                # The query must have reached the server first; it shows in pg_stat_activity.
                with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as watcher:
                    for _ in range(3000):
                        n = watcher.execute("select count(*) from pg_stat_activity "
                                            "where query like %s and state = 'active'",
                                            ("%psycopg-cancel-target%",)).fetchone()[0]
                        if n:
                            break
                        time.sleep(0.01)
                fired.append(time.monotonic())
                conn.cancel()

            fired = []
            t = threading.Thread(target=fire)
            t.start()
            try:
                conn.execute("select pg_sleep(30), 'psycopg-cancel-target'")
                raise AssertionError("pg_sleep(30) was not cancelled")
            except psycopg.errors.QueryCanceled as e:
                check(e.sqlstate == "57014", f"sqlstate {e.sqlstate}")
                timings.append(time.monotonic() - fired[0])
            finally:
                t.join()
            check(conn.execute("select 'after'").fetchone() == ("after",), "query after the cancel")
    check(max(timings) < 5.0, f"cancel took {timings}")
    return "5 cancels, seconds: " + ", ".join(f"{x:.3f}" for x in timings)


def names(dsn):
    """Protocol-level prepared statements through libpq, with prepared_statement_errors = postgresql: a
    reused name gets PostgreSQL's 42P05 and an unknown one 26000 (the default, as PgBouncer, disconnects),
    and the connection keeps working after both."""
    from psycopg import pq
    with psycopg.connect(dsn, autocommit=True) as conn:
        pg = conn.pgconn
        r = pg.prepare(b"s1", b"select $1::int + 1")
        check(r.status == pq.ExecStatus.COMMAND_OK, f"prepare s1: {r.error_message}")
        r = pg.prepare(b"s1", b"select 2")
        check(r.status == pq.ExecStatus.FATAL_ERROR, "a reused statement name must fail")
        check(r.error_field(pq.DiagnosticField.SQLSTATE) == b"42P05", f"reused name: {r.error_field(pq.DiagnosticField.SQLSTATE)}")
        r = pg.exec_prepared(b"nope", [])
        check(r.status == pq.ExecStatus.FATAL_ERROR, "an unknown statement name must fail")
        check(r.error_field(pq.DiagnosticField.SQLSTATE) == b"26000", f"unknown name: {r.error_field(pq.DiagnosticField.SQLSTATE)}")
        check(pg.status == pq.ConnStatus.OK, "the connection must survive both errors")
        for i in range(20):
            # Interleave with other clients' traffic so s1 runs on servers that never saw it.
            r = pg.exec_prepared(b"s1", [str(i).encode()])
            check(r.status == pq.ExecStatus.TUPLES_OK and r.get_value(0, 0) == str(i + 1).encode(),
                  f"exec s1 #{i}: {r.error_message}")
            with psycopg.connect(dsn, autocommit=True) as other:
                other.execute("select pg_sleep(0.001)")
        r = pg.describe_prepared(b"s1")
        check(r.status == pq.ExecStatus.COMMAND_OK and r.nparams == 1, "describe s1")
        conn.execute("deallocate all")
        r = pg.exec_prepared(b"s1", [b"1"])
        check(r.error_field(pq.DiagnosticField.SQLSTATE) == b"26000", "DEALLOCATE ALL must drop s1")
        check(conn.execute("select 41 + 1").fetchone()[0] == 42, "connection usable at the end")
    return "42P05 and 26000 answered, connection kept, s1 re-prepared across servers"


def large_values(seed):
    """A 40 kB text (multi-byte characters, quotes, backslashes) and the JSON text of a 40 kB object."""
    import json
    unit = f"{seed}:zürich € 'quote' \\back\\ \"dq\" line\n"
    text = (unit * (40_000 // len(unit) + 1))[:40_000]
    doc = {f"key{k}": {"n": k * seed, "s": "é" * (k % 7), "l": [k, None, True]} for k in range(900)}
    return text, json.dumps(doc)


def large(dsn):
    """Parameters larger than pgswift's 32 KiB I/O buffer, sent and returned, with named statements
    (prepare=True) and unnamed ones (prepare=False): `select $1::text`, `select $1::json::text`, and an
    INSERT then SELECT of both. Values are compared exactly."""
    from psycopg.types.json import Json
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = 0
        for prepare in (False, True):
            for rnd in range(3):  # named: the first round prepares, the next ones reuse the name
                text, doc = large_values(rnd + (10 if prepare else 0))
                check(len(text.encode()) > 40_000 and len(doc) > 40_000, "values too small")
                got = conn.execute("select %s::text", (text,), prepare=prepare).fetchone()[0]
                check(got == text, f"select text (prepare={prepare}, round {rnd}) differs")
                got = conn.execute("select %s::json::text", (Json(doc, dumps=lambda d: d),), prepare=prepare).fetchone()[0]
                check(got == doc, f"select json (prepare={prepare}, round {rnd}) differs")
                # A temp table lives on one server: the INSERT and SELECT share a transaction.
                with conn.transaction():
                    conn.execute("create temp table large_values (k text, t text, j json) on commit drop")
                    conn.execute("insert into large_values (k, t, j) values (%s, %s, %s)",
                                 ("k", text, Json(doc, dumps=lambda d: d)), prepare=prepare)
                    row = conn.execute("select t, j::text from large_values where k = %s", ("k",), prepare=prepare).fetchone()
                check(row == (text, doc), f"insert/select (prepare={prepare}, round {rnd}) differs")
                done += 1
        check(conn.execute("select 41 + 1").fetchone()[0] == 42, "connection usable at the end")
    return f"{done} rounds of 40 kB text and JSON, named and unnamed, both directions"


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("basic", "prepared", "cancel", "names", "large"):
        print(__doc__ or "usage: psycopg_check.py basic|prepared|cancel [DSN]", file=sys.stderr)
        return 2
    mode = sys.argv[1]
    dsn = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("PGSWIFT_DSN", "")
    try:
        if mode == "basic":
            detail = run_clients(dsn, None)
        elif mode == "prepared":
            detail = run_clients(dsn, 0)
        elif mode == "names":
            detail = names(dsn)
        elif mode == "large":
            detail = large(dsn)
        else:
            detail = cancel(dsn)
    except Exception as e:
        print(f"FAIL psycopg {psycopg.__version__} {mode}: {type(e).__name__}: {e}")
        return 1
    print(f"OK psycopg {psycopg.__version__} {mode}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
