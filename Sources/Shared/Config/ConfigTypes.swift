// Public value types of the configuration model: modes, [databases]/[users] entries, errors, warnings.

/// What a client gets for a named Parse, Bind or Describe pgswift cannot map in transaction or statement
/// mode (a statement name in use, or unknown: `[pgswift] prepared_statement_errors`).
public enum PreparedStatementErrors: String, Sendable, CaseIterable {
    /// PgBouncer's way: FATAL 08P01 and the client is disconnected.
    case disconnect
    /// PostgreSQL's way (pgswift's extension): its ERROR (42P05, 26000), the client's messages skipped
    /// to its Sync, and the session goes on.
    case postgresql
}

/// What LISTEN does in transaction and statement mode (`[pgswift] listen_mode`).
public enum ListenMode: String, Sendable, CaseIterable {
    /// One listening server connection per pool and worker relays notifications to subscribed clients.
    case relay
    /// A listening client keeps its server (linked as in session mode) while it listens.
    case pin
    /// Today's behaviour: the LISTEN runs on the pooled server, which is reset before its next client.
    case off
}

/// When a server connection goes back to the pool (PgBouncer's `pool_mode`).
public enum PoolMode: String, Sendable, CaseIterable {
    case session, transaction, statement
}

/// Where syslog files the lines (PgBouncer's `syslog_facility`: its names, no others).
public enum SyslogFacility: String, Sendable, CaseIterable {
    case auth, authpriv, daemon, user, local0, local1, local2, local3, local4, local5, local6, local7

    /// The facility as syslog(3) encodes it (`LOG_DAEMON` is 3 << 3...), the same on every Linux libc.
    public var code: Int32 {
        switch self {
        case .user: return 1 << 3
        case .daemon: return 3 << 3
        case .auth: return 4 << 3
        case .authpriv: return 10 << 3
        case .local0, .local1, .local2, .local3, .local4, .local5, .local6, .local7:
            // LOG_LOCAL0 ... LOG_LOCAL7 are facilities 16 to 23: the name's digit says which.
            return (16 + Int32(rawValue.utf8.last! &- UInt8(ascii: "0"))) << 3
        }
    }
}

/// How clients authenticate (PgBouncer's `auth_type`, spelled as PgBouncer spells it): the values
/// pgswift can do. PgBouncer's others are refused at load time (`ConfigKeySpec.refusedValues`).
public enum AuthType: String, Sendable, CaseIterable {
    case trust, any, plain, md5, scramSHA256 = "scram-sha-256", cert, hba

    /// Whether the user list must come from `auth_file` (or `auth_user`) for this method to work:
    /// PgBouncer looks users up there for every method except `any` and the delegating ones.
    public var needsUserList: Bool {
        switch self {
        case .trust, .plain, .md5, .scramSHA256: return true
        case .any, .cert, .hba: return false
        }
    }
}

/// What a `ConfigMessage` is: a `ConfigError` stops loading, a `ConfigWarning` is logged.
public protocol ConfigSeverity: Sendable {}
public enum ConfigFailure: ConfigSeverity {}
public enum ConfigNotice: ConfigSeverity {}

/// A message about a line of a config, auth or hba file, printed "file:line: message"; `line` is 0
/// when the problem is not tied to a line. Errors and warnings carry the same parts, so they are one
/// type told apart by `Severity` (a warning cannot be thrown where a `ConfigError` is expected).
public struct ConfigMessage<Severity: ConfigSeverity>: Error, CustomStringConvertible, Sendable, Equatable {
    public var location: ConfigLocation
    public var message: String

    public init(file: String, line: Int, message: String) {
        location = ConfigLocation(file: file, line: line)
        self.message = message
    }

    public var file: String { location.file }
    public var line: Int { location.line }
    public var description: String { "\(location): \(message)" }
}

/// A configuration problem that stops loading.
public typealias ConfigError = ConfigMessage<ConfigFailure>

/// Something accepted but worth telling the operator (a key pgswift ignores, a section it skips).
public typealias ConfigWarning = ConfigMessage<ConfigNotice>

/// Where a setting was read from, so later failures (bind, open) can point at the line.
public struct ConfigLocation: CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var line: Int

    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }

    /// "file:line"; just the origin when there is no line (-1: a setting from the environment).
    public var description: String { line < 0 ? file : "\(file):\(line)" }
}

/// One startup parameter by name: one a `[databases]` entry forces on server connections, or one
/// that follows a client to another worker (`HandoffParameter`).
public struct ConnParam: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// One `[databases]` line: where a client-visible database name is routed and how it is pooled.
/// `nil` optionals mean "not set here": the global setting (or the client's value) applies.
public struct DatabaseEntry: Sendable, Equatable {
    /// How a new server connection picks among several `hosts`.
    public enum LoadBalance: String, Sendable, CaseIterable {
        case roundRobin = "round-robin"
        case disable
        /// pgswift's extension: the healthy host this worker holds the fewest connections to.
        case leastConnections = "least-connections"
    }

