// Supervisor side of the service-wide limits (max_db_connections / max_user_connections shares,
// the shared max_client_conn counter, min_pool_size shares) and of the per-database admin commands
// (PAUSE db, RESUME db, DISABLE, ENABLE, RECONNECT, KILL, KILL_CLIENT, WAIT_CLOSE), applied on every worker.
import Shared

/// An admin command waiting for the workers: a probe is broadcast (again every 50 ms while the
/// answer is not yet 0) and the command completes once every live worker answered 0.
struct DatabaseWait {
    var slot: Int
    var requestID: UInt32
    var tag: String
    var probe: DatabaseOp
    var database: String
    /// The probe in flight: its id, the workers that have not answered, the sum so far.
    var probeID: UInt32 = 0
    var waiting: Set<Int> = []
    var sum = 0
    var nextProbe: Int64 = 0
    /// KILL_CLIENT: one worker asked once; a 0 answer means "client not found".
    var once = false
}

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
        for db in limits.pausedDBs.sorted() { slot.send(.limitsToWorker(.database(.pause, database: db, requestID: 0))) }
        for db in limits.disabledDBs.sorted() { slot.send(.limitsToWorker(.database(.disable, database: db, requestID: 0))) }
        for (key, shares) in limits.warmSent where shares[slot.index] > 0 {
            slot.send(.limitsToWorker(.warm(database: key.database, user: key.user, count: Int32(shares[slot.index]))))
        }
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

    // MARK: Admin commands

    /// PAUSE db, RESUME [db], DISABLE, ENABLE, RECONNECT, KILL, KILL_CLIENT, SUSPEND, WAIT_CLOSE.
    /// True when the command was handled here (answered now or once the workers have answered).
    func executeDatabaseAdmin(_ command: AdminCommand, slot: Int, requestID id: UInt32) -> Bool {
        func check(_ db: String, _ verb: String) -> AdminError? {
            if db == "pgbouncer" || db == "pgswift" { return .adminDatabase(verb, db) }
            if config.database(named: db) == nil { return .noSuchDatabase(db) }
            return nil
        }
        func done(_ tag: String) { replyDone(slot: slot, requestID: id, tag) }
        switch command {
        case .pause(let db?):
            if let e = check(db, "pause") { replyError(slot: slot, requestID: id, e); return true }
            if paused { replyError(slot: slot, requestID: id, .alreadyPaused); return true }
            limits.pausedDBs.insert(db)
            log.info("PAUSE \(db): waiting for its servers to be released")
            broadcastDatabase(.pause, db)
            startWait(DatabaseWait(slot: slot, requestID: id, tag: "PAUSE", probe: .countActive, database: db))
        case .resume(let db?):
            if config.database(named: db) == nil { replyError(slot: slot, requestID: id, .noSuchDatabase(db)); return true }
            guard limits.pausedDBs.contains(db) else { replyError(slot: slot, requestID: id, .databaseNotPaused(db)); return true }
            limits.pausedDBs.remove(db)
            log.info("RESUME \(db)")
            broadcastDatabase(.resume, db)
            cancelWaits(tag: "PAUSE", database: db)
            done("RESUME")
        case .resume(nil) where !paused && !limits.pausedDBs.isEmpty:
            // Databases paused one by one (or by KILL): RESUME without a name resumes them all.
            log.info("RESUME: resuming \(limits.pausedDBs.sorted().joined(separator: ", "))")
            limits.pausedDBs.removeAll()
            broadcastDatabase(.resume, "")
            cancelWaits(tag: "PAUSE", database: nil)
            done("RESUME")
        case .disable(let db), .enable(let db):
            let disable: Bool
            if case .disable = command { disable = true } else { disable = false }
            guard let db else { replyError(slot: slot, requestID: id, .databaseRequired); return true }
            if let e = check(db, disable ? "disable" : "enable") { replyError(slot: slot, requestID: id, e); return true }
            if disable { limits.disabledDBs.insert(db) } else { limits.disabledDBs.remove(db) }
            log.info("\(disable ? "DISABLE" : "ENABLE") \(db)")
            broadcastDatabase(disable ? .disable : .enable, db)
            done(disable ? "DISABLE" : "ENABLE")
        case .reconnect(let db):
            if let db, let e = check(db, "reconnect") { replyError(slot: slot, requestID: id, e); return true }
            log.info("RECONNECT \(db ?? "(all databases)")")
            broadcastDatabase(.reconnect, db ?? "")
            done("RECONNECT")
        case .kill(let db):
            if let db, let e = check(db, "kill") { replyError(slot: slot, requestID: id, e); return true }
            if paused { replyError(slot: slot, requestID: id, .alreadyPaused); return true }
            log.info("KILL \(db ?? "(all databases)"): closing its clients and servers; paused until RESUME")
            if let db { limits.pausedDBs.insert(db) } else { for d in config.databases { limits.pausedDBs.insert(d.name) } }
            if db == nil {
                for d in limits.pausedDBs.sorted() { broadcastDatabase(.pause, d) }
            }
            broadcastDatabase(.kill, db ?? "")
            done("KILL")
        case .killClient(let clientID):
            guard let clientID else { replyError(slot: slot, requestID: id, .invalidClientID); return true }
            // SHOW CLIENTS ids are (worker slot << 32) | the worker's own client id.
            let target = Int(clientID >> 32)
            guard target < slots.count, slots[target].pid != 0 else {
                replyError(slot: slot, requestID: id, .clientNotFound)
                return true
            }
            var w = DatabaseWait(slot: slot, requestID: id, tag: "KILL_CLIENT", probe: .countActive, database: "")
            w.once = true
            w.probeID = limits.newRequestID()
            w.waiting = [target]
            w.nextProbe = .max
            limits.waits.append(w)
            if !slots[target].send(.limitsToWorker(.killClient(clientID: UInt32(truncatingIfNeeded: clientID),
                                                                requestID: w.probeID))) {
                limits.waits.removeLast()
                replyError(slot: slot, requestID: id, .clientNotFound)
            }
        case .waitClose(let db):
            if let db {
                if db == "pgbouncer" || db == "pgswift" {
                    replyError(slot: slot, requestID: id, .cannotWaitInAdminDatabase(db))
                    return true
                }
                if config.database(named: db) == nil { replyError(slot: slot, requestID: id, .noSuchDatabase(db)); return true }
            }
            startWait(DatabaseWait(slot: slot, requestID: id, tag: "WAIT_CLOSE", probe: .countCloseNeeded, database: db ?? ""))
        case .suspend:
            // SUSPEND exists for PgBouncer's online restart (-R), which hands sockets to a new process.
            // pgswift restarts workers behind listening sockets the supervisor keeps open, so there is
            // nothing to suspend for; an explicit error is better than a pooler that silently stops.
            replyError(slot: slot, requestID: id, AdminError(
                "SUSPEND is not supported by pgswift: workers restart behind the supervisor's listening sockets, " +
                "so no socket hand-over needs a suspended pooler (use PAUSE, or SHUTDOWN WAIT_FOR_CLIENTS)", code: "0A000"))
        default:
            return false
        }
        return true
    }

    private func broadcastDatabase(_ op: DatabaseOp, _ database: String) {
        broadcast(.limitsToWorker(.database(op, database: database, requestID: 0)))
    }

    private func startWait(_ w: DatabaseWait) {
        var w = w
        w.nextProbe = Clock.monotonicNanos()
        limits.waits.append(w)
        runLimitsTimers(now: w.nextProbe)
    }

    /// A RESUME ends the PAUSE commands still waiting for that database (or all of them).
    private func cancelWaits(tag: String, database: String?) {
        limits.waits.removeAll { w in
            guard w.tag == tag, database == nil || w.database == database else { return false }
            replyError(slot: w.slot, requestID: w.requestID, AdminError("PAUSE interrupted by RESUME"))
            return true
        }
    }

    // MARK: Probes

    func limitsTimeout(now: Int64) -> Int64 {
        var next: Int64 = .max
        for w in limits.waits where w.waiting.isEmpty { next = min(next, w.nextProbe) }
        return next
    }

    /// Sends the probes that are due.
    func runLimitsTimers(now: Int64) {
        for i in limits.waits.indices where limits.waits[i].waiting.isEmpty && limits.waits[i].nextProbe <= now {
            let id = limits.newRequestID()
            limits.waits[i].probeID = id
            limits.waits[i].sum = 0
            limits.waits[i].nextProbe = .max
            var asked = Set<Int>()
            for slot in slots where slot.pid != 0 && slot.channel != nil {
                if slot.send(.limitsToWorker(.database(limits.waits[i].probe, database: limits.waits[i].database,
                                                       requestID: id))) {
                    asked.insert(slot.index)
                }
            }
            limits.waits[i].waiting = asked
        }
        finishProbes()
    }

    /// Probes every worker answered: done when the sum is 0, else probe again in 50 ms.
    func finishProbes() {
        let now = Clock.monotonicNanos()
        limits.waits.removeAll { w in
            guard w.waiting.isEmpty, w.nextProbe == .max else { return false }
            if w.once {
                if w.sum > 0 {
                    replyDone(slot: w.slot, requestID: w.requestID, w.tag)
                } else {
                    replyError(slot: w.slot, requestID: w.requestID, .clientNotFound)
                }
                return true
            }
            if w.sum == 0 {
                log.info("\(w.tag)\(w.database.isEmpty ? "" : " " + w.database): done")
                replyDone(slot: w.slot, requestID: w.requestID, w.tag)
                return true
            }
            return false
        }
        for i in limits.waits.indices where limits.waits[i].waiting.isEmpty && limits.waits[i].nextProbe == .max {
            limits.waits[i].nextProbe = now + 50_000_000
        }
    }
}
