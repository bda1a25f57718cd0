// auth_query + auth_user: a user missing from auth_file is looked up on the server, without blocking the loop.
//
// As in PgBouncer, the query runs on a server connection of the pool (database, auth_user), taken
// like any pooled server and given back afterwards. The client waits in the `auth` state (nothing
// was asked of it yet); when the row arrives it is asked for its password as if the hash had been
// in auth_file. Answers are cached per worker for `[pgswift] auth_query_cache_ttl` seconds.
//
// Before authentication anyone can send names, so lookups of names auth_query has never found are
// rate-limited per worker (a token bucket: `AuthQueryState.ratePerSecond`, burst `burst`), with one
// lookup in flight per name; over the limit the client is treated as an unknown user (the same
// exchange, the same failure). Names found before (even past the TTL) are not limited.
import Shared

/// Per-worker auth_query state.
struct AuthQueryState {
    struct Cached {
        /// nil: the user does not exist or has no usable password.
        var secret: PasswordSecret?
        /// The user exists (maybe without a password).
        var found: Bool
        var at: Int64
    }

    /// Lookups of names never found: at most `ratePerSecond` on average, `burst` at once, per worker.
    static let ratePerSecond = 10
    static let burst = 20
    static let maxCached = 100_000
    /// Answers for names never found are dropped past this many (they cost a lookup each, which the
    /// rate limit bounds; found names are bounded by the real users).
    static let maxNotFound = 10_000
    var tokens = Double(burst)
    var refilledAt: Int64 = 0
    /// Keys (database + NUL + user) auth_query found at least once: exempt from the rate limit.
    var everFound: Set<String> = []
    var notFoundCount = 0
    /// Lookups refused by the rate limit since the worker started (the log and tests read it).
    var limited: UInt64 = 0

    /// A client waiting for a lookup; `id` tells a reused table slot apart.
    struct Waiter {
        var client: Int32
        var id: UInt64
        var authType: AuthType
    }

    struct Lookup {
        /// Database + NUL + user: one lookup serves every client waiting for the same answer.
        var key: String
        var user: String
        /// The pool (auth database, auth_user) whose server runs the query, and the query.
        var pool: Int32
        var query: String
        var waiters: [Waiter]
        /// The server running it (-1: waiting for one).
        var server: Int32 = -1
        var reply = AuthQueryReply()
        var since: Int64
    }

    var cache: [String: Cached] = [:]
    var lookups: [Lookup] = []
    /// What auth_query returned for a pool's user: server logins of that pool use it.
    var poolSecrets: [Int32: PasswordSecret] = [:]
    /// Queries sent to servers since the worker started (the log and tests read it).
    var queriesRun: UInt64 = 0
}

extension Worker {
    /// auth_query's answer for a pool's own user (not for a database's forced `user=`).
    func authQuerySecret(pool p: Int) -> PasswordSecret? {
        guard pools[p].entry.user == nil else { return nil }
        return authQuery.poolSecrets[Int32(p)]
    }

    /// Where and what a client's lookup runs, as PgBouncer 1.25 picks it: the database's auth_user,
    /// auth_query and auth_dbname, else the global ones; no auth_dbname: the client's own database.
    /// An admin console client (no entry) uses the global ones, and only with an auth_dbname (no
    /// query can run in the console). nil: no lookup for this client.
    private func authQueryPlan(_ ci: Int32) -> (user: String, query: String, database: String?)? {
        guard let info = clients[ci].info else { return nil }
        if clients[ci].admin != .none {
            guard let user = config.authUser, let database = config.authDbname else { return nil }
            return (user, config.authQuery, database)
        }
        // An unknown database runs no query (PgBouncer's fake database): the login fails either way.
        guard let entry = info.login?.entry, let user = entry.authUser ?? config.authUser else { return nil }
        return (user, entry.authQuery ?? config.authQuery, entry.authDbname ?? config.authDbname)
    }

