// Tests of the cross-worker pool quotas: even split, lower-then-raise moves, dead workers, reloads.
import XCTest
import Shared
@testable import Supervisor

final class PoolQuotasTests: XCTestCase {
    let key = PoolQuotaKey(database: "app", user: "bob")
    let ms: Int64 = 1_000_000

    private func sum(_ q: PoolQuotas) -> Int { q.pools[key]!.quota.reduce(0, +) }

    func testEvenShareAddsUpToTheSize() {
        for size in 0..<30 {
            for workers in 1..<9 {
                let shares = (0..<workers).map { PoolQuotas.evenShare(size: size, slot: $0, workers: workers) }
                XCTAssertEqual(shares.reduce(0, +), size)
                XCTAssertLessThanOrEqual(shares.max()! - shares.min()!, 1)
            }
        }
        XCTAssertEqual((0..<4).map { PoolQuotas.evenShare(size: 5, slot: $0, workers: 4) }, [2, 1, 1, 1])
    }

    /// pool_idle_timeout: a pool is forgotten once every live worker reports it holds none (servers
    /// -1, a freed pool or the acknowledgement of one never opened), and every live worker is told to
    /// forget its quota (-1); a report of "none" for an unknown pool creates nothing.
    func testPoolForgottenOnceNoWorkerHoldsIt() {
        var q = PoolQuotas(workers: 3)
        let orders = q.report(slot: 0, key: key, size: 5, servers: 2, idle: 2, waiting: 0, seq: 0, now: 0)
        XCTAssertEqual(orders.map(\.slot), [0, 1, 2])
        // Workers 1 and 2 never opened it: they acknowledge with "none".
        for o in orders where o.slot != 0 {
            XCTAssertEqual(q.report(slot: o.slot, key: key, size: 5, servers: -1, idle: 0, waiting: 0, seq: o.seq, now: 1), [])
        }
        XCTAssertEqual(q.count, 1, "worker 0 still holds the pool")
        // Worker 0 frees it: forgotten, everyone told.
        let forget = q.report(slot: 0, key: key, size: 5, servers: -1, idle: 0, waiting: 0, seq: orders[0].seq, now: 2)
        XCTAssertEqual(q.count, 0)
        XCTAssertNil(q.quota(key, slot: 0))
        XCTAssertEqual(forget.map(\.slot), [0, 1, 2])
        XCTAssertEqual(Set(forget.map(\.quota)), [-1])
        // A late "none" does not bring it back; a worker opening it again starts a fresh even split.
        XCTAssertEqual(q.report(slot: 1, key: key, size: 5, servers: -1, idle: 0, waiting: 0, seq: 0, now: 3), [])
        XCTAssertEqual(q.count, 0)
        let again = q.report(slot: 2, key: key, size: 5, servers: 1, idle: 0, waiting: 0, seq: 0, now: 4)
        XCTAssertEqual(again.map(\.quota), [2, 2, 1])
        XCTAssertEqual(sum(q), 5)
    }

    /// A live worker whose acknowledgement never came (lost in a burst) does not keep the pool forever.
    func testWorkerNeverHeardFromDoesNotKeepThePool() {
        var q = PoolQuotas(workers: 2)
        let orders = q.report(slot: 0, key: key, size: 4, servers: 1, idle: 1, waiting: 0, seq: 0, now: 0)
        let forget = q.report(slot: 0, key: key, size: 4, servers: -1, idle: 0, waiting: 0, seq: orders[0].seq, now: 1)
        XCTAssertEqual(q.count, 0)
        XCTAssertEqual(forget.map(\.slot), [0, 1])
    }

