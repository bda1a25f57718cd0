// Worker side of the per-database admin commands and the supervisor's limits messages: PAUSE db,
// RESUME db, DISABLE/ENABLE, RECONNECT, KILL and connection-limit shares (LimitsMessage). The limits
// themselves (groups, retiring servers, min_pool_size) are Pool/ServiceLimits.swift.
import Shared

extension Worker {
    // MARK: Control messages

    func handleLimits(_ m: LimitsMessage) {
        switch m {
        case .groupQuota(let key, let quota, let seq):
            limits.told[key] = (Int(quota), seq)
            guard let g = limits.groupIndex[key] else {
                // No pool of this group here yet: an empty report confirms a lowering.
                sendControl(.limitsFromWorker(.groupReport(key, servers: 0, idle: 0, waiting: 0, seq: seq)))
                return
            }
            let gi = Int(g)
            limits.groups[gi].quota = Int(quota)
            limits.groups[gi].seq = seq
            trimGroup(gi)
            if !hot.pointee.paused {
                for p in limits.groups[gi].members where !pools[Int(p)].limits.dbPaused { launchFor(Int(p)) }
            }
            reportGroup(gi, force: true)
        case .database(let op, let database, let requestID):
            let count = applyDatabaseOp(op, database)
            if requestID != 0 { sendControl(.limitsFromWorker(.reply(requestID: requestID, count: Int32(clamping: count)))) }
        case .killClient(let clientID, let requestID):
            var found = 0
            var ci: Int32 = 0
            while ci < Int32(clients.capacity) {
                if clients[ci].state != .free && clients[ci].id == clientID && clients[ci].admin == .none {
                    closeClient(ci, reason: "admin forced disconnect", notify: true)
                    found = 1
                    break
                }
                ci += 1
            }
            sendControl(.limitsFromWorker(.reply(requestID: requestID, count: Int32(found))))
        case .warm(let database, let user, let count):
            let key = database + "\u{0}" + user
            limits.warm[key] = Int(count)
            // A worker no client has reached yet opens the pool, so the service as a whole is warm.
            if let p = count > 0 ? pool(database: database, user: user) : poolIndex[key] {
                pools[Int(p)].limits.warm = Int(count)
                warmUp(Int(p))
            }
        case .groupReport, .reply:
            break
        }
    }

    /// Pools the operation covers: those of `database`, or every pool when it is empty.
    private func covered(_ pi: Int, _ database: String) -> Bool {
        database.isEmpty || pools[pi].database == database
    }

    /// Applies a per-database admin operation; returns the count the probes ask for (0 otherwise).
    func applyDatabaseOp(_ op: DatabaseOp, _ database: String) -> Int {
        switch op {
        case .pause, .kill:
            // KILL of every database comes after a PAUSE per configured database (RESUME db must undo it).
            if !database.isEmpty { limits.pausedDBs.insert(database) } else if op == .pause { limits.allPaused = true }
            for pi in pools.indices where covered(pi, database) { pools[pi].limits.dbPaused = true }
            if op == .kill { killDatabase(database) }
            log.info("\(op == .kill ? "KILL" : "PAUSE") \(database.isEmpty ? "(all databases)" : database)")
        case .resume:
            if database.isEmpty {
                limits.allPaused = false
                limits.pausedDBs.removeAll()
            } else {
                limits.pausedDBs.remove(database)
            }
            for pi in pools.indices where covered(pi, database) && pools[pi].limits.dbPaused {
                pools[pi].limits.dbPaused = limits.allPaused || limits.pausedDBs.contains(pools[pi].database)
                if !pools[pi].limits.dbPaused && !hot.pointee.paused { serveWaiting(Int32(pi)) }
            }
        case .disable:
            limits.disabledDBs.insert(database)
        case .enable:
            limits.disabledDBs.remove(database)
        case .reconnect:
            for pi in pools.indices where covered(pi, database) {
                pools[pi].limits.closeBefore = now
                closeIdleBefore(pi)
            }
        case .countActive:
            var n = 0
            var si: Int32 = 0
            while si < Int32(servers.capacity) {
                let st = servers[si].state
                if (st == .active || st == .resetting || st == .beingCanceled) && servers[si].pool >= 0
                    && covered(Int(servers[si].pool), database) { n += 1 }
                si += 1
            }
            return n
        case .countCloseNeeded:
            var n = 0
            var si: Int32 = 0
            while si < Int32(servers.capacity) {
                let st = servers[si].state
                if st != .free && st != .cancelRequest && servers[si].pool >= 0 {
                    let pi = Int(servers[si].pool)
                    if covered(pi, database) && pools[pi].limits.closeBefore > 0
                        && servers[si].createdAt <= pools[pi].limits.closeBefore { n += 1 }
                }
                si += 1
            }
            return n
        }
        return 0
    }

