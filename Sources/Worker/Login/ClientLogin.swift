// Client login: startup packet, SSL/GSS refusal, cancel requests, and client authentication.
import Shared
import Glibc

extension Worker {
    static let adminDatabases: Set<String> = ["pgbouncer", "pgswift"]

    /// Reads and handles login-phase input (startup packet, password messages).
    func clientLoginInput(_ ci: Int32) {
        while clients[ci].state == .startup || clients[ci].state == .auth {
            if clients[ci].io.tls != nil && !clients[ci].usesTLS && !clientHandshake(ci) { break }
            if processLoginBytes(ci) { continue }
            // Need more bytes. Every login message fits the buffer (lengths are checked first): never wait on one.
            switch readHeld(client: ci, tooLarge: (SQLState.protocolViolation, "login message too large"),
                            closed: "client closed the connection during login") {
            case .more: continue
            case .wait: break
            case .stopped: return
            }
            break
        }
        if clients[ci].state != .free { flushClient(ci) }
    }

    /// Handles one complete login packet if the buffer holds one. Returns true when it consumed something.
    private func processLoginBytes(_ ci: Int32) -> Bool {
        guard let base = clients[ci].io.input.base else { return false }
        let start = clients[ci].io.input.start
        let avail = clients[ci].io.input.end - start
        let p = base + start
        if clients[ci].state == .startup {
            // A startup packet kept for the janitor's next tick (over max_client_conn): whatever came
            // after it waits until the client is admitted or refused.
            if clients[ci].info?.login?.deferredStartup != nil { return false }
            if avail > 0 && clients[ci].io.tls == nil && p.load(as: UInt8.self) == 0x16 {
                // A TLS ClientHello with no SSLRequest before it: PostgreSQL 17's direct TLS.
                clientDirectTLS(ci)
                return clients[ci].state == .startup
            }
            guard let len = StartupPacket.peekLength(p, available: avail) else { return false }
            if len < 8 || len > Wire.maxStartupPacketLength {
                failClient(ci, code: SQLState.protocolViolation, message: "invalid startup packet length \(len)")
                return false
            }
            if avail < len { return false }
            let packet: StartupPacket
            do {
                packet = try StartupPacket.parse(UnsafeRawBufferPointer(start: p, count: len))
            } catch {
                // The error's own text says "invalid startup packet" (or "invalid length of ...").
                failClient(ci, code: SQLState.protocolViolation, message: "\(error)")
                return false
            }
            clients[ci].io.consume(len, buffers)
            handleStartupPacket(ci, packet)
            return clients[ci].state == .startup || clients[ci].state == .auth
        }
        // Authentication: expect a 'p' message, held whole in the buffer (a SCRAM final message is
        // ~200 bytes; a larger one could never be read and would hold the client until
        // client_login_timeout).
        let frame = frameHeader(p, available: avail, .held)
        let type: UInt8, len: Int
        switch frame {
        case .incomplete: return false
        case .header(let h), .invalid(let h): (type, len) = (h.type, h.length)
        }
        if type != FrontendType.password {
            if type == FrontendType.terminate {
                closeClient(ci, reason: "client terminated during authentication", notify: false)
                return false
            }
            failClient(ci, code: SQLState.protocolViolation,
                       message: "expected password response, got message type \(type)")
            return false
        }
        if case .invalid = frame {
            failClient(ci, code: SQLState.protocolViolation, message: "invalid password message length \(len)")
            return false
        }
        if avail < len + 1 { return false }
        let body = UnsafeRawBufferPointer(start: p + 5, count: len - 4)
        let bytes = [UInt8](body)
        clients[ci].io.consume(len + 1, buffers)
        handlePasswordMessage(ci, bytes)
        return clients[ci].state == .auth
    }

