// End to end: LISTEN/NOTIFY in transaction mode (`[pgswift] listen_mode`, ListenRelay.swift).
import Foundation
import XCTest

final class ListenNotifyTests: XCTestCase {
    /// The acceptance: psycopg 3 and asyncpg, 20 listeners on 5 channels, 2 workers, pool_size 2:
    /// 1,000 NOTIFYs each reach every listener of their channel exactly once, in order per sender;
    /// UNLISTEN stops delivery, a disconnect leaves the others alone; at most one listening server
    /// connection per worker (pg_stat_activity).
    func testDriversReceiveEveryNotificationOnce() throws {
        let python = try DriverTests.python()
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 2, poolSize: 2))
        defer { px.stop() }
        let dsn = "postgresql://\(TxFixtures.role):\(TxFixtures.password)@127.0.0.1:\(px.port)/testdb?sslmode=disable"
        let pgDSN = "postgresql://\(TxFixtures.role):\(TxFixtures.password)@127.0.0.1:\(pg.port)/testdb?sslmode=disable"
        let r = try runCommand([python, DriverTests.driversDirectory + "/listen_check.py", dsn, pgDSN],
                               environment: childEnvironment(["PYTHONDONTWRITEBYTECODE": "1"]), timeout: 180)
        let context = "listen_check.py: \(r)\npgswift log (tail):\n\(px.log().suffix(4000))"
        XCTAssertFalse(r.timedOut, context)
        XCTAssertEqual(r.status, 0, context)
        XCTAssertTrue(r.stdout.hasPrefix("OK "), context)
        print(r.stdout.trimmed)
        XCTAssertTrue(px.isRunning)
    }

    /// Wire level, one worker: a LISTEN in a rolled-back transaction does not subscribe, one in a
    /// committed transaction does; the notification comes after the client's ReadyForQuery; the
    /// listening connection is shown in SHOW SERVERS and goes when the last listener leaves.
    func testTransactionSemanticsAndTheListeningConnection() throws {
        let pg = try PostgresServer.shared()
        var s = try TxFixtures.settings(pg, workers: 1, poolSize: 1)
        s.settings.append(("admin_users", TxFixtures.role))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let l = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { l.close() }
        let n = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { n.close() }
        _ = try l.query("BEGIN")
        _ = try l.query("LISTEN rolled")
        _ = try l.query("ROLLBACK")
        _ = try l.query("BEGIN")
        _ = try l.query("LISTEN kept")
        _ = try l.query("COMMIT")
        XCTAssertEqual(try listeningBackends(pg), 1)
        // SHOW SERVERS: the listening connection is a row in state `listen`, beside the pool's server;
        // SHOW POOLS counts it in sv_listen and in none of PgBouncer's sv_ columns.
        let a = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "pgbouncer")
        let servers = try a.show("SHOW SERVERS")
        let state = try XCTUnwrap(servers.columns.firstIndex(of: "state"))
        XCTAssertEqual(servers.rows.filter { $0[state] == "listen" }.count, 1, "\(servers.rows)")
        let pools = try a.show("SHOW POOLS")
        a.close()
        XCTAssertEqual(pools.sum("sv_listen", where: "database", is: "testdb"), 1, "\(pools.rows)")
        let pooled = ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
            .map { pools.sum($0, where: "database", is: "testdb") }.reduce(0, +)
        XCTAssertEqual(pooled, servers.rows.filter { $0[state] != "listen" }.count, "\(pools.rows)")
        _ = try n.query("NOTIFY rolled, 'r'; NOTIFY kept, 'k1'")
        let got = try readNotification(l)
        XCTAssertEqual(got?.channel, "kept")
        XCTAssertEqual(got?.payload, "k1")
        _ = try n.query("select pg_notify('kept', 'k2')")
        let second = try readNotification(l)
        XCTAssertEqual(second?.payload, "k2")
        XCTAssertEqual(try l.query("select 42"), [["42"]])
        XCTAssertNil(try readNotification(l, timeout: 0.5), "no duplicate from the pooled server")
        _ = try l.query("UNLISTEN kept")
        _ = try n.query("NOTIFY kept, 'k3'")
        XCTAssertNil(try readNotification(l, timeout: 0.5), "after UNLISTEN")
        XCTAssertTrue(try waitUntil(timeout: 10) { try listeningBackends(pg) == 0 },
                      "the listening connection closes when nobody listens")
        let admin = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "pgbouncer")
        defer { admin.close() }
        XCTAssertTrue(try waitUntil(timeout: 10) {
            try admin.show("SHOW POOLS").sum("sv_listen", where: "database", is: "testdb") == 0
        }, "SHOW POOLS sv_listen after the last listener left")
    }

    /// The listening connection dies: its subscribers are closed with FATAL 08006, never left waiting.
    func testListeningConnectionLossClosesSubscribers() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer { px.stop() }
        let l = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { l.close() }
        _ = try l.query("LISTEN doomed")
        XCTAssertEqual(try listeningBackends(pg), 1)
        _ = try pg.adminQuery("""
            select pg_terminate_backend(pid) from pg_stat_activity
            where query like '/* pgswift listening connection */%'
            """)
        var fatal: WireErrorFields?
        while let m = try l.readMessage(timeout: 10) {
            if m.typeChar == "E" { fatal = WireErrorFields(body: m.body) }
        }
        XCTAssertEqual(fatal?.sqlstate, "08006", "\(String(describing: fatal))")
        XCTAssertTrue(fatal?.message?.contains("listening connection") ?? false)
    }

    /// listen_mode = off: today's behaviour, no listening connection (the pooled server is reset).
    func testListenModeOffOpensNoListeningConnection() throws {
        let pg = try PostgresServer.shared()
        var s = try TxFixtures.settings(pg, workers: 1, poolSize: 1)
        s.pgswiftSettings.append(("listen_mode", "off"))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let l = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { l.close() }
        _ = try l.query("LISTEN nobody")
        _ = try l.query("select 1")
        XCTAssertEqual(try listeningBackends(pg), 0)
    }

    /// listen_mode = pin, pool_size 1: the listener keeps its server and gets its notifications; another
    /// client waits for that server until the listener's UNLISTEN *; no listening connection is opened.
    func testListenModePinKeepsTheServer() throws {
        let pg = try PostgresServer.shared()
        var s = try TxFixtures.settings(pg, workers: 1, poolSize: 1)
        s.pgswiftSettings.append(("listen_mode", "pin"))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let l = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { l.close() }
        _ = try l.query("LISTEN pinned")
        _ = try pg.adminQuery("NOTIFY pinned, 'direct'", database: "testdb")
        XCTAssertEqual(try readNotification(l)?.payload, "direct")
        XCTAssertEqual(try listeningBackends(pg), 0)
        let b = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { b.close() }
        try b.socket.send(WireEncode.query("select 'b'"))
        XCTAssertNil(try? b.readMessage(timeout: 1), "b waits: the only server is pinned to the listener")
        _ = try l.query("UNLISTEN *")
        XCTAssertEqual(try b.readResult(), [["b"]])
    }

    // MARK: helpers

    private func listeningBackends(_ pg: PostgresServer) throws -> Int {
        let out = try pg.adminQuery("""
            select count(*) from pg_stat_activity
            where backend_type = 'client backend' and query like '/* pgswift listening connection */%'
            """)
        return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// The next NotificationResponse (other messages skipped), nil after `timeout` seconds without one.
    private func readNotification(_ c: WireClient, timeout: Double = 10) throws -> (channel: String, payload: String)? {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            guard let m = try? c.readMessage(timeout: max(0.05, end.timeIntervalSinceNow)) else { return nil }
            if m.typeChar == "A" {
                let parts = m.body.dropFirst(4).split(separator: 0, omittingEmptySubsequences: false)
                return (String(decoding: parts[0], as: UTF8.self), String(decoding: parts[1], as: UTF8.self))
            }
        }
        return nil
    }
}
