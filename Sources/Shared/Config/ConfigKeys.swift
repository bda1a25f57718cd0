// The one table of settings: every PgBouncer 1.2x key with its default, and what pgswift does with it.

/// A setting value after parsing, before it is stored into `Config`.
enum ConfigValue: Sendable {
    case int(Int)
    case bool(Bool)
    case seconds(Double)
    case text(String)
    case list([String])
}

/// Why a value was rejected (the caller adds file, line and key).
struct ConfigValueError: Error, Sendable {
    var reason: String
}

struct ConfigKeySpec: Sendable {
    enum Support: Sendable, Equatable {
        /// pgswift acts on it.
        case implemented
        /// A PgBouncer key pgswift does not implement: validated, kept raw, ignored with a warning.
        case notImplemented
    }

    enum Kind: Sendable {
        case int(min: Int, max: Int)
        /// 1/0, yes/no, on/off, true/false; any other integer too (PgBouncer stores these as ints).
        case bool
        /// Non-negative seconds, fractions allowed (PgBouncer's CF_TIME_USEC).
        case seconds
        case text
        /// Comma-separated, items trimmed.
        case list
        /// One of a fixed set of words, matched case-insensitively.
        case lookup([String])
        /// A `[databases]` name to run auth_query in; "" is not set. The admin console's names are
        /// refused, as by PgBouncer's CF_AUTHDB: no query can run there.
        case authDatabase
    }

    /// Database names that are the admin console, never a `[databases]` entry a query can run in.
    static let adminDatabaseNames: Set<String> = ["pgbouncer", "pgswift"]

    /// Why `name` cannot be an auth_dbname (PgBouncer's words), or nil.
    static func reservedAuthDatabaseReason(_ name: String) -> String? {
        adminDatabaseNames.contains(name) ? "cannot use the reserved \"\(name)\" database as an auth_dbname" : nil
    }

    let name: String
    let kind: Kind
    /// PgBouncer's default written as in the config file ("" = not set).
    let defaultValue: String
    let support: Support
    let store: (@Sendable (inout Config, ConfigValue) -> Void)?
    let show: (@Sendable (Config) -> String)?

    func parse(_ text: String) throws(ConfigValueError) -> ConfigValue {
        switch kind {
        case .int(let min, let max):
            guard let v = ConfigText.cInteger(text) else {
                throw ConfigValueError(reason: "not an integer")
            }
            guard v >= min && v <= max else {
                throw ConfigValueError(reason: max == Self.intMax ? "must be at least \(min)"
                                                                  : "must be between \(min) and \(max)")
            }
            return .int(v)
        case .bool:
            switch text.lowercased() {
            case "1", "yes", "on", "true": return .bool(true)
            case "0", "no", "off", "false": return .bool(false)
            default:
                if let v = ConfigText.cInteger(text) { return .bool(v != 0) }
                throw ConfigValueError(reason: "not a boolean (use 1/0, yes/no, on/off or true/false)")
            }
        case .seconds:
            guard let v = ConfigText.seconds(text) else {
                throw ConfigValueError(reason: "not a non-negative number of seconds")
            }
            return .seconds(v)
        case .text:
            return .text(text)
        case .authDatabase:
            if let why = Self.reservedAuthDatabaseReason(text) { throw ConfigValueError(reason: why) }
            return .text(text)
        case .list:
            return .list(ConfigText.list(text))
        case .lookup(let words):
            let w = text.lowercased()
            guard words.contains(w) else {
                if let why = Self.refusedValues[name]?[w] {
                    throw ConfigValueError(reason: why + " (pgswift's values: " + words.joined(separator: ", ") + ")")
                }
                throw ConfigValueError(reason: "expected one of: " + words.joined(separator: ", "))
            }
            return .text(w)
        }
    }
}

extension ConfigKeySpec {
    static let intMax = Int(Int32.max)

    static let defaultAuthQuery = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE "
        + "rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin"

