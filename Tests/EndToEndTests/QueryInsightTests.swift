// End to end (issue 21): per-pattern query statistics merged over workers (SHOW QUERIES, SHOW
// TABLES, RESET QUERIES) and log_min_duration_statement, with real PostgreSQL.
import Foundation
import XCTest
import Shared

final class QueryInsightTests: XCTestCase {
    private func column(_ a: AdminAnswer, _ row: [String?], _ name: String) -> String {
        (row[a.columns.firstIndex(of: name)!]) ?? ""
    }

    /// 20 clients over 2 workers run 5 query shapes with varying literals and IN-list lengths: SHOW
    /// QUERIES has exactly those 5 patterns with the calls summed over workers and the errors on the
    /// pattern that failed; SHOW TABLES counts the table; a pg_sleep(0.3) is in the slow log with
    /// its pattern (never its literal) and the fast statements are not; /metrics has the top patterns;
    /// RESET QUERIES empties it.
    func testPatternsMergedOverWorkersSlowLogAndTables() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.poolMode = "transaction"
        s.settings = [("admin_users", "u_trust")]
        let metricsPort = try freePort()
        s.pgswiftSettings = [("log_min_duration_statement", "200"), ("metrics_listen", "127.0.0.1:\(metricsPort)"),
                             ("query_stats_metrics_top", "3")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let setup = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { setup.close() }
        try pg.adminQuery(["drop table if exists qi_items", "create table qi_items (id int primary key, v text)",
                           "insert into qi_items select g, 'v' || g from generate_series(1, 100) g",
                           "grant all on qi_items to u_trust"], database: "testdb")
        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { admin.close() }
        XCTAssertEqual(try admin.show("RESET QUERIES").rows.count, 0)
        XCTAssertEqual(try admin.show("SHOW QUERIES").rows.count, 0, "RESET QUERIES cleared every worker")

        let clients = 20, rounds = 10
        // Connected first, so that both workers are seen to hold some of them.
        let conns = UncheckedBox(try (0..<clients).map { _ in
            try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        })
        defer { conns.value.forEach { $0.close() } }
        let perWorker = try admin.show("SHOW WORKERS")
        let held = perWorker.rows.map { Int(column(perWorker, $0, "clients")) ?? 0 }
        XCTAssertEqual(held.count, 2)
        XCTAssertTrue(held.allSatisfy { $0 > 0 }, "clients per worker: \(held)")
        let failures = LockedStrings()
        DispatchQueue.concurrentPerform(iterations: clients) { c in
            do {
                let w = conns.value[c]  // one thread per connection
                for r in 0..<rounds {
                    let id = 1 + (c * rounds + r) % 100
                    _ = try w.query("select id, v from qi_items where id = \(id)")
                    let list = (0...(r % 6)).map { String(1 + ($0 * 7 + c) % 100) }.joined(separator: ", ")
                    _ = try w.query("SELECT count(*) FROM qi_items WHERE id IN (\(list))")
                    _ = try w.query("update qi_items set v = 'c\(c)r\(r)' where id = \(id)")
                    _ = try w.query("select v from qi_items where v = 'v\(id)'   and id > \(r)")
                    do {
                        _ = try w.query("select 100 / \(r % 5)")
                    } catch is WireServerError {
                        // division by zero: counted as an error of its pattern
                    }
                }
            } catch {
                failures.append("client \(c): \(error)")
            }
        }
        XCTAssertEqual(failures.values, [])

        let q = try admin.show("SHOW QUERIES")
        XCTAssertEqual(q.columns, AdminColumns.queries.map(\.name))
        var calls: [String: Int] = [:], errors: [String: Int] = [:]
        for row in q.rows {
            let text = column(q, row, "query")
            calls[text] = Int(column(q, row, "calls"))
            errors[text] = Int(column(q, row, "errors"))
            XCTAssertEqual(column(q, row, "database"), "testdb")
            XCTAssertEqual(column(q, row, "user"), "u_trust")
            XCTAssertLessThanOrEqual(Int(column(q, row, "p50_us"))!, Int(column(q, row, "p99_us"))!)
            XCTAssertLessThanOrEqual(Int(column(q, row, "p99_us"))!, Int(column(q, row, "max_us"))!)
        }
        let n = clients * rounds
        XCTAssertEqual(calls, [
            "select id, v from qi_items where id = $1": n,
            "select count(*) from qi_items where id in ($1 /*, ... */)": n,
            "update qi_items set v = $1 where id = $2": n,
            "select v from qi_items where v = $1 and id > $2": n,
            "select $1 / $2": n,
        ], "\(q.rows)")
        XCTAssertEqual(errors["select $1 / $2"], clients * rounds / 5)
        XCTAssertEqual(errors["select id, v from qi_items where id = $1"], 0)
        let top = try admin.show("SHOW QUERIES 2")
        XCTAssertEqual(top.rows.count, 2)

        // /metrics: the 3 busiest patterns, with the calls SHOW QUERIES counted.
        let metrics = try httpGet(port: metricsPort, path: "/metrics", timeout: 10)
        let callLines = metrics.split(separator: "\n").filter { $0.hasPrefix("pgswift_query_calls_total{") }
        XCTAssertEqual(callLines.count, 3, "\(callLines)")
        let topID = column(q, q.rows[0], "queryid")
        XCTAssertTrue(callLines.contains("pgswift_query_calls_total{database=\"testdb\",user=\"u_trust\",queryid=\"\(topID)\"} \(n)"),
                      "\(callLines)")
        XCTAssertTrue(metrics.contains("\npgswift_query_patterns_evicted_total 0\n"))

        let t = try admin.show("SHOW TABLES")
        XCTAssertEqual(t.columns, AdminColumns.tables.map(\.name))
        let items = try XCTUnwrap(t.rows.first { column(t, $0, "table") == "qi_items" }, "\(t.rows)")
        XCTAssertEqual(column(t, items, "database"), "testdb")
        XCTAssertEqual(Int(column(t, items, "calls")), 4 * n)
        XCTAssertEqual(Int(column(t, items, "reads")), 3 * n)
        XCTAssertEqual(Int(column(t, items, "writes")), n)

        // The slow log: pg_sleep(0.3) once, with its pattern and a duration the client saw too.
        let started = Date()
        _ = try setup.query("select pg_sleep(0.3), 'hidden literal'")
        let clientMillis = Date().timeIntervalSince(started) * 1000
        let deadline = Date().addingTimeInterval(10)
        while px.logLines(containing: "duration:").isEmpty && Date() < deadline { usleep(50_000) }
        let slow = px.logLines(containing: "duration:")
        XCTAssertEqual(slow.count, 1, "only the slow statement is logged: \(slow)")
        let line = slow.first ?? ""
        XCTAssertTrue(line.contains("statement: select pg_sleep($1), $2"), line)
        XCTAssertTrue(line.contains("db=testdb user=u_trust"), line)
        XCTAssertFalse(line.contains("hidden literal"), line)
        let sleepRow = try XCTUnwrap(try admin.show("SHOW QUERIES").rows.first {
            column(q, $0, "query") == "select pg_sleep($1), $2"
        })
        let p50 = Double(column(q, sleepRow, "p50_us"))! / 1000
        XCTAssertLessThanOrEqual(abs(p50 - clientMillis), clientMillis * 0.05, "p50 \(p50) ms, the client saw \(clientMillis) ms")

        // SET query_stats_max lowers every worker's bound at once; SET query_stats = off forgets all.
        XCTAssertNil(try admin.outcome("SET query_stats_max = 2").error)
        let lowered = waitUntil(timeout: 20) { ((try? admin.show("SHOW QUERIES").rows.count) ?? 99) <= 4 }
        let left = try admin.show("SHOW QUERIES").rows.count
        XCTAssertTrue(lowered, "SHOW QUERIES: \(left) patterns")
        XCTAssertNil(try admin.outcome("SET query_stats = off").error)
        XCTAssertTrue(waitUntil(timeout: 20) { ((try? admin.show("SHOW QUERIES").rows.count) ?? 99) == 0 })
        _ = try setup.query("select id from qi_items where id = 1")
        XCTAssertEqual(try admin.show("SHOW QUERIES").rows.count, 0, "query_stats = off keeps nothing")
        XCTAssertNil(try admin.outcome("SET query_stats = on").error)

        XCTAssertEqual(try admin.show("RESET QUERIES").rows.count, 0)
        XCTAssertEqual(try admin.show("SHOW QUERIES").rows.count, 0)
    }

