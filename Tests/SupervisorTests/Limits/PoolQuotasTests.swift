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
        XCTAssertEqual(lower[0].receiver, 0, "the lowering names where the quota goes: its idle servers move there")
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
        XCTAssertEqual(raise.map(\.receiver), [-1], "a raise moves nothing")
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

    // MARK: reserve_pool_size

    /// Both workers hold their even share of size 5, all busy, with clients waiting: nothing moves
    /// until clients have waited past reserve_pool_timeout (the worker reports them as overdue); then
    /// the most overdue worker gets up to that many from the reserve of 3, marked as reserve, and the
    /// quotas never add up to more than size + reserve.
    func testReserveGoesOnlyToClientsThatWaitedPastTheTimeout() {
        var q = PoolQuotas(workers: 2)
        var seqs = [UInt32](repeating: 0, count: 2)
        for o in q.report(slot: 0, key: key, size: 5, reserve: 3, servers: 3, idle: 0, waiting: 3, seq: 0, now: 0) {
            seqs[o.slot] = o.seq
        }
        XCTAssertEqual(q.report(slot: 0, key: key, size: 5, reserve: 3, servers: 3, idle: 0, waiting: 3, seq: seqs[0], now: 1 * ms), [])
        XCTAssertEqual(q.report(slot: 1, key: key, size: 5, reserve: 3, servers: 2, idle: 0, waiting: 2, seq: seqs[1], now: 2 * ms), [],
                       "clients wait, but not past reserve_pool_timeout yet: no reserve")
        XCTAssertEqual(q.pools[key]!.quota, [3, 2])
        // Worker 1's 2 clients are overdue: it gets both from the reserve at once.
        let grant = q.report(slot: 1, key: key, size: 5, reserve: 3, servers: 2, idle: 0, waiting: 2, overdue: 2,
                             seq: seqs[1], now: 3 * ms)
        XCTAssertEqual(grant.map(\.slot), [1])
        XCTAssertEqual(grant.map(\.quota), [4])
        XCTAssertEqual(grant.map(\.fromReserve), [2])
        XCTAssertEqual(q.pools[key]!.reserveInUse, 2)
        // Worker 0's 3 overdue clients get what is left of the reserve: 1 (after the move interval).
        XCTAssertEqual(q.report(slot: 0, key: key, size: 5, reserve: 3, servers: 3, idle: 0, waiting: 3, overdue: 3,
                                seq: seqs[0], now: 4 * ms), [], "at most one move per interval")
        let rest = q.report(slot: 0, key: key, size: 5, reserve: 3, servers: 3, idle: 0, waiting: 3, overdue: 3,
                            seq: seqs[0], now: 4 * ms + PoolQuotas.moveIntervalNanos)
        XCTAssertEqual(rest.map(\.slot), [0])
        XCTAssertEqual(rest.map(\.quota), [4])
        XCTAssertEqual(rest.map(\.fromReserve), [1])
        XCTAssertEqual(sum(q), 8)
        // The reserve is used up: more overdue clients get nothing.
        XCTAssertEqual(q.report(slot: 0, key: key, size: 5, reserve: 3, servers: 4, idle: 0, waiting: 2, overdue: 2,
                                seq: rest[0].seq, now: 10 * PoolQuotas.moveIntervalNanos), [])
        XCTAssertEqual(sum(q), 8)
    }

    /// A burst on both workers: the reserve left is shared in proportion to the clients waiting at
    /// each worker's quota, so the worker whose report crosses reserve_pool_timeout first does not take
    /// it all from clients that waited as long on the other (whose report comes a tick later).
    func testReserveIsSharedBetweenWorkersWhoseClientsWait() {
        var q = PoolQuotas(workers: 2)
        var seqs = [UInt32](repeating: 0, count: 2)
        for o in q.report(slot: 1, key: key, size: 2, reserve: 3, servers: 1, idle: 0, waiting: 0, seq: 0, now: 0) {
            seqs[o.slot] = o.seq
        }
        let first = q.report(slot: 0, key: key, size: 2, reserve: 3, servers: 1, idle: 0, waiting: 1, overdue: 1,
                             seq: seqs[0], now: 0)
        XCTAssertEqual(first.map(\.fromReserve), [1], "one overdue client: one reserve server")
        // Within the move interval both workers come to have 2 clients waiting; worker 0's are overdue,
        // worker 1's not yet.
        XCTAssertEqual(q.report(slot: 1, key: key, size: 2, reserve: 3, servers: 1, idle: 0, waiting: 2,
                                seq: seqs[1], now: 1 * ms), [])
        XCTAssertEqual(q.report(slot: 0, key: key, size: 2, reserve: 3, servers: 2, idle: 0, waiting: 2, overdue: 2,
                                seq: first[0].seq, now: 2 * ms), [])
        // 2 left for 4 waiting clients: worker 0 gets 1, not both.
        let t = PoolQuotas.moveIntervalNanos
        let a = q.report(slot: 0, key: key, size: 2, reserve: 3, servers: 2, idle: 0, waiting: 2, overdue: 2,
                         seq: first[0].seq, now: t)
        XCTAssertEqual(a.map(\.slot), [0])
        XCTAssertEqual(a.map(\.fromReserve), [1])
        // Worker 1's clients are overdue a tick later: the last one is theirs.
        let b = q.report(slot: 1, key: key, size: 2, reserve: 3, servers: 1, idle: 0, waiting: 2, overdue: 2,
                         seq: seqs[1], now: 2 * t)
        XCTAssertEqual(b.map(\.slot), [1])
        XCTAssertEqual(b.map(\.fromReserve), [1])
        XCTAssertEqual(q.pools[key]!.quota, [3, 2])
    }

    /// A worker's report sent before it applied its grant (an older seq) still counts the clients the
    /// grant was for: no second grant until the acknowledgement, which counts the servers launched.
    func testReserveIsGrantedOnceThenWaitsForTheAcknowledgement() {
        var q = PoolQuotas(workers: 1)
        let first = q.report(slot: 0, key: key, size: 2, reserve: 4, servers: 2, idle: 0, waiting: 5, seq: 0, now: 0)
        let grant = q.report(slot: 0, key: key, size: 2, reserve: 4, servers: 2, idle: 0, waiting: 5, overdue: 2,
                             seq: first[0].seq, now: 1 * ms)
        XCTAssertEqual(grant.map(\.fromReserve), [2])
        let later = PoolQuotas.moveIntervalNanos * 2
        XCTAssertEqual(q.report(slot: 0, key: key, size: 2, reserve: 4, servers: 2, idle: 0, waiting: 5, overdue: 2,
                                seq: first[0].seq, now: later), [], "a stale report does not grant again")
        // Acknowledged: 2 servers launched for the 2 overdue clients; 1 more has become overdue since.
        let next = q.report(slot: 0, key: key, size: 2, reserve: 4, servers: 4, idle: 0, waiting: 3, overdue: 1,
                            seq: grant[0].seq, now: later + 1 * ms)
        XCTAssertEqual(next.map(\.quota), [5])
        XCTAssertEqual(next.map(\.fromReserve), [1])
    }

    /// PgBouncer uses the reserve only when the pool is full: quota another worker leaves unused moves
    /// first (and size nobody holds is given at once), even to clients that waited past the timeout.
    func testUnusedQuotaMovesBeforeTheReserveIsUsed() {
        var q = PoolQuotas(workers: 2)
        var seqs = [UInt32](repeating: 0, count: 2)
        for o in q.report(slot: 1, key: key, size: 4, reserve: 2, servers: 0, idle: 0, waiting: 0, seq: 0, now: 0) {
            seqs[o.slot] = o.seq
        }
        _ = q.report(slot: 1, key: key, size: 4, reserve: 2, servers: 0, idle: 0, waiting: 0, seq: seqs[1], now: 0)
        let lower = q.report(slot: 0, key: key, size: 4, reserve: 2, servers: 2, idle: 0, waiting: 2, overdue: 2,
                             seq: seqs[0], now: 1 * ms)
        XCTAssertEqual(lower.map(\.slot), [1], "worker 1's unused quota is lowered, no reserve granted")
        XCTAssertEqual(lower.map(\.quota), [0])
        XCTAssertEqual(lower.map(\.fromReserve), [0])
        let raise = q.report(slot: 1, key: key, size: 4, reserve: 2, servers: 0, idle: 0, waiting: 0, seq: lower[0].seq, now: 2 * ms)
        XCTAssertEqual(raise.map(\.quota), [4])
        XCTAssertEqual(raise.map(\.fromReserve), [0])
        XCTAssertEqual(q.pools[key]!.reserveInUse, 0)
    }

    /// The burst of CI's ReservePoolTests failure: worker 1 holds the whole size (2) with both servers
    /// busy on long queries, worker 0 holds 0 with 3 clients past reserve_pool_timeout. Lowering
    /// worker 1 toward the even split would wait for a query to end (and be cut back every
    /// stuckLoweringNanos, blocking the reserve meanwhile): worker 0 gets the reserve instead.
    func testOverdueClientsBelowTheEvenShareGetTheReserveWhenTheDonorIsBusy() {
        var q = PoolQuotas(workers: 2)
        var seqs = [UInt32](repeating: 0, count: 2)
        for o in q.report(slot: 1, key: key, size: 2, reserve: 2, servers: 0, idle: 0, waiting: 0, seq: 0, now: 0) {
            seqs[o.slot] = o.seq
        }
        _ = q.report(slot: 1, key: key, size: 2, reserve: 2, servers: 0, idle: 0, waiting: 0, seq: seqs[1], now: 0)
        // Worker 0 is idle: its quota moves to worker 1, whose clients wait.
        _ = q.report(slot: 0, key: key, size: 2, reserve: 2, servers: 0, idle: 0, waiting: 0, seq: seqs[0], now: 0)
        let lower = q.report(slot: 1, key: key, size: 2, reserve: 2, servers: 1, idle: 0, waiting: 1, seq: seqs[1],
                             now: 1 * ms + PoolQuotas.moveIntervalNanos)
        XCTAssertEqual(lower.map(\.slot), [0])
        let raise = q.report(slot: 0, key: key, size: 2, reserve: 2, servers: 0, idle: 0, waiting: 0, seq: lower[0].seq,
                             now: 2 * ms + PoolQuotas.moveIntervalNanos)
        XCTAssertEqual(raise.map(\.slot), [1])
        XCTAssertEqual(q.pools[key]!.quota, [0, 2])
        seqs = [lower[0].seq, raise[0].seq]
        // Both of worker 1's servers run long queries (its third client waits); worker 0's 3 clients
        // wait from t = 0 and are overdue from 1 s (reserve_pool_timeout). Both report every 50 ms,
        // acknowledging every quota they are sent; worker 0 opens a server for each place it gets.
        let start = 10 * PoolQuotas.moveIntervalNanos
        var quota = [0, 2]
        var granted: Int64?
        for step in 0..<60 {
            let t = start + Int64(step) * 50 * ms
            let overdue = t - start >= 1000 * ms
            let servers0 = min(quota[0], 3)
            for o in q.report(slot: 0, key: key, size: 2, reserve: 2, servers: servers0, idle: 0, waiting: 3 - servers0,
                              overdue: overdue ? 3 - servers0 : 0, seq: seqs[0], now: t)
                + q.report(slot: 1, key: key, size: 2, reserve: 2, servers: 2, idle: 0, waiting: 1,
                           overdue: overdue ? 1 : 0, seq: seqs[1], now: t + 1 * ms) {
                seqs[o.slot] = o.seq
                quota[o.slot] = o.quota
                if o.slot == 0 && o.fromReserve > 0 && granted == nil { granted = t - start }
                if o.slot == 1 && overdue { XCTAssertEqual(o.quota, 2, "worker 1 lowered after the clients were overdue") }
            }
            XCTAssertLessThanOrEqual(sum(q), 4)
        }
        XCTAssertNotNil(granted, "the overdue clients never got the reserve: quotas \(q.pools[key]!.quota)")
        XCTAssertLessThanOrEqual(granted ?? .max, 1500 * ms, "the reserve came late")
        XCTAssertEqual(q.pools[key]!.quota, [2, 2])
        XCTAssertEqual(q.pools[key]!.reserveInUse, 2)
    }

    /// Reserve quota stays while its servers are open (PgBouncer keeps reserve connections until they
    /// close); once a worker with nobody waiting holds fewer servers than its quota, the quota above
    /// the size goes back, as a lowering the worker confirms, and may then be granted again.
    func testReserveGoesBackOnceNoServerStandsOnIt() {
        var q = PoolQuotas(workers: 2)
        var seqs = [UInt32](repeating: 0, count: 2)
        for o in q.report(slot: 0, key: key, size: 4, reserve: 2, servers: 2, idle: 0, waiting: 2, seq: 0, now: 0) {
            seqs[o.slot] = o.seq
        }
        _ = q.report(slot: 1, key: key, size: 4, reserve: 2, servers: 2, idle: 0, waiting: 1, seq: seqs[1], now: 0)
        let grant = q.report(slot: 0, key: key, size: 4, reserve: 2, servers: 2, idle: 0, waiting: 2, overdue: 2,
                             seq: seqs[0], now: 1 * ms)
        XCTAssertEqual(grant.map(\.quota), [4])
        seqs[0] = grant[0].seq
        var t = PoolQuotas.moveIntervalNanos
        // Worker 0 launched the 2 and all 4 are busy; then the burst is over but the servers are still
        // open (idle): the reserve stays with them.
        XCTAssertEqual(q.report(slot: 0, key: key, size: 4, reserve: 2, servers: 4, idle: 0, waiting: 0,
                                seq: seqs[0], now: t), [])
        XCTAssertEqual(q.report(slot: 1, key: key, size: 4, reserve: 2, servers: 2, idle: 2, waiting: 0,
                                seq: seqs[1], now: t + 1 * ms), [])
        XCTAssertEqual(q.report(slot: 0, key: key, size: 4, reserve: 2, servers: 4, idle: 4, waiting: 0,
                                seq: seqs[0], now: t + 2 * ms), [])
        XCTAssertEqual(sum(q), 6)
        // server_idle_timeout closed 3 of worker 0's: the 2 above the size go back.
        t += PoolQuotas.moveIntervalNanos
        let back = q.report(slot: 0, key: key, size: 4, reserve: 2, servers: 1, idle: 1, waiting: 0, seq: seqs[0], now: t)
        XCTAssertEqual(back.map(\.slot), [0])
        XCTAssertEqual(back.map(\.quota), [2])
        XCTAssertEqual(back.map(\.fromReserve), [0])
        XCTAssertEqual(sum(q), 4)
        // Until worker 0 confirms, nothing else moves: worker 1's overdue client waits.
        XCTAssertEqual(q.report(slot: 1, key: key, size: 4, reserve: 2, servers: 2, idle: 0, waiting: 1, overdue: 1,
                                seq: seqs[1], now: t + PoolQuotas.moveIntervalNanos), [])
        XCTAssertEqual(q.report(slot: 0, key: key, size: 4, reserve: 2, servers: 1, idle: 1, waiting: 0, seq: back[0].seq,
                                now: t + PoolQuotas.moveIntervalNanos + 1 * ms), [], "confirmed: nobody is raised")
        // The reserve is free again: worker 1's overdue client gets one (worker 0 used all 4 of its
        // servers less than calmNanos ago, so none of its quota moves).
        let regrant = q.report(slot: 1, key: key, size: 4, reserve: 2, servers: 2, idle: 0, waiting: 1, overdue: 1,
                               seq: seqs[1], now: t + 2 * PoolQuotas.moveIntervalNanos + 1 * ms)
        XCTAssertEqual(regrant.map(\.slot), [1])
        XCTAssertEqual(regrant.map(\.quota), [3])
        XCTAssertEqual(regrant.map(\.fromReserve), [1])
        XCTAssertEqual(q.pools[key]!.quota, [2, 3])
    }

    /// A dead worker's reserve goes back at once (it holds no connection); reserve 0, or a reload that
    /// changes the reserve, start again from the even split of the size.
    func testReserveOfADeadWorkerReturnsAndAReloadResets() {
        var q = PoolQuotas(workers: 2)
        var seqs = [UInt32](repeating: 0, count: 2)
        for o in q.report(slot: 0, key: key, size: 2, reserve: 1, servers: 1, idle: 0, waiting: 1, seq: 0, now: 0) {
            seqs[o.slot] = o.seq
        }
        _ = q.report(slot: 1, key: key, size: 2, reserve: 1, servers: 1, idle: 0, waiting: 0, seq: seqs[1], now: 0)
        XCTAssertEqual(q.report(slot: 0, key: key, size: 2, reserve: 1, servers: 1, idle: 0, waiting: 1, overdue: 1,
                                seq: seqs[0], now: 1 * ms).map(\.fromReserve), [1])
        XCTAssertEqual(q.pools[key]!.quota, [2, 1])
        _ = q.workerGone(slot: 0, now: PoolQuotas.moveIntervalNanos * 2)
        XCTAssertEqual(q.pools[key]!.reserveInUse, 0, "the dead worker's reserve is free again")
        XCTAssertLessThanOrEqual(sum(q), 2)
        // Without a reserve, overdue clients get nothing beyond the size.
        var plain = PoolQuotas(workers: 1)
        let o = plain.report(slot: 0, key: key, size: 2, servers: 2, idle: 0, waiting: 3, seq: 0, now: 0)
        XCTAssertEqual(plain.report(slot: 0, key: key, size: 2, servers: 2, idle: 0, waiting: 3, overdue: 3,
                                    seq: o[0].seq, now: 1 * ms), [])
        // A reload that gives the pool a reserve: the even split of the size again, the reserve known.
        XCTAssertEqual(plain.resizeAll(size: { _ in 2 }, reserve: { _ in 3 }).map(\.quota), [2])
        XCTAssertEqual(plain.pools[key]!.reserve, 3)
        XCTAssertEqual(plain.resizeAll(size: { _ in 2 }, reserve: { _ in 3 }), [])
    }

    /// Simulated workers that obey their quotas report in random order, with clients that become
    /// overdue: the servers of all workers never exceed size + reserve, and the quotas exceed the
    /// size only by what was granted from the reserve.
    func testServersNeverExceedSizePlusReserveUnderRandomReports() {
        var rng = SystemRandomNumberGenerator()
        let size = 5, reserve = 3
        var granted = 0
        for _ in 0..<50 {
            var q = PoolQuotas(workers: 3)
            var seq = [UInt32](repeating: 0, count: 3)
            var servers = [Int](repeating: 0, count: 3)
            var busy = [Int](repeating: 0, count: 3)
            var quota = (0..<3).map { PoolQuotas.evenShare(size: size, slot: $0, workers: 3) }
            var waiting = [Int](repeating: 0, count: 3)
            var inbox: [QuotaOrder] = []
            var now: Int64 = 0
            var overdue = [Int](repeating: 0, count: 3)
            func report(_ s: Int) {
                overdue[s] = servers[s] >= quota[s] && Bool.random(using: &rng) ? waiting[s] : 0
                let orders = q.report(slot: s, key: key, size: size, reserve: reserve, servers: servers[s],
                                      idle: servers[s] - busy[s], waiting: waiting[s], overdue: overdue[s], seq: seq[s], now: now)
                for o in orders where o.fromReserve > 0 {
                    XCTAssertGreaterThanOrEqual(overdue[o.slot], o.fromReserve, "reserve beyond the overdue clients")
                    granted += o.fromReserve
                }
                inbox += orders
            }
            for _ in 0..<600 {
                now += Int64.random(in: 0...60, using: &rng) * ms
                if !inbox.isEmpty && Bool.random(using: &rng) {
                    let o = inbox.removeFirst()
                    quota[o.slot] = o.quota
                    seq[o.slot] = o.seq
                    servers[o.slot] = max(busy[o.slot], min(servers[o.slot], o.quota))
                    report(o.slot)
                } else {
                    let s = Int.random(in: 0..<3, using: &rng)
                    if servers[s] < quota[s] { servers[s] = Int.random(in: servers[s]...quota[s], using: &rng) }
                    busy[s] = Int.random(in: 0...servers[s], using: &rng)
                    if servers[s] > quota[s] { servers[s] = max(busy[s], quota[s]) }
                    waiting[s] = Int.random(in: 0...2, using: &rng) == 0 ? Int.random(in: 1...20, using: &rng) : 0
                    report(s)
                }
                XCTAssertLessThanOrEqual(servers.reduce(0, +), size + reserve, "servers \(servers) quotas \(quota)")
                XCTAssertLessThanOrEqual(q.pools[key]!.quota.reduce(0, +), size + reserve)
            }
        }
        XCTAssertGreaterThan(granted, 0, "the reserve was never used")
    }
}
