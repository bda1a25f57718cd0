// Runs admin console commands for whichever worker received them: SHOW from merged worker stats,
// PAUSE/RESUME/RELOAD/SHUTDOWN on the whole service.
import Glibc
import Shared

extension Supervisor {
    func executeAdmin(_ request: AdminRequest, from slot: Int) {
        let id = request.requestID
        let command: AdminCommand
        do throws(AdminError) {
            command = try AdminCommand.parse(request.query)
        } catch {
            replyError(slot: slot, requestID: id, error)
            return
        }
        if command.requiresAdmin && !request.isAdmin {
            replyError(slot: slot, requestID: id, .adminAccessNeeded)
            return
        }
        // Per-database commands and the service-wide ones built on them (ServiceLimits.swift).
        if executeDatabaseAdmin(command, slot: slot, requestID: id) { return }
        var out = OutBuffer(capacity: 1024)
        defer { out.deallocate() }
        switch command {
        case .show(let target):
            switch target {
            case .help: AdminResults.help(into: &out)
            case .version: AdminResults.version(into: &out)
            case .config:
                AdminResults.config(config.settings(), fromEnvironment: config.settingsFromTheEnvironment(), into: &out)
            case .state: AdminResults.state(paused: paused, suspended: false, into: &out)
            case .health: AdminResults.resultSet(AdminColumns.health, healthRows(now: Clock.monotonicNanos()), into: &out)
            case .dnsHosts: AdminResults.resultSet(AdminColumns.dnsHosts, dnsHostRows(now: Clock.monotonicNanos()), into: &out)
            case .peers: AdminResults.resultSet(AdminColumns.peers, peerRows(), into: &out)
            case .peerPools: AdminResults.resultSet(AdminColumns.peerPools, peerPoolRows(), into: &out)
            case .dnsZones:
                AdminResults.empty(target, into: &out)
            default:
                // Everything else reads live figures: ask every worker now, answer when all replied.
                let sockets: Set<AdminShowTarget> = [.sockets, .activeSockets, .fds]
                startCollection(.admin(slot: slot, requestID: id, command: command),
                                clients: target == .clients || sockets.contains(target),
                                servers: target == .servers || sockets.contains(target))
                return
            }
        case .showQueries, .showTables, .resetQueries:
            // Issue 21: every worker's patterns (RESET QUERIES: each worker forgets its own first).
            startCollection(.admin(slot: slot, requestID: id, command: command), clients: false, servers: false,
                            queries: true, resetQueries: command == .resetQueries)
            return
        case .showFakeParameter(let name, let value):
            AdminResults.fakeParameter(name: name, value: value, into: &out)
        case .setFakeParameter:
            AdminResults.fakeSet(into: &out)
        case .set(let key, let value):
            adminSet(key: key, value: value, into: &out)
        case .pause(let db):
            // PAUSE <db> is handled in ServiceLimits.swift; here db is nil.
            if let e = checkDatabaseArgument(db, verb: "pause") { return replyError(slot: slot, requestID: id, e) }
            if paused { return replyError(slot: slot, requestID: id, .alreadyPaused) }
            paused = true
            log.info("PAUSE\(db.map { " " + $0 } ?? ""): pausing all workers; waiting for servers to be released")
            broadcast(.pause)
            statsState.pendingPauses.append((slot, id))
            statsState.nextPauseCheck = Clock.monotonicNanos()
            return
        case .resume(let db):
            if let e = checkDatabaseArgument(db, verb: "resume") { return replyError(slot: slot, requestID: id, e) }
            // As PgBouncer: a stopping service is not resumed (SHUTDOWN WAIT_FOR_SERVERS pauses it).
            if stopping != nil { return replyError(slot: slot, requestID: id, .shuttingDown) }
            guard paused else { return replyError(slot: slot, requestID: id, .notPaused) }
            paused = false
            log.info("RESUME: resuming all workers")
            broadcast(.resume)
            for p in statsState.pendingPauses {
                replyError(slot: p.slot, requestID: p.requestID, AdminError("PAUSE interrupted by RESUME"))
            }
            statsState.pendingPauses = []
            statsState.nextPauseCheck = nil
            AdminResults.done("RESUME", into: &out)
        case .reload:
            if reload(because: "RELOAD") {
                AdminResults.done("RELOAD", into: &out)
            } else {
                AdminResults.error(reloadError ?? .reloadFailed, into: &out)
            }
        case .upgrade:
            // Answered when the roll has finished or stopped (Upgrade.swift).
            if let requester = adminTarget(slot) { startUpgrade(requester: requester, requestID: id) }
            return
        case .shutdown(let mode):
            AdminResults.done("SHUTDOWN", into: &out)
            replyAdmin(slot: slot, requestID: id, out)
            beginShutdown(mode, because: "SHUTDOWN command")
            return
        default:
            AdminResults.error(AdminError("command not supported by pgswift yet: \(request.query)", code: "0A000"), into: &out)
        }
        replyAdmin(slot: slot, requestID: id, out)
    }

