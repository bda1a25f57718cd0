// Issue 19 end to end, transaction mode, 2 workers, a pool small enough that clients share servers:
// session SETs follow their client from server to server and never reach another client; a temporary
// table, a session advisory lock, a set_config(..., false) or a SET pgswift cannot replay (SET SESSION
// CHARACTERISTICS) pins its client (SHOW POOLS cl_pinned)
// until it is gone;
// pin_session_state = off restores the old behaviour.
import XCTest
import Shared

final class SessionStateE2ETests: XCTestCase {
    private func settings(_ pg: PostgresServer, poolSize: Int = 4, pin: Bool = true) -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.poolMode = "transaction"
        s.defaultPoolSize = poolSize
        s.settings = [("admin_users", "u_trust")]
        if !pin { s.pgswiftSettings.append(("pin_session_state", "off")) }
        return s
    }

    /// pgswift on the shared PostgreSQL once no earlier test's testdb backend is left: a test that
    /// counts pins or follows servers needs the pool to itself.
    private func startQuiet(pin: Bool = true) throws -> Pgswift {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(waitUntil(timeout: 20) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 })
        return try Pgswift.start(settings(pg, pin: pin))
    }

    private func connect(_ px: Pgswift, database: String = "testdb") throws -> WireClient {
        try WireClient.connect(port: px.port, user: "u_trust", database: database)
    }

    private func value(_ c: WireClient, _ sql: String) throws -> String? {
        try c.query(sql).first?.first ?? nil
    }

    /// Connections that share `a`'s worker, found as they come (SO_REUSEPORT spreads them): right after
    /// `a`'s transaction each gets the server `a` left (idle servers are reused last in, first out), so
    /// while one holds a server in a transaction `a` must take another. Plus `plain` more, anywhere.
    /// The server must follow twice in a row: an idle server may move to another worker whose client
    /// waits (ServerMove.swift), and a candidate there would get it once.
    private func neighbours(_ px: Pgswift, of a: WireClient, count: Int, plain: Int) throws -> [WireClient] {
        var found: [WireClient] = []
        var tries: [String] = []
        func follows(_ c: WireClient) throws -> Bool {
            let mine = try value(a, "select pg_backend_pid()::text")
            let theirs = try value(c, "select pg_backend_pid()::text")
            tries.append("\(mine ?? "?")/\(theirs ?? "?")")
            return theirs == mine
        }
        for _ in 0..<64 where found.count < count {
            let c = try connect(px)
            if try follows(c), try follows(c) { found.append(c) } else { c.close() }
        }
        print("neighbours: \(found.count) on the client's worker after \(tries.count) checks")
        XCTAssertFalse(found.isEmpty, "no connection landed on the client's worker: \(tries)\n\(px.log().suffix(3000))")
        return try found + (0..<plain).map { _ in try connect(px) }
    }

    /// A quiet pgswift (`startQuiet`), one client, and its `neighbours`.
    private func clientAmongNeighbours(count: Int, plain: Int) throws -> (Pgswift, WireClient, [WireClient]) {
        let px = try startQuiet()
        do {
            let c = try connect(px)
            do {
                return (px, c, try neighbours(px, of: c, count: count, plain: plain))
            } catch {
                c.close()
                throw error
            }
        } catch {
            px.stop()
            throw error
        }
    }

    /// cl_pinned summed over the pools of testdb, as SHOW POOLS tells it (both workers merged).
    private func pinned(_ px: Pgswift) -> Int? {
        guard let a = try? connect(px, database: "pgbouncer") else { return nil }
        defer { a.close() }
        guard let pools = try? a.show("SHOW POOLS") else { return nil }
        return pools.sum("cl_pinned", where: "database", is: "testdb")
    }

    /// `SET search_path` and `SET statement_timeout` once, then 100 transactions: each sees both (SHOW
    /// and a real timeout) on whichever server it gets, while the other clients, holding servers in
    /// between so that the client has to move, never see them. A SET LOCAL and a rolled-back SET are
    /// not carried.
    func testSetsFollowTheirClientAcrossServersAndNoOneElse() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(waitUntil(timeout: 20) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 })
        let defaultTimeout = try pg.adminQuery("show statement_timeout")
        let defaultPath = try pg.adminQuery("show search_path")
        let px = try Pgswift.start(settings(pg))
        defer { px.stop() }

        let a = try connect(px)
        defer { a.close() }
        _ = try a.query("SET search_path = app, public")
        _ = try a.query("set statement_timeout = '150ms'")
        _ = try a.query("begin; set local work_mem = '3MB'; commit")
        _ = try a.query("begin; set lock_timeout = '7s'; rollback")
        let others = try neighbours(px, of: a, count: 2, plain: 2)
        defer { others.forEach { $0.close() } }

        var backends = Set<String>()
        var timeouts = 0
        for i in 0..<100 {
            // Another client takes a server (often the one `a` just left) for the length of a's transaction.
            let o = others[i % others.count]
            let seen = try o.query("begin; select current_setting('statement_timeout'), current_setting('search_path')")
            XCTAssertEqual(seen.first?[0], defaultTimeout, "another client saw the SET (round \(i))\n\(px.log().suffix(3000))")
            XCTAssertEqual(seen.first?[1], defaultPath, "another client saw the search_path (round \(i))")
            let row = try a.query("""
                select current_setting('search_path'), current_setting('statement_timeout'), pg_backend_pid()::text,
                       current_setting('work_mem'), current_setting('lock_timeout')
                """).first ?? []
            XCTAssertEqual(row.count, 5)
            guard row.count == 5 else { break }
            XCTAssertEqual(row[0], "app, public", "round \(i)\n\(px.log().suffix(3000))")
            XCTAssertEqual(row[1], "150ms", "round \(i)")
            XCTAssertNotEqual(row[3], "3MB", "SET LOCAL was carried")
            XCTAssertNotEqual(row[4], "7s", "a rolled-back SET was carried")
            if let pid = row[2] { backends.insert(pid) }
            if i % 10 == 0 {
                do {
                    _ = try a.query("select pg_sleep(2)")
                    XCTFail("statement_timeout did not apply in round \(i)")
                } catch let e as WireServerError {
                    XCTAssertEqual(e.fields.sqlstate, "57014", "\(e)")
                    timeouts += 1
                }
            }
            _ = try o.query("commit")
        }
        // A client that never SET anything, after all that: defaults everywhere.
        let fresh = try connect(px)
        defer { fresh.close() }
        for _ in 0..<10 {
            XCTAssertEqual(try value(fresh, "show statement_timeout"), defaultTimeout)
            XCTAssertEqual(try value(fresh, "show search_path"), defaultPath)
        }
        // RESET gives the client the server's default again, on every server.
        _ = try a.query("reset statement_timeout")
        XCTAssertEqual(try value(a, "show statement_timeout"), defaultTimeout)
        XCTAssertEqual(try value(a, "show search_path"), "app, public")
        print("carried SETs: 100 transactions on \(backends.count) backends, \(timeouts) statement timeouts")
        XCTAssertGreaterThan(backends.count, 1, "the client never changed servers: the test proves nothing")
    }

    /// PHP PDO's emulation: SQL `PREPARE s AS ...` once, then `EXECUTE s(...)` in 50 transactions spread
    /// over servers: each works (the PREPARE is replayed where missing), no other client sees `s`, a
    /// second PREPARE s gives 42P05 and DEALLOCATE then EXECUTE gives 26000, as PostgreSQL would.
    func testSQLPrepareFollowsItsClientAcrossServers() throws {
        let (px, c, others) = try clientAmongNeighbours(count: 2, plain: 2)
        defer { others.forEach { $0.close() }; c.close(); px.stop() }

        _ = try c.query("PREPARE pdo_stmt_1 (int) AS SELECT $1 + 1, pg_backend_pid()")
        var backends = Set<String>()
        for i in 0..<50 {
            let o = others[i % others.count]
            // On odd rounds the neighbour opens its transaction after the EXECUTE: the client then takes
            // the server the neighbour released last (the idle list is LIFO), so it changes servers
            // whatever the timing; on even rounds the neighbour holds that one first.
            func neighbourLooks() throws {
                let seen = try o.query("begin; select count(*)::text from pg_prepared_statements")
                XCTAssertEqual(seen.first?.first, "0", "another client sees the statement (round \(i))")
            }
            if i % 2 == 0 { try neighbourLooks() }
            let row = try c.query("EXECUTE pdo_stmt_1(\(i))").first ?? []
            XCTAssertEqual(row.first, "\(i + 1)", "round \(i)\n\(px.log().suffix(3000))")
            if row.count == 2, let pid = row[1] { backends.insert(pid) }
            if i % 2 == 1 { try neighbourLooks() }
            _ = try o.query("commit")
        }
        func sqlstate(_ sql: String) -> String? {
            do {
                _ = try c.query(sql)
                return nil
            } catch let e as WireServerError {
                return e.fields.sqlstate
            } catch {
                return "\(error)"
            }
        }
        // Held by another client meanwhile, so the duplicate may land on a server that lacked it.
        let o = others[0]
        _ = try o.query("begin")
        XCTAssertEqual(sqlstate("PREPARE pdo_stmt_1 AS SELECT 2"), "42P05")
        _ = try o.query("commit")
        _ = try c.query("DEALLOCATE pdo_stmt_1")
        XCTAssertEqual(sqlstate("EXECUTE pdo_stmt_1(1)"), "26000")
        XCTAssertEqual(sqlstate("DEALLOCATE nothing_here"), "26000")
        // The name is free again.
        _ = try c.query("PREPARE pdo_stmt_1 AS SELECT 7")
        XCTAssertEqual(try value(c, "EXECUTE pdo_stmt_1"), "7")
        _ = try c.query("DEALLOCATE ALL")
        XCTAssertEqual(sqlstate("EXECUTE pdo_stmt_1"), "26000")
        print("SQL PREPARE: 50 EXECUTEs on \(backends.count) backends")
        XCTAssertGreaterThan(backends.count, 1, "the client never changed servers: the test proves nothing")
    }

    /// psycopg 3 sending its SETs with the extended protocol (a binary cursor: Parse, Bind, Execute,
    /// Sync, as JDBC always does): carried all the same, across servers held by other connections.
    func testExtendedProtocolSetsFromPsycopgAreCarried() throws {
        let python = try DriverTests.python()
        let pg = try PostgresServer.shared()
        XCTAssertTrue(waitUntil(timeout: 20) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 })
        let defaultTimeout = try pg.adminQuery("show statement_timeout")
        let px = try Pgswift.start(settings(pg))
        defer { px.stop() }
        let dir = try makeTempDirectory(prefix: "sessionstate")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = """
            import sys, psycopg
            dsn = sys.argv[1]
            a = psycopg.connect(dsn, autocommit=True)
            others = [psycopg.connect(dsn, autocommit=True) for _ in range(4)]
            a.cursor(binary=True).execute("SET statement_timeout = '150ms'")
            a.cursor(binary=True).execute("SET search_path TO app, public")
            pids, timeouts = set(), 0
            for i in range(30):
                o = others[i % 4]
                o.execute("BEGIN")
                seen = o.execute("select current_setting('statement_timeout')").fetchone()[0]
                assert seen == sys.argv[2], f"another connection saw {seen!r} in round {i}"
                t, path, pid = a.execute("select current_setting('statement_timeout'), current_setting('search_path'), "
                                         "pg_backend_pid()").fetchone()
                assert (t, path) == ("150ms", "app, public"), f"round {i}: {t!r} {path!r}"
                pids.add(pid)
                if i % 10 == 0:
                    try:
                        a.execute("select pg_sleep(2)")
                    except psycopg.errors.QueryCanceled:
                        timeouts += 1
                o.execute("COMMIT")
            assert timeouts == 3, timeouts
            print(f"OK {len(pids)} backends {timeouts} timeouts")
            """
        try script.write(toFile: dir + "/extended_set.py", atomically: true, encoding: .utf8)
        let dsn = "postgresql://u_trust@127.0.0.1:\(px.port)/testdb?sslmode=disable"
        let r = try runCommand([python, dir + "/extended_set.py", dsn, defaultTimeout],
                               environment: childEnvironment(["PYTHONDONTWRITEBYTECODE": "1"]), timeout: 120)
        XCTAssertEqual(r.status, 0, "\(r)\n\(px.log().suffix(3000))")
        XCTAssertTrue(r.stdout.hasPrefix("OK "), "\(r)")
        print("psycopg extended-protocol SETs: \(r.stdout.trimmed)")
    }

    /// A temporary table keeps its client on one server across 10 transactions; SHOW POOLS counts it
    /// in cl_pinned until DISCARD TEMP; the other clients are served meanwhile by the other servers.
    func testTempTablePinsItsClientUntilDiscardTemp() throws {
        let px = try startQuiet()
        defer { px.stop() }
        let t = try connect(px)
        defer { t.close() }
        let others = try (0..<3).map { _ in try connect(px) }
        defer { others.forEach { $0.close() } }

        _ = try t.query("create temp table pinned_tmp (i int)")
        var backends = Set<String>()
        for i in 0..<10 {
            for o in others { _ = try o.query("select 1") }
            let pid = try value(t, "insert into pinned_tmp values (\(i)); select pg_backend_pid()::text")
            if let pid { backends.insert(pid) }
        }
        XCTAssertEqual(try value(t, "select count(*)::text from pinned_tmp"), "10")
        XCTAssertEqual(backends.count, 1, "the pinned client changed servers")
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 1 }, "SHOW POOLS cl_pinned: \(pinned(px) ?? -1)")
        for o in others { XCTAssertEqual(try value(o, "select to_regclass('pinned_tmp') is null"), "t") }

        _ = try t.query("discard temp")
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 0 }, "still pinned after DISCARD TEMP: \(pinned(px) ?? -1)")
        for o in others { _ = try o.query("select 1") }
        XCTAssertEqual(try value(t, "select 1"), "1")
    }

    /// A WITH HOLD cursor outlives its transaction on its backend: the client stays there and fetches
    /// from it across transactions until CLOSE.
    func testHoldCursorPinsItsClientUntilClose() throws {
        let (px, c, others) = try clientAmongNeighbours(count: 1, plain: 1)
        defer { others.forEach { $0.close() }; c.close(); px.stop() }
        _ = try c.query("declare held cursor with hold for select generate_series(1, 5)")
        for i in 1...5 {
            for o in others { _ = try o.query("select 1") }
            XCTAssertEqual(try value(c, "fetch next from held"), "\(i)")
        }
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 1 }, "cl_pinned: \(pinned(px) ?? -1)")
        _ = try c.query("close held")
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 0 }, "cl_pinned: \(pinned(px) ?? -1)")
    }

    /// A session advisory lock pins its client (the lock stays with it across transactions) until
    /// pg_advisory_unlock_all; then the next client of that server does not hold it.
    func testAdvisoryLockPinsItsClientUntilUnlockAll() throws {
        let px = try startQuiet()
        defer { px.stop() }
        let a = try connect(px)
        defer { a.close() }
        let b = try connect(px)
        defer { b.close() }
        let lock = 190_019
        let held = "select count(*)::text from pg_locks where locktype = 'advisory' and objid = \(lock) and granted"
        _ = try a.query("select pg_advisory_lock(\(lock))")
        for _ in 0..<5 {
            XCTAssertEqual(try value(a, "select count(*)::text from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"), "1")
            XCTAssertEqual(try value(b, held), "1", "the lock went with its server")
        }
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 1 }, "cl_pinned: \(pinned(px) ?? -1)")
        _ = try a.query("select pg_advisory_unlock_all()")
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 0 }, "cl_pinned: \(pinned(px) ?? -1)")
        XCTAssertEqual(try value(b, held), "0")
        XCTAssertEqual(try value(a, "select 1"), "1")
    }

    /// set_config(name, value, false) outside a transaction is session state pgswift cannot carry (its
    /// value may be a parameter): it pins its client, which keeps seeing it, while the neighbours that
    /// got the client's server before never do (PgBouncer hands that server, setting and all, to the
    /// next client). DISCARD ALL unpins.
    func testSetConfigForTheSessionPinsItsClientAndReachesNoOneElse() throws {
        let (px, a, others) = try clientAmongNeighbours(count: 2, plain: 2)
        defer { others.forEach { $0.close() }; a.close(); px.stop() }
        let pid = try value(a, "select pg_backend_pid()::text")
        XCTAssertEqual(try value(a, "select set_config('app.tenant', '42', false)"), "42")
        for round in 0..<10 {
            XCTAssertEqual(try value(a, "select current_setting('app.tenant', true)"), "42", "round \(round)")
            XCTAssertEqual(try value(a, "select pg_backend_pid()::text"), pid, "pinned to its server")
            for c in others {
                let seen = try value(c, "select coalesce(current_setting('app.tenant', true), '')")
                XCTAssertEqual(seen, "", "round \(round): another client saw the setting")
            }
        }
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 1 }, "cl_pinned: \(pinned(px) ?? -1)")
        _ = try a.query("discard all")
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 0 }, "cl_pinned: \(pinned(px) ?? -1)")
        XCTAssertEqual(try value(a, "select coalesce(current_setting('app.tenant', true), '')"), "")
    }

    /// SET SESSION CHARACTERISTICS sets the default_transaction_* settings in a form pgswift does not
    /// replay: it pins its client, whose later transactions keep the isolation level it chose, while the
    /// neighbours that got the client's server before run at the default. DISCARD ALL unpins.
    func testSessionCharacteristicsPinTheirClient() throws {
        let (px, a, others) = try clientAmongNeighbours(count: 2, plain: 2)
        defer { others.forEach { $0.close() }; a.close(); px.stop() }
        _ = try a.query("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        for round in 0..<10 {
            XCTAssertEqual(try value(a, "show transaction_isolation"), "serializable", "round \(round)")
            for c in others {
                XCTAssertEqual(try value(c, "show transaction_isolation"), "read committed", "round \(round): another client")
            }
        }
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 1 }, "cl_pinned: \(pinned(px) ?? -1)")
        _ = try a.query("discard all")
        XCTAssertTrue(waitUntil(timeout: 20) { self.pinned(px) == 0 }, "cl_pinned: \(pinned(px) ?? -1)")
        XCTAssertEqual(try value(a, "show transaction_isolation"), "read committed")
    }

    /// pin_session_state = off: PgBouncer's behaviour. The temp table does not keep the client on its
    /// server; the server is reset when released, so the table is gone in the next transaction.
    func testPinOffRestoresTheOldBehaviour() throws {
        let px = try startQuiet(pin: false)
        defer { px.stop() }
        let t = try connect(px)
        defer { t.close() }
        _ = try t.query("create temp table unpinned_tmp (i int)")
        XCTAssertEqual(pinned(px), 0)
        XCTAssertEqual(try value(t, "select to_regclass('unpinned_tmp') is null"), "t", "reset at release, as before")
        // Unlike PgBouncer, a set_config(..., false) is not left on the server for the next client: with
        // no pin, its server is reset when released (the client loses it too).
        _ = try t.query("select set_config('app.tenant', '42', false)")
        XCTAssertEqual(pinned(px), 0)
        XCTAssertEqual(try value(t, "select coalesce(current_setting('app.tenant', true), '')"), "", "reset at release")
    }
}
