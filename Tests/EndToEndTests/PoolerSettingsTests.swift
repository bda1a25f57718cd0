// End to end: application_name_add_host, log_pooler_errors, server_reset_query_always, server_round_robin
// and server_check_query / server_check_delay do what PgBouncer documents.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class PoolerSettingsTests: XCTestCase {
    /// application_name_add_host = 1: PostgreSQL sees "<application_name> - <client ip>:<port>" (and
    /// "app - ..." when the client sends none); a later SET is the client's own. Off, the name is kept.
    func testApplicationNameAddHost() throws {
        let postgres = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: postgres)
        s.settings = [("application_name_add_host", "1")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let target = px.target(user: "u_trust", database: "testdb")
        // psql sends application_name=psql; pg_stat_activity shows the session's own row.
        let sql = "select application_name || '|' || inet_client_port() from pg_stat_activity where pid = pg_backend_pid()"
        let r = try runCommand(try Psql.argv(target, ["select 1", sql], verbose: false), environment: target.environment)
        XCTAssertTrue(r.succeeded, "\(r)")
        let shown = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(shown.hasPrefix("psql - 127.0.0.1:"), "application_name as PostgreSQL sees it: \(shown)")
        // The port is the client's (psql's), not pgswift's side of the server connection.
        let parts = shown.dropFirst("psql - 127.0.0.1:".count).split(separator: "|")
        XCTAssertEqual(parts.count, 2, shown)
        XCTAssertNotEqual(parts.first, parts.last, "the port added is the client's own: \(shown)")

        // No application_name from the client: "app - host:port".
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { c.close() }
        let name = try c.query("show application_name").first?.first ?? nil
        XCTAssertEqual(name, "app - 127.0.0.1:\(c.socket.localPort)")
        _ = try c.query("set application_name = 'mine'")
        XCTAssertEqual(try c.query("show application_name"), [["mine"]])

        // Off (default): the name arrives as sent.
        let plain = try Pgswift.start(PgswiftSettings(postgres: postgres))
        defer { plain.stop() }
        let r2 = try Psql.run(plain.target(user: "u_trust", database: "testdb"), "show application_name")
        XCTAssertEqual(r2.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "psql", "\(r2)")
    }

    /// log_pooler_errors = 1 (default): an error pgswift sends a client itself is logged as a
    /// WARNING "pooler error: <message>"; 0: it is not.
    func testLogPoolerErrors() throws {
        let postgres = try PostgresServer.shared()
        for on in [true, false] {
            var s = PgswiftSettings(postgres: postgres)
            s.settings = [("log_pooler_errors", on ? "1" : "0")]
            let px = try Pgswift.start(s)
            defer { px.stop() }
            XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_trust", database: "no_such_db_17"))
            // The refusal itself is logged either way ("closing because"): wait for it, then look.
            XCTAssertTrue(waitUntil(timeout: 30) { !px.logLines(containing: "no_such_db_17", "closing because").isEmpty },
                          px.log())
            let lines = px.logLines(containing: "WARNING", "pooler error:", "no_such_db_17")
            XCTAssertEqual(lines.count, on ? 1 : 0, "log_pooler_errors = \(on ? 1 : 0):\n\(px.log())")
        }
    }

    /// server_reset_query_always = 1: in transaction mode server_reset_query (here the default, DISCARD
    /// ALL) runs at every release, not only when the client leaves, so a client loses its session state
    /// after each transaction ("deterministic breakage", as PgBouncer puts it): a custom setting made
    /// with set_config() and a session advisory lock (with pin_session_state off: on, the lock would
    /// keep the client on its server, which is then never released), neither of which pgswift carries,
    /// are gone at the next transaction on the same server. Off (the default), they stay with the server.
    func testServerResetQueryAlwaysResetsAtEveryRelease() throws {
        let postgres = try PostgresServer.shared()
        for always in [false, true] {
            var s = PgswiftSettings(postgres: postgres)
            s.workers = 1
            s.poolMode = "transaction"
            s.defaultPoolSize = 1
            s.settings = [("server_reset_query_always", always ? "1" : "0")]
            // The advisory lock would pin the client (it would never be released): PgBouncer's behaviour.
            s.pgswiftSettings = [("pin_session_state", "off")]
            let px = try Pgswift.start(s)
            defer { px.stop() }
            let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
            defer { c.close() }
            let pid = try c.query("select pg_backend_pid()")
            // The setting is made inside a DO block, where pgswift does not see it (a set_config it
            // sees resets the server at release even with pinning off).
            _ = try c.query("do $$ begin perform set_config('pgswift.marker', 'kept', false); end $$")
            _ = try c.query("select pg_advisory_lock(4217)")
            XCTAssertEqual(try c.query("select pg_backend_pid()"), pid, "one server (pool size 1)")
            let marker = try c.query("select coalesce(current_setting('pgswift.marker', true), '')").first?.first ?? nil
            let locks = try c.query("select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()")
                .first?.first ?? nil
            if always {
                XCTAssertNotEqual(marker, "kept", "the setting survived the release\n\(px.log())")
                XCTAssertEqual(locks, "0", "the advisory lock survived the release")
            } else {
                XCTAssertEqual(marker, "kept")
                XCTAssertEqual(locks, "1")
                _ = try c.query("select pg_advisory_unlock_all()")
            }
        }
    }

    /// The backend pids a transaction-mode client gets for `n` transactions in a row, after three
    /// servers went idle in a known order.
    private func pidsInTurn(roundRobin: Bool) throws -> (order: [String], taken: [String]) {
        let postgres = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: postgres)
        s.workers = 1
        s.poolMode = "transaction"
        s.settings = [("server_round_robin", roundRobin ? "1" : "0")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        // Three clients inside transactions hold three servers; they commit in order: s1, s2, s3 go idle.
        let holders = try (0..<3).map { _ in try WireClient.connect(port: px.port, user: "u_trust", database: "testdb") }
        defer { holders.forEach { $0.close() } }
        var order: [String] = []
        for h in holders {
            _ = try h.query("begin")
            order.append(try h.query("select pg_backend_pid()").first?.first??.description ?? "")
        }
        for h in holders { _ = try h.query("commit") }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { c.close() }
        var taken: [String] = []
        for _ in 0..<6 { taken.append(try c.query("select pg_backend_pid()").first?.first??.description ?? "") }
        return (order, taken)
    }

    /// server_round_robin = 0: the most recently released server serves every transaction (LIFO);
    /// = 1: idle servers take turns, oldest first.
    func testServerRoundRobin() throws {
        let lifo = try pidsInTurn(roundRobin: false)
        XCTAssertEqual(Set(lifo.order).count, 3, "\(lifo)")
        XCTAssertEqual(lifo.taken, Array(repeating: lifo.order[2], count: 6), "LIFO: the last one released, always: \(lifo)")
        let rr = try pidsInTurn(roundRobin: true)
        XCTAssertEqual(Set(rr.order).count, 3, "\(rr)")
        XCTAssertEqual(rr.taken, rr.order + rr.order, "round robin: in the order they went idle: \(rr)")
    }

    /// server_check_query / server_check_delay as PgBouncer uses them: a server idle longer than the
    /// delay runs the check query before a client gets it (seen here as rows a check function
    /// inserts with the server's backend pid); one used more recently does not. A server killed with
    /// pg_terminate_backend while idle, and one whose check fails, are replaced by a new server
    /// without the client seeing an error.
    func testServerCheckQueryRunsBeforeReuseOfAServerIdlePastTheDelay() throws {
        let pg = try PostgresServer.shared()
        try pg.adminQuery([
            "drop function if exists pgswift_check()", "drop table if exists pgswift_checks, pgswift_doomed",
            "create table pgswift_checks (pid int, at timestamptz default clock_timestamp())",
            "create table pgswift_doomed (pid int)",
            """
            create function pgswift_check() returns int language plpgsql security definer as $$
            begin
              if exists (select 1 from pgswift_doomed where pid = pg_backend_pid()) then
                raise exception 'backend % is doomed', pg_backend_pid();
              end if;
              insert into pgswift_checks (pid) values (pg_backend_pid());
              return 1;
            end $$
            """,
        ], database: "testdb")
        defer {
            _ = try? pg.adminQuery(["drop function if exists pgswift_check()",
                                    "drop table if exists pgswift_checks, pgswift_doomed"], database: "testdb")
        }
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.poolMode = "transaction"
        s.databases.append(("checked", pg.connectionString(dbname: "testdb", extra: "pool_size=1")))
        // The supervisor's health check runs the same query (on its own backends, every second).
        s.settings = [("server_check_delay", "1"), ("server_check_query", "select pgswift_check()")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "checked")
        defer { c.close() }
        func backend() throws -> String {
            try XCTUnwrap(try c.query("select pg_backend_pid()").first?.first ?? nil)
        }
        func checks(_ pid: String) throws -> Int {
            Int(try pg.adminQuery("select count(*) from pgswift_checks where pid = \(pid)", database: "testdb")) ?? -1
        }

        let pid1 = try backend()
        XCTAssertEqual(try backend(), pid1)
        XCTAssertEqual(try checks(pid1), 0, "a server used within server_check_delay is not checked")
        sleepSeconds(1.5)  // the server idles past server_check_delay
        XCTAssertEqual(try backend(), pid1)
        XCTAssertEqual(try checks(pid1), 1, "checked once before reuse:\n\(px.log())")

        // Killed while idle: the next transaction gets a new server and no error.
        sleepSeconds(1.5)
        try pg.adminQuery("select pg_terminate_backend(\(pid1))")
        let pid2 = try backend()
        XCTAssertNotEqual(pid2, pid1)

        // A check that fails closes the server; the transaction runs on a new one, without an error.
        try pg.adminQuery("insert into pgswift_doomed values (\(pid2))", database: "testdb")
        sleepSeconds(1.5)
        let pid3 = try backend()
        XCTAssertFalse([pid1, pid2].contains(pid3), "\(pid1) \(pid2) \(pid3)")
        XCTAssertEqual(try checks(pid2), 0)
        XCTAssertFalse(px.logLines(containing: "closing because: server_check_query failed").isEmpty, px.log())
        XCTAssertTrue(waitUntil(timeout: 10) {
            (try? pg.adminQuery("select count(*) from pg_stat_activity where pid = \(pid2)")) == "0"
        }, "the server that failed its check is closed")
    }
}

