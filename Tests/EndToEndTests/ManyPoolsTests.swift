// End to end: pools are freed after pool_idle_timeout (a `*` database's after autodb_idle_timeout), and
// the stats path copes with many pools (SHOW POOLS and /metrics answer, the supervisor's memory stays
// bounded).
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class ManyPoolsTests: XCTestCase {
    private func admin(_ px: Pgswift) throws -> WireClient {
        try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
    }

    /// A pool used, left, freed after pool_idle_timeout (gone from SHOW POOLS and /metrics, its
    /// quota forgotten by the supervisor), then used again as a fresh pool; meanwhile another pool
    /// takes the freed record (one worker: the index is reused) and shows only its own figures.
    func testIdlePoolIsFreedAndComesBackFresh() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.verbose = true
        s.settings = [("admin_users", "u_trust"), ("pool_idle_timeout", "1"), ("server_idle_timeout", "1")]
        let metricsPort = try freePort()
        s.pgswiftSettings = [("metrics_listen", "127.0.0.1:\(metricsPort)")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let adm = try admin(px)
        defer { adm.close() }
        func pools() throws -> [String] {
            let a = try adm.show("SHOW POOLS")
            return zip(a.column("database"), a.column("user")).map { "\($0.0 ?? "")/\($0.1 ?? "")" }
        }
        func queryCount(_ db: String, _ user: String) throws -> Double? {
            let text = try metricsBody(port: metricsPort)
            return sample(text, "pgswift_query_duration_seconds_count", labels: "database=\"\(db)\",user=\"\(user)\"")
        }

        // Pool A: bench/u_md5, three queries, then left.
        let a = try WireClient.connect(port: px.port, user: "u_md5", database: "bench")
        for _ in 0..<3 { _ = try a.query("select 1") }
        XCTAssertTrue(try pools().contains("bench/u_md5"))
        XCTAssertTrue(waitUntil(timeout: 10) { (try? queryCount("bench", "u_md5")) == 3 },
                      "metrics: \(String(describing: try? queryCount("bench", "u_md5")))")
        a.close()
        // Its server closes after server_idle_timeout, then the empty pool goes after pool_idle_timeout.
        XCTAssertTrue(waitUntil(timeout: 20, poll: 0.2) { !((try? pools()) ?? ["?"]).contains("bench/u_md5") },
                      "still listed: \((try? pools()) ?? [])\n\(px.log().suffix(3000))")
        XCTAssertFalse(px.logLines(containing: "cleaning up idle pool for user u_md5 on db bench").isEmpty, String(px.log().suffix(3000)))
        XCTAssertTrue(waitUntil(timeout: 10) { !px.logLines(containing: "pool bench/u_md5 forgotten").isEmpty },
                      "the supervisor did not forget the pool's quota\n\(px.log().suffix(3000))")
        // The pool's series go (a query pattern's, labelled with its queryid, stay: query statistics
        // outlive the pool, as pg_stat_statements outlives a session).
        func poolSeries() -> [Substring] {
            ((try? metricsBody(port: metricsPort)) ?? "user=\"u_md5\"").split(separator: "\n")
                .filter { $0.contains("user=\"u_md5\"") && !$0.contains("queryid=") }
        }
        XCTAssertTrue(waitUntil(timeout: 5) { poolSeries().isEmpty }, "the freed pool is still in /metrics: \(poolSeries())")

        // Pool B: testdb/u_password takes the freed record; only its own two queries show.
        let b = try WireClient.connect(port: px.port, user: "u_password", database: "testdb")
        defer { b.close() }
        for _ in 0..<2 { _ = try b.query("select 1") }
        XCTAssertTrue(waitUntil(timeout: 10) { (try? queryCount("testdb", "u_password")) == 2 },
                      "metrics: \(String(describing: try? queryCount("testdb", "u_password")))")
        let shown = try adm.show("SHOW POOLS")
        XCTAssertEqual(shown.sum("cl_active", where: "user", is: "u_password"), 1, "\(shown.rows)")
        XCTAssertEqual(shown.column("user").filter { $0 == "u_md5" }.count, 0)

        // Pool A again: a fresh pool that works, with only its new query counted.
        let a2 = try WireClient.connect(port: px.port, user: "u_md5", database: "bench")
        defer { a2.close() }
        XCTAssertEqual(try a2.query("select 41 + 1"), [["42"]])
        XCTAssertTrue(waitUntil(timeout: 10) { (try? queryCount("bench", "u_md5")) == 1 },
                      "metrics: \(String(describing: try? queryCount("bench", "u_md5")))")
        XCTAssertEqual(try queryCount("testdb", "u_password"), 2)
        XCTAssertTrue(try pools().contains("bench/u_md5"))
        XCTAssertTrue(px.isRunning)
    }

    /// autodb_idle_timeout: the pool of a database made from the `*` entry is freed once it has held
    /// nothing that long (its server went after server_idle_timeout), while the pool of a database
    /// named in [databases] stays (pool_idle_timeout, an hour by default); used again, the automatic
    /// database gets a new pool that works. PgBouncer's `registered new auto-database: <name>` is logged
    /// when `*` first serves a name, and again once its pool was freed; SHOW DATABASES lists the name
    /// while it has a pool.
    func testAutoDatabasePoolIsFreedAfterAutodbIdleTimeout() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.databases.append(("*", pg.connectionString(dbname: "testdb")))
        s.settings = [("admin_users", "u_trust"), ("autodb_idle_timeout", "2"), ("server_idle_timeout", "1")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let adm = try admin(px)
        defer { adm.close() }
        func pools() throws -> [String] {
            let a = try adm.show("SHOW POOLS")
            return zip(a.column("database"), a.column("user")).map { "\($0.0 ?? "")/\($0.1 ?? "")" }
        }
        for db in ["auto_17", "testdb"] {
            let c = try WireClient.connect(port: px.port, user: "u_md5", database: db)
            XCTAssertEqual(try c.query("select 1"), [["1"]])
            c.close()
        }
        func databases() throws -> [String] { try adm.show("SHOW DATABASES").column("name").compactMap { $0 } }
        XCTAssertTrue(try pools().contains("auto_17/u_md5"), "\((try? pools()) ?? [])")
        // SHOW DATABASES lists it too, as PgBouncer lists its auto-databases, and never `*` itself.
        XCTAssertTrue(try databases().contains("auto_17"), "\((try? databases()) ?? [])")
        XCTAssertFalse(try databases().contains("*"))
        XCTAssertEqual(px.logLines(containing: "registered new auto-database: auto_17").count, 1, px.log())
        XCTAssertEqual(px.logLines(containing: "registered new auto-database: testdb"), [])
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.2) { !((try? pools()) ?? ["?"]).contains("auto_17/u_md5") },
                      "still listed: \((try? pools()) ?? [])\n\(px.log().suffix(3000))")
        XCTAssertEqual(px.logLines(containing: "cleaning up idle pool for user u_md5 on db auto_17").count, 1, px.log())
        XCTAssertTrue(waitUntil(timeout: 10, poll: 0.2) { !((try? databases()) ?? ["auto_17"]).contains("auto_17") },
                      "freed, yet listed: \((try? databases()) ?? [])")
        XCTAssertTrue(try pools().contains("testdb/u_md5"), "the named database's pool was freed: \((try? pools()) ?? [])")
        XCTAssertEqual(px.logLines(containing: "cleaning up idle pool for user u_md5 on db testdb"), [])

        let again = try WireClient.connect(port: px.port, user: "u_md5", database: "auto_17")
        defer { again.close() }
        XCTAssertEqual(try again.query("select 2"), [["2"]])
        XCTAssertTrue(try pools().contains("auto_17/u_md5"))
        XCTAssertEqual(px.logLines(containing: "registered new auto-database: auto_17").count, 2, px.log())
    }

    /// Many pools (default 10,000; PGSWIFT_MANY_POOLS=20000 for the acceptance figure): each made by one
    /// authenticated (trust) client of a database whose server does not answer, so no PostgreSQL
    /// session is needed per pool. SHOW POOLS lists them all, SHOW STATS / SHOW LISTS / /metrics answer,
    /// and the supervisor's RSS is printed (bounds are generous: the machine is shared).
    func testManyPoolsShowAndMetricsAnswer() throws {
        let pg = try PostgresServer.shared()
        let n = Int(ProcessInfo.processInfo.environment["PGSWIFT_MANY_POOLS"] ?? "") ?? 10_000
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.maxClientConn = 1000
        let deadPort = try freePort()  // nothing listens there
        s.databases.append(("nowhere", "host=127.0.0.1 port=\(deadPort) dbname=nowhere"))
        s.users += (0..<n).map { ("mp\($0)", "x") }
        s.settings = [("admin_users", "u_trust")]
        let metricsPort = try freePort()
        // fail_fast: a login to a pool whose hosts are all down (health check) is failed at once. Without
        // it each login would wait, as in PgBouncer, for a server until client_login_timeout.
        s.pgswiftSettings = [("metrics_listen", "127.0.0.1:\(metricsPort)"), ("fail_fast", "on")]
        let px = try Pgswift.start(s)
        defer { px.stop() }

        let started = monotonicNow()
        let threads = 4
        let failures = LockedCounter()
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for i in stride(from: t, to: n, by: threads) {
                let seen = Self.touch(port: px.port, user: "mp\(i)", database: "nowhere")
                // AuthenticationOk then the error, or (fail_fast, the host known down) the error alone.
                if !seen.hasPrefix("R") && !seen.hasPrefix("E") { failures.add(seen) }
            }
        }
        print("many pools: \(n) logins in \(String(format: "%.1f", monotonicNow() - started)) s, \(failures.value) not answered \(failures.first)")
        XCTAssertEqual(failures.value, 0)

        let adm = try admin(px)
        defer { adm.close() }
        var listed = 0
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.5) {
            listed = ((try? adm.show("SHOW POOLS"))?.column("database").filter { $0 == "nowhere" }.count) ?? -1
            return listed == n
        }, "SHOW POOLS lists \(listed) of \(n) pools\n\(px.log().suffix(3000))")
        for command in ["SHOW POOLS", "SHOW STATS", "SHOW LISTS", "SHOW DATABASES", "SHOW USERS"] {
            let t0 = monotonicNow()
            let answer = try adm.show(command)
            let took = monotonicNow() - t0
            print("many pools: \(command) with \(n) pools: \(answer.rows.count) rows in \(String(format: "%.3f", took)) s")
            XCTAssertLessThan(took, 5, "\(command) took \(took) s (acceptance bound, generous)")
        }
        let t0 = monotonicNow()
        let text = try metricsBody(port: metricsPort)
        let took = monotonicNow() - t0
        print("many pools: /metrics with \(n) pools: \(text.utf8.count) bytes in \(String(format: "%.3f", took)) s")
        XCTAssertLessThan(took, 30, "/metrics took \(took) s")
        XCTAssertEqual(text.split(separator: "\n").filter { $0.hasPrefix("pgbouncer_pools_client_active_connections{database=\"nowhere\"") }.count, n)
        let rss = residentKiB(px.supervisorPid)
        print("many pools: supervisor RSS \(rss) KiB after SHOW and /metrics with \(n) pools")
        XCTAssertLessThan(rss, 512 * 1024, "supervisor RSS \(rss) KiB")
        XCTAssertTrue(px.isRunning)
        XCTAssertTrue(px.logLines(containing: "exceeds").isEmpty, "\(px.logLines(containing: "exceeds").prefix(3))")
        // Not asserted: on a loaded shared machine a debug worker can legitimately be late once.
        print("many pools: \(px.logLines(containing: "has sent no stats").count) 'sent no stats' warnings")
    }

    /// Logs in with trust and reads until the error (the server is unreachable) or the close: the
    /// message types seen ("R..." when pgswift answered with AuthenticationOk first).
    private static func touch(port: Int, user: String, database: String) -> String {
        guard let socket = try? TestSocket(port: port, timeout: 20) else { return "no connection" }
        defer { socket.close() }
        guard (try? socket.send(WireEncode.startup(parameters: [("user", user), ("database", database)]))) != nil else { return "send failed" }
        let c = WireClient(socket: socket, timeout: 20)
        var seen = ""
        while let m = try? c.readMessage() {
            seen.append(m.typeChar)
            if m.typeChar == "E" {
                seen += " " + (WireErrorFields(body: m.body).message ?? "")
                break
            }
            if m.typeChar == "Z" { break }
        }
        return seen
    }

    private func residentKiB(_ pid: pid_t) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
        }
        return -1
    }

    private func metricsBody(port: Int) throws -> String {
        let socket = try TestSocket(port: port, timeout: 60)
        defer { socket.close() }
        try socket.send(Array("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
        let response = String(decoding: socket.readUntilClosed(timeout: 60).data, as: UTF8.self)
        guard response.hasPrefix("HTTP/1.1 200"), let split = response.range(of: "\r\n\r\n") else {
            throw E2EError("bad /metrics response: \(response.prefix(300))")
        }
        return String(response[split.upperBound...])
    }

    /// The value of the first sample of `name` whose labels contain `labels`.
    private func sample(_ text: String, _ name: String, labels: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") && line.contains(labels) {
            return Double(line.split(separator: " ").last ?? "")
        }
        return nil
    }
}

private final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    private var firstSeen = ""
    func add(_ seen: String) { lock.lock(); n += 1; if firstSeen.isEmpty { firstSeen = seen }; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
    var first: String { lock.lock(); defer { lock.unlock() }; return firstSeen }
}
