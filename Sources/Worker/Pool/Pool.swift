// Pools: one per (database, user). Idle servers (a LIFO list) and waiting clients (a FIFO queue).
import Shared

struct Pool {
    /// False in a freed record of the pools table (pool_idle_timeout): `pools.indices` skips it.
    var inUse = false
    /// Monotonic ns since which the pool has held nothing (no client, server, lookup, warm-up); 0: in use.
    var emptySince: Int64 = 0
    var database: String
    var user: String
    var entry: DatabaseEntry
    var mode: PoolMode
    var size: Int
    /// reserve_pool_size for the pool (0: none, or reserve_pool_timeout is 0): servers above `size` the
    /// supervisor may grant this worker when its clients waited past reserve_pool_timeout (Quotas.swift).
    var reserve = 0
    /// This pool's timeouts with its user's and database's overrides applied (`Config.effectiveTimeouts`),
    /// set when the pool is made and at reload: the janitor reads them, the release path reads
    /// `serverLifetime`, so a per-user or per-database value costs no lookup per connection.
    var timeouts = PoolTimeouts()
    /// What the server connections log in as.
    var serverUser: String
    var serverDatabase: String
    /// Round-robin cursor over the database's healthy hosts (BackendHealth.swift).
    var nextAddress = 0
    /// Every host of the database is down (health checks): with `fail_fast` on, clients fail at once
    /// instead of waiting.
    var allDown = false
    /// When this pool's last server connection was launched (PgBouncer's last_connect_time): while a
    /// login is failing, the next one starts server_login_retry after it (ServerLogin.swift).
    var lastConnectAt: Int64 = 0
    /// Clients in `.waitWelcome` (logged in to pgswift, waiting for the pool's first server login):
    /// the janitor retries a failed login for them as it does for queued clients.
    var welcomeWaitCount = 0
    /// Its (database, user) in the query stats table (QueryStats.swift); -1 until its first statement.
    var queryOwner: Int32 = -1
    /// Replication clients waiting for room to open their own server (`.replicationWait`, Replication.swift).
    var replicationWaitCount = 0

    /// Idle servers, taken at the head; server_round_robin adds them at the tail (`pushIdle`).
    var idle = RowList()
    /// Most servers out of the idle list at once since the last janitor tick: the pool report's idle
    /// figure is the fewest idle over that interval, not a snapshot (Quotas.swift).
    var busyPeak = 0
    /// Clients waiting for a server, first come first served.
    var waiting = RowList()
    /// Server connections of this pool in any state (connecting, login, idle, active, resetting).
    var serverCount = 0
    var connectingCount = 0
    /// Servers running server_check_query for a waiting client (States.swift keeps it).
    var checkingCount = 0
    var activeCount = 0
    var clientCount = 0
    /// min(size + reserve, this worker's quota): server connections this worker may hold (Quotas.swift).
    var limit = 0
    /// The last quota the supervisor sent (-1: none yet) and its seq.
    var quota = -1
    var quotaSeq: UInt32 = 0
    /// The worker slot the last lowering gave this pool's quota to (-1: the last quota moved nothing):
    /// a server released above the limit moves there rather than closing (ServerMove.swift).
    var moveTo = -1
    /// What the last pool report said (servers, idle, waiting, seq), to send only changes.
    var reported: (Int, Int, Int, UInt32) = (-1, -1, -1, 0)
    /// Connection-limit groups, per-database pause, RECONNECT, warm-up (ServiceLimits.swift).
    var limits = PoolLimitState()

    /// The first server's ParameterStatus values, sent to every client at login.
    var welcome: [(String, String)]? = nil
    /// Set with `welcome` (WelcomeIndex.swift): each welcome entry's tracked-parameter index (-1: not
    /// tracked), and each tracked parameter's welcome value (nil: not reported). Logins and links read
    /// these instead of matching parameter names as strings.
    var welcomeTrackedIndex: [Int] = []
    var welcomeTrackedValues: [String?] = []
    /// ClientKey recovered from a client's SCRAM proof: lets pgswift log in to PostgreSQL with a
    /// userlist SCRAM secret (no plain password), as PgBouncer does.
    var scramClientKey: [UInt8]? = nil
    /// The last server login's failure (PgBouncer's last_login_failed and its cached message), kept
    /// until a login succeeds: it throttles connects and fails new clients fast (ServerLogin.swift).
    var loginError: ErrorFields? = nil
    /// That failure was PostgreSQL refusing the login (an ErrorResponse other than 57P03), or pgswift
    /// having no answer to its authentication request: a retry would fail the same way, so waiting
    /// clients are failed with it. A connect, TLS or timeout failure leaves them waiting.
    var loginRefused = false

