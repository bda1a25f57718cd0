#!/usr/bin/env bash
# The Debian package under a real systemd (issue 22): systemd as PID 1 in a systemd-nspawn container
# on a minimal Debian rootfs (debootstrap, cached in .build/systemd-rootfs), its own network
# namespace (--network-veth), a throwaway PostgreSQL on the host side of the veth pair. Installs the
# package and checks start (READY=1), reload, status, the watchdog, an apt upgrade under pgbench, and a
# draining stop. `make test-systemd` runs it; it prints SKIP with the exact reason (and exits 0) where
# the machine cannot boot systemd in a container.
#
# Env: DEB1, DEB2 (two packages, the second of a higher version; default: built with `make deb`),
# SYSTEMD_TEST_KEEP=1 leaves the container's copy and logs in .build/systemd-run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CACHE=$ROOT/.build/systemd-rootfs
RUN=$ROOT/.build/systemd-run
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
MACHINE=pgsd$$
NET=10.231.22
PASS=0
FAILED=0
NSPAWN_PID=
LEADER=
PG_STARTED=

log() { printf '%s test-systemd: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
skip() { log "SKIP: $*"; exit 0; }
ok() { PASS=$((PASS + 1)); log "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); log "FAIL: $*"; }

cleanup() {
    set +e
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        [ -n "$LEADER" ] || LEADER=$(ps -o pid= --ppid "$NSPAWN_PID" | tr -d ' ' | head -1)
        kill -TERM "$NSPAWN_PID"   # nspawn asks the container's systemd to power off
        for _ in $(seq 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null
    fi
    # A container whose nspawn was killed outlives it: killing its PID 1 ends its PID namespace.
    if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then kill -KILL "$LEADER"; fi
    ip link del "ve-$MACHINE" 2>/dev/null
    if [ -n "$PG_STARTED" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$RUN/pgdata" -m immediate stop >/dev/null 2>&1
    fi
    if [ "${SYSTEMD_TEST_KEEP:-}" != 1 ]; then rm -rf "$RUN"; fi
}
trap cleanup EXIT

# --- Can this machine do it at all? ---------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, systemd-nspawn); run as root as CI does"
for tool in systemd-nspawn debootstrap nsenter psql pgbench; do
    command -v "$tool" >/dev/null || skip "no $tool (scripts/install-deps.sh systemd installs it)"
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || skip "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"
id postgres >/dev/null 2>&1 || skip "no postgres user to run the throwaway PostgreSQL"

# --- The rootfs, made once ------------------------------------------------------------------------
if [ ! -e "$CACHE/.complete" ]; then
    log "debootstrap $SUITE minbase + systemd into $CACHE (once; about 90 s)"
    rm -rf "$CACHE"; mkdir -p "$CACHE"
    if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libsystemd0,libssl3,adduser \
            "$SUITE" "$CACHE/root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        skip "debootstrap --variant=minbase $SUITE failed: $(tail -3 "$CACHE/debootstrap.log" | tr '\n' ' ')"
    fi
    # No getty on a console nobody reads; no timers firing during the test.
    chroot "$CACHE/root" systemctl mask console-getty.service apt-daily.timer apt-daily-upgrade.timer \
        e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
    touch "$CACHE/.complete"
fi

# --- The packages -----------------------------------------------------------------------------------
if [ -z "${DEB1:-}" ]; then
    mkdir -p "$ROOT/.build/systemd-debs"
    log "make deb"
    make -C "$ROOT" deb JOBS="${JOBS:-2}" DEB_OUT="$ROOT/.build/systemd-debs" >"$ROOT/.build/systemd-debs/make.log" 2>&1 \
        || { log "make deb failed:"; tail -20 "$ROOT/.build/systemd-debs/make.log"; exit 1; }
    VERSION=$(sed -n 's/.*"pgswift-version=\([^"]*\)".*/\1/p' Sources/Shared/Util/Version.swift)
    DEB1=$ROOT/.build/systemd-debs/pgswift_${VERSION}-1_amd64.deb
    DEB2=$ROOT/.build/systemd-debs/pgswift_${VERSION}-1+systemdtest1_amd64.deb
    DEB_VERSION=${VERSION}-1+systemdtest1 Packaging/build-deb.sh "$ROOT/.build-deb/release" "$ROOT/.build/systemd-debs" \
        >>"$ROOT/.build/systemd-debs/make.log" 2>&1 || { log "build-deb.sh with DEB_VERSION failed"; exit 1; }
fi
[ -f "$DEB1" ] && [ -f "$DEB2" ] || { log "no packages: $DEB1 $DEB2"; exit 1; }
V2=$(dpkg-deb --field "$DEB2" Version)

# --- Boot -------------------------------------------------------------------------------------------
rm -rf "$RUN"; mkdir -p "$RUN/debs"
cp -a "$CACHE/root" "$RUN/root"
cp "$DEB1" "$RUN/debs/old.deb"; cp "$DEB2" "$RUN/debs/new.deb"
# --register=no: no systemd-machined on the host (none runs in CI's container) to register with.
log "booting $MACHINE"
systemd-nspawn -D "$RUN/root" --boot -M "$MACHINE" --register=no --keep-unit --network-veth \
    --bind-ro="$RUN/debs:/debs" >"$RUN/console.log" 2>&1 </dev/null &
NSPAWN_PID=$!
LEADER=
for _ in $(seq 120); do
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    LEADER=$(ps -o pid= --ppid "$NSPAWN_PID" | tr -d ' ' | head -1 || true)
    if [ -n "$LEADER" ] && [ "$(cat /proc/"$LEADER"/comm 2>/dev/null)" = systemd ]; then break; fi
    LEADER=; sleep 0.5
done
[ -n "$LEADER" ] || skip "systemd-nspawn -D <debootstrap $SUITE> --boot --register=no --network-veth did not start systemd: $(tr -d '\033' <"$RUN/console.log" | tail -5 | tr '\n' ' ')"
IN() { nsenter -t "$LEADER" -a -- "$@"; }
STATE=
for _ in $(seq 120); do
    STATE=$(IN systemctl is-system-running 2>/dev/null || true)
    case $STATE in running|degraded) break ;; esac
    sleep 0.5
done
case $STATE in running|degraded) ;; *) skip "systemd in the container never finished booting (is-system-running: $STATE): $(tail -5 "$RUN/console.log" | tr '\n' ' ')" ;; esac
[ "$STATE" = running ] || log "note: the container's systemd is $STATE: $(IN systemctl --failed --no-legend --plain | tr '\n' ';')"
ok "systemd booted as PID 1 in the container ($(IN systemctl --version | head -1))"

# Network: host side $NET.1, container $NET.2.
# (The host's ip in the container's network namespace: the rootfs has no iproute2.)
ip addr add "$NET.1/30" dev "ve-$MACHINE"; ip link set "ve-$MACHINE" up
INNET() { nsenter -t "$LEADER" -n -- "$@"; }
INNET ip addr add "$NET.2/30" dev host0; INNET ip link set host0 up; INNET ip link set lo up

# --- PostgreSQL on the host side --------------------------------------------------------------------
PGPORT=$((20000 + $$ % 20000))
mkdir -p "$RUN/pgdata"; chown postgres "$RUN/pgdata"; chmod 755 "$RUN"
runuser -u postgres -- "$PGBIN/initdb" -D "$RUN/pgdata" -A trust -U postgres >"$RUN/initdb.log" 2>&1
echo "host all all $NET.0/30 trust" >>"$RUN/pgdata/pg_hba.conf"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$RUN/pgdata" -l "$RUN/pgdata/pg.log" -w \
    -o "-c listen_addresses=127.0.0.1,$NET.1 -c port=$PGPORT -c unix_socket_directories=$RUN/pgdata -c max_connections=200" start >/dev/null
PG_STARTED=1
export PGHOST=127.0.0.1 PGPORT PGUSER=postgres PGCONNECT_TIMEOUT=5
psql -qX -d postgres -c "create role bench login" -c "create database bench owner bench" >/dev/null
pgbench -q -i -s 2 -U bench bench >/dev/null 2>&1

# --- Install: postinst starts the service with the packaged config ---------------------------------
IN env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /debs/old.deb >"$RUN/install1.log" 2>&1 \
    || { fail "apt-get install old.deb: $(tail -5 "$RUN/install1.log")"; exit 1; }
if [ "$(IN systemctl is-active pgswift)" = active ]; then ok "postinst started pgswift.service on first install"; else fail "pgswift.service not active after install: $(IN systemctl status pgswift --no-pager | tail -10)"; fi

# The shipped unit has a watchdog.
WD=$(IN systemctl show -P WatchdogUSec pgswift)
if grep -q '^WatchdogSec=' "$RUN/root/lib/systemd/system/pgswift.service" && [ "$WD" != 0 ] && [ "$WD" != infinity ]; then
    ok "the shipped unit has WatchdogSec= ($WD)"
else fail "no WatchdogSec= in the shipped unit (WatchdogUSec=$WD)"; fi

# Both units verify clean where they run (no man-db in minbase: --man=no).
VERIFY=$(IN sh -c 'cp /lib/systemd/system/pgswift@.service /tmp/pgswift@main.service &&
    systemd-analyze verify --man=no /lib/systemd/system/pgswift.service /tmp/pgswift@main.service 2>&1') || true
if [ -z "$VERIFY" ]; then ok "systemd-analyze verify: both units clean"; else fail "systemd-analyze verify: $VERIFY"; fi

# Our config: TCP on the container's address, PostgreSQL on the host's, trust, an admin user.
IN systemctl stop pgswift
INI=$RUN/root/etc/pgswift/pgswift.ini
sed -i -e "s/^listen_addr = 127.0.0.1$/listen_addr = $NET.2/" \
    -e "s/^auth_type = scram-sha-256$/auth_type = trust/" \
    -e "s/^;admin_users =$/admin_users = postgres/" \
    -e "s/^default_pool_size = 20$/default_pool_size = 20/" \
    -e "s/^\[databases\]$/[databases]\nbench = host=$NET.1 port=$PGPORT dbname=bench\npostgres = host=$NET.1 port=$PGPORT dbname=postgres/" "$INI"
grep -q "^listen_addr = $NET.2$" "$INI" && grep -q "^auth_type = trust$" "$INI" && grep -q "^admin_users = postgres$" "$INI" \
    || { fail "the packaged pgswift.ini changed: the test's edits did not apply"; exit 1; }
printf '"bench" "unused"\n"postgres" "unused"\n' >>"$RUN/root/etc/pgswift/userlist.txt"   # trust still needs the user listed
P="-h $NET.2 -p 6432"
# From here each check reports its own failure and the next one runs.
set +e

# --- 1. start returns after READY=1, and the port answers at once -----------------------------------
IN systemctl start pgswift
SHOW=$(IN systemctl show -p ActiveState -p SubState -p StatusText pgswift | tr '\n' ' ')
ANSWER=$(psql $P -U bench -d bench -AtXc 'select 40 + 2' 2>&1 || true)
if [[ $SHOW == *ActiveState=active* ]] && [ "$ANSWER" = 42 ]; then
    ok "systemctl start returned with the unit active (READY=1 received: $SHOW) and the port answered at once"
else fail "after systemctl start: $SHOW; select through 6432: $ANSWER"; fi

# --- 2. status shows pgswift's STATUS= --------------------------------------------------------------
STATUS_LINE=""
for _ in $(seq 20); do
    STATUS_LINE=$(IN systemctl status pgswift --no-pager 2>/dev/null | grep -m1 '^ *Status: ' || true)
    [[ $STATUS_LINE == *workers* ]] && break; sleep 0.5
done
if [[ $STATUS_LINE == *workers*clients*servers* ]]; then ok "systemctl status shows$STATUS_LINE"; else fail "no STATUS= line in systemctl status: $(IN systemctl status pgswift --no-pager | head -8)"; fi

# --- 3. reload applies a new pool size -------------------------------------------------------------
poolsize() { psql $P -U postgres -d pgbouncer -AtXc 'show config' 2>/dev/null | awk -F'|' '$1=="default_pool_size" {print $2}'; }
BEFORE=$(poolsize)
PID_BEFORE=$(IN systemctl show -P MainPID pgswift)
sed -i 's/^default_pool_size = 20$/default_pool_size = 7/' "$INI"
RELOAD=$(IN systemctl reload pgswift 2>&1); RELOAD_RC=$?
AFTER=""
for _ in $(seq 40); do AFTER=$(poolsize); [ "$AFTER" = 7 ] && break; sleep 0.25; done
PID_AFTER=$(IN systemctl show -P MainPID pgswift)
if [ "$RELOAD_RC" = 0 ] && [ "$BEFORE" = 20 ] && [ "$AFTER" = 7 ] && [ "$PID_BEFORE" = "$PID_AFTER" ]; then
    ok "systemctl reload: SHOW CONFIG default_pool_size 20 -> 7, same supervisor (PID $PID_AFTER)"
else fail "reload (rc $RELOAD_RC $RELOAD; $(IN journalctl -u pgswift -o cat | grep -i -m2 'reload\|kill' | tr '\n' ' ')): default_pool_size before=$BEFORE after=$AFTER, MainPID $PID_BEFORE -> $PID_AFTER"; fi

# --- 4. the watchdog restarts a stopped supervisor --------------------------------------------------
RESTARTS=$(IN systemctl show -P NRestarts pgswift)
MAIN=$(IN systemctl show -P MainPID pgswift)
# A query in flight on a worker of the supervisor about to hang: KillMode=process should let it finish.
psql $P -U bench -d bench -AtXc 'select pg_sleep(40), 5' >"$RUN/inflight.out" 2>&1 &
INFLIGHT=$!
for _ in $(seq 40); do
    [ "$(psql -AtXc "select count(*) from pg_stat_activity where query like 'select pg_sleep(40)%' and state = 'active'")" -gt 0 ] && break; sleep 0.25
done
IN sh -c "kill -STOP $MAIN"
log "supervisor $MAIN stopped with SIGSTOP; waiting for the watchdog ($WD)"
NEW=$MAIN
for _ in $(seq 360); do
    NEW=$(IN systemctl show -P MainPID pgswift); N=$(IN systemctl show -P NRestarts pgswift)
    if [ "$N" -gt "$RESTARTS" ] && [ "$NEW" != 0 ] && [ "$NEW" != "$MAIN" ] && [ "$(IN systemctl is-active pgswift)" = active ]; then break; fi
    sleep 0.5
done
RESULT=$(IN journalctl -u pgswift --no-pager -o cat | grep -m1 -i 'watchdog timeout' || true)
workers() { IN sh -c 'grep -lx pgswift-worker /proc/[0-9]*/comm 2>/dev/null | wc -l'; }
log "pgswift-worker processes in the container after the restart: $(workers) (KillMode=process: the old supervisor's workers drain and exit)"
ANSWER=$(psql $P -U bench -d bench -AtXc 'select 1' 2>&1 || true)
if [ "$NEW" != "$MAIN" ] && [ -n "$RESULT" ] && [ "$ANSWER" = 1 ]; then
    ok "watchdog: '$RESULT'; restarted (PID $MAIN -> $NEW, NRestarts $RESTARTS -> $N) and serving"
else fail "watchdog: MainPID $MAIN -> $NEW, NRestarts $RESTARTS -> ${N:-?}, journal: '${RESULT}', select: $ANSWER"; fi
INFLIGHT_RC=0; wait "$INFLIGHT" || INFLIGHT_RC=$?
LEFTOVER=$(IN journalctl -u pgswift --no-pager -o cat | grep -m1 'left-over process' || true)
if [ "$INFLIGHT_RC" = 0 ] && grep -q '|5$' "$RUN/inflight.out"; then
    ok "a query in flight on the hung supervisor's worker finished after the restart ($(cat "$RUN/inflight.out"); journal: '$LEFTOVER')"
else fail "the query in flight across the watchdog restart: rc=$INFLIGHT_RC '$(cat "$RUN/inflight.out")'"; fi

# --- 5. apt install of a newer package under pgbench: 0 failed transactions -------------------------
MAIN=$(IN systemctl show -P MainPID pgswift)
pgbench $P -U bench -c 8 -j 2 -T 30 -n bench >"$RUN/pgbench.out" 2>"$RUN/pgbench.err" &
BENCH=$!
for _ in $(seq 60); do
    [ "$(psql -AtXc "select count(*) from pg_stat_activity where usename = 'bench'")" -gt 0 ] && break; sleep 0.25
done
IN env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /debs/new.deb >"$RUN/install2.log" 2>&1 \
    || fail "apt-get install new.deb: $(tail -5 "$RUN/install2.log")"
BENCH_RC=0; wait "$BENCH" || BENCH_RC=$?
INSTALLED=$(IN dpkg-query -W -f='${Version}' pgswift)
FAILED_TX=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$RUN/pgbench.out")
DONE_TX=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$RUN/pgbench.out")
UPGRADED=$(grep -m1 'upgraded in place' "$RUN/install2.log" || true)
log "pgswift-worker processes after the upgrade: $(workers)"
if [ "$BENCH_RC" = 0 ] && [ "${FAILED_TX:-x}" = 0 ] && [ "${DONE_TX:-0}" -gt 0 ] && [ "$INSTALLED" = "$V2" ] && [ -n "$UPGRADED" ] \
    && [ "$(IN systemctl show -P MainPID pgswift)" = "$MAIN" ]; then
    ok "apt-get install $V2 under pgbench: $DONE_TX transactions, 0 failed; '$UPGRADED', same MainPID $MAIN"
else fail "upgrade: pgbench rc=$BENCH_RC failed=$FAILED_TX processed=$DONE_TX, installed $INSTALLED, postinst: '$UPGRADED', MainPID $MAIN -> $(IN systemctl show -P MainPID pgswift); $(tail -3 "$RUN/pgbench.err")"; fi

# --- 6. stop drains: a query in flight finishes, then the unit stops --------------------------------
psql $P -U bench -d bench -AtXc 'select pg_sleep(4), 7' >"$RUN/drain.out" 2>&1 &
CLIENT=$!
for _ in $(seq 40); do
    [ "$(psql -AtXc "select count(*) from pg_stat_activity where query like 'select pg_sleep(4)%' and state = 'active'")" -gt 0 ] && break; sleep 0.25
done
T0=$(date +%s.%N)
IN systemctl stop pgswift
T1=$(date +%s.%N)
CLIENT_RC=0; wait "$CLIENT" || CLIENT_RC=$?
LEFT=$(workers)
TOOK=$(awk "BEGIN {printf \"%.1f\", $T1 - $T0}")
if [ "$CLIENT_RC" = 0 ] && grep -q '|7$' "$RUN/drain.out" && [ "$(IN systemctl is-active pgswift)" = inactive ] \
    && [ "$(IN systemctl show -P Result pgswift)" = success ] && [ "$LEFT" = 0 ]; then
    ok "systemctl stop drained: the in-flight query finished ($(cat "$RUN/drain.out")), stop took ${TOOK}s, Result=success, no worker left"
else fail "stop: $LEFT pgswift-worker processes left, client rc=$CLIENT_RC '$(cat "$RUN/drain.out")', unit $(IN systemctl is-active pgswift) Result=$(IN systemctl show -P Result pgswift)"; fi

log "$PASS passed, $FAILED failed"
if [ "$FAILED" != 0 ]; then
    log "pgswift's journal:"; IN journalctl -u pgswift --no-pager -o short-monotonic | tail -40
    exit 1
fi
