// Renders admin console answers (RowDescription, DataRow*, CommandComplete) from merged stats.

/// A [databases] entry as SHOW DATABASES shows it (built by the caller from the config and live counts).
public struct AdminDatabaseRow: Equatable, Sendable {
    public var name: String
    public var host: String?
    public var port: Int32
    public var database: String?
    public var forceUser: String?
    public var poolSize: Int32
    public var minPoolSize: Int32
    public var reservePoolSize: Int32
    /// Seconds.
    public var serverLifetime: Int32
    /// nil when the database inherits the global pool_mode.
    public var poolMode: String?
    public var loadBalanceHosts: String?
    public var maxConnections: Int32
    public var currentConnections: Int32
    public var maxClientConnections: Int32
    public var currentClientConnections: Int32
    public var paused: Bool
    public var disabled: Bool

    public init(name: String, host: String?, port: Int32, database: String?, forceUser: String?, poolSize: Int32,
                minPoolSize: Int32, reservePoolSize: Int32, serverLifetime: Int32, poolMode: String?,
                loadBalanceHosts: String? = nil, maxConnections: Int32, currentConnections: Int32,
                maxClientConnections: Int32, currentClientConnections: Int32, paused: Bool, disabled: Bool) {
        self.name = name; self.host = host; self.port = port; self.database = database
        self.forceUser = forceUser; self.poolSize = poolSize; self.minPoolSize = minPoolSize
        self.reservePoolSize = reservePoolSize; self.serverLifetime = serverLifetime; self.poolMode = poolMode
        self.loadBalanceHosts = loadBalanceHosts; self.maxConnections = maxConnections
        self.currentConnections = currentConnections; self.maxClientConnections = maxClientConnections
        self.currentClientConnections = currentClientConnections; self.paused = paused; self.disabled = disabled
    }
}

/// A user as SHOW USERS shows it; nil overrides mean "not set for this user".
public struct AdminUserRow: Equatable, Sendable {
    public var name: String
    public var poolSize: Int32?
    public var reservePoolSize: Int32?
    public var poolMode: String?
    public var maxUserConnections: Int32
    public var currentConnections: Int32
    public var maxUserClientConnections: Int32
    public var currentClientConnections: Int32

    public init(name: String, poolSize: Int32?, reservePoolSize: Int32?, poolMode: String?, maxUserConnections: Int32,
                currentConnections: Int32, maxUserClientConnections: Int32, currentClientConnections: Int32) {
        self.name = name; self.poolSize = poolSize; self.reservePoolSize = reservePoolSize; self.poolMode = poolMode
        self.maxUserConnections = maxUserConnections; self.currentConnections = currentConnections
        self.maxUserClientConnections = maxUserClientConnections; self.currentClientConnections = currentClientConnections
    }
}

/// One worker slot for SHOW WORKERS (the supervisor knows slots whose process is down, too).
public struct AdminWorkerRow: Equatable, Sendable {
    public var slot: Int32
    /// 0 while no process runs in the slot.
    public var pid: Int32
    /// Wall-clock seconds since the epoch; 0 when not running.
    public var startedAt: Int64
    public var clients: Int32
    public var servers: Int32
    /// e.g. "starting", "running", "draining", "restarting", "stopped".
    public var state: String
    public var restarts: Int32
    public var cpuMicros: UInt64
    public var residentBytes: UInt64

    public init(slot: Int32, pid: Int32, startedAt: Int64, clients: Int32, servers: Int32, state: String,
                restarts: Int32, cpuMicros: UInt64, residentBytes: UInt64) {
        self.slot = slot; self.pid = pid; self.startedAt = startedAt; self.clients = clients; self.servers = servers
        self.state = state; self.restarts = restarts; self.cpuMicros = cpuMicros; self.residentBytes = residentBytes
    }
}