    /// `[pgbouncer]`, in PgBouncer's order (alphabetical, as SHOW CONFIG lists them). This is the
    /// list of what pgswift implements: `.implemented` rows act, `ignored` rows are accepted with a warning. An
    /// `.implemented` row's property must be read by the code that runs (scripts/check-config-readers,
    /// docs/CONFIG.md).
    static let pgbouncer: [ConfigKeySpec] = [
        list("admin_users", "", \.adminUsers),
        bool("application_name_add_host", "0", \.applicationNameAddHost),
        optionalText("auth_dbname", "", \.authDbname, kind: .authDatabase),
        optionalText("auth_file", "", \.authFile),
        optionalText("auth_hba_file", "", \.authHbaFile),
        optionalText("auth_ident_file", "", \.authIdentFile),
        ignored("auth_ldap_options", "", .text),
        text("auth_query", defaultAuthQuery, \.authQuery),
        lookup("auth_type", "md5", \.authType),
        optionalText("auth_user", "", \.authUser),
        seconds("autodb_idle_timeout", "3600", \.autodbIdleTimeout),
        ignored("cancel_wait_timeout", "10", .seconds),
        seconds("client_idle_timeout", "0", \.clientIdleTimeout),
        seconds("client_login_timeout", "60", \.clientLoginTimeout),
        text("client_tls13_ciphers", "", \.clientTLS.tls13Ciphers),
        text("client_tls_ca_file", "", \.clientTLS.caFile),
        text("client_tls_cert_file", "", \.clientTLS.certFile),
        text("client_tls_ciphers", "default", \.clientTLS.ciphers),
        text("client_tls_dheparams", "auto", \.clientTLS.dheParams),
        text("client_tls_ecdhcurve", "auto", \.clientTLS.ecdhCurve),
        text("client_tls_key_file", "", \.clientTLS.keyFile),
        text("client_tls_protocols", "secure", \.clientTLS.protocols),
        lookup("client_tls_sslmode", "disable", \.clientTLS.mode),
        ignored("conffile", "", .text),
        int("default_pool_size", "20", \.defaultPoolSize),
        ignored("disable_pqexec", "0", .bool),
        seconds("dns_max_ttl", "15", \.dnsMaxTTL),
        seconds("dns_nxdomain_ttl", "15", \.dnsNXDomainTTL),
        ignored("dns_zone_check_period", "0", .seconds),
        seconds("idle_transaction_timeout", "0", \.idleTransactionTimeout),
        list("ignore_startup_parameters", "", \.ignoreStartupParameters),
        ignored("job_name", "pgbouncer", .text),
        list("listen_addr", "", \.listenAddr),
        int("listen_backlog", "128", \.listenBacklog, min: 1),
        int("listen_port", "6432", \.listenPort, min: 1, max: 65535),
        bool("log_connections", "1", \.logConnections),
        bool("log_disconnections", "1", \.logDisconnections),
        bool("log_pooler_errors", "1", \.logPoolerErrors),
        bool("log_stats", "1", \.logStats),
        optionalText("logfile", "", \.logfile),
        ignored("login_notify_message", "", .text),
        int("max_client_conn", "100", \.maxClientConn),
        int("max_db_client_connections", "0", \.maxDBClientConnections),
        int("max_db_connections", "0", \.maxDBConnections),
        int("max_packet_size", "2147483647", \.maxPacketSize, min: 0, max: Int(UInt32.max)),
        int("max_prepared_statements", "200", \.maxPreparedStatements),
        int("max_user_client_connections", "0", \.maxUserClientConnections),
        int("max_user_connections", "0", \.maxUserConnections),
        int("min_pool_size", "0", \.minPoolSize),
        int("peer_id", "0", \.peerID, max: PeerEntry.maxOwnID),
        optionalText("pidfile", "", \.pidfile),
        ignored("pkt_buf", "4096", .int(min: 256, max: intMax)),
        seconds("pool_idle_timeout", "3600", \.poolIdleTimeout),
        lookup("pool_mode", "session", \.poolMode),
        seconds("query_timeout", "0", \.queryTimeout),
        int("query_wait_notify", "5", \.queryWaitNotify),
        seconds("query_wait_timeout", "120", \.queryWaitTimeout),
        int("reserve_pool_size", "0", \.reservePoolSize),
        seconds("reserve_pool_timeout", "5", \.reservePoolTimeout),
        ignored("resolv_conf", "", .text),
        ignored("sbuf_loopcnt", "5", .int(min: 0, max: intMax)),
        int("scram_iterations", "4096", \.scramIterations, min: 1),
        seconds("server_check_delay", "30", \.serverCheckDelay),
        text("server_check_query", "<empty>", \.serverCheckQuery),
        seconds("server_connect_timeout", "15", \.serverConnectTimeout),
        bool("server_fast_close", "0", \.serverFastClose),
        seconds("server_idle_timeout", "600", \.serverIdleTimeout),
        seconds("server_lifetime", "3600", \.serverLifetime),
        seconds("server_login_retry", "15", \.serverLoginRetry),
        text("server_reset_query", "DISCARD ALL", \.serverResetQuery),
        bool("server_reset_query_always", "0", \.serverResetQueryAlways),
        bool("server_round_robin", "0", \.serverRoundRobin),
        text("server_tls13_ciphers", "", \.serverTLS.tls13Ciphers),
        text("server_tls_ca_file", "", \.serverTLS.caFile),
        text("server_tls_cert_file", "", \.serverTLS.certFile),
        text("server_tls_ciphers", "default", \.serverTLS.ciphers),
        text("server_tls_key_file", "", \.serverTLS.keyFile),
        text("server_tls_protocols", "secure", \.serverTLS.protocols),
        lookup("server_tls_sslmode", "prefer", \.serverTLS.mode),
        ignored("service_name", "pgbouncer", .text),
        bool("so_reuseport", "0", \.soReuseport),
        int("stats_period", "60", \.statsPeriod, min: 1),
        list("stats_users", "", \.statsUsers),
        ignored("suspend_timeout", "10", .seconds),
        bool("syslog", "0", \.syslog),
        lookup("syslog_facility", "daemon", \.syslogFacility),
        text("syslog_ident", "pgbouncer", \.syslogIdent),
        ignored("tcp_defer_accept", "1", .int(min: 0, max: intMax)),
        bool("tcp_keepalive", "1", \.tcpKeepalive),
        int("tcp_keepcnt", "0", \.tcpKeepcnt),
        int("tcp_keepidle", "0", \.tcpKeepidle),
        int("tcp_keepintvl", "0", \.tcpKeepintvl),
        ignored("tcp_socket_buffer", "0", .int(min: 0, max: intMax)),
        int("tcp_user_timeout", "0", \.tcpUserTimeout),
        list("track_extra_parameters", "IntervalStyle", \.trackExtraParameters),
        seconds("transaction_timeout", "0", \.transactionTimeout),
        text("unix_socket_dir", "/tmp", \.unixSocketDir),
        text("unix_socket_group", "", \.unixSocketGroup),
        int("unix_socket_mode", "0777", \.unixSocketMode, min: 0, max: 0o7777),
        ignored("user", "", .text),
        int("verbose", "0", \.verbose),
    ]

