// Tests of max_db_connections / max_user_connections shares across workers (GroupQuotas, the pool-quota
// algorithm applied to connection-limit groups): even split, moves to waiting workers, the invariant.
import XCTest
import Shared
@testable import Supervisor

final class ServiceLimitsTests: XCTestCase {
    let db = LimitGroupKey(kind: .database, name: "app")
    let user = LimitGroupKey(kind: .user, name: "bob")
    let ms: Int64 = 1_000_000

    func testFirstReportSplitsTheLimitEvenly() {
        var g = GroupQuotas(workers: 4)
        let orders = g.report(slot: 1, key: db, size: 4, servers: 0, idle: 0, waiting: 0, seq: 0, now: 0)
        XCTAssertEqual(orders.map(\.slot), [0, 1, 2, 3])
        XCTAssertEqual(orders.map(\.quota), [1, 1, 1, 1])
        XCTAssertEqual(orders.map(\.key), [db, db, db, db])
        // Groups are independent: a user group of the same workers has its own split.
        let u = g.report(slot: 0, key: user, size: 6, servers: 0, idle: 0, waiting: 0, seq: 0, now: 0)
        XCTAssertEqual(u.map(\.quota), [2, 2, 1, 1])
        XCTAssertEqual(g.pools[db]!.quota.reduce(0, +), 4)
    }

    func testShareMovesToTheWaitingWorkerOnlyAfterTheDonorConfirms() {
        var g = GroupQuotas(workers: 2)
        var seq = [UInt32](repeating: 0, count: 2)
        for o in g.report(slot: 0, key: db, size: 4, servers: 0, idle: 0, waiting: 0, seq: 0, now: 0) { seq[o.slot] = o.seq }
        // Worker 1 holds two idle servers of the database; worker 0 is at its share with 6 clients waiting.
        XCTAssertEqual(g.report(slot: 1, key: db, size: 4, servers: 2, idle: 2, waiting: 0, seq: seq[1], now: 1 * ms), [])
        let lower = g.report(slot: 0, key: db, size: 4, servers: 2, idle: 0, waiting: 6, seq: seq[0], now: 2 * ms)
        XCTAssertEqual(lower.map(\.slot), [1])
        XCTAssertEqual(lower.map(\.quota), [0])
        XCTAssertEqual(g.pools[db]!.quota, [2, 0])
        // Not yet down to its new share: nothing is raised.
        XCTAssertEqual(g.report(slot: 1, key: db, size: 4, servers: 1, idle: 0, waiting: 0, seq: lower[0].seq, now: 3 * ms), [])
        let raise = g.report(slot: 1, key: db, size: 4, servers: 0, idle: 0, waiting: 0, seq: lower[0].seq, now: 4 * ms)
        XCTAssertEqual(raise.map(\.slot), [0])
        XCTAssertEqual(raise.map(\.quota), [4])
    }

    func testAWorkerThatExitsGivesItsShareAway() {
        var g = GroupQuotas(workers: 2)
        var seq = [UInt32](repeating: 0, count: 2)
        for o in g.report(slot: 0, key: user, size: 2, servers: 1, idle: 0, waiting: 3, seq: 0, now: 0) { seq[o.slot] = o.seq }
        _ = g.report(slot: 1, key: user, size: 2, servers: 1, idle: 0, waiting: 0, seq: seq[1], now: 1 * ms)
        _ = g.report(slot: 0, key: user, size: 2, servers: 1, idle: 0, waiting: 3, seq: seq[0], now: 1 * ms)
        let orders = g.workerGone(slot: 1, now: 500 * ms)
        XCTAssertEqual(orders.last?.slot, 0)
        XCTAssertEqual(g.pools[user]!.quota[0], 2)
        // Its replacement starts from what is left: nothing.
        let started = g.workerStarted(slot: 1)
        XCTAssertEqual(started.map(\.quota), [0])
    }

