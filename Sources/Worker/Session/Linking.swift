// Linking clients to servers and back: acquire, parameter sync, release at ReadyForQuery, reset.
import Shared

extension Worker {
    /// Links an idle server to the client, or queues the client. Returns true when linked.
    func acquireServer(_ ci: Int32) -> Bool {
        let p = clients[ci].pool
        let pi = Int(p)
        if hot.pointee.safeShutdown {
            // SHUTDOWN WAIT_FOR_SERVERS / SIGINT: no server for a new transaction (ShutdownDrain.swift).
            sendClientError(ci, Worker.serverShuttingDown, close: true)
            return false
        }
        if !hot.pointee.paused && !pools[pi].limits.dbPaused {
            let si = hot.pointee.routing && poolRoutes(pi) ? routedIdle(ci) : pools[pi].idle.head
            if si >= 0 {
                // server_check_delay: one compare for a server used recently; one idle longer is
                // checked first, and the client waits for it (or for whatever serves it sooner).
                if now &- servers[si].stateSince >= hot.pointee.serverCheckDelay {
                    setClientState(ci, .waitServer)
                    checkServer(si)
                    return false
                }
                link(ci, si)
                return clients[ci].state == .active
            }
        }
        if pools[pi].allDown && config.failFast {
            sendClientError(ci, downError(pi), close: true)
            return false
        }
        // PgBouncer's check_fast_fail: logins are failing, no server is left, and no retry is due yet.
        if let err = cachedLoginFailure(pi) {
            sendClientError(ci, err, close: true)
            return false
        }
        setClientState(ci, .waitServer)
        if !hot.pointee.paused && !pools[pi].limits.dbPaused { launchIfNeeded(p) }
        return false
    }

    /// Opens server connections while clients wait and the pool has room. A server being checked
    /// (server_check_query) counts as one coming, as one connecting does. Replication clients waiting
    /// for room go first (Replication.swift): called wherever room may have appeared.
    func launchIfNeeded(_ p: Int32) {
        let pi = Int(p)
        if pools[pi].replicationWaitCount > 0 { launchReplication(p) }
        while pools[pi].waiting.count > pools[pi].connectingCount + pools[pi].checkingCount && pools[pi].serverCount < pools[pi].limit
                && pools[pi].connectingCount < Worker.maxConcurrentConnectsPerPool {
            if loginRetryPending(pi) { return }
            // max_db_connections / max_user_connections for the whole service (ServiceLimits.swift).
            if pools[pi].limits.grouped && !groupRoom(pi) { return }
            let before = pools[pi].serverCount
            launchServer(p)
            if pools[pi].serverCount == before { return }
        }
    }

    /// Pairs a client with a server of its pool (idle, just released, reset or logged in): both become
    /// active; the client leaves the wait queue, the server the idle list.
    func link(_ ci: Int32, _ si: Int32) {
        statsLink(ci, si)  // stats hook (WorkerStats.swift)
        servers[si].lastReady = now
        join(ci, si)
        syncParameters(ci, si)
    }

    /// The pair's states and pointers, and the flags the pool's mode gives a link. Also how a client
    /// and server adopted together from a predecessor are linked again (PairHandoff.swift).
    @inline(__always)
    func join(_ ci: Int32, _ si: Int32) {
        let pooled = linkMode(si) != .session
        setServerState(si, .active)
        servers[si].client = ci
        servers[si].listenPinned = false  // listen_mode = pin: set again by its client's LISTEN
        servers[si].watchTags = pooled
        servers[si].tracking = pooled
        servers[si].rewriting = servers[si].tracking && hot.pointee.trackPrepared
        servers[si].answerHead = 0
        servers[si].answerCount = 0
        servers[si].copyIn = false
        servers[si].skipping = false
        clients[ci].server = si
        setClientState(ci, .active)
        #if DEBUG
        checkLink(ci, si)
        #endif
    }

    /// Sends SET for every tracked parameter whose value on this server differs from what the
    /// client expects; the answers are swallowed. The client's own query follows in the same write.
    func syncParameters(_ ci: Int32, _ si: Int32) {
        if clients[ci].paramsKey == 0 { clients[ci].paramsKey = expectedParamsKey(ci) }
        let paramsDiffer = servers[si].paramsKey != clients[ci].paramsKey
        // The common case, nothing to set, makes no String (its release cost as much as the test).
        guard paramsDiffer || servers[si].sessionCarried || clientCarries(ci) else { return }
        setParameters(ci, si, paramsDiffer: paramsDiffer)
    }