    /// A dead worker counts as holding nothing; a worker still holding the pool keeps it remembered.
    func testPoolKeptWhileOneWorkerHoldsIt() {
        var q = PoolQuotas(workers: 2)
        _ = q.report(slot: 0, key: key, size: 4, servers: 1, idle: 1, waiting: 0, seq: 0, now: 0)
        _ = q.report(slot: 1, key: key, size: 4, servers: 1, idle: 1, waiting: 0, seq: 0, now: 0)
        XCTAssertEqual(q.report(slot: 0, key: key, size: 4, servers: -1, idle: 0, waiting: 0, seq: 1, now: 1).map(\.quota).filter { $0 < 0 }, [])
        XCTAssertEqual(q.count, 1)
        _ = q.workerGone(slot: 1, now: 2)
        let forget = q.report(slot: 0, key: key, size: 4, servers: -1, idle: 0, waiting: 0, seq: 1, now: 3)
        XCTAssertEqual(q.count, 0)
        XCTAssertEqual(forget.map(\.slot), [0], "only live workers are told")
    }

    func testFirstReportCreatesTheEvenSplitAndTellsEveryone() {
        var q = PoolQuotas(workers: 4)
        let orders = q.report(slot: 2, key: key, size: 5, servers: 1, idle: 0, waiting: 0, seq: 0, now: 0)
        XCTAssertEqual(orders.map(\.slot), [0, 1, 2, 3])
        XCTAssertEqual(orders.map(\.quota), [2, 1, 1, 1])
        XCTAssertEqual(sum(q), 5)
    }

    /// Acknowledges every order as a worker would: applies it and reports with its seq.
    private func ack(_ q: inout PoolQuotas, _ orders: [QuotaOrder], servers: (Int) -> Int, idle: (Int) -> Int,
                     waiting: (Int) -> Int, now: Int64) -> [QuotaOrder] {
        var out: [QuotaOrder] = []
        for o in orders {
            out += q.report(slot: o.slot, key: o.key, size: 5, servers: servers(o.slot), idle: idle(o.slot),
                            waiting: waiting(o.slot), seq: o.seq, now: now)
        }
        return out
    }

    func testIdleQuotaMovesOnlyAfterTheDonorConfirms() {
        var q = PoolQuotas(workers: 2)
        var seqs = [UInt32](repeating: 0, count: 2)
        for o in q.report(slot: 0, key: key, size: 4, servers: 0, idle: 0, waiting: 0, seq: 0, now: 0) { seqs[o.slot] = o.seq }
        XCTAssertEqual(q.pools[key]!.quota, [2, 2])
        // Worker 1 holds 2 idle servers; worker 0 is at its quota with 10 clients waiting.
        XCTAssertEqual(q.report(slot: 1, key: key, size: 4, servers: 2, idle: 2, waiting: 0, seq: seqs[1], now: 1 * ms), [])
        let lower = q.report(slot: 0, key: key, size: 4, servers: 2, idle: 0, waiting: 10, seq: seqs[0], now: 2 * ms)
        XCTAssertEqual(lower.count, 1)
        XCTAssertEqual(lower[0].slot, 1)
        XCTAssertEqual(lower[0].quota, 0)
        XCTAssertEqual(q.pools[key]!.quota, [2, 0], "the donor is lowered first, the receiver not raised yet")
        // A report from the donor sent before it saw the lowering does not confirm it.
        XCTAssertEqual(q.report(slot: 1, key: key, size: 4, servers: 2, idle: 2, waiting: 0, seq: seqs[1], now: 3 * ms), [])
        XCTAssertEqual(q.report(slot: 1, key: key, size: 4, servers: 0, idle: 0, waiting: 0, seq: seqs[1], now: 3 * ms), [],
                       "an old seq never confirms, even with few servers")
        // The donor applied it but still has a busy server above its new quota.
        XCTAssertEqual(q.report(slot: 1, key: key, size: 4, servers: 1, idle: 0, waiting: 0, seq: lower[0].seq, now: 4 * ms), [])
        XCTAssertEqual(q.pools[key]!.quota, [2, 0])
        let raise = q.report(slot: 1, key: key, size: 4, servers: 0, idle: 0, waiting: 0, seq: lower[0].seq, now: 5 * ms)
        XCTAssertEqual(raise.map(\.slot), [0])
        XCTAssertEqual(raise.map(\.quota), [4])
        XCTAssertEqual(sum(q), 4)
    }

