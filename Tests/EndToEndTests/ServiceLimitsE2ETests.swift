// End to end: max_db_connections, max_user_connections (global, per database, per user) and
// max_client_conn for the whole service, min_pool_size warm-up (global, per database), and the
// per-database admin commands (PAUSE db, DISABLE/ENABLE, RECONNECT, WAIT_CLOSE, KILL, KILL_CLIENT).
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class ServiceLimitsE2ETests: XCTestCase {
    private let users = ["u_md5", "u_scram"]

    /// Server connections of `users` on `dbs`, all states. pg_stat_activity copies the backend slots
    /// one by one, not atomically: a sampler preempted mid-copy can see a backend that has already
    /// left and its replacement that started after it. So the count is read twice, in two separate
    /// snapshots, and the lower figure kept: a real excess lasting longer than one read shows in both.
    private func backends(_ pg: PostgresServer, users: [String], dbs: [String] = ["testdb"]) throws -> Int {
        let q = """
            select count(*) from pg_stat_activity
            where datname in (\(dbs.map { "'\($0)'" }.joined(separator: ","))) and
                  usename in (\(users.map { "'\($0)'" }.joined(separator: ","))) and backend_type = 'client backend'
            """
        let counts = try pg.adminQuery([q, q]).split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard counts.count == 2 else { throw E2EError("bad counts: \(counts)") }
        return counts.min()!
    }

    // MARK: 1. max_db_connections across workers

    /// 4 workers, max_db_connections=4, two users with pool_size 10 each, pgbench on both at once:
    /// pg_stat_activity never shows more than 4 connections to the database, and no transaction fails.
    func testMaxDBConnectionsHoldsAcrossWorkers() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.1) { (try? self.backends(pg, users: self.users)) == 0 })
        var s = PgswiftSettings(postgres: pg)
        s.workers = 4
        s.poolMode = "transaction"
        s.defaultPoolSize = 10
        s.settings = [("max_db_connections", "4")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let maxSeen = try loadAndSample(px, loads: users.map { ($0, "testdb") }) { try self.backends(pg, users: self.users) }
        print("max_db_connections: at most \(maxSeen) server connections to testdb")
        XCTAssertLessThanOrEqual(maxSeen, 4, "max_db_connections=4 exceeded across workers")
        XCTAssertGreaterThan(maxSeen, 1, "the load never used more than one connection")
        XCTAssertTrue(px.isRunning)
    }

    /// The same for max_user_connections=3: one user busy on two databases at once.
    func testMaxUserConnectionsHoldsAcrossWorkers() throws {
        let pg = try PostgresServer.shared()
        let count = { () throws -> Int in try self.backends(pg, users: ["u_md5"], dbs: ["testdb", "bench"]) }
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.1) { (try? count()) == 0 })
        var s = PgswiftSettings(postgres: pg)
        s.workers = 4
        s.poolMode = "transaction"
        s.defaultPoolSize = 10
        s.settings = [("max_user_connections", "3")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let maxSeen = try loadAndSample(px, loads: [("u_md5", "testdb"), ("u_md5", "bench")], sample: count)
        print("max_user_connections: at most \(maxSeen) server connections of u_md5")
        XCTAssertLessThanOrEqual(maxSeen, 3, "max_user_connections=3 exceeded across workers")
        XCTAssertGreaterThan(maxSeen, 1)
    }

    /// `[databases]` max_db_connections=2 on `capped` (PostgreSQL's testdb) beats the global 6, across
    /// 2 workers: u_md5 and u_scram, pool_size 5 each, busy on `capped` at once, never have more than
    /// 2 backends together (and reach 2), while u_trust on `testdb` (the global 6) goes past 2.
    func testPerDatabaseMaxDBConnectionsBeatsTheGlobal() throws {
        let pg = try PostgresServer.shared()
        let conditions = ["usename in ('u_md5', 'u_scram') and datname = 'testdb'",
                          "usename = 'u_trust' and datname = 'testdb'"]
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.1) { (try? pg.backendCounts(conditions)) == [0, 0] }, "leftover backends")
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.poolMode = "transaction"
        s.defaultPoolSize = 5
        s.settings = [("max_db_connections", "6")]
        s.databases.append(("capped", pg.connectionString(dbname: "testdb", extra: "max_db_connections=2")))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let loads = [PgbenchLoad(user: "u_md5", database: "capped", clients: 5, transactions: 30),
                     PgbenchLoad(user: "u_scram", database: "capped", clients: 5, transactions: 30),
                     PgbenchLoad(user: "u_trust", database: "testdb", clients: 8, transactions: 30)]
        let maxima = try px.runSampling(loads, script: "select pg_sleep(0.01);") { try pg.backendCounts(conditions) }
        print("per-database max_db_connections: at most \(maxima[0]) backends of capped, \(maxima[1]) of testdb")
        XCTAssertLessThanOrEqual(maxima[0], 2, "capped's max_db_connections=2 exceeded across workers")
        XCTAssertEqual(maxima[0], 2, "capped never used 2 servers: the test shows nothing")
        XCTAssertGreaterThan(maxima[1], 2, "testdb was held to capped's limit")
        XCTAssertLessThanOrEqual(maxima[1], 5)
    }

    /// `[users]` max_user_connections=2 for u_md5 beats the global 6, across 2 workers: u_md5 busy on
    /// two databases at once (pool_size 5 each) never has more than 2 backends (and reaches 2), while
    /// u_scram (the global 6) goes past 2.
    func testPerUserMaxUserConnectionsBeatsTheGlobal() throws {
        let pg = try PostgresServer.shared()
        let conditions = ["usename = 'u_md5' and datname in ('testdb', 'bench')",
                          "usename = 'u_scram' and datname in ('testdb', 'bench')"]
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.1) { (try? pg.backendCounts(conditions)) == [0, 0] }, "leftover backends")
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.poolMode = "transaction"
        s.defaultPoolSize = 5
        s.settings = [("max_user_connections", "6")]
        s.userSettings = [("u_md5", "max_user_connections=2")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let loads = [PgbenchLoad(user: "u_md5", database: "testdb", clients: 5, transactions: 30),
                     PgbenchLoad(user: "u_md5", database: "bench", clients: 5, transactions: 30),
                     PgbenchLoad(user: "u_scram", database: "testdb", clients: 8, transactions: 30)]
        let maxima = try px.runSampling(loads, script: "select pg_sleep(0.01);") { try pg.backendCounts(conditions) }
        print("per-user max_user_connections: at most \(maxima[0]) backends of u_md5, \(maxima[1]) of u_scram")
        XCTAssertLessThanOrEqual(maxima[0], 2, "u_md5's max_user_connections=2 exceeded across workers")
        XCTAssertEqual(maxima[0], 2, "u_md5 never used 2 servers: the test shows nothing")
        XCTAssertGreaterThan(maxima[1], 2, "u_scram was held to u_md5's limit")
        XCTAssertLessThanOrEqual(maxima[1], 5)
    }

    /// Runs pgbench (10 clients x 60 short transactions) for each (user, database) at once, sampling
    /// `sample` until they end; every run must succeed without a failed transaction. Returns the
    /// highest sample.
    private func loadAndSample(_ px: Pgswift, loads: [(user: String, db: String)], sample: () throws -> Int) throws -> Int {
        let dir = try makeTempDirectory(prefix: "limits")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = dir + "/load.sql"
        try "select pg_sleep(0.002);\n".write(toFile: script, atomically: false, encoding: .utf8)
        var children: [ChildProcess] = []
        for (i, l) in loads.enumerated() {
            let target = px.target(user: l.user, database: l.db)
            let argv = [try PostgresTools.path("pgbench"), "-n", "-h", "127.0.0.1", "-p", String(px.port), "-U", l.user,
                        "-f", script, "-c", "10", "-j", "2", "-t", "60", l.db]
            children.append(try ChildProcess.spawn(argv, environment: target.environment,
                                                   stdoutPath: dir + "/\(i).out", stderrPath: dir + "/\(i).err"))
        }
        var maxSeen = 0, samples = 0
        let deadline = monotonicNow() + 240
        while children.contains(where: { $0.isRunning }) && monotonicNow() < deadline {
            if let n = try? sample() {
                maxSeen = max(maxSeen, n)
                samples += 1
            }
            sleepSeconds(0.03)
        }
        for (i, c) in children.enumerated() {
            let timedOut = c.isRunning
            let status = timedOut ? c.terminate(SIGKILL, grace: 0) : (c.poll() ?? -1)
            let summary = Pgbench.parse(c.stdoutText())
            let context = "\(loads[i]): status \(status)\n\(c.stdoutText().suffix(1500))\n\(c.stderrText().suffix(1500))\n" +
                "pgswift log:\n\(px.log().suffix(3000))"
            XCTAssertFalse(timedOut, context)
            XCTAssertEqual(status, 0, context)
            XCTAssertEqual(summary.failedTransactions ?? 0, 0, context)
            XCTAssertEqual(summary.transactions, 600, context)
        }
        XCTAssertGreaterThan(samples, 5)
        return maxSeen
    }

    // MARK: 2. max_client_conn across workers

    /// max_client_conn=20 with 4 workers: 30 clients try, exactly 20 are in (spread over several workers),
    /// the others get PgBouncer's error; when 5 leave, 5 new ones get in and the next is refused.
    func testMaxClientConnHoldsAcrossWorkers() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 4
        s.maxClientConn = 20
        s.poolMode = "transaction"
        s.settings = [("admin_users", "u_trust")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        var admitted: [WireClient] = []
        var refused: [String] = []
        defer { admitted.forEach { $0.close() } }
        func attempt() -> Bool {
            do {
                admitted.append(try WireClient.connect(port: px.port, user: "u_trust", database: "testdb", timeout: 10))
                return true
            } catch let e as WireServerError {
                refused.append("\(e.fields.sqlstate ?? "?") \(e.fields.message ?? "?")")
            } catch {
                refused.append("other: \(error)")
            }
            return false
        }
        for _ in 0..<30 { _ = attempt() }
        // The readiness probe's connection may still be on its way out: allow it to leave.
        XCTAssertTrue(waitUntil(timeout: 10, poll: 0.1) { admitted.count >= 20 || !attempt() && admitted.count >= 20 },
                      "only \(admitted.count) admitted; refusals: \(Set(refused))")
        XCTAssertEqual(admitted.count, 20, "refusals: \(Set(refused))")
        XCTAssertGreaterThanOrEqual(refused.count, 10)
        for r in refused { XCTAssertEqual(r, "53300 no more connections allowed (max_client_conn)") }
        let workers = Set(admitted.map { $0.backendProcessID >> 20 })
        XCTAssertGreaterThan(workers.count, 1, "all clients landed on one worker: the test proves nothing")
        XCTAssertFalse(attempt(), "a 21st client got in")
        // As PgBouncer, the refusal follows the startup packet: libpq, which asks for TLS first
        // (sslmode=prefer), reads why (an answer to its SSLRequest would be "an error response during SSL
        // exchange"), and the admin console gets in beyond the limit.
        let psql = try runCommand(["psql", "host=127.0.0.1 port=\(px.port) user=u_trust dbname=testdb sslmode=prefer "
                                   + "connect_timeout=10", "-Atc", "select 1"], timeout: 30)
        XCTAssertFalse(psql.succeeded, psql.description)
        XCTAssertTrue(psql.stderr.contains("no more connections allowed (max_client_conn)"), psql.description)
        let console = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer", timeout: 10)
        XCTAssertFalse(try console.show("SHOW POOLS").rows.isEmpty)
        console.close()
        // Every admitted client works.
        for c in admitted { XCTAssertEqual(try c.query("select 1"), [["1"]], px.log().suffix(3000).description) }
        // Five leave: five new ones get in (once the workers have seen them go), then no more.
        for c in admitted.prefix(5) { c.close() }
        admitted.removeFirst(5)
        XCTAssertTrue(waitUntil(timeout: 10, poll: 0.05) { admitted.count == 20 || (attempt() && admitted.count == 20) })
        XCTAssertEqual(admitted.count, 20)
        XCTAssertFalse(attempt(), "the limit no longer holds after clients left")

        // A worker that dies takes its clients with it: the supervisor frees their places.
        let slot = admitted[0].backendProcessID >> 20
        let held = admitted.filter { $0.backendProcessID >> 20 == slot }
        guard let line = px.logLines(containing: "worker \(slot) started (pid ").last,
              let pid = Int32(line.split(separator: "(pid ").last?.dropLast() ?? "") else {
            return XCTFail("no start line for worker \(slot)")
        }
        XCTAssertEqual(kill(pid, SIGKILL), 0)
        for c in held { XCTAssertTrue(c.socket.readUntilClosed(timeout: 10).closed) }
        admitted.removeAll { c in held.contains { $0 === c } }
        XCTAssertTrue(waitUntil(timeout: 15, poll: 0.1) { admitted.count == 20 || (attempt() && admitted.count == 20) },
                      "\(held.count) places of the killed worker not given back: \(admitted.count) admitted")
        XCTAssertFalse(attempt(), "the limit no longer holds after a worker died")
    }

    /// max_client_conn across `pgswift upgrade` (supervisor re-exec, then every worker replaced while
    /// its idle clients move to the successor): the count stays exact — the moved clients keep their
    /// places, no extra client gets in, and places freed after the roll are given out again.
    func testMaxClientConnHoldsAcrossARollingUpgrade() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        // 12 clients held, one place left for the admin connection of `pgswift upgrade` (it counts too).
        s.maxClientConn = 13
        s.poolMode = "transaction"
        let px = try Pgswift.start(s)
        defer { px.stop() }
        var admitted: [WireClient] = []
        defer { admitted.forEach { $0.close() } }
        func attempt() -> Bool {
            guard let c = try? WireClient.connect(port: px.port, user: "u_trust", database: "testdb", timeout: 10) else {
                return false
            }
            admitted.append(c)
            return true
        }
        for _ in 0..<12 { XCTAssertTrue(attempt()) }
        let before = Set(px.workerPids())

        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)\n\(px.log().suffix(3000))")
        XCTAssertTrue(waitUntil(timeout: 60, poll: 0.2) { Set(px.workerPids()).isDisjoint(with: before) },
                      "old workers still running: \(px.workerPids()) vs \(before)")
        for c in admitted { XCTAssertEqual(try c.query("select 1"), [["1"]], "a client did not survive the roll") }
        // The upgrade's admin connection has left: exactly one place is free.
        XCTAssertTrue(waitUntil(timeout: 10, poll: 0.05) { admitted.count == 13 || (attempt() && admitted.count == 13) },
                      "the place of the upgrade's connection was not given back")
        XCTAssertFalse(attempt(), "a 14th client got in after the upgrade: moved clients lost their places")
        for c in admitted.prefix(4) { c.close() }
        admitted.removeFirst(4)
        XCTAssertTrue(waitUntil(timeout: 10, poll: 0.05) { admitted.count == 13 || (attempt() && admitted.count == 13) },
                      "places freed after the upgrade were not given out: \(admitted.count) admitted")
        XCTAssertFalse(attempt(), "the limit no longer holds after the upgrade")
    }

    // MARK: 3. min_pool_size

    /// min_pool_size=3 over 4 workers, pool size 10: once the pool has been used, PostgreSQL sees 3
    /// idle connections (not 3 per worker; 4 when the client's own server sits on a worker whose part
    /// of min_pool_size is 0), and they come back after pg_terminate_backend.
    func testMinPoolSizeKeepsServersWarmServiceWide() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.1) { (try? self.backends(pg, users: ["u_md5"])) == 0 })
        var s = PgswiftSettings(postgres: pg)
        s.workers = 4
        s.poolMode = "transaction"
        s.defaultPoolSize = 10
        s.settings = [("min_pool_size", "3")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_md5", database: "testdb")
        _ = try c.query("select 1")
        c.close()
        XCTAssertTrue(waitUntil(timeout: 20, poll: 0.1) { ((try? self.backends(pg, users: ["u_md5"])) ?? 0) >= 3 },
                      "backends: \((try? backends(pg, users: ["u_md5"])) ?? -1)\n\(px.log().suffix(3000))")
        // It stays there, not 3 per worker.
        var maxSeen = 0
        let until = monotonicNow() + 1.0
        while monotonicNow() < until {
            maxSeen = max(maxSeen, (try? backends(pg, users: ["u_md5"])) ?? 0)
            sleepSeconds(0.1)
        }
        XCTAssertTrue((3...4).contains(maxSeen), "\(maxSeen) server connections")
        _ = try pg.adminQuery("""
            select pg_terminate_backend(pid) from pg_stat_activity where usename = 'u_md5' and datname = 'testdb'
            """)
        XCTAssertTrue(waitUntil(timeout: 20, poll: 0.1) { ((try? self.backends(pg, users: ["u_md5"])) ?? 0) >= 3 },
                      "not refilled after pg_terminate_backend")
    }

    /// `[databases]` min_pool_size beats the global one (4), over 2 workers (pool size 10): once each
    /// pool has been used by one client that then left, `warmdb` (min_pool_size=2) keeps 2 servers
    /// open, `colddb` (min_pool_size=0) only the one it used, and `testdb` (the global) 4. All three
    /// are PostgreSQL's testdb, told apart by user.
    func testPerDatabaseMinPoolSizeBeatsTheGlobal() throws {
        let pg = try PostgresServer.shared()
        let pools = [("u_md5", "warmdb"), ("u_password", "colddb"), ("u_scram", "testdb")]
        let conditions = pools.map { "usename = '\($0.0)' and datname = 'testdb'" }
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.1) { (try? pg.backendCounts(conditions)) == [0, 0, 0] }, "leftover backends")
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.poolMode = "transaction"
        s.defaultPoolSize = 10
        s.settings = [("min_pool_size", "4")]
        s.databases += [("warmdb", pg.connectionString(dbname: "testdb", extra: "min_pool_size=2")),
                        ("colddb", pg.connectionString(dbname: "testdb", extra: "min_pool_size=0"))]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        for (user, db) in pools {
            let c = try WireClient.connect(port: px.port, user: user, database: db)
            XCTAssertEqual(try c.query("select 1"), [["1"]])
            c.close()
        }
        XCTAssertTrue(waitUntil(timeout: 20, poll: 0.1) {
            guard let n = try? pg.backendCounts(conditions) else { return false }
            return n[0] >= 2 && n[2] >= 4
        }, "not warmed: \((try? pg.backendCounts(conditions)) ?? [])\n\(px.log().suffix(3000))")
        // It stays there with no client: the database's values, not 2 or 4 per worker.
        var maxSeen = [0, 0, 0]
        let until = monotonicNow() + 1.5
        while monotonicNow() < until {
            if let n = try? pg.backendCounts(conditions) { maxSeen = zip(maxSeen, n).map { max($0, $1) } }
            sleepSeconds(0.1)
        }
        print("per-database min_pool_size: \(maxSeen) servers open for \(pools)")
        XCTAssertEqual(maxSeen, [2, 1, 4], "warmdb (2), colddb (0: the one used), testdb (global 4)")
    }

    // MARK: 4. Per-database admin commands

    private func adminSettings(_ pg: PostgresServer) -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.workers = 3
        s.poolMode = "transaction"
        s.settings = [("admin_users", "u_trust")]
        return s
    }

    private func admin(_ px: Pgswift) throws -> WireClient {
        try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
    }

    /// Enough clients of a database that every worker has some (SO_REUSEPORT spreads by address hash).
    private func clients(_ px: Pgswift, db: String, count: Int = 8) throws -> [WireClient] {
        try (0..<count).map { _ in try WireClient.connect(port: px.port, user: "u_trust", database: db) }
    }

    func testPauseDatabasePausesOnlyThatDatabase() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(adminSettings(pg))
        defer { px.stop() }
        let a = try admin(px)
        defer { a.close() }
        let test = try clients(px, db: "testdb"), bench = try clients(px, db: "bench", count: 4)
        defer { (test + bench).forEach { $0.close() } }
        XCTAssertGreaterThan(Set(test.map { $0.backendProcessID >> 20 }).count, 1)
        // A transaction in progress: PAUSE testdb waits for it.
        _ = try test[0].query("begin")
        _ = try test[0].query("select 1")
        try a.sendQuery("PAUSE testdb")
        XCTAssertThrowsError(try a.readMessage(timeout: 0.5), "PAUSE returned while a transaction was open")
        _ = try test[0].query("commit")
        XCTAssertNil(try a.finishQuery(timeout: 10))
        XCTAssertEqual(try a.show("SHOW DATABASES").rows.first { $0.first == "testdb" }.map { row in
            row[(try a.show("SHOW DATABASES")).columns.firstIndex(of: "paused")!] }, "1")
        for c in test { try c.sendQuery("select 1") }
        for c in bench { XCTAssertEqual(try c.query("select 2"), [["2"]], "bench must not be paused") }
        for c in test { XCTAssertThrowsError(try c.readMessage(timeout: 0.3), "a query on the paused database ran") }
        XCTAssertEqual(try a.show("RESUME testdb").rows.count, 0)
        for c in test { XCTAssertNil(try c.finishQuery(timeout: 10)) }
        XCTAssertThrowsError(try a.show("RESUME testdb")) { e in
            XCTAssertEqual((e as? WireServerError)?.fields.message, "database testdb is not paused")
        }
    }

    func testDisableEnableAndSuspend() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(adminSettings(pg))
        defer { px.stop() }
        let a = try admin(px)
        defer { a.close() }
        let kept = try clients(px, db: "testdb", count: 3)
        defer { kept.forEach { $0.close() } }
        _ = try a.show("DISABLE testdb")
        for _ in 0..<6 {
            XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")) { e in
                XCTAssertEqual((e as? WireServerError)?.fields.message, "database \"testdb\" is disabled")
            }
        }
        for c in kept { XCTAssertEqual(try c.query("select 1"), [["1"]], "connected clients keep working") }
        try WireClient.connect(port: px.port, user: "u_trust", database: "bench").close()
        _ = try a.show("ENABLE testdb")
        for _ in 0..<6 { try WireClient.connect(port: px.port, user: "u_trust", database: "testdb").close() }
        XCTAssertThrowsError(try a.show("DISABLE")) { e in
            XCTAssertEqual((e as? WireServerError)?.fields.message, "a database is required")
        }
        XCTAssertThrowsError(try a.show("SUSPEND")) { e in
            XCTAssertEqual((e as? WireServerError)?.fields.sqlstate, "0A000")
        }
    }

    /// DISABLE db survives `pgswift upgrade` (supervisor re-exec, then new workers): the new processes
    /// refuse the database too, and ENABLE afterwards reaches them.
    func testDisabledDatabaseStaysDisabledAcrossUpgrade() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(adminSettings(pg))
        defer { px.stop() }
        let a = try admin(px)
        _ = try a.show("DISABLE testdb")
        a.close()
        let before = Set(px.workerPids())
        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)")
        XCTAssertTrue(waitUntil(timeout: 60, poll: 0.2) { Set(px.workerPids()).isDisjoint(with: before) })
        for _ in 0..<6 {
            XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")) { e in
                XCTAssertEqual((e as? WireServerError)?.fields.message, "database \"testdb\" is disabled")
            }
        }
        let b = try admin(px)
        defer { b.close() }
        _ = try b.show("ENABLE testdb")
        for _ in 0..<6 { try WireClient.connect(port: px.port, user: "u_trust", database: "testdb").close() }
    }

    func testReconnectAndWaitClose() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.1) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 })
        let px = try Pgswift.start(adminSettings(pg))
        defer { px.stop() }
        let a = try admin(px)
        defer { a.close() }
        let cs = try clients(px, db: "testdb", count: 6)
        defer { cs.forEach { $0.close() } }
        var before = Set<String>()
        for c in cs { before.insert(try c.query("select pg_backend_pid()")[0][0]!) }
        _ = try cs[0].query("begin")
        _ = try cs[0].query("select 1")
        _ = try a.show("RECONNECT testdb")
        try a.sendQuery("WAIT_CLOSE testdb")
        XCTAssertThrowsError(try a.readMessage(timeout: 0.5), "WAIT_CLOSE returned while an old server was in use")
        _ = try cs[0].query("commit")
        XCTAssertNil(try a.finishQuery(timeout: 10))
        // Every server now is new.
        let alive = try pg.adminQuery("select pid from pg_stat_activity where usename = 'u_trust' and datname = 'testdb'")
        let now = Set(alive.split(separator: "\n").map { String($0) })
        XCTAssertTrue(before.isDisjoint(with: now), "old servers survived RECONNECT: \(before.intersection(now))")
        for c in cs { XCTAssertFalse(before.contains(try c.query("select pg_backend_pid()")[0][0]!)) }
    }

    func testKillAndKillClient() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(adminSettings(pg))
        defer { px.stop() }
        let a = try admin(px)
        defer { a.close() }
        // KILL_CLIENT: the client whose SHOW CLIENTS id is given, and only it.
        let cs = try clients(px, db: "bench", count: 4)
        defer { cs.forEach { $0.close() } }
        let list = try a.show("SHOW CLIENTS")
        let portCol = list.columns.firstIndex(of: "port")!, idCol = list.columns.firstIndex(of: "id")!
        let victim = cs[2]
        guard let row = list.rows.first(where: { $0[portCol] == String(victim.socket.localPort) }), let id = row[idCol] else {
            return XCTFail("client not in SHOW CLIENTS: \(list.rows)")
        }
        _ = try a.show("KILL_CLIENT \(id)")
        XCTAssertTrue(victim.socket.readUntilClosed(timeout: 10).closed)
        for c in cs where c !== victim { XCTAssertEqual(try c.query("select 1"), [["1"]]) }
        XCTAssertThrowsError(try a.show("KILL_CLIENT 999999999")) { e in
            XCTAssertEqual((e as? WireServerError)?.fields.message, "client not found")
        }
        // KILL testdb: its clients and servers go, bench is untouched, new queries wait for RESUME.
        let test = try clients(px, db: "testdb", count: 6)
        for c in test { _ = try c.query("select 1") }
        _ = try a.show("KILL testdb")
        for c in test { XCTAssertTrue(c.socket.readUntilClosed(timeout: 10).closed, "a testdb client survived KILL") }
        XCTAssertTrue(waitUntil(timeout: 10, poll: 0.1) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 })
        for c in cs where c !== victim { XCTAssertEqual(try c.query("select 1"), [["1"]]) }
        let late = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { late.close() }
        try late.sendQuery("select 3")
        XCTAssertThrowsError(try late.readMessage(timeout: 0.5), "a killed database served a query before RESUME")
        _ = try a.show("RESUME testdb")
        XCTAssertNil(try late.finishQuery(timeout: 10))
    }
}