    /// The SETs (and carried settings) that make the server's session what the client expects.
    @inline(never)
    private func setParameters(_ ci: Int32, _ si: Int32, paramsDiffer: Bool) {
        var sql = ""
        if paramsDiffer, let cinfo = clients[ci].info, let sinfo = servers[si].info {
            servers[si].paramsKey = clients[ci].paramsKey
            let p = Int(clients[ci].pool)
            for t in 0..<tracked.names.count {
                let name = tracked.names[t]
                var want = cinfo.params.values[t]
                if want == nil { want = welcomeValue(p, t) }
                guard sinfo.params.values[t] != want else { continue }
                if let want {
                    sql += "SET \(name)=\(settingValueSQL(name: name, want));"  // PgBouncer's spelling
                } else {
                    // A parameter the server does not report, set by an earlier client: back to the default.
                    sql += "RESET \(name);"
                }
                sinfo.params.values[t] = want
            }
        }
        // Session settings beyond the tracked parameters (SessionHooks.swift).
        if servers[si].sessionCarried || clientCarries(ci) { sql += carriedSettingsSQL(ci, si) }
        guard !sql.isEmpty else { return }
        log.debug("S-\(servers[si].id): varcache_apply: \(sql)")  // PgBouncer's debug line (verbose)
        scratch.clear()
        Frontend.query(into: &scratch, sql: sql)
        servers[si].io.out.append(scratch)
        servers[si].internalQueries += 1
    }

    /// Fingerprint of what a client expects: its own value of each tracked parameter, else the pool's default.
    func expectedParamsKey(_ ci: Int32) -> UInt64 {
        guard let info = clients[ci].info else { return 1 }
        let p = Int(clients[ci].pool)
        var h = Hasher()
        for t in 0..<tracked.names.count {
            var want = info.params.values[t]
            if want == nil { want = welcomeValue(p, t) }
            h.combine(t)
            h.combine(want)
        }
        return nonZero(h.finalize())
    }

    /// Fingerprint of the values a server has, comparable with `expectedParamsKey`.
    func serverParamsKey(_ si: Int32) -> UInt64 {
        guard let info = servers[si].info else { return 0 }
        var h = Hasher()
        for t in 0..<tracked.names.count {
            h.combine(t)
            h.combine(info.params.values[t])
        }
        return nonZero(h.finalize())
    }

    private func nonZero(_ v: Int) -> UInt64 {
        let u = UInt64(bitPattern: Int64(v))
        return u == 0 ? 1 : u
    }

    /// Transaction/statement mode: the server answered ReadyForQuery 'I' and the client's bytes are all
    /// through; the server goes back to the pool and the client keeps its connection. It runs
    /// server_reset_query first when its client changed session state (`needsReset`), or at every
    /// release with server_reset_query_always, as PgBouncer's release_server does.
    func releaseServer(_ si: Int32) {
        let ci = servers[si].client
        if ci >= 0 { unlink(client: ci, server: si) }
        dropLeftovers(si)
        if hot.pointee.resetOnEveryRelease || (servers[si].needsReset && !config.serverResetQuery.isEmpty) {
            resetServer(si, rollback: false, reset: true)
        } else if !(hot.pointee.routing && learnCommitLSN(si, ci)) {  // read_after_write=lsn (Routing.swift)
            serverIdle(si)
        }
        listenDeferredHook(ci)  // notifications held for the end of the answer (ListenRelay.swift)
        // Rolling restart: between transactions is when a client can move to the successor.
        if hot.pointee.draining && ci >= 0 && handOff(ci) { return }
        if ci >= 0 && clients[ci].state == .idle && (clients[ci].io.input.hasUnscanned || clients[ci].io.readable) {
            clientData(ci)
        }
    }

    /// Undoes a link: the client is idle again; the server stays `.active`, unlinked, until the caller
    /// moves it on (to a waiting client, the idle list, a reset, or closed).
    @inline(__always)
    func unlink(client ci: Int32, server si: Int32) {
        #if DEBUG
        checkLink(ci, si)
        #endif
        clients[ci].server = -1
        servers[si].client = -1
        setClientState(ci, .idle)
    }

