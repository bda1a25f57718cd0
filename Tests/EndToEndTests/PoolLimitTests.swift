// End to end: pool_size holds for the whole service, whatever the number of workers.
import Foundation
import XCTest

final class PoolLimitTests: XCTestCase {
    private static let poolSize = 5

    /// 4 workers, default_pool_size=5, transaction mode, 200 pgbench clients (select-only): no failed
    /// transaction, and a sampler of pg_stat_activity never sees more than 5 server connections of
    /// the pool. The same run with 1 worker gives the throughput to compare with (printed, not
    /// asserted: a debug build on a shared 2-core machine is too noisy for a speed assertion).
    func testPoolSizeHoldsAcrossFourWorkers() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        var tps: [Int: Double] = [:]
        for workers in [4, 1] {
            XCTAssertTrue(TxFixtures.waitForNoBackends(pg, user: "bench", db: "bench"), "leftover bench backends")
            var s = try TxFixtures.settings(pg, workers: workers, poolSize: Self.poolSize)
            s.authType = "scram-sha-256"
            let px = try Pgswift.start(s)
            defer { px.stop() }
            let target = px.target(user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
            let run = try PgbenchRun.sampled(target, ["-n", "-S", "-c", "200", "-j", "2", "-t", "200"],
                                             pg: pg, user: "bench", db: "bench", timeout: 300)
            let context = "\(workers) workers: \(run.result.abridged)\npgswift log (tail):\n\(px.log().suffix(4000))"
            XCTAssertFalse(run.result.timedOut, context)
            XCTAssertEqual(run.result.status, 0, context)
            XCTAssertEqual(run.summary.failedTransactions, 0, context)
            XCTAssertEqual(run.summary.transactions, 200 * 200, context)
            XCTAssertGreaterThan(run.samples, 0, "the sampler never ran")
            XCTAssertLessThanOrEqual(run.maxBackends, Self.poolSize,
                                     "\(workers) workers: server connections over \(run.samples) samples\n\(context)")
            XCTAssertTrue(px.isRunning, "pgswift died; log:\n\(px.log().suffix(4000))")
            tps[workers] = run.summary.tps ?? 0
            print("pool limit: \(workers) worker(s), default_pool_size=\(Self.poolSize), 200 clients -S: " +
                  "tps \(run.summary.tps ?? 0), at most \(run.maxBackends) server connections in \(run.samples) samples")
        }
        print("pool limit: throughput 4 workers / 1 worker = \((tps[4] ?? 0) / max(tps[1] ?? 1, 1)) (informative)")
    }
}