    private func rssKiB(_ pid: pid_t) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "")
        }
        return nil
    }

    /// Bounded memory: 200,000 distinct patterns (literal-free texts, 100 statements per Query) through
    /// one worker with query_stats_max = 5000 grow its RSS by less than 10 MiB, SHOW QUERIES keeps at
    /// most 5000, and the eviction counter on /metrics accounts for the rest.
    func testDistinctPatternsStayBoundedAndEvictionsAreCounted() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.poolMode = "transaction"
        s.settings = [("admin_users", "u_trust")]
        let metricsPort = try freePort()
        s.pgswiftSettings = [("query_stats_max", "5000"), ("metrics_listen", "127.0.0.1:\(metricsPort)")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let worker = try XCTUnwrap(px.workerPids().first)
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { c.close() }
        _ = try c.query("select 1")
        let before = try XCTUnwrap(rssKiB(worker))
        let perQuery = 100, total = 200_000
        var sent = 0
        while sent < total {
            let text = (sent..<(sent + perQuery)).map { "select 1 as c\($0)" }.joined(separator: "; ")
            _ = try c.query(text)
            sent += perQuery
        }
        let after = try XCTUnwrap(rssKiB(worker))
        XCTAssertLessThan(after - before, 10 * 1024, "worker RSS grew from \(before) KiB to \(after) KiB")
        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { admin.close() }
        let rows = try admin.show("SHOW QUERIES").rows.count
        XCTAssertLessThanOrEqual(rows, 5000)
        XCTAssertGreaterThan(rows, 1000)
        let metrics = try httpGet(port: metricsPort, path: "/metrics", timeout: 10)
        let evicted = metrics.split(separator: "\n").first { $0.hasPrefix("pgswift_query_patterns_evicted_total ") }
        let n = Int(evicted?.split(separator: " ").last ?? "") ?? -1
        XCTAssertGreaterThanOrEqual(n, total - 5000, "\(evicted ?? "no eviction counter")")
        print("distinct patterns: RSS \(before) KiB -> \(after) KiB, \(rows) patterns kept, \(n) evicted")
    }
}

/// Hands values each thread uses alone (one connection per thread) to concurrentPerform.
final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}

/// Strings appended from several threads.
final class LockedStrings: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
    var values: [String] { lock.lock(); defer { lock.unlock() }; return items }
}