/// A listening socket of the service, as SHOW FDS lists it (task `pooler`).
public struct AdminListenerRow: Equatable, Sendable {
    /// The supervisor's descriptor (workers inherit the socket under their own numbers).
    public var fd: Int32
    /// The address PgBouncer prints: the IP address, or `unix` for the Unix socket.
    public var addr: String
    public var port: Int32

    public init(fd: Int32, addr: String, port: Int32) {
        self.fd = fd; self.addr = addr; self.port = port
    }
}

/// Writers for every admin answer. Each appends complete protocol messages to `out` and ends with
/// CommandComplete; the caller adds ReadyForQuery (it owns the transaction status).
public enum AdminResults {
    /// A result set: RowDescription, one DataRow per row, CommandComplete(tag).
    public static func resultSet(_ columns: [AdminColumn], _ rows: [[String?]], tag: String = "SHOW",
                                 into out: inout OutBuffer) {
        Backend.rowDescription(into: &out, columns: columns)
        for row in rows {
            precondition(row.count == columns.count, "admin row has \(row.count) values for \(columns.count) columns")
            Backend.dataRow(into: &out, row)
        }
        Backend.commandComplete(into: &out, tag: tag)
    }

    /// ErrorResponse for a failed command (severity ERROR: the console session goes on).
    public static func error(_ e: AdminError, into out: inout OutBuffer) {
        Backend.errorResponse(into: &out, ErrorFields(severity: ErrorFields.Severity.error, code: e.code, message: e.message,
                                                      detail: e.detail))
    }

    /// CommandComplete alone (PAUSE, RESUME, RELOAD, ... answer with their own name as the tag).
    public static func done(_ tag: String, into out: inout OutBuffer) {
        Backend.commandComplete(into: &out, tag: tag)
    }

    // MARK: SHOW from merged stats

    /// SHOW QUERIES: one row per (database, user, pattern), by total time, the first `limit` only.
    public static func queries(_ m: MergedQueryStats, limit: Int?, into out: inout OutBuffer) {
        let rows = m.rows.prefix(limit ?? m.rows.count).map { r -> [String?] in
            [r.database, r.user, String(Int64(bitPattern: r.queryid)), r.text, String(r.calls), String(r.totalMicros),
             String(r.meanMicros), String(r.percentile(0.50)), String(r.percentile(0.95)), String(r.percentile(0.99)),
             String(r.maxMicros), String(r.waitMicros), String(r.errors), String(r.rows),
             QueryErrorClasses.text(r.errorClasses)]
        }
        resultSet(AdminColumns.queries, Array(rows), into: &out)
    }

    /// SHOW TABLES: one row per (database, relation named by a pattern).
    public static func tables(_ m: MergedQueryStats, into out: inout OutBuffer) {
        let rows = m.tables().map { t -> [String?] in
            [t.database, t.table, String(t.calls), String(t.totalMicros), String(t.reads), String(t.writes)]
        }
        resultSet(AdminColumns.tables, rows, into: &out)
    }

    public static func pools(_ m: MergedStats, loadBalanceHosts: (String) -> String? = { _ in nil },
                             into out: inout OutBuffer) {
        let rows: [[String?]] = m.pools.map { p in
            [p.database, p.user, s(p.clActive), s(p.clWaiting), s(p.clActiveCancelReq), s(p.clWaitingCancelReq),
             s(p.svActive), s(p.svActiveCancel), s(p.svBeingCanceled), s(p.svIdle), s(p.svUsed), s(p.svTested),
             s(p.svLogin), s(p.maxWaitSeconds), s(p.maxWaitMicrosPart), p.poolMode.rawValue,
             loadBalanceHosts(p.database), s(p.clPinned), s(p.svListen)]
        }
        resultSet(AdminColumns.pools, rows, into: &out)
    }

