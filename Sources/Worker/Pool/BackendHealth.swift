// Backend health in a worker: which host a new server connection goes to, fail_fast while a database is down,
// draining connections to a host that went down or moved, and connect failures reported to the supervisor.
import Shared

/// What the supervisor last said about one backend host ("host:port").
struct BackendView {
    var flags: BackendFlags
    /// For a host name: the addresses the supervisor resolved (workers never resolve).
    var addresses: [SocketAddress]
}

/// Per-worker health knowledge (no per-message cost: read only when a server connection is opened).
struct WorkerHealth {
    var backends: [String: BackendView] = [:]
    /// Hosts this worker could not connect to, avoided until the time given (or until the supervisor speaks).
    var suspectUntil: [String: Int64] = [:]
    /// Backoff of this worker's own failed connects, per host.
    var hostBackoff: [String: Backoff] = [:]
}

extension Worker {
    /// At most this many server connections of one pool are being opened at once (no thundering herd
    /// when a host comes back with many clients waiting).
    static let maxConcurrentConnectsPerPool = 8

    /// (key, host, port) of every host of a database entry, in the entry's order.
    func backendHosts(_ entry: DatabaseEntry) -> [(key: String, host: String, port: Int)] {
        let hosts = entry.hosts.isEmpty ? [""] : entry.hosts
        return hosts.enumerated().map { (i, raw) in
            let port = entry.port(forHostAt: i)
            let host = raw.isEmpty ? "/var/run/postgresql" : raw
            return ("\(host):\(port)", host, port)
        }
    }

    /// Whether a host may get a new connection for this entry now: not down, not suspected by this
    /// worker, and of the role target_session_attrs asks for.
    func hostUsable(_ key: String, _ entry: DatabaseEntry) -> Bool {
        let view = health.backends[key]
        if let v = view, v.flags.contains(.known), !v.flags.contains(.up) { return false }
        if let until = health.suspectUntil[key], now < until { return false }
        if entry.targetSessionAttrs != .any && entry.targetSessionAttrs != .preferStandby {
            return entry.targetSessionAttrs.accepts(view?.flags.role)
        }
        return true
    }

    /// Every host of the pool's database is known down (or of the wrong role): fail fast.
    func computeAllDown(_ entry: DatabaseEntry) -> Bool {
        for h in backendHosts(entry) {
            guard let v = health.backends[h.key], v.flags.contains(.known) else { return false }
            if v.flags.contains(.up) && (entry.targetSessionAttrs == .any || entry.targetSessionAttrs == .preferStandby
                                          || entry.targetSessionAttrs.accepts(v.flags.role)) {
                return false
            }
        }
        return true
    }

    func downError(_ pi: Int) -> ErrorFields {
        let entry = pools[pi].entry
        let keys = backendHosts(entry).map { $0.key }.joined(separator: ", ")
        let what = entry.targetSessionAttrs == .any ? "down" : "down or not \(entry.targetSessionAttrs.rawValue)"
        return ErrorFields(severity: "FATAL", code: SQLState.connectionFailure,
                           message: "pgswift cannot connect to server: every host of database \"\(pools[pi].database)\" is \(what) (\(keys))")
    }

