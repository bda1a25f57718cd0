# Processes the benchmark starts (stopped by PID only) and what /proc says about their CPU and memory.
"""Process control and /proc accounting for pgswift's benchmark.

Every process is started through `Child` and stopped by its PID (and the
PIDs of its descendants, looked up right before signalling): never by name.
CPU figures come from /proc/PID/stat and include the children a process
already reaped (cutime/cstime), so a pooler's exited workers still count.
"""

import ctypes
import os
import pwd
import signal
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_START = time.monotonic()


def log(msg):
    """Progress goes to stderr with the elapsed time, so stdout stays the report."""
    sys.stderr.write(f"[{time.monotonic() - _START:7.1f}s] {msg}\n")
    sys.stderr.flush()


class StartError(Exception):
    """A process could not be started; the text is shown to the user as is."""


# ---------------------------------------------------------------------------
# /proc readings

def proc_stat(pid):
    """(comm, state, ppid, user ticks incl. reaped children, sys ticks incl. reaped children, starttime)
    of one process, or None when it is gone.  The command name may hold spaces and parentheses,
    so fields are counted from the last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    close = raw.rfind(")")
    if close < 0:
        return None
    comm = raw[raw.find("(") + 1:close]
    f = raw[close + 2:].split()
    try:
        utime, stime, cutime, cstime = int(f[11]), int(f[12]), int(f[13]), int(f[14])
        return comm, f[0], int(f[1]), utime + cutime, stime + cstime, int(f[19])
    except (IndexError, ValueError):
        return None


def snapshot():
    """{pid: proc_stat(pid)} for every process on the machine."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


def descendants(roots, snap=None):
    """The given PIDs that are alive plus all their live descendants."""
    snap = snapshot() if snap is None else snap
    kids = {}
    for pid, st in snap.items():
        kids.setdefault(st[2], []).append(pid)
    found, todo = set(), [r for r in roots if r in snap]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(kids.get(pid, ()))
    return found, snap


def tree_cpu(roots):
    """(user s, sys s, process count) of the process trees under `roots`.  A difference of two
    readings is the CPU the trees used in between, reaped children included."""
    pids, snap = descendants(roots)
    user = sum(snap[p][3] for p in pids)
    sys_ = sum(snap[p][4] for p in pids)
    return user / CLK_TCK, sys_ / CLK_TCK, len(pids)


def rss_bytes(pids):
    """Sum of resident set sizes (a page shared by two processes counts twice)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE_SIZE
        except (OSError, ValueError, IndexError):
            pass
    return total


def tree_rss(roots):
    return rss_bytes(descendants(roots)[0])


def pss_bytes(pid):
    """Proportional set size (shared pages split between the processes mapping them), or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_by_process(roots):
    """[(pid, command name, RSS MiB, PSS MiB)] of the trees under `roots`: shows how much of
    pgswift's memory is the supervisor and how much each worker, and how much is shared."""
    pids, snap = descendants(roots)
    out = []
    for pid in sorted(pids):
        pss = pss_bytes(pid)
        out.append((pid, snap[pid][0], round(rss_bytes([pid]) / 1048576, 1),
                    round(pss / 1048576, 1) if pss is not None else None))
    return out