    /// Bytes a server sent after the ReadyForQuery that freed it belong to nobody now.
    private func dropLeftovers(_ si: Int32) {
        if servers[si].io.input.hasUnscanned || servers[si].io.input.hasUnsent {
            log.debug("S-\(servers[si].id): dropping \(servers[si].io.input.end - servers[si].io.input.start) bytes received after release")
            servers[si].io.input.start = servers[si].io.input.end
            servers[si].io.input.scan = servers[si].io.input.end
            servers[si].io.input.partial = 0
            servers[si].io.releaseIfEmpty(buffers)
        }
    }

    /// A server with nothing in flight: hand it to the first waiting client, or park it.
    func serverIdle(_ si: Int32) {
        let p = servers[si].pool
        let pi = Int(p)
        if servers[si].cancelsInFlight > 0 {
            setServerState(si, .beingCanceled)
            return
        }
        if servers[si].dirty {
            closeServer(si, reason: "a query pgswift sent failed")
            launchIfNeeded(p)
            return
        }
        let lifetime = pools[pi].timeouts.serverLifetime
        // server_lifetime = 0: a server serves once, then closes (PgBouncer closes it on release, when it
        // is not coming out of its login).
        let served = servers[si].state != .login && servers[si].state != .connecting
        if lifetime > 0 ? now - servers[si].createdAt > lifetime : served {
            closeServer(si, reason: "server_lifetime")
            launchIfNeeded(p)
            return
        }
        if pools[pi].serverCount > pools[pi].limit && pools[pi].limits.retiring == 0 {
            // This worker's quota was lowered: the server moves to the worker the quota went to
            // (ServerMove.swift), or its share goes there once PostgreSQL has let it go (retired:
            // Terminate, counted until EOF; ServiceLimits.swift).
            if pools[pi].moveTo >= 0 && moveServer(si, toSlot: pools[pi].moveTo) { return }
            retireServer(si, reason: "pool quota lowered")
            return
        }
        // Connection limits, RECONNECT, retiring servers, PAUSE db (ServiceLimits.swift).
        if pools[pi].limits.onRelease && closeOnRelease(si, pi) { return }
        // Logins waiting for auth_query go before queued clients (AuthQuery.swift).
        if hot.pointee.authQueriesWaiting > 0 && authQueryTakes(si) { return }
        if !hot.pointee.paused && pools[pi].waiting.head >= 0 && !hot.pointee.safeShutdown {
            // A routed pool's server goes to a client of its role (Routing.swift).
            let ci = hot.pointee.routing && poolRoutes(pi) ? routedWaiter(si) : pools[pi].waiting.head
            if ci >= 0 {
                link(ci, si)
                clientData(ci)
                return
            }
            if routedMakeRoom(si) { return }
        }
        setServerState(si, .idle)
        // A replication client waiting for room takes it from an idle server (evicted).
        if pools[pi].replicationWaitCount > 0 { launchReplication(p) }
    }

    /// Serves waiting clients from idle servers (after RESUME, after a failed server_check_query) and
    /// launches what is missing. A server idle past server_check_delay is checked first, one per
    /// waiting client not already waiting for a check.
    func serveWaiting(_ p: Int32) {
        let pi = Int(p)
        if pools[pi].limits.dbPaused { return }
        if hot.pointee.routing && poolRoutes(pi) { return serveWaitingRouted(p) }
        while pools[pi].waiting.head >= 0 && pools[pi].idle.head >= 0 {
            let si = pools[pi].idle.head
            if now &- servers[si].stateSince >= hot.pointee.serverCheckDelay {
                if pools[pi].checkingCount >= pools[pi].waiting.count { break }
                checkServer(si)  // leaves the idle list
                continue
            }
            let ci = pools[pi].waiting.head
            link(ci, si)
            clientData(ci)
        }
        launchIfNeeded(p)
    }