    /// RECONNECT: idle servers opened before it close now (the others when released). A replication
    /// client's own server is never released: it closes now too, with its client, as PgBouncer's
    /// janitor closes close_needed replication servers at once.
    func closeIdleBefore(_ pi: Int) {
        var si = pools[pi].idle.head
        while si >= 0 {
            let next = servers[si].links.next
            if servers[si].createdAt <= pools[pi].limits.closeBefore {
                closeServer(si, reason: "database configuration changed")
            }
            si = next
        }
        var ri: Int32 = 0
        while ri < Int32(servers.capacity) {
            if servers[ri].replication != .none && servers[ri].state != .closing && Int(servers[ri].pool) == pi
                && servers[ri].createdAt <= pools[pi].limits.closeBefore {
                closeServer(ri, reason: "database configuration changed")
            }
            ri += 1
        }
    }

    /// server_fast_close, session mode: a server opened before a RECONNECT (or a RELOAD that changed
    /// its database) that is linked to a client but between transactions (idle, nothing in flight) is
    /// closed now, and its client with it, rather than when the client leaves (PgBouncer's janitor
    /// does the same, in the same words). One inside a transaction goes at the transaction's end.
    func fastCloseBefore(_ pi: Int) {
        guard pools[pi].mode == .session else { return }
        var si: Int32 = 0
        while si < Int32(servers.capacity) {
            if servers[si].state == .active && Int(servers[si].pool) == pi
                && servers[si].createdAt <= pools[pi].limits.closeBefore && serverBetweenTransactions(si) {
                closeWithClient(si, reason: "database configuration changed")
            }
            si += 1
        }
    }

    /// Linked, idle outside a transaction, nothing forwarded awaits an answer (PgBouncer's `ready`).
    private func serverBetweenTransactions(_ si: Int32) -> Bool {
        servers[si].txStatus == UInt8(ascii: "I") && servers[si].pendingSyncs == 0 && !servers[si].unsynced
            && servers[si].internalQueries == 0 && servers[si].answerCount == 0 && servers[si].io.input.partial == 0
            && !servers[si].io.input.hasUnsent
    }

    /// KILL: every client and server of the database (all of them for ""), like PgBouncer's kill_pool.
    private func killDatabase(_ database: String) {
        var ci: Int32 = 0
        while ci < Int32(clients.capacity) {
            if clients[ci].state != .free && clients[ci].pool >= 0 && covered(Int(clients[ci].pool), database) {
                closeClient(ci, reason: "database removed", notify: true)
            }
            ci += 1
        }
        var si: Int32 = 0
        while si < Int32(servers.capacity) {
            let st = servers[si].state
            if st != .free && st != .cancelRequest && st != .closing && servers[si].pool >= 0
                && covered(Int(servers[si].pool), database) {
                closeServer(si, reason: "database removed")
            }
            si += 1
        }
    }

    func isDisabled(_ database: String) -> Bool {
        !limits.disabledDBs.isEmpty && limits.disabledDBs.contains(database)
    }
}
