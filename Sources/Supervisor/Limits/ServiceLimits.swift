// Supervisor side of the service-wide limits: pool quotas sent to the workers, max_db_connections /
// max_user_connections shares, the shared max_client_conn counter, min_pool_size shares. The per-database
// admin commands whose state lives in `SupervisorLimits` are in Admin/DatabaseCommands.swift.
import Shared

struct SupervisorLimits {
    var groups: GroupQuotas
    /// The service-wide client count shared with the workers (nil: max_client_conn per worker).
    var counter: ClientCounter?
    var pausedDBs: Set<String> = []
    var disabledDBs: Set<String> = []
    var waits: [DatabaseWait] = []
    var nextRequestID: UInt32 = 0
    /// min_pool_size shares sent per pool key and slot, to send only changes.
    var warmSent: [PoolQuotaKey: [Int]] = [:]

    init(workers: Int) {
        groups = GroupQuotas(workers: workers)
    }

    mutating func newRequestID() -> UInt32 {
        nextRequestID &+= 1
        if nextRequestID == 0 { nextRequestID = 1 }
        return nextRequestID
    }
}

extension Supervisor {
    // MARK: Workers coming and going

    /// Before the first spawn: the shared client count every worker admits clients against.
    func setUpClientCounter() {
        guard limits.counter == nil else { return }  // inherited from the previous image (Reexec.swift)
        guard slots.count * 2 <= ClientCounter.maxSlots else {
            log.warning("\(slots.count) workers: more than the shared client count holds; max_client_conn applies per worker")
            return
        }
        do throws(SyscallError) {
            limits.counter = try ClientCounter.create()
        } catch {
            log.warning("no shared client count (\(error)): max_client_conn applies per worker")
        }
    }

    /// A new process in `slot`: its group shares and the per-database state it must honour.
    func limitsWorkerStarted(_ slot: WorkerSlot) {
        sendGroupQuotas(limits.groups.workerStarted(slot: slot.index))
        sendDatabaseStates(to: slot)
        for (key, shares) in limits.warmSent where shares[slot.index] > 0 {
            slot.send(.limitsToWorker(.warm(database: key.database, user: key.user, count: Int32(shares[slot.index]))))
        }
    }

    /// Paused and disabled databases, for a process that starts (also a roll's new process before it
    /// becomes its slot's worker, so it never serves a database that should be paused).
    func sendDatabaseStates(to slot: WorkerSlot) {
        for db in limits.pausedDBs.sorted() { slot.send(.limitsToWorker(.database(.pause, database: db, requestID: 0))) }
        for db in limits.disabledDBs.sorted() { slot.send(.limitsToWorker(.database(.disable, database: db, requestID: 0))) }
    }

    /// A process exited: its clients' places in the shared count, its group shares, its probes.
    func limitsWorkerGone(_ slot: Int, counterWord: Int) {
        reclaimClientPlaces(slot: slot, counterWord: counterWord)
        sendGroupQuotas(limits.groups.workerGone(slot: slot, now: Clock.monotonicNanos()))
        for i in limits.waits.indices where limits.waits[i].waiting.contains(slot) {
            limits.waits[i].waiting.remove(slot)
        }
        finishProbes()
    }

    /// A worker process ended (a slot's worker, a roll's new process, a drained one): its clients' places.
    func reclaimClientPlaces(slot: Int, counterWord: Int) {
        guard let c = limits.counter else { return }
        let n = c.reclaim(slot: counterWord)
        if n > 0 { log.info("worker \(slot) exited holding \(n) client places; released") }
    }

    func limitsReloaded() {
        sendGroupQuotas(limits.groups.resizeAll(size: groupSize))
        warmForcedUserPools()
    }

    // MARK: Groups

    /// The configured limit of a group (0: none).
    func groupSize(_ key: LimitGroupKey) -> Int {
        switch key.kind {
        case .database: return config.effectiveMaxDBConnections(database: config.database(named: key.name))
        case .user: return config.effectiveMaxUserConnections(user: key.name)
        }
    }

    func sendGroupQuotas(_ orders: [ShareOrder<LimitGroupKey>]) {
        for o in orders {
            let slot = slots[o.slot]
            guard slot.pid != 0 else { continue }
            log.debug("\(o.key): worker \(o.slot) share \(o.quota)")
            if !slot.send(.limitsToWorker(.groupQuota(o.key, quota: Int32(clamping: o.quota), seq: o.seq))) {
                log.warning("worker \(o.slot) (pid \(slot.pid)) did not take its \(o.key) share")
            }
        }
    }

    func handleLimitsReport(_ m: LimitsMessage, from slot: WorkerSlot) {
        switch m {
        case .groupReport(let key, let servers, let idle, let waiting, let seq):
            sendGroupQuotas(limits.groups.report(slot: slot.index, key: key, size: groupSize(key), servers: Int(servers),
                                                 idle: Int(idle), waiting: Int(waiting), seq: seq,
                                                 now: Clock.monotonicNanos()))
        case .reply(let requestID, let count):
            for i in limits.waits.indices where limits.waits[i].probeID == requestID {
                limits.waits[i].waiting.remove(slot.index)
                limits.waits[i].sum += Int(count)
            }
            finishProbes()
        default:
            log.warning("worker \(slot.index) sent a supervisor-only limits message")
        }
    }