    func testNoMovesWhenEveryoneIsBusyAndAtMostOneMovePerInterval() {
        var q = PoolQuotas(workers: 2)
        _ = q.report(slot: 0, key: key, size: 6, servers: 3, idle: 0, waiting: 5, seq: 0, now: 0)
        XCTAssertEqual(q.report(slot: 1, key: key, size: 6, servers: 3, idle: 0, waiting: 5, seq: 0, now: 0), [])
        XCTAssertEqual(q.pools[key]!.quota, [3, 3])
        // Worker 1's clients are gone: once it has been calm for a while, it can give 2 of its 3 (one
        // server still busy). Just after its clients waited, its open idle servers stay.
        XCTAssertEqual(q.report(slot: 1, key: key, size: 6, servers: 3, idle: 2, waiting: 0, seq: 0, now: 1 * ms), [])
        XCTAssertEqual(q.report(slot: 0, key: key, size: 6, servers: 3, idle: 0, waiting: 5, seq: 0,
                                now: PoolQuotas.calmNanos - 1 * ms), [], "worker 1 had all 3 in use less than calmNanos ago")
        let c = PoolQuotas.calmNanos
        var orders = q.report(slot: 1, key: key, size: 6, servers: 3, idle: 2, waiting: 0, seq: 0, now: c + 1 * ms)
        XCTAssertEqual(orders.map(\.slot), [1], "worker 0 still waits: worker 1 is lowered")
        XCTAssertEqual(orders.map(\.quota), [1])
        orders = q.report(slot: 1, key: key, size: 6, servers: 1, idle: 0, waiting: 0, seq: orders[0].seq, now: c + 3 * ms)
        XCTAssertEqual(orders.map(\.slot), [0])
        XCTAssertEqual(q.pools[key]!.quota, [5, 1])
        // Worker 1 is now idle entirely, worker 0 still waits: not before the move interval has passed,
        // and not before worker 1's last server has been unused for calmNanos.
        XCTAssertEqual(q.report(slot: 1, key: key, size: 6, servers: 1, idle: 1, waiting: 0, seq: orders[0].seq, now: c + 4 * ms), [])
        XCTAssertEqual(q.report(slot: 0, key: key, size: 6, servers: 5, idle: 0, waiting: 5, seq: orders[0].seq, now: c + 50 * ms), [])
        XCTAssertEqual(q.report(slot: 0, key: key, size: 6, servers: 5, idle: 0, waiting: 5, seq: orders[0].seq,
                                now: c + 3 * ms + PoolQuotas.moveIntervalNanos), [])
        let later = q.report(slot: 0, key: key, size: 6, servers: 5, idle: 0, waiting: 5, seq: orders[0].seq,
                             now: c + 4 * ms + PoolQuotas.calmNanos)
        XCTAssertEqual(later.map(\.slot), [1])
        XCTAssertEqual(later.map(\.quota), [0])
    }

