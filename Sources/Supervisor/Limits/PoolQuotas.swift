// Pool sizes for the whole service: each worker's share of every pool, moved to where clients wait.
import Shared

/// A pool as the supervisor knows it: (database, user) as the client asked.
struct PoolQuotaKey: Hashable, Sendable {
    var database: String
    var user: String
}

/// "Tell worker `slot` that its share of `key` is now `quota`" (a `ControlMessage.quota`, or a
/// group quota for max_db_connections / max_user_connections). `fromReserve`: how much of a raise
/// came from the pool's reserve_pool_size (the supervisor logs each such connection, as PgBouncer does).
struct ShareOrder<Key: Hashable & Sendable>: Equatable, Sendable {
    var slot: Int
    var key: Key
    var quota: Int
    var seq: UInt32
    var fromReserve = 0
    /// A lowering made for another worker's waiting clients: that worker's slot (-1: none). Its idle
    /// servers above the new quota may move there instead of closing (pool quotas only).
    var receiver = -1
}

typealias QuotaOrder = ShareOrder<PoolQuotaKey>
/// Pool sizes (`pool_size`) split over the workers.
typealias PoolQuotas = ShareQuotas<PoolQuotaKey>
/// `max_db_connections` and `max_user_connections` split over the workers (ServiceLimits.swift).
typealias GroupQuotas = ShareQuotas<LimitGroupKey>

/// What a worker's report says of one pool (or limit group).
struct SlotFigures {
    var servers = 0
    var idle = 0
    var waiting = 0
    /// Clients waiting longer than reserve_pool_timeout at the worker's quota.
    var overdue = 0
}

/// Most servers one worker had in use at once (reported servers - idle, where a report's idle is the
/// fewest over its interval) in the current and the previous half of a window, and when the current
/// half began (`.min`: not yet).
struct BusyWindow {
    var peak = 0
    var previousPeak = 0
    var start = Int64.min

    /// Starts a new half-window when the current one is over. Called before a report's figures replace
    /// the previous ones: those held until now (a worker reports only changes), so `current` (their
    /// servers in use) starts the new half.
    mutating func rotate(current: Int, now: Int64, half: Int64) {
        if start == .min || now - start >= 2 * half {
            previousPeak = current
            peak = current
            start = now
        } else if now - start >= half {
            previousPeak = peak
            peak = current
            start += half
        }
    }

    /// Most servers in use over the last half to whole window.
    var windowPeak: Int { max(peak, previousPeak) }
}

/// Invariant: for every pool, the sum of the workers' quotas never exceeds the pool size plus its
/// reserve (reserve_pool_size; 0 for limit groups), so the server connections of all workers together
/// never do either; it exceeds the pool size only by reserve handed to workers whose clients waited
/// longer than reserve_pool_timeout. A quota is only raised from size (or reserve) not handed out, or
/// after the worker giving it up has confirmed (a report carrying the lowering's `seq` with no more
/// servers than its new quota) that it is down to its new quota.
/// Pure: driven by reports and the clock, it returns the messages to send. The same algorithm splits
/// pool sizes (key: pool) and database/user connection limits (key: limit group).
struct ShareQuotas<Key: Hashable & Sendable> {
    struct Entry {
        var size: Int
        /// reserve_pool_size (0 when reserve_pool_timeout is 0, and for limit groups): quota above `size`
        /// that only workers with overdue clients get, and that goes back once no server stands on it.
        var reserve = 0
        var quota: [Int]
        /// Each slot's last report (zero for a dead slot, or one that holds no such pool).
        var reported: [SlotFigures]
        /// Seq of the last quota sent to each slot, and of the last one each slot reported applied.
        var sentSeq: [UInt32]
        var seenSeq: [UInt32]
        /// Reported since its process started: one never heard from is nobody's donor yet (it may be busy).
        var heard: [Bool]
        /// The slot's last report said it holds no such pool (freed, or never opened: `servers` -1).
        var freed: [Bool]
        /// Each slot's servers in use over the last `calmNanos`: a donor gives only quota it left unused
        /// over the whole window.
        var busy: [BusyWindow]
        /// A lowering not confirmed yet: while set, nothing else moves in this pool. `receiver` -1: reserve
        /// given back (nobody is raised).
        var pending: (donor: Int, receiver: Int, amount: Int)?
        var lastMove: Int64 = .min
        var nextSeq: UInt32 = 1