    private func handleStartupPacket(_ ci: Int32, _ packet: StartupPacket) {
        switch packet {
        case .sslRequest:
            if clientSSLRequest(ci) { return }
            // TLS is off (or a Unix socket): 'N' lets libpq go on in plain text.
            queueClient(ci, byte: Backend.sslRefused)
        case .gssEncRequest:
            // GSSAPI encryption is not offered: 'N' lets libpq go on in plain text.
            queueClient(ci, byte: Backend.sslRefused)
        case .cancel(let pid, let key):
            handleCancelRequest(processID: pid, secretKey: key)
            closeClient(ci, reason: "cancel request handled", notify: false, quiet: true)
        case .unsupportedVersion(let major, let minor):
            failClient(ci, code: SQLState.featureNotSupported,
                       message: "unsupported frontend protocol \(major).\(minor): server supports 3.0 to 3.0")
        case .startup(let msg):
            handleStartupMessage(ci, msg)
        }
    }

    /// application_name_add_host: "<application_name or app> - <client address>", PgBouncer's format
    /// (`set_appname`, `pga_details`): `127.0.0.1:5432`, `[::1]:5432`, and for the Unix socket
    /// `unix(<peer pid>@<host name>):<listen_port>` (`unix:<listen_port>` without a pid). Only at login:
    /// a later SET application_name is the client's own.
    private func addHostToApplicationName(_ ci: Int32, _ info: ClientInfo) {
        guard let t = tracked.index(of: "application_name") else { return }
        let details: String
        if clients[ci].isUnix {
            if let pid = Sockets.peerPID(clients[ci].io.fd), pid > 0 {
                if hostName == nil { hostName = Posix.hostName() }
                details = "unix(\(pid)@\(hostName ?? "")):\(config.listenPort)"
            } else {
                details = "unix:\(config.listenPort)"
            }
        } else {
            details = info.peer
        }
        let value = (info.params.values[t] ?? "app") + " - " + details
        info.params.values[t] = value
        info.applicationName = value
    }

    /// The `options` startup parameter, as PgBouncer 1.20+ takes it (`StartupOptions`): each
    /// `-c name=value` / `--name=value` is a startup parameter of its own, so a tracked one follows the
    /// client to its servers like any other; a name `ignore_startup_parameters` lists, or any name when
    /// it lists `options`, is dropped; any other name, or anything but such pairs, refuses the client
    /// with PgBouncer's words (FATAL 08P01). False when the client was refused.
    private func applyStartupOptions(_ ci: Int32, _ info: ClientInfo, _ options: String) -> Bool {
        guard case .pairs(let pairs) = StartupOptions.parse(options) else {
            failClient(ci, code: SQLState.protocolViolation, message: StartupOptions.unsupportedMessage)
            return false
        }
        for pair in pairs {
            let lname = pair.name.lowercased()
            if let t = tracked.lowered.firstIndex(of: lname) {
                info.params.values[t] = pair.value
                if lname == "application_name" { info.applicationName = pair.value }
            } else if ignoredStartupParameters.contains(lname) || ignoredStartupParameters.contains("options") {
                log.debug("C-\(clients[ci].id): ignoring startup parameter from options: \(pair.name)=\(pair.value)")
            } else {
                let name = StartupMessage.truncatedName(pair.name)
                log.warning("C-\(clients[ci].id): unsupported startup parameter in options: \(name)=\(StartupMessage.truncatedName(pair.value))")
                failClient(ci, code: SQLState.protocolViolation, message: "unsupported startup parameter in options: \(name)")
                return false
            }
        }
        return true
    }