    /// Random demand on 4 workers, each applying its orders as a worker does (closing down to a
    /// lowered share before it acknowledges, launching up to its share): the servers of all workers
    /// together never exceed the limit, and a worker with waiting clients ends up served.
    func testRandomDemandNeverExceedsTheLimit() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let workers = 4, size = Int.random(in: 1...8, using: &rng)
            var g = GroupQuotas(workers: workers)
            var quota = (0..<workers).map { PoolShare.even(size: size, slot: $0, workers: workers) }
            var seq = [UInt32](repeating: 0, count: workers)
            var servers = [Int](repeating: 0, count: workers)
            var demand = [Int](repeating: 0, count: workers)
            var queue: [ShareOrder<LimitGroupKey>] = []
            var now: Int64 = 0
            for step in 0..<400 {
                now += 60 * ms
                if step % 40 == 0 { demand = (0..<workers).map { _ in Int.random(in: 0...size + 2, using: &rng) } }
                // Apply pending orders (lower: shed at once; raise: launch up to demand).
                let todo = queue
                queue = []
                for o in todo {
                    quota[o.slot] = o.quota
                    seq[o.slot] = o.seq
                    servers[o.slot] = min(servers[o.slot], o.quota)
                    queue += g.report(slot: o.slot, key: db, size: size, servers: servers[o.slot], idle: 0,
                                      waiting: max(0, demand[o.slot] - servers[o.slot]), seq: o.seq, now: now)
                }
                for s in 0..<workers {
                    servers[s] = min(demand[s], quota[s])
                    queue += g.report(slot: s, key: db, size: size, servers: servers[s], idle: 0,
                                      waiting: max(0, demand[s] - servers[s]), seq: seq[s], now: now)
                    XCTAssertLessThanOrEqual(servers.reduce(0, +), size, "step \(step)")
                    XCTAssertLessThanOrEqual(g.pools[db]!.quota.reduce(0, +), size)
                }
            }
        }
    }
}

final class StuckLoweringTests: XCTestCase {
    let key = PoolQuotaKey(database: "app", user: "bob")
    let ms: Int64 = 1_000_000

    /// A donor whose idle server was taken (session mode) before the lowering arrived cannot shed it:
    /// after a while it keeps what it holds, the receiver gets the rest, and later moves are not blocked.
    func testALoweringTheDonorCannotHonourIsCutBack() {
        var q = PoolQuotas(workers: 2)
        var seq = [UInt32](repeating: 0, count: 2)
        for o in q.report(slot: 0, key: key, size: 4, servers: 0, idle: 0, waiting: 0, seq: 0, now: 0) { seq[o.slot] = o.seq }
        _ = q.report(slot: 1, key: key, size: 4, servers: 1, idle: 1, waiting: 0, seq: seq[1], now: 1 * ms)
        let lower = q.report(slot: 0, key: key, size: 4, servers: 2, idle: 0, waiting: 3, seq: seq[0], now: 2 * ms)
        XCTAssertEqual(lower.map(\.quota), [0], "worker 1 lowered from 2 to 0 (nothing of its share in use)")
        // Its idle server got a client meanwhile: it acknowledges with 1 busy server, above its new quota.
        XCTAssertEqual(q.report(slot: 1, key: key, size: 4, servers: 1, idle: 0, waiting: 0, seq: lower[0].seq, now: 3 * ms), [])
        XCTAssertEqual(q.report(slot: 0, key: key, size: 4, servers: 2, idle: 0, waiting: 3, seq: seq[0], now: 100 * ms), [],
                       "not cut back too early")
        let cut = q.report(slot: 0, key: key, size: 4, servers: 2, idle: 0, waiting: 3, seq: seq[0], now: 400 * ms)
        XCTAssertEqual(cut.map(\.slot), [1, 0], "the donor keeps what it holds, the receiver gets the rest")
        XCTAssertEqual(q.pools[key]!.quota, [3, 1])
        XCTAssertNil(q.pools[key]!.pending)
        XCTAssertLessThanOrEqual(q.pools[key]!.quota.reduce(0, +), 4)
    }
}