    /// SHOW STATS: totals and averages per database. `now` is monotonic microseconds (the averager's clock).
    public static func stats(_ m: MergedStats, averager: StatsAverager, now: Int64, into out: inout OutBuffer) {
        let rows: [[String?]] = m.databaseTotals().map { db in
            let a = averager.averages(database: db.database, current: db.totals, now: now)
            return [db.database] + totalValues(db.totals) + averageValues(a)
        }
        resultSet(AdminColumns.stats, rows, into: &out)
    }

    public static func statsTotals(_ m: MergedStats, into out: inout OutBuffer) {
        let rows: [[String?]] = m.databaseTotals().map { [$0.database] + totalValues($0.totals) }
        resultSet(AdminColumns.statsTotals, rows, into: &out)
    }

    public static func statsAverages(_ m: MergedStats, averager: StatsAverager, now: Int64, into out: inout OutBuffer) {
        let rows: [[String?]] = m.databaseTotals().map { db in
            [db.database] + averageValues(averager.averages(database: db.database, current: db.totals, now: now))
        }
        resultSet(AdminColumns.statsAverages, rows, into: &out)
    }

    /// SHOW TOTALS: name/value rows over all databases, in PgBouncer's order and spelling.
    public static func totals(_ m: MergedStats, averager: StatsAverager, now: Int64, into out: inout OutBuffer) {
        let t = m.grandTotals()
        let a = averager.averages(total: t, now: now)
        let names = ["server_assignment_count", "xact_count", "query_count", "client_bytes", "server_bytes",
                     "xact_time", "query_time", "wait_time", "ps_client_parse_count", "ps_server_parse_count",
                     "ps_bind_count"]
        var rows: [[String?]] = []
        for (n, v) in zip(names, totalValues(t)) { rows.append(["total_" + n, v]) }
        for (n, v) in zip(names, averageValues(a)) { rows.append(["avg_" + n, v]) }
        resultSet(AdminColumns.totals, rows, into: &out)
    }

    public static func clients(_ rows: [ConnectionRow], into out: inout OutBuffer) {
        resultSet(AdminColumns.clients, rows.map(socketValues), into: &out)
    }

    public static func servers(_ rows: [ConnectionRow], into out: inout OutBuffer) {
        resultSet(AdminColumns.servers, rows.map(socketValues), into: &out)
    }

    /// SHOW SOCKETS (`activeOnly` false) and SHOW ACTIVE_SOCKETS (true: only sockets with buffered
    /// bytes): SHOW CLIENTS' columns plus the buffer positions, `state` named after PgBouncer's lists
    /// (`cl_active`, `sv_idle`, ...), clients and servers then the clients still logging in, as
    /// PgBouncer orders them.
    public static func sockets(_ m: MergedStats, activeOnly: Bool, into out: inout OutBuffer) {
        var rows: [[String?]] = []
        func add(_ r: ConnectionRow) {
            guard !activeOnly || !r.buffers.isEmpty else { return }
            var values = socketValues(r)
            values[4] = socketListName(r)
            let b = r.buffers
            values += [s(b.recvPos), s(b.pktPos), s(b.pktRemain), s(b.sendPos), s(b.sendRemain), s(b.pktAvail),
                       s(b.sendAvail)]
            rows.append(values)
        }
        for r in m.clients where r.state != "login" { add(r) }
        for r in m.servers { add(r) }
        for r in m.clients where r.state == "login" { add(r) }
        resultSet(activeOnly ? AdminColumns.activeSockets : AdminColumns.sockets, rows, into: &out)
    }

    /// The PgBouncer list a connection of SHOW CLIENTS / SHOW SERVERS state `state` is on, as SHOW
    /// SOCKETS names it. A client without a server is on `cl_active` too, as in PgBouncer. pgswift's
    /// `being_canceled` servers, which PgBouncer's SHOW SOCKETS leaves out, are `sv_being_canceled`.
    public static func socketListName(_ r: ConnectionRow) -> String {
        if r.isServer {
            return r.state == "new" ? "sv_login" : "sv_" + r.state
        }
        switch r.state {
        case "active", "idle": return "cl_active"
        default: return "cl_" + r.state
        }
    }