        var handedOut: Int { quota.reduce(0, +) }
        /// Reserve in use: quota handed out above the pool size.
        var reserveInUse: Int { max(0, handedOut - size) }
    }

    let workers: Int
    /// False while a slot has no process (died, not respawned yet).
    private(set) var alive: [Bool]
    private(set) var pools: [Key: Entry] = [:]
    /// At most one move per pool per interval, so quotas do not flap with every report.
    static var moveIntervalNanos: Int64 { 150_000_000 }
    /// How long a lowering may wait for a donor whose servers are all busy before it is cut back.
    static var stuckLoweringNanos: Int64 { 300_000_000 }
    /// A donor gives only quota it has not used over this long (its peak of servers in use over the
    /// window, not a snapshot). Quota with no server behind it moves at once. Without the window, two
    /// saturated workers (select-only, 2 workers, 50 clients, 40 servers in `make bench`) each look idle
    /// at some report and trade servers back and forth: ~3 new PostgreSQL sessions a second, each move
    /// closing a server connection on one side and logging in a new one on the other.
    static var calmNanos: Int64 { 1_000_000_000 }

    init(workers: Int) {
        self.workers = max(1, workers)
        alive = Array(repeating: true, count: self.workers)
    }

    /// A worker's share before any message: size / workers, the remainder to the lowest slots.
    /// Workers compute the same themselves, so the sum holds before the first message too.
    static func evenShare(size: Int, slot: Int, workers: Int) -> Int {
        PoolShare.even(size: size, slot: slot, workers: workers)
    }

    func quota(_ key: Key, slot: Int) -> Int? { pools[key]?.quota[slot] }
    /// Pools (or groups) known: what the supervisor keeps per pool is bounded by the pools open somewhere.
    var count: Int { pools.count }

    // MARK: Inputs

    /// A worker's report for a pool. `size` is the pool size from the supervisor's configuration, and
    /// `reserve` its reserve_pool_size (0: none, or reserve_pool_timeout 0); `overdue` the clients that
    /// waited longer than reserve_pool_timeout with the worker at its quota.
    /// `servers` -1: the worker holds no such pool (it freed it after pool_idle_timeout, or never
    /// opened it and acknowledges a quota). Once every live worker says so and no move is under
    /// way, the pool is forgotten and each live worker is told to forget its quota (quota -1). A live
    /// worker never heard from about the pool counts as holding none (its acknowledgement may have
    /// been lost in a burst of new pools).
    mutating func report(slot: Int, key: Key, size: Int, reserve: Int = 0, servers: Int, idle: Int, waiting: Int,
                         overdue: Int = 0, seq: UInt32, now: Int64) -> [ShareOrder<Key>] {
        guard slot >= 0 && slot < workers else { return [] }
        if servers < 0 {
            guard pools[key] != nil else { return [] }
            heard(key, slot: slot, SlotFigures(), seq: seq, freed: true)
            var orders = rebalance(key, now: now)
            // A slot never heard from since its process started holds none either (a worker that opens
            // a pool reports it at its next tick; if that report comes after the forget, the pool starts
            // again from the even split, as every worker then does).
            if let e = pools[key], e.pending == nil, (0..<workers).allSatisfy({ e.freed[$0] || !alive[$0] || !e.heard[$0] }) {
                pools[key] = nil
                for s in 0..<workers where alive[s] { orders.append(ShareOrder(slot: s, key: key, quota: -1, seq: 0)) }
            }
            return orders
        }
        var orders: [ShareOrder<Key>] = []
        if pools[key] == nil {
            pools[key] = makeEntry(size: size, reserve: reserve)
            // A respawned worker starts from 0 for a pool it was never told about: tell everyone.
            for s in 0..<workers where alive[s] { orders.append(send(key, slot: s)) }
        } else if pools[key]!.size != size || pools[key]!.reserve != max(0, reserve) {
            orders += resize(key, to: size, reserve: reserve)
        }
        rotatePeak(key, slot: slot, now: now)
        heard(key, slot: slot, SlotFigures(servers: max(0, servers), idle: max(0, idle), waiting: max(0, waiting),
                                           overdue: max(0, overdue)), seq: seq, freed: false)
        let busy = max(0, servers - idle)
        if busy > pools[key]!.busy[slot].peak { pools[key]!.busy[slot].peak = busy }
        orders += rebalance(key, now: now)
        return orders
    }