    /// Two saturated workers whose waiters come and go must not trade open servers back and forth
    /// (each move closes a server connection and logs in a new one): a donor gives only quota it left
    /// unused over the last `calmNanos` (quota with no open server behind it at once).
    func testARecentlyBusyWorkerKeepsItsOpenServersButNotUnusedQuota() {
        var q = PoolQuotas(workers: 2)
        _ = q.report(slot: 0, key: key, size: 8, servers: 4, idle: 0, waiting: 3, seq: 0, now: 0)
        XCTAssertEqual(q.report(slot: 1, key: key, size: 8, servers: 3, idle: 0, waiting: 2, seq: 0, now: 0), [])
        XCTAssertEqual(q.pools[key]!.quota, [4, 4])
        // Worker 1's waiters are served for a moment: 1 idle server open, 1 of quota never opened.
        // Worker 0 still waits.
        let lower = q.report(slot: 1, key: key, size: 8, servers: 3, idle: 1, waiting: 0, seq: 0, now: 10 * ms)
        XCTAssertEqual(lower.map(\.slot), [1])
        XCTAssertEqual(lower.map(\.quota), [3], "only the unopened place moves, the idle open server stays")
        let raise = q.report(slot: 1, key: key, size: 8, servers: 3, idle: 1, waiting: 0, seq: lower[0].seq, now: 30 * ms)
        XCTAssertEqual(raise.map(\.slot), [0])
        XCTAssertEqual(q.pools[key]!.quota, [5, 3])
        // Still within calmNanos of its last wait: worker 1 keeps its idle open server.
        XCTAssertEqual(q.report(slot: 0, key: key, size: 8, servers: 5, idle: 0, waiting: 2, seq: raise[0].seq,
                                now: 30 * ms + PoolQuotas.moveIntervalNanos), [])
        // Calm for long enough: now it is taken.
        let later = q.report(slot: 0, key: key, size: 8, servers: 5, idle: 0, waiting: 2, seq: raise[0].seq,
                             now: PoolQuotas.calmNanos + 1 * ms)
        XCTAssertEqual(later.map(\.slot), [1])
        XCTAssertEqual(later.map(\.quota), [2])
        XCTAssertLessThanOrEqual(sum(q), 8)
    }

    /// A worker whose idle quota went to another must get its even share back when its own clients
    /// wait, even though the other worker's clients wait too (else it starves at quota 0).
    func testAWorkerBelowItsEvenShareGetsItBackFromABusyOne() {
        var q = PoolQuotas(workers: 2)
        _ = q.report(slot: 1, key: key, size: 2, servers: 0, idle: 0, waiting: 0, seq: 0, now: 0)
        let lower = q.report(slot: 0, key: key, size: 2, servers: 1, idle: 0, waiting: 5, seq: 0, now: 0)
        XCTAssertEqual(lower.map(\.slot), [1], "worker 1 has never used its place: it moves")
        let raise = q.report(slot: 1, key: key, size: 2, servers: 0, idle: 0, waiting: 0, seq: lower[0].seq, now: 1 * ms)
        XCTAssertEqual(raise.map(\.slot), [0])
        XCTAssertEqual(q.pools[key]!.quota, [2, 0])
        // Worker 0 now uses both and its clients still wait; a client of worker 1 waits at quota 0.
        _ = q.report(slot: 0, key: key, size: 2, servers: 2, idle: 0, waiting: 4, seq: raise[0].seq, now: 2 * ms)
        let back = q.report(slot: 1, key: key, size: 2, servers: 0, idle: 0, waiting: 1, seq: lower[0].seq,
                            now: 2 * ms + PoolQuotas.moveIntervalNanos)
        XCTAssertEqual(back.map(\.slot), [0])
        XCTAssertEqual(back.map(\.quota), [1], "worker 0 is lowered to its even share")
        // Worker 0 retires the server its client released, and confirms: worker 1 gets its place.
        let given = q.report(slot: 0, key: key, size: 2, servers: 1, idle: 0, waiting: 4, seq: back[0].seq,
                             now: 3 * ms + PoolQuotas.moveIntervalNanos)
        XCTAssertEqual(given.map(\.slot), [1])
        XCTAssertEqual(q.pools[key]!.quota, [1, 1])
        // Both at their even share with clients waiting: nothing moves any more.
        XCTAssertEqual(q.report(slot: 0, key: key, size: 2, servers: 1, idle: 0, waiting: 4, seq: back[0].seq,
                                now: 10 * PoolQuotas.moveIntervalNanos), [])
        XCTAssertEqual(q.report(slot: 1, key: key, size: 2, servers: 1, idle: 0, waiting: 1, seq: given[0].seq,
                                now: 11 * PoolQuotas.moveIntervalNanos), [])
    }