    /// SHOW FDS: the listening sockets (`pooler`), then every client and server socket except the admin
    /// console's, with the session parameters PgBouncer's online restart would carry over. pgswift
    /// attaches no descriptors to the rows (it has no such restart: the supervisor keeps the listening
    /// sockets and a rolling restart hands idle clients over itself), and has nothing for `password`
    /// or the SCRAM keys (NULL). A client's and a server's `fd` are numbers in their worker's process.
    public static func fds(listeners: [AdminListenerRow], _ m: MergedStats, into out: inout OutBuffer) {
        var rows: [[String?]] = listeners.map { l in
            [s(l.fd), "pooler", nil, nil, l.addr, s(l.port), "0", "0", nil, nil, nil, nil, nil, nil, nil]
        }
        for r in m.clients + m.servers where !r.isAdmin {
            rows.append([s(r.fd), r.isServer ? "server" : "client", r.user.isEmpty ? nil : r.user,
                         r.database.isEmpty ? nil : r.database, r.addr, s(r.port), String(r.cancelKey), s(r.linkFD),
                         r.clientEncoding, r.standardConformingStrings, r.dateStyle, r.timeZone, nil, nil, nil])
        }
        resultSet(AdminColumns.fds, rows, into: &out)
    }

    /// SHOW MEM: one row per object kind (pgswift has no slab allocator; see `MemoryRow`). The int4
    /// columns saturate rather than wrap.
    public static func mem(_ rows: [MemoryRow], into out: inout OutBuffer) {
        resultSet(AdminColumns.mem, rows.map { r in
            [r.name, s(Int32(clamping: r.size)), s(Int32(clamping: r.used)), s(Int32(clamping: r.free)),
             s(Int32(clamping: r.memtotal))]
        }, into: &out)
    }

    /// SHOW LISTS. `databases`, `users`, `peers`: configured counts; `peerPools`: peers a cancel was
    /// forwarded to (the supervisor's); `dnsNames`, `dnsQueries`: the supervisor's
    /// resolver (no zones: pgswift tracks none); the rest comes from the workers.
    public static func lists(_ m: MergedStats, databases: Int, users: Int, dnsNames: Int = 0, dnsQueries: Int = 0,
                             peers: Int = 0, peerPools: Int = 0, into out: inout OutBuffer) {
        let items: [(String, Int)] = [
            ("databases", databases), ("users", users), ("peers", peers), ("pools", m.pools.count), ("peer_pools", peerPools),
            ("free_clients", Int(m.lists.freeClients)), ("used_clients", Int(m.lists.usedClients)),
            ("login_clients", Int(m.lists.loginClients)), ("free_servers", Int(m.lists.freeServers)),
            ("used_servers", Int(m.lists.usedServers)), ("dns_names", dnsNames), ("dns_zones", 0), ("dns_queries", dnsQueries),
            ("dns_pending", 0),
        ]
        resultSet(AdminColumns.lists, items.map { [$0.0, String($0.1)] }, into: &out)
    }

    // MARK: SHOW from configuration and supervisor state

    public static func state(paused: Bool, suspended: Bool, into out: inout OutBuffer) {
        let active = !paused && !suspended
        resultSet(AdminColumns.state, [["active", yesNo(active)], ["paused", yesNo(paused && !suspended)],
                                       ["suspended", yesNo(suspended)]], into: &out)
    }

    public static func version(_ text: String = "pgswift " + PgswiftVersion.string, into out: inout OutBuffer) {
        resultSet(AdminColumns.version, [[text]], into: &out)
    }