    /// SET key = value, as PgBouncer answers it: "SET key=value" on success, "SET failed" (08P01)
    /// for an unknown key or a bad value (the reason, which PgBouncer only logs, also goes in DETAIL).
    /// A key PgBouncer cannot change online is accepted and ignored as PgBouncer does, with a NOTICE.
    private func adminSet(key: String, value: String, into out: inout OutBuffer) {
        func fail(_ reason: String) {
            log.error("SET \(key)=\(value) failed: \(reason)")
            AdminResults.error(AdminError.setFailed.detailed(reason), into: &out)
        }
        switch ConfigOverride.check(key: key, value: value) {
        case .unknownKey:
            fail("unknown parameter: \(key)")
        case .invalidValue(let k, let reason):
            fail("invalid value \"\(value)\" for \(k): \(reason)")
        case .restartOnly(let k):
            let why = "\(k) cannot be changed online; SET ignored (a restart applies the config file's value)"
            log.warning("SET \(k)=\(value): \(why)")
            AdminResults.setDone(key: key, value: value, notice: why, into: &out)
        case .accepted(let o):
            do throws(ConfigError) {
                let tlsProblem = try set(o)
                // PgBouncer's NOTICE when a TLS key's new set-up fails; the value is kept all the same.
                AdminResults.setDone(key: key, value: value,
                                     notice: tlsProblem == nil ? nil : "TLS settings could not be applied, still using old configuration",
                                     into: &out)
            } catch {
                fail("\(error)")
            }
        }
    }

    private func checkDatabaseArgument(_ db: String?, verb: String) -> AdminError? {
        guard let db else { return nil }
        if db == "pgbouncer" || db == "pgswift" { return .adminDatabase(verb, db) }
        if config.database(named: db) == nil { return .noSuchDatabase(db) }
        return nil
    }

    /// SHOW answers computed from a fresh merge of every worker's snapshot.
    func renderShow(_ command: AdminCommand, _ m: MergedStats, into out: inout OutBuffer) {
        guard case .show(let target) = command else { return }
        let nowMicros = Clock.monotonicNanos() / 1000
        switch target {
        case .pools:
            AdminResults.pools(m, loadBalanceHosts: { [config] db in config.database(named: db)?.loadBalanceHosts.rawValue },
                               into: &out)
        case .stats: AdminResults.stats(m, averager: statsState.averager, now: nowMicros, into: &out)
        case .statsTotals: AdminResults.statsTotals(m, into: &out)
        case .statsAverages: AdminResults.statsAverages(m, averager: statsState.averager, now: nowMicros, into: &out)
        case .totals: AdminResults.totals(m, averager: statsState.averager, now: nowMicros, into: &out)
        case .clients: AdminResults.clients(m.clients, into: &out)
        case .servers: AdminResults.servers(m.servers, into: &out)
        case .lists:
            // PgBouncer counts its lists: the admin database and every user SHOW USERS shows.
            let dns = dnsCounts()
            AdminResults.lists(m, databases: databaseRows(m).count, users: userRows(m).count,
                               dnsNames: dns.names, dnsQueries: dns.queries, peers: config.peers.count,
                               peerPools: peerState.pools.pools.count, into: &out)
        case .databases: AdminResults.databases(databaseRows(m), into: &out)
        case .users: AdminResults.users(userRows(m), into: &out)
        case .workers: AdminResults.workers(workerRows(m), into: &out)
        case .sockets: AdminResults.sockets(m, activeOnly: false, into: &out)
        case .activeSockets: AdminResults.sockets(m, activeOnly: true, into: &out)
        case .fds: AdminResults.fds(listeners: listenerRows(), m, into: &out)
        case .mem: AdminResults.mem(m.memory, into: &out)
        case .routing: AdminResults.resultSet(AdminColumns.routing, routingRows(m), into: &out)
        default: AdminResults.empty(target, into: &out)
        }
    }