    private func handleStartupMessage(_ ci: Int32, _ msg: StartupMessage) {
        guard let info = clients[ci].info, let login = info.login else { return }
        if clientTLSRefused(ci) { return }
        var user: String? = nil
        var database: String? = nil
        // `replication` first, as PgBouncer reads it: it decides how `options` is taken (Replication.swift).
        for (name, value) in msg.parameters where name == "replication" {
            guard let mode = ReplicationMode(startupValue: value) else {
                // PostgreSQL's answer (PgBouncer would quietly make it an ordinary session instead).
                failClient(ci, code: SQLState.invalidParameterValue,
                           message: "invalid value for parameter \"replication\": \"\(StartupMessage.truncatedName(value))\"")
                return
            }
            login.replication = mode
        }
        for (name, value) in msg.parameters {
            // Startup keys are nearly always lowercase already: skip the lowercasing copy then.
            let lname = name.utf8.contains(where: { $0 >= 65 && $0 <= 90 }) ? name.lowercased() : name
            switch lname {
            case "user": user = value
            case "database": database = value
            case "replication" where name == lname: continue  // read above (PostgreSQL's key is lowercase)
            case "options" where login.replication != .none:
                // Its own server gets it as it came: any setting, not only the tracked ones.
                login.replicationOptions = value
            case "options":
                if !applyStartupOptions(ci, info, value) { return }
            default:
                if let t = tracked.lowered.firstIndex(of: lname) {
                    info.params.values[t] = value
                    if lname == "application_name" { info.applicationName = value }
                } else if ignoredStartupParameters.contains(lname) {
                    continue
                } else if lname.hasPrefix("_pq_.") {
                    continue
                } else {
                    // Echoed (and logged) at most NAMEDATALEN - 1 bytes long, as PostgreSQL truncates names.
                    failClient(ci, code: SQLState.protocolViolation,
                               message: "unsupported startup parameter: \(StartupMessage.truncatedName(name))")
                    return
                }
            }
        }
        if config.applicationNameAddHost { addHostToApplicationName(ci, info) }
        guard let user, !user.isEmpty else {
            failClient(ci, code: SQLState.invalidAuthorizationSpecification,
                       message: "no PostgreSQL user name specified in startup packet")
            return
        }
        let db = (database?.isEmpty ?? true) ? user : database!
        info.user = user
        info.database = db
        info.protocolMinor = msg.minorVersion
        if config.logConnections {
            // PgBouncer's line.
            log.info("\(clientLogPrefix(ci)) login attempt: db=\(db) user=\(user) tls=\(tlsDescription(client: ci)) "
                     + "replication=\(login.replication.startupValue)")
        }
        admitAndAuthenticate(ci, msg)
    }

    /// After the startup packet: max_client_conn, protocol negotiation, then the admin console or
    /// authentication. A client accepted over max_client_conn (`adoptAcceptedClient`) and still over
    /// it gets one more chance at the next janitor tick (`ClientLoginState.deferredStartup`): the
    /// client whose place it would take may have closed on another worker just before this one
    /// connected, and that worker may not have released the place yet. Then only the admin console
    /// gets in over the limit.
    func admitAndAuthenticate(_ ci: Int32, _ msg: StartupMessage) {
        guard let info = clients[ci].info, let login = info.login else { return }
        let db = info.database
        if login.overLimit && !admitLate(ci) {
            guard db == "pgbouncer" else {
                if login.deferredStartup == nil {
                    login.deferredStartup = msg
                    login.deferredAt = now
                    return
                }
                failClient(ci, code: SQLState.tooManyConnections, message: "no more connections allowed (max_client_conn)")
                return
            }
            overLimitLogin(ci, counted: true)
        }
        login.deferredStartup = nil
        if msg.minorVersion > 0 || !msg.unrecognizedProtocolOptions.isEmpty {
            scratch.clear()
            Backend.negotiateProtocolVersion(into: &scratch, newestMinor: 0, unrecognized: msg.unrecognizedProtocolOptions)
            clients[ci].io.out.append(scratch)
        }
        if Worker.adminDatabases.contains(db) {
            adminLogin(ci)
            return
        }
        // Nothing per user (pool, counters, stats rows) before authentication: the client keeps its
        // database entry and the pool is found in `authenticated`. An unknown or disabled database is
        // told only then too, as PgBouncer does, so that it cannot be probed without a password.
        info.login?.entry = config.database(named: db)
        startAuthentication(ci)
    }

