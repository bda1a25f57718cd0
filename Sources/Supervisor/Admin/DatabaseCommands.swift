// Per-database admin commands (PAUSE db, RESUME db, DISABLE, ENABLE, RECONNECT, KILL, KILL_CLIENT,
// SUSPEND, WAIT_CLOSE), applied on every worker; commands that wait probe the workers until all answer 0.
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
    /// KILL_CLIENT: every worker asked once; a sum of 0 means "client not found".
    var once = false
}

extension Supervisor {
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
            // SHOW CLIENTS' id is one sequence for the whole service (ClientCounter.nextConnectionID):
            // every worker is asked, the one holding the client closes it.
            var w = DatabaseWait(slot: slot, requestID: id, tag: "KILL_CLIENT", probe: .countActive, database: "")
            w.once = true
            w.probeID = limits.newRequestID()
            w.nextProbe = .max
            for target in slots where target.pid != 0 && target.channel != nil {
                if target.send(.limitsToWorker(.killClient(clientID: clientID, requestID: w.probeID))) {
                    w.waiting.insert(target.index)
                }
            }
            guard !w.waiting.isEmpty else {
                replyError(slot: slot, requestID: id, .clientNotFound)
                return true
            }
            limits.waits.append(w)
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
