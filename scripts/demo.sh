#!/usr/bin/env bash
# `make run`: a throwaway PostgreSQL, pgswift in front of it, then psql and a short pgbench through it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pgswift=${PGSWIFT_BIN:-$root/.build/release/pgswift}
[ -x "$pgswift" ] || { echo "demo: $pgswift not found (run 'make build' first)" >&2; exit 1; }

# PostgreSQL's server tools: $PG_BINDIR, else the newest Debian install, else pg_config / PATH.
bindir=${PG_BINDIR:-}
[ -n "$bindir" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$bindir" ] || bindir=$(pg_config --bindir 2>/dev/null || true)
[ -n "$bindir" ] || bindir=$(dirname "$(command -v initdb)")
for t in initdb postgres psql pgbench; do
    [ -x "$bindir/$t" ] || { echo "demo: $bindir/$t missing (run scripts/install-deps.sh test)" >&2; exit 1; }
done

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        port_is_free "$p" && { echo "$p"; return; }
    done
    echo "demo: no free port found" >&2; exit 1
}

tmp=$(mktemp -d /tmp/pgswift-demo.XXXXXX)
pg_pid=""
px_pid=""

# PostgreSQL refuses to run as root: then it runs as `postgres`, which must own the directory.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$tmp"
    if command -v setpriv >/dev/null 2>&1; then
        as_pg=(setpriv --reuid=postgres --regid=postgres --clear-groups --)
    else
        as_pg=(runuser -u postgres --)
    fi
fi

stop_pid() {  # pid signal: signal, wait up to 10 s, then SIGKILL
    local pid=$1 sig=$2
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$px_pid" TERM
    # The postmaster's own PID (the one we started may be a runuser wrapper).
    [ -f "$tmp/data/postmaster.pid" ] && pg_pid=$(head -n 1 "$tmp/data/postmaster.pid")
    stop_pid "$pg_pid" INT
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg_port=$(free_port)
password="demo-$RANDOM$RANDOM"

echo "== PostgreSQL: initdb into $tmp/data, port $pg_port"
"${as_pg[@]}" "$bindir/initdb" -D "$tmp/data" -U postgres -A trust --auth-host=scram-sha-256 \
    -E UTF8 --no-locale --no-sync >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$bindir/postgres" -D "$tmp/data" -k "$tmp" -h 127.0.0.1 -p "$pg_port" \
    -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    >"$tmp/postgres.log" 2>&1 &
pg_pid=$!

admin() { "$bindir/psql" -h "$tmp" -p "$pg_port" -U postgres -XAtq -v ON_ERROR_STOP=1 "$@"; }
for _ in $(seq 300); do
    admin -c 'select 1' >/dev/null 2>&1 && break
    kill -0 "$pg_pid" 2>/dev/null || { cat "$tmp/postgres.log" >&2; exit 1; }
    sleep 0.1
done
admin -c "create role demo login password '$password'" -c "create database demo owner demo"
echo "== pgbench -i -s 5"
"$bindir/pgbench" -i -s 5 -q -h "$tmp" -p "$pg_port" -U demo demo 2>&1 | tail -n 2

port=6432
port_is_free "$port" || port=$(free_port)
cat >"$tmp/userlist.txt" <<EOT
"demo" "$password"
EOT
cat >"$tmp/pgswift.ini" <<EOT
[databases]
demo = host=127.0.0.1 port=$pg_port dbname=demo

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $tmp
auth_type = scram-sha-256
auth_file = $tmp/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500

[pgswift]
workers = 2
EOT

echo "== pgswift on 127.0.0.1:$port (config $tmp/pgswift.ini, log $tmp/pgswift.log)"
"$pgswift" "$tmp/pgswift.ini" 2>"$tmp/pgswift.log" &
px_pid=$!

export PGPASSWORD=$password PGSSLMODE=disable PGGSSENCMODE=disable PGCONNECT_TIMEOUT=10
via() { "$bindir/psql" "host=127.0.0.1 port=$port dbname=demo user=demo" -X "$@"; }
ready=""
for _ in $(seq 300); do
    via -Atq -c 'select 1' >/dev/null 2>&1 && { ready=1; break; }
    kill -0 "$px_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "demo: pgswift did not answer; its log:" >&2
    cat "$tmp/pgswift.log" >&2
    exit 1
fi

echo "== psql -c 'select version()' through pgswift"
via -c 'select version()'

echo "== pgbench -S -c 50 -j 2 -T 10 through pgswift"
"$bindir/pgbench" -n -S -c 50 -j 2 -T 10 -h 127.0.0.1 -p "$port" -U demo demo

echo "== pgswift log (last lines)"
tail -n 5 "$tmp/pgswift.log"
