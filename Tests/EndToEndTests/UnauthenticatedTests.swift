// End to end: what a client that never authenticates can make pgswift keep (issue 14, finding 2).
// Startup packets with thousands of distinct unknown user names used to create a pool per name in
// the worker (and a stats row per pool in the supervisor) before any password was checked; with
// auth_query each name also cost PostgreSQL a lookup.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class UnauthenticatedTests: XCTestCase {
    private let passwords = PostgresServer.passwords

    /// VmRSS of the supervisor and all its workers, in KiB.
    private func treeRSSKiB(_ px: Pgswift) -> Int {
        ([px.supervisorPid] + px.workerPids()).reduce(0) { sum, pid in
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return sum }
            for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
                return sum + (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0)
            }
            return sum
        }
    }

    /// Sends a startup packet for `user`, waits for the first answer (an authentication request, or
    /// an error), then answers a password request with a wrong password (every other one) or just
    /// closes. Returns the first message's type.
    @discardableResult
    private func unauthenticatedLogin(_ px: Pgswift, user: String, database: String, wrongPassword: Bool) throws -> Character {
        let c = WireClient(socket: try TestSocket(port: px.port, timeout: 30), timeout: 30)
        defer { c.socket.close() }
        try c.socket.send(WireEncode.startup(parameters: [("user", user), ("database", database)]))
        guard let m = try c.readMessage() else { throw E2EError("\(user): closed before any answer") }
        if m.typeChar == "R" && wrongPassword && m.body.count >= 4 && m.body[3] == 5 {
            try c.socket.send(WireEncode.password("md5" + String(repeating: "0", count: 32)))
            let end = try c.readMessage()
            XCTAssertEqual(end?.typeChar, "E", "\(user): a wrong password was not refused")
        }
        return m.typeChar
    }

    /// The admin console's SHOW POOLS rows as (database, user), through psql (it answers md5 and SCRAM).
    private func poolKeys(_ px: Pgswift) throws -> [(String, String)] {
        let r = try Psql.run(px.target(user: "u_trust", database: "pgbouncer", password: passwords["u_trust"]),
                             "SHOW POOLS")
        guard r.succeeded else { throw E2EError("SHOW POOLS: \(r)") }
        return r.stdout.split(separator: "\n").map { line in
            let f = line.split(separator: "|", omittingEmptySubsequences: false)
            return (f.count > 0 ? String(f[0]) : "", f.count > 1 ? String(f[1]) : "")
        }
    }

    /// Many distinct unknown names: measured growth of the whole process tree (supervisor + workers)
    /// after a warm-up, and the pools that exist afterwards. Returns the seconds the flood took.
    private func flood(_ px: Pgswift, database: String, prefix: String, count: Int,
                       file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        for i in 0..<300 {
            try unauthenticatedLogin(px, user: "\(prefix)warm\(i)", database: database, wrongPassword: i % 2 == 0)
        }
        let before = treeRSSKiB(px)
        let start = Date()
        for i in 0..<count {
            let first = try unauthenticatedLogin(px, user: "\(prefix)\(i)", database: database, wrongPassword: i % 2 == 0)
            XCTAssertEqual(first, "R", "\(prefix)\(i): the first answer is not an authentication request",
                           file: file, line: line)
        }
        let took = Date().timeIntervalSince(start)
        let after = treeRSSKiB(px)
        print("UnauthenticatedTests: \(count) unknown names in \(String(format: "%.1f", took)) s; "
              + "process tree RSS \(before) KiB -> \(after) KiB")
        XCTAssertLessThan(after - before, 20 * 1024,
                          "\(count) unauthenticated names grew the process tree from \(before) KiB to \(after) KiB",
                          file: file, line: line)
        let pools = try poolKeys(px)
        let leaked = pools.filter { $0.1.hasPrefix(prefix) }
        XCTAssertTrue(leaked.isEmpty, "pools created for unauthenticated names: \(leaked.prefix(5)) (\(leaked.count))",
                      file: file, line: line)
        return took
    }

    /// auth_file only, md5: 3,000 unknown names get an MD5 request, then fail or hang up; nothing stays.
    func testUnknownNamesCreateNoPoolAndKeepNoMemory() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.authType = "md5"
        s.settings = [("admin_users", "u_trust")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        _ = try flood(px, database: "testdb", prefix: "nobody_", count: 3_000)
        // A real user still logs in and gets its pool.
        let r = try Psql.run(px.target(user: "u_md5", database: "testdb", password: passwords["u_md5"]), "select 1")
        XCTAssertTrue(r.succeeded, "\(r)")
        XCTAssertTrue(try poolKeys(px).contains { $0.0 == "testdb" && $0.1 == "u_md5" })
    }

    /// The same with auth_query: names missing from auth_file are looked up on PostgreSQL at most
    /// `AuthQueryState.ratePerSecond` a second per worker (after a burst of `burst`); the rest are
    /// treated as unknown without asking.
    func testUnknownNamesWithAuthQueryAreRateLimited() throws {
        let pg = try PostgresServer.shared()
        try pg.adminQuery("""
            do $$ begin
              if not exists (select from pg_roles where rolname = 'aq_auth') then
                create role aq_auth login superuser password 'aq-auth-pw';
              end if;
            end $$
            """)
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.authType = "md5"
        s.databases = [("aqdb", pg.connectionString(dbname: "testdb") + " auth_user=aq_auth"),
                       ("testdb", pg.connectionString(dbname: "testdb"))]
        s.users = [("aq_auth", "aq-auth-pw"), ("u_trust", passwords["u_trust"]!)]
        s.settings = [("admin_users", "u_trust"), ("verbose", "1")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let took = try flood(px, database: "aqdb", prefix: "aqghost_", count: 3_000)
        // Warm-up (300) and flood: at most the bucket's burst plus its rate over the whole run, per worker.
        let lookups = px.logLines(containing: "running auth_query for user \"aqghost_").count
        let limited = px.logLines(containing: "lookups per second of unknown names; treated as unknown").count
        let bound = 2 * (20 + Int((took + 30) * 10))
        print("UnauthenticatedTests: \(lookups) auth_query lookups, \(limited) refused by the rate limit (bound \(bound))")
        XCTAssertLessThanOrEqual(lookups, bound)
        XCTAssertGreaterThan(limited, 0, "3,300 names in \(took) s never hit the rate limit")
        // A name auth_query knows still logs in (u_md5 exists on the server; it is not in auth_file).
        XCTAssertTrue(waitUntil(timeout: 10) {
            (try? Psql.run(px.target(user: "u_md5", database: "aqdb", password: self.passwords["u_md5"]), "select 1"))?.succeeded
                ?? false
        }, px.log().suffix(3000).description)
    }

    /// A password message larger than the input buffer (40 kB), then a half-close: refused at once
    /// with 08P01, not held until client_login_timeout (found by the fuzzer).
    func testOversizedPasswordMessageIsRefusedAtOnce() throws {
        let pg = try PostgresServer.shared()
        var settings = PgswiftSettings(postgres: pg)
        settings.authType = "md5"
        settings.settings = [("client_login_timeout", "120")]
        let px = try Pgswift.start(settings)
        defer { px.stop() }
        let c = WireClient(socket: try TestSocket(port: px.port, timeout: 30), timeout: 30)
        defer { c.socket.close() }
        try c.socket.send(WireEncode.startup(parameters: [("user", "u_md5"), ("database", "testdb")]))
        XCTAssertEqual(try c.readMessage()?.typeChar, "R")
        let started = monotonicNow()
        try c.socket.send(WireEncode.message("p", [UInt8](repeating: UInt8(ascii: "a"), count: 40_000)))
        c.socket.shutdownWrite()
        let (data, closed) = c.socket.readUntilClosed(timeout: 30)
        let took = monotonicNow() - started
        XCTAssertTrue(closed, "still open after 30 s; log:\n\(px.log().suffix(2000))")
        XCTAssertLessThan(took, 10, "held for \(took) s")
        XCTAssertEqual(data.first, UInt8(ascii: "E"), "answer: \(data.prefix(40))")
        XCTAssertTrue(String(decoding: data, as: UTF8.self).contains("08P01"), String(decoding: data, as: UTF8.self))
        XCTAssertTrue(px.isRunning)
    }
}
