// End to end: the admin console (SHOW totals across workers, PAUSE/RESUME, RELOAD, permissions) and /metrics.
import Foundation
import XCTest
import Shared
#if canImport(Glibc)
import Glibc
#endif

/// A query answer with its column names.
struct AdminAnswer {
    var columns: [String]
    var rows: [[String?]]

    func column(_ name: String) -> [String?] {
        guard let i = columns.firstIndex(of: name) else { return [] }
        return rows.map { $0[i] }
    }

    /// Sum of an integer column over the rows whose `key` column equals `value`.
    func sum(_ name: String, where key: String, is value: String) -> Int {
        guard let i = columns.firstIndex(of: name), let k = columns.firstIndex(of: key) else { return -1 }
        return rows.filter { $0[k] == value }.reduce(0) { $0 + (Int($1[i] ?? "") ?? 0) }
    }
}

extension WireClient {
    /// Like `query`, keeping the RowDescription's column names.
    func show(_ sql: String) throws -> AdminAnswer {
        try socket.send(WireEncode.query(sql))
        var answer = AdminAnswer(columns: [], rows: [])
        var failure: WireErrorFields?
        while true {
            guard let m = try readMessage() else { throw E2EError("connection closed during '\(sql)'") }
            switch m.typeChar {
            case "T": answer.columns = Self.columnNames(m.body)
            case "D": answer.rows.append(Self.dataRowValues(m.body))
            case "E": failure = WireErrorFields(body: m.body)
            case "Z":
                if let failure { throw WireServerError(fields: failure) }
                return answer
            default: continue
            }
        }
    }

    static func columnNames(_ body: [UInt8]) -> [String] {
        let n = Int(body[0]) << 8 | Int(body[1])
        var names: [String] = []
        var i = 2
        for _ in 0..<n {
            let end = body[i...].firstIndex(of: 0)!
            names.append(String(decoding: body[i..<end], as: UTF8.self))
            i = end + 1 + 18
        }
        return names
    }

    static func dataRowValues(_ body: [UInt8]) -> [String?] {
        func int(_ at: Int, _ width: Int) -> Int { (0..<width).reduce(0) { $0 << 8 | Int(body[at + $1]) } }
        var out: [String?] = []
        var i = 2
        for _ in 0..<int(0, 2) {
            let len = Int32(truncatingIfNeeded: int(i, 4))
            i += 4
            if len < 0 { out.append(nil); continue }
            out.append(String(decoding: body[i..<i + Int(len)], as: UTF8.self))
            i += Int(len)
        }
        return out
    }

    /// Sends a query without waiting for its answer.
    func sendQuery(_ sql: String) throws { try socket.send(WireEncode.query(sql)) }

    /// Reads messages until ReadyForQuery; returns the error, if any. Throws if nothing complete arrives in `timeout`.
    func finishQuery(timeout: Double) throws -> WireErrorFields? {
        var failure: WireErrorFields?
        while true {
            guard let m = try readMessage(timeout: timeout) else { throw E2EError("connection closed") }
            if m.typeChar == "E" { failure = WireErrorFields(body: m.body) }
            if m.typeChar == "Z" { return failure }
        }
    }
}

