// Server connections: non-blocking connect, startup, authentication to PostgreSQL, welcome parameters.
import Shared
import Glibc

extension Worker {
    /// Opens one more server connection for the pool (the caller checked the limits). With
    /// `replicationClient`, it is that replication client's own connection, linked to it from now on
    /// (Replication.swift).
    func launchServer(_ p: Int32, replicationClient rc: Int32 = -1) {
        let pi = Int(p)
        guard let (address, hostKey) = pickBackend(p) else { return }
        pools[pi].lastConnectAt = now
        let si: Int32, connected: Bool
        do throws(SyscallError) {
            (si, connected) = try connectServer(address, pool: p, .connecting)
        } catch {
            log.warning("connect to \(address) failed: \(error)")
            let fields = ErrorFields(severity: "FATAL", code: SQLState.connectionFailure,
                                     message: "could not connect to server: \(error.errno)")
            if rc >= 0 {
                // Only this client's login fails; the pool's other clients are not told.
                _ = noteConnectFailure(p, key: hostKey, fields)
                sendClientError(rc, fields, close: true)
                return
            }
            if noteConnectFailure(p, key: hostKey, fields) {
                launchIfNeeded(p)
            } else {
                poolLoginFailed(p, fields, refusal: false)
            }
            return
        }
        servers[si].client = rc
        if rc >= 0 { linkReplicationServer(rc, si) }
        servers[si].io.readable = false
        servers[si].io.writable = false
        servers[si].io.eof = false
        servers[si].createdAt = now
        servers[si].pendingSyncs = 0
        servers[si].unsynced = false
        servers[si].txStatus = UInt8(ascii: "I")
        servers[si].dirty = false
        servers[si].unreliable = false
        servers[si].copyDataSent = false
        let info = ServerInfo(trackedCount: tracked.names.count)
        info.address = address.description
        info.hostKey = hostKey
        info.socketAddress = address
        servers[si].info = info
        if !watchServer(si) { return }
        log.debug("S-\(servers[si].id): connecting to \(address) for \(pools[pi].database)/\(pools[pi].user)")
        if connected { serverConnected(si) }
    }

    /// A new server record whose socket is connecting (non-blocking) to `address`, in `state` for pool
    /// `p`. Not in epoll yet: the caller fills in the record, then calls `watchServer`.
    func connectServer(_ address: SocketAddress, pool p: Int32, _ state: ServerState) throws(SyscallError)
        -> (si: Int32, connected: Bool) {
        let (fd, connected) = try Sockets.connect(address, keepalive: config.tcpKeepaliveSettings)
        let si = servers.allocate()
        servers[si].io.fd = fd
        servers[si].id = newConnectionID()
        servers[si].pool = p
        setServerState(si, state)
        return (si, connected)
    }

    func serverConnected(_ si: Int32) {
        logNewServerConnection(si)
        setServerState(si, .login)
        servers[si].io.writable = true
        if beginServerTLS(si) { return }
        sendServerStartup(si)
    }

    func sendServerStartup(_ si: Int32) {
        let p = Int(servers[si].pool)
        scratch.clear()
        // The database entry's client_encoding, datestyle, timezone and application_name become the
        // session's defaults, as in PgBouncer (its `startup_params`): the first server reports them
        // and they become the pool's welcome values; a client that set its own gets a SET at link.
        var parameters = [("user", pools[p].serverUser), ("database", pools[p].serverDatabase)]
        for param in pools[p].entry.startupParameters { parameters.append((param.name, param.value)) }
        // A replication client's own server: its parameters and options too (Replication.swift).
        if servers[si].replication != .none { addReplicationParameters(si, &parameters) }
        Frontend.startupMessage(into: &scratch, parameters: parameters)
        servers[si].io.out.append(scratch)
        flushServer(si)
    }

    /// Handles login-phase messages from PostgreSQL until ReadyForQuery.
    func serverLoginInput(_ si: Int32) {
        if servers[si].tlsPhase != .none && !serverTLSLogin(si) { return }
        while servers[si].state == .login,
              let (type, raw) = nextHeldMessage(server: si,
                  invalid: { _ in
                      serverLoginFailed(si, ErrorFields(severity: "FATAL", code: SQLState.protocolViolation,
                                                        message: "invalid message from server during login"))
                  },
                  onClosed: {
                      serverLoginFailed(si, ErrorFields(severity: "FATAL", code: SQLState.connectionFailure,
                                                        message: "server closed the connection during login"))
                  }) {
            let body = [UInt8](raw)
            servers[si].io.consume(Wire.headerSize + raw.count, buffers)
            handleServerLoginMessage(si, type, body)
        }
        // Still logging in: send what the messages handled queued (a failed login closed the server).
        if servers[si].state == .login { flushServer(si) }
    }

