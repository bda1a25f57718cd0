// End to end: auth_user + auth_query — users missing from auth_file are looked up on PostgreSQL,
// log in with the hash it returns (md5 and SCRAM), the answer is cached, and failures are clean.
import Foundation
import XCTest

final class E2EAuthQueryTests: XCTestCase {
    private let passwords = PostgresServer.passwords
    private static let authUserPassword = "aq-auth-pw"

    /// `aq_auth` (superuser: the default auth_query reads pg_authid) logs in with SCRAM from the
    /// userlist; the looked-up users are the shared cluster's u_md5 (md5 hash, md5 line) and u_scram.
    private func ensureRoles(_ pg: PostgresServer) throws {
        try pg.adminQuery("""
            do $$ begin
              if not exists (select from pg_roles where rolname = 'aq_auth') then
                create role aq_auth login superuser password '\(Self.authUserPassword)';
              end if;
            end $$
            """)
    }

    private func settings(_ pg: PostgresServer, authType: String = "md5", perDatabase: Bool = true) throws -> PgswiftSettings {
        try ensureRoles(pg)
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.authType = authType
        let target = pg.connectionString(dbname: "testdb")
        s.databases = [("aqdb", target + (perDatabase ? " auth_user=aq_auth" : "")),
                       ("probe", pg.connectionString(dbname: "testdb", extra: "user=u_trust"))]
        // u_md5 and u_scram are deliberately not here.
        s.users = [("aq_auth", Self.authUserPassword), ("u_trust", passwords["u_trust"]!)]
        s.settings = [("verbose", "1")] + (perDatabase ? [] : [("auth_user", "aq_auth")])
        s.probe = ClientTarget(port: 0, user: "u_trust", database: "probe", password: passwords["u_trust"])
        return s
    }

    private func queriesRun(_ px: Pgswift, user: String) -> Int {
        px.logLines(containing: "running auth_query for user \"\(user)\"").count
    }

    private func assertLogsIn(_ px: Pgswift, _ user: String, password: String?, database: String = "aqdb",
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try Psql.run(px.target(user: user, database: database, password: password), "select current_user")
        XCTAssertTrue(r.succeeded, "\(user): \(r)\nlog:\n\(px.log().suffix(3000))", file: file, line: line)
        // No forced user: the server connection logged in as the client, with the looked-up hash.
        XCTAssertEqual(r.stdout.trimmed, user, file: file, line: line)
    }

    /// `sasl`: the exchange was SCRAM, whose failure is PgBouncer's `SASL authentication failed`.
    private func assertPasswordFails(_ px: Pgswift, _ user: String, database: String = "aqdb", sasl: Bool = false,
                                     file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try Psql.run(px.target(user: user, database: database, password: "definitely-wrong"), "select 1")
        XCTAssertFalse(r.succeeded, "\(user) got in with a wrong password", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(sasl ? "SASL authentication failed" : "password authentication failed for user \"\(user)\""),
                      r.stderr, file: file, line: line)
        let fields = try WireClient.failedLogin(port: px.port, user: user, database: database)
        XCTAssertEqual(fields.sqlstate, "28P01", "\(fields)", file: file, line: line)
    }

