// Worker side of the service-wide limits: max_client_conn, max_db_connections and max_user_connections
// (groups of pools sharing a cap, servers retired to make room) and min_pool_size warm-up.
import Shared

/// Per-pool state of this file, kept in `Pool.limits`.
struct PoolLimitState {
    /// Index in `WorkerLimits.groups` of the pool's max_db_connections / max_user_connections group, or -1.
    var dbGroup: Int32 = -1 { didSet { update() } }
    var userGroup: Int32 = -1 { didSet { update() } }
    /// PAUSE db or KILL db: no server is handed out until RESUME.
    var dbPaused = false { didSet { update() } }
    /// RECONNECT: servers opened at or before this time close when released (0: none).
    var closeBefore: Int64 = 0 { didSet { update() } }
    /// This worker's part of min_pool_size (set by the supervisor).
    var warm = 0
    /// Servers of this pool closing for a limit, still counted until PostgreSQL let them go.
    var retiring = 0 { didSet { update() } }
    /// Something to check when a server comes back: one flag test on the release path otherwise.
    private(set) var onRelease = false

    var grouped: Bool { dbGroup >= 0 || userGroup >= 0 }

    private mutating func update() {
        onRelease = dbGroup >= 0 || userGroup >= 0 || closeBefore > 0 || retiring > 0 || dbPaused
    }
}

/// One max_db_connections / max_user_connections limit in this worker: the pools it covers and this
/// worker's share of it (set by the supervisor, see docs/ARCHITECTURE.md).
struct LimitGroup {
    var key: LimitGroupKey
    /// The configured limit for the whole service (0: none).
    var size: Int
    /// The supervisor's last share for this worker (-1: none yet) and its seq.
    var quota = -1
    var seq: UInt32 = 0
    var members: [Int32] = []
    var reported: (Int, Int, Int, UInt32) = (-1, -1, -1, 0)
}

struct WorkerLimits {
    var groups: [LimitGroup] = []
    var groupIndex: [LimitGroupKey: Int32] = [:]
    /// Shares told before this worker opened a pool of the group.
    var told: [LimitGroupKey: (quota: Int, seq: UInt32)] = [:]
    /// Databases paused (PAUSE db / KILL db) or disabled (DISABLE db) here, also for pools opened later.
    var pausedDBs: Set<String> = []
    var allPaused = false
    var disabledDBs: Set<String> = []
    /// min_pool_size shares by pool key (database NUL user), also for pools opened later.
    var warm: [String: Int] = [:]
    /// The service-wide client count, when the supervisor handed one over (else max_client_conn is per worker).
    var counter: ClientCounter? = nil
    /// This process's word in `counter` (ClientCounter).
    var counterWord = 0
    /// Clients per database / user name key when there is no shared counter (ClientLimits.swift).
    var localClientCounts: [Int64: Int] = [:]
    var nameTableFullLogged = false
    /// Servers retiring in all pools (a janitor scan bounds their wait only while there are some).
    var retiring = 0
}

extension Worker {
    // MARK: max_client_conn

    /// Admits one more client, or refuses it: service-wide through the shared counter when there is one.
    /// Without one, the client table is the count, less `uncounted` records that hold no place.
    func admitClient(uncounted: Int = 0) -> Bool {
        if let c = limits.counter { return c.tryAcquire(slot: limits.counterWord, limit: config.maxClientConn) }
        return clients.used - uncounted < config.maxClientConn
    }

    /// A client handed over by the predecessor of a rolling restart (which gave its place back).
    func clientAdopted() {
        limits.counter?.acquireUnchecked(slot: limits.counterWord)
    }

    /// A client's table slot is freed: its place in the service-wide count too (none for a client
    /// accepted over max_client_conn and freed before its login ended: it never had one).
    func clientLeft(_ ci: Int32) {
        if clients[ci].info?.login?.overLimit == true {
            overLimitLogin(ci, counted: false)
            return
        }
        limits.counter?.release(slot: limits.counterWord)
    }

    /// A login accepted over max_client_conn, at its startup packet: a place freed since the accept is
    /// taken now (a client that left on another worker a moment before: its release and this accept
    /// race, where one PgBouncer process sees them in order). True when it was.
    func admitLate(_ ci: Int32) -> Bool {
        // The table holds this client and the other over-limit logins, which hold no place.
        guard admitClient(uncounted: overLimitClients) else { return false }
        clients[ci].info?.login?.overLimit = false
        overLimitClients -= 1
        return true
    }