    private func handleServerLoginMessage(_ si: Int32, _ type: UInt8, _ body: [UInt8]) {
        guard let info = servers[si].info else { return }
        if info.connectQueryRunning { return connectQueryMessage(si, type, body) }
        switch type {
        case BackendType.authentication:
            guard let req = body.withUnsafeBytes({ AuthenticationRequest.parse($0) }) else {
                serverLoginFailed(si, ErrorFields(severity: "FATAL", code: SQLState.protocolViolation,
                                                  message: "invalid authentication request from server"))
                return
            }
            // Credentials are read when the server first asks (a client may have just given a ClientKey).
            if info.login == nil {
                let p = Int(servers[si].pool)
                info.login = BackendLoginMachine(user: pools[p].serverUser, secret: serverSecret(p),
                                                 scramClientKey: pools[p].scramClientKey, keyCache: scramCache)
            }
            if let action = info.login?.authenticationRequestReceived(req) { performServerLogin(si, action) }
        case BackendType.parameterStatus:
            noteLoginParameter(si, body)
        case BackendType.backendKeyData:
            if let (pid, key) = body.withUnsafeBytes({ BackendKeyData.parse($0) }) {
                servers[si].backendPID = pid
                servers[si].backendKey = key
            }
        case BackendType.errorResponse:
            let fields = body.withUnsafeBytes { ErrorFields.parse($0) }
                ?? ErrorFields(severity: "FATAL", code: SQLState.connectionFailure, message: "server login failed")
            performServerLogin(si, info.login?.errorReceived(fields) ?? .fail(.server(fields)))
        case BackendType.readyForQuery:
            // The database's connect_query, if any, runs before the server serves anyone (ConnectQuery.swift).
            if !startConnectQuery(si) { serverLoginDone(si) }
        default:
            // NoticeResponse, NegotiateProtocolVersion: nothing to do.
            break
        }
    }

    /// A ParameterStatus before the server serves anyone: the pool's welcome set if it is the first.
    /// A name reported again (a SET in connect_query) keeps its place with the newer value.
    func noteLoginParameter(_ si: Int32, _ body: [UInt8]) {
        guard let info = servers[si].info,
              let (name, value) = body.withUnsafeBytes({ ParameterStatus.parse($0) }) else { return }
        if info.connectQueryRunning, let i = info.reported.firstIndex(where: { $0.0 == name }) {
            info.reported[i].1 = value
        } else {
            info.reported.append((name, value))
        }
        if let t = tracked.index(of: name) { info.params.values[t] = value }
    }

    /// Does what the login machine asks: answer the server, wait, or fail the login.
    private func performServerLogin(_ si: Int32, _ action: BackendLoginMachine.Action) {
        if case .fail(let failure) = action {
            if let detail = failure.logDetail {
                // As PgBouncer: its own reason logged, the short words to the clients, and the server
                // closed as one whose authentication request got no answer.
                log.error("\(serverLogPrefix(si)) \(detail)")
                return serverLoginFailed(si, failure.errorFields, refusal: LoginRetry.isRefusal(failure),
                                         closeReason: "failed to answer authreq")
            }
            return serverLoginFailed(si, failure.errorFields, refusal: LoginRetry.isRefusal(failure))
        }
        scratch.clear()
        guard action.encode(into: &scratch) else { return }
        servers[si].io.out.append(scratch)
        flushServer(si)
    }

    /// The password pgswift logs in with: the database entry's `password=`, else the auth_file's entry,
    /// else what auth_query returned for the pool's user.
    func serverSecret(_ p: Int) -> PasswordSecret? {
        if let pw = pools[p].entry.password, !pw.isEmpty { return PasswordSecret(parsing: pw) }
        return userSecret(pools[p].serverUser) ?? authQuerySecret(pool: p)
    }

    func serverLoginDone(_ si: Int32) {
        let p = Int(servers[si].pool)
        if let key = servers[si].info?.hostKey {
            health.hostBackoff[key] = nil
            health.suspectUntil[key] = nil
        }
        // A replication client's own server goes to that client; the pool learns nothing from it.
        if servers[si].replication != .none { return replicationServerReady(si) }
        if servers[si].listener { return listenServerReady(si) }  // ListenRelay.swift
        // Still `.login` (counted as connecting) until serverIdle hands it on or parks it.
        pools[p].loginError = nil
        pools[p].loginRefused = false
        if pools[p].welcome == nil, let info = servers[si].info {
            setWelcome(p, info.reported)
            reportWelcome(p)  // for the other workers' pools (SharedWelcome.swift)
        }
        servers[si].info?.reported = []
        servers[si].paramsKey = serverParamsKey(si)
        servers[si].info?.login = nil
        log.debug("S-\(servers[si].id): login done (backend pid \(servers[si].backendPID))")
        // Clients that authenticated before the pool knew its welcome parameters.
        finishWelcomeWaits(p)
        serverIdle(si)
        // Connects are capped per pool (BackendHealth.swift): this one's end lets the next start.
        if !hot.pointee.paused { launchIfNeeded(Int32(p)) }
    }