    /// A report from `slot` about an existing pool: its figures, and the last quota it applied.
    private mutating func heard(_ key: Key, slot: Int, _ figures: SlotFigures, seq: UInt32, freed: Bool) {
        pools[key]!.reported[slot] = figures
        pools[key]!.seenSeq[slot] = seq
        pools[key]!.heard[slot] = true
        pools[key]!.freed[slot] = freed
    }

    /// A worker process exited: its connections are gone, so its whole quota may be given away.
    mutating func workerGone(slot: Int, now: Int64) -> [ShareOrder<Key>] {
        guard slot >= 0 && slot < workers else { return [] }
        alive[slot] = false
        var orders: [ShareOrder<Key>] = []
        for key in Array(pools.keys) {
            pools[key]!.reported[slot] = SlotFigures()
            pools[key]!.busy[slot].start = .min
            orders += rebalance(key, now: now)
        }
        return orders
    }

    /// A new process in `slot`: its quota of every known pool (it starts from 0 for all of them).
    mutating func workerStarted(slot: Int) -> [ShareOrder<Key>] {
        guard slot >= 0 && slot < workers else { return [] }
        alive[slot] = true
        var orders: [ShareOrder<Key>] = []
        for key in pools.keys {
            pools[key]!.seenSeq[slot] = 0
            pools[key]!.heard[slot] = false
            pools[key]!.freed[slot] = false
            pools[key]!.busy[slot].start = .min
            orders.append(send(key, slot: slot))
        }
        return orders
    }

    /// After a reload: pools whose size or reserve changed start again from the even split.
    mutating func resizeAll(size: (Key) -> Int, reserve: (Key) -> Int = { _ in 0 }) -> [ShareOrder<Key>] {
        var orders: [ShareOrder<Key>] = []
        for key in Array(pools.keys) {
            let new = size(key), newReserve = max(0, reserve(key))
            if new != pools[key]!.size || newReserve != pools[key]!.reserve {
                orders += resize(key, to: new, reserve: newReserve)
            }
        }
        return orders
    }

    /// The slot's busy window, moved on to `now` (`BusyWindow.rotate`).
    private mutating func rotatePeak(_ key: Key, slot: Int, now: Int64) {
        let r = pools[key]!.reported[slot]
        pools[key]!.busy[slot].rotate(current: max(0, r.servers - r.idle), now: now, half: Self.calmNanos / 2)
    }

    /// Most servers `slot` had in use at once over the last half to whole `calmNanos`.
    private mutating func windowPeak(_ key: Key, slot: Int, now: Int64) -> Int {
        rotatePeak(key, slot: slot, now: now)
        return pools[key]!.busy[slot].windowPeak
    }

    // MARK: Moving quota

    private func makeEntry(size: Int, reserve: Int) -> Entry {
        Entry(size: size, reserve: max(0, reserve),
              quota: (0..<workers).map { Self.evenShare(size: size, slot: $0, workers: workers) },
              reported: Array(repeating: SlotFigures(), count: workers),
              sentSeq: Array(repeating: 0, count: workers), seenSeq: Array(repeating: 0, count: workers),
              heard: Array(repeating: false, count: workers), freed: Array(repeating: false, count: workers),
              busy: Array(repeating: BusyWindow(), count: workers))
    }

    /// A changed pool size or reserve: the even split of the new size (reserve handed out goes back).
    /// Shrinking is safe (every worker also caps at the size and reserve from its own configuration);
    /// growing may briefly let a worker whose share grows launch before one whose share shrinks has
    /// closed its extra servers.
    private mutating func resize(_ key: Key, to size: Int, reserve: Int) -> [ShareOrder<Key>] {
        let fresh = makeEntry(size: size, reserve: reserve)
        pools[key]!.size = size
        pools[key]!.reserve = fresh.reserve
        pools[key]!.quota = fresh.quota
        pools[key]!.pending = nil
        return (0..<workers).filter { alive[$0] }.map { send(key, slot: $0) }
    }

    private mutating func send(_ key: Key, slot: Int) -> ShareOrder<Key> {
        let seq = pools[key]!.nextSeq
        pools[key]!.nextSeq &+= 1
        pools[key]!.sentSeq[slot] = seq
        return ShareOrder(slot: slot, key: key, quota: pools[key]!.quota[slot], seq: seq)
    }