    /// The clients of a database ("d") or user ("u") the service counts in the shared name table (those
    /// with a client limit: exact, admin console clients included), or nil when it is not counted there.
    func countedClients(_ kind: Character, _ name: String) -> Int32? {
        guard let c = limits.counter, let e = c.nameEntry(ClientCounter.nameKey(kind: kind, name), claim: false) else {
            return nil
        }
        return Int32(clamping: c.count(entry: e))
    }

    func databaseRows(_ m: MergedStats) -> [AdminDatabaseRow] {
        func servers(_ p: PoolStats) -> Int32 { p.svActive + p.svIdle + p.svUsed + p.svTested + p.svLogin }
        func clients(_ p: PoolStats) -> Int32 { p.clActive + p.clWaiting }
        // One pass over the pools (there may be tens of thousands), not one per database.
        var byDatabase: [String: (servers: Int32, clients: Int32)] = [:]
        for p in m.pools {
            let t = byDatabase[p.database] ?? (0, 0)
            byDatabase[p.database] = (t.servers &+ servers(p), t.clients &+ clients(p))
        }
        // The configured entries, then the databases the `*` entry made (PgBouncer's auto-databases),
        // listed while some worker holds a pool for them (autodb_idle_timeout frees it).
        var entries = config.databases
        if config.fallbackDatabase != nil {
            let configured = Set(entries.map(\.name))
            for name in byDatabase.keys where name != "pgbouncer" && !configured.contains(name) {
                if let d = config.database(named: name) { entries.append(d) }
            }
        }
        var rows: [AdminDatabaseRow] = entries.map { d in
            let totals = byDatabase[d.name] ?? (0, 0)
            let maxClients = config.effectiveMaxDBClientConnections(database: d)
            return AdminDatabaseRow(
                name: d.name, host: d.hosts.first.flatMap { $0.isEmpty ? nil : $0 }, port: Int32(d.ports.first ?? 5432),
                database: d.dbname ?? d.name, forceUser: d.user,
                poolSize: Int32(clamping: config.effectivePoolSize(database: d, user: "")),
                minPoolSize: Int32(clamping: d.minPoolSize ?? config.minPoolSize),
                reservePoolSize: Int32(clamping: d.reservePoolSize ?? config.reservePoolSize),
                serverLifetime: Int32(clamping: config.effectiveTimeouts(database: d, user: "").serverLifetime / 1_000_000_000),
                poolMode: d.poolMode?.rawValue,
                loadBalanceHosts: d.loadBalanceHosts.rawValue,
                maxConnections: Int32(clamping: d.maxDBConnections ?? config.maxDBConnections),
                currentConnections: totals.servers,
                maxClientConnections: Int32(clamping: maxClients),
                currentClientConnections: (maxClients > 0 ? countedClients("d", d.name) : nil) ?? totals.clients,
                paused: paused || limits.pausedDBs.contains(d.name), disabled: limits.disabledDBs.contains(d.name))
        }
        let adminMax = config.effectiveMaxDBClientConnections(database: nil)
        rows.append(AdminDatabaseRow(name: "pgbouncer", host: nil, port: Int32(config.listenPort), database: "pgbouncer",
                                     forceUser: "pgbouncer", poolSize: 2, minPoolSize: 0, reservePoolSize: 0,
                                     serverLifetime: 0, poolMode: "statement", maxConnections: 0, currentConnections: 0,
                                     maxClientConnections: Int32(clamping: adminMax),
                                     currentClientConnections: (adminMax > 0 ? countedClients("d", "pgbouncer") : nil)
                                         ?? byDatabase["pgbouncer"]?.clients ?? 0,
                                     paused: false, disabled: false))
        return rows.sorted { $0.name < $1.name }
    }

