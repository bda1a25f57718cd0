// End to end (issue 21) with real PostgreSQL: errors by SQLSTATE class per pattern (SHOW QUERIES'
// error_classes, pgswift_query_errors_total's class label) and log_statement_parameters.
import Foundation
import XCTest
import Shared

final class QueryErrorsTests: XCTestCase {
    private func column(_ a: AdminAnswer, _ row: [String?], _ name: String) -> String {
        (row[a.columns.firstIndex(of: name)!]) ?? ""
    }

    /// Division by zero (22012) and unique violations (23505) from real statements over 2 workers:
    /// each pattern's errors by class in SHOW QUERIES and on /metrics.
    func testErrorsBySQLStateClassInShowQueriesAndMetrics() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.poolMode = "transaction"
        s.settings = [("admin_users", "u_trust")]
        let metricsPort = try freePort()
        s.pgswiftSettings = [("metrics_listen", "127.0.0.1:\(metricsPort)")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        try pg.adminQuery(["drop table if exists qe_items", "create table qe_items (id int primary key)",
                           "grant all on qe_items to u_trust"], database: "testdb")
        let clients = try (0..<4).map { _ in try WireClient.connect(port: px.port, user: "u_trust", database: "testdb") }
        defer { clients.forEach { $0.close() } }
        var divisions = 0, duplicates = 0
        for i in 0..<40 {
            let c = clients[i % clients.count]
            do { _ = try c.query("select 10 / \(i % 4)") } catch let e as WireServerError {
                XCTAssertEqual(e.fields.sqlstate, "22012")
                divisions += 1
            }
            // ids 0..9 go in once, then fail as duplicates.
            do { _ = try c.query("insert into qe_items values (\(i % 10))") } catch let e as WireServerError {
                XCTAssertEqual(e.fields.sqlstate, "23505")
                duplicates += 1
            }
        }
        // A pattern with two classes: 22012 and 22P02 (invalid text for an integer) are both class 22,
        // 42P01 (no such table) is 42.
        for v in ["0", "'x'"] { XCTAssertThrowsError(try clients[0].query("select 1 / \(v)::int")) }
        XCTAssertThrowsError(try clients[0].query("select * from qe_no_such_table where id = 1"))
        XCTAssertEqual(divisions, 10)
        XCTAssertEqual(duplicates, 30)

        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { admin.close() }
        let q = try admin.show("SHOW QUERIES")
        XCTAssertEqual(q.columns.last, "error_classes")
        var classes: [String: String] = [:], errors: [String: Int] = [:]
        for row in q.rows {
            classes[column(q, row, "query")] = column(q, row, "error_classes")
            errors[column(q, row, "query")] = Int(column(q, row, "errors"))
        }
        XCTAssertEqual(classes["select $1 / $2"], "22:10", "\(classes)")
        XCTAssertEqual(errors["select $1 / $2"], 10)
        XCTAssertEqual(classes["insert into qe_items values ($1)"], "23:30", "\(classes)")
        XCTAssertEqual(classes["select $1 / $2::int"], "22:2", "\(classes)")
        XCTAssertEqual(classes["select * from qe_no_such_table where id = $1"], "42:1", "\(classes)")
        XCTAssertEqual(classes["drop table if exists qe_items"] ?? "", "")

        let insertID = column(q, try XCTUnwrap(q.rows.first { column(q, $0, "query") == "insert into qe_items values ($1)" }), "queryid")
        let divID = column(q, try XCTUnwrap(q.rows.first { column(q, $0, "query") == "select $1 / $2" }), "queryid")
        let metrics = try httpGet(port: metricsPort, path: "/metrics", timeout: 10)
        let lines = metrics.split(separator: "\n").filter { $0.hasPrefix("pgswift_query_errors_total{") }.map(String.init)
        XCTAssertTrue(lines.contains("pgswift_query_errors_total{database=\"testdb\",user=\"u_trust\",queryid=\"\(insertID)\",class=\"23\"} 30"), "\(lines)")
        XCTAssertTrue(lines.contains("pgswift_query_errors_total{database=\"testdb\",user=\"u_trust\",queryid=\"\(divID)\",class=\"22\"} 10"), "\(lines)")
        XCTAssertFalse(lines.contains { !$0.contains("class=\"") }, "every errors series has its class: \(lines)")
        print("errors by class: \(classes.filter { !$0.value.isEmpty })")
    }

    /// The extended protocol's Parse/Bind/Execute/Sync with these values, through a WireClient.
    private func extended(_ c: WireClient, _ sql: String, _ values: [String?]) throws {
        var out = OutBuffer(capacity: 256)
        defer { out.deallocate() }
        Frontend.parse(into: &out, name: "", query: sql)
        Frontend.bind(into: &out, portal: "", statement: "", parameters: values)
        Frontend.execute(into: &out, portal: "")
        out.appendEmptyMessage(FrontendType.sync)
        try c.socket.send(out.bytes)
        _ = try c.readResult(sql)
    }

    private func slowLines(parameters: String?) throws -> [String] {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.pgswiftSettings = [("log_min_duration_statement", "100")]
        if let parameters { s.pgswiftSettings.append(("log_statement_parameters", parameters)) }
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { c.close() }
        _ = try c.query("select pg_sleep(0.15), 'simple secret'")
        try extended(c, "select pg_sleep($1::float8), $2::text, $3::int", ["0.15", "it's bound", nil])
        _ = try c.query("select 'fast secret'")
        var lines: [String] = []
        XCTAssertTrue(waitUntil(timeout: 10) {
            lines = px.logLines(containing: "duration:")
            return lines.count >= 2
        }, "\(px.log().suffix(2000))")
        return lines
    }

    /// log_statement_parameters = on: the slow line has the simple statement's text and the Bind
    /// values; off (default or explicit): never.
    func testSlowLogCarriesParametersOnlyWhenOn() throws {
        let on = try slowLines(parameters: "on")
        XCTAssertEqual(on.count, 2, "only the slow statements: \(on)")
        XCTAssertTrue(on.contains { $0.contains("statement: select pg_sleep($1), $2  text: select pg_sleep(0.15), 'simple secret'") }, "\(on)")
        XCTAssertTrue(on.contains { $0.hasSuffix("statement: select pg_sleep($1::float8), $2::text, $3::int  parameters: $1 = '0.15', $2 = 'it''s bound', $3 = NULL") }, "\(on)")
        for setting in [nil, "off"] {
            let off = try slowLines(parameters: setting)
            XCTAssertEqual(off.count, 2, "\(off)")
            XCTAssertFalse(off.contains { $0.contains("secret") || $0.contains("bound") || $0.contains("parameters:") }, "\(off)")
        }
        print("slow log with log_statement_parameters = on:\n\(on.joined(separator: "\n"))")
    }
}
