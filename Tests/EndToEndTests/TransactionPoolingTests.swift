// End to end: transaction pooling under pgbench load, backend pinning inside transactions, cleanup
// after a client dies mid-transaction, pg_terminate_backend, and statement mode's refusal of BEGIN.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// What the transaction-pooling test files share: a role of their own (so backend counts are never
/// disturbed by other tests' leftovers), settings, and pg_stat_activity look-ups over the admin socket.
enum TxFixtures {
    /// Logs in to PostgreSQL over TCP with SCRAM (the pg_hba catch-all); pgswift uses the userlist password.
    static let role = "u_txpool"
    static let password = "txpool-pw"

    /// Creates `role` once per cluster (idempotent, so any test may call it first).
    static func ensureRole(_ pg: PostgresServer) throws {
        try pg.adminQuery("""
            do $$ begin
              if not exists (select from pg_roles where rolname = '\(role)') then
                create role \(role) login password '\(password)';
              end if;
            end $$
            """)
    }

    /// pgswift in `mode` with `workers` workers and `poolSize` servers per pool (for the service); the
    /// userlist also holds `role`. Client auth is trust unless the caller changes it. `postgresqlErrors`:
    /// `[pgswift] prepared_statement_errors = postgresql` (PostgreSQL's errors for a statement name in
    /// use or unknown, where the default disconnects as PgBouncer does).
    static func settings(_ pg: PostgresServer, mode: String = "transaction", workers: Int,
                         poolSize: Int, postgresqlErrors: Bool = false) throws -> PgswiftSettings {
        try ensureRole(pg)
        var s = PgswiftSettings(postgres: pg)
        s.poolMode = mode
        s.workers = workers
        s.defaultPoolSize = poolSize
        s.users.append((role, password))
        if postgresqlErrors { s.pgswiftSettings.append(("prepared_statement_errors", "postgresql")) }
        return s
    }

    static func target(_ px: Pgswift) -> ClientTarget {
        px.target(user: role, database: "testdb", password: password)
    }

    /// Client backends of `user` on `db`: (pid, state, first 200 characters of the query).
    static func backends(_ pg: PostgresServer, user: String = role, db: String = "testdb")
        throws -> [(pid: Int, state: String, query: String)] {
        let out = try pg.adminQuery("""
            select pid, coalesce(state, ''), translate(left(query, 200), E'\\n|', '  ')
            from pg_stat_activity
            where usename = '\(user)' and datname = '\(db)' and backend_type = 'client backend'
            order by pid
            """)
        return out.split(separator: "\n").compactMap { line in
            let f = line.split(separator: "|", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard f.count == 3, let pid = Int(f[0]) else { return nil }
            return (pid, f[1], f[2])
        }
    }

    /// Waits until `user` has no backend on `db` left over from an earlier test's instance.
    static func waitForNoBackends(_ pg: PostgresServer, user: String = role, db: String = "testdb",
                                  timeout: Double = 30) -> Bool {
        waitUntil(timeout: timeout, poll: 0.1) { (try? pg.countBackends(user: user, db: db)) == 0 }
    }

    /// Ends whatever backends of `role` a test left behind (e.g. a pg_sleep orphaned by a kill).
    static func terminateLeftovers(_ pg: PostgresServer) {
        _ = try? pg.adminQuery("""
            select pg_terminate_backend(pid) from pg_stat_activity
            where usename = '\(role)' and backend_type = 'client backend'
            """)
    }

}

final class TransactionPoolingTests: XCTestCase {
    // MARK: 1. pgbench, 200 clients over 4 servers shared by the workers

    private static let benchWorkers = 2
    private static let benchPoolSize = 4

    func testPgbenchSimpleProtocol() throws {
        try runPgbenchSuite(protocolMode: "simple")
    }

    func testPgbenchExtendedProtocol() throws {
        try runPgbenchSuite(protocolMode: "extended")
    }

    /// pgbench's `-M prepared` names its statements per connection: it needs pgswift to track and
    /// re-prepare them on whichever server a transaction lands. (pgbench 15 prepares each command
    /// lazily with a blocking PQprepare, which stalls its whole thread; a client of that thread
    /// holding a server mid-transaction would then never release it. So the TPC-B run gives each
    /// client its own thread; select-only holds no server between statements and keeps `-j 2`.)
    func testPgbenchPreparedProtocol() throws {
        try runPgbenchSuite(protocolMode: "prepared")
    }