extension PgbenchRun {
    /// `sampled`, but each sample is the lower of two counts read in separate snapshots:
    /// pg_stat_activity copies backend slots one by one, so a sampler preempted mid-copy on a loaded
    /// machine can count a backend that already left together with the one that replaced it.
    static func sampledStrict(_ target: ClientTarget, _ args: [String], pg: PostgresServer, user: String,
                              db: String, timeout: Double) throws -> PgbenchRun {
        let dir = try makeTempDirectory(prefix: "pgbench")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let argv = [try PostgresTools.path("pgbench"), "-h", "127.0.0.1", "-p", String(target.port),
                    "-U", target.user] + args + [target.database]
        let child = try ChildProcess.spawn(argv, environment: target.environment,
                                           stdoutPath: dir + "/out", stderrPath: dir + "/err")
        let q = """
            select count(*) from pg_stat_activity
            where usename = '\(user)' and datname = '\(db)' and backend_type = 'client backend'
            """
        var maxSeen = 0
        var samples = 0
        let deadline = monotonicNow() + timeout
        while child.isRunning && monotonicNow() < deadline {
            if let out = try? pg.adminQuery([q, q]) {
                let counts = out.split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                if let n = counts.min(), counts.count == 2 {
                    maxSeen = max(maxSeen, n)
                    samples += 1
                }
            }
            sleepSeconds(0.04)
        }
        let timedOut = child.isRunning
        let status = timedOut ? child.terminate(SIGKILL, grace: 0) : (child.poll() ?? -1)
        let result = CommandResult(status: timedOut ? -1 : status, stdout: child.stdoutText(),
                                   stderr: child.stderrText(), timedOut: timedOut)
        return PgbenchRun(result: result, summary: Pgbench.parse(result.stdout), maxBackends: maxSeen, samples: samples)
    }
}