    /// `[pgswift]`: pgswift's own settings (`workers` defaults to the number of online CPUs).
    static let pgswift: [ConfigKeySpec] = [
        seconds("auth_query_cache_ttl", "60", \.authQueryCacheTTL),
        seconds("drain_timeout", "300", \.drainTimeout),
        bool("fail_fast", "0", \.failFast),
        seconds("health_check_backoff_initial", "0.5", \.healthCheckBackoffInitial),
        seconds("health_check_backoff_max", "30", \.healthCheckBackoffMax),
        seconds("health_check_timeout", "5", \.healthCheckTimeout),
        text("health_check_user", "", \.healthCheckUser),
        lookup("listen_mode", "relay", \.listenMode),
        int("log_min_duration_statement", "-1", \.logMinDurationStatement, min: -1),
        bool("log_statement_parameters", "0", \.logStatementParameters),
        text("metrics_listen", "", \.metricsListen),
        bool("pin_session_state", "1", \.pinSessionState),
        lookup("prepared_statement_errors", "disconnect", \.preparedStatementErrors),
        bool("query_stats", "1", \.queryStats),
        int("query_stats_max", "5000", \.queryStatsMax, min: 1, max: 100_000),
        int("query_stats_metrics_top", "50", \.queryStatsMetricsTop, min: 0, max: 10_000),
        optionalText("worker_binary", "", \.workerBinary),
        int("workers", "", \.workers, min: 1, max: 4096),
    ]

    /// Values PgBouncer may take for a lookup key that pgswift refuses, and why: loading such a config
    /// would otherwise fail every login (PgBouncer, too, refuses a value it was built without).
    static let refusedValues: [String: [String: String]] = [
        "auth_type": [
            "pam": "pgswift does not do PAM authentication (PgBouncer has it only when built with PAM)",
            "ldap": "pgswift does not do LDAP authentication (PgBouncer has it only when built with LDAP)",
            "peer": "peer is a method of auth_hba_file lines, not an auth_type (as in PgBouncer): "
                + "use auth_type = hba with a local line whose method is peer",
        ],
    ]

    /// Why a PgBouncer key has no effect in pgswift by design (not "not yet"): its load warning says so.
    static let noEffectReasons: [String: String] = [
        "pkt_buf": "pgswift's I/O buffers are 32 KiB chunks shared by the worker's connections and held only "
            + "while data is in flight (docs/ARCHITECTURE.md, Buffers), not per-connection buffers of pkt_buf bytes",
    ]

    static let pgbouncerByName: [String: ConfigKeySpec] = index(pgbouncer)
    static let pgswiftByName: [String: ConfigKeySpec] = index(pgswift)

    /// A `[pgbouncer]` or `[pgswift]` key by name, any case.
    static func named(_ key: String) -> ConfigKeySpec? {
        let k = key.lowercased()
        return pgbouncerByName[k] ?? pgswiftByName[k]
    }

