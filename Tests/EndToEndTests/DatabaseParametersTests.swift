// End to end: what a `[databases]` entry sets on its server connections: client_encoding, datestyle,
// timezone and application_name (startup parameters of the servers, the session defaults clients see);
// and the per-database and per-user settings of its pools that beat the global ones (pool_mode,
// query_wait_timeout), connect_query, auth_query and auth_dbname.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class DatabaseParametersTests: XCTestCase {
    /// One worker, transaction pooling (unless `poolMode` says otherwise), one server per pool (so two
    /// clients of a pool share one backend; `poolSize` changes it), and the database `paramdb`
    /// (PostgreSQL's `testdb`) with `extra` options, plus `databases` (name, options) on `testdb` too.
    /// Clients log in with trust.
    private func start(_ pg: PostgresServer, extra: String, databases: [(String, String)] = [],
                       settings: [(String, String)] = [], users: [(String, String)] = [],
                       poolMode: String = "transaction", poolSize: Int = 1) throws -> Pgswift {
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.poolMode = poolMode
        s.defaultPoolSize = poolSize
        s.databases.append(("paramdb", pg.connectionString(dbname: "testdb", extra: extra)))
        for (name, options) in databases {
            s.databases.append((name, pg.connectionString(dbname: "testdb", extra: options)))
        }
        s.settings = settings.map { (key: $0.0, value: $0.1) }
        s.userSettings = users.map { (user: $0.0, settings: $0.1) }
        return try Pgswift.start(s)
    }

    private func connect(_ px: Pgswift, _ parameters: [(String, String)] = [], user: String = "u_trust",
                         database: String = "paramdb") throws -> WireClient {
        try WireClient.connect(port: px.port, user: user, database: database, parameters: parameters)
    }

    /// How a client's wait ended: the first error, whether pgswift then closed the connection, and
    /// the seconds from `since` to that error (or to the first message, or to `deadline`).
    private struct Ending: CustomStringConvertible {
        var error: WireErrorFields?
        var closed = false
        var rows: [String] = []
        var elapsed = 0.0
        var description: String {
            "error \(error.map { "\($0)" } ?? "none"), closed \(closed), rows \(rows), after \(String(format: "%.2f", elapsed)) s"
        }
    }

    /// Reads until ReadyForQuery, an error, or a close; at most `deadline` seconds after `since`.
    private func readEnding(_ c: WireClient, since: Double, deadline: Double = 30) -> Ending {
        var e = Ending()
        while true {
            let left = since + deadline - monotonicNow()
            guard left > 0 else { break }
            guard let m = try? c.readMessage(timeout: left) else {
                e.closed = true
                break
            }
            if e.elapsed == 0 { e.elapsed = monotonicNow() - since }
            if m.typeChar == "E" && e.error == nil { e.error = WireErrorFields(body: m.body) }
            if m.typeChar == "D" { e.rows.append(String(decoding: m.body.suffix(from: 6), as: UTF8.self)) }
            if m.typeChar == "Z" { break }
        }
        if e.elapsed == 0 { e.elapsed = monotonicNow() - since }
        return e
    }

    private func value(_ c: WireClient, _ sql: String) throws -> String? {
        try c.query(sql).first?.first ?? nil
    }

    /// The entry's client_encoding, datestyle, timezone and application_name are what a client that
    /// sets none of them sees, at login (ParameterStatus) and in SHOW / current_setting. A client that
    /// sends its own client_encoding and TimeZone keeps them on the same backend (pgswift SETs them at
    /// link), and the next default client on that backend is back on the entry's values, as PgBouncer
    /// does (the database's values are the server's startup parameters; the client's own ones are
    /// applied by its parameter tracking).
    func testEntrysSessionDefaultsReachClientsAndAClientsOwnValuesWin() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, extra: "client_encoding=LATIN1 datestyle='SQL, DMY' timezone=Europe/Paris application_name=dbapp")
        defer { px.stop() }

        let a = try connect(px)
        defer { a.close() }
        XCTAssertEqual(a.reported["TimeZone"], "Europe/Paris", "\(a.reported)")
        XCTAssertEqual(a.reported["client_encoding"], "LATIN1", "\(a.reported)")
        XCTAssertEqual(a.reported["DateStyle"], "SQL, DMY", "\(a.reported)")
        XCTAssertEqual(a.reported["application_name"], "dbapp", "\(a.reported)")
        XCTAssertEqual(try value(a, "show timezone"), "Europe/Paris")
        XCTAssertEqual(try value(a, "show client_encoding"), "LATIN1")
        XCTAssertEqual(try value(a, "show datestyle"), "SQL, DMY")
        XCTAssertEqual(try value(a, "select current_setting('application_name')"), "dbapp")
        let backend = try value(a, "select pg_backend_pid()")

        let b = try connect(px, [("client_encoding", "UTF8"), ("TimeZone", "UTC")])
        defer { b.close() }
        XCTAssertEqual(b.reported["TimeZone"], "UTC", "the client's own value at login: \(b.reported)")
        XCTAssertEqual(b.reported["client_encoding"], "UTF8", "\(b.reported)")
        XCTAssertEqual(try value(b, "select pg_backend_pid()"), backend, "pool_size 1: the same backend")
        XCTAssertEqual(try value(b, "show timezone"), "UTC")
        XCTAssertEqual(try value(b, "show client_encoding"), "UTF8")
        XCTAssertEqual(try value(b, "show datestyle"), "SQL, DMY", "what the client did not set stays the entry's")

        XCTAssertEqual(try value(a, "select pg_backend_pid()"), backend)
        XCTAssertEqual(try value(a, "show timezone"), "Europe/Paris", "back to the entry's value for a default client")
        XCTAssertEqual(try value(a, "show client_encoding"), "LATIN1")

        let log = px.log()
        XCTAssertFalse(log.contains("not implemented by pgswift yet"), "no warning for these keys: \(log.suffix(2000))")
    }

    // MARK: pool_mode per database and per user

    /// PgBouncer's order for pool_mode: the pool user's `[users]` value, else the database's, else the
    /// global one (session here). Pool size 2; client A runs a query and stays connected, then B of
    /// the same pool runs one: in transaction mode B gets A's backend (released when A's transaction
    /// ended), in session mode A keeps it and B gets another.
    func testPoolModeUserBeatsDatabaseBeatsGlobal() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, extra: "pool_mode=transaction", databases: [("plaindb", "")],
                           users: [("u_md5", "pool_mode=session"), ("u_password", "pool_mode=transaction")],
                           poolMode: "session", poolSize: 2)
        defer { px.stop() }
        func secondClientGetsTheFirstsBackend(_ user: String, _ database: String) throws -> Bool {
            let a = try connect(px, user: user, database: database)
            defer { a.close() }
            let first = try value(a, "select pg_backend_pid()")
            let b = try connect(px, user: user, database: database)
            defer { b.close() }
            let second = try value(b, "select pg_backend_pid()")
            XCTAssertEqual(try value(a, "select 'still here'"), "still here", "\(user)@\(database)")
            print("pool_mode, \(user)@\(database): backends \(first ?? "?") then \(second ?? "?")")
            return first != nil && first == second
        }
        XCTAssertTrue(try secondClientGetsTheFirstsBackend("u_trust", "paramdb"),
                      "the database's transaction mode did not beat the global session mode")
        XCTAssertFalse(try secondClientGetsTheFirstsBackend("u_trust", "plaindb"), "the global session mode did not apply")
        XCTAssertFalse(try secondClientGetsTheFirstsBackend("u_md5", "paramdb"),
                       "the user's session mode did not beat the database's transaction mode")
        XCTAssertTrue(try secondClientGetsTheFirstsBackend("u_password", "plaindb"),
                      "the user's transaction mode did not beat the global session mode")
        XCTAssertFalse(px.log().contains("not implemented by pgswift yet"), px.log().suffix(2000).description)
    }

    // MARK: query_wait_timeout per database and per user

    /// PgBouncer 1.25's order: the client's `[users]` query_wait_timeout beats its database's, which
    /// beats the global one (60 s here); a level set to 0 is off and beats the levels below. Each pool
    /// has one server, held by a client inside a transaction; a second client of the pool queues:
    /// one under the database's 1 s and one under a user's 1 s get FATAL 08P01 "query_wait_timeout"
    /// and are disconnected long before 60 s; one whose user says 0 (on the 1 s database) is still
    /// queued after those two ended, and is served once the holder commits.
    func testQueryWaitTimeoutUserBeatsDatabaseBeatsGlobal() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, extra: "query_wait_timeout=1", databases: [("plaindb", "")],
                           settings: [("query_wait_timeout", "60")],
                           users: [("u_password", "query_wait_timeout=0"), ("u_md5", "query_wait_timeout=1")])
        defer { px.stop() }
        // (user, database) of each pool: the database's 1 s, a user's 0 over it, a user's 1 s over the global.
        let cases = [("u_trust", "paramdb"), ("u_password", "paramdb"), ("u_md5", "plaindb")]
        var holders: [WireClient] = []
        var waiters: [WireClient] = []
        defer { (holders + waiters).forEach { $0.close() } }
        for (user, database) in cases {
            let holder = try connect(px, user: user, database: database)
            holders.append(holder)
            _ = try holder.query("begin")
            _ = try holder.query("select 1")
            waiters.append(try connect(px, user: user, database: database))
        }
        let started = monotonicNow()
        for w in waiters { try w.socket.send(WireEncode.query("select 'served'")) }
        for i in [0, 2] {
            let e = readEnding(waiters[i], since: started)
            print("query_wait_timeout, \(cases[i]): \(e)")
            XCTAssertEqual(e.error?.severity, "FATAL", "\(cases[i]): \(e)\n\(px.log().suffix(2000))")
            XCTAssertEqual(e.error?.sqlstate, "08P01", "\(cases[i]): \(e)")
            XCTAssertEqual(e.error?.message, "query_wait_timeout", "\(cases[i]): \(e)")
            XCTAssertTrue(e.closed, "\(cases[i]): not disconnected: \(e)")
            XCTAssertLessThan(e.elapsed, 30, "\(cases[i]): the global 60 s applied: \(e)")
        }
        XCTAssertGreaterThan(monotonicNow() - started, 0.9, "the 1 s waits ended before a second")
        // The user's 0 beats its database's 1 s: still queued now that the 1 s waits have ended.
        XCTAssertThrowsError(try waiters[1].readMessage(timeout: 0.2), "the u_password waiter got an answer or was closed")
        _ = try holders[1].query("commit")
        let served = readEnding(waiters[1], since: started)
        XCTAssertNil(served.error, "\(served)")
        XCTAssertEqual(served.rows.count, 1, "\(served)")
        XCTAssertFalse(served.closed, "\(served)")
    }

    // MARK: connect_query

    /// connect_query runs once on each new server connection, before it serves a client: a custom
    /// setting it makes with set_config (session-wide) is what the client sees, and a row it inserts
    /// appears once per backend. As PgBouncer: a connect_query that fails is logged (ERROR, "error
    /// while executing connect_query") and ignored, so the client is still served (the failed query
    /// string's own effects are rolled back by PostgreSQL); one that leaves the server inside a
    /// transaction (pgswift's difference) closes it, and the client waiting for it gets the reason.
    func testConnectQueryRunsOnEachNewServerBeforeItServes() throws {
        let pg = try PostgresServer.shared()
        try pg.adminQuery(["create table if not exists cq_log (pid int, at timestamptz default now())",
                           "grant all on cq_log to public", "truncate cq_log"], database: "testdb")
        let query = "select set_config(''pgswift.cq'', ''ran'', false); insert into cq_log (pid) values (pg_backend_pid())"
        let px = try start(pg, extra: "connect_query='\(query)'", databases: [
            ("cqfail", "connect_query='select set_config(''pgswift.cq'', ''half'', false), 1/0'"),
            ("cqtx", "connect_query=begin"),
        ])
        defer { px.stop() }

        let a = try connect(px)
        defer { a.close() }
        XCTAssertEqual(try value(a, "select current_setting('pgswift.cq', true)"), "ran")
        XCTAssertEqual(try value(a, "select count(*) from cq_log where pid = pg_backend_pid()"), "1")
        // A second pool (another user): its own server, its own single run.
        let b = try connect(px, user: "u_password")
        defer { b.close() }
        XCTAssertEqual(try value(b, "select current_setting('pgswift.cq', true)"), "ran")
        XCTAssertEqual(try value(b, "select count(*) from cq_log where pid = pg_backend_pid()"), "1")
        XCTAssertEqual(try value(a, "select count(*) from cq_log where pid = pg_backend_pid()"), "1",
                       "once per server, not per client or per query")

        let failed = try connect(px, database: "cqfail")
        defer { failed.close() }
        XCTAssertEqual(try value(failed, "select 'served'"), "served")
        XCTAssertEqual(try value(failed, "select coalesce(current_setting('pgswift.cq', true), '')"), "",
                       "the failed query string was rolled back as a whole")
        XCTAssertFalse(px.logLines(containing: "error while executing connect_query: ERROR: division by zero").isEmpty,
                       px.log().suffix(3000).description)

        XCTAssertThrowsError(try connect(px, database: "cqtx")) { error in
            let fields = (error as? WireServerError)?.fields
            XCTAssertEqual(fields?.severity, "FATAL", "\(error)")
            XCTAssertEqual(fields?.sqlstate, "25000", "\(error)")
            XCTAssertEqual(fields?.message, "connect_query left the server connection inside a transaction", "\(error)")
        }
        XCTAssertFalse(px.log().contains("not implemented by pgswift yet"), px.log().suffix(2000).description)
    }

    // MARK: auth_query and auth_dbname per database, auth_dbname global

    /// `dp_auth` runs the lookups (a superuser, so pg_authid is readable); `dp_target` is looked up
    /// (not in auth_file). The database `dp_authdb` alone has the table `pw_lookup` with dp_target's
    /// hash, so a query reading it works only where auth_dbname sends it.
    private func ensureAuthQueryFixtures(_ pg: PostgresServer) throws {
        try pg.adminQuery("""
            do $$ begin
              if not exists (select from pg_roles where rolname = 'dp_auth') then
                create role dp_auth login superuser password 'dp-auth-pw';
              end if;
              if not exists (select from pg_roles where rolname = 'dp_target') then
                create role dp_target login password 'dp-target-pw';
              end if;
            end $$
            """)
        if try pg.adminQuery("select count(*) from pg_database where datname = 'dp_authdb'") == "0" {
            try pg.adminQuery("create database dp_authdb")
        }
        try pg.adminQuery(["create table if not exists pw_lookup (uname text, phash text)",
                           "grant select on pw_lookup to public", "truncate pw_lookup",
                           "insert into pw_lookup select rolname, rolpassword from pg_authid where rolname = 'dp_target'"],
                          database: "dp_authdb")
    }

    /// PgBouncer 1.25: a database's auth_query beats the global one, its auth_dbname beats the global
    /// auth_dbname, which beats the client's own database; auth_dbname names a `[databases]` entry.
    /// The global auth_query here reads a table that exists nowhere, the global auth_dbname is
    /// `authsrc` (PostgreSQL's dp_authdb).
    func testPerDatabaseAuthQueryAndAuthDbname() throws {
        let pg = try PostgresServer.shared()
        try ensureAuthQueryFixtures(pg)
        let lookup = "auth_query='SELECT uname, phash FROM pw_lookup WHERE uname = $1'"
        let catalog = "auth_query='SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1'"
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.authType = "md5"
        s.databases += [
            ("authsrc", pg.connectionString(dbname: "dp_authdb")),
            // Its own query, run in the global auth_dbname: pw_lookup is there.
            ("aqpaired", pg.connectionString(dbname: "testdb", extra: lookup)),
            // Its own query and its own auth_dbname (testdb itself): pg_authid is everywhere.
            ("aqhere", pg.connectionString(dbname: "testdb", extra: "\(catalog) auth_dbname=aqhere")),
            // pw_lookup, but its auth_dbname (testdb) beats the global one: no such table there.
            ("aqmissing", pg.connectionString(dbname: "testdb", extra: "\(lookup) auth_dbname=aqhere")),
            // No query of its own: the global one, which fails.
            ("aqglobal", pg.connectionString(dbname: "testdb")),
            ("aqunknown", pg.connectionString(dbname: "testdb", extra: "auth_dbname=nosuchentry")),
            ("aqadmin", pg.connectionString(dbname: "testdb", extra: "auth_dbname=pgbouncer")),
        ]
        s.users.append(("dp_auth", "dp-auth-pw"))
        s.settings = [("auth_user", "dp_auth"), ("auth_dbname", "authsrc"), ("verbose", "1"),
                      ("auth_query", "SELECT uname, phash FROM no_such_table WHERE uname = $1")]
        let px = try Pgswift.start(s)
        defer { px.stop() }

        func login(_ database: String) throws -> CommandResult {
            try Psql.run(px.target(user: "dp_target", database: database, password: "dp-target-pw"), "select current_user")
        }
        for db in ["aqpaired", "aqhere"] {
            let r = try login(db)
            XCTAssertTrue(r.succeeded, "\(db): \(r)\nlog:\n\(px.log().suffix(3000))")
            XCTAssertEqual(r.stdout.trimmed, "dp_target", db)
        }
        for db in ["aqmissing", "aqglobal"] {
            let r = try login(db)
            XCTAssertFalse(r.succeeded, "\(db) logged in: \(r)")
            XCTAssertTrue(r.stderr.contains("bouncer config error"), "\(db): \(r.stderr)")
        }
        // Each failed where its query ran: pw_lookup in testdb, no_such_table in the global auth_dbname.
        XCTAssertFalse(px.logLines(containing: "auth_query for user \"dp_target\"", "\"pw_lookup\" does not exist").isEmpty,
                       px.log().suffix(3000).description)
        XCTAssertFalse(px.logLines(containing: "auth_query for user \"dp_target\"", "\"no_such_table\" does not exist").isEmpty,
                       px.log().suffix(3000).description)
        let unknown = try login("aqunknown")
        XCTAssertFalse(unknown.succeeded)
        XCTAssertTrue(unknown.stderr.contains("bouncer config error"), unknown.stderr)
        XCTAssertFalse(px.logLines(containing: "authentication database \"nosuchentry\" is not configured").isEmpty,
                       px.log().suffix(2000).description)
        let admin = try login("aqadmin")
        XCTAssertFalse(admin.succeeded)
        XCTAssertTrue(admin.stderr.contains("bouncer config error"), admin.stderr)
        XCTAssertFalse(px.logLines(containing: "cannot use the reserved \"pgbouncer\" database as an auth_dbname").isEmpty)
        XCTAssertFalse(px.log().contains("not implemented by pgswift yet"), px.log().suffix(2000).description)
    }
}