    /// PgBouncer's server_check_query before reuse: the idle server runs it (state `.resetting`,
    /// `checking`; its answers are swallowed as a reset's are) and goes back through `serverIdle`
    /// when it passes, to the first waiting client. An error closes it (`resetDone`) and the clients
    /// waiting get another server (`serveWaiting`); a broken connection does the same through the
    /// usual path (`serverBroken` launches a new one).
    @inline(never)  // cold: only servers idle past server_check_delay
    func checkServer(_ si: Int32) {
        let p = Int(servers[si].pool)
        let sql = config.serverCheckQueryToSend ?? ""
        log.debug("S-\(servers[si].id): idle \((now - servers[si].stateSince) / 1_000_000) ms, checking: \(sql)")
        setServerState(si, .resetting)
        servers[si].checking = true
        pools[p].checkingCount += 1
        scratch.clear()
        Frontend.query(into: &scratch, sql: sql)
        servers[si].io.out.append(scratch)
        servers[si].internalQueries += 1
        flushServer(si)
    }

    /// The client left while linked. A clean server is reset (session mode) or parked; one caught
    /// mid-transaction or mid-protocol is closed, never handed to someone else dirty.
    func detachServer(fromClient ci: Int32) {
        let si = clients[ci].server
        guard si >= 0 else { return }
        // The client is leaving (its caller closes or frees it): only the pointers are undone here.
        clients[ci].server = -1
        servers[si].client = -1
        servers[si].releaseOnFlush = false
        servers[si].unnamedParsed = false  // its unnamed statement is harmless: the next Parse replaces it
        if servers[si].replication != .none {
            // Its own server never serves anyone else (PgBouncer's words). A walsender stops when its
            // socket closes: nothing to cancel.
            let p = servers[si].pool
            closeServer(si, reason: "replication client was closed")
            launchIfNeeded(p)
            return
        }
        // Quiet means: no query running, no protocol exchange half done, no bytes in flight.
        let quiet = servers[si].pendingSyncs == 0 && !servers[si].unsynced && servers[si].internalQueries == 0
            && servers[si].answerCount == 0 && !servers[si].unreliable
            && !servers[si].io.input.hasUnscanned && servers[si].io.input.partial == 0
            && !clients[ci].io.input.hasUnsent && clients[ci].io.input.partial == 0
        if !quiet {
            let p = servers[si].pool
            // Stop what the backend is running: closing the socket alone lets a long query run on.
            if servers[si].pendingSyncs > 0 || servers[si].unsynced { sendCancel(toServer: si) }
            closeServer(si, reason: "client disconnected while the server was busy")
            launchIfNeeded(p)
            return
        }
        // Answers already scanned but not delivered (the client went before reading them) were its
        // own: the next client must never get them.
        if servers[si].io.input.hasUnsent {
            servers[si].io.input.start = servers[si].io.input.scan
            servers[si].io.releaseIfEmpty(buffers)
        }
        let p = Int(servers[si].pool)
        if servers[si].sessionPins != 0 {
            // A temp table, advisory lock or held cursor: reset (`needsReset`), or closed when there is
            // no reset query to undo it (SessionHooks.swift).
            servers[si].sessionPins = 0
            if config.serverResetQuery.isEmpty {
                closeServer(si, reason: "client left pinned session state")
                launchIfNeeded(Int32(p))
                return
            }
        }
        let inTransaction = servers[si].txStatus != UInt8(ascii: "I")
        let reset = (pools[p].mode == .session || config.serverResetQueryAlways || servers[si].needsReset)
            && !config.serverResetQuery.isEmpty
        if inTransaction || reset {
            resetServer(si, rollback: inTransaction, reset: reset)
        } else {
            serverIdle(si)
        }
    }

    /// Rolls back an open transaction and/or runs server_reset_query; the answers are swallowed and the
    /// server goes back to the pool after the last ReadyForQuery.
    func resetServer(_ si: Int32, rollback: Bool, reset: Bool) {
        setServerState(si, .resetting)
        scratch.clear()
        if rollback {
            Frontend.query(into: &scratch, sql: "ROLLBACK")
            servers[si].internalQueries += 1
        }
        if reset {
            Frontend.query(into: &scratch, sql: config.serverResetQuery)
            servers[si].internalQueries += 1
            carriedStateReset(si)  // SessionHooks.swift
            if let info = servers[si].info, !info.prepared.isEmpty {
                // Whatever server_reset_query is, no statement of ours may survive a reset we forget.
                Frontend.query(into: &scratch, sql: "DEALLOCATE ALL")
                servers[si].internalQueries += 1
                info.prepared.removeAll()
            }
        }
        servers[si].io.out.append(scratch)
        flushServer(si)
    }

