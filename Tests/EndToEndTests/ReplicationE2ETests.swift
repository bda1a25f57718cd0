// End to end: replication connections through pgswift (issue 15, PgBouncer 1.23+): pg_recvlogical and
// pg_receivewal stream through a transaction-mode pool; each replication client gets a server connection
// of its own (its startup parameters and options included), shown in SHOW CLIENTS/SERVERS' replication
// column and closed when it leaves; it evicts an idle server for room and waits when there is none; a
// replication login PostgreSQL refuses fails only its own client.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class ReplicationE2ETests: XCTestCase {
    /// A cluster of the test's own, able to replicate: `u_repl` has REPLICATION and pg_hba.conf lines
    /// for physical and logical replication; `u_norepl` may log in but not replicate.
    private func startCluster() throws -> PostgresServer {
        let pg = try PostgresServer.startPrivate(settings: ["wal_level=logical", "max_wal_senders=10",
                                                            "max_replication_slots=10"]) { data in
            let path = data + "/pg_hba.conf"
            let rules = """
                host replication u_repl   127.0.0.1/32 trust
                host all         u_repl   127.0.0.1/32 trust
                host all         u_norepl 127.0.0.1/32 trust

                """
            try (rules + readTextFile(path)).write(toFile: path, atomically: false, encoding: .utf8)
        }
        do {
            try pg.adminQuery(["create role u_repl login replication", "create role u_norepl login",
                               "create table public.t(a int)", "grant select on public.t to u_repl"], database: "testdb")
        } catch {
            pg.stop()
            throw error
        }
        return pg
    }

    private func settings(_ pg: PostgresServer, workers: Int, poolSize: Int) -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.workers = workers
        s.poolMode = "transaction"
        s.defaultPoolSize = poolSize
        // Physical replication tools ask for database "replication" (pg_receivewal, pg_basebackup).
        s.databases.append(("replication", pg.connectionString(dbname: "replication")))
        s.users += [("u_repl", "x"), ("u_norepl", "x")]
        s.settings = [("admin_users", "u_trust")]
        return s
    }

    private func admin(_ px: Pgswift) throws -> WireClient {
        try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
    }

    /// SHOW CLIENTS or SHOW SERVERS rows as dictionaries.
    private func rows(_ px: Pgswift, _ command: String) throws -> [[String: String]] {
        let a = try admin(px)
        defer { a.close() }
        let answer = try a.show(command)
        return answer.rows.map { row in
            Dictionary(uniqueKeysWithValues: zip(answer.columns, row.map { $0 ?? "" }))
        }
    }

    private func replicationRows(_ px: Pgswift, _ command: String, _ mode: String) throws -> [[String: String]] {
        try rows(px, command).filter { $0["replication"] == mode }
    }

    private func walsenders(_ pg: PostgresServer) throws -> Int {
        Int(try pg.adminQuery("select count(*) from pg_stat_activity where backend_type = 'walsender'")) ?? -1
    }

    /// Logical replication (IDENTIFY_SYSTEM, SQL and pg_recvlogical's CopyBoth stream) and physical
    /// (pg_receivewal) through a transaction-mode pool with two workers; each stream's server is its own
    /// and goes when its client does.
    func testLogicalAndPhysicalReplicationStreamThroughOwnServers() throws {
        let pg = try startCluster()
        defer { pg.stop() }
        let px = try Pgswift.start(settings(pg, workers: 2, poolSize: 2))
        defer { px.stop() }
        let systemID = try pg.adminQuery("select system_identifier from pg_control_system()")

        // A logical replication client: its application_name and options (a setting pgswift does not
        // track, which an ordinary client may not send) reach its own server as it gave them.
        let r = try WireClient.connect(port: px.port, user: "u_repl", database: "testdb",
                                       parameters: [("replication", "database"), ("application_name", "repl-e2e"),
                                                    ("options", "-c enable_seqscan=off")])
        XCTAssertEqual(try r.query("IDENTIFY_SYSTEM").first?.first ?? nil, systemID)
        XCTAssertEqual(try r.query("SHOW enable_seqscan").first?.first ?? nil, "off")
        XCTAssertEqual(try r.query("SHOW application_name").first?.first ?? nil, "repl-e2e")
        XCTAssertEqual(r.reported["application_name"], "repl-e2e", "its login answer is its own server's")
        // Transaction mode does not apply: the same backend across transactions.
        let pid = try r.query("select pg_backend_pid()").first?.first ?? nil
        XCTAssertEqual(try r.query("select pg_backend_pid()").first?.first ?? nil, pid)
        r.close()
        XCTAssertTrue(waitUntil(timeout: 20) { (try? self.walsenders(pg)) == 0 }, px.log().suffix(3000).description)

        // pg_recvlogical: START_REPLICATION and a CopyBoth stream both ways (status updates every second).
        _ = try pg.adminQuery("select pg_create_logical_replication_slot('e2e_slot', 'test_decoding')", database: "testdb")
        let dir = try makeTempDirectory(prefix: "repl")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/decoded.txt"
        let recv = try ChildProcess.spawn([
            try PostgresTools.path("pg_recvlogical"),
            "-d", "host=127.0.0.1 port=\(px.port) dbname=testdb user=u_repl sslmode=disable",
            "--slot=e2e_slot", "--start", "--no-loop", "-s", "1", "-F", "1", "-f", out,
        ], stdoutPath: dir + "/recvlogical.out", stderrPath: dir + "/recvlogical.err")
        defer { _ = recv.terminate(SIGINT, grace: 10) }
        XCTAssertTrue(waitUntil(timeout: 30) { (try? self.replicationRows(px, "SHOW SERVERS", "logical"))?.count == 1 },
                      "no logical replication server: \(recv.stderrText())\n\(px.log().suffix(3000))")
        // The server row shows while it logs in; its client is `waiting` until the two are linked.
        var client: [[String: String]] = []
        XCTAssertTrue(waitUntil(timeout: 30) {
            client = (try? self.replicationRows(px, "SHOW CLIENTS", "logical")) ?? []
            return client.count == 1 && client.first?["state"] == "active"
        }, "the logical replication client is not linked: \(client)\n\(px.log().suffix(3000))")
        XCTAssertEqual(client.first?["user"], "u_repl")
        _ = try pg.adminQuery("insert into public.t values (42)", database: "testdb")
        XCTAssertTrue(waitUntil(timeout: 30) { readTextFile(out).contains("table public.t: INSERT: a[integer]:42") },
                      "decoded: \(readTextFile(out))\n\(recv.stderrText())\n\(px.log().suffix(3000))")
        XCTAssertEqual(recv.terminate(SIGINT, grace: 20), 0, recv.stderrText())
        XCTAssertTrue(waitUntil(timeout: 20) {
            (try? self.replicationRows(px, "SHOW SERVERS", "logical"))?.isEmpty == true && (try? self.walsenders(pg)) == 0
        }, px.log().suffix(3000).description)
        XCTAssertFalse(px.logLines(containing: "closing because: replication client was closed").isEmpty, px.log())

        // pg_receivewal: physical replication of database "replication" until SIGINT, which it ends with 0.
        let walDir = dir + "/wal"
        try FileManager.default.createDirectory(atPath: walDir, withIntermediateDirectories: true)
        let wal = try ChildProcess.spawn([
            try PostgresTools.path("pg_receivewal"),
            "-d", "host=127.0.0.1 port=\(px.port) user=u_repl sslmode=disable", "-D", walDir, "--no-loop", "-s", "1",
        ], stdoutPath: dir + "/receivewal.out", stderrPath: dir + "/receivewal.err")
        defer { _ = wal.terminate(SIGINT, grace: 10) }
        XCTAssertTrue(waitUntil(timeout: 30) {
            ((try? FileManager.default.contentsOfDirectory(atPath: walDir)) ?? []).contains { $0.hasSuffix(".partial") }
        }, "no WAL received: \(wal.stderrText())\n\(px.log().suffix(3000))")
        let physical = try replicationRows(px, "SHOW SERVERS", "physical")
        XCTAssertEqual(physical.count, 1, "\(physical)")
        XCTAssertEqual(physical.first?["database"], "replication")
        XCTAssertEqual(try replicationRows(px, "SHOW CLIENTS", "physical").first?["state"], "active")
        XCTAssertEqual(wal.terminate(SIGINT, grace: 20), 0, wal.stderrText())
        XCTAssertTrue(waitUntil(timeout: 20) { (try? self.walsenders(pg)) == 0 }, px.log().suffix(3000).description)

        // The pool still serves ordinary clients.
        let ok = try Psql.run(px.target(user: "u_repl", database: "testdb"), "select count(*) from public.t")
        XCTAssertEqual(ok.stdout.trimmed, "1", "\(ok)")
        XCTAssertTrue(px.isRunning)
    }

    /// pool_size 1, one worker: a replication client closes the pool's idle server to make room (as
    /// PgBouncer: "evicted"); a second one waits while the first holds the pool's only place, and gets
    /// its own server once the first leaves; none of them is ever handed to an ordinary client.
    func testReplicationClientsTakeRoomInThePoolAndWaitForIt() throws {
        let pg = try startCluster()
        defer { pg.stop() }
        let px = try Pgswift.start(settings(pg, workers: 1, poolSize: 1))
        defer { px.stop() }
        let target = px.target(user: "u_repl", database: "testdb")
        XCTAssertEqual(try Psql.run(target, "select 1").stdout.trimmed, "1")  // the pool's one server, idle now

        let first = try WireClient.connect(port: px.port, user: "u_repl", database: "testdb",
                                           parameters: [("replication", "database")])
        XCTAssertFalse(try first.query("IDENTIFY_SYSTEM").isEmpty)
        XCTAssertTrue(waitUntil(timeout: 10) { !px.logLines(containing: "closing because: evicted").isEmpty }, px.log())

        let dir = try makeTempDirectory(prefix: "repl")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var second = target
        second.database = "testdb replication=database"  // appended to the conninfo
        let waiting = try Psql.spawn(second, "IDENTIFY_SYSTEM", dir: dir, tag: "second")
        defer { _ = waiting.terminate(SIGKILL, grace: 0) }
        XCTAssertTrue(waitUntil(timeout: 20) {
            (try? self.replicationRows(px, "SHOW CLIENTS", "logical"))?.contains { $0["state"] == "waiting" } == true
        }, "\((try? self.rows(px, "SHOW CLIENTS")).map { "\($0)" } ?? "")\n\(px.log().suffix(3000))")
        XCTAssertNil(waiting.poll(), "the second replication client waits for room")

        first.close()
        XCTAssertEqual(waiting.wait(timeout: 30), 0, "\(waiting.stderrText())\n\(px.log().suffix(3000))")
        XCTAssertFalse(waiting.stdoutText().trimmed.isEmpty)
        XCTAssertTrue(waitUntil(timeout: 20) { (try? self.walsenders(pg)) == 0 }, px.log().suffix(3000).description)
        XCTAssertEqual(px.logLines(containing: "closing because: replication client was closed").count, 2, px.log())
        // An ordinary client gets a fresh server, not a walsender.
        let backend = try Psql.run(target, "select backend_type from pg_stat_activity where pid = pg_backend_pid()")
        XCTAssertEqual(backend.stdout.trimmed, "client backend", "\(backend)")
    }

    /// PostgreSQL refuses the replication login (no REPLICATION role): its client gets PgBouncer's
    /// "login failed", the server's reason is logged, and ordinary clients of the same pool are not
    /// touched: no cached login error, no wait.
    func testRefusedReplicationLoginFailsOnlyItsClient() throws {
        let pg = try startCluster()
        defer { pg.stop() }
        let px = try Pgswift.start(settings(pg, workers: 1, poolSize: 2))
        defer { px.stop() }
        do {
            _ = try WireClient.connect(port: px.port, user: "u_norepl", database: "testdb",
                                       parameters: [("replication", "database")])
            XCTFail("a replication login without the REPLICATION role succeeded")
        } catch let e as WireServerError {
            XCTAssertEqual(e.fields.message, "login failed", "\(e)")
        }
        XCTAssertTrue(waitUntil(timeout: 10) {
            !px.logLines(containing: "server login failed: FATAL", "replication").isEmpty
        }, px.log())
        XCTAssertEqual(px.logLines(containing: "closing because: login failed").count, 2, px.log())
        let ok = try Psql.run(px.target(user: "u_norepl", database: "testdb"), "select 1")
        XCTAssertEqual(ok.stdout.trimmed, "1", "\(ok)\n\(px.log().suffix(3000))")
        // An unknown replication value is refused as PostgreSQL refuses it.
        XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_repl", database: "testdb",
                                                    parameters: [("replication", "sometimes")])) { error in
            XCTAssertTrue("\(error)".contains("invalid value for parameter \"replication\""), "\(error)")
        }
    }
}
