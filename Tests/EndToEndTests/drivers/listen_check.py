# LISTEN/NOTIFY through pgswift in transaction mode (listen_mode = relay): usage
# `listen_check.py DSN PG_DSN` (DSN: through pgswift; PG_DSN: straight to PostgreSQL, same role, for
# pg_stat_activity). 20 listeners (10 psycopg 3 with conn.notifies(), 10 asyncpg with add_listener),
# each on 2 of 5 channels, get exactly the 1,000 NOTIFYs other clients send (none lost, none
# duplicated, each sender's order per channel kept); then 2 listeners UNLISTEN and 2 disconnect, and a
# second round of 200 reaches exactly the others. Prints one "OK ..." line and exits 0, or prints the
# failure and exits 1.
import asyncio
import sys
import threading
import time

import asyncpg
import psycopg

CHANNELS = [f"ch{i}" for i in range(5)]
LISTENERS = 20
SENDERS = 4
ROUND1 = 1000
ROUND2 = 200
DEADLINE = 40.0


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def channels_of(k):
    return [CHANNELS[k % 5], CHANNELS[(k + 1) % 5]]


class Listener:
    def __init__(self, k):
        self.k = k
        self.channels = channels_of(k)
        self.got = []  # (channel, payload)
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.unlisten = threading.Event()
        self.unlistened = threading.Event()
        self.error = None

    def add(self, channel, payload):
        with self.lock:
            self.got.append((channel, payload))

    def snapshot(self):
        with self.lock:
            return list(self.got)


def psycopg_listener(dsn, lst):
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # One LISTEN in a transaction of its own, the other outside: both subscribe once committed.
            with conn.transaction():
                conn.execute(f"LISTEN {lst.channels[0]}")
            conn.execute(f"LISTEN {lst.channels[1]}")
            # A LISTEN in a rolled-back transaction does not subscribe.
            try:
                with conn.transaction():
                    conn.execute("LISTEN never_subscribed")
                    raise RuntimeError("rollback")
            except RuntimeError:
                pass
            lst.ready.set()
            while not lst.stop.is_set():
                if lst.unlisten.is_set() and not lst.unlistened.is_set():
                    conn.execute("UNLISTEN *")
                    lst.unlistened.set()
                for n in conn.notifies(timeout=0.2):
                    lst.add(n.channel, n.payload)
    except Exception as e:  # noqa: BLE001
        lst.error = repr(e)
        lst.ready.set()


async def asyncpg_listener(dsn, lst):
    try:
        conn = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            cb = lambda c, pid, ch, payload: lst.add(ch, payload)  # noqa: E731
            for ch in lst.channels:
                await conn.add_listener(ch, cb)
            lst.ready.set()
            while not lst.stop.is_set():
                if lst.unlisten.is_set() and not lst.unlistened.is_set():
                    for ch in lst.channels:
                        await conn.remove_listener(ch, cb)
                    lst.unlistened.set()
                # A query now and then: notifications must arrive between answers, not inside them.
                await conn.fetchval("select count(*) from generate_series(1, 50)")
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
    except Exception as e:  # noqa: BLE001
        lst.error = repr(e)
        lst.ready.set()


def asyncpg_thread(dsn, lst):
    asyncio.run(asyncpg_listener(dsn, lst))


def send_round(dsn, first, count):
    """`count` NOTIFYs numbered from `first`, spread over SENDERS clients and the channels."""
    errors = []

    def sender(s):
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for i in range(first + s, first + count, SENDERS):
                    ch = CHANNELS[i % 5]
                    if i % 2:
                        conn.execute("select pg_notify(%s, %s)", (ch, f"{s}:{i}"))
                    else:
                        conn.execute(f"NOTIFY {ch}, '{s}:{i}'")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=sender, args=(s,)) for s in range(SENDERS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errors, f"senders failed: {errors}")


def expected(lst, first, count):
    return sorted((CHANNELS[i % 5], f"{(i - first) % SENDERS}:{i}") for i in range(first, first + count)
                  if CHANNELS[i % 5] in lst.channels)


