// End to end: the texts, SQLSTATEs and log lines that tools and scripts written for PgBouncer read.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class PgBouncerTextsTests: XCTestCase {
    /// Statement mode refuses a transaction block as PgBouncer does: FATAL 08P01 "transaction blocks not
    /// allowed in statement pooling mode", the client closed, and PgBouncer's log line.
    func testStatementModeRefusesATransactionBlock() throws {
        var s = PgswiftSettings(postgres: try PostgresServer.shared())
        s.poolMode = "statement"
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { c.close() }
        XCTAssertEqual(try c.query("select 1"), [["1"]], "a single statement is fine")
        try c.socket.send(WireEncode.query("begin"))
        var error: WireErrorFields?
        var closed = false
        while let m = try c.readMessage(timeout: 20) {
            if m.typeChar == "E" { error = WireErrorFields(body: m.body) }
            XCTAssertNotEqual(m.typeChar, "Z", "ReadyForQuery after the refusal")
        }
        closed = true
        XCTAssertTrue(closed)
        XCTAssertEqual(error?.severity, "FATAL", "\(String(describing: error))")
        XCTAssertEqual(error?.sqlstate, "08P01", "\(String(describing: error))")
        XCTAssertEqual(error?.message, "transaction blocks not allowed in statement pooling mode")
        XCTAssertTrue(waitUntil(timeout: 10) {
            !px.logLines(containing: "closing because: transaction blocks not allowed in statement pooling mode").isEmpty
        }, px.log().suffix(3000).description)
        let r = try Psql.run(px.target(user: "u_trust", database: "testdb"), "begin")
        XCTAssertFalse(r.succeeded)
        XCTAssertTrue(r.stderr.contains("transaction blocks not allowed in statement pooling mode"), "\(r)")
    }

    /// PgBouncer's connection log lines (log_connections, log_disconnections), each after PgBouncer's
    /// `db/user@address:port` prefix: login attempt, new connection to server (from the local address),
    /// closing because: <reason> (age=Ns) for clients and servers, server login failed: <severity> <message>.
    func testConnectionLogLinesHavePgBouncersShape() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.databases.append(("wrongpw", pg.connectionString(dbname: "testdb", extra: "user=u_md5 password=not-the-password")))
        s.settings = [("server_lifetime", "1"), ("server_idle_timeout", "1")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "bench")
        let port = c.socket.localPort
        XCTAssertEqual(try c.query("select 1"), [["1"]])
        c.close()
        XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_trust", database: "wrongpw"))

        func line(_ fragments: String...) -> String? {
            var found: String?
            waitUntil(timeout: 20) {
                found = px.log().split(separator: "\n").map(String.init).first { l in fragments.allSatisfy(l.contains) }
                return found != nil
            }
            return found
        }
        let client = "bench/u_trust@127.0.0.1:\(port) "
        let server = "bench/u_trust@127.0.0.1:\(pg.port) "
        XCTAssertNotNil(line(client + "login attempt: db=bench user=u_trust tls=no replication=no"), px.log())
        XCTAssertNotNil(line(server + "new connection to server (from 127.0.0.1:"), px.log())
        let closing = line(client + "closing because: client close request (age=")
        XCTAssertNotNil(closing, px.log())
        XCTAssertTrue(closing?.hasSuffix("s)") ?? false, "PgBouncer's line ends with (age=Ns): \(closing ?? "")")
        XCTAssertNotNil(line(server + "closing because: "), "the idle server closed after server_idle_timeout: \(px.log())")
        XCTAssertNotNil(line("wrongpw/u_md5@127.0.0.1:\(pg.port) server login failed: FATAL password authentication failed"),
                        px.log())
        // Every such line is "<C|S>-<n>: <db>/<user>@<address> <message>", as PgBouncer's log_socket_prefix.
        let shape = try NSRegularExpression(pattern: "(^| )[CS]-[0-9]+: [^ /]+/[^ @]+@[^ ]+ (login attempt|new connection to server|closing because|server login failed)")
        for l in px.log().split(separator: "\n").map(String.init)
        where ["login attempt", "new connection to server", "closing because", "server login failed"].contains(where: l.contains) {
            XCTAssertNotNil(shape.firstMatch(in: l, range: NSRange(l.startIndex..., in: l)), l)
        }
    }

    /// `verbose` set from the admin console reaches the workers (their debug lines start), and they are
    /// PgBouncer's varcache lines: a client whose DateStyle the server spells differently (`German` is
    /// reported as `German, DMY`) gets one SET, then the server's spelling is its own, so the next
    /// queries need none (PgBouncer's test_equivalent_startup_param counts these lines). (PostgreSQL 14+
    /// reports a parameter only when its value changes: `ISO` on a server at `ISO, MDY` is no example.)
    func testVerboseFromTheConsoleShowsOneVarcacheSetPerSpelling() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.poolMode = "transaction"
        s.settings = [("admin_users", "u_trust")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let reloads = px.logLines(containing: "configuration reloaded").count
        let a = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { a.close() }
        XCTAssertNil(try a.outcome("SET verbose = 2").error)
        XCTAssertTrue(waitUntil(timeout: 20) { px.logLines(containing: "configuration reloaded").count > reloads },
                      "the worker never reloaded: \(px.log().suffix(3000))")
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb", parameters: [("DateStyle", "German")])
        defer { c.close() }
        for _ in 0..<3 { XCTAssertEqual(try c.query("select 1"), [["1"]]) }
        XCTAssertEqual(px.logLines(containing: "varcache_apply: SET DateStyle='German';").count, 1, px.log())
        XCTAssertEqual(px.logLines(containing: "varcache_set_canonical: setting DateStyle to its canonical version German -> German, DMY").count,
                       1, px.log())
    }

    /// Prepared statements in transaction mode, by default as PgBouncer: a Bind or Describe naming a
    /// statement the client never prepared, or a Parse reusing a name, gets PgBouncer's FATAL 08P01 and
    /// the client is disconnected, with PgBouncer's log lines (its test_prepared.py reads them).
    func testPreparedStatementNameErrorsDisconnectWithPgBouncersWords() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.poolMode = "transaction"
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let sync = WireEncode.message("S", [])
        func parse(_ name: String) -> [UInt8] {
            WireEncode.message("P", WireEncode.cString(name) + WireEncode.cString("select 1") + [0, 0])
        }
        /// What the client gets for `bytes` (after `setup`, answered up to its ReadyForQuery) until closed.
        func fatal(_ bytes: [UInt8], after setup: [UInt8] = []) throws -> WireErrorFields? {
            let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
            defer { c.close() }
            if !setup.isEmpty {
                try c.socket.send(setup)
                while let m = try c.readMessage(timeout: 20), m.typeChar != "Z" {
                    XCTAssertNotEqual(m.typeChar, "E", WireErrorFields(body: m.body).message ?? "")
                }
            }
            try c.socket.send(bytes)
            var error: WireErrorFields?
            while let m = try c.readMessage(timeout: 20) {
                if m.typeChar == "E" { error = WireErrorFields(body: m.body) }
                XCTAssertNotEqual(m.typeChar, "Z", "ReadyForQuery: the client was not disconnected")
            }
            return error
        }
        let bind = WireEncode.message("B", WireEncode.cString("") + WireEncode.cString("nosuch") + [0, 0, 0, 0, 0, 0])
        let describe = WireEncode.message("D", [UInt8(ascii: "S")] + WireEncode.cString("nosuch"))
        for bytes in [bind + sync, describe + sync] {
            let e = try fatal(bytes)
            XCTAssertEqual(e?.severity, "FATAL")
            XCTAssertEqual(e?.sqlstate, "08P01")
            XCTAssertEqual(e?.message, "prepared statement did not exist")
        }
        let reused = try fatal(parse("s1") + sync, after: parse("s1") + sync)
        XCTAssertEqual(reused?.sqlstate, "08P01")
        XCTAssertEqual(reused?.message, "prepared statement name is already in use")
        XCTAssertTrue(waitUntil(timeout: 10) {
            px.logLines(containing: "closing because: prepared statement name is already in use").count == 1
        }, px.log().suffix(3000).description)
        XCTAssertEqual(px.logLines(containing: "prepared statement 'nosuch' not found").count, 2, px.log())
        XCTAssertEqual(px.logLines(containing: "closing because: prepared statement did not exist").count, 2, px.log())
        XCTAssertEqual(px.logLines(containing: "prepared statement 's1' was already prepared").count, 1, px.log())
    }
}