    /// A login accepted over max_client_conn ends its wait: it leaves uncounted (freed while logging
    /// in), or takes a place in the count (`counted`: the admin console, let in beyond the limit as
    /// PgBouncer does, or a refused client on its way out, whose free gives the place back).
    func overLimitLogin(_ ci: Int32, counted: Bool) {
        clients[ci].info?.login?.overLimit = false
        overLimitClients -= 1
        if counted { limits.counter?.acquireUnchecked(slot: limits.counterWord) }
    }

    // MARK: Pools and groups

    /// A new pool: join its limit groups, take the database's pause state and the warm-up share.
    /// `fresh`: the pool was just created, so it is in no group's members yet (no linear search).
    func attachLimits(_ pi: Int, fresh: Bool = false) {
        let db = pools[pi].database, user = pools[pi].user
        pools[pi].limits.dbPaused = limits.allPaused || limits.pausedDBs.contains(db)
        pools[pi].limits.warm = limits.warm[db + "\u{0}" + user] ?? 0
        let dbLimit = config.effectiveMaxDBConnections(database: config.database(named: db))
        let userLimit = config.effectiveMaxUserConnections(user: user)
        pools[pi].limits.dbGroup = join(LimitGroupKey(kind: .database, name: db), size: dbLimit, pool: pi, fresh: fresh)
        pools[pi].limits.userGroup = join(LimitGroupKey(kind: .user, name: user), size: userLimit, pool: pi, fresh: fresh)
    }

    private func join(_ key: LimitGroupKey, size: Int, pool pi: Int, fresh: Bool) -> Int32 {
        let g: Int32
        if let existing = limits.groupIndex[key] {
            g = existing
        } else {
            var group = LimitGroup(key: key, size: size)
            if let t = limits.told[key] {
                group.quota = t.quota
                group.seq = t.seq
            }
            g = Int32(limits.groups.count)
            limits.groups.append(group)
            limits.groupIndex[key] = g
        }
        limits.groups[Int(g)].size = size
        if fresh || !limits.groups[Int(g)].members.contains(Int32(pi)) { limits.groups[Int(g)].members.append(Int32(pi)) }
        return size > 0 ? g : -1
    }

    /// A pool is freed (Pool.swift `freePool`): it leaves its groups, so its index can be reused.
    func detachLimits(_ pi: Int) {
        let db = pools[pi].database, user = pools[pi].user
        for key in [LimitGroupKey(kind: .database, name: db), LimitGroupKey(kind: .user, name: user)] {
            guard let g = limits.groupIndex[key] else { continue }
            limits.groups[Int(g)].members.removeAll { $0 == Int32(pi) }
        }
    }

    /// After a reload: limits may have appeared, changed or gone.
    func refreshLimits() {
        for pi in pools.indices { attachLimits(pi) }
        for g in limits.groups.indices { trimGroup(g) }
    }

    /// Server connections this worker may hold in a group: min(limit, its share); before any
    /// message the even share (a replacement process: nothing until told).
    func groupLimit(_ g: Int) -> Int {
        let size = limits.groups[g].size
        let share: Int
        if limits.groups[g].quota >= 0 {
            share = limits.groups[g].quota
        } else if quotas.respawned {
            share = 0
        } else {
            share = PoolShare.even(size: size, slot: Int(slot), workers: quotas.workers)
        }
        // Without a supervisor nobody moves shares: at least the even split (Handoff.swift).
        let even = quotas.orphaned ? PoolShare.even(size: size, slot: Int(slot), workers: quotas.workers) : 0
        return max(0, min(size, max(share, even)))
    }

    func groupServers(_ g: Int) -> Int {
        var n = 0
        for p in limits.groups[g].members { n += pools[Int(p)].serverCount }
        return n
    }

    func groupRetiring(_ g: Int) -> Int {
        var n = 0
        for p in limits.groups[g].members { n += pools[Int(p)].limits.retiring }
        return n
    }

    /// Clients that want a server of this pool: queued ones, replication clients waiting for room for
    /// their own, plus those waiting for the pool's first login.
    func wanting(_ pi: Int) -> Int {
        var n = pools[pi].waiting.count + pools[pi].replicationWaitCount
        if pools[pi].welcome == nil && pools[pi].connectingCount == 0 { n += pools[pi].welcomeWaitCount }
        return n
    }

    /// Room for one more server of pool `pi` in its groups, evicting an idle server of another pool of
    /// the group (one with nobody waiting) when the group is full, as PgBouncer does.
    func groupRoom(_ pi: Int) -> Bool {
        for g in [pools[pi].limits.dbGroup, pools[pi].limits.userGroup] where g >= 0 {
            let gi = Int(g)
            if groupServers(gi) < groupLimit(gi) { continue }
            // One eviction at a time; the launch follows when PostgreSQL has let the old server go.
            if groupRetiring(gi) == 0 { _ = evictIdle(group: gi, except: pi) }
            return false
        }
        return true
    }

