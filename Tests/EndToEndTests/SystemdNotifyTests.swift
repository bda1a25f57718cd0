// End to end: the test plays systemd (a NOTIFY_SOCKET datagram socket, WATCHDOG_USEC) and checks what
// pgswift tells it: READY=1 once the port answers, RELOADING=1/READY=1 around SIGHUP and UPGRADE,
// WATCHDOG=1 on time, STATUS= counts, STOPPING=1 on SIGTERM.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The receiving end of sd_notify: a bound Unix datagram socket; messages are collected as they come.
final class NotifyListener {
    let path: String
    private let fd: Int32
    private(set) var messages: [(at: Double, text: String)] = []

    init(directory: String) throws {
        path = directory + "/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw E2EError("socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw E2EError("bind \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    /// Reads whatever arrived (non-blocking) into `messages`.
    func poll() {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            messages.append((monotonicNow(), String(decoding: buf[0..<n], as: UTF8.self)))
        }
    }

    /// Index of the first message at or after `from` that satisfies `match`, waiting up to `timeout`.
    func waitFor(from: Int = 0, timeout: Double = 30, _ match: (String) -> Bool) -> Int? {
        var found: Int?
        _ = waitUntil(timeout: timeout, poll: 0.01) {
            poll()
            found = messages.indices.first { $0 >= from && match(messages[$0].text) }
            return found != nil
        }
        return found
    }

    static func has(_ text: String, _ line: String) -> Bool {
        text.split(separator: "\n").contains { $0 == line }
    }
}

final class SystemdNotifyTests: XCTestCase {
    func testNotifyProtocolAroundStartReloadUpgradeAndStop() throws {
        let pg = try PostgresServer.shared()
        let dir = try makeTempDirectory(prefix: "sd")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        if runningAsRoot { chmod(dir, 0o755) }
        let notify = try NotifyListener(directory: dir)
        var settings = PgswiftSettings(postgres: pg)
        settings.poolMode = "transaction"
        let watchdogUsec = 400_000
        let started = monotonicNow()
        let px = try Pgswift.start(settings, environment: ["NOTIFY_SOCKET": notify.path,
                                                          "WATCHDOG_USEC": String(watchdogUsec)])
        defer { px.stop() }

        // READY=1 comes, and at that moment the port answers a real query.
        let ready = try XCTUnwrap(notify.waitFor { NotifyListener.has($0, "READY=1") }, "no READY=1: \(notify.messages)")
        XCTAssertTrue(TestSocket.canConnect(port: px.port), "READY=1 sent but the port does not answer")
        let probe = try Psql.run(px.target(user: "u_trust", database: "testdb"), "select 1")
        XCTAssertEqual(probe.stdout.trimmed, "1", "\(probe)")
        XCTAssertFalse(notify.messages[..<ready].contains { NotifyListener.has($0.text, "READY=1") })
        XCTAssertFalse(px.logLines(containing: "all 2 workers ready").isEmpty, "READY=1 before both workers were ready:\n\(px.log())")
        print("READY=1 after \(String(format: "%.3f", notify.messages[ready].at - started)) s")

        // WATCHDOG=1 keeps coming, about every WATCHDOG_USEC / 2.
        let watchStart = notify.messages.count
        XCTAssertNotNil(notify.waitFor(from: watchStart, timeout: 10) { _ in
            notify.messages[watchStart...].filter { NotifyListener.has($0.text, "WATCHDOG=1") }.count >= 5
        }, "WATCHDOG=1 stopped: \(notify.messages.map(\.text))")
        // STATUS= with the live counts.
        XCTAssertNotNil(notify.waitFor(timeout: 10) { $0.hasPrefix("STATUS=") && $0.contains("workers") && $0.contains("clients") },
                        "\(notify.messages.map(\.text))")

        // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1.
        let beforeHUP = notify.messages.count
        px.signal(SIGHUP)
        let reloading = try XCTUnwrap(notify.waitFor(from: beforeHUP) { NotifyListener.has($0, "RELOADING=1") },
                                      "\(notify.messages[beforeHUP...].map(\.text))")
        let reloadText = notify.messages[reloading].text
        let usec = reloadText.split(separator: "\n").first { $0.hasPrefix("MONOTONIC_USEC=") }.flatMap { Int64($0.dropFirst(15)) }
        XCTAssertNotNil(usec, reloadText)
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let nowUsec = Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
        if let usec { XCTAssertTrue(usec <= nowUsec && nowUsec - usec < 30_000_000, "MONOTONIC_USEC \(usec), now \(nowUsec)") }
        XCTAssertNotNil(notify.waitFor(from: reloading + 1) { NotifyListener.has($0, "READY=1") }, "no READY=1 after the reload")

        // UPGRADE: RELOADING=1, then READY=1 once every worker has been replaced.
        let beforeUpgrade = notify.messages.count
        let oldWorkers = Set(px.workerPids())
        let cli = try runCommand([try PgswiftBinaries.supervisor(), "upgrade", "-c", px.configPath], timeout: 120)
        XCTAssertTrue(cli.succeeded, "\(cli)\n\(px.log().suffix(3000))")
        let upReloading = try XCTUnwrap(notify.waitFor(from: beforeUpgrade) { NotifyListener.has($0, "RELOADING=1") })
        XCTAssertNotNil(notify.waitFor(from: upReloading + 1) { NotifyListener.has($0, "READY=1") }, "no READY=1 after UPGRADE")
        XCTAssertTrue(waitUntil(timeout: 30) { Set(px.workerPids()).isDisjoint(with: oldWorkers) })

        // The watchdog goes on after the upgrade.
        let afterUpgrade = notify.messages.count
        XCTAssertNotNil(notify.waitFor(from: afterUpgrade, timeout: 5) { NotifyListener.has($0, "WATCHDOG=1") })

        // SIGTERM: STOPPING=1.
        let beforeTerm = notify.messages.count
        px.signal(SIGTERM)
        XCTAssertNotNil(notify.waitFor(from: beforeTerm) { NotifyListener.has($0, "STOPPING=1") },
                        "\(notify.messages[beforeTerm...].map(\.text))")
        XCTAssertEqual(px.waitForExit(timeout: 30), 0, px.log())
    }
}