    /// SHOW CONFIG in PgBouncer's columns; `fromEnvironment`, when not empty, is a NOTICE before the
    /// rows naming the values that come from `PGSWIFT_<KEY>` variables (the rows have no column for it).
    public static func config(_ rows: [Config.Setting], fromEnvironment: [(key: String, variable: String)] = [],
                              into out: inout OutBuffer) {
        if !fromEnvironment.isEmpty {
            Backend.noticeResponse(into: &out, ErrorFields(
                severity: ErrorFields.Severity.notice, code: "00000",
                message: "set by the environment: " + fromEnvironment.map(\.key).joined(separator: ", "),
                detail: fromEnvironment.map { "\($0.key) from \($0.variable)" }.joined(separator: "\n")))
        }
        resultSet(AdminColumns.config, rows.map { [$0.key, $0.value, $0.defaultValue, yesNo($0.changeable)] }, into: &out)
    }

    public static func databases(_ rows: [AdminDatabaseRow], into out: inout OutBuffer) {
        resultSet(AdminColumns.databases, rows.map { d in
            [d.name, d.host, s(d.port), d.database, d.forceUser, s(d.poolSize), s(d.minPoolSize), s(d.reservePoolSize),
             s(d.serverLifetime), d.poolMode, d.loadBalanceHosts, s(d.maxConnections), s(d.currentConnections),
             s(d.maxClientConnections), s(d.currentClientConnections), d.paused ? "1" : "0", d.disabled ? "1" : "0"]
        }, into: &out)
    }

    /// PgBouncer prints the per-user pool sizes right-aligned in 9 characters, or an empty string when
    /// unset (not NULL); reproduced so that scripts parsing them keep working.
    public static func users(_ rows: [AdminUserRow], into out: inout OutBuffer) {
        func padded(_ v: Int32?) -> String {
            guard let v else { return "" }
            let t = String(v)
            return t.count >= 9 ? t : String(repeating: " ", count: 9 - t.count) + t
        }
        resultSet(AdminColumns.users, rows.map { u in
            [u.name, padded(u.poolSize), padded(u.reservePoolSize), u.poolMode, s(u.maxUserConnections),
             s(u.currentConnections), s(u.maxUserClientConnections), s(u.currentClientConnections)]
        }, into: &out)
    }

    public static func workers(_ rows: [AdminWorkerRow], into out: inout OutBuffer) {
        resultSet(AdminColumns.workers, rows.map { w in
            [s(w.slot), s(w.pid), w.startedAt > 0 ? timestamp(micros: w.startedAt * 1_000_000) : nil, s(w.clients),
             s(w.servers), w.state, s(w.restarts), decimalMicros(w.cpuMicros), String(w.residentBytes)]
        }, into: &out)
    }

    /// Commands whose lists pgswift has no entries for (DNS zones):
    /// the right columns and no rows, so scripts see an empty but well-formed answer.
    public static func empty(_ target: AdminShowTarget, into out: inout OutBuffer) {
        resultSet(AdminColumns.columns(for: target) ?? [], [], into: &out)
    }

    /// SHOW HELP: a NOTICE listing the commands, then CommandComplete.
    public static func help(into out: inout OutBuffer) {
        let detail = """

            \tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION|WORKERS|HEALTH
            \tSHOW PEERS|PEER_POOLS
            \tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE
            \tSHOW DNS_HOSTS|DNS_ZONES
            \tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS
            \tSHOW QUERIES [<n>]|TABLES
            \tRESET QUERIES
            \tSET key = arg
            \tRELOAD
            \tPAUSE [<db>]
            \tRESUME [<db>]
            \tDISABLE <db>
            \tENABLE <db>
            \tRECONNECT [<db>]
            \tKILL [<db>]
            \tKILL_CLIENT <client_id>
            \tSUSPEND
            \tSHUTDOWN
            \tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS
            \tWAIT_CLOSE [<db>]
            \tUPGRADE
            """
        Backend.noticeResponse(into: &out, ErrorFields(severity: ErrorFields.Severity.notice, code: "00000",
                                                       message: "Console usage", detail: detail))
        Backend.commandComplete(into: &out, tag: "SHOW")
    }