final class AdminConsoleTests: XCTestCase {
    private func settings(_ pg: PostgresServer, workers: Int, poolMode: String = "transaction") -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.workers = workers
        s.poolMode = poolMode
        s.settings = [("admin_users", "u_trust"), ("stats_users", "u_password")]
        return s
    }

    private func admin(_ px: Pgswift, user: String = "u_trust", password: String? = nil) throws -> WireClient {
        try WireClient.connect(port: px.port, user: user, database: "pgbouncer", password: password)
    }

    func testShowTotalsAgreeAcrossWorkersAndMatchPostgres() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(waitUntil(timeout: 20) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 })
        let px = try Pgswift.start(settings(pg, workers: 4))
        defer { px.stop() }

        // 12 clients: 3 inside a transaction (each holds a server), 9 idle.
        var clients: [WireClient] = []
        for i in 0..<12 {
            let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
            if i < 3 { _ = try c.query("begin"); _ = try c.query("select 1") }
            clients.append(c)
        }
        defer { clients.forEach { $0.close() } }
        // Admin connections spread over the workers by SO_REUSEPORT.
        let admins = try (0..<6).map { _ in try admin(px) }
        defer { admins.forEach { $0.close() } }

        let backends = try pg.countBackends(user: "u_trust", db: "testdb")
        for a in admins {
            let pools = try a.show("SHOW POOLS")
            XCTAssertEqual(pools.columns, AdminColumns.pools.map(\.name))
            XCTAssertEqual(pools.sum("cl_active", where: "database", is: "testdb"), 12, "\(pools.rows)")
            XCTAssertEqual(pools.sum("sv_active", where: "database", is: "testdb"), 3, "\(pools.rows)")
            XCTAssertEqual(pools.sum("cl_active", where: "database", is: "pgbouncer"), 6, "\(pools.rows)")
            let poolServers = ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
                .map { pools.sum($0, where: "database", is: "testdb") }.reduce(0, +)
            XCTAssertEqual(poolServers, backends, "SHOW POOLS servers vs pg_stat_activity")

            let cl = try a.show("SHOW CLIENTS")
            XCTAssertEqual(cl.columns, AdminColumns.clients.map(\.name))
            XCTAssertEqual(cl.column("database").filter { $0 == "testdb" }.count, 12)
            XCTAssertEqual(cl.column("database").filter { $0 == "pgbouncer" }.count, 6)
            let sv = try a.show("SHOW SERVERS")
            XCTAssertEqual(sv.columns, AdminColumns.servers.map(\.name))
            XCTAssertEqual(sv.column("database").filter { $0 == "testdb" }.count, backends)
            XCTAssertEqual(sv.column("state").filter { $0 == "active" }.count, 3)
            let backendPids = Set(try pg.adminQuery("select pid from pg_stat_activity where usename = 'u_trust' and datname = 'testdb'")
                .split(separator: "\n").map { String($0).trimmingCharacters(in: .whitespaces) })
            XCTAssertEqual(Set(sv.column("remote_pid").compactMap { $0 }), backendPids)

            let stats = try a.show("SHOW STATS")
            XCTAssertEqual(stats.columns, AdminColumns.stats.map(\.name))
            XCTAssertTrue(stats.column("database").contains("testdb"))
            XCTAssertEqual(try a.show("SHOW STATS_TOTALS").columns, AdminColumns.statsTotals.map(\.name))
            XCTAssertEqual(try a.show("SHOW STATS_AVERAGES").columns, AdminColumns.statsAverages.map(\.name))
            XCTAssertEqual(try a.show("SHOW DATABASES").columns, AdminColumns.databases.map(\.name))
            XCTAssertEqual(try a.show("SHOW USERS").columns, AdminColumns.users.map(\.name))
            XCTAssertEqual(try a.show("SHOW LISTS").columns, AdminColumns.lists.map(\.name))
            XCTAssertEqual(try a.show("SHOW CONFIG").columns, AdminColumns.config.map(\.name))
            XCTAssertEqual(try a.show("SHOW STATE").columns, AdminColumns.state.map(\.name))
            XCTAssertEqual(try a.show("SHOW VERSION").columns, AdminColumns.version.map(\.name))
            let workers = try a.show("SHOW WORKERS")
            XCTAssertEqual(workers.columns, AdminColumns.workers.map(\.name))
            XCTAssertEqual(workers.rows.count, 4)
            XCTAssertEqual(workers.column("state"), Array(repeating: "running", count: 4))
        }

        // Unknown command: PgBouncer's error.
        XCTAssertThrowsError(try admins[0].show("SHOW NONSENSE")) { error in
            XCTAssertEqual((error as? WireServerError)?.fields.message, "invalid command 'SHOW NONSENSE', use SHOW HELP;")
        }
        XCTAssertTrue(px.isRunning)
    }

    func testNonAdminUsersArePermissionChecked() throws {
        let pg = try PostgresServer.shared()
        var s = settings(pg, workers: 2)
        s.authType = "plain"
        let px = try Pgswift.start(s)
        defer { px.stop() }

        // Not in admin_users or stats_users: refused at login, like PgBouncer.
        XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_md5", database: "pgbouncer",
                                                    password: PostgresServer.passwords["u_md5"])) { error in
            XCTAssertEqual((error as? WireServerError)?.fields.message, "not allowed", "\(error)")
        }
        // A wrong password for an admin user fails like any login.
        XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer", password: "nope"))

        // stats_users: SHOW only.
        let stats = try admin(px, user: "u_password", password: PostgresServer.passwords["u_password"])
        defer { stats.close() }
        XCTAssertFalse(try stats.show("SHOW POOLS").columns.isEmpty)
        for command in ["PAUSE", "RESUME", "RELOAD", "SHUTDOWN", "SHOW FDS"] {
            XCTAssertThrowsError(try stats.show(command), command) { error in
                XCTAssertEqual((error as? WireServerError)?.fields.message, "admin access needed", command)
            }
        }
        // admin_users: everything (RESUME when not paused is PgBouncer's error, not a permission one).
        let full = try admin(px, user: "u_trust", password: PostgresServer.passwords["u_trust"])
        defer { full.close() }
        XCTAssertThrowsError(try full.show("RESUME")) { error in
            XCTAssertEqual((error as? WireServerError)?.fields.message, "pooler is not paused/suspended")
        }
        XCTAssertTrue(px.isRunning)
    }

    func testPauseWaitsForTransactionsHoldsNewOnesAndResumeReleasesThem() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(settings(pg, workers: 2))
        defer { px.stop() }

        let inTx = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { inTx.close() }
        _ = try inTx.query("begin")
        _ = try inTx.query("select 1")
        let later = try (0..<4).map { _ in try WireClient.connect(port: px.port, user: "u_trust", database: "testdb") }
        defer { later.forEach { $0.close() } }
        let a = try admin(px)
        defer { a.close() }

        try a.sendQuery("PAUSE")
        XCTAssertThrowsError(try a.finishQuery(timeout: 1.5), "PAUSE must wait for the open transaction")
        // The transaction goes on while PAUSE waits, and ends.
        XCTAssertEqual(try inTx.query("select 2"), [["2"]])
        _ = try inTx.query("commit")
        XCTAssertNil(try a.finishQuery(timeout: 10), "PAUSE completes once the transaction ended")

        // New queries are held, not failed.
        for c in later { try c.sendQuery("select 42") }
        for c in later { XCTAssertThrowsError(try c.finishQuery(timeout: 0.3), "held while paused") }
        let state = try a.show("SHOW STATE")
        XCTAssertEqual(state.rows.first { $0[0] == "paused" }?[1], "yes")
        XCTAssertEqual(try a.show("RESUME").rows, [])
        for c in later { XCTAssertNil(try c.finishQuery(timeout: 10), "answered after RESUME without an error") }
        XCTAssertTrue(px.isRunning)
    }

    func testReloadAppliesPoolSizeWithoutDroppingClientsAndKeepsOldConfigOnError() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(waitUntil(timeout: 20) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 })
        var s = settings(pg, workers: 1)
        s.defaultPoolSize = 2
        let px = try Pgswift.start(s)
        defer { px.stop() }

        let kept = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { kept.close() }
        XCTAssertEqual(try kept.query("select 1"), [["1"]])
        let a = try admin(px)
        defer { a.close() }

        func maxBackends(clients: Int) throws -> Int {
            let dir = try makeTempDirectory(prefix: "reload")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let target = px.target(user: "u_trust", database: "testdb")
            let procs = try (0..<clients).map { try Psql.spawn(target, "select pg_sleep(0.4)", dir: dir, tag: "c\($0)") }
            var seen = 0
            while procs.contains(where: \.isRunning) {
                seen = max(seen, try pg.countBackends(user: "u_trust", db: "testdb"))
                sleepSeconds(0.05)
            }
            XCTAssertTrue(procs.allSatisfy { $0.poll() == 0 }, "a client failed: \(procs.map { $0.stderrText() })")
            return seen
        }
        XCTAssertLessThanOrEqual(try maxBackends(clients: 8), 2)

        s.defaultPoolSize = 6
        try s.render(port: px.port, dir: px.dir).write(toFile: px.configPath, atomically: true, encoding: .utf8)
        XCTAssertEqual(try a.show("RELOAD").rows, [])
        XCTAssertEqual(try a.show("SHOW CONFIG").rows.first { $0[0] == "default_pool_size" }?[1], "6")
        XCTAssertEqual(try kept.query("select 2"), [["2"]], "the client connected before RELOAD still works")
        let after = try maxBackends(clients: 8)
        XCTAssertGreaterThan(after, 2)
        XCTAssertLessThanOrEqual(after, 6)

        // A broken file: RELOAD fails, says why, and the old configuration stays.
        try "[pgbouncer]\ndefault_pool_size = lots\n".write(toFile: px.configPath, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try a.show("RELOAD")) { error in
            // PgBouncer's text; pgswift adds the reason as DETAIL.
            let fields = (error as? WireServerError)?.fields
            XCTAssertEqual(fields?.message, "RELOAD failed, see logs for additional details")
            let detail = fields?.fields["D"] ?? ""
            XCTAssertTrue(detail.contains("default_pool_size") && detail.contains("not an integer"), detail)
        }
        XCTAssertEqual(try a.show("SHOW CONFIG").rows.first { $0[0] == "default_pool_size" }?[1], "6")
        XCTAssertEqual(try kept.query("select 3"), [["3"]])
        XCTAssertTrue(px.isRunning)
    }

    func testMetricsEndpointParsesAndCountersRiseWithPgbench() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        var s = settings(pg, workers: 2)
        s.authType = "scram-sha-256"
        s.defaultPoolSize = 10
        let metricsPort = try freePort()
        s.pgswiftSettings = [("metrics_listen", "127.0.0.1:\(metricsPort)")]
        let px = try Pgswift.start(s)
        defer { px.stop() }

        let health = try httpGet(port: metricsPort, path: "/health")
        XCTAssertTrue(health.hasPrefix("HTTP/1.1 200"), health)
        XCTAssertTrue(try httpGet(port: metricsPort, path: "/nope").hasPrefix("HTTP/1.1 404"))

        func queries() throws -> Double {
            let text = try metricsBody(port: metricsPort)
            try checkExposition(text)
            return sample(text, "pgbouncer_stats_queries_pooled_total", label: "database=\"bench\"") ?? 0
        }
        let before = try queries()
        let target = px.target(user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
        let (r, summary) = try Pgbench.run(target, ["-n", "-S", "-c", "8", "-j", "2", "-T", "3"], timeout: 120)
        XCTAssertTrue(r.succeeded, "\(r)")
        // Workers push once a second: wait until every pgbench query shows.
        let expected = Double(summary.transactions ?? 1)
        var after = before
        XCTAssertTrue(waitUntil(timeout: 5) { after = (try? queries()) ?? before; return after - before >= expected },
                      "queries counted: \(after - before), pgbench transactions: \(expected)")
        let text = try metricsBody(port: metricsPort)
        XCTAssertGreaterThan(sample(text, "pgbouncer_stats_received_bytes_total", label: "database=\"bench\"") ?? 0, 0)
        XCTAssertGreaterThan(sample(text, "pgswift_query_duration_seconds_count", label: "database=\"bench\"") ?? 0, 0)
        XCTAssertEqual(sample(text, "pgswift_worker_up", label: "slot=\"1\""), 1)
    }

    // MARK: HTTP and the text format

    private func metricsBody(port: Int) throws -> String {
        let response = try httpGet(port: port, path: "/metrics")
        guard response.hasPrefix("HTTP/1.1 200"), let split = response.range(of: "\r\n\r\n") else {
            throw E2EError("bad /metrics response: \(response.prefix(300))")
        }
        XCTAssertTrue(response.contains("Content-Type: text/plain; version=0.0.4"))
        return String(response[split.upperBound...])
    }

    /// The first value of `name` whose labels contain `label`.
    private func sample(_ text: String, _ name: String, label: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") && line.contains(label) {
            return Double(line.split(separator: " ").last ?? "")
        }
        return nil
    }

    /// A strict check of the text format 0.0.4: HELP then TYPE once per family, each family's samples
    /// contiguous and named after it, label syntax, float values, histogram buckets cumulative and
    /// ending in +Inf equal to _count.
    private func checkExposition(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertTrue(text.hasSuffix("\n"), file: file, line: line)
        let nameRe = try NSRegularExpression(pattern: "^[a-zA-Z_:][a-zA-Z0-9_:]*$")
        let sampleRe = try NSRegularExpression(pattern:
            #"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")*\})? (-?[0-9.e+]+|\+Inf|-Inf|NaN)$"#)
        func matches(_ re: NSRegularExpression, _ s: String) -> NSTextCheckingResult? {
            re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s))
        }
        var seenFamilies = Set<String>()
        var family = ""
        var type = ""
        var lastBucket: (series: String, value: Double)? = nil
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            let l = String(raw)
            if l.hasPrefix("# HELP ") {
                let name = String(l.dropFirst(7).split(separator: " ").first ?? "")
                XCTAssertNotNil(matches(nameRe, name), l, file: file, line: line)
                XCTAssertFalse(seenFamilies.contains(name), "family \(name) twice", file: file, line: line)
                seenFamilies.insert(name)
                family = name
                type = ""
                continue
            }
            if l.hasPrefix("# TYPE ") {
                let parts = l.split(separator: " ")
                XCTAssertEqual(parts.count, 4, l, file: file, line: line)
                XCTAssertEqual(String(parts[2]), family, "TYPE right after its HELP", file: file, line: line)
                type = String(parts[3])
                XCTAssertTrue(["counter", "gauge", "histogram", "summary", "untyped"].contains(type), l, file: file, line: line)
                continue
            }
            XCTAssertFalse(l.hasPrefix("#") || l.isEmpty, "unexpected line '\(l)'", file: file, line: line)
            guard let m = matches(sampleRe, l), let nameRange = Range(m.range(at: 1), in: l) else {
                XCTFail("malformed sample line '\(l)'", file: file, line: line)
                continue
            }
            let name = String(l[nameRange])
            let value = Double(l.split(separator: " ").last!.replacingOccurrences(of: "+Inf", with: "inf"))
            XCTAssertNotNil(value, l, file: file, line: line)
            if type == "histogram" {
                XCTAssertTrue([family + "_bucket", family + "_sum", family + "_count"].contains(name), l, file: file, line: line)
                if name == family + "_bucket" {
                    let series = l.replacingOccurrences(of: #",?le="[^"]*""#, with: "", options: .regularExpression)
                        .split(separator: " ").first.map(String.init) ?? ""
                    if let last = lastBucket, last.series == series {
                        XCTAssertGreaterThanOrEqual(value ?? 0, last.value, "buckets cumulative: \(l)", file: file, line: line)
                    }
                    lastBucket = (series, value ?? 0)
                } else if name == family + "_count", let last = lastBucket {
                    XCTAssertEqual(value, last.value, "+Inf bucket equals _count: \(l)", file: file, line: line)
                }
            } else {
                XCTAssertEqual(name, family, "sample of another family: \(l)", file: file, line: line)
            }
        }
        XCTAssertGreaterThan(seenFamilies.count, 20, file: file, line: line)
    }
}