    /// Where the next server connection of pool `p` goes. nil: nowhere now (clients wait, or were failed).
    func pickBackend(_ p: Int32) -> (address: SocketAddress, key: String)? {
        let pi = Int(p)
        let entry = pools[pi].entry
        var candidates: [(key: String, addresses: [SocketAddress], standby: Bool)] = []
        func addCandidates(_ take: (String) -> Bool) {
            for h in backendHosts(entry) where take(h.key) {
                let addresses: [SocketAddress]
                if DatabaseEntry.isUnixSocket(h.host) {
                    addresses = SocketAddress.unix(path: "\(h.host)/.s.PGSQL.\(h.port)").map { [$0] } ?? []
                } else if let a = SocketAddress.numeric(host: h.host, port: h.port) {
                    addresses = [a]
                } else {
                    addresses = health.backends[h.key]?.addresses ?? []
                }
                if addresses.isEmpty { continue }
                candidates.append((h.key, addresses, health.backends[h.key]?.flags.role?.inRecovery ?? false))
            }
        }
        addCandidates { hostUsable($0, entry) }
        if candidates.isEmpty && config.failFast && pools[pi].allDown {
            failPoolClients(pi, downError(pi))
            return nil
        }
        if candidates.isEmpty && !config.failFast {
            // Without fail_fast the health check only steers: with no host it calls usable, connects go on
            // as in PgBouncer (every server_login_retry while they fail), to any host not known to be of
            // the wrong role.
            addCandidates { key in
                guard let v = health.backends[key], v.flags.contains(.known), v.flags.contains(.up) else { return true }
                return entry.targetSessionAttrs == .any || entry.targetSessionAttrs == .preferStandby
                    || entry.targetSessionAttrs.accepts(v.flags.role)
            }
        }
        if hot.pointee.routing && poolRoutes(pi) { routeCandidates(p, &candidates) }
        if entry.targetSessionAttrs == .preferStandby, candidates.contains(where: { $0.standby }) {
            candidates.removeAll { !$0.standby }
        }
        guard !candidates.isEmpty else {
            log.debug("pool \(pools[pi].database)/\(pools[pi].user): no usable host yet; clients wait")
            return nil
        }
        let choice: Int
        switch entry.loadBalanceHosts {
        case .disable:
            choice = 0
        case .roundRobin:
            choice = pools[pi].nextAddress % candidates.count
        case .leastConnections:
            var counts = [Int](repeating: 0, count: candidates.count)
            var si: Int32 = 0
            let cap = Int32(servers.capacity)
            while si < cap {
                if servers[si].state != .free && servers[si].pool == p, let k = servers[si].info?.hostKey,
                   let c = candidates.firstIndex(where: { $0.key == k }) {
                    counts[c] += 1
                }
                si += 1
            }
            var best = 0
            for c in counts.indices where counts[c] < counts[best] { best = c }
            choice = best
        }
        let picked = candidates[choice]
        let address = picked.addresses[(pools[pi].nextAddress / max(candidates.count, 1)) % picked.addresses.count]
        pools[pi].nextAddress &+= 1
        return (address, picked.key)
    }

    /// fail_fast (pgswift's extension) while every host of the pool's database is down: the clients
    /// waiting for a server, and those logging in and waiting for the pool's first server login, get
    /// `fields` now. Without fail_fast nobody is failed for the health check's sake: they wait, as in
    /// PgBouncer (query_wait_timeout, client_login_timeout).
    func failPoolClients(_ pi: Int, _ fields: ErrorFields) {
        var ci: Int32 = 0
        let cap = Int32(clients.capacity)
        while ci < cap {
            if clients[ci].pool == Int32(pi) && (clients[ci].state == .waitWelcome || clients[ci].state == .waitServer
                                                 || clients[ci].state == .replicationWait) {
                sendClientError(ci, fields, close: true)
            }
            ci += 1
        }
    }

    /// Recomputes each pool's fail-fast flag (after a health message or a reload).
    func refreshPoolHealth() {
        for pi in pools.indices { pools[pi].allDown = computeAllDown(pools[pi].entry) }
        if hot.pointee.routing { refreshRouting() }
    }

    // MARK: Messages from the supervisor