    /// Cumulative counters and latency distributions for SHOW STATS and /metrics (WorkerStats.swift).
    var totals = PoolCounters()
    var queryDuration = LatencyHistogram()
    var xactDuration = LatencyHistogram()
    var waitDuration = LatencyHistogram()

    /// A server left the idle list: keeps the peak in use for the pool report. One `inout` access to
    /// the pool rather than one per field (`make microbench` showed no measurable difference either way).
    @inline(__always)
    static func tookIdle(_ pool: inout Pool) {
        let busy = pool.serverCount - pool.idle.count
        if busy > pool.busyPeak { pool.busyPeak = busy }
    }

    init(database: String, user: String, entry: DatabaseEntry, mode: PoolMode, size: Int) {
        self.database = database
        self.user = user
        self.entry = entry
        self.mode = mode
        self.size = size
        self.serverUser = entry.user ?? user
        self.serverDatabase = entry.dbname ?? database
    }
}

extension Worker {
    // MARK: Idle list (LIFO: the most recently used server is the warmest; FIFO with server_round_robin)

    /// Adds a server that became idle: at the head (LIFO, taken next), or with server_round_robin at
    /// the tail, as PgBouncer does, so the pool's connections take turns (uniform load behind a
    /// round-robin address or host list). One predictable branch per release.
    func pushIdle(_ si: Int32) {
        let p = Int(servers[si].pool)
        if hot.pointee.serverRoundRobin {
            servers.pushTail(si, &pools[p].idle)
        } else {
            servers.pushHead(si, &pools[p].idle)
        }
    }

    func removeIdle(_ si: Int32) {
        let p = Int(servers[si].pool)
        servers.unlink(si, &pools[p].idle)
        Pool.tookIdle(&pools[p])
    }

    // MARK: Wait queue (FIFO)

    func enqueueWaiting(_ ci: Int32) {
        clients.pushTail(ci, &pools[Int(clients[ci].pool)].waiting)
    }

    func removeWaiting(_ ci: Int32) {
        clients.unlink(ci, &pools[Int(clients[ci].pool)].waiting)
    }

    // MARK: Finding pools

    /// Who a client of `database` shares a pool as: the database's forced `user=` when it has one (all
    /// its clients share that one pool, as in PgBouncer), else the client's own user.
    func poolUser(database: String, clientUser: String) -> String {
        config.database(named: database)?.user ?? clientUser
    }

    /// The pool for (database, pool user), created on first use. nil when the database is unknown.
    /// `user` is the pool's user (`poolUser(database:clientUser:)` for a client).
    func pool(database: String, user: String) -> Int32? {
        let key = database + "\u{0}" + user
        if let p = poolIndex[key] {
            pools[Int(p)].emptySince = 0  // a login: the idle time starts again when it leaves
            return p
        }
        guard let entry = config.database(named: database) else { return nil }
        if config.fallbackDatabase != nil && !pools.indices.contains(where: { pools[$0].database == database })
            && !config.databases.contains(where: { $0.name == database }) {
            // PgBouncer's line when `*` first serves a name (again after autodb_idle_timeout freed it).
            log.info("registered new auto-database: \(database)")
        }
        var pool = Pool(database: database, user: user, entry: entry,
                        mode: config.effectivePoolMode(database: entry, user: user),
                        size: config.effectivePoolSize(database: entry, user: user))
        pool.inUse = true
        pool.reserve = config.effectiveReservePoolSize(database: entry, user: user)
        pool.timeouts = config.effectiveTimeouts(database: entry, user: user)
        pool.allDown = computeAllDown(entry)
        if let told = quotas.told[key] {
            pool.quota = told.quota
            pool.quotaSeq = told.seq
        }
        let idx = pools.append(pool)
        poolIndex[key] = idx
        updateLimit(Int(idx))
        attachLimits(Int(idx), fresh: true)
        setUpRouting(Int(idx), fresh: true)
        return idx
    }

    /// Re-applies pool settings after a reload (sizes, modes, addresses); existing links are kept.
    func refreshPools() {
        for i in pools.indices {
            guard let entry = config.database(named: pools[i].database) else { continue }
            if entry != pools[i].entry {
                // A changed entry (password, host...) is worth a login at once, server_login_retry or not
                // (PgBouncer keeps waiting it out; its docs wish a reload reset it).
                pools[i].loginError = nil
                pools[i].loginRefused = false
            }
            if entry.needsReconnect(from: pools[i].entry) {
                // As PgBouncer's RELOAD: servers made for the old entry (another database, host, user,
                // connect_query...) close, idle ones now and the others when released, as after
                // RECONNECT ("database configuration changed").
                pools[i].limits.closeBefore = now
                closeIdleBefore(i)
            }
            pools[i].entry = entry
            pools[i].mode = config.effectivePoolMode(database: entry, user: pools[i].user)
            pools[i].size = config.effectivePoolSize(database: entry, user: pools[i].user)
            pools[i].reserve = config.effectiveReservePoolSize(database: entry, user: pools[i].user)
            pools[i].timeouts = config.effectiveTimeouts(database: entry, user: pools[i].user)
            pools[i].serverUser = entry.user ?? pools[i].user
            pools[i].serverDatabase = entry.dbname ?? pools[i].database
            pools[i].allDown = computeAllDown(entry)
            updateLimit(i)
            trimToLimit(i)
            setUpRouting(i)
        }
        refreshLimits()
    }
}