    /// The name clients ask for (for the `*` fallback, the name actually requested).
    public var name: String
    /// Empty: not set, PgBouncer then connects over the Unix socket in `unix_socket_dir`.
    /// An entry starting with `/` (or `@`, abstract namespace) is a Unix socket directory.
    public var hosts: [String]
    /// One port for every host, or exactly one port per host.
    public var ports: [Int]
    /// Server-side database name; `nil` means the same as `name`.
    public var dbname: String?
    /// Forced server user: all clients share one pool logged in as this user.
    public var user: String?
    public var password: String?
    public var authUser: String?
    /// Overrides of the global `auth_query` and `auth_dbname` for this database's clients.
    public var authQuery: String?
    public var authDbname: String?
    public var poolSize: Int?
    public var minPoolSize: Int?
    /// Stored (SHOW DATABASES shows it) but not acted on yet: the key warns at load time.
    public var reservePoolSize: Int?
    public var poolMode: PoolMode?
    public var maxDBConnections: Int?
    /// Client connections of the database for the whole service; nil or 0: the global value.
    public var maxDBClientConnections: Int?
    /// Run once on each new server connection before it serves clients (Worker/Login/ConnectQuery.swift).
    public var connectQuery: String?
    /// Seconds; nil or 0: the global `server_lifetime` (PgBouncer 1.25 reads 0 as "not set").
    public var serverLifetime: Double?
    /// Seconds; nil: not set (the user's, else the global `query_wait_timeout` applies); 0: off.
    public var queryWaitTimeout: Double?
    public var loadBalanceHosts: LoadBalance
    /// libpq's target_session_attrs, checked by the supervisor's health check.
    public var targetSessionAttrs: TargetSessionAttrs = .any
    /// Read/write routing (RoutingSettings.swift; Worker/Pool/Routing.swift).
    public var routing = RoutingSettings()
    /// client_encoding, datestyle, timezone, application_name, in the order written: sent in the
    /// startup packet of every server connection of the database (so they are the session defaults
    /// the pool's first server reports to clients; a client's own value still wins, by a SET at link).
    public var startupParameters: [ConnParam]
    public var line: Int
    public var file: String

    public init(name: String, hosts: [String] = [], ports: [Int] = [5432], dbname: String? = nil,
                user: String? = nil, password: String? = nil, authUser: String? = nil,
                poolSize: Int? = nil, minPoolSize: Int? = nil, reservePoolSize: Int? = nil,
                poolMode: PoolMode? = nil, maxDBConnections: Int? = nil, connectQuery: String? = nil,
                loadBalanceHosts: LoadBalance = .roundRobin, startupParameters: [ConnParam] = [],
                line: Int = 0, file: String = "") {
        self.name = name
        self.hosts = hosts
        self.ports = ports
        self.dbname = dbname
        self.user = user
        self.password = password
        self.authUser = authUser
        self.poolSize = poolSize
        self.minPoolSize = minPoolSize
        self.reservePoolSize = reservePoolSize
        self.poolMode = poolMode
        self.maxDBConnections = maxDBConnections
        self.connectQuery = connectQuery
        self.loadBalanceHosts = loadBalanceHosts
        self.startupParameters = startupParameters
        self.line = line
        self.file = file
    }

    /// The database name sent to the server.
    public var serverDatabaseName: String { dbname ?? name }

    /// Whether server connections made for `old` must close once this entry replaces it, as
    /// PgBouncer's RELOAD tags a database dirty: another server database, host, port, forced user,
    /// connect_query, auth_dbname, auth_query or load_balance_hosts (a password alone does not, as
    /// there: servers logged in with the old one stay valid).
    public func needsReconnect(from old: DatabaseEntry) -> Bool {
        serverDatabaseName != old.serverDatabaseName || hosts != old.hosts || ports != old.ports
            || user != old.user || connectQuery != old.connectQuery || authDbname != old.authDbname
            || authQuery != old.authQuery || loadBalanceHosts != old.loadBalanceHosts
    }

    /// The port for `hosts[index]` (a single port applies to every host).
    public func port(forHostAt index: Int) -> Int {
        if ports.count == 1 { return ports[0] }
        return index < ports.count ? ports[index] : 5432
    }

    /// Whether a host entry names a Unix socket directory (or an abstract socket) rather than a TCP host.
    public static func isUnixSocket(_ host: String) -> Bool {
        host.hasPrefix("/") || host.hasPrefix("@")
    }
}

/// One `[users]` line: per-user overrides of pool settings. Made only by the config loader (with
/// the compiler's memberwise initializer); other modules read it.
public struct UserEntry: Sendable, Equatable {
    public var name: String
    public var poolMode: PoolMode?
    public var maxUserConnections: Int?
    public var poolSize: Int?
    /// Stored (SHOW USERS shows it) but not acted on yet: the key warns at load time.
    public var reservePoolSize: Int?
    /// Seconds; nil or 0: the global value applies (PgBouncer 1.25: a per-user 0 is "not set", so it
    /// cannot switch a global timeout off).
    public var queryTimeout: Double?
    public var transactionTimeout: Double?
    public var idleTransactionTimeout: Double?
    public var clientIdleTimeout: Double?
    /// Seconds; nil: not set (the database's, else the global value applies); 0: off, beating both.
    public var queryWaitTimeout: Double?
    /// Client connections of the user (as it logs in) for the whole service; nil or 0: the global value.
    public var maxUserClientConnections: Int?
}