    // MARK: min_pool_size

    /// A database with a forced `user=` has one pool, known before any client comes: its min_pool_size
    /// is kept warm from the start (and from the reload that adds it), as PgBouncer's janitor makes that
    /// pool for the purpose. Other pools are warmed once a client has used them.
    func warmForcedUserPools() {
        for entry in config.databases {
            guard let user = entry.user, config.effectiveMinPoolSize(database: entry) > 0 else { continue }
            updateWarmShares(PoolQuotaKey(database: entry.name, user: user))
        }
    }

    /// A pool reported by a worker: its min_pool_size goes to the workers by the same split as the
    /// pool size (each worker's part capped by its pool quota), so the service keeps min_pool_size warm.
    func updateWarmShares(_ key: PoolQuotaKey) {
        let entry = config.database(named: key.database)
        let minSize = min(config.effectiveMinPoolSize(database: entry), poolSize(key))
        let old = limits.warmSent[key]
        if minSize <= 0 && old == nil { return }
        var shares = (0..<slots.count).map { PoolShare.even(size: max(0, minSize), slot: $0, workers: slots.count) }
        // Where a worker's pool quota moved below its even part, the rest goes to those with room.
        var missing = 0
        for s in shares.indices {
            let q = quotas.quota(key, slot: s) ?? shares[s]
            if shares[s] > q {
                missing += shares[s] - q
                shares[s] = q
            }
        }
        for s in shares.indices where missing > 0 {
            let room = (quotas.quota(key, slot: s) ?? shares[s]) - shares[s]
            let add = min(max(0, room), missing)
            shares[s] += add
            missing -= add
        }
        if shares == old { return }
        limits.warmSent[key] = shares
        for s in shares.indices where slots[s].pid != 0 && shares[s] != (old?[s] ?? 0) {
            slots[s].send(.limitsToWorker(.warm(database: key.database, user: key.user, count: Int32(shares[s]))))
        }
    }
}

extension Supervisor {
    /// The configured size of a pool (per-user, else per-database, else default_pool_size).
    func poolSize(_ key: PoolQuotaKey) -> Int {
        config.effectivePoolSize(database: config.database(named: key.database), user: key.user)
    }

    /// The reserve_pool_size of a pool (0: none, or reserve_pool_timeout is 0).
    func reservePoolSize(_ key: PoolQuotaKey) -> Int {
        config.effectiveReservePoolSize(database: config.database(named: key.database), user: key.user)
    }

    func sendQuotas(_ orders: [QuotaOrder]) {
        for o in orders {
            let slot = slots[o.slot]
            guard slot.pid != 0 else { continue }
            if o.fromReserve > 0 {
                // One line per connection, in PgBouncer's words (its log is read by tools and tests).
                let first = max(1, (quotas.pools[o.key]?.reserveInUse ?? o.fromReserve) - o.fromReserve + 1)
                let reserve = quotas.pools[o.key]?.reserve ?? 0
                for n in first..<(first + o.fromReserve) {
                    log.warning("pool \(o.key.database)/\(o.key.user): taking connection from reserve_pool "
                                + "for worker \(o.slot) (clients waited over reserve_pool_timeout; \(n) of \(reserve) in use)")
                }
            }
            // A lowering for another worker's clients: the donor's idle servers move there instead of
            // closing, when both processes can move servers (ServerMove.swift in the worker).
            var moveTo: Int32 = -1
            if o.receiver >= 0 && o.receiver < slots.count && slot.features & WorkerFeatures.serverMoves != 0
                && slots[o.receiver].features & WorkerFeatures.serverMoves != 0 && slots[o.receiver].pid != 0 {
                moveTo = Int32(o.receiver)
            }
            log.debug("pool \(o.key.database)/\(o.key.user): worker \(o.slot) quota \(o.quota)\(moveTo >= 0 ? " (idle servers above it move to worker \(moveTo))" : "")")
            if !slot.send(.quota(database: o.key.database, user: o.key.user, quota: Int32(clamping: o.quota), seq: o.seq,
                                 moveTo: moveTo)) {
                log.warning("worker \(o.slot) (pid \(slot.pid)) did not take its pool quota")
            }
        }
    }

    /// A worker gave up an idle server connection for the worker in slot `target` (a quota move):
    /// its socket goes on to that worker with the state, untouched (`adoptServer`). Where it cannot
    /// go (no such worker, a full channel), it is closed: PostgreSQL ends that session, nothing else
    /// is lost (nobody was using it), and the worker that lacks it opens a new one.
    func relayServer(from slot: WorkerSlot, to target: Int, state: [UInt8]) {
        let fd = slot.channel?.takePassedFD() ?? -1
        guard fd >= 0 else {
            log.warning("worker \(slot.index) (pid \(slot.pid)) moved a server connection without its socket")
            return
        }
        serverMoves.relayed += 1
        guard target >= 0 && target < slots.count, slots[target].pid != 0,
              slots[target].send(.adoptServer(state), passing: fd) else {
            serverMoves.lost += 1
            log.warning("a server connection from worker \(slot.index) could not reach worker \(target): closed")
            return
        }
    }
}