    /// The TPC-B-like default script and the select-only one (`-S`), 200 clients over 2 workers
    /// sharing a pool of 4 servers, a few seconds each: no failed transaction, and a sampler of
    /// pg_stat_activity never sees more than 4 server connections of the pool (pool_size holds for
    /// the whole service). Runs are counted in transactions per client
    /// (`-t`), not seconds: pgbench's `-T` clock includes its 200 sequential SCRAM logins, which on
    /// a busy 2-core machine can eat the whole duration and leave zero transactions.
    private func runPgbenchSuite(protocolMode: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg, user: "bench", db: "bench"), "leftover bench backends",
                      file: file, line: line)
        var s = try TxFixtures.settings(pg, workers: Self.benchWorkers, poolSize: Self.benchPoolSize)
        s.authType = "scram-sha-256"
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let target = px.target(user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
        let limit = Self.benchPoolSize

        for (name, scriptArgs, perClient) in [("tpcb-like", [String](), 15), ("select-only", ["-S"], 100)] {
            let label = "-M \(protocolMode) \(name)"
            let threads = protocolMode == "prepared" && name == "tpcb-like" ? 200 : 2
            let run = try PgbenchRun.sampled(target, ["-n", "-M", protocolMode] + scriptArgs
                                             + ["-c", "200", "-j", String(threads), "-t", String(perClient)],
                                             pg: pg, user: "bench", db: "bench", timeout: 180)
            let context = "\(label): \(run.result.abridged)\npgswift log (tail):\n\(px.log().suffix(4000))"
            XCTAssertFalse(run.result.timedOut, context, file: file, line: line)
            XCTAssertEqual(run.result.status, 0, context, file: file, line: line)
            XCTAssertEqual(run.summary.failedTransactions, 0, context, file: file, line: line)
            XCTAssertEqual(run.summary.transactions, 200 * perClient, context, file: file, line: line)
            XCTAssertLessThanOrEqual(run.maxBackends, limit,
                                     "\(label): server connections over \(run.samples) samples", file: file, line: line)
            XCTAssertGreaterThan(run.samples, 0, "\(label): the sampler never ran", file: file, line: line)
            print("pgbench \(label), 200 clients, pool \(Self.benchPoolSize) over \(Self.benchWorkers) workers " +
                  "(debug build, informative): transactions \(run.summary.transactions ?? -1), " +
                  "tps \(run.summary.tps ?? 0), at most \(run.maxBackends) server connections in \(run.samples) samples")
        }
        XCTAssertTrue(px.isRunning, "pgswift died; log:\n\(px.log().suffix(4000))", file: file, line: line)
    }

    // MARK: 2. A transaction stays on one backend

