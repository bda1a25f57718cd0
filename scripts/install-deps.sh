#!/usr/bin/env bash
# Installs the Debian packages pgswift needs that are missing; safe to run again and again.
#
# Usage: scripts/install-deps.sh [build] [test] [drivers] [bench] [profile] [deb] [cluster] [systemd]   (no argument: build + test)
#   build    toolchain libraries: libssl-dev, libsystemd-dev, pkg-config
#   test     PostgreSQL server (initdb/postgres/pg_ctl), psql, pgbench, python3 + venv, and drivers;
#            openssl (the TLS tests make their certificates with it), tmux (TopTests drive `pgswift top` in it),
#            python3-yaml (DashboardTests read the alert rules with Debian's python3), and the Go and
#            Java drivers DriverTests run: golang-go + golang-github-jackc-pgx-v4-dev (pgx v4),
#            default-jdk-headless + libpostgresql-jdbc-java (the PostgreSQL JDBC driver)
#   drivers  a Python venv (.build/pyenv, or $PGSWIFT_PYENV) with psycopg 3, asyncpg and
#            prometheus_client (the metrics test parses /metrics with it) from PyPI,
#            for the end-to-end driver tests (they find it there, or through $PGSWIFT_PYTHON)
#   bench    test + pgbouncer (the reference pooler), valgrind and strace (for make microbench)
#   profile  linux-perf (make profile, Debian)
#   deb      building and checking the Debian package: dpkg-dev, lintian, adduser, systemd
#            (systemd-analyze verify; nothing is started), binutils (strip)
#   cluster  the multi-host test (make test-cluster): haproxy (Debian's), iproute2 (ip netns, veth, bridge)
#   systemd  the package under a real systemd (make test-systemd): systemd-container (systemd-nspawn),
#            debootstrap, iproute2
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

want=()
add() { want+=("$@"); }
drivers=0

sets=("$@")
[ ${#sets[@]} -eq 0 ] && sets=(build test)
for s in "${sets[@]}"; do
    case "$s" in
        build) add libssl-dev libsystemd-dev pkg-config ;;
        # On Debian 12 pgbench ships in postgresql-15 (pulled in by `postgresql`); newer
        # releases moved it to postgresql-client-NN, which `postgresql-client` pulls in.
        test) add postgresql postgresql-client python3 python3-venv python3-pip python3-yaml openssl tmux \
                  golang-go golang-github-jackc-pgx-v4-dev default-jdk-headless libpostgresql-jdbc-java; drivers=1 ;;
        drivers) add python3 python3-venv python3-pip; drivers=1 ;;
        bench) add postgresql postgresql-client python3 pgbouncer valgrind strace openssl ;;
        # perf: Debian's linux-perf (Ubuntu ships it as linux-tools-$(uname -r), not installed here).
        profile) add linux-perf ;;
        deb) add dpkg-dev lintian adduser systemd binutils ;;
        cluster) add haproxy iproute2 ;;
        systemd) add systemd-container debootstrap iproute2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "install-deps.sh: unknown package set '$s' (build, test, drivers, bench, profile, deb, cluster, systemd)" >&2; exit 2 ;;
    esac
done

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${want[@]}"; do
    case " ${missing[*]-} " in *" $p "*) continue ;; esac
    is_installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps.sh: all packages present (${sets[*]})"
else
    echo "install-deps.sh: installing ${missing[*]}"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n env DEBIAN_FRONTEND=noninteractive)
        else
            echo "install-deps.sh: need root (or sudo) to install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null
fi

# The test tools live under /usr/lib/postgresql/<version>/bin on Debian; check they are there.
for s in "${sets[@]}"; do
    case "$s" in
        test|bench)
            bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
            for tool in initdb postgres pg_ctl pgbench psql; do
                if [ -z "$bindir" ] || [ ! -x "$bindir/$tool" ]; then
                    command -v "$tool" >/dev/null 2>&1 || {
                        echo "install-deps.sh: '$tool' not found after install" >&2; exit 1; }
                fi
            done
            ;;
    esac
done

# Python drivers for the end-to-end tests, in a venv of their own (never the system's site-packages).
if [ "$drivers" -eq 1 ]; then
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    pyenv=${PGSWIFT_PYENV:-$root/.build/pyenv}
    # Debian's interpreter (its python3-venv is installed above), not whatever python3 PATH finds first.
    base_python=/usr/bin/python3
    [ -x "$base_python" ] || base_python=$(command -v python3)
    check='import psycopg, asyncpg, prometheus_client; psycopg.pq.version()'
    if [ -x "$pyenv/bin/python" ] && "$pyenv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "install-deps.sh: python drivers present ($pyenv)"
    else
        echo "install-deps.sh: installing psycopg 3, asyncpg and prometheus_client into $pyenv"
        # A half-made venv (an interrupted run, a moved interpreter) is rebuilt from scratch.
        if [ -d "$pyenv" ] && ! "$pyenv/bin/python" -c 'import pip' >/dev/null 2>&1; then rm -rf "$pyenv"; fi
        [ -d "$pyenv" ] || "$base_python" -m venv "$pyenv"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$pyenv/bin/python" -m pip install -q --no-input \
            'psycopg[binary]>=3.1,<4' 'asyncpg>=0.27' 'prometheus_client>=0.16' </dev/null
        "$pyenv/bin/python" -c "$check" || {
            echo "install-deps.sh: psycopg/asyncpg/prometheus_client not importable from $pyenv after install" >&2; exit 1; }
    fi
fi