    /// SHOW client_encoding and friends.
    public static func fakeParameter(name: String, value: String, into out: inout OutBuffer) {
        resultSet([(name, Backend.TypeOID.text)], [[value]], into: &out)
    }

    /// SET client_encoding = ... and friends: ignored with a NOTICE.
    public static func fakeSet(into out: inout OutBuffer) {
        Backend.noticeResponse(into: &out, ErrorFields(severity: ErrorFields.Severity.notice, code: "00000",
                                                       message: "SET ignored"))
        Backend.commandComplete(into: &out, tag: "SET")
    }

    /// A successful SET: PgBouncer's tag is "SET key=value". `notice`: a NOTICE before it (a SET
    /// that changed nothing says why; PgBouncer says nothing).
    public static func setDone(key: String, value: String, notice: String? = nil, into out: inout OutBuffer) {
        if let notice {
            Backend.noticeResponse(into: &out, ErrorFields(severity: ErrorFields.Severity.notice, code: "00000",
                                                           message: notice))
        }
        Backend.commandComplete(into: &out, tag: "SET \(key)=\(value)")
    }

    // MARK: value formatting

    @inline(__always) static func s<T: BinaryInteger>(_ v: T) -> String { String(v) }

    static func yesNo(_ b: Bool) -> String { b ? "yes" : "no" }

    static func totalValues(_ t: PoolCounters) -> [String?] {
        [s(t.serverAssignmentCount), s(t.xactCount), s(t.queryCount), s(t.bytesReceived), s(t.bytesSent),
         s(t.xactTimeMicros), s(t.queryTimeMicros), s(t.waitTimeMicros), s(t.clientParseCount),
         s(t.serverParseCount), s(t.bindCount)]
    }

    static func averageValues(_ a: PoolAverages) -> [String?] {
        [s(a.serverAssignmentCount), s(a.xactCount), s(a.queryCount), s(a.bytesReceived), s(a.bytesSent),
         s(a.xactTimeMicros), s(a.queryTimeMicros), s(a.waitTimeMicros), s(a.clientParseCount),
         s(a.serverParseCount), s(a.bindCount)]
    }

    static func socketValues(_ r: ConnectionRow) -> [String?] {
        let wait = max(r.waitMicros, 0)
        return [r.isServer ? "S" : "C", r.user.isEmpty ? "(nouser)" : r.user, r.database.isEmpty ? "(nodb)" : r.database,
                r.replication.name, r.state, r.addr, s(r.port), r.localAddr, s(r.localPort),
                r.connectTime > 0 ? timestamp(micros: r.connectTime) : nil,
                r.requestTime > 0 ? timestamp(micros: r.requestTime) : nil,
                s(wait / 1_000_000), s(wait % 1_000_000), r.closeNeeded ? "1" : "0",
                pointer(r.ptr), r.link == 0 ? "" : pointer(r.link), s(r.remotePid), r.tls, r.applicationName,
                s(r.preparedStatements), s(r.id)]
    }

    /// `ptr` / `link` values: hex, as a C "%p" prints them.
    static func pointer(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    /// "2026-11-22 23:04:39 UTC" for wall-clock microseconds.
    static func timestamp(micros: Int64) -> String {
        Clock.timestamp(seconds: Int(micros / 1_000_000))
    }

    /// Microseconds as an exact decimal number of seconds ("1.5", "0.000042", "3").
    public static func decimalMicros(_ v: UInt64) -> String {
        let whole = v / 1_000_000
        var frac = v % 1_000_000
        if frac == 0 { return String(whole) }
        var digits = 6
        while frac % 10 == 0 { frac /= 10; digits -= 1 }
        let f = String(frac)
        return String(whole) + "." + String(repeating: "0", count: digits - f.count) + f
    }
}