/// The timeouts a pool applies, resolved once (`Config.effectiveTimeouts`): the `[users]` and
/// `[databases]` overrides against the globals, in monotonic nanoseconds, so the worker's janitor and
/// release path read them with neither a lookup nor a conversion. 0: off (`serverLifetime` 0: a server
/// serves one client, then closes).
public struct PoolTimeouts: Sendable, Equatable {
    public var query: Int64 = 0
    public var transaction: Int64 = 0
    public var idleTransaction: Int64 = 0
    public var clientIdle: Int64 = 0
    public var serverLifetime: Int64 = 0
    /// query_wait_timeout of the pool's (login) user and database (`Config.effectiveQueryWaitTimeout`).
    public var queryWait: Int64 = 0

    public init() {}

    /// From seconds, as the configuration gives them.
    public init(seconds query: Double, transaction: Double, idleTransaction: Double, clientIdle: Double,
                serverLifetime: Double, queryWait: Double) {
        self.query = Clock.nanos(seconds: query)
        self.transaction = Clock.nanos(seconds: transaction)
        self.idleTransaction = Clock.nanos(seconds: idleTransaction)
        self.clientIdle = Clock.nanos(seconds: clientIdle)
        self.serverLifetime = Clock.nanos(seconds: serverLifetime)
        self.queryWait = Clock.nanos(seconds: queryWait)
    }
}

/// One admin console `SET key = value`, kept by the supervisor until the next RELOAD and applied on
/// top of the file by every process that loads the configuration (`Config.load(path:overrides:)`).
public struct ConfigOverride: Sendable, Equatable {
    /// Lower case, as in the key table.
    public var key: String
    public var value: String

    public init(key: String, value: String) {
        self.key = key.lowercased()
        self.value = value
    }

    /// A TLS key (PgBouncer's test: the name contains `_tls_` or `_tls13_`).
    public var isTLS: Bool { key.contains("_tls_") || key.contains("_tls13_") }

    /// The "file" that config messages about an override name.
    public static let origin = "admin console SET"

    /// `overrides` with `new` replacing an earlier value of the same key (order of first SET kept).
    public static func merging(_ overrides: [ConfigOverride], _ new: ConfigOverride) -> [ConfigOverride] {
        var result = overrides
        if let i = result.firstIndex(where: { $0.key == new.key }) {
            result[i] = new
        } else {
            result.append(new)
        }
        return result
    }

    /// What the admin console's SET may do with a key and value, before the whole configuration is
    /// loaded with it (which may still fail: a file that cannot be read, TLS files, ...).
    public enum Check: Equatable, Sendable {
        case accepted(ConfigOverride)
        /// No such `[pgbouncer]` or `[pgswift]` key.
        case unknownKey
        /// A key PgBouncer does not change online (CF_NO_RELOAD) or pgswift applies only at start.
        case restartOnly(key: String)
        /// The value does not parse for the key (the reason says why).
        case invalidValue(key: String, reason: String)
    }

    public static func check(key rawKey: String, value: String) -> Check {
        let key = rawKey.lowercased()
        guard let spec = ConfigKeySpec.named(key) else { return .unknownKey }
        guard spec.changeable else { return .restartOnly(key: key) }
        do {
            _ = try spec.parse(value)
        } catch {
            return .invalidValue(key: key, reason: error.reason)
        }
        return .accepted(ConfigOverride(key: key, value: value))
    }
}

/// One `[peers]` line (`N = host=... port=... pool_size=...`): another pooler that cancel requests
/// carrying peer id `id` are forwarded to (PgBouncer's peering).
public struct PeerEntry: Sendable, Equatable {
    /// PgBouncer's documented maximum of `peer_id` (the key has 16 bits for it).
    public static let maxOwnID = 16383
    /// What PgBouncer accepts as a `[peers]` name.
    public static let maxID = 65535
    public var id: Int
    /// A host name or address, or a Unix socket directory (starts with `/`).
    public var host: String
    public var port: Int = 6432
    /// Cancel requests in flight to the peer at once; nil: `default_pool_size`.
    public var poolSize: Int? = nil

    public init(id: Int, host: String, port: Int = 6432, poolSize: Int? = nil) {
        self.id = id
        self.host = host
        self.port = port
        self.poolSize = poolSize
    }

    /// The socket path when `host` is a Unix socket directory, else nil.
    public var unixSocketPath: String? { host.hasPrefix("/") ? "\(host)/.s.PGSQL.\(port)" : nil }
}

extension Config {
    /// The `[peers]` entry for `id`, if any.
    public func peer(id: Int) -> PeerEntry? { peers.first { $0.id == id } }

    /// How many cancel requests may be in flight to `peer` at once.
    public func poolSize(of peer: PeerEntry) -> Int { peer.poolSize ?? defaultPoolSize }
}