    private func evictIdle(group g: Int, except pi: Int) -> Bool {
        for p in limits.groups[g].members where Int(p) != pi {
            let si = pools[Int(p)].idle.head
            if si >= 0 && pools[Int(p)].waiting.count == 0 {
                retireServer(si, reason: "evicted for another pool of \(limits.groups[g].key) (connection limit)")
                return true
            }
        }
        return false
    }

    /// A server came back (`serverIdle`) in a pool with limits, a RECONNECT, retiring servers or a
    /// pause of its database: true when it was closed (or parked) instead of being handed on.
    func closeOnRelease(_ si: Int32, _ pi: Int) -> Bool {
        if pools[pi].limits.retiring > 0 && pools[pi].serverCount - pools[pi].limits.retiring > pools[pi].limit {
            retireServer(si, reason: "pool quota lowered")
            return true
        }
        if pools[pi].limits.closeBefore > 0 && servers[si].createdAt <= pools[pi].limits.closeBefore {
            closeServer(si, reason: "close_needed")
            launchIfNeeded(Int32(pi))
            return true
        }
        for g in [pools[pi].limits.dbGroup, pools[pi].limits.userGroup] where g >= 0 {
            let gi = Int(g)
            let count = groupServers(gi), limit = groupLimit(gi), retiring = groupRetiring(gi)
            if count - retiring > limit {
                retireServer(si, reason: "connection limit share lowered (\(limits.groups[gi].key))")
                return true
            }
            // Nobody here wants it but another pool of the group waits at the limit: it gets the room
            // (once PostgreSQL has let this one go, see retired()).
            if count >= limit && retiring == 0 && pools[pi].waiting.count == 0 {
                for p in limits.groups[gi].members where Int(p) != pi && wanting(Int(p)) > pools[Int(p)].connectingCount
                    && !pools[Int(p)].limits.dbPaused {
                    retireServer(si, reason: "released for another pool of \(limits.groups[gi].key) (connection limit)")
                    return true
                }
            }
        }
        if pools[pi].limits.dbPaused {
            // PAUSE db: back to the idle list, nobody waiting gets it until RESUME db.
            setServerState(si, .idle)
            return true
        }
        return false
    }

    /// Launches for waiting clients, or the first login a pool's clients wait for.
    func launchFor(_ pi: Int) {
        if pools[pi].welcome == nil && pools[pi].welcomeWaitCount > 0 {
            launchWelcome(pi)
        } else {
            launchIfNeeded(Int32(pi))
        }
    }

    /// The pool's first server (its welcome parameters), within the pool's and groups' limits. Only
    /// for clients waiting for it: a replication client needs none (its own server answers its login).
    func launchWelcome(_ pi: Int) {
        guard pools[pi].connectingCount == 0, pools[pi].welcomeWaitCount > 0, !loginRetryPending(pi) else { return }
        if pools[pi].limits.grouped && (pools[pi].serverCount >= pools[pi].limit || !groupRoom(pi)) { return }
        launchServer(Int32(pi))
    }

    /// Closes idle servers while the group is above this worker's share; busy ones close on release.
    func trimGroup(_ g: Int) {
        guard limits.groups[g].size > 0 else { return }
        var excess = groupServers(g) - groupRetiring(g) - groupLimit(g)
        for p in limits.groups[g].members {
            while excess > 0 && pools[Int(p)].idle.head >= 0 {
                retireServer(pools[Int(p)].idle.head, reason: "connection limit share lowered (\(limits.groups[g].key))")
                excess -= 1
            }
        }
    }

    // MARK: Retiring servers

