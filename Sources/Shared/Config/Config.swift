// The loaded configuration: one property per implemented key (PgBouncer defaults), plus lookups.

public struct Config: Sendable {
    /// TLS modes of `client_tls_sslmode` / `server_tls_sslmode`.
    public enum TLSMode: String, Sendable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"

        /// require and above: no plaintext (a refused SSLRequest fails, a plaintext client is refused).
        public var requiresTLS: Bool { self == .require || self == .verifyCA || self == .verifyFull }
    }

    // MARK: [pgbouncer] — defaults are PgBouncer 1.2x's (see ConfigKeySpec.pgbouncer).

    /// Empty: no TCP listener (Unix socket only). `*` means every address.
    public var listenAddr: [String] = []
    public var listenPort: Int = 6432
    public var listenBacklog: Int = 128
    /// Empty: no Unix socket.
    public var unixSocketDir: String = "/tmp"
    public var unixSocketMode: Int = 0o777
    public var unixSocketGroup: String = ""

    public var authType: AuthType = .md5
    /// Relative: against the working directory (PgBouncer), else next to the config file.
    public var authFile: String? = nil
    public var authUser: String? = nil
    /// The `[databases]` entry auth_query runs in (nil: the client's own database); a database's
    /// `auth_dbname` beats it (Worker/Login/AuthQuery.swift).
    public var authDbname: String? = nil
    /// Relative: against the working directory (PgBouncer), else next to the config file; read when `auth_type = hba`.
    public var authHbaFile: String? = nil
    /// pg_ident.conf-style user name maps for `map=` on auth_hba_file's peer and cert lines (IdentMap.swift);
    /// relative as `authHbaFile`; read with it.
    public var authIdentFile: String? = nil
    /// The parsed `auth_hba_file` (`load` fills it when `auth_type = hba`; see Hba.swift).
    public var hba: HbaRules? = nil
    public var authQuery: String = ConfigKeySpec.defaultAuthQuery
    public var adminUsers: [String] = []
    public var statsUsers: [String] = []

    public var poolMode: PoolMode = .session
    public var defaultPoolSize: Int = 20
    /// This host's id among peered poolers (0: peering off). Cancel keys carry it (`PeerCancelKey`).
    public var peerID: Int = 0
    public var minPoolSize: Int = 0
    /// Extra servers a pool may open for clients that waited `reservePoolTimeout` seconds (0 turns
    /// the reserve off), service-wide like pool sizes (Supervisor/Limits/PoolQuotas.swift).
    public var reservePoolSize: Int = 0
    public var reservePoolTimeout: Double = 5
    public var maxClientConn: Int = 100
    /// 0 = unlimited.
    public var maxDBConnections: Int = 0
    /// 0 = unlimited.
    public var maxUserConnections: Int = 0
    /// Client connections per database / per user for the whole service (0 = unlimited).
    public var maxDBClientConnections: Int = 0
    public var maxUserClientConnections: Int = 0

    public var serverResetQuery: String = "DISCARD ALL"
    public var serverResetQueryAlways: Bool = false
    /// Raw value: "" disables the check, "<empty>" sends an empty query (see `serverCheckQueryToSend`).
    public var serverCheckQuery: String = "<empty>"
    public var serverCheckDelay: Double = 30
    /// PBKDF2 iterations of the SCRAM secrets pgswift computes itself: for auth_file users with a
    /// plain-text password, and for the mock exchange of unknown users (the same count, so the two
    /// cannot be told apart).
    public var scramIterations: Int = 4096
    public var serverIdleTimeout: Double = 600
    public var serverLifetime: Double = 3600
    public var serverConnectTimeout: Double = 15
    public var serverLoginRetry: Double = 15
    public var serverRoundRobin: Bool = false
    /// Session mode: a server a RECONNECT or RELOAD marked is closed between its client's transactions.
    public var serverFastClose: Bool = false
    public var clientLoginTimeout: Double = 60
    public var clientIdleTimeout: Double = 0
    public var idleTransactionTimeout: Double = 0
    public var queryTimeout: Double = 0
    public var transactionTimeout: Double = 0
    public var queryWaitTimeout: Double = 120
    /// Whole seconds a queued client waits before it is told so with a NOTICE (0: never).
    public var queryWaitNotify: Int = 5

    public var ignoreStartupParameters: [String] = []
    public var trackExtraParameters: [String] = ["IntervalStyle"]
    public var maxPreparedStatements: Int = 200
    public var maxPacketSize: Int = 2147483647

    public var logfile: String? = nil
    /// syslog = 1: every line at LOG level and above also goes to syslog (`Syslog`, Shared/System),
    /// from the supervisor and every worker, under `syslogIdent` and `syslogFacility`.
    public var syslog = false
    public var syslogIdent = "pgbouncer"
    public var syslogFacility: SyslogFacility = .daemon
    public var pidfile: String? = nil
    public var logConnections: Bool = true
    public var logDisconnections: Bool = true
    public var logPoolerErrors: Bool = true
    public var verbose: Int = 0
    public var statsPeriod: Int = 60
    /// Every `stats_period` the supervisor logs PgBouncer's `stats:` line (averages over all pools).
    public var logStats: Bool = true
    /// Seconds a pool may stay empty (no client, no server) before it is freed (0: never).
    /// pgswift's default is 3600, not PgBouncer's 0 (see README).
    public var poolIdleTimeout: Double = 3600
    /// Seconds an empty pool of an automatic (`*`) database may stay before it is freed (0: never).
    public var autodbIdleTimeout: Double = 3600
    public var applicationNameAddHost: Bool = false

    public var soReuseport: Bool = false
    public var tcpKeepalive: Bool = true
    public var tcpKeepidle: Int = 0
    public var tcpKeepintvl: Int = 0
    public var tcpKeepcnt: Int = 0
    /// Milliseconds; 0 = OS default.
    public var tcpUserTimeout: Int = 0
    /// tcp_keepalive ... tcp_user_timeout as set on client (listening) and server sockets.
    public var tcpKeepaliveSettings: TCPKeepalive {
        TCPKeepalive(enabled: tcpKeepalive, idle: Int32(clamping: tcpKeepidle), interval: Int32(clamping: tcpKeepintvl),
                     count: Int32(clamping: tcpKeepcnt), userTimeoutMillis: Int32(clamping: tcpUserTimeout))
    }
    public var dnsMaxTTL: Double = 15
    public var dnsNXDomainTTL: Double = 15

    // TLS (Shared/TLS/TLSContext.swift).
    // File names as written; `resolvedTLS(_:)` takes them relative to the config's directory.
    public var clientTLS: TLSSideSettings = TLSSideSettings(mode: .disable, prefix: "client")
    public var serverTLS: TLSSideSettings = TLSSideSettings(mode: .prefer, prefix: "server")

    // MARK: [pgswift]

    /// Worker processes; defaults to the number of online CPUs.
    public var workers: Int = Config.onlineCPUCount()
    /// nil: `pgswift-worker` next to the supervisor binary.
    public var workerBinary: String? = nil
    /// Address of the Prometheus endpoint ("" = off).
    public var metricsListen: String = ""
    /// Seconds a worker keeps a password hash that auth_query returned (0: ask every time).
    public var authQueryCacheTTL: Double = 60
    /// Seconds a draining worker may keep clients before it is stopped.
    public var drainTimeout: Double = 300
    /// When a backend is down, answer clients with an error at once instead of queueing them.
    public var failFast: Bool = false
    /// A statement name in use or unknown in transaction/statement mode: disconnect (PgBouncer) or
    /// PostgreSQL's error.
    public var preparedStatementErrors: PreparedStatementErrors = .disconnect
    /// LISTEN/NOTIFY in transaction and statement mode: relayed through one listening connection per
    /// pool and worker, or left to the pooled server (off).
    public var listenMode: ListenMode = .relay
    /// Transaction/statement mode: a temporary table, a session advisory lock or a WITH HOLD cursor keeps
    /// the client on its server until it is gone (issue 19); off: PgBouncer's behaviour.
    public var pinSessionState: Bool = true
    /// Per-pattern query statistics in the workers (SHOW QUERIES, SHOW TABLES; issue 21).
    public var queryStats: Bool = true
    /// Patterns each worker keeps; beyond, the least used are evicted.
    public var queryStatsMax: Int = 5000
    /// Patterns (by total time) with `pgswift_query_*` series on /metrics; 0: none.
    public var queryStatsMetricsTop: Int = 50
    /// Milliseconds: a statement at least this slow is logged with its pattern (-1: off, 0: all).
    public var logMinDurationStatement: Int = -1
    /// The slow-statement line carries the statement's values (Bind parameters, or the simple Query's text).
    public var logStatementParameters: Bool = false
    /// Backend health checks (Supervisor/Health/HealthCheck.swift): first retry delay after a failed check,
    /// the backoff's cap, the check's own timeout, and who it logs in as ("" = chosen, see README).
    public var healthCheckBackoffInitial: Double = 0.5
    public var healthCheckBackoffMax: Double = 30
    public var healthCheckTimeout: Double = 5
    public var healthCheckUser: String = ""

    // MARK: The rest of the file

    /// `[databases]` in file order, without the `*` entry.
    public var databases: [DatabaseEntry] = []
    /// The `*` entry: template for database names not listed.
    public var fallbackDatabase: DatabaseEntry? = nil
    /// Read/write routing keys given in `[pgbouncer]`/`[pgswift]`: defaults every `[databases]` entry
    /// inherits at the end of the load (RoutingSettings.swift).
    public var routingDefaults = RoutingSettings()
    public var users: [String: UserEntry] = [:]
    /// `[peers]`, in id order (a later line for the same id replaces the earlier one).
    public var peers: [PeerEntry] = []
    public var configFile: String = ""
    public var warnings: [ConfigWarning] = []
    /// Raw values of PgBouncer keys pgswift accepts but does not implement (for SHOW CONFIG).
    public var ignoredSettings: [String: String] = [:]
    /// Why the TLS settings, changed by an admin console SET, cannot be set up (`load` stores it
    /// instead of failing; workers keep their previous TLS contexts, as PgBouncer does).
    public var tlsNotApplied: ConfigError? = nil
    /// Where each `[pgbouncer]`/`[pgswift]` key was last set (key in lower case).
    public var settingLocations: [String: ConfigLocation] = [:]

    /// A configuration with every default and no databases.
    public init() {}

    // MARK: Loading

    /// Reads, parses and validates a config file (includes, auth_file presence), with `environment`'s
    /// `${NAME}` values in its lines and `PGSWIFT_<KEY>` settings after the file's own, then the admin
    /// console's SET values (ConfigEnvironment.swift). The supervisor and workers pass
    /// `ConfigEnvironment.process()`; the empty default keeps other callers (tests) independent of the
    /// environment they run in. No other side effects.
    public static func load(path: String, overrides: [ConfigOverride] = [],
                            environment: ConfigEnvironment = [:]) throws(ConfigError) -> Config {
        var config = try parse(text: try ConfigFile.readText(path: path, what: "config file"), file: path,
                               overrides: overrides, environment: environment)
        try config.validateAuthFiles()
        do throws(ConfigError) {
            try config.validateTLS()
        } catch {
            // PgBouncer stores a SET TLS value even when the TLS set-up then fails, keeping the old
            // contexts (a NOTICE says so): certificate and key are SET one after the other.
            guard overrides.contains(where: \.isTLS) else { throw error }
            config.tlsNotApplied = error
        }
        try config.loadHbaRules()
        return config
    }

    /// Parses config text; `%include` and a relative `auth_file` resolve against `file`'s directory.
    /// Does not check that `auth_file` exists (`load` does, via `validateFiles`).
    public static func parse(text: String, file: String, overrides: [ConfigOverride] = [],
                             environment: ConfigEnvironment = [:]) throws(ConfigError) -> Config {
        var assembler = ConfigAssembler(file: file)
        try ConfigIniParser.parse(text: text, file: file, depth: 0, environment: environment) { (event) throws(ConfigError) in
            try assembler.handle(event)
        }
        try assembler.environment(environment)
        for o in overrides { try assembler.override(o) }
        return assembler.finish()
    }

    /// Checks the files the settings name: the auth files (`validateAuthFiles`) and the TLS ones.
    public func validateFiles() throws(ConfigError) {
        try validateAuthFiles()
        try validateTLS()
    }

    /// `auth_file` must be readable when set, and set (or `auth_user`) when `auth_type` needs it.
    func validateAuthFiles() throws(ConfigError) {
        if let authFile {
            if let reason = ConfigFile.unreadableReason(path: authFile) {
                throw settingError("auth_file \"\(authFile)\" cannot be read: \(reason)", at: "auth_file")
            }
        } else if authType.needsUserList && authUser == nil {
            throw settingError("auth_type \(authType.rawValue) needs auth_file (or auth_user) to know the users",
                               at: "auth_type")
        }
    }

    // MARK: Lookups

    /// The entry for a client-requested database: the exact entry, else the `*` fallback renamed to
    /// `name` (its server database then defaults to `name` too, as in PgBouncer).
    public func database(named name: String) -> DatabaseEntry? {
        if let entry = databases.first(where: { $0.name == name }) { return entry }
        guard var fallback = fallbackDatabase else { return nil }
        fallback.name = name
        return fallback
    }

    /// Pool mode for a pool: the pool user's `[users]` entry, else the database's, else `pool_mode`.
    /// The pool user is the database's forced `user` when it has one, else `user`.
    public func effectivePoolMode(database: DatabaseEntry?, user: String) -> PoolMode {
        let poolUser = database?.user ?? user
        return users[poolUser]?.poolMode ?? database?.poolMode ?? poolMode
    }

    /// Pool size for a pool: `[users]` pool_size, else the database's, else `default_pool_size`.
    public func effectivePoolSize(database: DatabaseEntry?, user: String) -> Int {
        let poolUser = database?.user ?? user
        return users[poolUser]?.poolSize ?? database?.poolSize ?? defaultPoolSize
    }

    /// Reserve pool size: `[users]`, else the database's, else `reserve_pool_size`; 0 when
    /// `reserve_pool_timeout` is 0, which turns the reserve off as in PgBouncer.
    public func effectiveReservePoolSize(database: DatabaseEntry?, user: String) -> Int {
        guard reservePoolTimeout > 0 else { return 0 }
        let poolUser = database?.user ?? user
        return users[poolUser]?.reservePoolSize ?? database?.reservePoolSize ?? reservePoolSize
    }

    /// The timeouts of the pool of `user` on `database`: a positive per-user value (of the pool user,
    /// as above) beats the global one, and so does a positive per-database `server_lifetime`, as in
    /// PgBouncer 1.25; query_wait_timeout as `effectiveQueryWaitTimeout` picks it.
    public func effectiveTimeouts(database: DatabaseEntry?, user: String) -> PoolTimeouts {
        let u = users[database?.user ?? user]
        func pick(_ own: Double?, _ global: Double) -> Double {
            if let own, own > 0 { return own }
            return global
        }
        return PoolTimeouts(seconds: pick(u?.queryTimeout, queryTimeout),
                            transaction: pick(u?.transactionTimeout, transactionTimeout),
                            idleTransaction: pick(u?.idleTransactionTimeout, idleTransactionTimeout),
                            clientIdle: pick(u?.clientIdleTimeout, clientIdleTimeout),
                            serverLifetime: pick(database?.serverLifetime, serverLifetime),
                            queryWait: effectiveQueryWaitTimeout(database: database, user: user))
    }

    /// How long a client of `user` (the name it logged in as, not a database's forced user) may wait
    /// for a server of `database`: the `[users]` value, else the `[databases]` one, else the global
    /// `query_wait_timeout`, as PgBouncer 1.25's janitor picks it. A level that sets 0 turns it off,
    /// beating the levels below (unlike the other per-user timeouts, where 0 inherits).
    public func effectiveQueryWaitTimeout(database: DatabaseEntry?, user: String) -> Double {
        users[user]?.queryWaitTimeout ?? database?.queryWaitTimeout ?? queryWaitTimeout
    }

    /// Minimum pool size of a database's pools.
    public func effectiveMinPoolSize(database: DatabaseEntry?) -> Int {
        database?.minPoolSize ?? minPoolSize
    }

    /// Server connection cap for a database (0 = unlimited); a per-database 0 inherits, as in PgBouncer.
    public func effectiveMaxDBConnections(database: DatabaseEntry?) -> Int {
        Self.positiveOr(database?.maxDBConnections, maxDBConnections)
    }

    /// Server connection cap for a user (0 = unlimited); a per-user 0 inherits, as in PgBouncer.
    public func effectiveMaxUserConnections(user: String) -> Int {
        Self.positiveOr(users[user]?.maxUserConnections, maxUserConnections)
    }

    /// Client connections allowed to a database (0 = unlimited): its own positive value, else the
    /// global `max_db_client_connections` (PgBouncer 1.25: a per-database 0 or -1 inherits). The admin
    /// console (no entry) has the global one.
    public func effectiveMaxDBClientConnections(database: DatabaseEntry?) -> Int {
        Self.positiveOr(database?.maxDBClientConnections, maxDBClientConnections)
    }

    /// Client connections allowed to a user, the name it logs in as (0 = unlimited): its `[users]`
    /// positive value, else the global `max_user_client_connections`.
    public func effectiveMaxUserClientConnections(user: String) -> Int {
        Self.positiveOr(users[user]?.maxUserClientConnections, maxUserClientConnections)
    }

    /// The connection caps' rule: an entry's own value when positive, else the global one (0, and
    /// for client caps -1, inherit).
    private static func positiveOr(_ own: Int?, _ global: Int) -> Int {
        if let own, own > 0 { return own }
        return global
    }

    /// The health-check query to send: nil = checking disabled, "" = send an empty query.
    public var serverCheckQueryToSend: String? {
        switch serverCheckQuery {
        case "": return nil
        case "<empty>": return ""
        default: return serverCheckQuery
        }
    }

    /// Where a `[pgbouncer]`/`[pgswift]` key was set, if it was.
    public func location(ofSetting key: String) -> ConfigLocation? {
        settingLocations[key.lowercased()]
    }

    /// An error about a setting, reported at the line of the first of `keys` that was set (else at
    /// the config file, line 0).
    func settingError(_ message: String, at keys: String...) -> ConfigError {
        let at = keys.lazy.compactMap { location(ofSetting: $0) }.first
        return ConfigError(file: at?.file ?? configFile, line: at?.line ?? 0, message: message)
    }

    // MARK: Introspection (SHOW CONFIG)

    /// One row of SHOW CONFIG.
    public struct Setting: Sendable, Equatable {
        public var key: String
        public var value: String
        public var defaultValue: String
        /// false: accepted for compatibility but pgswift does not act on it yet.
        public var implemented: Bool
        /// The admin console's SET may change it (SHOW CONFIG's `changeable`).
        public var changeable: Bool
    }

    /// Every `[pgbouncer]` key in PgBouncer's order, then the `[pgswift]` keys, then the read/write routing
    /// defaults either section may set.
    public func settings() -> [Setting] {
        (ConfigKeySpec.pgbouncer + ConfigKeySpec.pgswift).map { spec in
            let value = spec.show?(self) ?? ignoredSettings[spec.name] ?? spec.defaultValue
            return Setting(key: spec.name, value: value, defaultValue: spec.defaultValue,
                           implemented: spec.support == .implemented, changeable: spec.changeable)
        } + routingDefaults.defaultsRows.map {  // RoutingSettings.swift: the routing defaults, after them
            Setting(key: $0.key, value: $0.value, defaultValue: $0.defaultValue, implemented: true, changeable: true)
        }
    }

    /// The `[pgbouncer]`/`[pgswift]` keys whose value comes from a `PGSWIFT_<KEY>` variable (and not
    /// from a later SET), in key order, with the variable: SHOW CONFIG's NOTICE, `--check-config` and the
    /// supervisor's log say them, as SHOW CONFIG's rows have no column for it.
    public func settingsFromTheEnvironment() -> [(key: String, variable: String)] {
        settingLocations.compactMap { key, at in at.environmentVariable.map { (key: key, variable: $0) } }
            .sorted { $0.key < $1.key }
    }

    /// Why `name` cannot be an auth_dbname (an admin console name, PgBouncer's words), or nil.
    public static func reservedAuthDatabaseReason(_ name: String) -> String? {
        ConfigKeySpec.reservedAuthDatabaseReason(name)
    }

    /// The section a key belongs in ("pgbouncer" or "pgswift"); nil for a key that does not exist.
    public static func section(ofKey key: String) -> String? {
        let k = key.lowercased()
        if ConfigKeySpec.pgbouncerByName[k] != nil { return "pgbouncer" }
        return ConfigKeySpec.pgswiftByName[k] != nil ? "pgswift" : nil
    }

    /// Whether pgswift acts on a `[pgbouncer]`/`[pgswift]` key; nil for a key that does not exist.
    public static func isImplemented(key: String) -> Bool? {
        guard let spec = ConfigKeySpec.named(key) else { return nil }
        return spec.support == .implemented
    }

    static func onlineCPUCount() -> Int {
        let n = Posix.onlineProcessors()
        return n > 0 ? n : 1
    }
}
