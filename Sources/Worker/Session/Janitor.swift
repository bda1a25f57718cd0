// Timeouts, checked ten times a second by walking the tables (PgBouncer's janitor, in spirit).
import Shared

extension Worker {
    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func janitor() {
        let loginTimeout = Clock.nanos(seconds: config.clientLoginTimeout)
        // As PgBouncer: a queued client is held to the global query_timeout (per-user values apply to
        // running queries only), then to query_wait_timeout.
        let queryTimeout = Clock.nanos(seconds: config.queryTimeout)
        let globalWaitTimeout = Clock.nanos(seconds: config.queryWaitTimeout)
        let globalIdleTimeout = Clock.nanos(seconds: config.clientIdleTimeout)
        let waitNotify = Int64(config.queryWaitNotify)
        for ci in 0..<Int32(clients.capacity) {
            if clients[ci].io.hangup && closeIfHungUp(ci) { continue }
            let age = now - clients[ci].stateSince
            switch clients[ci].state {
            case .startup, .auth:
                if let login = clients[ci].info?.login, let msg = login.deferredStartup {
                    // Over max_client_conn at its startup packet: admitted now, or refused.
                    if now > login.deferredAt { admitAndAuthenticate(ci, msg) }
                    continue
                }
                if loginTimeout > 0 && now - clients[ci].connectedAt > loginTimeout {
                    failClient(ci, code: SQLState.protocolViolation, message: "client_login_timeout")
                }
            case .waitWelcome:
                // As PgBouncer, whose clients waiting for the pool's first login sit in its waiting list:
                // the global query_timeout and query_wait_timeout first, then client_login_timeout in
                // PgBouncer's words for a client whose pool has no server to learn the welcome from.
                if !failQueuedClientOverdue(ci, age: age, queryTimeout: queryTimeout, globalWaitTimeout: globalWaitTimeout)
                    && loginTimeout > 0 && now - clients[ci].connectedAt > loginTimeout {
                    failClient(ci, code: SQLState.protocolViolation, message: "client_login_timeout (server down)")
                }
            case .waitServer, .replicationWait:
                // query_wait_timeout of the client's user, else database, else global (per pool); a
                // replication client waiting for room to open its own server waits as a queued one does.
                if !failQueuedClientOverdue(ci, age: age, queryTimeout: queryTimeout, globalWaitTimeout: globalWaitTimeout)
                    && waitNotify > 0 && !clients[ci].waitNotified && age / 1_000_000_000 > waitNotify {
                    notifyQueued(ci)
                }
            case .idle:
                // Per pool: the pool user's [users] client_idle_timeout beats the global one.
                let p = clients[ci].pool
                let idleTimeout = p >= 0 ? pools[Int(p)].timeouts.clientIdle : globalIdleTimeout
                if idleTimeout > 0 && age > idleTimeout {
                    failClient(ci, code: SQLState.protocolViolation, message: "client_idle_timeout")
                }
            case .closing:
                // A client that does not read its final error is not waited for long.
                if age > 5_000_000_000 { freeClient(ci) }
            default:
                break
            }
        }
        let connectTimeout = Clock.nanos(seconds: config.serverConnectTimeout)
        let serverIdle = Clock.nanos(seconds: config.serverIdleTimeout)
        for si in 0..<Int32(servers.capacity) {
            switch servers[si].state {
            case .connecting, .login:
                // From the connect's start, as PgBouncer's connect_time: connect, TLS, authentication and
                // connect_query together (stateSince restarts when the connect completes).
                if connectTimeout > 0 && now - servers[si].createdAt > connectTimeout {
                    serverLoginFailed(si, ErrorFields(severity: "FATAL", code: SQLState.connectionFailure,
                                                      message: "server_connect_timeout"), closeReason: "connect timeout")
                }
            case .active:
                if let reason = timedOut(si) { serverTimedOut(si, reason: reason) }
            case .idle:
                // As PgBouncer: server_idle_timeout never takes a pool below its min_pool_size part.
                let lifetime = pools[Int(servers[si].pool)].timeouts.serverLifetime
                if serverIdle > 0 && now - servers[si].stateSince > serverIdle && !keepWarm(si) {
                    closeServer(si, reason: "server_idle_timeout")
                } else if lifetime > 0 && now - servers[si].createdAt > lifetime {
                    closeServer(si, reason: "server_lifetime")
                }
            case .beingCanceled:
                // PostgreSQL should close a cancel connection at once; don't hold a server forever.
                if now - servers[si].stateSince > 10_000_000_000 {
                    servers[si].cancelsInFlight = 0
                    self.serverIdle(si)
                }
            case .cancelRequest:
                if now - servers[si].stateSince > 5_000_000_000 { closeServer(si, reason: "cancel request timed out") }
            default:
                break
            }
        }
        authQueryTick()
        freeIdlePools()
    }

