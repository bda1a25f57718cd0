// End to end: PgBouncer 1.25's query_timeout, transaction_timeout, idle_transaction_timeout and
// client_idle_timeout (global and per user in [users]) and per-database server_lifetime.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class TimeoutTests: XCTestCase {
    /// How a client's session ended: the error it got (if any), whether the socket then closed, and
    /// the seconds from `since` until the error (or the close) arrived.
    private struct Ending: CustomStringConvertible {
        var error: WireErrorFields?
        var closed = false
        var sawReady = false
        var elapsed = 0.0
        var failure: String?
        var description: String {
            "error \(error.map { "\($0)" } ?? "none"), closed \(closed), ReadyForQuery \(sawReady), "
                + "after \(String(format: "%.2f", elapsed)) s" + (failure.map { ", \($0)" } ?? "")
        }
    }

    /// Reads until pgswift closes the connection (or `deadline` seconds pass), keeping the first error.
    private func readEnding(_ client: WireClient, since start: Double, deadline: Double = 20) -> Ending {
        var e = Ending()
        do {
            while true {
                let left = start + deadline - monotonicNow()
                guard left > 0 else { e.failure = "no end within \(deadline) s"; break }
                guard let m = try client.readMessage(timeout: left) else {
                    e.closed = true
                    if e.error == nil { e.elapsed = monotonicNow() - start }
                    break
                }
                if m.typeChar == "E" && e.error == nil {
                    e.error = WireErrorFields(body: m.body)
                    e.elapsed = monotonicNow() - start
                }
                if m.typeChar == "Z" { e.sawReady = true }
            }
        } catch {
            e.failure = "\(error)"
        }
        return e
    }

    /// The client got PgBouncer's FATAL 08P01 `message` and was disconnected, within `within` seconds.
    private func assertPgBouncerError(_ e: Ending, _ message: String, within: Double, _ px: Pgswift,
                                      file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(e.error?.severity, "FATAL", "\(e)\nlog:\n\(px.log().suffix(3000))", file: file, line: line)
        XCTAssertEqual(e.error?.sqlstate, "08P01", "\(e)", file: file, line: line)
        XCTAssertEqual(e.error?.message, message, "\(e)", file: file, line: line)
        XCTAssertTrue(e.closed, "the client was not disconnected: \(e)", file: file, line: line)
        XCTAssertFalse(e.sawReady, "ReadyForQuery after the error: \(e)", file: file, line: line)
        XCTAssertLessThan(e.elapsed, within, "\(e)", file: file, line: line)
    }

    /// The backend running `tag` (pg_stat_activity), once it shows up as active.
    private func runningBackend(_ pg: PostgresServer, tag: String) -> Int {
        var pid = -1
        waitUntil(timeout: 20) {
            pid = (try? TxFixtures.backends(pg).first { $0.query.contains(tag) && $0.state == "active" })?.pid ?? -1
            return pid > 0
        }
        return pid
    }

    private func assertBackendGone(_ pg: PostgresServer, _ pid: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(waitUntil(timeout: 20, poll: 0.1) { (try? TxFixtures.backends(pg).contains { $0.pid == pid }) == false },
                      "backend \(pid) is still there: \((try? TxFixtures.backends(pg)).map { "\($0)" } ?? "?")",
                      file: file, line: line)
    }

    private func start(_ pg: PostgresServer, mode: String = "transaction", settings: [(String, String)],
                       users: [(String, String)] = [], databaseExtra: String = "") throws -> Pgswift {
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        var s = try TxFixtures.settings(pg, mode: mode, workers: 1, poolSize: 2)
        s.settings = settings.map { (key: $0.0, value: $0.1) }
        s.userSettings = users.map { (user: $0.0, settings: $0.1) }
        if !databaseExtra.isEmpty {
            s.databases[0] = ("testdb", pg.connectionString(dbname: "testdb", extra: databaseExtra))
        }
        return try Pgswift.start(s)
    }

    private func connect(_ px: Pgswift, user: String = TxFixtures.role) throws -> WireClient {
        try WireClient.connect(port: px.port, user: user, database: "testdb",
                               password: user == TxFixtures.role ? TxFixtures.password : PostgresServer.passwords[user],
                               timeout: 30)
    }

    // MARK: query_timeout

    /// `query_timeout = 1` ends `SELECT pg_sleep(5)` after about a second: the client gets PgBouncer's
    /// FATAL 08P01 "query timeout" and is disconnected, the backend is cancelled and closed (gone from
    /// pg_stat_activity, not reused), and the next client gets another backend.
    func testQueryTimeoutEndsRunningQuery() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, settings: [("query_timeout", "1")])
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let client = try connect(px)
        defer { client.close() }
        XCTAssertEqual(try client.query("select 'quick'").first?.first ?? nil, "quick", "a short query is untouched")

        let started = monotonicNow()
        try client.socket.send(WireEncode.query("select pg_sleep(5), 'qt-global'"))
        let pid = runningBackend(pg, tag: "qt-global")
        XCTAssertGreaterThan(pid, 0, "the pg_sleep never showed up")
        let ending = readEnding(client, since: started)
        print("query_timeout = 1: \(ending)")
        assertPgBouncerError(ending, "query timeout", within: 4, px)
        XCTAssertFalse(px.logLines(containing: "closing because: query timeout").isEmpty, px.log().suffix(2000).description)
        guard pid > 0 else { return }
        assertBackendGone(pg, pid)

        let next = try connect(px)
        defer { next.close() }
        let other = Int(try next.query("select pg_backend_pid()::text").first?.first.flatMap { $0 } ?? "")
        XCTAssertNotNil(other)
        XCTAssertNotEqual(other, pid, "the timed-out backend was handed out again")
    }

    /// A per-user query_timeout beats the global one (30 s here), and a global 0 is off: another user
    /// runs a query longer than the per-user value to its end.
    func testPerUserQueryTimeoutBeatsGlobal() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, settings: [("query_timeout", "30")], users: [(TxFixtures.role, "query_timeout=1")])
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let client = try connect(px)
        defer { client.close() }
        let started = monotonicNow()
        try client.socket.send(WireEncode.query("select pg_sleep(5), 'qt-user'"))
        let ending = readEnding(client, since: started)
        print("per-user query_timeout = 1 under a global 30: \(ending)")
        assertPgBouncerError(ending, "query timeout", within: 4, px)

        let bystander = try connect(px, user: "u_trust")
        defer { bystander.close() }
        XCTAssertEqual(try bystander.query("select pg_sleep(1.5), 'slept'").first?.last ?? nil, "slept",
                       "a user without an override has the global 30 s")
    }

    /// query_timeout = 0 (the default) is off: a query longer than any timeout above runs to its end,
    /// and so does a transaction with transaction_timeout = 0.
    func testZeroTimeoutsAreOff() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, settings: [("query_timeout", "0"), ("transaction_timeout", "0"),
                                          ("idle_transaction_timeout", "0")])
        defer { px.stop() }
        let client = try connect(px)
        defer { client.close() }
        _ = try client.query("begin")
        XCTAssertEqual(try client.query("select pg_sleep(2.5), 'done'").first?.last ?? nil, "done")
        _ = try client.query("commit")
    }

    // MARK: transaction_timeout

    /// `transaction_timeout = 2` ends a transaction left open: the client, idle inside it, gets PgBouncer's
    /// FATAL 08P01 "transaction timeout" unasked and is disconnected; its backend is closed.
    func testTransactionTimeoutEndsOpenTransaction() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, settings: [("transaction_timeout", "2")])
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let client = try connect(px)
        defer { client.close() }
        let started = monotonicNow()
        _ = try client.query("begin")
        let pid = Int(try client.query("select pg_backend_pid()::text").first?.first.flatMap { $0 } ?? "") ?? -1
        XCTAssertGreaterThan(pid, 0)
        let ending = readEnding(client, since: started)
        print("transaction_timeout = 2: \(ending)")
        assertPgBouncerError(ending, "transaction timeout", within: 6, px)
        XCTAssertGreaterThan(ending.elapsed, 1.5, "ended before the transaction was 2 s old: \(ending)")
        if pid > 0 { assertBackendGone(pg, pid) }
    }

    /// A per-user transaction_timeout (1 s) ends a long statement too, under a global 0.
    func testPerUserTransactionTimeoutEndsLongStatement() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, settings: [], users: [(TxFixtures.role, "transaction_timeout=1")])
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let client = try connect(px)
        defer { client.close() }
        let started = monotonicNow()
        try client.socket.send(WireEncode.query("select pg_sleep(5), 'tt-user'"))
        let pid = runningBackend(pg, tag: "tt-user")
        let ending = readEnding(client, since: started)
        print("per-user transaction_timeout = 1: \(ending)")
        assertPgBouncerError(ending, "transaction timeout", within: 4, px)
        if pid > 0 { assertBackendGone(pg, pid) }
    }

    // MARK: idle_transaction_timeout, client_idle_timeout (per user)

    /// Per-user idle_transaction_timeout and client_idle_timeout, each under a global that would never
    /// fire: PgBouncer's messages, FATAL 08P01, disconnected.
    func testPerUserIdleTimeouts() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, settings: [("idle_transaction_timeout", "600"), ("client_idle_timeout", "600")],
                           users: [(TxFixtures.role, "idle_transaction_timeout=1"), ("u_trust", "client_idle_timeout=1")])
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let inTx = try connect(px)
        defer { inTx.close() }
        let idle = try connect(px, user: "u_trust")
        defer { idle.close() }
        let started = monotonicNow()
        _ = try inTx.query("begin")
        _ = try idle.query("select 1")
        let txEnding = readEnding(inTx, since: started)
        print("per-user idle_transaction_timeout = 1: \(txEnding)")
        assertPgBouncerError(txEnding, "idle transaction timeout", within: 5, px)
        let idleEnding = readEnding(idle, since: started)
        print("per-user client_idle_timeout = 1: \(idleEnding)")
        assertPgBouncerError(idleEnding, "client_idle_timeout", within: 5, px)
    }

    // MARK: The global values, in PgBouncer's words

    /// The global idle_transaction_timeout and client_idle_timeout, query_timeout for a client still
    /// queued for a server, and client_login_timeout: each ends its client with PgBouncer's FATAL 08P01
    /// and PgBouncer's text ("idle transaction timeout", "client_idle_timeout", "query_timeout",
    /// "client_login_timeout"), then closes it.
    func testGlobalTimeoutsEndClientsWithPgBouncersWords() throws {
        let pg = try PostgresServer.shared()
        let idle = try start(pg, settings: [("idle_transaction_timeout", "1"), ("client_idle_timeout", "1")])
        do {
            defer { idle.stop() }
            let inTx = try connect(idle)
            defer { inTx.close() }
            let quiet = try connect(idle, user: "u_trust")
            defer { quiet.close() }
            let started = monotonicNow()
            _ = try inTx.query("begin")
            _ = try quiet.query("select 1")
            assertPgBouncerError(readEnding(inTx, since: started), "idle transaction timeout", within: 5, idle)
            assertPgBouncerError(readEnding(quiet, since: started), "client_idle_timeout", within: 5, idle)
        }

        // Two servers (the fixture's pool size), both held inside transactions that do not run anything
        // (query_timeout counts running queries only): the third client queues and gets "query_timeout".
        let px = try start(pg, settings: [("query_timeout", "1"), ("query_wait_timeout", "60"), ("client_login_timeout", "1")])
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let holders = try (0..<2).map { _ in try connect(px) }
        defer { holders.forEach { $0.close() } }
        for h in holders { _ = try h.query("begin") }
        let waiting = try connect(px)
        defer { waiting.close() }
        let queuedAt = monotonicNow()
        try waiting.socket.send(WireEncode.query("select 'queued'"))
        assertPgBouncerError(readEnding(waiting, since: queuedAt), "query_timeout", within: 5, px)
        for h in holders { XCTAssertEqual(try h.query("select 'held'"), [["held"]], "the holders were not touched") }

        let silent = try TestSocket(port: px.port)
        defer { silent.close() }
        let connectedAt = monotonicNow()
        let login = WireClient(socket: silent, timeout: 20)
        assertPgBouncerError(readEnding(login, since: connectedAt), "client_login_timeout", within: 5, px)
    }

    // MARK: server_connect_timeout

    /// server_connect_timeout (1 s here; the default is 15): a server connection that has not logged in
    /// that long after its connect began is closed and the pool's login counts as failed, in the words
    /// `server login failed: FATAL server_connect_timeout`, both when the host accepts the connection and
    /// never answers the startup packet (which sees the connection end about a second after it began)
    /// and when its SYNs go unanswered. server_login_retry is 60 s: one attempt each.
    func testServerConnectTimeoutClosesConnectionsThatDoNotLogIn() throws {
        let pg = try PostgresServer.shared()
        let silent = try SilentBackend(.accepting)
        defer { silent.stop() }
        let hole = try SilentBackend(.blackhole)
        defer { hole.stop() }
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.databases += [("silent", "host=127.0.0.1 port=\(silent.port) dbname=testdb"),
                        ("hole", "host=127.0.0.1 port=\(hole.port) dbname=testdb")]
        // client_login_timeout ends the waiting clients soon after the test (a client waiting for its
        // pool's first login is not read, so closing it goes unnoticed until then).
        s.settings = [("server_connect_timeout", "1"), ("server_login_retry", "60"), ("client_login_timeout", "5")]
        let px = try Pgswift.start(s)
        defer { px.stop() }

        // One client per pool: authenticated at once (trust), then waiting for the pool's first server.
        var clients: [TestSocket] = []
        defer { clients.forEach { $0.close() } }
        for db in ["silent", "hole"] {
            let c = try TestSocket(port: px.port)
            try c.send(WireEncode.startup(parameters: [("user", "u_trust"), ("database", db)]))
            clients.append(c)
        }
        for (db, port) in [("silent", silent.port), ("hole", hole.port)] {
            let failed = "\(db)/u_trust@127.0.0.1:\(port) closing because: connect timeout"
            XCTAssertTrue(waitUntil(timeout: 10) { !px.logLines(containing: failed).isEmpty },
                          "no server_connect_timeout for \(db):\n\(px.log())")
        }
        XCTAssertTrue(waitUntil(timeout: 10) { silent.sessions().contains { !$0.healthCheck } }, "\(silent.sessions())")
        let sessions = silent.sessions().filter { !$0.healthCheck }
        XCTAssertEqual(sessions.count, 1, "one attempt within server_login_retry: \(sessions)")
        for session in sessions {
            XCTAssertGreaterThanOrEqual(session.seconds, 0.9, "closed before server_connect_timeout: \(session)")
            XCTAssertLessThan(session.seconds, 10, "\(session)")
        }
        XCTAssertEqual(px.logLines(containing: "closing because: connect timeout").count, 2, px.log())
        XCTAssertTrue(px.logLines(containing: "server login failed").isEmpty, "PgBouncer logs a timeout as a close only")
    }

    // MARK: server_lifetime per database

    /// `server_lifetime=1` on the database entry closes its idle server after about a second, while the
    /// global server_lifetime is an hour.
    func testPerDatabaseServerLifetime() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, settings: [("server_lifetime", "3600")], databaseExtra: "server_lifetime=1")
        defer { px.stop() }
        let client = try connect(px)
        defer { client.close() }
        let pid = Int(try client.query("select pg_backend_pid()::text").first?.first.flatMap { $0 } ?? "") ?? -1
        XCTAssertGreaterThan(pid, 0)
        assertBackendGone(pg, pid)
        let again = Int(try client.query("select pg_backend_pid()::text").first?.first.flatMap { $0 } ?? "") ?? -1
        XCTAssertGreaterThan(again, 0)
        XCTAssertNotEqual(again, pid)
    }
}