def machine_jiffies():
    """Whole-machine CPU counters from /proc/stat's first line."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:9]]
    v += [0] * (8 - len(v))
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return {"total": sum(v), "idle": idle + iowait, "proc": user + nice + system,
            "irq": irq + softirq, "steal": steal}


def listening_inodes(port):
    """Inodes of TCP sockets in LISTEN state on `port` (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                found.add(cols[9])
    return found


def inode_owners(inodes, candidates=None):
    """PIDs (among `candidates`, default all) that hold one of the socket inodes."""
    wanted = {f"socket:[{i}]" for i in inodes}
    owners = set()
    pids = candidates if candidates is not None else [int(n) for n in os.listdir("/proc") if n.isdigit()]
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    owners.add(pid)
                    break
            except OSError:
                pass
    return owners


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# ---------------------------------------------------------------------------
# users and limits

def user_switch(user):
    """Popen keyword arguments that run a child as `user` (None: as we are)."""
    if not user:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def chown(path, user):
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def raise_open_files(wanted):
    """Raises RLIMIT_NOFILE (inherited by every child) to at least `wanted` when allowed.
    Returns the soft limit in effect."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted and os.geteuid() == 0:
        try:
            with open("/proc/sys/fs/nr_open") as fh:
                cap = int(fh.read())
        except (OSError, ValueError):
            cap = wanted
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, cap), min(wanted, cap)))
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (OSError, ValueError):
            pass
    if soft < hard or hard == resource.RLIM_INFINITY:
        target = hard if hard != resource.RLIM_INFINITY else max(wanted, soft)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def become_subreaper():
    """PR_SET_CHILD_SUBREAPER: orphaned grandchildren (workers of a pooler whose supervisor
    died) are re-parented to us rather than to init, so we can still find and stop them."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_adopted():
    """Reaps zombies re-parented to us that no Child object waits for."""
    me = os.getpid()
    known = {c.pid for c in Child.running}
    for pid, st in snapshot().items():
        if st[2] == me and st[1] == "Z" and pid not in known:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


# ---------------------------------------------------------------------------
# children

class Child:
    """A process we started.  `stop` signals its PID, waits, escalates to SIGKILL, then deals
    the same way with descendants that outlived it (recorded before the first signal)."""
    running = []

    def __init__(self, label, argv, log_path, user=None, env=None, cwd=None, stdin=None, stdout=None):
        self.label = label
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else None
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else (self._log or subprocess.DEVNULL),
                stderr=self._log or subprocess.DEVNULL, env=env, cwd=cwd,
                start_new_session=True, **user_switch(user))
        except OSError as exc:
            if self._log:
                self._log.close()
            raise StartError(f"cannot start {label} ({self.argv[0]}): {exc}") from None
        self.pid = self.popen.pid
        self.rusage = None
        Child.running.append(self)

    def alive(self):
        return self.popen.poll() is None

    def poll_rusage(self):
        """wait4(WNOHANG): None while it runs; its rusage once it ended (our way to get
        pgbench's own CPU time)."""
        if self.popen.returncode is not None:
            return self.rusage
        pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        self.rusage = ru
        return ru

    def stop(self, sig=signal.SIGTERM, grace=10.0, then=None):
        """Returns how the process ended, for the JSON.  `then`: a second, firmer signal sent
        after half the grace period (pgswift: a second SIGTERM means exit now)."""
        if self.popen.poll() is not None:
            how = f"had exited (status {self.popen.returncode})"
            kids = {}
        else:
            pids, snap = descendants([self.pid])
            kids = {p: snap[p][5] for p in pids if p != self.pid}
            how = signal.Signals(sig).name
            try:
                os.kill(self.pid, sig)
                if then is not None:
                    try:
                        self.popen.wait(grace / 2)
                    except subprocess.TimeoutExpired:
                        os.kill(self.pid, then)
                        how += f", {signal.Signals(then).name} after {grace / 2:g}s"
                        self.popen.wait(grace / 2)
                else:
                    self.popen.wait(grace)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(10)
                how += f", still running after {grace:g}s: SIGKILL"
        left = _survivors(kids)
        if left:
            how += f"; {len(left)} descendant(s) outlived it and were stopped"
            for s in (signal.SIGTERM, signal.SIGKILL):
                for pid in left:
                    try:
                        os.kill(pid, s)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 3
                while left and time.monotonic() < deadline:
                    time.sleep(0.05)
                    reap_adopted()
                    left = _survivors(kids)
                if not left:
                    break
        reap_adopted()
        if self._log:
            self._log.close()
        if self in Child.running:
            Child.running.remove(self)
        return how

    @classmethod
    def stop_all(cls):
        for c in reversed(list(cls.running)):
            try:
                sig = signal.SIGINT if c.label == "postgres" else signal.SIGTERM
                log(f"stopping {c.label} (pid {c.pid}): {c.stop(sig)}")
            except Exception as exc:   # keep cleaning up the others
                log(f"could not stop {c.label} (pid {c.pid}): {exc}")


def _survivors(kids):
    left = []
    for pid, start in kids.items():
        st = proc_stat(pid)
        if st is not None and st[5] == start and st[1] != "Z":
            left.append(pid)
    return left