    /// Inside BEGIN … COMMIT every statement runs on the same backend and in the same transaction,
    /// even though the client pauses between statements while pgbench clients compete for the same
    /// two servers of the pool. Autocommit statements may move between backends: recorded only.
    func testTransactionStaysOnOneBackendWhileOthersInterleave() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 2, poolSize: 2))
        defer { px.stop() }
        let target = TxFixtures.target(px)

        let dir = try makeTempDirectory(prefix: "txpin")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let load = try PgbenchRun.spawnLoad(target, dir: dir, clients: 6, seconds: 8)
        defer { load.terminate(SIGKILL, grace: 0) }
        // The load holds servers before the checks start.
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.05) { (try? pg.countBackends(user: TxFixtures.role, db: "testdb")) ?? 0 >= 2 },
                      "the pgbench load never got going: \(load.stderrText())")

        let client = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { client.close() }
        var pidsAcrossTransactions = Set<String>()
        var sawIdleInTransaction = false
        for round in 0..<12 {
            _ = try client.query("begin")
            var pids: [String] = []
            var xids: [String] = []
            for step in 0..<4 {
                let row = try client.query("select pg_backend_pid()::text, txid_current()::text").first ?? []
                pids.append(row.first.flatMap { $0 } ?? "?")
                xids.append((row.count > 1 ? row[1] : nil) ?? "?")
                if round == 0 && step == 1 {
                    // PostgreSQL itself sees this backend idle inside our transaction, not in the pool.
                    let pid = Int(pids[0]) ?? -1
                    sawIdleInTransaction = try TxFixtures.backends(pg).contains {
                        $0.pid == pid && $0.state == "idle in transaction"
                    }
                }
                // Think time: others' transactions get their chance to grab a server meanwhile.
                sleepSeconds(0.01)
            }
            _ = try client.query("commit")
            XCTAssertEqual(Set(pids).count, 1, "round \(round): backend changed inside a transaction: \(pids)")
            XCTAssertEqual(Set(xids).count, 1, "round \(round): transaction id changed: \(xids)")
            let after = try client.query("select txid_current_if_assigned()::text").first ?? []
            XCTAssertEqual(after.first ?? "?", nil, "round \(round): a transaction is still open after COMMIT")
            pidsAcrossTransactions.insert(pids[0])
        }
        XCTAssertTrue(sawIdleInTransaction, "pg_stat_activity did not show the pinned backend idle in transaction")

        // A failed transaction (ReadyForQuery 'E') stays pinned too: the next statement must hit the
        // same aborted transaction (25P02), not succeed on some other server.
        _ = try client.query("begin")
        let failedPid = try client.query("select pg_backend_pid()::text").first?.first ?? nil
        XCTAssertThrowsError(try client.query("select 1/0")) { error in
            XCTAssertEqual((error as? WireServerError)?.fields.sqlstate, "22012", "\(error)")
        }
        sleepSeconds(0.01)
        XCTAssertThrowsError(try client.query("select pg_backend_pid()")) { error in
            XCTAssertEqual((error as? WireServerError)?.fields.sqlstate, "25P02",
                           "after an error inside BEGIN the next statement was not in the aborted transaction: \(error)")
        }
        _ = try client.query("rollback")
        let afterRollback = try client.query("select txid_current_if_assigned()::text").first ?? []
        XCTAssertEqual(afterRollback.first ?? "?", nil, "a transaction is still open after ROLLBACK")
        XCTAssertNotNil(failedPid)

        // Autocommit: several clients, one statement at a time each, while the load goes on.
        let clients = try (0..<4).map { _ in
            try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        }
        defer { clients.forEach { $0.close() } }
        var perClient = Array(repeating: Set<String>(), count: clients.count)
        for _ in 0..<10 {
            for (i, c) in clients.enumerated() {
                let pid = try c.query("select pg_backend_pid()::text").first?.first ?? nil
                perClient[i].insert(pid ?? "?")
            }
        }
        let loadStillRunning = load.isRunning
        print("transaction pinning: 12 transactions used backends \(pidsAcrossTransactions.sorted()); " +
              "autocommit backends per client: \(perClient.map { $0.sorted() }) " +
              "(load still running at the end: \(loadStillRunning))")

        let status = load.wait(timeout: 60)
        let summary = Pgbench.parse(load.stdoutText())
        XCTAssertEqual(status, 0, "pgbench load: \(load.stdoutText())\n\(load.stderrText().suffix(3000))\nlog:\n\(px.log().suffix(3000))")
        XCTAssertEqual(summary.failedTransactions, 0, load.stdoutText())
    }

    // MARK: 4. A client killed mid-transaction

    /// A psql idle inside a transaction (it runs a shell `sleep` via `\!` after BEGIN, a temp table
    /// and a SET) is killed with SIGKILL: the backend must not stay `idle in transaction`, and the
    /// next client of the one-server pool sees no open transaction, the default work_mem, no table x.
    func testClientKilledWhileIdleInTransactionLeavesNoTrace() throws {
        try checkClientKilledMidTransaction(busy: false)
    }

    /// The same, killed while its pg_sleep runs inside the transaction.
    func testClientKilledWhileRunningInTransactionLeavesNoTrace() throws {
        try checkClientKilledMidTransaction(busy: true)
    }

    /// A raw client leaves (connection closed, no Terminate) inside a transaction that already
    /// failed (ReadyForQuery 'E'): nothing of it reaches the next client of the one-server pool.
    func testClientGoneInFailedTransactionLeavesNoTrace() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let defaultWorkMem = try pg.adminQuery("show work_mem")
        let victim = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        for sql in ["begin", "create temp table x (i int)", "set work_mem = '77MB'"] { _ = try victim.query(sql) }
        XCTAssertThrowsError(try victim.query("select 1/0"))
        victim.socket.close()  // gone without a Terminate, like a crashed client

        XCTAssertTrue(waitUntil(timeout: 20, poll: 0.1) {
            (try? TxFixtures.backends(pg).contains { $0.state.hasPrefix("idle in transaction") }) == false
        }, "a backend stayed idle in (aborted) transaction: \((try? TxFixtures.backends(pg)).map { "\($0)" } ?? "?")")
        let next = try Psql.run(TxFixtures.target(px), """
            select txid_current_if_assigned() is null, current_setting('work_mem'), to_regclass('x') is null
            """)
        XCTAssertTrue(next.succeeded, "next client: \(next)\nlog:\n\(px.log().suffix(3000))")
        XCTAssertEqual(next.stdout.trimmed, "t|\(defaultWorkMem)|t", "\(next)")
    }

    /// psql ends its session (with a Terminate) inside an open transaction that inserted a row:
    /// the row is rolled back, not committed, and the server goes on serving others.
    func testClientLeavingInsideTransactionIsRolledBack() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer { px.stop() }
        let table = "txpool_rollback"
        try pg.adminQuery(["drop table if exists \(table)", "create table \(table) (i int)",
                           "grant all on \(table) to \(TxFixtures.role)"], database: "testdb")
        defer { _ = try? pg.adminQuery("drop table if exists \(table)", database: "testdb") }
        let target = TxFixtures.target(px)

        let open = try Psql.run(target, "begin", "insert into \(table) values (1)", "set work_mem = '77MB'")
        XCTAssertTrue(open.succeeded, "\(open)")
        let check = try Psql.run(target, """
            select (select count(*) from \(table)), txid_current_if_assigned() is null, current_setting('work_mem')
            """)
        let defaultWorkMem = try pg.adminQuery("show work_mem")
        XCTAssertEqual(check.stdout.trimmed, "0|t|\(defaultWorkMem)",
                       "the abandoned transaction was committed or leaked: \(check)\nlog:\n\(px.log().suffix(3000))")
    }

    /// A client queued for the only server leaves before getting it: the server, once free, goes to
    /// the next live client, not to the departed one.
    func testClientLeavingTheWaitQueue() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer { px.stop() }
        let holder = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { holder.close() }
        _ = try holder.query("begin")
        _ = try holder.query("select txid_current()")

        // Queued behind the holder's transaction, then gone.
        let quitter = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        try quitter.socket.send(WireEncode.query("select 'quitter'"))
        let waiter = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb", timeout: 60)
        defer { waiter.close() }
        try waiter.socket.send(WireEncode.query("select 'waiter'"))
        quitter.socket.close()

        _ = try holder.query("commit")
        var rows: [[String?]] = []
        var failure: String?
        do {
            while let m = try waiter.readMessage(timeout: 60) {
                if m.typeChar == "D" { rows.append([String(decoding: m.body.dropFirst(6), as: UTF8.self)]) }
                if m.typeChar == "E" { failure = "\(WireErrorFields(body: m.body))" }
                if m.typeChar == "Z" { break }
            }
        } catch {
            failure = "\(error)"
        }
        XCTAssertNil(failure, "the waiting client did not get the freed server: \(failure ?? "")\nlog:\n\(px.log().suffix(3000))")
        XCTAssertEqual(rows.first?.first ?? nil, "waiter")
        XCTAssertEqual(try holder.query("select 'holder again'").first?.first ?? nil, "holder again")
    }

    private func checkClientKilledMidTransaction(busy: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends", file: file, line: line)
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let target = TxFixtures.target(px)
        let defaultWorkMem = try pg.adminQuery("show work_mem")

        let dir = try makeTempDirectory(prefix: "txkill")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let marker = busy ? "select pg_sleep(25), 'txkill-busy'" : "select 'txkill-idle'"
        var argv = try Psql.argv(target, ["begin", "create temp table x(i int)", "set work_mem = '77MB'", marker],
                                 verbose: false)
        if !busy { argv += ["-c", "\\! sleep 25"] }
        argv += ["-c", "commit"]
        let psql = try ChildProcess.spawn(argv, environment: target.environment,
                                          stdoutPath: dir + "/psql.out", stderrPath: dir + "/psql.err")
        var victim = -1
        let reached = waitUntil(timeout: 30, poll: 0.05) {
            guard psql.isRunning else { return true }
            let wanted = busy ? "active" : "idle in transaction"
            guard let b = try? TxFixtures.backends(pg).first(where: { $0.query.contains(busy ? "txkill-busy" : "txkill-idle") && $0.state == wanted })
            else { return false }
            victim = b.pid
            return true
        }
        XCTAssertTrue(reached && psql.isRunning && victim > 0,
                      "psql never got into its transaction: \(psql.stderrText())\nlog:\n\(px.log().suffix(3000))",
                      file: file, line: line)
        guard victim > 0 else { return }

        // Kill psql and the shell it runs for `\!` (it would otherwise sleep on, orphaned).
        let helpers = descendants(of: psql.pid)
        psql.signal(SIGKILL)
        helpers.forEach { _ = kill($0, SIGKILL) }
        XCTAssertNotNil(psql.wait(timeout: 10), file: file, line: line)

        let clean = waitUntil(timeout: 20, poll: 0.1) {
            guard let b = try? TxFixtures.backends(pg) else { return false }
            return !b.contains { $0.state.hasPrefix("idle in transaction") }
        }
        XCTAssertTrue(clean, "an idle-in-transaction backend stayed after the client was killed: " +
                      "\((try? TxFixtures.backends(pg)).map { "\($0)" } ?? "?")\nlog:\n\(px.log().suffix(3000))",
                      file: file, line: line)

        let next = try Psql.run(target, """
            select pg_backend_pid(), txid_current_if_assigned() is null, current_setting('work_mem'), \
            to_regclass('x') is null
            """, timeout: 60)
        XCTAssertTrue(next.succeeded, "next client: \(next)\nlog:\n\(px.log().suffix(3000))", file: file, line: line)
        let f = next.stdout.trimmed.split(separator: "|").map(String.init)
        XCTAssertEqual(f.count, 4, next.stdout, file: file, line: line)
        if f.count == 4 {
            XCTAssertEqual(f[1], "t", "the next client found a transaction open", file: file, line: line)
            XCTAssertEqual(f[2], defaultWorkMem, "the killed client's SET leaked to the next client", file: file, line: line)
            XCTAssertEqual(f[3], "t", "the killed client's temp table is visible to the next client", file: file, line: line)
            if busy {
                XCTAssertNotEqual(Int(f[0]), victim, "the next client got the server still running the killed client's query",
                                  file: file, line: line)
            }
            print("client killed while \(busy ? "running" : "idle") in a transaction: victim backend \(victim), " +
                  "next client's backend \(f[0])")
        }
        // The pool stays usable for a second, third client.
        for _ in 0..<2 {
            let r = try Psql.run(target, "select 1")
            XCTAssertEqual(r.stdout.trimmed, "1", "\(r)", file: file, line: line)
        }
    }

    /// Session state a client leaves outside any transaction (a SET, a prepared statement, a temp
    /// table) must not reach the next client of the same one-server pool.
    func testSessionStateDoesNotLeakToTheNextClient() throws {
        let pg = try PostgresServer.shared()
        var settings = try TxFixtures.settings(pg, workers: 1, poolSize: 1)
        // With pinning (the default) the temp table would keep the one server for the first client and
        // the second would wait for it: SessionStateTests covers that; here the reset path is tested.
        settings.pgswiftSettings.append(("pin_session_state", "off"))
        let px = try Pgswift.start(settings)
        defer { px.stop() }
        let defaultWorkMem = try pg.adminQuery("show work_mem")

        let first = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { first.close() }
        let pid = try first.query("select pg_backend_pid()::text").first?.first ?? nil
        _ = try first.query("set work_mem = '77MB'")
        _ = try first.query("prepare leaky as select 1")
        _ = try first.query("create temp table leaky_tmp (i int)")
        // What the first client itself sees afterwards depends on the design (reset or kept): recorded.
        let own = try first.query("show work_mem").first?.first ?? nil

        let second = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
        defer { second.close() }
        let row = try second.query("""
            select pg_backend_pid()::text, current_setting('work_mem'),
                   (select count(*) from pg_prepared_statements where name = 'leaky')::text,
                   (to_regclass('leaky_tmp') is null)::text
            """).first ?? []
        XCTAssertEqual(row.count, 4)
        guard row.count == 4 else { return }
        XCTAssertEqual(row[1], defaultWorkMem, "SET leaked to another client; log:\n\(px.log().suffix(3000))")
        XCTAssertEqual(row[2], "0", "a prepared statement leaked to another client")
        XCTAssertEqual(row[3], "true", "a temp table leaked to another client")
        print("session state: first client's backend \(pid ?? "?") saw work_mem \(own ?? "?") after its SET; " +
              "second client's backend \(row[0] ?? "?") saw \(row[1] ?? "?")")
    }

    /// Parameters PostgreSQL reports (application_name, DateStyle, TimeZone) follow each client
    /// from server to server: from its startup packet, and after its own SET, even though both
    /// clients share one server and it is reset between them.
    func testReportedParametersFollowEachClient() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer { px.stop() }
        let x = try KeyedClient(port: px.port, user: TxFixtures.role, database: "testdb",
                                parameters: [("application_name", "client-x"), ("DateStyle", "ISO, DMY")])
        let y = try KeyedClient(port: px.port, user: TxFixtures.role, database: "testdb",
                                parameters: [("application_name", "client-y"), ("TimeZone", "Asia/Tokyo")])
        let sql = "select current_setting('application_name') || '|' || current_setting('DateStyle') || '|' || " +
            "current_setting('TimeZone')"
        let defaults = try pg.adminQuery(["set application_name = ''",
                                          "select current_setting('DateStyle') || '|' || current_setting('TimeZone')"],
                                         database: "testdb")
        let parts = defaults.split(separator: "|").map(String.init)
        XCTAssertEqual(parts.count, 2, defaults)
        guard parts.count == 2 else { return }
        let (defaultDateStyle, defaultTimeZone) = (parts[0], parts[1])

        for round in 0..<3 {
            XCTAssertEqual(try x.value(sql), "client-x|ISO, DMY|\(defaultTimeZone)", "round \(round), x")
            XCTAssertEqual(try y.value(sql), "client-y|\(defaultDateStyle)|Asia/Tokyo", "round \(round), y")
        }
        // x changes its own application_name: it keeps it, y keeps its own.
        XCTAssertNil(try x.query("set application_name = 'client-x2'"))
        for round in 0..<3 {
            XCTAssertEqual(try y.value(sql), "client-y|\(defaultDateStyle)|Asia/Tokyo", "after SET, round \(round), y")
            XCTAssertEqual(try x.value(sql), "client-x2|ISO, DMY|\(defaultTimeZone)",
                           "after SET, round \(round), x; log:\n\(px.log().suffix(2000))")
        }
    }

    /// Messages far larger than any I/O buffer pass intact both ways: a 6 MB query text and an
    /// 8 MB DataRow, while another client shares the pool.
    func testLargeMessagesPassIntact() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer { px.stop() }
        let client = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb", timeout: 120)
        defer { client.close() }
        let other = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb", timeout: 120)
        defer { other.close() }

        let literal = String(repeating: "ab", count: 3_000_000)
        let sent = try client.query("select md5('\(literal)') = md5(repeat('ab', 3000000)), length('\(literal)')")
        XCTAssertEqual(sent.first ?? [], ["t", "6000000"], "a 6 MB query text arrived changed")
        XCTAssertEqual(try other.query("select 'between'").first?.first ?? nil, "between")

        let rows = try client.query("select repeat('xy', 4000000)")
        let value = rows.first?.first ?? nil
        XCTAssertEqual(value?.count, 8_000_000, "an 8 MB DataRow arrived with a different size")
        XCTAssertTrue(value.map { $0.hasPrefix("xyxy") && $0.hasSuffix("xyxy") } ?? false)
        XCTAssertEqual(try other.query("select 'after'").first?.first ?? nil, "after")
    }

    /// Processes below `pid` (children, grandchildren…), deepest last.
    private func descendants(of pid: pid_t) -> [pid_t] {
        var result: [pid_t] = []
        var frontier = [pid]
        while let p = frontier.popLast() {
            let kids = ProcFS.children(of: p)
            result += kids
            frontier += kids
        }
        return result
    }

    // MARK: 6. pg_terminate_backend

    /// An idle pooled server terminated by an administrator: the pool notices (or at worst the next
    /// query gets a clean error), and later queries work.
    func testTerminatedIdleServerIsReplaced() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer { px.stop() }

        let client = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb", timeout: 20)
        defer { client.close() }
        let first = try client.query("select pg_backend_pid()::text").first?.first ?? nil
        let pid = Int(first ?? "") ?? -1
        XCTAssertGreaterThan(pid, 0)
        XCTAssertTrue(waitUntil(timeout: 10) { (try? TxFixtures.backends(pg).contains { $0.pid == pid && $0.state == "idle" }) ?? false },
                      "the pooled server is not idle: \((try? TxFixtures.backends(pg)).map { "\($0)" } ?? "?")")

        XCTAssertEqual(try pg.adminQuery("select pg_terminate_backend(\(pid))"), "t")
        XCTAssertTrue(waitUntil(timeout: 20) { (try? TxFixtures.backends(pg).contains { $0.pid == pid }) == false },
                      "backend \(pid) did not go away")

        // The same (idle, unlinked) client asks again: a fresh server answers, or at worst a clean error.
        var next: String?
        do {
            next = try client.query("select pg_backend_pid()::text").first?.first ?? nil
        } catch {
            XCTAssertFalse("\(error)".contains("timed out"), "the client hung after its server was terminated: \(error)")
            print("NOTE: first query after terminating the idle server failed cleanly: \(error)")
        }
        if let next { XCTAssertNotEqual(Int(next), pid, "answered by a terminated backend?") }
        try assertPoolWorks(px)
    }

    /// The server a client is linked to (inside a transaction, running pg_sleep) is terminated:
    /// the client gets an error or a closed connection promptly, not a hang, and later clients work.
    func testTerminatedLinkedServerFailsOnlyItsClient() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 2))
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        // A bystander that must survive: idle between statements, not linked.
        let bystander = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb", timeout: 20)
        defer { bystander.close() }
        XCTAssertEqual(try bystander.query("select 1").first?.first ?? nil, "1")

        let victim = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb", timeout: 20)
        defer { victim.close() }
        _ = try victim.query("begin")
        try victim.socket.send(WireEncode.query("select pg_sleep(30), 'txterm-linked'"))
        var pid = -1
        XCTAssertTrue(waitUntil(timeout: 20) {
            pid = (try? TxFixtures.backends(pg).first { $0.query.contains("txterm-linked") && $0.state == "active" })?.pid ?? -1
            return pid > 0
        }, "the victim's pg_sleep never showed up")
        guard pid > 0 else { return }
        let started = monotonicNow()
        XCTAssertEqual(try pg.adminQuery("select pg_terminate_backend(\(pid))"), "t")

        // Read until an ErrorResponse or the end of the connection; a timeout is the failure.
        var outcome = "nothing"
        do {
            readLoop: while true {
                guard let m = try victim.readMessage(timeout: 20) else { outcome = "connection closed"; break }
                switch m.typeChar {
                case "E":
                    outcome = "error \(WireErrorFields(body: m.body))"
                    break readLoop
                case "Z":
                    outcome = "ReadyForQuery without an error"
                    break readLoop
                default: continue
                }
            }
        } catch {
            outcome = "read failed: \(error)"
        }
        let elapsed = monotonicNow() - started
        XCTAssertFalse(outcome.contains("timed out"), "the linked client hung: \(outcome)\nlog:\n\(px.log().suffix(3000))")
        XCTAssertFalse(outcome.hasPrefix("ReadyForQuery"), "the terminated query looked successful: \(outcome)")
        print("terminated linked server: client saw '\(outcome)' after \(String(format: "%.2f", elapsed)) s")

        XCTAssertEqual(try bystander.query("select 2").first?.first ?? nil, "2", "the bystander client broke")
        try assertPoolWorks(px)
    }

    private func assertPoolWorks(_ px: Pgswift, file: StaticString = #filePath, line: UInt = #line) throws {
        for i in 0..<3 {
            let r = try Psql.run(TxFixtures.target(px), "select \(i) + 40", timeout: 60)
            XCTAssertTrue(r.succeeded, "query \(i) after the termination: \(r)\nlog:\n\(px.log().suffix(3000))",
                          file: file, line: line)
            XCTAssertEqual(r.stdout.trimmed, String(i + 40), file: file, line: line)
        }
        XCTAssertTrue(px.isRunning, file: file, line: line)
    }

    // MARK: 7. Statement mode

    /// Statement mode refuses a transaction block with an error naming the reason; single
    /// statements (even several in one query string) work, before and after.
    func testStatementModeRefusesTransactionBlock() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, mode: "statement", workers: 2, poolSize: 2))
        defer { px.stop() }
        let target = TxFixtures.target(px)

        let before = try Psql.run(target, "select 1", "select 2; select 3")
        XCTAssertTrue(before.succeeded, "\(before)\nlog:\n\(px.log().suffix(3000))")
        // psql 15 prints every result of a multi-statement string, older ones only the last.
        let lines = before.stdout.trimmed.split(separator: "\n")
        XCTAssertEqual(lines.first, "1", "\(before)")
        XCTAssertEqual(lines.last, "3", "\(before)")

        let started = monotonicNow()
        let refused = try Psql.run(target, "begin", "select 1", "commit", timeout: 60)
        XCTAssertFalse(refused.timedOut, "psql hung on BEGIN in statement mode")
        XCTAssertFalse(refused.succeeded, "a transaction block ran in statement mode: \(refused)")
        XCTAssertTrue(refused.stderr.lowercased().contains("transaction blocks not allowed"),
                      "unexpected error text: \(refused.stderr)")
        print("statement mode refused BEGIN in \(String(format: "%.2f", monotonicNow() - started)) s: \(refused.stderr.trimmed)")

        for i in 0..<3 {
            let after = try Psql.run(target, "select \(i) * 2")
            XCTAssertTrue(after.succeeded, "client \(i) after the refusal: \(after)\nlog:\n\(px.log().suffix(3000))")
            XCTAssertEqual(after.stdout.trimmed, String(i * 2))
        }
        XCTAssertTrue(px.isRunning)
    }
}

