// End to end: the admin console's SET key = value, applied to every worker, refused or ignored as PgBouncer does.
import Foundation
import XCTest
import Shared
#if canImport(Glibc)
import Glibc
#endif

/// Everything a simple query answered: command tags, NOTICE texts, the error if any.
struct QueryOutcome {
    var tags: [String] = []
    var notices: [String] = []
    var error: WireErrorFields?
}

extension WireClient {
    func outcome(_ sql: String) throws -> QueryOutcome {
        try sendQuery(sql)
        var o = QueryOutcome()
        while true {
            guard let m = try readMessage() else { throw E2EError("connection closed during '\(sql)'") }
            switch m.typeChar {
            case "C": o.tags.append(String(decoding: m.body.prefix { $0 != 0 }, as: UTF8.self))
            case "N": o.notices.append(WireErrorFields(body: m.body).message ?? "")
            case "E": o.error = WireErrorFields(body: m.body)
            case "Z": return o
            default: continue
            }
        }
    }
}

final class AdminSetTests: XCTestCase {
    private func settings(_ pg: PostgresServer, workers: Int, poolSize: Int = 2) -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.workers = workers
        s.poolMode = "transaction"
        s.defaultPoolSize = poolSize
        s.settings = [("admin_users", "u_trust"), ("stats_users", "u_password")]
        return s
    }

    private func admin(_ px: Pgswift) throws -> WireClient {
        try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
    }

    private func configValue(_ a: WireClient, _ key: String) throws -> String? {
        try a.show("SHOW CONFIG").rows.first { $0[0] == key }?[1] ?? nil
    }

    /// The worker slot a client landed on (BackendKeyData's process id is slot << 20 | index).
    private func slot(of c: WireClient) -> Int { Int(c.backendProcessID >> 20) }

    func testSetDefaultPoolSizeChangesShowDatabasesAndOpensThatManyServers() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(waitUntil(timeout: 20) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 })
        let px = try Pgswift.start(settings(pg, workers: 2, poolSize: 2))
        defer { px.stop() }
        let a = try admin(px)
        defer { a.close() }
        func poolSize() throws -> String? {
            let d = try a.show("SHOW DATABASES")
            return d.rows.first { $0[0] == "testdb" }?[d.columns.firstIndex(of: "pool_size")!]
        }
        XCTAssertEqual(try poolSize(), "2")

        let set = try a.outcome("SET default_pool_size = 5")
        XCTAssertNil(set.error, "\(String(describing: set.error))")
        XCTAssertEqual(set.tags, ["SET default_pool_size=5"])
        XCTAssertEqual(try poolSize(), "5")
        XCTAssertEqual(try configValue(a, "default_pool_size"), "5")

        // Seven clients each hold a server in a transaction: five get one (the service-wide pool size,
        // over both workers), two wait; never more than five backends.
        let clients = try (0..<7).map { _ in try WireClient.connect(port: px.port, user: "u_trust", database: "testdb") }
        defer { clients.forEach { $0.close() } }
        for c in clients { try c.sendQuery("begin; select pg_backend_pid()") }
        var most = 0
        let reachedFive = waitUntil(timeout: 30) {
            let n = (try? pg.countBackends(user: "u_trust", db: "testdb")) ?? 0
            most = max(most, n)
            return n == 5
        }
        XCTAssertTrue(reachedFive, "backends seen: at most \(most)")
        // The other two wait for a server, as SHOW POOLS says over both workers.
        XCTAssertTrue(try waitUntil(timeout: 10) {
            let pools = try a.show("SHOW POOLS")
            return pools.sum("cl_waiting", where: "database", is: "testdb") == 2
                && pools.sum("sv_active", where: "database", is: "testdb") == 5
        })
        most = max(most, try pg.countBackends(user: "u_trust", db: "testdb"))
        XCTAssertEqual(most, 5, "slots: \(clients.map(slot(of:)))")
        for c in clients { try c.sendQuery("commit") }
        XCTAssertTrue(px.isRunning)
    }

    func testSetReachesEveryWorkerAndRespawnedOnes() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(settings(pg, workers: 2))
        defer { px.stop() }
        let a = try admin(px)
        defer { a.close() }

        XCTAssertEqual(try a.outcome("SET query_wait_timeout TO '33'").tags, ["SET query_wait_timeout=33"])
        XCTAssertTrue(waitUntil(timeout: 10) { px.logLines(containing: "configuration reloaded").count >= 2 },
                      "both workers reload:\n\(px.log())")
        // Every admin connection, whichever worker it lands on, sees the value.
        let admins = try (0..<6).map { _ in try admin(px) }
        defer { admins.forEach { $0.close() } }
        for other in admins {
            XCTAssertEqual(try configValue(other, "query_wait_timeout"), "33")
        }
        XCTAssertEqual(try a.outcome("SET client_idle_timeout = 1").tags, ["SET client_idle_timeout=1"])
        XCTAssertTrue(waitUntil(timeout: 10) { px.logLines(containing: "configuration reloaded").count >= 4 },
                      "both workers reload once per SET:\n\(px.log())")

        // The workers act on it: idle clients on both workers are closed after about a second.
        var clients: [WireClient] = []
        defer { clients.forEach { $0.close() } }
        XCTAssertTrue(waitUntil(timeout: 20) {
            if let c = try? WireClient.connect(port: px.port, user: "u_trust", database: "testdb") { clients.append(c) }
            return Set(clients.map(slot(of:))) == [0, 1]
        }, "clients on both workers")
        for c in clients {
            let (data, closed) = c.socket.readUntilClosed(timeout: 15)
            XCTAssertTrue(closed, "worker \(slot(of: c)) closes an idle client")
            XCTAssertTrue(String(decoding: data, as: UTF8.self).contains("client_idle_timeout"), "worker \(slot(of: c))")
        }

        // A worker started after SET (here: a crash replacement) runs with the SET values too.
        let before = Set(px.workerPids())
        let victim = try XCTUnwrap(before.first)
        kill(victim, SIGKILL)
        var replacement: pid_t = 0
        XCTAssertTrue(waitUntil(timeout: 20) {
            let now = Set(px.workerPids()).subtracting(before)
            replacement = now.first ?? 0
            return now.count == 1 && !Set(px.workerPids()).contains(victim)
        })
        let cmdline = readTextFile("/proc/\(replacement)/cmdline").split(separator: "\0").map(String.init)
        XCTAssertTrue(cmdline.contains("client_idle_timeout=1") && cmdline.contains("--set"), "\(cmdline)")
        XCTAssertTrue(px.isRunning)
    }

    func testErrorsRestartOnlyKeysAndPermissions() throws {
        let pg = try PostgresServer.shared()
        var s = settings(pg, workers: 2)
        s.authType = "plain"
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let a = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer",
                                       password: PostgresServer.passwords["u_trust"])
        defer { a.close() }

        // Unknown key and bad value: PgBouncer's "SET failed" (08P01); the reason is in DETAIL and the log.
        for (sql, detail) in [("SET no_such_key = 1", "unknown parameter: no_such_key"),
                              ("SET default_pool_size = lots", "not an integer"),
                              ("SET pool_mode = 'sometimes'", "expected one of"),
                              ("SET auth_file = '/nonexistent/users.txt'", "/nonexistent/users.txt")] {
            let o = try a.outcome(sql)
            XCTAssertEqual(o.error?.message, "SET failed", sql)
            XCTAssertEqual(o.error?.sqlstate, "08P01", sql)
            XCTAssertTrue(o.error?.fields["D"]?.contains(detail) ?? false, "\(sql): \(String(describing: o.error?.fields))")
            XCTAssertEqual(o.tags, [], sql)
        }
        XCTAssertEqual(try configValue(a, "default_pool_size"), "2")
        XCTAssertEqual(try configValue(a, "auth_file").map { $0.hasSuffix("/userlist.txt") && !$0.hasPrefix("/nonexistent") },
                       true)
        XCTAssertEqual(px.logLines(containing: "SET no_such_key=1 failed").count, 1, px.log())

        // A key PgBouncer cannot change online: accepted and ignored like PgBouncer, with a NOTICE here.
        let port = try configValue(a, "listen_port")
        let ignored = try a.outcome("SET listen_port = 7000")
        XCTAssertNil(ignored.error)
        XCTAssertEqual(ignored.tags, ["SET listen_port=7000"])
        XCTAssertTrue(ignored.notices.first?.contains("cannot be changed online") ?? false, "\(ignored.notices)")
        XCTAssertEqual(try configValue(a, "listen_port"), port)

        // SHOW CONFIG's changeable column says which keys SET changes.
        let config = try a.show("SHOW CONFIG")
        let changeable = Dictionary(uniqueKeysWithValues: config.rows.map { ($0[0]!, $0[3]!) })
        XCTAssertEqual(changeable["listen_port"], "no")
        XCTAssertEqual(changeable["unix_socket_dir"], "no")
        XCTAssertEqual(changeable["workers"], "no")
        XCTAssertEqual(changeable["default_pool_size"], "yes")
        XCTAssertEqual(changeable["cancel_wait_timeout"], "yes")

        // A key pgswift does not implement may be SET as in PgBouncer; the log warns as at load time.
        XCTAssertEqual(try a.outcome("SET cancel_wait_timeout = 2").tags, ["SET cancel_wait_timeout=2"])
        XCTAssertEqual(try configValue(a, "cancel_wait_timeout"), "2")
        XCTAssertGreaterThanOrEqual(px.logLines(containing: "admin console SET:0: cancel_wait_timeout is not implemented").count,
                                    1, px.log())

        // stats_users may SHOW, not SET; the session-parameter SET drivers send stays open to all.
        let stats = try WireClient.connect(port: px.port, user: "u_password", database: "pgbouncer",
                                           password: PostgresServer.passwords["u_password"])
        defer { stats.close() }
        let refused = try stats.outcome("SET default_pool_size = 9")
        XCTAssertEqual(refused.error?.message, "admin access needed")
        XCTAssertEqual(refused.error?.sqlstate, "08P01")
        XCTAssertEqual(try stats.outcome("SET client_encoding = 'UTF8'").tags, ["SET"])
        XCTAssertEqual(try configValue(a, "default_pool_size"), "2")
        XCTAssertTrue(px.isRunning)
    }

    /// As in PgBouncer, a RELOAD re-reads the file and the file wins: SET values are gone.
    func testReloadDropsSetValues() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(settings(pg, workers: 2, poolSize: 2))
        defer { px.stop() }
        let a = try admin(px)
        defer { a.close() }

        XCTAssertNil(try a.outcome("SET default_pool_size = 5").error)
        XCTAssertNil(try a.outcome("SET server_idle_timeout = 77").error)
        XCTAssertNil(try a.outcome("SET default_pool_size = 6").error)
        XCTAssertEqual(try configValue(a, "default_pool_size"), "6")
        XCTAssertEqual(try configValue(a, "server_idle_timeout"), "77")

        XCTAssertEqual(try a.outcome("RELOAD").tags, ["RELOAD"])
        XCTAssertEqual(try configValue(a, "default_pool_size"), "2")
        XCTAssertEqual(try configValue(a, "server_idle_timeout"), "600")
        XCTAssertEqual(px.logLines(containing: "dropping the SET values default_pool_size, server_idle_timeout").count, 1,
                       px.log())
        // Workers started from now on get no --set.
        let before = Set(px.workerPids())
        kill(try XCTUnwrap(before.first), SIGKILL)
        var replacement: pid_t = 0
        XCTAssertTrue(waitUntil(timeout: 20) {
            replacement = Set(px.workerPids()).subtracting(before).first ?? 0
            return replacement != 0
        })
        let cmdline = readTextFile("/proc/\(replacement)/cmdline")
        XCTAssertFalse(cmdline.contains("--set"), cmdline)

        // A RELOAD that fails (on a new admin connection: the old one may have been on the killed worker) leaves configuration and SET values alone, with PgBouncer's message.
        let b = try admin(px)
        defer { b.close() }
        XCTAssertNil(try b.outcome("SET default_pool_size = 4").error)
        try "[pgbouncer]\ndefault_pool_size = lots\n".write(toFile: px.configPath, atomically: true, encoding: .utf8)
        let failed = try b.outcome("RELOAD")
        XCTAssertEqual(failed.error?.message, "RELOAD failed, see logs for additional details")
        XCTAssertEqual(failed.error?.sqlstate, "F0000")
        XCTAssertEqual(try configValue(b, "default_pool_size"), "4")
        XCTAssertTrue(px.isRunning)
    }

    /// PgBouncer keeps a TLS value SET even when the TLS set-up then fails (key and certificate are
    /// SET one after the other), says so in a NOTICE and keeps the old contexts.
    func testTLSKeySetThatCannotBeSetUpIsKeptWithANotice() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(settings(pg, workers: 2))
        defer { px.stop() }
        let a = try admin(px)
        defer { a.close() }

        let o = try a.outcome("SET server_tls_key_file = '/nonexistent/bouncer.key'")
        XCTAssertNil(o.error, "\(String(describing: o.error))")
        XCTAssertEqual(o.tags, ["SET server_tls_key_file=/nonexistent/bouncer.key"])
        XCTAssertEqual(o.notices, ["TLS settings could not be applied, still using old configuration"])
        XCTAssertEqual(try configValue(a, "server_tls_key_file"), "/nonexistent/bouncer.key")
        // Workers keep serving with their old contexts, and a replacement worker starts too.
        let before = Set(px.workerPids())
        kill(try XCTUnwrap(before.first), SIGKILL)
        XCTAssertTrue(waitUntil(timeout: 20) { !Set(px.workerPids()).subtracting(before).isEmpty })
        var slots: Set<Int> = []
        // Clients stay connected until both workers answered: a worker passes the listener on only
        // once it holds more than its share, so one-at-a-time clients would all reach the same one.
        var held: [WireClient] = []
        defer { held.forEach { $0.close() } }
        XCTAssertTrue(waitUntil(timeout: 20) {
            guard let c = try? WireClient.connect(port: px.port, user: "u_trust", database: "testdb") else { return false }
            held.append(c)
            if (try? c.query("select 1")) == [["1"]] { slots.insert(slot(of: c)) }
            return slots == [0, 1]
        }, "both workers answer: \(slots)\n\(px.log())")
        XCTAssertEqual(px.logLines(containing: "worker", "cannot start").count, 0, px.log())
        XCTAssertEqual(px.logLines(containing: "TLS settings from SET not applied, using the config file's").count, 1,
                       px.log())
        XCTAssertTrue(px.isRunning)
    }
}
