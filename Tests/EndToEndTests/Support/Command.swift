// Spawning and reaping child processes for the end-to-end tests (posix_spawn, output to files).
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A failure of the test harness itself (not of pgswift), with a reason a person can read.
struct E2EError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// What a finished command left behind.
struct CommandResult: CustomStringConvertible {
    /// Exit code, or 128 + signal number when the process was killed by a signal; -1 on timeout.
    let status: Int32
    let stdout: String
    let stderr: String
    let timedOut: Bool

    var succeeded: Bool { status == 0 && !timedOut }
    var description: String {
        "status \(status)\(timedOut ? " (timed out)" : "")\nstdout: \(stdout)\nstderr: \(stderr)"
    }
}

/// Seconds on a clock that never jumps, for deadlines and elapsed times.
func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func sleepSeconds(_ seconds: Double) {
    guard seconds > 0 else { return }
    usleep(UInt32(min(seconds, 4000) * 1e6))
}

/// The environment children get: ours without libpq's variables (a stray PGHOST or PGUSER
/// would silently change what a test talks to), plus the caller's additions.
func childEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment.filter { key, _ in
        !key.hasPrefix("PG") || key.hasPrefix("PGSWIFT")
    }
    env["LC_ALL"] = "C"
    env["PGPASSFILE"] = "/nonexistent/pgswift-e2e-pgpass"  // no ~/.pgpass interference
    env["PGSSLMODE"] = "disable"
    env["PGGSSENCMODE"] = "disable"
    for (k, v) in extra { env[k] = v }
    return env
}

/// A process we started: spawned with stdin from /dev/null and stdout/stderr going to files,
/// so nothing can block on a full pipe and no reader thread is needed.
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    let argv: [String]
    let stdoutPath: String?
    let stderrPath: String?
    private let lock = NSLock()
    private var status: Int32?

    private init(pid: pid_t, argv: [String], stdoutPath: String?, stderrPath: String?) {
        self.pid = pid
        self.argv = argv
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
    }

    /// Starts `argv` (looked up in PATH when it has no slash). A nil path sends that stream to /dev/null.
    static func spawn(_ argv: [String], environment: [String: String] = childEnvironment(),
                      stdoutPath: String?, stderrPath: String?, appendOutput: Bool = false) throws -> ChildProcess {
        let mode = O_WRONLY | O_CREAT | (appendOutput ? O_APPEND : O_TRUNC)
        precondition(!argv.isEmpty)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath ?? "/dev/null", mode, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath ?? "/dev/null", mode, 0o644)

        // Children start with default dispositions and an empty mask whatever the test runner did.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attr, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] {
            sigaddset(&defaults, sig)
        }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let cArgv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        let cEnv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArgv.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attr, cArgv, cEnv)
        guard rc == 0 else {
            throw E2EError("cannot start \(argv[0]): \(String(cString: strerror(rc)))")
        }
        return ChildProcess(pid: pid, argv: argv, stdoutPath: stdoutPath, stderrPath: stderrPath)
    }

    /// The exit status if the process has ended (reaping it), nil while it runs.
    func poll() -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let status { return status }
        var raw: Int32 = 0
        let rc = waitpid(pid, &raw, WNOHANG)
        if rc == pid {
            status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            return status
        }
        if rc < 0 && errno == ECHILD {
            status = -1  // reaped elsewhere; treat as gone
            return status
        }
        return nil
    }

    var isRunning: Bool { poll() == nil }

    /// Waits up to `timeout` seconds; nil if it is still running then.
    @discardableResult
    func wait(timeout: Double) -> Int32? {
        let deadline = monotonicNow() + timeout
        while true {
            if let s = poll() { return s }
            if monotonicNow() >= deadline { return nil }
            sleepSeconds(0.005)
        }
    }

    func signal(_ sig: Int32) {
        if poll() == nil { _ = kill(pid, sig) }
    }

    /// `first` signal, then SIGKILL if it is still there after `grace` seconds. Returns the status.
    @discardableResult
    func terminate(_ first: Int32 = SIGTERM, grace: Double = 10) -> Int32 {
        signal(first)
        if let s = wait(timeout: grace) { return s }
        signal(SIGKILL)
        return wait(timeout: 30) ?? -1
    }

    func stdoutText() -> String { stdoutPath.map(readTextFile) ?? "" }
    func stderrText() -> String { stderrPath.map(readTextFile) ?? "" }
}

/// The whole file as text ("" if it cannot be read). Reads to EOF with read(2): Foundation stops
/// after one page on /proc files, which report a size of 0.
func readTextFile(_ path: String) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
            bytes += chunk[0..<n]
        } else if n < 0 && errno == EINTR {
            continue
        } else {
            break
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Runs a command to completion (killing it after `timeout` seconds) and returns its output.
func runCommand(_ argv: [String], environment: [String: String] = childEnvironment(),
                timeout: Double = 60) throws -> CommandResult {
    let dir = try makeTempDirectory(prefix: "cmd")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let child = try ChildProcess.spawn(argv, environment: environment,
                                       stdoutPath: dir + "/out", stderrPath: dir + "/err")
    var status = child.wait(timeout: timeout)
    let timedOut = status == nil
    if timedOut { status = child.terminate(SIGKILL, grace: 0) }
    return CommandResult(status: timedOut ? -1 : status!, stdout: child.stdoutText(),
                         stderr: child.stderrText(), timedOut: timedOut)
}

/// Polls `condition` every `poll` seconds until it holds (true) or `timeout` seconds pass (false).
@discardableResult
func waitUntil(timeout: Double, poll: Double = 0.05, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicNow() + timeout
    while true {
        if try condition() { return true }
        if monotonicNow() >= deadline { return false }
        sleepSeconds(poll)
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