def wait_for(lsts, want, what):
    end = time.time() + DEADLINE
    while time.time() < end:
        if all(len(l.snapshot()) >= want[l.k] for l in lsts):
            break
        time.sleep(0.1)
    time.sleep(0.5)  # any duplicate would come now


def verify(lst, got, want, what):
    check(lst.error is None, f"listener {lst.k}: {lst.error}")
    dup = len(got) - len(set(got))
    check(dup == 0, f"listener {lst.k} {what}: {dup} duplicates")
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    check(not missing, f"listener {lst.k} {what}: {len(missing)} lost, e.g. {sorted(missing)[:3]}")
    check(not extra, f"listener {lst.k} {what}: {len(extra)} not expected, e.g. {sorted(extra)[:3]}")
    # Each sender's NOTIFYs on one channel arrive in the order they were sent.
    last = {}
    for ch, payload in got:
        s, i = payload.split(":")
        key = (ch, s)
        check(last.get(key, -1) < int(i), f"listener {lst.k} {what}: {ch} from sender {s} out of order")
        last[key] = int(i)


def listening_backends(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        return conn.execute(
            "select count(*) from pg_stat_activity where backend_type = 'client backend' "
            "and query like '/* pgswift listening connection */%'").fetchone()[0]


def main():
    dsn, pg_dsn = sys.argv[1], sys.argv[2]
    lsts = [Listener(k) for k in range(LISTENERS)]
    threads = []
    for l in lsts:
        target = psycopg_listener if l.k < LISTENERS // 2 else asyncpg_thread
        t = threading.Thread(target=target, args=(dsn, l), daemon=True)
        t.start()
        threads.append(t)
    for l in lsts:
        check(l.ready.wait(30), f"listener {l.k} not ready")
        check(l.error is None, f"listener {l.k}: {l.error}")
    listening = listening_backends(pg_dsn)
    check(1 <= listening <= 2, f"{listening} listening server connections for 2 workers")

    t0 = time.time()
    send_round(dsn, 0, ROUND1)
    want = {l.k: len(expected(l, 0, ROUND1)) for l in lsts}
    wait_for(lsts, want, "round 1")
    round1 = 0
    for l in lsts:
        got = l.snapshot()
        verify(l, got, expected(l, 0, ROUND1), "round 1")
        round1 += len(got)
    t1 = time.time() - t0

    # Listener 0 (psycopg) and 10 (asyncpg) UNLISTEN; 1 and 11 disconnect.
    quiet = [lsts[0], lsts[10]]
    gone = [lsts[1], lsts[11]]
    for l in quiet:
        l.unlisten.set()
    for l in gone:
        l.stop.set()
    for l in quiet:
        check(l.unlistened.wait(20), f"listener {l.k} did not UNLISTEN")
    for l in gone:
        threads[l.k].join(20)
    base = {l.k: len(l.snapshot()) for l in lsts}
    send_round(dsn, ROUND1, ROUND2)
    active = [l for l in lsts if l not in quiet and l not in gone]
    want2 = {l.k: base[l.k] + len(expected(l, ROUND1, ROUND2)) for l in active}
    wait_for(active, want2, "round 2")
    round2 = 0
    for l in active:
        got = l.snapshot()[base[l.k]:]
        verify(l, got, expected(l, ROUND1, ROUND2), "round 2")
        round2 += len(got)
    for l in quiet:
        after = l.snapshot()[base[l.k]:]
        check(not after, f"listener {l.k} got {len(after)} notifications after UNLISTEN")
    listening2 = listening_backends(pg_dsn)
    check(1 <= listening2 <= 2, f"{listening2} listening server connections after round 2")
    for l in lsts:
        l.stop.set()
    for t in threads:
        t.join(20)
    print(f"OK listeners={LISTENERS} round1={round1} deliveries of {ROUND1} notifies in {t1:.1f}s, "
          f"round2={round2} deliveries to {len(active)} listeners, listening connections {listening}/{listening2}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL {e}")
        sys.exit(1)