    /// The auth_dbname a lookup names can run queries: configured (a `*` entry counts), not an admin
    /// name, not disabled. Else the client gets PgBouncer's error and false.
    private func authDatabaseUsable(_ ci: Int32, _ name: String) -> Bool {
        if let why = Config.reservedAuthDatabaseReason(name) {
            log.error("C-\(clients[ci].id): \(why)")
            failClient(ci, code: SQLState.protocolViolation, message: "bouncer config error")
            return false
        }
        if config.database(named: name) == nil {
            log.error("C-\(clients[ci].id): authentication database \"\(name)\" is not configured")
            failClient(ci, code: SQLState.protocolViolation, message: "bouncer config error")
            return false
        }
        if isDisabled(name) {
            failClient(ci, code: SQLState.protocolViolation, message: "authentication database \"\(name)\" is disabled")
            return false
        }
        return true
    }

    /// Starts (or joins) a lookup when the client's user is not in auth_file, an auth_user is set for
    /// its (known) database and the method needs the user (a password, or trust). True: the client now
    /// waits (or was answered from the cache, refused by the rate limit, or failed for a bad
    /// auth_dbname); false: go on without auth_query.
    func startAuthQueryIfNeeded(_ ci: Int32, authType: AuthType) -> Bool {
        switch authType {
        case .plain, .md5, .scramSHA256, .trust: break
        default: return false
        }
        guard let info = clients[ci].info, let plan = authQueryPlan(ci) else { return false }
        let authUser = plan.user
        if let name = plan.database, !authDatabaseUsable(ci, name) { return true }
        let database = info.database
        let key = database + "\u{0}" + info.user
        let ttl = Clock.nanos(seconds: config.authQueryCacheTTL)
        if let cached = authQuery.cache[key] {
            if ttl > 0 && now - cached.at < ttl {
                log.debug("C-\(clients[ci].id): auth_query answer for \"\(info.user)\" taken from the cache")
                info.login?.authQuerySecret = cached.secret
                requestCredentials(ci, authType: authType, secret: cached.secret, authQueryFound: cached.found)
                return true
            }
            authQuery.cache[key] = nil
            if !cached.found { authQuery.notFoundCount -= 1 }
        }
        let waiter = AuthQueryState.Waiter(client: ci, id: clients[ci].id, authType: authType)
        if let li = authQuery.lookups.firstIndex(where: { $0.key == key }) {
            authQuery.lookups[li].waiters.append(waiter)
            return true
        }
        if !authQuery.everFound.contains(key) && !takeAuthQueryToken() {
            authQuery.limited &+= 1
            log.warning("C-\(clients[ci].id): auth_query for \"\(info.user)\" not run: more than "
                        + "\(AuthQueryState.ratePerSecond) lookups per second of unknown names; treated as unknown")
            requestCredentials(ci, authType: authType, secret: nil)
            return true
        }
        guard let ap = pool(database: plan.database ?? database, user: authUser) else { return false }
        authQuery.lookups.append(AuthQueryState.Lookup(key: key, user: info.user, pool: ap, query: plan.query,
                                                       waiters: [waiter], since: now))
        hot.pointee.authQueriesWaiting += 1
        pumpAuthQueries()
        return true
    }

    /// One token of the per-worker bucket, refilled at `ratePerSecond` up to `burst`.
    private func takeAuthQueryToken() -> Bool {
        let rate = Double(AuthQueryState.ratePerSecond)
        let elapsed = authQuery.refilledAt == 0 ? 0 : Double(max(0, now - authQuery.refilledAt)) / 1e9
        authQuery.tokens = min(Double(AuthQueryState.burst), authQuery.tokens + elapsed * rate)
        authQuery.refilledAt = now
        if authQuery.tokens < 1 { return false }
        authQuery.tokens -= 1
        return true
    }