extension Worker {
    // MARK: Freeing idle pools (pool_idle_timeout, autodb_idle_timeout)

    /// The idle timeout of a pool in ns (0: never freed): `pool_idle_timeout`, or for a pool of an
    /// automatic database (`*`) `autodb_idle_timeout` when that is shorter.
    func poolIdleTimeout(_ pi: Int) -> Int64 {
        var t = Clock.nanos(seconds: config.poolIdleTimeout)
        if config.databases.first(where: { $0.name == pools[pi].database }) == nil {
            let auto = Clock.nanos(seconds: config.autodbIdleTimeout)
            if auto > 0 && (t <= 0 || auto < t) { t = auto }
        }
        return t
    }

    /// Whether the pool holds nothing: no client (in any state), no server (connecting, logging in,
    /// idle, active, retiring), no waiter, no warm-up share (min_pool_size), no auth_query lookup.
    func poolIsEmpty(_ pi: Int) -> Bool {
        // Field by field: a copy of the record would retain its strings and arrays.
        pools[pi].clientCount == 0 && pools[pi].serverCount == 0 && pools[pi].waiting.count == 0
            && pools[pi].connectingCount == 0 && pools[pi].activeCount == 0 && pools[pi].idle.count == 0
            && pools[pi].limits.retiring == 0 && pools[pi].limits.warm == 0
    }

    /// At most this many pools are freed a second: each is a message to the supervisor, and each
    /// pool it forgets a message to every worker; 20,000 at once overflowed the control channels.
    static let poolsFreedPerSweep = 500

    /// Once a second from the janitor: frees the pools empty for longer than their idle timeout.
    /// Before freeing, the client and server tables and the auth_query lookups are checked for any
    /// reference to the pool (a count gone wrong must not leave a dangling index behind).
    func freeIdlePools() {
        guard now >= quotas.nextPoolSweep else { return }
        quotas.nextPoolSweep = now + 1_000_000_000
        var candidates: [Int] = []
        for pi in pools.indices {
            guard poolIsEmpty(pi) else {
                pools[pi].emptySince = 0
                continue
            }
            if pools[pi].emptySince == 0 { pools[pi].emptySince = now; continue }
            let timeout = poolIdleTimeout(pi)
            if timeout > 0 && now - pools[pi].emptySince > timeout && candidates.count < Self.poolsFreedPerSweep {
                candidates.append(pi)
            }
        }
        guard !candidates.isEmpty else { return }
        var referenced = Set<Int32>()
        var ci: Int32 = 0
        let ccap = Int32(clients.capacity)
        while ci < ccap {
            if clients[ci].state != .free && clients[ci].pool >= 0 { referenced.insert(clients[ci].pool) }
            ci += 1
        }
        var si: Int32 = 0
        let scap = Int32(servers.capacity)
        while si < scap {
            if servers[si].state != .free && servers[si].pool >= 0 { referenced.insert(servers[si].pool) }
            si += 1
        }
        // Clients waiting for a lookup have no pool yet (one is made at authentication).
        for l in authQuery.lookups { referenced.insert(l.pool) }
        for pi in candidates where !referenced.contains(Int32(pi)) { freePool(pi) }
    }

    /// Forgets a pool: its index, limit-group memberships, auth_query secret and record go, and the
    /// supervisor is told (a report with `servers` -1), so it can forget the pool's quota. Its
    /// cumulative stats go with it (SHOW STATS and /metrics totals drop by its share, as PgBouncer's
    /// pool_idle_timeout does). The quota the supervisor told is kept until the supervisor forgets it
    /// too (`applyQuota` with a negative quota), so a pool opened again meanwhile keeps within it.
    func freePool(_ pi: Int) {
        let db = pools[pi].database, user = pools[pi].user, seq = pools[pi].quotaSeq
        log.info("cleaning up idle pool for user \(user) on db \(db) because: pool idle timeout "
                 + "(age=\((now - pools[pi].emptySince) / 1_000_000_000)s)")
        poolIndex[db + "\u{0}" + user] = nil
        detachLimits(pi)
        authQuery.poolSecrets[Int32(pi)] = nil
        pools[pi] = Pool()
        pools.release(Int32(pi))
        sendControl(.poolReport(database: db, user: user, servers: -1, idle: 0, waiting: 0, seq: seq))
    }
}
