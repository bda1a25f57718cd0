// Where things are on this machine: temp dirs, PostgreSQL's tools, pgswift's binaries, free ports.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

var runningAsRoot: Bool { geteuid() == 0 }

/// A fresh private directory under /tmp, e.g. /tmp/pgswift-e2e-pg.Ab12Cd.
func makeTempDirectory(prefix: String) throws -> String {
    TestWatchdog.install()  // every end-to-end test makes one: the per-test deadline starts with the first
    var template = Array("/tmp/pgswift-e2e-\(prefix).XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw E2EError("mkdtemp failed: \(String(cString: strerror(errno)))")
    }
    return String(cString: made)
}

/// PostgreSQL refuses to run as root, so as root the tests run it as the `postgres` user.
enum PostgresUser {
    static let name = "postgres"

    static func ids() throws -> (uid: uid_t, gid: gid_t) {
        guard let pw = getpwnam(name) else {
            throw E2EError("running as root but there is no '\(name)' user (install postgresql)")
        }
        return (pw.pointee.pw_uid, pw.pointee.pw_gid)
    }

    /// Hands `path` to the postgres user when we are root (no-op otherwise).
    static func chownIfRoot(_ path: String) throws {
        guard runningAsRoot else { return }
        let (uid, gid) = try ids()
        guard chown(path, uid, gid) == 0 else {
            throw E2EError("chown \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// argv prefix that runs a command as postgres when we are root. setpriv execs in place, so the
    /// PID we get is the server's own; runuser (which forks) is the fallback.
    static func commandPrefix() -> [String] {
        guard runningAsRoot else { return [] }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") {
            return ["/usr/bin/setpriv", "--reuid=\(name)", "--regid=\(name)", "--clear-groups", "--"]
        }
        return ["runuser", "-u", name, "--"]
    }
}

/// PostgreSQL's binaries: $PG_BINDIR, else the newest /usr/lib/postgresql/<version>/bin, else
/// the directory of `initdb` on PATH.
enum PostgresTools {
    static func binDir() throws -> String {
        let fm = FileManager.default
        if let dir = ProcessInfo.processInfo.environment["PG_BINDIR"], !dir.isEmpty { return dir }
        let base = "/usr/lib/postgresql"
        let versions = ((try? fm.contentsOfDirectory(atPath: base)) ?? [])
            .compactMap { Int($0) }.sorted()
        for v in versions.reversed() where fm.isExecutableFile(atPath: "\(base)/\(v)/bin/initdb") {
            return "\(base)/\(v)/bin"
        }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            if fm.isExecutableFile(atPath: "\(dir)/initdb") { return String(dir) }
        }
        throw E2EError("PostgreSQL server tools not found: run scripts/install-deps.sh test (or set PG_BINDIR)")
    }

    static func path(_ tool: String) throws -> String {
        let p = try binDir() + "/" + tool
        guard FileManager.default.isExecutableFile(atPath: p) else { throw E2EError("\(p) not found") }
        return p
    }
}

/// Where `pgswift` and `pgswift-worker` are: $PGSWIFT_BIN_DIR, else beside the test bundle
/// (.build/<triple>/debug holds both the .xctest and the products).
enum PgswiftBinaries {
    static func directory() throws -> String {
        let fm = FileManager.default
        var candidates: [String] = []
        if let dir = ProcessInfo.processInfo.environment["PGSWIFT_BIN_DIR"], !dir.isEmpty {
            candidates.append(dir)
        }
        if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            var dir = (exe as NSString).deletingLastPathComponent
            candidates.append(dir)
            // The bundle may be a directory (…/X.xctest/…); walk up to the products folder.
            while dir.count > 1 {
                dir = (dir as NSString).deletingLastPathComponent
                if fm.isExecutableFile(atPath: dir + "/pgswift") { candidates.append(dir); break }
            }
        }
        for dir in candidates where fm.isExecutableFile(atPath: dir + "/pgswift") { return dir }
        throw E2EError("pgswift binary not found in \(candidates); build it (swift build) or set PGSWIFT_BIN_DIR")
    }

    static func supervisor() throws -> String { try directory() + "/pgswift" }
}

/// Hands out TCP ports that are free on 127.0.0.1 now, outside the ephemeral range (so an outgoing
/// connection cannot take one meanwhile), and never the same twice in this process.
final class FreePorts: @unchecked Sendable {
    static let shared = FreePorts()
    private let lock = NSLock()
    private var given: Set<Int> = []

    func next() throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        for _ in 0..<500 {
            let port = Int.random(in: 20000..<32000)
            if given.contains(port) || !Self.isBindable(port) { continue }
            given.insert(port)
            return port
        }
        throw E2EError("no free TCP port found on 127.0.0.1")
    }

    static func isBindable(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in.loopback(port: port)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return rc == 0
    }
}

func freePort() throws -> Int { try FreePorts.shared.next() }

extension sockaddr_in {
    static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return addr
    }
}

/// A background shell that cleans up after us if this test process dies without doing so
/// (a crash, a kill): it waits for our PID to vanish, then runs `cleanup`. Stopped on normal teardown.
final class Watchdog: @unchecked Sendable {
    private let child: ChildProcess

    init(cleanup: String) throws {
        let me = getpid()
        let script = """
            trap '' INT TERM HUP
            while kill -0 \(me) 2>/dev/null; do sleep 1; done
            \(cleanup)
            """
        child = try ChildProcess.spawn(["/bin/sh", "-c", script], stdoutPath: nil, stderrPath: nil)
    }

    func cancel() { child.terminate(SIGKILL, grace: 0) }
}