    /// A server connection failed before ReadyForQuery. `refusal`: PostgreSQL refused the login, or
    /// pgswift could not answer it (`LoginRetry.isRefusal`); anything else (connect, TLS, timeout, a
    /// closed connection) is not one. `closeReason`: PgBouncer's reason for a failure that is not a
    /// login error ("connect failed", "connect timeout"), logged as its `closing because:` line alone, as
    /// PgBouncer does; nil for the others, which get PgBouncer's `server login failed:` line and close
    /// with the error's message as the reason, as PgBouncer closes a server whose login PostgreSQL
    /// refused (a replication server's closes as "login failed").
    func serverLoginFailed(_ si: Int32, _ fields: ErrorFields, refusal: Bool = false, closeReason: String? = nil) {
        let p = servers[si].pool
        if closeReason == nil {
            // PgBouncer's words ("server login failed: FATAL <message>"), after pgswift's socket prefix.
            log.warning("\(serverLogPrefix(si)) server login failed: \(fields.severity) \(fields.message)")
        }
        if servers[si].listener { return listenServerLoginFailed(si, fields, closeReason: closeReason) }
        if servers[si].replication != .none {
            let reason = closeReason ?? "login failed"
            // As PgBouncer: a replication login can fail for reasons of its own (no REPLICATION role, no
            // pg_hba.conf line for replication) while ordinary logins work, so only its client is
            // failed ("login failed"); the pool's state and its other clients are left alone.
            _ = noteConnectFailure(p, key: servers[si].info?.hostKey ?? "", fields)
            closeServer(si, reason: reason)
            launchIfNeeded(p)
            return
        }
        if servers[si].state == .connecting || servers[si].state == .login {
            setServerState(si, .closing)
        }
        let failover = noteConnectFailure(p, key: servers[si].info?.hostKey ?? "", fields)
        closeServer(si, reason: closeReason ?? fields.message)
        if failover {
            launchIfNeeded(p)
        } else {
            poolLoginFailed(p, fields, refusal: refusal)
            // The other workers take it as their own (LoginRetry.swift, `loginRefusedElsewhere`).
            if refusal {
                sendControl(.loginRefusedFromWorker(database: pools[Int(p)].database, user: pools[Int(p)].user,
                                                    code: fields.code, message: fields.message))
            }
        }
    }

    /// A server login of the pool failed, as PgBouncer handles it: the pool remembers the error (no new
    /// connect until server_login_retry has passed since the last one, the janitor retries; new clients
    /// meanwhile get the cached error: `cachedLoginFailure`). A refusal also fails the clients waiting on
    /// the pool (queued, or logging in and waiting for the welcome) with the server's own error, unless a
    /// logged-in server is left that can still serve them (`usableServers`); any other failure leaves
    /// them waiting (query_wait_timeout, client_login_timeout), as connects are retried.
    func poolLoginFailed(_ p: Int32, _ fields: ErrorFields, refusal: Bool) {
        let pi = Int(p)
        var f = fields
        f.severity = "FATAL"
        pools[pi].loginError = f
        pools[pi].loginRefused = refusal
        let loggedIn = usableServers(pi)
        guard LoginRetry.failsWaitingClients(refusal: refusal, loggedInServers: loggedIn,
                                             welcomeKnown: pools[pi].welcome != nil) else {
            if pools[pi].waiting.count > 0 || pools[pi].welcomeWaitCount > 0 {
                log.debug("pool \(pools[pi].database)/\(pools[pi].user): server login failed; waiting clients keep "
                         + "waiting, next attempt in server_login_retry (\(config.serverLoginRetry) s)")
            }
            return
        }
        var ci: Int32 = 0
        let cap = Int32(clients.capacity)
        while ci < cap {
            if clients[ci].pool == p && (clients[ci].state == .waitWelcome || clients[ci].state == .waitServer) {
                sendClientError(ci, f, close: true)
            }
            ci += 1
        }
    }

    /// The pool's logged-in servers that can still serve a waiting client: not those a RECONNECT or a
    /// changed configuration marked to close (`closeBefore`), which go as soon as they are released.
    /// PgBouncer's kill_pool_logins counts none in a pool tagged dirty: its clients would otherwise
    /// wait for a server that will not come. Walks the table only when servers are marked.
    func usableServers(_ pi: Int) -> Int {
        let loggedIn = pools[pi].serverCount - pools[pi].connectingCount
        let marked = pools[pi].limits.closeBefore
        guard marked > 0, loggedIn > 0 else { return loggedIn }
        var n = 0
        var si: Int32 = 0
        while si < Int32(servers.capacity) {
            let st = servers[si].state
            if Int(servers[si].pool) == pi && Worker.isPoolServer(st) && st != .connecting && st != .login
                && servers[si].createdAt > marked { n += 1 }
            si += 1
        }
        return n
    }
}