    /// Closes a server for a connection limit but keeps counting it until PostgreSQL has let it go:
    /// Terminate, then wait for EOF (a backend leaves pg_stat_activity before its socket closes), so
    /// its replacement never overlaps it, not even in PostgreSQL's view. The server is idle (in the
    /// idle list) or was just released by its client (`serverIdle`: counts already settled).
    func retireServer(_ si: Int32, reason: String) {
        log.debug("S-\(servers[si].id): closing: \(reason)")
        let terminate: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0x58, 0, 0, 0, 4)
        withUnsafeBytes(of: terminate) { _ = try? Posix.send(servers[si].io.fd, $0.baseAddress!, 5) }
        setServerState(si, .closing)  // leaves the idle list; still counted until EOF
        pools[Int(servers[si].pool)].limits.retiring += 1
        limits.retiring += 1
        servers[si].io.readable = true
        retiringInput(si)
    }

    /// Events of a retiring server: whatever it says is dropped; EOF ends it.
    func retiringInput(_ si: Int32) {
        if discardServerInput(si) { retired(si) }
    }

    /// PostgreSQL let a retiring server go (or it took too long): free it and use the room.
    func retired(_ si: Int32) {
        let p = Int(servers[si].pool)
        pools[p].limits.retiring -= 1
        limits.retiring -= 1
        closeServer(si, reason: "retired")
        if hot.pointee.paused || pools[p].limits.dbPaused { return }
        launchIfNeeded(Int32(p))
        for g in [pools[p].limits.dbGroup, pools[p].limits.userGroup] where g >= 0 {
            for m in limits.groups[Int(g)].members where !pools[Int(m)].limits.dbPaused
                && wanting(Int(m)) > pools[Int(m)].connectingCount {
                launchFor(Int(m))
            }
        }
    }

    // MARK: Every 100 ms

    /// Reports groups, retries launches a full group or a missing welcome held back, sweeps servers a
    /// RECONNECT marked, and keeps min_pool_size servers warm.
    func limitsTick() {
        for gi in limits.groups.indices where limits.groups[gi].size > 0 { reportGroup(gi, force: false) }
        if limits.retiring > 0 {
            // A backend that does not close within a second after Terminate is not waited for longer.
            var si: Int32 = 0
            while si < Int32(servers.capacity) {
                if servers[si].state == .closing && servers[si].pool >= 0 && now - servers[si].stateSince > 1_000_000_000 {
                    retired(si)
                }
                si += 1
            }
        }
        for pi in pools.indices {
            if pools[pi].limits.closeBefore > 0 {
                closeIdleBefore(pi)
                if config.serverFastClose { fastCloseBefore(pi) }
                if !hasServer(before: pools[pi].limits.closeBefore, pool: pi) { pools[pi].limits.closeBefore = 0 }
            }
            if hot.pointee.paused || pools[pi].limits.dbPaused { continue }
            if pools[pi].limits.grouped && wanting(pi) > pools[pi].connectingCount { launchFor(pi) }
            if pools[pi].limits.warm > 0 { warmUp(pi) }
        }
    }

    private func hasServer(before t: Int64, pool pi: Int) -> Bool {
        var si: Int32 = 0
        while si < Int32(servers.capacity) {
            if servers[si].state != .free && servers[si].state != .cancelRequest && Int(servers[si].pool) == pi
                && servers[si].createdAt <= t { return true }
            si += 1
        }
        return false
    }

    /// min_pool_size: opens servers up to this worker's part of it, within every limit, one at a time.
    func warmUp(_ pi: Int) {
        guard !hot.pointee.paused, !pools[pi].limits.dbPaused, pools[pi].connectingCount == 0, hot.pointee.shutdownMode == nil,
              pools[pi].serverCount < min(pools[pi].limits.warm, pools[pi].limit),
              !loginRetryPending(pi) else { return }
        if pools[pi].limits.grouped {
            // Warm-up never evicts: only where the groups have room.
            for g in [pools[pi].limits.dbGroup, pools[pi].limits.userGroup] where g >= 0 {
                if groupServers(Int(g)) >= groupLimit(Int(g)) { return }
            }
        }
        launchServer(Int32(pi))
    }

    /// An idle server the pool's min_pool_size part still needs.
    func keepWarm(_ si: Int32) -> Bool {
        let p = servers[si].pool
        return p >= 0 && pools[Int(p)].limits.warm > 0 && pools[Int(p)].serverCount <= pools[Int(p)].limits.warm
    }

    func reportGroup(_ g: Int, force: Bool) {
        guard controlFD >= 0 else { return }
        var servers = 0, idle = 0, waiting = 0
        for p in limits.groups[g].members {
            servers += pools[Int(p)].serverCount
            idle += pools[Int(p)].idle.count
            waiting += wanting(Int(p))
        }
        let now = (servers, idle, waiting, limits.groups[g].seq)
        if !force && now == limits.groups[g].reported && waiting == 0 { return }
        limits.groups[g].reported = now
        sendControl(.limitsFromWorker(.groupReport(limits.groups[g].key, servers: Int32(clamping: servers),
                                                   idle: Int32(clamping: idle), waiting: Int32(clamping: waiting),
                                                   seq: limits.groups[g].seq)))
    }
}
