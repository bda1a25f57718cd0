// End to end: a database on several hosts (host=a,b): load balancing, failover, and target_session_attrs.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class MultiHostTests: XCTestCase {
    private func pgbenchInBackground(_ target: ClientTarget, _ args: [String], dir: String, tag: String) throws -> ChildProcess {
        let argv = [try PostgresTools.path("pgbench"), "-h", "127.0.0.1", "-p", String(target.port), "-U", target.user]
            + args + [target.database]
        return try ChildProcess.spawn(argv, environment: target.environment, stdoutPath: "\(dir)/\(tag).out",
                                      stderrPath: "\(dir)/\(tag).err")
    }

    private func settings(_ a: PostgresServer, _ b: PostgresServer, extra: String = "") -> PgswiftSettings {
        var s = HealthE2E.settings(a)
        s.databases = [
            ("testdb", a.connectionString(dbname: "testdb")),
            ("bench", "host=127.0.0.1,127.0.0.1 port=\(a.port),\(b.port) dbname=bench" + (extra.isEmpty ? "" : " " + extra)),
        ]
        // The check logs in as u_trust, so pg_stat_activity's `bench` backends are pgswift's pool only.
        s.pgswiftSettings.append(("health_check_user", "u_trust"))
        return s
    }

    /// Acceptance 3: pgbench spreads over both hosts; one stops: pgbench goes on on the other and only
    /// clients whose transaction was on the lost host fail; it comes back: traffic returns to both.
    func testRoundRobinFailoverAndReturn() throws {
        let a = try PostgresServer.startPrivate()
        defer { a.stop() }
        // B's log names each backend's user: the bench backends its shutdown terminates are counted.
        let b = try PostgresServer.startPrivate(settings: ["log_line_prefix=%m [%p] user=%u "])
        defer { b.stop() }
        try a.ensurePgbenchData()
        try b.ensurePgbenchData()
        var s = settings(a, b)
        // Connections recycle every 2 s, so round-robin brings traffic back to a host that returned.
        s.settings.append(("server_lifetime", "2"))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        XCTAssertTrue(HealthE2E.waitState(px, port: a.port, "up", timeout: 20))
        XCTAssertTrue(HealthE2E.waitState(px, port: b.port, "up", timeout: 20))
        let bench = px.target(user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
        let dir = try makeTempDirectory(prefix: "mh")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // Both hosts get connections.
        let first = try pgbenchInBackground(bench, ["-S", "-c", "8", "-j", "2", "-T", "3"], dir: dir, tag: "first")
        XCTAssertTrue(waitUntil(timeout: 10) {
            (try? a.countBackends(user: "bench", db: "bench")) ?? 0 > 0 && (try? b.countBackends(user: "bench", db: "bench")) ?? 0 > 0
        }, "not both hosts used")
        XCTAssertEqual(first.wait(timeout: 30), 0, readTextFile("\(dir)/first.err"))

        // One host stops in the middle of a run.
        let second = try pgbenchInBackground(bench, ["-S", "-c", "8", "-j", "2", "-T", "6", "-P", "1"], dir: dir, tag: "second")
        XCTAssertTrue(waitUntil(timeout: 10) { (try? b.countBackends(user: "bench", db: "bench")) ?? 0 > 0 })
        sleepSeconds(1)
        let logBefore = readTextFile(b.baseDir + "/postgres.log").count
        b.stopServer()
        // Every bench backend B had at the stop (busy or idle in the pool) logs its termination: no
        // more clients than that can have had a query there (server_lifetime=2 keeps recycling them,
        // so a count taken before the stop is not it).
        let onB = String(readTextFile(b.baseDir + "/postgres.log").dropFirst(logBefore)).split(separator: "\n")
            .filter { $0.contains("user=bench ") && $0.contains("terminating connection due to administrator command") }.count
        let status = second.wait(timeout: 60)
        let out = readTextFile("\(dir)/second.out"), err = readTextFile("\(dir)/second.err")
        let aborted = err.split(separator: "\n").filter { $0.contains("aborted in command") }.count
        XCTAssertNotNil(status)
        print("multi-host: \(aborted) pgbench clients aborted; \(onB) bench backends terminated on the stopped host")
        XCTAssertLessThanOrEqual(aborted, onB, "more clients failed than had a server on the lost host\n\(err)")
        XCTAssertLessThan(aborted, 8, "every client failed\n\(err)")
        XCTAssertGreaterThan(Pgbench.parse(out).transactions ?? 0, 0, out + err)
        // Progress lines (stderr, one a second) after the stop still show transactions on the other host.
        let late = err.split(separator: "\n").filter { $0.hasPrefix("progress: 5.0 s") || $0.hasPrefix("progress: 6.0 s") }
        XCTAssertFalse(late.isEmpty, err)
        for line in late { XCTAssertFalse(line.contains(" 0.0 tps"), "no traffic after the stop: \(line)") }
        XCTAssertTrue(HealthE2E.waitState(px, port: b.port, "down", timeout: 5))

        // It comes back: traffic returns to both.
        try b.startServer()
        XCTAssertTrue(HealthE2E.waitState(px, port: b.port, "up", timeout: 10), px.log())
        let third = try pgbenchInBackground(bench, ["-S", "-c", "8", "-j", "2", "-T", "5"], dir: dir, tag: "third")
        XCTAssertTrue(waitUntil(timeout: 10) {
            (try? a.countBackends(user: "bench", db: "bench")) ?? 0 > 0 && (try? b.countBackends(user: "bench", db: "bench")) ?? 0 > 0
        }, "traffic did not return to the restarted host\n\(px.log())")
        XCTAssertEqual(third.wait(timeout: 30), 0, readTextFile("\(dir)/third.err"))
    }

    /// Acceptance 4: with target_session_attrs=read-write, writes go only to the primary. The "standby"
    /// is a server started with default_transaction_read_only=on (a real streaming standby would take
    /// a base backup per test run): the health check sees transaction_read_only = on there.
    func testTargetSessionAttrsReadWriteAvoidsTheReadOnlyHost() throws {
        let primary = try PostgresServer.startPrivate()
        defer { primary.stop() }
        let standIn = try PostgresServer.startPrivate()
        defer { standIn.stop() }
        // After set-up (roles and databases need writes): every new session is read-only from now on.
        try standIn.adminQuery(["alter system set default_transaction_read_only = on", "select pg_reload_conf()"])
        try primary.ensurePgbenchData()
        let px = try Pgswift.start(settings(primary, standIn, extra: "target_session_attrs=read-write"))
        defer { px.stop() }
        XCTAssertTrue(waitUntil(timeout: 20) {
            let rows = (try? HealthE2E.health(px)) ?? []
            return rows.contains { $0[1] == String(primary.port) && $0[3] == "primary" }
                && rows.contains { $0[1] == String(standIn.port) && $0[3] == "read-only" }
        }, "\((try? HealthE2E.health(px)) ?? [])")
        let bench = px.target(user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
        let run = try Pgbench.run(bench, ["-c", "4", "-j", "2", "-T", "2"])
        XCTAssertEqual(run.result.status, 0, "\(run.result)\n\(px.log())")
        XCTAssertEqual(run.summary.failedTransactions ?? 0, 0)
        XCTAssertGreaterThan(Int(try primary.adminQuery("select count(*) from pgbench_history", database: "bench")) ?? 0, 0)
        XCTAssertEqual(try standIn.countBackends(user: "bench", db: "bench"), 0)
        XCTAssertTrue(px.logLines(containing: "127.0.0.1:\(standIn.port)", "read-only").count >= 1, px.log())

        // The primary stops: nothing else may take writes, so clients fail fast instead of landing on the read-only host.
        primary.stopServer()
        XCTAssertTrue(HealthE2E.waitState(px, port: primary.port, "down", timeout: 5))
        let failure = try HealthE2E.firstError(port: px.port, user: "bench", database: "bench")
        XCTAssertEqual(failure?.sqlstate, "08006", "\(String(describing: failure))")
        XCTAssertTrue(failure?.message?.contains("down or not read-write") ?? false, "\(String(describing: failure))")
        XCTAssertEqual(try standIn.countBackends(user: "bench", db: "bench"), 0)
    }
}