    func testADeadWorkersQuotaIsFreedAndItsSuccessorIsToldItsShare() {
        var q = PoolQuotas(workers: 2)
        _ = q.report(slot: 1, key: key, size: 4, servers: 2, idle: 0, waiting: 0, seq: 0, now: 0)
        _ = q.report(slot: 0, key: key, size: 4, servers: 2, idle: 0, waiting: 3, seq: 0, now: 0)
        XCTAssertEqual(q.pools[key]!.quota, [2, 2])
        // Worker 1 dies: its quota goes to worker 0 at once (nothing to confirm).
        let orders = q.workerGone(slot: 1, now: 1 * ms)
        XCTAssertEqual(orders.map(\.slot), [0])
        XCTAssertEqual(q.pools[key]!.quota, [4, 0])
        // Its replacement is told 0 for this pool (it starts from 0 anyway).
        let told = q.workerStarted(slot: 1)
        XCTAssertEqual(told.map(\.slot), [1])
        XCTAssertEqual(told.map(\.quota), [0])
        XCTAssertEqual(sum(q), 4)
    }

    func testReloadResizesToTheNewEvenSplit() {
        var q = PoolQuotas(workers: 3)
        _ = q.report(slot: 0, key: key, size: 3, servers: 0, idle: 0, waiting: 0, seq: 0, now: 0)
        let orders = q.resizeAll(size: { _ in 7 })
        XCTAssertEqual(orders.map(\.quota), [3, 2, 2])
        XCTAssertEqual(q.resizeAll(size: { _ in 7 }), [])
    }

    /// Simulated workers that obey their quotas (busy servers close only when released) report in
    /// random order: the servers of all workers together never exceed the pool size.
    func testServersNeverExceedTheSizeUnderRandomReports() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            var q = PoolQuotas(workers: 4)
            var seq = [UInt32](repeating: 0, count: 4)
            var servers = [Int](repeating: 0, count: 4)
            var busy = [Int](repeating: 0, count: 4)
            var quota = (0..<4).map { PoolQuotas.evenShare(size: 5, slot: $0, workers: 4) }
            var waiting = [Int](repeating: 0, count: 4)
            var inbox: [QuotaOrder] = []
            var now: Int64 = 0
            var moves = 0
            func report(_ s: Int) {
                inbox += q.report(slot: s, key: key, size: 5, servers: servers[s], idle: servers[s] - busy[s],
                                  waiting: waiting[s], seq: seq[s], now: now)
            }
            for _ in 0..<600 {
                now += Int64.random(in: 0...60, using: &rng) * ms
                if !inbox.isEmpty && Bool.random(using: &rng) {
                    // A worker applies its next message: closes idle servers above it, then acknowledges.
                    let o = inbox.removeFirst()
                    if o.quota != quota[o.slot] { moves += 1 }
                    quota[o.slot] = o.quota
                    seq[o.slot] = o.seq
                    servers[o.slot] = max(busy[o.slot], min(servers[o.slot], o.quota))
                    report(o.slot)
                } else {
                    let s = Int.random(in: 0..<4, using: &rng)
                    // Launch up to the quota, release or take servers, clients come and go.
                    if servers[s] < quota[s] { servers[s] = Int.random(in: servers[s]...quota[s], using: &rng) }
                    busy[s] = Int.random(in: 0...servers[s], using: &rng)
                    if servers[s] > quota[s] { servers[s] = max(busy[s], quota[s]) }
                    waiting[s] = Int.random(in: 0...2, using: &rng) == 0 ? Int.random(in: 1...20, using: &rng) : 0
                    report(s)
                }
                XCTAssertLessThanOrEqual(servers.reduce(0, +), 5, "servers \(servers) quotas \(quota)")
                XCTAssertLessThanOrEqual(q.pools[key]!.quota.reduce(0, +), 5)
            }
            XCTAssertGreaterThan(moves, 0)
        }
    }
}