    /// Gives waiting lookups an idle server of their pool, opens one where none is coming, and fails
    /// the lookups of a pool whose server login just failed.
    func pumpAuthQueries() {
        var li = 0
        while li < authQuery.lookups.count {
            let l = authQuery.lookups[li]
            if l.server >= 0 || hot.pointee.paused {
                li += 1
                continue
            }
            let ap = Int(l.pool)
            let si = pools[ap].idle.head
            if si >= 0 {
                runAuthQuery(li, on: si)  // leaves the idle list
                li += 1
                continue
            }
            if let err = cachedLoginFailure(ap) {
                authQuery.lookups.remove(at: li)
                hot.pointee.authQueriesWaiting -= 1
                log.warning("auth_query for \"\(l.user)\": cannot log in as \(pools[ap].serverUser): \(err.message)")
                failWaiters(l, err)
                continue
            }
            let wanted = authQuery.lookups.reduce(0) { $0 + ($1.pool == l.pool && $1.server < 0 ? 1 : 0) }
            if pools[ap].connectingCount < wanted && pools[ap].serverCount < pools[ap].limit
                && (!pools[ap].limits.grouped || groupRoom(ap)) {  // service-wide limits (ServiceLimits.swift)
                launchServer(l.pool)
            }
            li += 1
        }
    }

    /// serverIdle's hook: a server coming free runs a waiting lookup of its pool first.
    func authQueryTakes(_ si: Int32) -> Bool {
        guard !hot.pointee.paused, let li = authQuery.lookups.firstIndex(where: { $0.server < 0 && $0.pool == servers[si].pool }) else {
            return false
        }
        runAuthQuery(li, on: si)
        return true
    }

    private func runAuthQuery(_ li: Int, on si: Int32) {
        hot.pointee.authQueriesWaiting -= 1
        authQuery.queriesRun &+= 1
        authQuery.lookups[li].server = si
        authQuery.lookups[li].since = now
        setServerState(si, .authQuery)
        let user = authQuery.lookups[li].user
        log.debug("S-\(servers[si].id): running auth_query for user \"\(user)\" (lookup \(authQuery.queriesRun))")
        scratch.clear()
        AuthQueryReply.request(into: &scratch, query: authQuery.lookups[li].query, user: user)
        servers[si].io.out.append(scratch)
        flushServer(si)
    }

    /// Reads the reply of the query a server runs for us.
    func authQueryServerEvent(_ si: Int32) {
        if !servers[si].io.out.isEmpty && !flushServer(si) { return }
        while servers[si].state == .authQuery,
              let (type, body) = nextHeldMessage(server: si, tooLarge: "auth_query reply too large",
                  invalid: { closeServer(si, reason: "invalid message length \($0.length) in the auth_query reply") },
                  onClosed: { closeServer(si, reason: "server closed the connection during auth_query") }) {
            guard let li = authQuery.lookups.firstIndex(where: { $0.server == si }) else {
                closeServer(si, reason: "auth_query reply without a lookup")
                return
            }
            let step = authQuery.lookups[li].reply.receive(type: type, body: body)
            servers[si].io.consume(Wire.headerSize + body.count, buffers)
            switch step {
            case .more:
                continue
            case .protocolError(let reason):
                closeServer(si, reason: reason)
                return
            case .done(let outcome, let status):
                servers[si].txStatus = status
                finishAuthQuery(li, si: si, outcome: outcome)
                return
            }
        }
    }

