// End to end: syslog = 1 sends the supervisor's and every worker's log lines to the local syslog
// socket, under syslog_ident and syslog_facility. The test plays the syslog daemon: pgswift runs in a
// private mount namespace whose /dev is a fresh tmpfs (the usual device nodes bound back in) with
// /dev/log a link to a datagram socket the test reads. Nothing on the machine changes.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A Unix datagram socket standing in for /dev/log, read all the time by a thread as a syslog daemon
/// does: a socket nobody reads fills up after `net.unix.max_dgram_qlen` datagrams (10 here), and then
/// every syslog(3) call in pgswift blocks.
final class SyslogSink: @unchecked Sendable {
    let path: String
    let fd: Int32
    private let lock = NSLock()
    private var datagrams: [String] = []
    private var stopped = false

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw E2EError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw E2EError("bind \(path): \(String(cString: strerror(errno)))") }
        chmod(path, 0o666)
        Thread.detachNewThread { [self] in self.readLoop() }
    }

    private func readLoop() {
        var buf = [UInt8](repeating: 0, count: 8192)
        while !lock.withLock({ stopped }) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) == 1 else { continue }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                let text = String(decoding: buf[0..<n], as: UTF8.self)
                lock.withLock { datagrams.append(text) }
            }
        }
    }

    /// Everything received so far.
    var received: [String] { lock.withLock { datagrams } }

    func close() {
        lock.withLock { stopped = true }
        Thread.sleep(forTimeInterval: 0.2)  // the reader leaves its poll
        _ = Glibc.close(fd)
        unlink(path)
    }
}

/// One syslog datagram as glibc writes it: `<PRI>Mmm dd hh:mm:ss ident[pid]: message`.
struct SyslogRecord {
    var priority: Int
    var ident: String
    var pid: pid_t
    var message: String

    init?(_ text: String) {
        guard text.hasPrefix("<"), let close = text.firstIndex(of: ">"),
              let p = Int(text[text.index(after: text.startIndex)..<close]),
              let colon = text.range(of: "]: ") else { return nil }
        let head = text[..<colon.lowerBound]
        guard let open = head.lastIndex(of: "["), let pid = pid_t(head[head.index(after: open)...]),
              let space = head[..<open].lastIndex(of: " ") else { return nil }
        priority = p
        ident = String(head[head.index(after: space)..<open])
        self.pid = pid
        message = String(text[colon.upperBound...])
    }
}

final class SyslogTests: XCTestCase {
    /// syslog = 1, syslog_ident = pgswift-test, syslog_facility = local3 (19): the supervisor's lines
    /// and the workers' arrive with their own pids, LOG lines at priority 19 * 8 + 6 (info), a
    /// pooler error at 19 * 8 + 4 (warning).
    func testSupervisorAndWorkerLinesReachSyslogWithIdentAndFacility() throws {
        guard runningAsRoot else { throw XCTSkip("needs root (a private mount namespace with its own /dev)") }
        guard (try? runCommand(["unshare", "-m", "true"]))?.succeeded == true else { throw XCTSkip("unshare -m not permitted here") }
        let dir = try makeTempDirectory(prefix: "syslog")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sink = try SyslogSink(path: dir + "/log")
        defer { sink.close() }

        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.settings = [("syslog", "1"), ("syslog_ident", "pgswift-test"), ("syslog_facility", "local3"),
                      ("log_connections", "1")]
        s.commandPrefix = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                           "mkdir -p \(dir)/hostdev && mount --rbind /dev \(dir)/hostdev && "
                           + "mount -t tmpfs -o mode=0755 tmpfs /dev && for f in null zero full random urandom; do "
                           + "touch /dev/$f && mount --bind \(dir)/hostdev/$f /dev/$f || exit 1; done && "
                           + "ln -s /proc/self/fd /dev/fd && ln -s \(sink.path) /dev/log && exec \"$0\" \"$@\""]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        c.close()
        XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_trust", database: "no_such_db_syslog"))

        var records: [SyslogRecord] = []
        var raw: [String] = []
        let workers = Set(px.workerPids())
        XCTAssertEqual(workers.count, 2)
        func seen() -> (supervisor: Bool, login: Bool, warning: Bool) {
            (records.contains { $0.pid == px.supervisorPid && $0.message.hasPrefix("supervisor ") && $0.priority == 19 * 8 + 6 },
             records.contains { workers.contains($0.pid) && $0.message.contains("login attempt") && $0.priority == 19 * 8 + 6 },
             records.contains { workers.contains($0.pid) && $0.message.contains("pooler error")
                 && $0.message.contains("no_such_db_syslog") && $0.priority == 19 * 8 + 4 })
        }
        XCTAssertTrue(waitUntil(timeout: 20) {
            raw = sink.received
            records = raw.compactMap(SyslogRecord.init)
            let s = seen()
            return s.supervisor && s.login && s.warning
        }, "seen \(seen()) in:\n\(raw.suffix(40).joined(separator: "\n"))\nlog:\n\(px.log().suffix(2000))")
        XCTAssertEqual(records.count, raw.count, "every datagram in syslog's form: \(raw.prefix(5))")
        XCTAssertTrue(records.allSatisfy { $0.ident == "pgswift-test" }, "\(Set(records.map(\.ident)))")
        XCTAssertTrue(records.allSatisfy { $0.pid == px.supervisorPid || workers.contains($0.pid) })
        XCTAssertFalse(records.contains { $0.priority % 8 == 7 }, "no debug lines")
    }
}
