// Per-pool statistics with PgBouncer's meanings: SHOW POOLS gauges and SHOW STATS counters.

/// Cumulative counters of one pool since the worker started (PgBouncer's `PgStats`, 1.24 set).
/// Times are microseconds. Names follow SHOW STATS_TOTALS.
public struct PoolCounters: Equatable, Sendable {
    /// Times a server was linked to a client (`total_server_assignment_count`).
    public var serverAssignmentCount: UInt64 = 0
    /// Transactions pooled (`total_xact_count`): a ReadyForQuery 'I' after a statement or transaction.
    public var xactCount: UInt64 = 0
    /// Queries pooled (`total_query_count`): one per ReadyForQuery answering a query / Sync.
    public var queryCount: UInt64 = 0
    /// Bytes read from clients (`total_received`).
    public var bytesReceived: UInt64 = 0
    /// Bytes written to clients (`total_sent`).
    public var bytesSent: UInt64 = 0
    /// Time linked to a server inside a transaction (`total_xact_time`).
    public var xactTimeMicros: UInt64 = 0
    /// Time a server spent executing queries (`total_query_time`).
    public var queryTimeMicros: UInt64 = 0
    /// Time clients waited for a server, added when one is assigned (`total_wait_time`).
    public var waitTimeMicros: UInt64 = 0
    /// Prepared statements created by clients (`total_client_parse_count`).
    public var clientParseCount: UInt64 = 0
    /// Prepared statements pgswift created on servers (`total_server_parse_count`).
    public var serverParseCount: UInt64 = 0
    /// Binds of prepared statements forwarded (`total_bind_count`).
    public var bindCount: UInt64 = 0

    public init() {}

    /// Every counter, in the wire codec's order (WorkerStatsSnapshot) and the one `add` walks.
    static let fieldPaths: [WritableKeyPath<PoolCounters, UInt64> & Sendable] = [
        \.serverAssignmentCount, \.xactCount, \.queryCount, \.bytesReceived, \.bytesSent, \.xactTimeMicros,
        \.queryTimeMicros, \.waitTimeMicros, \.clientParseCount, \.serverParseCount, \.bindCount,
    ]
    static var fieldCount: Int { fieldPaths.count }

    /// Adds another worker's counters (merging happens in the supervisor, once per stats request).
    public mutating func add(_ o: PoolCounters) {
        for k in Self.fieldPaths { self[keyPath: k] &+= o[keyPath: k] }
    }

    /// PgBouncer's averages (stats.c `calc_average`): rates per second over `elapsedMicros`, and
    /// mean durations per query / transaction / assignment over the same window. A counter that went
    /// backwards (a worker restarted and its totals vanished) counts as zero, never as a huge number.
    public func averages(since old: PoolCounters, elapsedMicros: Int64) -> PoolAverages {
        var a = PoolAverages()
        guard elapsedMicros > 0 else { return a }
        let dur = UInt64(elapsedMicros)
        func delta(_ new: UInt64, _ old: UInt64) -> UInt64 { new >= old ? new - old : 0 }
        func rate(_ d: UInt64) -> UInt64 {
            // 128-bit product, so a huge delta saturates instead of trapping.
            let p = d.multipliedFullWidth(by: 1_000_000)
            if p.high >= dur { return .max }
            return dur.dividingFullWidth(p).quotient
        }
        let queries = delta(queryCount, old.queryCount)
        let xacts = delta(xactCount, old.xactCount)
        let assignments = delta(serverAssignmentCount, old.serverAssignmentCount)
        a.serverAssignmentCount = rate(assignments)
        a.xactCount = rate(xacts)
        a.queryCount = rate(queries)
        a.bytesReceived = rate(delta(bytesReceived, old.bytesReceived))
        a.bytesSent = rate(delta(bytesSent, old.bytesSent))
        if xacts > 0 { a.xactTimeMicros = delta(xactTimeMicros, old.xactTimeMicros) / xacts }
        if queries > 0 { a.queryTimeMicros = delta(queryTimeMicros, old.queryTimeMicros) / queries }
        if assignments > 0 { a.waitTimeMicros = delta(waitTimeMicros, old.waitTimeMicros) / assignments }
        a.clientParseCount = rate(delta(clientParseCount, old.clientParseCount))
        a.serverParseCount = rate(delta(serverParseCount, old.serverParseCount))
        a.bindCount = rate(delta(bindCount, old.bindCount))
        return a
    }
}

