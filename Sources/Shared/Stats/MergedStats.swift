// The supervisor's view: worker snapshots merged, per-database totals, and PgBouncer-style averages.

/// A worker as SHOW WORKERS and the metrics see it.
public struct WorkerSummary: Equatable, Sendable {
    public var slot: Int32
    public var pid: Int32
    public var startedAt: Int64
    public var clients: Int32
    public var servers: Int32
    public var process: ProcessStats
    public var takenAt: Int64
}

/// All workers' snapshots folded together.
public struct MergedStats: Equatable, Sendable {
    /// One entry per (database, user), sorted by database then user.
    public var pools: [PoolStats] = []
    public var lists = ListCounts()
    public var workers: [WorkerSummary] = []
    public var clients: [ConnectionRow] = []
    public var servers: [ConnectionRow] = []
    /// One row per object kind, summed over the workers (SHOW MEM).
    public var memory: [MemoryRow] = []

    public init() {}

    /// Sums gauges and counters, takes the max of maxwait, merges histograms, concatenates rows, sums
    /// the memory rows of each kind.
    /// A pool's mode comes from the first snapshot that has the pool (all workers share one config).
    public static func merge(_ snapshots: [WorkerStatsSnapshot]) -> MergedStats {
        var m = MergedStats()
        var index: [String: Int] = [:]
        for s in snapshots.sorted(by: { $0.slot < $1.slot }) {
            for p in s.pools {
                let key = p.database + "\u{0}" + p.user
                if let i = index[key] {
                    m.pools[i].merge(p)
                } else {
                    index[key] = m.pools.count
                    m.pools.append(p)
                }
            }
            m.lists.add(s.lists)
            var clients: Int32 = 0, servers: Int32 = 0
            for p in s.pools {
                clients &+= p.clActive &+ p.clWaiting &+ p.clActiveCancelReq &+ p.clWaitingCancelReq
                servers &+= p.svActive &+ p.svActiveCancel &+ p.svBeingCanceled &+ p.svIdle &+ p.svUsed &+ p.svTested &+ p.svLogin
            }
            m.workers.append(WorkerSummary(slot: s.slot, pid: s.pid, startedAt: s.startedAt, clients: clients,
                                           servers: servers, process: s.process, takenAt: s.takenAt))
            m.clients.append(contentsOf: s.clients)
            m.servers.append(contentsOf: s.servers)
            for r in s.memory {
                m.memory.fold(r, by: \.name) { row, r in
                    row.size = max(row.size, r.size)
                    row.used &+= r.used
                    row.free &+= r.free
                }
            }
        }
        m.pools.sort { ($0.database, $0.user) < ($1.database, $1.user) }
        return m
    }

    /// Counters summed per database, sorted by name (SHOW STATS has one row per database).
    public func databaseTotals() -> [(database: String, totals: PoolCounters)] {
        var result: [(database: String, totals: PoolCounters)] = []
        for p in pools {
            if let last = result.last, last.database == p.database {
                result[result.count - 1].totals.add(p.totals)
            } else {
                result.append((p.database, p.totals))
            }
        }
        return result
    }

    /// Every pool's counters summed (SHOW TOTALS).
    public func grandTotals() -> PoolCounters {
        var t = PoolCounters()
        for p in pools { t.add(p.totals) }
        return t
    }
}

/// PgBouncer's averaging window (stats.c `refresh_stats`): every `stats_period` the supervisor calls
/// `refresh`, which remembers the totals of the previous refresh; averages are then taken between
/// those remembered totals and the live totals, over the time since that previous refresh.
public struct StatsAverager: Sendable {
    var newer: [String: PoolCounters] = [:]
    var older: [String: PoolCounters] = [:]
    /// Monotonic microseconds of the last and the previous refresh.
    var newStamp: Int64
    var oldStamp: Int64

    /// `now`: monotonic microseconds at start-up. Like PgBouncer, the first window pretends the
    /// previous refresh was a second ago.
    public init(now: Int64) {
        newStamp = now
        oldStamp = now - 1_000_000
    }

    /// Call every `stats_period` with the live per-database totals.
    public mutating func refresh(_ totals: [(database: String, totals: PoolCounters)], now: Int64) {
        oldStamp = newStamp
        newStamp = now
        older = newer
        var n: [String: PoolCounters] = [:]
        for t in totals { n[t.database] = t.totals }
        newer = n
    }

    /// Averages for one database's live totals.
    public func averages(database: String, current: PoolCounters, now: Int64) -> PoolAverages {
        current.averages(since: older[database] ?? PoolCounters(), elapsedMicros: now - oldStamp)
    }

    /// Averages over all databases (SHOW TOTALS).
    public func averages(total current: PoolCounters, now: Int64) -> PoolAverages {
        var old = PoolCounters()
        for (_, c) in older { old.add(c) }
        return current.averages(since: old, elapsedMicros: now - oldStamp)
    }
}

extension Array {
    /// Folds `row` into the element with the same `key` (`combine(&element, row)`), or appends it when
    /// there is none: the supervisor's merge of per-worker rows named by a host, a table, an object kind.
    mutating func fold<K: Equatable>(_ row: Element, by key: KeyPath<Element, K>, _ combine: (inout Element, Element) -> Void) {
        if let i = firstIndex(where: { $0[keyPath: key] == row[keyPath: key] }) {
            combine(&self[i], row)
        } else {
            append(row)
        }
    }
}
