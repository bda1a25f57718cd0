// This worker's share of each pool: set by the supervisor, reported back, enforced at launch and release.
import Shared

/// What the supervisor told this worker about pool shares (PoolQuotas.swift in the supervisor).
struct WorkerQuotas {
    /// `config.workers` at start-up: the supervisor's slot count (a reload cannot change it).
    var workers = 1
    /// A replacement process holds nothing of a pool until told: its slot's share may be elsewhere now.
    var respawned = false
    /// Quotas by pool key (database NUL user), also for pools this worker has not opened yet.
    var told: [String: (quota: Int, seq: UInt32)] = [:]
    /// The supervisor is gone and nobody moves shares any more: a pool's share is at least the even
    /// split (Handoff.swift, `supervisorLost`).
    var orphaned = false
    /// Monotonic ns of the next idle-pool sweep (Pool.swift `freeIdlePools`).
    var nextPoolSweep: Int64 = 0
}

extension Worker {
    /// Recomputes `limit` = min(pool size + reserve, quota); before any quota message, the even share
    /// (of the size: reserve comes only from the supervisor).
    func updateLimit(_ pi: Int) {
        let share: Int
        if pools[pi].quota >= 0 {
            share = pools[pi].quota
        } else if quotas.respawned {
            share = 0
        } else {
            share = PoolShare.even(size: pools[pi].size, slot: Int(slot), workers: quotas.workers)
        }
        let even = quotas.orphaned ? PoolShare.even(size: pools[pi].size, slot: Int(slot), workers: quotas.workers) : 0
        pools[pi].limit = max(0, min(pools[pi].size + pools[pi].reserve, max(share, even)))
    }

    /// Sheds idle servers above the limit; busy ones close when they come back (`serverIdle`). With
    /// `moveTo` (the worker the quota goes to), each moves there when it can (ServerMove.swift); else
    /// it is retired, not closed: it counts until PostgreSQL let it go (ServiceLimits.swift).
    func trimToLimit(_ pi: Int, moveTo: Int = -1) {
        while pools[pi].serverCount - pools[pi].limits.retiring > pools[pi].limit && pools[pi].idle.head >= 0 {
            let si = pools[pi].idle.head
            if moveTo >= 0 && moveServer(si, toSlot: moveTo) { continue }
            retireServer(si, reason: "pool quota lowered")
        }
    }

    /// A quota message: apply it, shed what is above it or launch what it now allows, then acknowledge.
    /// A negative quota: the supervisor forgot the pool (every worker had freed it or never opened
    /// it); a pool opened here again meanwhile goes back to the even share, and reports.
    func applyQuota(database: String, user: String, quota: Int, seq: UInt32, moveTo: Int = -1) {
        let key = database + "\u{0}" + user
        if quota < 0 {
            quotas.told[key] = nil
        } else {
            quotas.told[key] = (quota, seq)
        }
        guard let p = poolIndex[key] else {
            // Not opened here: acknowledge with "no pool" (servers -1), so a lowering is confirmed and
            // the supervisor knows this worker holds nothing of it. A forget needs no answer.
            if quota >= 0 {
                sendControl(.poolReport(database: database, user: user, servers: -1, idle: 0, waiting: 0, seq: seq))
            }
            return
        }
        let pi = Int(p)
        pools[pi].quota = max(quota, -1)
        pools[pi].quotaSeq = quota < 0 ? 0 : seq
        pools[pi].moveTo = moveTo
        updateLimit(pi)
        trimToLimit(pi, moveTo: moveTo)
        if !hot.pointee.paused { launchIfNeeded(p) }
        reportPool(pi, force: true)
    }

    /// Every 100 ms: pools whose figures changed, or whose clients wait (the supervisor may move quota).
    /// The limits housekeeping runs without a supervisor too (retired servers that never close,
    /// warm-up, group launches): a worker whose supervisor died still serves its clients.
    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func reportPools() {
        if controlFD >= 0 { for pi in pools.indices { reportPool(pi, force: false) } }
        limitsTick()
    }

    /// `idle` is the fewest idle servers since the previous tick (servers minus the most in use at
    /// once), so a worker whose servers were all busy for an instant does not look like a donor.
    /// Clients that wait report every tick, so `overdue` (reserve_pool_timeout) is always current.
    func reportPool(_ pi: Int, force: Bool) {
        guard controlFD >= 0 else { return }
        let busyNow = pools[pi].serverCount - pools[pi].idle.count
        let idleLow = max(0, pools[pi].serverCount - max(busyNow, pools[pi].busyPeak))
        // A new interval starts at every tick, reported or not: a peak kept until the next report
        // would repeat the same figures, so an idle worker would never report, and never look idle.
        pools[pi].busyPeak = busyNow
        // Replication clients waiting for room want a server as queued clients do (Replication.swift).
        let waiting = pools[pi].waiting.count + pools[pi].replicationWaitCount
        let now = (pools[pi].serverCount, idleLow, waiting, pools[pi].quotaSeq)
        if !force && now == pools[pi].reported && waiting == 0 { return }
        pools[pi].reported = now
        sendControl(.poolReport(database: pools[pi].database, user: pools[pi].user,
                                servers: Int32(clamping: now.0), idle: Int32(clamping: now.1),
                                waiting: Int32(clamping: now.2), seq: now.3,
                                overdue: Int32(clamping: overdueClients(pi))))
    }

    /// reserve_pool_size: clients that have waited longer than reserve_pool_timeout while this worker
    /// holds all the servers its quota allows, less the servers already connecting for them (PgBouncer
    /// opens a reserve connection while the first waiting client has waited that long and the pool is
    /// full). The wait queue is FIFO, so the walk stops at the first client that has not; it counts at
    /// most the reserve. 0 while paused: nothing would be launched.
    func overdueClients(_ pi: Int) -> Int {
        let reserve = pools[pi].reserve
        guard reserve > 0, pools[pi].waiting.count > 0, pools[pi].serverCount >= pools[pi].limit,
              !hot.pointee.paused, !pools[pi].limits.dbPaused else { return 0 }
        let timeout = Clock.nanos(seconds: config.reservePoolTimeout)
        let wanted = reserve + pools[pi].connectingCount
        var n = 0
        var ci = pools[pi].waiting.head
        while ci >= 0 && n < wanted && now - clients[ci].stateSince >= timeout {
            n += 1
            ci = clients[ci].links.next
        }
        return max(0, n - pools[pi].connectingCount)
    }
}
