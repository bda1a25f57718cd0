// End to end: `logfile` (Shared/Util/Log.swift): the supervisor's and every worker's lines are appended to
// it, and a reload reopens it, so log rotation needs only a SIGHUP or RELOAD, as with PgBouncer.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class LogFileTests: XCTestCase {
    /// Lines of the supervisor and of each worker go to the logfile (after what it already held) as
    /// well as to stderr. Moved away and followed by SIGHUP, the file is created again and the
    /// supervisor and both workers write to the new one: each worker's "configuration reloaded", a new
    /// client's "login attempt", and the supervisor's line for the next RELOAD land there, and nothing
    /// more reaches the moved file once the reload is done. The same with RELOAD from the admin console.
    func testLinesOfEveryProcessAreAppendedAndTheFileIsReopenedOnReload() throws {
        let pg = try PostgresServer.shared()
        let dir = try makeTempDirectory(prefix: "logfile")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/pgswift.log"
        try "a line from an earlier run\n".write(toFile: path, atomically: false, encoding: .utf8)
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.settings = [("logfile", path), ("admin_users", "u_trust")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let sup = "[\(px.supervisorPid)] supervisor LOG"
        func lines(_ file: String, _ fragments: String...) -> [String] {
            readTextFile(file).split(separator: "\n").map(String.init).filter { l in fragments.allSatisfy(l.contains) }
        }

        XCTAssertTrue(readTextFile(path).hasPrefix("a line from an earlier run\n"), "not appended:\n\(readTextFile(path))")
        XCTAssertEqual(lines(path, sup, "starting: config").count, 1, readTextFile(path))
        for w in 0..<2 {
            XCTAssertTrue(waitUntil(timeout: 10) { !lines(path, "w\(w) LOG worker \(w) ready").isEmpty },
                          "worker \(w)'s lines:\n\(readTextFile(path))")
        }
        XCTAssertTrue(px.log().contains("starting: config"), "stderr lost the lines:\n\(px.log())")

        for (round, how) in ["SIGHUP", "RELOAD"].enumerated() {
            let moved = path + ".\(round + 1)"
            XCTAssertEqual(rename(path, moved), 0)
            if how == "SIGHUP" {
                px.signal(SIGHUP)
            } else {
                let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
                defer { admin.close() }
                _ = try admin.query("RELOAD")
            }
            for w in 0..<2 {
                XCTAssertTrue(waitUntil(timeout: 20) { !lines(path, "w\(w) LOG configuration reloaded").isEmpty },
                              "\(how): worker \(w) does not write to the new file\nnew:\n\(readTextFile(path))\nmoved:\n\(readTextFile(moved))")
            }
            XCTAssertEqual(lines(moved, sup, "\(how): reloading").count, 1, "logged before the reopen:\n\(readTextFile(moved))")
            let movedAfterReload = readTextFile(moved)

            let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
            XCTAssertEqual(try c.query("select \(round)"), [[String(round)]])
            let port = c.socket.localPort
            c.close()
            XCTAssertTrue(waitUntil(timeout: 10) { !lines(path, "@127.0.0.1:\(port) login attempt: db=testdb user=u_trust").isEmpty },
                          "\(how): the client's login attempt is not in the new file:\n\(readTextFile(path))")
            XCTAssertEqual(readTextFile(moved), movedAfterReload, "\(how): lines still reach the moved file")
        }
        // The supervisor's line of the RELOAD (written before that reload's reopen) is in the file it
        // opened at the SIGHUP, now moved to .2.
        XCTAssertEqual(lines(path + ".2", sup, "RELOAD: reloading").count, 1, readTextFile(path + ".2"))
        XCTAssertEqual(lines(path + ".1", sup, "RELOAD: reloading").count, 0)
    }
}