    /// Reads auth_file's user names for SHOW USERS (at a RELOAD or SET, and at the first SHOW USERS);
    /// an unreadable file gives none (the workers keep their last good list and log why).
    func loadAuthFileUsers() {
        guard let path = config.authFile, !path.isEmpty, let list = try? Userlist.load(path: path) else {
            statsState.authFileUsers = []
            return
        }
        statsState.authFileUsers = Array(list.entries.keys)
    }

    /// The users SHOW USERS lists without a pool: as PgBouncer, every user it knows from the
    /// configuration (auth_file, [users], the databases' forced users) and the admin console's
    /// `pgbouncer`. PgBouncer also keeps every user who ever logged in (auth_query); pgswift lists those
    /// while they have a pool.
    static func configuredUsers(_ config: Config, authFileUsers: [String]) -> Set<String> {
        var names = Set(authFileUsers)
        names.formUnion(config.users.keys)
        for d in config.databases { if let u = d.user { names.insert(u) } }
        names.insert("pgbouncer")
        return names
    }

    func userRows(_ m: MergedStats) -> [AdminUserRow] {
        // One pass over the pools (there may be tens of thousands), not one per user.
        var byUser: [String: (servers: Int32, clients: Int32)] = [:]
        if statsState.authFileUsers == nil { loadAuthFileUsers() }
        for name in Self.configuredUsers(config, authFileUsers: statsState.authFileUsers ?? []) { byUser[name] = (0, 0) }
        for p in m.pools where p.database != "pgbouncer" {
            let t = byUser[p.user] ?? (0, 0)
            byUser[p.user] = (t.servers &+ p.svActive &+ p.svIdle &+ p.svUsed &+ p.svTested &+ p.svLogin,
                              t.clients &+ p.clActive &+ p.clWaiting)
        }
        return byUser.keys.sorted().map { name in
            let u = config.users[name]
            let totals = byUser[name] ?? (0, 0)
            let maxClients = config.effectiveMaxUserClientConnections(user: name)
            return AdminUserRow(name: name, poolSize: u?.poolSize.map { Int32(clamping: $0) },
                                reservePoolSize: u?.reservePoolSize.map { Int32(clamping: $0) },
                                poolMode: u?.poolMode?.rawValue,
                                maxUserConnections: Int32(clamping: u?.maxUserConnections ?? config.maxUserConnections),
                                currentConnections: totals.servers,
                                maxUserClientConnections: Int32(clamping: maxClients),
                                currentClientConnections: (maxClients > 0 ? countedClients("u", name) : nil) ?? totals.clients)
        }
    }

    func listenerRows() -> [AdminListenerRow] { Self.listenerRows(listeners, port: running.listenPort) }

    /// SHOW FDS' `pooler` rows: each listening socket once (with so_reuseport every slot has its own).
    static func listenerRows(_ listeners: Listeners, port: Int) -> [AdminListenerRow] {
        var rows: [AdminListenerRow] = []
        var seen = Set<Int32>()
        for perSlot in listeners.tcp {
            for (i, fd) in perSlot.enumerated() where fd >= 0 && seen.insert(fd).inserted {
                let a = i < listeners.addresses.count ? listeners.addresses[i] : nil
                rows.append(AdminListenerRow(fd: fd, addr: a?.hostString ?? "", port: Int32(a?.port ?? port)))
            }
        }
        if listeners.unix >= 0 {
            rows.append(AdminListenerRow(fd: listeners.unix, addr: "unix", port: Int32(port)))
        }
        return rows
    }

    func workerRows(_ m: MergedStats) -> [AdminWorkerRow] {
        slots.map { slot in
            let summary = m.workers.first { Int($0.slot) == slot.index && $0.pid == slot.pid }
            let state: String
            if slot.pid == 0 {
                state = slot.respawnAt != nil ? "restarting" : "stopped"
            } else if stopping != nil {
                state = "draining"
            } else {
                state = slot.ready ? "running" : "starting"
            }
            return AdminWorkerRow(slot: Int32(slot.index), pid: slot.pid, startedAt: summary?.startedAt ?? 0,
                                  clients: summary?.clients ?? 0, servers: summary?.servers ?? 0, state: state,
                                  restarts: slot.restarts, cpuMicros: summary?.process.cpuTotalMicros ?? 0,
                                  residentBytes: summary?.process.residentBytes ?? 0)
        }
    }
}