    func testUsersMissingFromAuthFileLogInWithTheHashFromTheServer() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try settings(pg))
        defer { px.stop() }

        // md5 hash: client checked with md5, server login answered from the hash alone.
        try assertLogsIn(px, "u_md5", password: passwords["u_md5"])
        // SCRAM secret: the client is asked for SCRAM even under auth_type md5; the server login
        // uses the ClientKey its proof revealed.
        try assertLogsIn(px, "u_scram", password: passwords["u_scram"])
        try assertPasswordFails(px, "u_md5")
        try assertPasswordFails(px, "u_scram", sasl: true)
        // A user the server does not know fails like a wrong password (nothing tells it apart).
        try assertPasswordFails(px, "aq_nobody")

        // Within auth_query_cache_ttl (60 s by default) each user was looked up once, whatever
        // the number of logins.
        for _ in 0..<3 { try assertLogsIn(px, "u_md5", password: passwords["u_md5"]) }
        XCTAssertEqual(queriesRun(px, user: "u_md5"), 1, px.log().suffix(3000).description)
        XCTAssertEqual(queriesRun(px, user: "u_scram"), 1)
        XCTAssertEqual(queriesRun(px, user: "aq_nobody"), 1, "a missing user is cached too")
        XCTAssertFalse(px.logLines(containing: "auth_query answer for \"u_md5\" taken from the cache").isEmpty)

        // Users in auth_file never cause a query; the auth_user's own pool is an ordinary pool.
        try assertLogsIn(px, "aq_auth", password: Self.authUserPassword)
        XCTAssertEqual(queriesRun(px, user: "aq_auth"), 0)
        XCTAssertTrue(px.isRunning)
    }

    /// Global auth_user, auth_type scram-sha-256, no cache: a password change on the server is seen
    /// at the next login. The lookup goes through a SECURITY DEFINER function run by a role that
    /// is not a superuser (PgBouncer's recommended set-up), and many clients log in at once.
    func testUncachedLookupsThroughAFunctionSeePasswordChanges() throws {
        let pg = try PostgresServer.shared()
        try pg.adminQuery([
            """
            do $$ begin
              if not exists (select from pg_roles where rolname = 'aq_rotate') then create role aq_rotate login; end if;
              if not exists (select from pg_roles where rolname = 'aq_lookup') then create role aq_lookup login; end if;
            end $$
            """,
            "alter role aq_rotate password 'first-pw'",
            "alter role aq_lookup password 'lookup-pw'",
        ])
        try pg.adminQuery([
            """
            create or replace function aq_user_lookup(in i_username text, out uname text, out phash text)
            returns record as $$
            begin
              select rolname, rolpassword from pg_authid where rolname = i_username and rolcanlogin
              into uname, phash;
              return;
            end $$ language plpgsql security definer set search_path = pg_catalog, pg_temp
            """,
            "revoke all on function aq_user_lookup(text) from public",
            "grant execute on function aq_user_lookup(text) to aq_lookup",
        ], database: "testdb")
        var s = try settings(pg, authType: "scram-sha-256", perDatabase: false)
        s.settings = [("verbose", "1"), ("auth_user", "aq_lookup"),
                      ("auth_query", "SELECT uname, phash FROM aq_user_lookup($1)")]
        s.users.append(("aq_lookup", "lookup-pw"))
        s.pgswiftSettings = [("auth_query_cache_ttl", "0")]
        let px = try Pgswift.start(s)
        defer { px.stop() }

        try assertLogsIn(px, "aq_rotate", password: "first-pw")
        try assertLogsIn(px, "aq_rotate", password: "first-pw")
        XCTAssertEqual(queriesRun(px, user: "aq_rotate"), 2, "ttl 0: every login asks the server")

        try pg.adminQuery("alter role aq_rotate password 'second-pw'")
        try assertLogsIn(px, "aq_rotate", password: "second-pw")
        try assertPasswordFails(px, "aq_rotate", sasl: true)
        let old = try Psql.run(px.target(user: "aq_rotate", database: "aqdb", password: "first-pw"), "select 1")
        XCTAssertFalse(old.succeeded, "the old password must not work any more")
        // The function returns a row of NULLs for a missing user: a plain login failure.
        try assertPasswordFails(px, "aq_nobody", sasl: true)

        // Twenty logins at once: each waits without blocking the worker, and all get in.
        let dir = try makeTempDirectory(prefix: "aqmany")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var children: [ChildProcess] = []
        for i in 0..<20 {
            let user = i % 2 == 0 ? "aq_rotate" : "u_scram"
            let pw = i % 2 == 0 ? "second-pw" : passwords["u_scram"]!
            children.append(try Psql.spawn(px.target(user: user, database: "aqdb", password: pw),
                                           "select current_user", dir: dir, tag: "c\(i)"))
        }
        for (i, c) in children.enumerated() {
            XCTAssertEqual(c.wait(timeout: 60), 0, "client \(i): \(readTextFile("\(dir)/c\(i).err"))")
        }
        XCTAssertTrue(px.isRunning)
    }

    /// A slow lookup does not hold up the worker's other clients; a lookup whose server connection is
    /// killed fails its client with a clean error.
    func testSlowLookupDoesNotBlockAndABrokenLookupFailsCleanly() throws {
        let pg = try PostgresServer.shared()
        var s = try settings(pg)
        s.settings.append(("auth_query",
                           "SELECT rolname, rolpassword FROM pg_authid, pg_sleep(3) WHERE rolname = $1"))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let dir = try makeTempDirectory(prefix: "aqslow")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let slow = try Psql.spawn(px.target(user: "u_md5", database: "aqdb", password: passwords["u_md5"]),
                                  "select current_user", dir: dir, tag: "slow")
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.05) { self.queriesRun(px, user: "u_md5") == 1 },
                      "the lookup started:\n\(px.log().suffix(2000))")
        // The same (only) worker serves another client while the lookup sleeps on the server.
        let other = try Psql.run(px.target(user: "u_trust", database: "probe", password: passwords["u_trust"]),
                                 "select 42")
        XCTAssertEqual(other.stdout.trimmed, "42", "\(other)")
        // A client that sends a query instead of waiting for its password request gets a clean error.
        let rude = WireClient(socket: try TestSocket(port: px.port, timeout: 20), timeout: 20)
        try rude.socket.send(WireEncode.startup(parameters: [("user", "u_password"), ("database", "aqdb")]))
        try rude.socket.send(WireEncode.query("select 1"))
        guard let answer = try rude.readMessage() else { return XCTFail("closed without an error") }
        XCTAssertEqual(answer.typeChar, "E")
        XCTAssertEqual(WireErrorFields(body: answer.body).sqlstate, "08P01", "\(WireErrorFields(body: answer.body))")
        rude.socket.close()
        XCTAssertTrue(slow.isRunning, "the other client was served while the lookup was still running")
        XCTAssertEqual(slow.wait(timeout: 60), 0, readTextFile(dir + "/slow.err"))
        XCTAssertEqual(readTextFile(dir + "/slow.out").trimmed, "u_md5")

        // Kill the backend running the next lookup: the client fails, pgswift goes on. (First let the
        // rude client's lookup end, so that only the next one can be the one killed.)
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.1) {
            (try? pg.adminQuery("""
                select count(*) from pg_stat_activity
                where usename = 'aq_auth' and state = 'active' and query like '%pg_sleep%'
                """)) == "0"
        })
        let broken = try Psql.spawn(px.target(user: "u_scram", database: "aqdb", password: passwords["u_scram"]),
                                    "select 1", dir: dir, tag: "broken")
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.05) {
            let n = (try? pg.adminQuery("""
                select count(pg_terminate_backend(pid)) from pg_stat_activity
                where usename = 'aq_auth' and state = 'active' and query like '%pg_sleep%'
                """)) ?? "0"
            return n != "0"
        }, "the lookup's backend was found and terminated")
        XCTAssertNotEqual(broken.wait(timeout: 60), 0)
        XCTAssertTrue(readTextFile(dir + "/broken.err").contains("bouncer config error"),
                      readTextFile(dir + "/broken.err"))
        XCTAssertTrue(px.isRunning)
        try assertLogsIn(px, "u_md5", password: passwords["u_md5"])
    }

    /// Problems on the lookup side reach the client as clean errors, and the worker keeps serving.
    func testLookupFailuresAreCleanErrors() throws {
        let pg = try PostgresServer.shared()
        try ensureRoles(pg)
        // A query that fails on the server.
        var s = try settings(pg)
        s.settings.append(("auth_query", "SELECT usename, passwd FROM no_such_table WHERE usename=$1"))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let r = try Psql.run(px.target(user: "u_md5", database: "aqdb", password: passwords["u_md5"]), "select 1", timeout: 60)
        XCTAssertFalse(r.succeeded)
        XCTAssertFalse(r.timedOut)
        XCTAssertTrue(r.stderr.contains("bouncer config error"), r.stderr)
        XCTAssertFalse(px.logLines(containing: "no_such_table").isEmpty, "the log has the server's reason")
        // The pool's server survived the error: users in auth_file still get in through it.
        let ok = try Psql.run(px.target(user: "aq_auth", database: "aqdb", password: Self.authUserPassword),
                              "select current_user")
        XCTAssertEqual(ok.stdout.trimmed, "aq_auth", "\(ok)")

        // auth_user's own login fails (wrong password in auth_file): the client gets the reason.
        var bad = try settings(pg)
        bad.users = [("aq_auth", "not-the-password"), ("u_trust", passwords["u_trust"]!)]
        let px2 = try Pgswift.start(bad)
        defer { px2.stop() }
        let r2 = try Psql.run(px2.target(user: "u_md5", database: "aqdb", password: passwords["u_md5"]), "select 1",
                              timeout: 60)
        XCTAssertFalse(r2.succeeded)
        XCTAssertFalse(r2.timedOut)
        XCTAssertTrue(r2.stderr.contains("password authentication failed for user \"aq_auth\""), r2.stderr)
        XCTAssertTrue(px2.isRunning)
    }
}