    // MARK: Authentication

    func startAuthentication(_ ci: Int32) {
        guard let info = clients[ci].info else { return }
        setClientState(ci, .auth)
        var authType = config.authType
        if authType == .hba {
            // The first matching auth_hba_file line's method; nil: refused, or settled there (peer, cert).
            guard let chosen = hbaAuthType(ci) else { return }
            authType = chosen
        }
        let secret = userSecret(info.user)
        // A user missing from auth_file is looked up with auth_query first (AuthQuery.swift).
        if secret == nil && startAuthQueryIfNeeded(ci, authType: authType) { return }
        requestCredentials(ci, authType: authType, secret: secret)
    }

    /// Asks for the password in the form `authType` and the user's secret call for (trust: lets a known
    /// user in). A user with no secret (unknown, or not found by auth_query) gets the same request as a
    /// known one and fails at the end with the wrong-password error; `authQueryFound`: auth_query found
    /// the user (it may still have no password).
    func requestCredentials(_ ci: Int32, authType: AuthType, secret given: PasswordSecret?, authQueryFound: Bool = false) {
        guard let info = clients[ci].info, let login = info.login else { return }
        // An empty password never authenticates (PostgreSQL and PgBouncer refuse it); trust still
        // counts the user as known.
        let secret = authType != .trust && given == .plain("") ? nil : given
        login.secret = secret
        login.authQueryFound = authQueryFound
        scratch.clear()
        switch authType {
        case .any:
            authenticated(ci)
            return
        case .trust:
            // As PgBouncer: trust lets in users of auth_file (or found by auth_query) only.
            guard given != nil || authQueryFound else {
                let askedAuthQuery = login.entry?.authUser ?? config.authUser != nil
                log.warning("C-\(clients[ci].id): trust authentication failed for user \"\(info.user)\" (not in auth_file"
                            + (askedAuthQuery ? " nor found by auth_query)" : ")"))
                // PgBouncer's texts and SQLSTATE (08P01, its default for pooler errors): after an
                // auth_query that found nothing it says "no such user" (trust hides no name anyway:
                // a known one gets in without a password).
                failClient(ci, code: SQLState.protocolViolation,
                           message: askedAuthQuery ? "no such user" : "\"trust\" authentication failed")
                return
            }
            authenticated(ci)
            return
        case .plain:
            login.auth = secret.map { .cleartext(secret: $0) } ?? .failing
            Backend.authenticationCleartextPassword(into: &scratch)
        case .md5, .scramSHA256:
            // md5 asks for SCRAM when the secret is SCRAM (as PostgreSQL and PgBouncer do); scram-sha-256
            // always asks for SCRAM, even when the secret is an MD5 hash, which then cannot succeed
            // (no downgrade to MD5). Unknown users get the request of the method's usual case.
            var useSCRAM = authType == .scramSHA256
            if case .scram? = secret { useSCRAM = true }
            if useSCRAM {
                let s: ScramSecret
                switch secret {
                case .scram(let sc)?: s = sc
                case .plain(let pw)?: s = clientSecrets.secret(for: info.user, password: pw)
                case .md5?:
                    login.mockReason = "the user's secret is an MD5 hash, which cannot do SCRAM"
                    s = ScramSecret.mock(user: info.user, processKey: mockAuthKey, iterations: clientSecrets.iterations)
                case nil:
                    login.mockReason = authQueryFound ? "the user has no password" : "no such user"
                    s = ScramSecret.mock(user: info.user, processKey: mockAuthKey, iterations: clientSecrets.iterations)
                }
                // On TLS, -PLUS (tls-server-end-point channel binding) is offered first, as PostgreSQL does.
                let binding = scramChannelBinding(ci)
                login.auth = .scram(ScramServerExchange(secret: s, nonceBytes: random.bytes(ScramServerExchange.rawNonceLength),
                                                        channelBinding: binding), sawClientFirst: false)
                Backend.authenticationSASL(into: &scratch, mechanisms: binding == nil ? ["SCRAM-SHA-256"]
                                           : ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
            } else {
                let salt = random.bytes(4)
                login.auth = secret.map { .md5(salt: salt, secret: $0) } ?? .failing
                Backend.authenticationMD5Password(into: &scratch, salt: salt)
            }
        case .cert:
            certAuthenticate(ci)
            return
        default:
            failClient(ci, code: SQLState.featureNotSupported,
                       message: "auth_type \(authType.rawValue) is not supported by pgswift yet")
            return
        }
        clients[ci].io.out.append(scratch)
    }

    private func handlePasswordMessage(_ ci: Int32, _ body: [UInt8]) {
        guard let info = clients[ci].info, let login = info.login else { return }
        switch login.auth {
        case .none:
            failClient(ci, code: SQLState.protocolViolation, message: "unexpected password message")
        case .failing:
            passwordFailed(ci, reason: login.authQueryFound ? "the user has no password" : "no such user")
        case .cleartext(let secret):
            let given = body.withUnsafeBytes { Decode.passwordCleartext($0) } ?? ""
            if verifyCleartext(user: info.user, given: given, secret: secret) {
                authenticated(ci)
            } else {
                passwordFailed(ci, reason: "wrong password")
            }
        case .md5(let salt, let secret):
            let given = body.withUnsafeBytes { Decode.passwordCleartext($0) } ?? ""
            let stored: String
            switch secret {
            case .plain(let pw): stored = MD5Password.hash(user: info.user, password: pw)
            case .md5(let h): stored = h
            case .scram: passwordFailed(ci, reason: "md5 response for a SCRAM secret"); return
            }
            if MD5Password.verify(clientResponse: given, storedHash: stored, salt: salt) {
                authenticated(ci)
            } else {
                passwordFailed(ci, reason: "wrong password")
            }
        case .scram(var exchange, let sawClientFirst):
            if !sawClientFirst {
                guard let initial = body.withUnsafeBytes({ SASLInitialResponse.parse($0) }),
                      initial.mechanism == ScramServerExchange.mechanism
                        || (initial.mechanism == ScramServerExchange.mechanismPlus && exchange.offersChannelBinding) else {
                    failClient(ci, code: SQLState.protocolViolation, message: PostgresAuthMessages.invalidSASLMechanism)
                    return
                }
                switch exchange.receiveClientFirst(initial.data, mechanism: initial.mechanism) {
                case .success(let serverFirst):
                    login.auth = .scram(exchange, sawClientFirst: true)
                    scratch.clear()
                    Backend.authenticationSASLContinue(into: &scratch, data: serverFirst)
                    clients[ci].io.out.append(scratch)
                case .failure(let f):
                    log.warning("C-\(clients[ci].id): SCRAM client-first rejected: \(f.reason)")
                    failClient(ci, code: SQLState.protocolViolation, message: PostgresAuthMessages.saslFailed)
                }
            } else {
                switch exchange.receiveClientFinal(body) {
                case .success(let serverFinal):
                    login.auth = .none
                    // Kept for the pool, which gets it once `authenticated` has found it.
                    if let key = exchange.recoveredClientKey, case .scram? = login.secret {
                        login.scramClientKey = key
                    }
                    scratch.clear()
                    Backend.authenticationSASLFinal(into: &scratch, data: serverFinal)
                    clients[ci].io.out.append(scratch)
                    authenticated(ci)
                case .failure(let f):
                    passwordFailed(ci, reason: login.mockReason ?? f.reason, sasl: true)
                }
            }
        }
    }

    /// The auth_file entry of a user, parsed once per user (a SCRAM secret costs base64 decoding and
    /// splitting that showed at the top of the login profile); forgotten on reload.
    func userSecret(_ user: String) -> PasswordSecret? {
        if let s = secretCache[user] { return s }
        guard let raw = userlist.password(for: user) else { return nil }
        let s = PasswordSecret(parsing: raw)
        if secretCache.count > 100_000 { secretCache.removeAll() }
        secretCache[user] = s
        return s
    }

    private func verifyCleartext(user: String, given: String, secret: PasswordSecret) -> Bool {
        switch secret {
        case .plain(let pw):
            return Crypto.constantTimeEqual(Array(pw.utf8), Array(given.utf8))
        case .md5(let h):
            return Crypto.constantTimeEqual(Array(MD5Password.hash(user: user, password: given).utf8), Array(h.utf8))
        case .scram(let s):
            let keys = scramCache.keys(password: given, salt: s.salt, iterations: s.iterations)
            return Crypto.constantTimeEqual(keys.storedKey, s.storedKey) && Crypto.constantTimeEqual(keys.serverKey, s.serverKey)
        }
    }

    /// The password did not match (or could not have: unknown user, mock exchange). The text is
    /// PostgreSQL's for a password (which contains PgBouncer's `password authentication failed`) and
    /// PgBouncer's `SASL authentication failed` for a SCRAM exchange (`sasl`); the SQLSTATE stays
    /// PostgreSQL's 28P01 (PgBouncer says 08P01 for both), which drivers read as an auth failure.
    private func passwordFailed(_ ci: Int32, reason: String, sasl: Bool = false) {
        let user = clients[ci].info?.user ?? ""
        log.warning("C-\(clients[ci].id): \(sasl ? "SASL" : "password") authentication failed for user \"\(user)\" (\(reason))")
        failClient(ci, code: SQLState.invalidPassword,
                   message: sasl ? PostgresAuthMessages.saslFailed : PostgresAuthMessages.passwordFailed(user: user))
    }

    /// The client proved who it is: only now is its database told if unknown or disabled, and its pool
    /// found (created on first use) and given what the login learnt (auth_query's secret, the SCRAM
    /// ClientKey). Finish now if the pool knows its welcome parameters, else wait for a server login.
    /// The state change that follows drops the login state (`setClientState`).
    func authenticated(_ ci: Int32) {
        if clients[ci].admin != .none { adminAuthenticated(ci); return }
        guard let info = clients[ci].info, let login = info.login else { return }
        let entry = login.entry
        if entry != nil && isDisabled(info.database) {
            // PgBouncer's words (finish_client_login), FATAL 08P01.
            failClient(ci, code: SQLState.protocolViolation, message: "database \"\(info.database)\" is disabled")
            return
        }
        if serviceStopping && entry != nil {
            // The service is stopping (ShutdownDrain.swift): PgBouncer's finish_client_login refusal.
            sendClientError(ci, Worker.poolerShuttingDown, close: true)
            return
        }
        // max_db_client_connections / max_user_client_connections (ClientLimits.swift).
        if entry != nil, let refusal = admitToClientLimits(ci, entry: entry, exempt: false) {
            failClient(ci, code: SQLState.protocolViolation, message: refusal)
            return
        }
        // A database with a forced user= has one pool, whoever the client is (PgBouncer's get_pool with
        // the forced credentials): its pool_size bounds the server connections of all its clients.
        guard let entry, let pi = pool(database: info.database, user: entry.user ?? info.user) else {
            if config.logConnections { log.info("\(clientLogPrefix(ci)) login failed: db=\(info.database) user=\(info.user)") }
            failClient(ci, code: SQLState.invalidCatalogName, message: "no such database: \(info.database)")
            return
        }
        clients[ci].pool = pi
        let p = Int(pi)
        pools[p].clientCount += 1
        // What the client's login learnt about its own user serves only a pool that logs in as that user
        // (PgBouncer refuses SCRAM key data for a forced user).
        if entry.user == nil || entry.user == info.user {
            if let s = login.authQuerySecret { adoptAuthQuerySecret(s, pool: pi) }
            if let key = login.scramClientKey { pools[p].scramClientKey = key }
        }
        if login.replication != .none {
            // Its own server connection, whatever the pool knows (Replication.swift).
            startReplication(ci)
            return
        }
        // Known here, or learnt by another worker's pool (SharedWelcome.swift): answered at once.
        if pools[p].welcome != nil || adoptSharedWelcome(p) {
            finishLogin(ci)
            return
        }
        if pools[p].allDown && config.failFast {
            // fail_fast (pgswift's extension): no server can log in to learn the welcome while the
            // health check says every host is down. Without it the client waits, as in PgBouncer.
            sendClientError(ci, downError(p), close: true)
            return
        }
        if pools[p].loginRefused, let err = cachedLoginFailure(p) {
            // PostgreSQL refused this pool's login and server_login_retry has not passed: PgBouncer
            // would park the client until its next attempt fails the same way; it gets the cached
            // error now instead (no login attempt, no wait).
            sendClientError(ci, err, close: true)
            return
        }
        setClientState(ci, .waitWelcome)
        if pools[p].connectingCount == 0 { launchWelcome(p) }
        flushClient(ci)
    }

    /// AuthenticationOk, the welcome ParameterStatus set, our BackendKeyData, ReadyForQuery.
    func finishLogin(_ ci: Int32) {
        guard let info = clients[ci].info else { return }
        let p = Int(clients[ci].pool)
        scratch.clear()
        Backend.authenticationOk(into: &scratch)
        if let welcome = pools[p].welcome {
            for i in 0..<welcome.count {
                let t = pools[p].welcomeTrackedIndex[i]
                let v = t >= 0 ? info.params.values[t] ?? welcome[i].1 : welcome[i].1
                Backend.parameterStatus(into: &scratch, name: welcome[i].0, value: v)
            }
        }
        // Tracked parameters the server did not report still echo the client's own values.
        for (t, name) in tracked.names.enumerated() {
            if let own = info.params.values[t], welcomeValue(p, t) == nil {
                Backend.parameterStatus(into: &scratch, name: name, value: own)
            }
        }
        Backend.backendKeyData(into: &scratch, processID: clientProcessID(ci), secretKey: clients[ci].cancelKey)
        Backend.readyForQuery(into: &scratch, status: UInt8(ascii: "I"))
        clients[ci].io.out.append(scratch)
        setClientState(ci, .idle)
        flushClient(ci)
        if clients[ci].state == .idle && clients[ci].io.input.hasUnscanned {
            clientData(ci)
        }
    }

    /// Our BackendKeyData process id (`CancelProcessID`: the worker slot above the client's table
    /// index; with peering, `PeerCancelKey`: the peer id and the slot), so a cancel that lands on any
    /// worker, or on a peer, finds its owner.
    func clientProcessID(_ ci: Int32) -> Int32 {
        peerID > 0 ? PeerCancelKey.processID(slot: slot, peer: peerID) : CancelProcessID(slot: slot, index: ci).raw
    }

    /// The pool's logins are failing and no new attempt may start yet (server_login_retry has not passed
    /// since the last one): PgBouncer's launch_new_connection throttle.
    func loginRetryPending(_ p: Int) -> Bool {
        LoginRetry.pending(failing: pools[p].loginError != nil, lastConnectAt: pools[p].lastConnectAt, now: now,
                           retryNanos: Clock.nanos(seconds: config.serverLoginRetry))
    }

    /// What a new client of a failing pool gets instead of a wait (PgBouncer's check_fast_fail): the
    /// cached error, while no new login may be attempted and the pool has no server at all (none
    /// logged in, none being opened). nil: let the client wait.
    func cachedLoginFailure(_ p: Int) -> ErrorFields? {
        guard let e = pools[p].loginError, pools[p].serverCount == 0, loginRetryPending(p) else { return nil }
        return LoginRetry.cachedError(e)
    }
}