    func applyBackendState(host: String, port: Int, flags raw: UInt8, addresses texts: [String]) {
        let key = "\(host):\(port)"
        let flags = BackendFlags(rawValue: raw)
        let before = health.backends[key]
        var addresses: [SocketAddress] = []
        for t in texts { if let a = SocketAddress.numeric(host: t, port: port) { addresses.append(a) } }
        health.backends[key] = BackendView(flags: flags, addresses: addresses)
        health.suspectUntil[key] = nil
        noteRoleChange(key, before: before?.flags, after: flags)
        let wasUp = before.map { !$0.flags.contains(.known) || $0.flags.contains(.up) } ?? true
        let isUp = !flags.contains(.known) || flags.contains(.up)
        if wasUp && !isUp {
            log.info("backend \(key) reported down: dropping its idle server connections")
            drainServers(key: key, keep: nil, reason: "backend \(key) is down")
        }
        if flags.contains(.resolved), let old = before?.addresses, !old.isEmpty,
           Set(old.map { $0.description }) != Set(addresses.map { $0.description }) {
            log.info("backend \(key) moved to \(texts.joined(separator: ", ")): draining connections to the old address")
            drainServers(key: key, keep: Set(addresses.map { $0.description }), reason: "backend \(key) changed address")
        }
        refreshPoolHealth()
        let uses = { (pi: Int) in self.backendHosts(self.pools[pi].entry).contains { $0.key == key } }
        for pi in pools.indices where uses(pi) {
            if isUp && flags.contains(.known) {
                // The supervisor saw it answer: retry now, whatever this worker's own backoff said.
                health.hostBackoff[key]?.reset()
                // A failed connect (not a refused login) is retried at once, server_login_retry or not.
                if !pools[pi].loginRefused && pools[pi].loginError != nil {
                    pools[pi].loginError = nil
                }
            }
            if pools[pi].allDown && config.failFast {
                failPoolClients(pi, downError(pi))
            } else if !hot.pointee.paused && (pools[pi].waiting.count > 0 || pools[pi].replicationWaitCount > 0) {
                serveWaiting(Int32(pi))
            } else if !hot.pointee.paused && pools[pi].welcome == nil && pools[pi].welcomeWaitCount > 0 {
                launchWelcome(pi)
            }
        }
    }

    /// Idle connections to `key` (or, with `keep`, to an address not in it) close now; busy ones are
    /// marked so they close when released instead of going back to the pool.
    func drainServers(key: String, keep: Set<String>?, reason: String) {
        var si: Int32 = 0
        let cap = Int32(servers.capacity)
        while si < cap {
            if servers[si].state != .free, let info = servers[si].info, info.hostKey == key,
               keep.map({ !$0.contains(info.address) }) ?? true {
                switch servers[si].state {
                case .idle: closeServer(si, reason: reason)
                case .active, .login, .connecting: servers[si].dirty = true
                default: break
                }
            }
            si += 1
        }
    }

    // MARK: This worker's own connect failures

    /// A server connection of pool `p` to host `key` failed. A failure to reach the host (not a refusal
    /// by PostgreSQL) makes this worker avoid the host for a backoff interval and tells the supervisor,
    /// which checks it at once. Returns true when another host can take over, so the pool must not fail.
    func noteConnectFailure(_ p: Int32, key: String, _ fields: ErrorFields) -> Bool {
        let pi = Int(p)
        let unreachable = fields.code.hasPrefix("08") || fields.code.hasPrefix("57P")
        guard unreachable, !key.isEmpty else { return false }
        var b = health.hostBackoff[key] ?? Backoff(initialNanos: Clock.nanos(seconds: config.healthCheckBackoffInitial),
                                                   maxNanos: Clock.nanos(seconds: config.healthCheckBackoffMax))
        let (_, wait) = b.fail(random: Double(randomUInt32()) / 4_294_967_296.0)
        health.hostBackoff[key] = b
        health.suspectUntil[key] = now + wait
        if let h = backendHosts(pools[pi].entry).first(where: { $0.key == key }) {
            sendControl(.backendFailed(host: h.host, port: Int32(h.port), reason: fields.message))
        }
        return backendHosts(pools[pi].entry).contains { $0.key != key && hostUsable($0.key, pools[pi].entry) }
    }

    /// Every janitor tick: clients still waiting with nothing being opened get another try (a suspected
    /// host's interval ran out, a connect slot freed up, server_login_retry passed after a failed login:
    /// PgBouncer's janitor relaunches the same way), queued ones and those waiting for the welcome alike.
    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func healthTick() {
        guard !hot.pointee.paused else { return }
        for pi in pools.indices where pools[pi].connectingCount == 0 {
            if pools[pi].replicationWaitCount > 0 { launchReplication(Int32(pi)) }
            if pools[pi].waiting.count > 0 {
                launchIfNeeded(Int32(pi))
            } else if pools[pi].welcomeWaitCount > 0 && pools[pi].welcome == nil {
                launchWelcome(pi)
            }
        }
    }
}
