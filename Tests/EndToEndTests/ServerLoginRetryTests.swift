// End to end: server_login_retry as PgBouncer applies it (a refused login is reported, then cached; a
// server that is down keeps clients waiting while connects are retried), and forced-user pools.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class ServerLoginRetryTests: XCTestCase {
    /// The first error at login or in the answer to `sql` (nil: it worked).
    private func firstError(_ px: Pgswift, user: String = "u_trust", database: String,
                            _ sql: String = "select 1") throws -> WireErrorFields? {
        try HealthE2E.firstError(port: px.port, user: user, database: database, sql)
    }

    /// (a) A wrong server password: the first client gets PostgreSQL's own error, one arriving within
    /// server_login_retry gets PgBouncer's cached-error message without a new login attempt, and once
    /// the password is fixed (RELOAD) clients get in.
    func testWrongServerPasswordIsReportedThenCachedThenFixed() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1  // the second client must reach the worker that saw the failure
        s.poolMode = "transaction"
        let wrong = pg.connectionString(dbname: "testdb", extra: "user=u_scram password=not-the-password")
        s.databases.append(("wrongpw", wrong))
        s.settings = [("admin_users", "u_trust"), ("server_login_retry", "5")]
        let px = try Pgswift.start(s)
        defer { px.stop() }

        let first = try firstError(px, database: "wrongpw")
        XCTAssertEqual(first?.sqlstate, "28P01", "\(String(describing: first))")
        XCTAssertEqual(first?.message, "password authentication failed for user \"u_scram\"")
        let attempts = px.logLines(containing: "server login failed").count

        let second = try firstError(px, user: "u_md5", database: "wrongpw")
        XCTAssertEqual(second?.sqlstate, "08P01", "\(String(describing: second))")
        XCTAssertEqual(second?.message, "server login has been failing, cached error: password authentication failed "
                       + "for user \"u_scram\" (server_login_retry)")
        XCTAssertEqual(px.logLines(containing: "server login failed").count, attempts, "no new login for the second client")

        s.databases[s.databases.count - 1] = ("wrongpw", pg.connectionString(
            dbname: "testdb", extra: "user=u_scram password=\(PostgresServer.passwords["u_scram"]!)"))
        try s.render(port: px.port, dir: px.dir).write(toFile: px.configPath, atomically: true, encoding: .utf8)
        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { admin.close() }
        _ = try admin.show("RELOAD")
        var last: WireErrorFields? = nil
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.5) {
            last = try? self.firstError(px, database: "wrongpw", "select current_user")
            return last == nil
        }, "still failing after the fix: \(String(describing: last))\n\(px.log().suffix(3000))")
        let c = try WireClient.connect(port: px.port, user: "u_md5", database: "wrongpw")
        defer { c.close() }
        XCTAssertEqual(try c.query("select current_user"), [["u_scram"]])
    }

    /// (b) PostgreSQL stopped: a logged-in client's query and a new client's login wait (fail_fast is
    /// off by default), connects are retried every server_login_retry, and both go through once
    /// PostgreSQL is back, within query_wait_timeout.
    func testClientsWaitWhileTheServerIsDownAndGoOnWhenItIsBack() throws {
        let pg = try PostgresServer.startPrivate()
        defer { pg.stop() }
        var s = PgswiftSettings(postgres: pg)
        s.poolMode = "transaction"
        s.settings = [("admin_users", "u_trust"), ("server_login_retry", "1"), ("query_wait_timeout", "60"), ("client_login_timeout", "60"),
                      ("server_check_delay", "0.5")]
        s.pgswiftSettings = [("health_check_backoff_initial", "0.5"), ("health_check_backoff_max", "2")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let a = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb", timeout: 90)
        defer { a.close() }
        XCTAssertEqual(try a.query("select 1"), [["1"]])

        pg.stopServer()
        XCTAssertTrue(HealthE2E.waitState(px, port: pg.port, "down", timeout: 20), "\((try? HealthE2E.health(px)) ?? [])")
        let loggedIn = Outcome(), newcomer = Outcome()
        let held = Held(a)
        DispatchQueue.global().async {
            loggedIn.set(Result { try held.client.query("select 41 + 1") })
        }
        DispatchQueue.global().async {
            newcomer.set(Result {
                let b = try WireClient.connect(port: px.port, user: "u_password", database: "testdb",
                                               password: PostgresServer.passwords["u_password"], timeout: 90)
                defer { b.close() }
                return try b.query("select 43")
            })
        }
        // Connects for both are refused and retried (several times), and nobody is failed.
        func refusedConnects() -> Int {
            px.logLines(containing: "server login failed").count
                + px.logLines(containing: "connect to 127.0.0.1:\(pg.port) failed").count
        }
        XCTAssertTrue(waitUntil(timeout: 20) { refusedConnects() >= 4 }, px.log().suffix(3000).description)
        XCTAssertNil(loggedIn.value, "the queued client was answered while the server is down")
        XCTAssertNil(newcomer.value, "the client logging in was answered while the server is down")

        try pg.startServer()
        XCTAssertTrue(waitUntil(timeout: 30) { loggedIn.value != nil && newcomer.value != nil },
                      "\(String(describing: loggedIn.value)) \(String(describing: newcomer.value))\n\(px.log().suffix(3000))")
        XCTAssertEqual(try loggedIn.value?.get(), [["42"]])
        XCTAssertEqual(try newcomer.value?.get(), [["43"]])
    }

    /// (c) A database with a forced user: clients of two users share one pool, so pool_size=2 allows
    /// two server connections in all (PgBouncer keeps 2 where one pool per client user made 4).
    func testForcedUserDatabaseHasOnePoolForAllClientUsers() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.poolMode = "transaction"
        s.databases.append(("forced", pg.connectionString(dbname: "testdb", extra: "user=u_password pool_size=2")))
        s.settings = [("admin_users", "u_trust"), ("server_idle_timeout", "0")]
        let px = try Pgswift.start(s)
        defer { px.stop() }

        let users = ["u_trust", "u_md5", "u_trust", "u_md5", "u_trust", "u_md5"]
        let failures = Outcome()
        let group = DispatchGroup()
        for user in users {
            DispatchQueue.global().async(group: group) {
                do {
                    let c = try WireClient.connect(port: px.port, user: user, database: "forced", timeout: 60)
                    defer { c.close() }
                    for _ in 0..<5 {
                        guard try c.query("select current_user, pg_sleep(0.1)").first?.first == "u_password" else {
                            throw E2EError("not logged in as the forced user")
                        }
                    }
                } catch {
                    failures.set(.failure(error) as Result<[[String?]], Error>)
                }
            }
        }
        var most = 0
        while group.wait(timeout: .now() + 0.05) == .timedOut {
            most = max(most, (try? pg.countBackends(user: "u_password", db: "testdb")) ?? 0)
        }
        XCTAssertNil(failures.value, "\(String(describing: failures.value))")
        XCTAssertGreaterThan(most, 0)
        XCTAssertLessThanOrEqual(most, 2, "pool_size=2 of the forced-user database, whoever the clients are")
        XCTAssertLessThanOrEqual(try pg.countBackends(user: "u_password", db: "testdb"), 2)

        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { admin.close() }
        let pools = try admin.show("SHOW POOLS")
        let rows = zip(pools.column("database"), pools.column("user")).filter { $0.0 == "forced" }
        XCTAssertEqual(rows.count, 1, "\(pools.rows)")
        XCTAssertEqual(rows.first?.1, "u_password")
    }

    /// min_pool_size of a forced-user database is kept warm before any client comes, as PgBouncer's
    /// janitor does (its pool is known from the configuration alone).
    func testForcedUserDatabaseIsWarmedBeforeItsFirstClient() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.databases.append(("warmforced", pg.connectionString(dbname: "bench", extra: "user=u_md5 min_pool_size=2")))
        s.settings = [("admin_users", "u_trust")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        var seen = -1
        XCTAssertTrue(waitUntil(timeout: 20) {
            seen = (try? pg.countBackends(user: "u_md5", db: "bench")) ?? -1
            return seen == 2
        }, "\(seen) server connections, no client\n\(px.log().suffix(3000))")
        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { admin.close() }
        let pools = try admin.show("SHOW POOLS")
        XCTAssertEqual(zip(pools.column("database"), pools.column("user")).filter { $0.0 == "warmforced" }.map { $0.1 },
                       ["u_md5"], "\(pools.rows)")
    }
}

/// One result handed from a background thread.
private final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<[[String?]], Error>?
    func set(_ r: Result<[[String?]], Error>) { lock.lock(); if result == nil { result = r }; lock.unlock() }
    var value: Result<[[String?]], Error>? { lock.lock(); defer { lock.unlock() }; return result }
}

/// A client handed to one background thread while the test thread only waits.
private final class Held: @unchecked Sendable {
    let client: WireClient
    init(_ client: WireClient) { self.client = client }
}