    /// Finishes a confirmed lowering, or starts one move: reserve no server stands on goes back; a
    /// worker whose clients wait at its quota gets size nobody holds, else quota another worker holds
    /// idle or unused (lowered first, raised here only once that worker confirmed); when nothing can
    /// move, a worker whose clients waited past reserve_pool_timeout gets reserve nobody holds.
    private mutating func rebalance(_ key: Key, now: Int64) -> [ShareOrder<Key>] {
        guard var e = pools[key] else { return [] }
        var orders: [ShareOrder<Key>] = []
        let capacity = e.size + e.reserve
        if let p = e.pending {
            let confirmed = !alive[p.donor]
                || (e.seenSeq[p.donor] == e.sentSeq[p.donor] && e.reported[p.donor].servers <= e.quota[p.donor])
            if !confirmed {
                // The donor applied the lowering but its servers are all in use (an idle one was taken
                // between its report and the lowering; session clients may hold theirs for hours).
                // After a while it keeps what it holds and only the rest moves: no deadlock, and the
                // sum is unchanged (what the donor keeps back, the receiver does not get).
                guard e.seenSeq[p.donor] == e.sentSeq[p.donor], e.reported[p.donor].idle == 0,
                      now - e.lastMove >= Self.stuckLoweringNanos else { return [] }
                let kept = min(p.amount, e.reported[p.donor].servers - e.quota[p.donor])
                pools[key]!.quota[p.donor] += kept
                pools[key]!.pending = nil
                pools[key]!.lastMove = now
                orders.append(send(key, slot: p.donor))
                let rest = min(p.amount - kept, capacity - pools[key]!.handedOut)
                if p.receiver >= 0 && alive[p.receiver] && rest > 0 {
                    pools[key]!.quota[p.receiver] += rest
                    orders.append(send(key, slot: p.receiver))
                }
                return orders
            }
            e.pending = nil
            e.lastMove = now
            // What the donor gave up, back to where it was: a move never adds reserve in use.
            let room = capacity - e.handedOut
            let amount = min(p.amount, room)
            pools[key] = e
            if p.receiver >= 0 && alive[p.receiver] && amount > 0 {
                pools[key]!.quota[p.receiver] += amount
                orders.append(send(key, slot: p.receiver))
            }
            return orders
        }
        guard e.lastMove == .min || now - e.lastMove >= Self.moveIntervalNanos else { return [] }
        if e.handedOut > e.size, let back = returnReserve(key, now: now) { return back }
        if let moved = moveQuota(key, now: now) { return moved }
        return grantReserve(key, now: now)
    }

    /// Quota above the pool size that no server stands on goes back to the reserve, from a worker with
    /// nobody waiting whose report reflects its latest quota (or a dead one), as a lowering: nothing
    /// else moves until the worker confirms, so the reserve is never handed out twice. A reserve server
    /// stays as long as it is open (server_idle_timeout, server_lifetime close it), as in PgBouncer,
    /// whose pool keeps its reserve connections until they close; its quota may move to another worker
    /// like any other (its clients then use that connection instead of waiting for the reserve).
    private mutating func returnReserve(_ key: Key, now: Int64) -> [ShareOrder<Key>]? {
        let e = pools[key]!
        for s in 0..<workers {
            let settled = !alive[s] || (e.heard[s] && e.seenSeq[s] == e.sentSeq[s] && e.reported[s].waiting == 0)
            let unused = e.quota[s] - (alive[s] ? e.reported[s].servers : 0)
            guard settled && unused > 0 else { continue }
            let amount = min(unused, e.handedOut - e.size)
            pools[key]!.quota[s] -= amount
            pools[key]!.pending = (s, -1, amount)
            pools[key]!.lastMove = now
            // A dead worker has nothing to close: confirmed at once.
            return alive[s] ? [send(key, slot: s)] : rebalance(key, now: now)
        }
        return nil
    }