extension CommandResult {
    /// The description with each stream cut to its first and last 1500 characters (pgbench may
    /// print an error line per client).
    var abridged: String {
        func cut(_ s: String) -> String {
            s.count <= 3000 ? s : "\(s.prefix(1500))\n[… \(s.count - 3000) characters …]\n\(s.suffix(1500))"
        }
        return "status \(status)\(timedOut ? " (timed out)" : "")\nstdout: \(cut(stdout))\nstderr: \(cut(stderr))"
    }
}

/// A pgbench run whose number of server connections is sampled from pg_stat_activity meanwhile.
struct PgbenchRun {
    var result: CommandResult
    var summary: PgbenchSummary
    var maxBackends = 0
    var samples = 0

    /// Runs pgbench with `args` against `target` and counts `user`'s backends on `db` every 75 ms
    /// (over the admin Unix socket) until it exits.
    static func sampled(_ target: ClientTarget, _ args: [String], pg: PostgresServer, user: String,
                        db: String, timeout: Double) throws -> PgbenchRun {
        let dir = try makeTempDirectory(prefix: "pgbench")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let argv = [try PostgresTools.path("pgbench"), "-h", "127.0.0.1", "-p", String(target.port),
                    "-U", target.user] + args + [target.database]
        let child = try ChildProcess.spawn(argv, environment: target.environment,
                                           stdoutPath: dir + "/out", stderrPath: dir + "/err")
        var maxSeen = 0
        var samples = 0
        let deadline = monotonicNow() + timeout
        while child.isRunning && monotonicNow() < deadline {
            if let n = try? pg.countBackends(user: user, db: db) {
                maxSeen = max(maxSeen, n)
                samples += 1
            }
            sleepSeconds(0.04)  // plus psql's own start-up: a sample every 50-100 ms
        }
        let timedOut = child.isRunning
        let status = timedOut ? child.terminate(SIGKILL, grace: 0) : (child.poll() ?? -1)
        let result = CommandResult(status: timedOut ? -1 : status, stdout: child.stdoutText(),
                                   stderr: child.stderrText(), timedOut: timedOut)
        return PgbenchRun(result: result, summary: Pgbench.parse(result.stdout), maxBackends: maxSeen, samples: samples)
    }

    /// Background load for `seconds` on the target's database: each transaction is two autocommit
    /// statements with a short server-side pause, so servers change hands constantly.
    static func spawnLoad(_ target: ClientTarget, dir: String, clients: Int, seconds: Int) throws -> ChildProcess {
        let script = dir + "/load.sql"
        try "select pg_backend_pid();\nselect pg_sleep(0.002);\n".write(toFile: script, atomically: false, encoding: .utf8)
        let argv = [try PostgresTools.path("pgbench"), "-n", "-h", "127.0.0.1", "-p", String(target.port),
                    "-U", target.user, "-f", script, "-c", String(clients), "-j", "2", "-T", String(seconds),
                    target.database]
        return try ChildProcess.spawn(argv, environment: target.environment,
                                      stdoutPath: dir + "/load.out", stderrPath: dir + "/load.err")
    }
}