    func resetDone(_ si: Int32) {
        if hot.pointee.routing && routedInternalDone(si) { return }  // Routing.swift's own queries
        if servers[si].checking {
            checkDone(si)
            return
        }
        servers[si].needsReset = false
        if servers[si].txStatus != UInt8(ascii: "I") {
            closeServer(si, reason: "still in a transaction after ROLLBACK")
            return
        }
        // DISCARD ALL resets tracked parameters to their defaults: forget what we knew.
        if let info = servers[si].info, pools[Int(servers[si].pool)].welcome != nil {
            for t in 0..<tracked.names.count {
                info.params.values[t] = welcomeValue(Int(servers[si].pool), t)
            }
            servers[si].paramsKey = serverParamsKey(si)
        }
        serverIdle(si)
    }
}

extension Worker {
    /// server_check_query answered (its ReadyForQuery): a server that passed goes back to the pool
    /// (the first waiting client gets it); one that failed, or was left inside a transaction, is
    /// closed and the waiting clients are served by another.
    func checkDone(_ si: Int32) {
        let p = servers[si].pool
        let failed = servers[si].dirty ? "server_check_query failed"
            : servers[si].txStatus != UInt8(ascii: "I") ? "server_check_query left a transaction open" : nil
        guard let reason = failed else {
            serverIdle(si)
            return
        }
        log.info("S-\(servers[si].id): closing because: \(reason) (backend pid \(servers[si].backendPID))")
        closeServer(si, reason: reason)
        if !hot.pointee.paused { serveWaiting(p) }
    }
}

/// A SQL string literal: single quotes doubled (standard_conforming_strings is on in every supported server).
/// The right-hand side of `SET name = ...` for a tracked value. search_path is a list PostgreSQL quotes
/// element by element (GUC_LIST_QUOTE): a single literal would make the whole value one schema name
/// (`'a, b'` is the schema "a, b"), so each element of the list, as PostgreSQL splits it
/// (`identifierList`), becomes a literal of its own: `'a', 'b'`. Anything else, and a search_path
/// that does not split, is one literal.
func settingValueSQL(name: String, _ value: String) -> String {
    if name == "search_path", let elements = identifierList(value), !elements.isEmpty {
        return elements.map(sqlLiteral).joined(separator: ", ")
    }
    return sqlLiteral(value)
}

/// A comma-separated list of identifiers split as PostgreSQL's SplitIdentifierString splits a list
/// setting: whitespace around elements is dropped, `"..."` keeps its text (`""` is a quote) and an
/// unquoted name is lowercased (ASCII). nil when it is not such a list (an unterminated or empty
/// quoted name, an empty element, text after a name).
func identifierList(_ value: String) -> [String]? {
    let b = Array(value.utf8)
    var out: [String] = []
    var i = 0
    func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (c >= 0x09 && c <= 0x0D) }
    while i < b.count && isSpace(b[i]) { i += 1 }
    if i == b.count { return [] }
    while true {
        var name: [UInt8] = []
        if b[i] == UInt8(ascii: "\"") {
            i += 1
            while true {
                guard i < b.count else { return nil }
                if b[i] == UInt8(ascii: "\"") {
                    if i + 1 < b.count && b[i + 1] == UInt8(ascii: "\"") {
                        name.append(b[i])
                        i += 2
                        continue
                    }
                    i += 1
                    break
                }
                name.append(b[i])
                i += 1
            }
            if name.isEmpty { return nil }
        } else {
            while i < b.count && b[i] != UInt8(ascii: ",") && !isSpace(b[i]) {
                let c = b[i]
                name.append(c >= 65 && c <= 90 ? c + 32 : c)
                i += 1
            }
            if name.isEmpty { return nil }
        }
        out.append(String(decoding: name, as: UTF8.self))
        while i < b.count && isSpace(b[i]) { i += 1 }
        if i == b.count { return out }
        guard b[i] == UInt8(ascii: ",") else { return nil }
        i += 1
        while i < b.count && isSpace(b[i]) { i += 1 }
        if i == b.count { return nil }
    }
}

func sqlLiteral(_ s: String) -> String {
    var out = "'"
    for ch in s {
        if ch == "'" { out += "''" } else { out.append(ch) }
    }
    return out + "'"
}