    /// Keys the admin console's SET does not change (it accepts and ignores them, as PgBouncer does)
    /// and SHOW CONFIG shows as not changeable: PgBouncer
    /// 1.25's CF_NO_RELOAD keys (src/main.c; `service_name` is its Windows alias of `job_name`), and
    /// pgswift's own that shape processes or sockets (`RestartSettings`) or are opened once
    /// (`metrics_listen`). Everything else a RELOAD applies, so SET applies it the same way.
    static let restartOnly: Set<String> = [
        "disable_pqexec", "job_name", "listen_addr", "listen_backlog", "listen_port", "peer_id", "pidfile", "pkt_buf",
        "resolv_conf", "service_name", "so_reuseport", "track_extra_parameters", "unix_socket_dir",
        "unix_socket_group", "unix_socket_mode", "user",
        "metrics_listen", "worker_binary", "workers",
    ]

    /// Whether SET may change the key online.
    var changeable: Bool { !Self.restartOnly.contains(name) }

    private static func index(_ specs: [ConfigKeySpec]) -> [String: ConfigKeySpec] {
        var d: [String: ConfigKeySpec] = [:]
        for s in specs { d[s.name] = s }
        return d
    }
}

// Row builders: each ties a key to its `Config` property so parsing, storing and SHOW stay in step.
extension ConfigKeySpec {
    static func int(_ name: String, _ def: String, _ kp: WritableKeyPath<Config, Int> & Sendable,
                    min: Int = 0, max: Int = intMax, _ support: Support = .implemented) -> ConfigKeySpec {
        ConfigKeySpec(name: name, kind: .int(min: min, max: max), defaultValue: def, support: support,
                      store: { c, v in if case .int(let i) = v { c[keyPath: kp] = i } },
                      show: { c in String(c[keyPath: kp]) })
    }

    static func bool(_ name: String, _ def: String, _ kp: WritableKeyPath<Config, Bool> & Sendable,
                     _ support: Support = .implemented) -> ConfigKeySpec {
        ConfigKeySpec(name: name, kind: .bool, defaultValue: def, support: support,
                      store: { c, v in if case .bool(let b) = v { c[keyPath: kp] = b } },
                      show: { c in c[keyPath: kp] ? "1" : "0" })
    }

    static func seconds(_ name: String, _ def: String, _ kp: WritableKeyPath<Config, Double> & Sendable,
                        _ support: Support = .implemented) -> ConfigKeySpec {
        ConfigKeySpec(name: name, kind: .seconds, defaultValue: def, support: support,
                      store: { c, v in if case .seconds(let s) = v { c[keyPath: kp] = s } },
                      show: { c in ConfigText.formatSeconds(c[keyPath: kp]) })
    }

    static func text(_ name: String, _ def: String, _ kp: WritableKeyPath<Config, String> & Sendable,
                     _ support: Support = .implemented) -> ConfigKeySpec {
        ConfigKeySpec(name: name, kind: .text, defaultValue: def, support: support,
                      store: { c, v in if case .text(let s) = v { c[keyPath: kp] = s } },
                      show: { c in c[keyPath: kp] })
    }

    /// A string whose empty value means "not set" (nil).
    static func optionalText(_ name: String, _ def: String,
                             _ kp: WritableKeyPath<Config, String?> & Sendable,
                             _ support: Support = .implemented, kind: Kind = .text) -> ConfigKeySpec {
        ConfigKeySpec(name: name, kind: kind, defaultValue: def, support: support,
                      store: { c, v in if case .text(let s) = v { c[keyPath: kp] = s.isEmpty ? nil : s } },
                      show: { c in c[keyPath: kp] ?? "" })
    }

    static func list(_ name: String, _ def: String, _ kp: WritableKeyPath<Config, [String]> & Sendable,
                     _ support: Support = .implemented) -> ConfigKeySpec {
        ConfigKeySpec(name: name, kind: .list, defaultValue: def, support: support,
                      store: { c, v in if case .list(let l) = v { c[keyPath: kp] = l } },
                      show: { c in c[keyPath: kp].joined(separator: ",") })
    }

    static func lookup<E>(_ name: String, _ def: String, _ kp: WritableKeyPath<Config, E> & Sendable,
                          _ support: Support = .implemented) -> ConfigKeySpec
    where E: RawRepresentable & CaseIterable & Sendable, E.RawValue == String {
        ConfigKeySpec(name: name, kind: .lookup(E.allCases.map { $0.rawValue }), defaultValue: def,
                      support: support,
                      store: { c, v in
                          if case .text(let s) = v, let e = E(rawValue: s) { c[keyPath: kp] = e }
                      },
                      show: { c in c[keyPath: kp].rawValue })
    }

    /// A PgBouncer key pgswift does not implement: its value is still checked against `kind`.
    static func ignored(_ name: String, _ def: String, _ kind: Kind) -> ConfigKeySpec {
        ConfigKeySpec(name: name, kind: kind, defaultValue: def, support: .notImplemented,
                      store: nil, show: nil)
    }
}