    private func finishAuthQuery(_ li: Int, si: Int32, outcome: AuthQueryReply.Outcome) {
        let l = authQuery.lookups.remove(at: li)
        // The server goes back first: it may already serve the next lookup or a queued client.
        if servers[si].txStatus == UInt8(ascii: "I") {
            serverIdle(si)
        } else {
            closeServer(si, reason: "still in a transaction after auth_query")
        }
        let secret: PasswordSecret?
        let found: Bool
        switch outcome {
        case .found(_, let password):
            secret = password.map { PasswordSecret(parsing: $0) }
            found = true
            if secret == nil { log.info("auth_query: user \"\(l.user)\" has no password; its logins will fail") }
        case .notFound:
            secret = nil
            found = false
            log.info("auth_query: no user \"\(l.user)\"")
        case .failed(let reason):
            log.warning("auth_query for user \"\(l.user)\": \(reason)")
            failWaiters(l, Self.authQueryFailure)
            return
        }
        if authQuery.cache.count >= AuthQueryState.maxCached || authQuery.notFoundCount >= AuthQueryState.maxNotFound {
            authQuery.cache.removeAll()
            authQuery.notFoundCount = 0
        }
        if found {
            if authQuery.everFound.count >= AuthQueryState.maxCached { authQuery.everFound.removeAll() }
            authQuery.everFound.insert(l.key)
        } else {
            authQuery.notFoundCount += 1
        }
        if let old = authQuery.cache.updateValue(AuthQueryState.Cached(secret: secret, found: found, at: now), forKey: l.key),
           !old.found {
            authQuery.notFoundCount -= 1
        }
        for w in l.waiters where isWaiting(w) {
            clients[w.client].info?.login?.authQuerySecret = secret
            requestCredentials(w.client, authType: w.authType, secret: secret, authQueryFound: found)
            if clients[w.client].state != .free { flushClient(w.client) }
        }
    }

    /// `authenticated`'s hook: the pool of a client that logged in with auth_query's secret uses it
    /// for its server logins.
    func adoptAuthQuerySecret(_ secret: PasswordSecret, pool p: Int32) {
        authQuery.poolSecrets[p] = secret
    }

    /// The client is still there, still logging in, and was not asked for anything yet.
    private func isWaiting(_ w: AuthQueryState.Waiter) -> Bool {
        guard clients[w.client].state == .auth, clients[w.client].id == w.id,
              let login = clients[w.client].info?.login, case .none = login.auth else { return false }
        return true
    }

    private func failWaiters(_ l: AuthQueryState.Lookup, _ fields: ErrorFields) {
        var f = fields
        f.severity = "FATAL"
        for w in l.waiters where isWaiting(w) { sendClientError(w.client, f, close: true) }
    }

    /// closeServer's hook: the server running a lookup went away, so its clients cannot log in now.
    func authQueryServerClosed(_ si: Int32, reason: String) {
        guard let li = authQuery.lookups.firstIndex(where: { $0.server == si }) else { return }
        let l = authQuery.lookups.remove(at: li)
        log.warning("auth_query for user \"\(l.user)\" failed: \(reason)")
        failWaiters(l, Self.authQueryFailure)
    }

    /// What a client whose lookup failed gets (the reason is in the log): PgBouncer's words for a
    /// client logging in whose auth_query connection went away (unlink_server).
    static let authQueryFailure = ErrorFields(severity: "FATAL", code: SQLState.protocolViolation,
                                              message: "bouncer config error")

    /// From the janitor: drops lookups nobody waits for, bounds a query's time, retries launches.
    func authQueryTick() {
        if authQuery.lookups.isEmpty { return }
        let limit = Clock.nanos(seconds: config.clientLoginTimeout > 0 ? config.clientLoginTimeout : 60)
        var li = 0
        while li < authQuery.lookups.count {
            authQuery.lookups[li].waiters.removeAll { !isWaiting($0) }
            let l = authQuery.lookups[li]
            if l.server < 0 && l.waiters.isEmpty {
                authQuery.lookups.remove(at: li)
                hot.pointee.authQueriesWaiting -= 1
                continue
            }
            if l.server >= 0 && now - l.since > limit {
                // Closing it fails the waiters and removes the lookup (authQueryServerClosed).
                closeServer(l.server, reason: "auth_query took longer than \(Int(config.clientLoginTimeout)) s")
                continue
            }
            li += 1
        }
        pumpAuthQueries()
    }
}