/// SHOW STATS_AVERAGES values: the same fields as the totals, holding counts and bytes per second and
/// times in microseconds per event (`PoolCounters.averages`).
public typealias PoolAverages = PoolCounters

extension PoolCounters {
    /// The line `log_stats` writes every `stats_period`, word for word PgBouncer's (stats.c
    /// `refresh_stats`), so that log parsers (pgbadger, grep scripts) read it: rates per second and
    /// mean durations over the last period, of these averages over all pools.
    public var statsLogLine: String {
        "stats: \(xactCount) xacts/s, \(queryCount) queries/s, \(clientParseCount) client parses/s, "
            + "\(serverParseCount) server parses/s, \(bindCount) binds/s, in \(bytesReceived) B/s, "
            + "out \(bytesSent) B/s, xact \(xactTimeMicros) us, query \(queryTimeMicros) us, wait \(waitTimeMicros) us"
    }
}

/// One (database, user) pool as a worker sees it, or as the supervisor merged it.
///
/// Gauges count connections by PgBouncer's lists; pgswift's own client/server states map onto them
/// (the mapping is the worker's business: e.g. a logged-in client without a server is `cl_active`).
public struct PoolStats: Equatable, Sendable {
    public var database: String
    public var user: String
    public var poolMode: PoolMode

    public var clActive: Int32 = 0
    public var clWaiting: Int32 = 0
    public var clActiveCancelReq: Int32 = 0
    public var clWaitingCancelReq: Int32 = 0
    public var svActive: Int32 = 0
    public var svActiveCancel: Int32 = 0
    public var svBeingCanceled: Int32 = 0
    public var svIdle: Int32 = 0
    public var svUsed: Int32 = 0
    public var svTested: Int32 = 0
    public var svLogin: Int32 = 0
    /// Clients kept on their server by session state (pin_session_state; SHOW POOLS `cl_pinned`).
    public var clPinned: Int32 = 0
    /// Listening connections of the pool (listen_mode = relay; SHOW POOLS `sv_listen`): outside pool_size.
    public var svListen: Int32 = 0
    /// How long the oldest waiting client has waited (SHOW POOLS splits it into maxwait + maxwait_us).
    public var maxWaitMicros: Int64 = 0

    /// Cumulative counters (SHOW STATS).
    public var totals = PoolCounters()
    /// pgswift's own distributions: query duration, transaction duration, client wait for a server.
    public var queryDuration = LatencyHistogram()
    public var xactDuration = LatencyHistogram()
    public var waitDuration = LatencyHistogram()
    /// Read/write routing's counters per backend host of a routed pool (RouteStats.swift); empty otherwise.
    public var routes: [RouteStat] = []

    public init(database: String, user: String, poolMode: PoolMode) {
        self.database = database
        self.user = user
        self.poolMode = poolMode
    }

    /// `maxwait` column: whole seconds.
    public var maxWaitSeconds: Int64 { max(maxWaitMicros, 0) / 1_000_000 }
    /// `maxwait_us` column: the microsecond part.
    public var maxWaitMicrosPart: Int64 { max(maxWaitMicros, 0) % 1_000_000 }

    /// Folds another worker's view of the same pool into this one: sums, except maxwait (the max).
    public mutating func merge(_ o: PoolStats) {
        for k in Self.gaugePaths { self[keyPath: k] &+= o[keyPath: k] }
        maxWaitMicros = max(maxWaitMicros, o.maxWaitMicros)
        totals.add(o.totals)
        queryDuration.merge(o.queryDuration)
        xactDuration.merge(o.xactDuration)
        waitDuration.merge(o.waitDuration)
        RouteStat.merge(&routes, o.routes)
    }

    /// Every gauge, in the wire codec's order (WorkerStatsSnapshot) and the one `merge` walks.
    static let gaugePaths: [WritableKeyPath<PoolStats, Int32> & Sendable] = [
        \.clActive, \.clWaiting, \.clActiveCancelReq, \.clWaitingCancelReq, \.svActive, \.svActiveCancel,
        \.svBeingCanceled, \.svIdle, \.svUsed, \.svTested, \.svLogin, \.clPinned, \.svListen,
    ]
    static var gaugeCount: Int { gaugePaths.count }
}