    /// A queued client (waiting for a server, or for its pool's first login) past the global
    /// query_timeout, then past its pool's query_wait_timeout (`globalWaitTimeout` without a pool), is
    /// failed with that timeout's name. True when it was.
    private func failQueuedClientOverdue(_ ci: Int32, age: Int64, queryTimeout: Int64, globalWaitTimeout: Int64) -> Bool {
        let p = clients[ci].pool
        let waitTimeout = p >= 0 ? pools[Int(p)].timeouts.queryWait : globalWaitTimeout
        if queryTimeout > 0 && age > queryTimeout {
            failClient(ci, code: SQLState.protocolViolation, message: "query_timeout")
        } else if waitTimeout > 0 && age > waitTimeout {
            failClient(ci, code: SQLState.protocolViolation, message: "query_wait_timeout")
        } else {
            return false
        }
        return true
    }

    /// query_wait_notify: a client queued for more than that many whole seconds (PgBouncer's test) is
    /// told so once per wait, with PgBouncer's NOTICE; it stays queued.
    func notifyQueued(_ ci: Int32) {
        clients[ci].waitNotified = true
        scratch.clear()
        Backend.noticeResponse(into: &scratch, ErrorFields(severity: ErrorFields.Severity.notice,
            code: SQLState.successfulCompletion,
            message: "No server connection available in postgres backend, client being queued"))
        clients[ci].io.out.append(scratch)
        flushClient(ci)
    }

    /// Which of PgBouncer's timeouts a linked server has run past, in PgBouncer's order and words
    /// (nil: none), from the timestamps the data path keeps anyway: `queryStart` (a Query, FunctionCall
    /// or Sync forwarded with nothing running; extended-protocol messages are timed from their Sync),
    /// `xactStart` (the first of those in the transaction) and `lastReady` (the last ReadyForQuery).
    ///   query_timeout             a query has been running that long
    ///   idle_transaction_timeout  in a transaction, nothing running, since the last ReadyForQuery
    ///   transaction_timeout       in a transaction (or running one statement outside one) that long
    func timedOut(_ si: Int32) -> String? {
        let t = pools[Int(servers[si].pool)].timeouts
        if t.query > 0 && servers[si].queryStart != 0 && now - servers[si].queryStart > t.query {
            return "query timeout"
        }
        if t.idleTransaction > 0 && servers[si].pendingSyncs == 0 && !servers[si].unsynced
            && servers[si].internalQueries == 0 && servers[si].txStatus != UInt8(ascii: "I") && now - servers[si].lastReady > t.idleTransaction {
            return "idle transaction timeout"
        }
        if t.transaction > 0 && servers[si].xactStart != 0 && now - servers[si].xactStart > t.transaction {
            return "transaction timeout"
        }
        return nil
    }

    /// Last line of defence against a pool frozen by a client that is gone. A logged-in client whose
    /// peer hung up is normally closed as soon as its EOF is read; one still here half a second later
    /// is not being read (its input waits behind a server that does not drain, or a message that can
    /// never complete): closed now, which gives back or closes its server as for any client that
    /// leaves. Only clients with `hangup` set get here, so the walk costs one flag test per client.
    func closeIfHungUp(_ ci: Int32) -> Bool {
        switch clients[ci].state {
        case .idle, .active, .waitServer:
            guard clients[ci].hangupAt > 0, now - clients[ci].hangupAt > 500_000_000 else { return false }
            closeClient(ci, reason: "client closed the connection (hang-up noticed while its input was not read)",
                        notify: false)
            return true
        default:
            return false
        }
    }
}

extension Worker {
    /// epoll said the client's peer hung up (RDHUP, HUP or ERR): read until EOF from now on, and let
    /// the janitor close the client if that EOF is never reached.
    @inline(__always)
    func noteHangup(client ci: Int32) {
        clients[ci].io.hangup = true
        if clients[ci].hangupAt == 0 { clients[ci].hangupAt = now }
    }
}
