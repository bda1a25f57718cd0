// End to end: psql and pgbench through pgswift in session mode, and the per-worker pool size limit.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class SessionPoolingTests: XCTestCase {
    func testPsqlWorksThroughTwoWorkers() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(PgswiftSettings(postgres: pg))
        defer { px.stop() }

        let target = px.target(user: "u_trust", database: "testdb")
        let r = try Psql.run(target, "select current_user, current_database(), 6 * 7")
        XCTAssertTrue(r.succeeded, "\(r)")
        XCTAssertEqual(r.stdout.trimmed, "u_trust|testdb|42")

        // The answer comes from the test cluster (not some other server on the machine).
        let port = try Psql.run(target, "select inet_server_port()")
        XCTAssertEqual(port.stdout.trimmed, String(pg.port), "\(port)")
        XCTAssertEqual(px.workerPids().count, 2, px.log())
    }

    func testPgbenchSelectOnlyThroughTwoWorkersHasNoFailures() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        var settings = PgswiftSettings(postgres: pg)
        settings.authType = "scram-sha-256"
        settings.defaultPoolSize = 60  // every one of the 50 clients gets its own server in session mode
        let px = try Pgswift.start(settings)
        defer { px.stop() }

        let target = px.target(user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
        let (r, summary) = try Pgbench.run(target, ["-n", "-S", "-c", "50", "-j", "2", "-T", "10"], timeout: 180)
        XCTAssertTrue(r.succeeded, "\(r)\npgswift log:\n\(px.log().suffix(4000))")
        XCTAssertEqual(summary.failedTransactions, 0, r.stdout)
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, r.stdout)
        print("pgbench through pgswift (debug build, informative only): tps \(summary.tps ?? 0), " +
              "transactions \(summary.transactions ?? 0)")

        // SO_REUSEPORT spread the 50 logins over both workers.
        for slot in 0..<2 {
            let seen = waitUntil(timeout: 10) {
                !px.logLines(containing: " w\(slot) ", "login attempt: db=bench user=bench").isEmpty
            }
            XCTAssertTrue(seen, "worker \(slot) logged no login attempt; log:\n\(px.log().suffix(4000))")
        }
        XCTAssertTrue(px.isRunning)
    }

    func testSessionPoolNeverExceedsPoolSizeWithOneWorker() throws {
        try checkPoolLimit(workers: 1, poolSize: 5)
    }

    func testSessionPoolNeverExceedsPoolSizePerWorkerWithTwoWorkers() throws {
        try checkPoolLimit(workers: 2, poolSize: 5)
    }

    /// 100 psql clients at once, each `select pg_sleep(0.2)`; meanwhile pg_stat_activity is sampled
    /// every 50 ms. All must succeed and no sample may exceed poolSize × workers backends.
    private func checkPoolLimit(workers: Int, poolSize: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let pg = try PostgresServer.shared()
        // Backends of an instance another test just stopped may still be on their way out.
        XCTAssertTrue(waitUntil(timeout: 20) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 },
                      "leftover u_trust backends", file: file, line: line)
        var settings = PgswiftSettings(postgres: pg)
        settings.workers = workers
        settings.defaultPoolSize = poolSize
        let px = try Pgswift.start(settings)
        defer { px.stop() }

        let dir = try makeTempDirectory(prefix: "clients")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = px.target(user: "u_trust", database: "testdb")
        let clients = try (0..<100).map { try Psql.spawn(target, "select pg_sleep(0.2)", dir: dir, tag: "c\($0)") }

        var maxSeen = 0
        var samples = 0
        let deadline = monotonicNow() + 180
        while clients.contains(where: \.isRunning) && monotonicNow() < deadline {
            maxSeen = max(maxSeen, try pg.countBackends(user: "u_trust", db: "testdb"))
            samples += 1
            sleepSeconds(0.05)
        }
        let stuck = clients.filter(\.isRunning)
        stuck.forEach { $0.terminate(SIGKILL, grace: 0) }
        XCTAssertTrue(stuck.isEmpty, "\(stuck.count) clients still running after 180 s", file: file, line: line)

        let failed = clients.filter { $0.poll() != 0 }
        XCTAssertTrue(failed.isEmpty, "\(failed.count) of 100 clients failed; first: " +
                      "\(failed.first.map { $0.stderrText() } ?? "")\npgswift log:\n\(px.log().suffix(3000))",
                      file: file, line: line)
        XCTAssertLessThanOrEqual(maxSeen, poolSize * workers, "backends for u_trust over \(samples) samples",
                                 file: file, line: line)
        XCTAssertGreaterThan(maxSeen, 0, "sampling never saw a backend (\(samples) samples)", file: file, line: line)
        print("pool limit \(poolSize) x \(workers) worker(s): at most \(maxSeen) backends in \(samples) samples")
    }
}