    /// reserve_pool_size: when no size is free and no quota can move, the worker with the most clients
    /// waiting past reserve_pool_timeout at its quota gets reserve for them, once it has acknowledged
    /// its last quota (a report older than that could count clients it launched for). Its part is the
    /// reserve left in proportion (rounded up) to its share of all the clients waiting at a worker's
    /// quota, overdue or not yet: a burst reaches every worker at once, but their reports cross the
    /// timeout up to a tick apart, and the first to report must not take the reserve from clients
    /// that waited as long on another (PgBouncer serves its one queue in order). The rest goes at the
    /// next moves.
    private mutating func grantReserve(_ key: Key, now: Int64) -> [ShareOrder<Key>] {
        let e = pools[key]!
        guard e.reserve > 0, e.handedOut >= e.size else { return [] }
        let room = e.size + e.reserve - e.handedOut
        guard room > 0 else { return [] }
        var receiver = -1, waiting = 0
        for s in 0..<workers where alive[s] && e.reported[s].servers >= e.quota[s] {
            waiting += max(e.reported[s].waiting, e.reported[s].overdue)
            guard e.reported[s].overdue > 0 && e.seenSeq[s] == e.sentSeq[s] else { continue }
            if receiver < 0 || e.reported[s].overdue > e.reported[receiver].overdue { receiver = s }
        }
        guard receiver >= 0 else { return [] }
        let part = (room * e.reported[receiver].overdue + waiting - 1) / waiting
        let amount = min(room, e.reported[receiver].overdue, part)
        pools[key]!.quota[receiver] += amount
        pools[key]!.lastMove = now
        var order = send(key, slot: receiver)
        order.fromReserve = amount
        return [order]
    }

    /// The move of size: to the worker whose clients wait at its quota, from size nobody holds or from
    /// the worker that left the most unused. nil: nothing to move.
    private mutating func moveQuota(_ key: Key, now: Int64) -> [ShareOrder<Key>]? {
        let e = pools[key]!
        var orders: [ShareOrder<Key>] = []
        // The receiver: among workers at (or above) their quota with clients waiting, one below its even
        // share first, then the most clients waiting.
        var receiver = -1, receiverBelow = false
        for s in 0..<workers where alive[s] && e.reported[s].waiting > 0 && e.reported[s].servers >= e.quota[s] {
            let below = e.quota[s] < Self.evenShare(size: e.size, slot: s, workers: workers)
            if receiver < 0 || (below && !receiverBelow)
                || (below == receiverBelow && e.reported[s].waiting > e.reported[receiver].waiting) {
                receiver = s
                receiverBelow = below
            }
        }
        guard receiver >= 0 else { return nil }
        let need = e.reported[receiver].waiting
        let free = e.size - e.handedOut
        if free > 0 {
            let amount = min(free, need)
            pools[key]!.quota[receiver] += amount
            pools[key]!.lastMove = now
            return [send(key, slot: receiver)]
        }
        // The donor: the most quota not in use over the last `calmNanos`, among workers with nobody waiting.
        var donor = -1, spare = 0
        for s in 0..<workers where s != receiver && e.reported[s].waiting == 0 && (e.heard[s] || !alive[s]) {
            let busy = alive[s] ? windowPeak(key, slot: s, now: now) : 0
            let unused = e.quota[s] - max(0, busy)
            if unused > spare {
                donor = s
                spare = unused
            }
        }
        if donor < 0 {
            // Every worker that holds quota uses it: move toward the even split only, so that a worker
            // left below its share (0 after an idle spell) is not starved by one whose clients also wait.
            // Clients already past reserve_pool_timeout take the reserve instead: lowering a worker whose
            // servers are all busy would wait (and be cut back every stuckLoweringNanos) until one of
            // its queries ends, and block the grant all that time.
            let fair = Self.evenShare(size: e.size, slot: receiver, workers: workers)
            guard e.quota[receiver] < fair, e.reported[receiver].overdue == 0 || e.size + e.reserve <= e.handedOut else { return nil }
            for s in 0..<workers where s != receiver && alive[s] {
                let over = e.quota[s] - Self.evenShare(size: e.size, slot: s, workers: workers)
                if over > spare {
                    donor = s
                    spare = over
                }
            }
            guard donor >= 0 else { return nil }
            spare = min(spare, fair - e.quota[receiver])
        }
        let amount = min(spare, need)
        pools[key]!.quota[donor] -= amount
        pools[key]!.pending = (donor, receiver, amount)
        pools[key]!.lastMove = now
        if alive[donor] {
            var lowering = send(key, slot: donor)
            lowering.receiver = receiver
            orders.append(lowering)
        }
        // A dead donor has nothing to close: the raise follows at once.
        return orders + (alive[donor] ? [] : rebalance(key, now: now))
    }
}
