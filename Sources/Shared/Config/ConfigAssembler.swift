// Turns ini events into a Config: section rules, key table lookups, [databases]/[users] entries.

struct ConfigAssembler {
    enum Section {
        case pgbouncer, pgswift, databases, users, peers
    }

    private var config = Config()
    private var section: Section? = nil
    private var sawMainSection = false
    /// Some `PGSWIFT_<KEY>` applied: a file without [pgbouncer] is then expected, not worth a warning.
    private var sawEnvironmentSettings = false

    init(file: String) {
        config.configFile = file
    }

    mutating func handle(_ event: ConfigIniEvent) throws(ConfigError) {
        switch event {
        case .section(let name, let file, let line):
            switch name.lowercased() {
            case "pgbouncer":
                section = .pgbouncer
                sawMainSection = true
            case "pgswift": section = .pgswift
            case "databases": section = .databases
            case "users": section = .users
            case "peers": section = .peers
            default:
                throw ConfigError(file: file, line: line, message: "unknown section [\(name)] "
                                  + "(expected [pgbouncer], [pgswift], [databases], [users] or [peers])")
            }
        case .entry(let key, let value, let file, let line):
            guard let section else {
                throw ConfigError(file: file, line: line,
                                  message: "\"\(key)\" is outside of any section (start with [pgbouncer])")
            }
            switch section {
            case .pgbouncer: try setting(key, value, file, line, in: "pgbouncer")
            case .pgswift: try setting(key, value, file, line, in: "pgswift")
            case .databases: try database(key, value, file, line)
            case .users: try user(key, value, file, line)
            case .peers: try peer(key, value, file, line)
            }
        }
    }

    func finish() -> Config {
        var result = config
        for i in result.databases.indices {
            result.databases[i].routing.inherit(config.routingDefaults)
            let e = result.databases[i]
            if e.routing.enabled && (e.poolMode ?? config.poolMode) == .session {
                result.warnings.append(ConfigWarning(file: e.file, line: e.line, message: "database \"\(e.name)\": "
                    + "routing=read-write-split does not route session-mode pools (every session goes to the primary)"))
            }
        }
        result.fallbackDatabase?.routing.inherit(config.routingDefaults)
        if !sawMainSection && !sawEnvironmentSettings {
            result.warnings.append(ConfigWarning(file: config.configFile, line: 0,
                                                 message: "no [pgbouncer] section; using defaults"))
        }
        return result
    }

    /// A relative file name, against the working directory as in PgBouncer (ConfigFile.swift).
    private mutating func resolveFile(_ key: String, _ path: String, configFile: String,
                                      _ file: String, _ line: Int) -> String {
        let r = ConfigFile.resolveFromWorkingDirectory(path, configFile: configFile)
        if r.nextToConfig {
            warn(file, line, "\(key) \"\(path)\" is not in the working directory; using \(r.path) next to the "
                 + "config file (PgBouncer takes relative names from the working directory only)")
        }
        return r.path
    }

    private mutating func warn(_ file: String, _ line: Int, _ message: String) {
        config.warnings.append(ConfigWarning(file: file, line: line, message: message))
    }

    // MARK: [pgbouncer] and [pgswift]

    private mutating func setting(_ rawKey: String, _ value: String, _ file: String, _ line: Int,
                                  in sectionName: String) throws(ConfigError) {
        let key = rawKey.lowercased()
        let own = sectionName == "pgbouncer" ? ConfigKeySpec.pgbouncerByName : ConfigKeySpec.pgswiftByName
        if RoutingSettings.defaultableKeys.contains(key) {
            // Read/write routing defaults for the [databases] entries (applied in `finish`).
            if let e = config.routingDefaults.set(key, value) { throw ConfigError(file: file, line: line, message: e) }
            return
        }
        guard let spec = own[key] else {
            let otherName = sectionName == "pgbouncer" ? "pgswift" : "pgbouncer"
            let other = sectionName == "pgbouncer" ? ConfigKeySpec.pgswiftByName : ConfigKeySpec.pgbouncerByName
            if other[key] != nil {
                throw ConfigError(file: file, line: line,
                                  message: "\(key) belongs in the [\(otherName)] section, not [\(sectionName)]")
            }
            throw ConfigError(file: file, line: line, message: "unknown setting \"\(rawKey)\" in [\(sectionName)]")
        }
        try store(spec, value, at: ConfigLocation(file: file, line: line), resolvingAgainst: file)
    }

    /// Applies the environment's `PGSWIFT_<KEY>` settings on top of the file, each as if it were the
    /// file's last line for its key, and warns about `PGSWIFT_` variables that name no key.
    mutating func environment(_ env: ConfigEnvironment) throws(ConfigError) {
        let (overrides, warnings) = env.overrides()
        config.warnings += warnings
        if !overrides.isEmpty { sawEnvironmentSettings = true }
        for o in overrides {
            try store(o.spec, o.value, at: .environment(o.variable), resolvingAgainst: config.configFile)
        }
    }

    /// Applies an admin console `SET` on top of the file, as if it were the file's last line for
    /// that key: the same parsing, storing and warnings. Relative paths resolve as in the main
    /// config file. The caller checked the key exists and may change online.
    mutating func override(_ o: ConfigOverride) throws(ConfigError) {
        guard let spec = ConfigKeySpec.named(o.key) else {
            throw ConfigError(file: ConfigOverride.origin, line: 0, message: "unknown setting \"\(o.key)\"")
        }
        try store(spec, o.value, at: ConfigLocation(file: ConfigOverride.origin, line: 0),
                  resolvingAgainst: config.configFile)
    }

    /// Parses and stores one `[pgbouncer]`/`[pgswift]` value; an unimplemented key warns.
    /// `resolvingFile`: the file whose directory is the fallback for relative file names.
    private mutating func store(_ spec: ConfigKeySpec, _ value: String, at location: ConfigLocation,
                                resolvingAgainst resolvingFile: String) throws(ConfigError) {
        let key = spec.name
        let (file, line) = (location.file, location.line)
        let parsed: ConfigValue
        do {
            parsed = try spec.parse(value)
        } catch {
            throw ConfigError(file: file, line: line,
                              message: "invalid value \"\(value)\" for \(key): \(error.reason)")
        }
        config.settingLocations[key] = location
        switch spec.support {
        case .implemented:
            spec.store?(&config, parsed)
        case .notImplemented:
            config.ignoredSettings[key] = value
            if let reason = ConfigKeySpec.noEffectReasons[key] {
                warn(file, line, "\(key) has no effect in pgswift; ignored: \(reason)")
            } else {
                warn(file, line, "\(key) is not implemented by pgswift yet; ignored")
            }
        }
        if key == "client_tls_ecdhcurve" && value.lowercased() == "none" {
            // PgBouncer documents `none` as turning ECDH off; with OpenSSL 1.1 and later it does not.
            warn(file, line, "client_tls_ecdhcurve = none does not turn ECDHE off (nor in PgBouncer with OpenSSL 1.1 "
                 + "or later): OpenSSL's default groups apply, as with auto")
        }
        if key == "auth_file", let path = config.authFile {
            config.authFile = resolveFile(key, path, configFile: resolvingFile, file, line)
        }
        if key == "auth_hba_file", let path = config.authHbaFile {
            config.authHbaFile = resolveFile(key, path, configFile: resolvingFile, file, line)
        }
        if key == "auth_ident_file", let path = config.authIdentFile {
            config.authIdentFile = resolveFile(key, path, configFile: resolvingFile, file, line)
        }
    }

    // MARK: [databases]

    private mutating func database(_ name: String, _ connstr: String, _ file: String, _ line: Int) throws(ConfigError) {
        func fail(_ message: String) -> ConfigError {
            ConfigError(file: file, line: line, message: "database \"\(name)\": \(message)")
        }
        if name == "pgbouncer" {
            throw fail("the name is reserved for the admin console")
        }
        let pairs = try connectionPairs(connstr, fail)
        var entry = DatabaseEntry(name: name, line: line, file: file)
        for (rawKey, value) in pairs {
            let key = rawKey.lowercased()
            switch key {
            case "dbname": entry.dbname = value
            case "host":
                let hosts = value.split(separator: ",", omittingEmptySubsequences: false).map { ConfigText.trim($0) }
                if hosts.contains(where: { $0.isEmpty }) { throw fail("empty name in host list \"\(value)\"") }
                entry.hosts = hosts
            case "port": entry.ports = try ports(value, fail)
            case "user": entry.user = value
            case "password": entry.password = value
            case "auth_user": entry.authUser = value
            case "auth_query": entry.authQuery = value
            case "auth_dbname": entry.authDbname = value
            case "pool_size": entry.poolSize = try poolNumber(value, key, fail)
            case "min_pool_size": entry.minPoolSize = try poolNumber(value, key, fail)
            case "reserve_pool", "reserve_pool_size":  // reserve_pool: the older name, an alias in PgBouncer too
                entry.reservePoolSize = try poolNumber(value, key, fail)
            case "max_db_connections": entry.maxDBConnections = try poolNumber(value, key, fail)
            case "pool_mode": entry.poolMode = try choice(value, key, Self.poolModes, fail)
            case "load_balance_hosts":
                entry.loadBalanceHosts = try choice(value, key, "round-robin, least-connections or disable", fail)
            case "connect_query": entry.connectQuery = value
            case "target_session_attrs":
                entry.targetSessionAttrs = try choice(value, key, "any, read-write, read-only, primary, standby or prefer-standby", fail)
            case "client_encoding", "datestyle", "timezone", "application_name":
                entry.startupParameters.removeAll { $0.name == key }
                entry.startupParameters.append(ConnParam(name: key, value: value))
            case "server_lifetime": entry.serverLifetime = try timeout(value, key, fail)
            case "query_wait_timeout": entry.queryWaitTimeout = try optionalTimeout(value, key, fail)
            case "max_db_client_connections": entry.maxDBClientConnections = try poolNumber(value, key, fail)
            case "routing", "read_after_write", "read_after_write_window", "max_standby_lag", "standby_reads_fallback",
                 "routing_deny_functions":
                if let e = entry.routing.set(key, value) { throw fail(e) }
            default:
                throw fail("unrecognized connection parameter \"\(rawKey)\"")
            }
        }
        for w in entry.routing.loadWarnings { warn(file, line, "database \"\(name)\": \(w)") }
        if entry.ports.count > 1 && entry.ports.count != entry.hosts.count {
            throw fail("port list has \(entry.ports.count) entries for \(entry.hosts.count) hosts "
                       + "(give one port, or one per host)")
        }
        if name == "*" {
            config.fallbackDatabase = entry
        } else if let i = config.databases.firstIndex(where: { $0.name == name }) {
            // A later definition replaces an earlier one, as when PgBouncer reloads.
            config.databases[i] = entry
        } else {
            config.databases.append(entry)
        }
    }

    /// The `key=value` pairs of a `[databases]`, `[peers]` or `[users]` line, a syntax error said
    /// through `fail` (which names the entry).
    private func connectionPairs(_ text: String, _ fail: (String) -> ConfigError) throws(ConfigError) -> [(String, String)] {
        do {
            return try ConfigConnString.pairs(text)
        } catch {
            throw fail(error.reason)
        }
    }

    /// What `pool_mode` takes, in `[databases]` and `[users]` alike.
    static let poolModes = "session, transaction or statement"

    /// One of an enumeration's spellings, in any letter case; `expected` lists them for the error.
    private func choice<T: RawRepresentable>(_ value: String, _ key: String, _ expected: String,
                                             _ fail: (String) -> ConfigError) throws(ConfigError) -> T where T.RawValue == String {
        guard let v = T(rawValue: value.lowercased()) else {
            throw fail("invalid \(key) \"\(value)\" (expected \(expected))")
        }
        return v
    }

    /// `port=`: one port, or a comma-separated list of them (one per host, checked once all pairs are read).
    private func ports(_ value: String, _ fail: (String) -> ConfigError) throws(ConfigError) -> [Int] {
        var ports: [Int] = []
        for item in value.split(separator: ",", omittingEmptySubsequences: false) {
            let t = ConfigText.trim(item)
            guard let p = ConfigText.decimal(t), p >= 1 && p <= 65535 else {
                throw fail("invalid port \"\(t)\"")
            }
            ports.append(p)
        }
        return ports
    }

    /// A pool-size-like number; negative means "not set" (PgBouncer's -1 = inherit).
    private func poolNumber(_ value: String, _ key: String,
                            _ fail: (String) -> ConfigError) throws(ConfigError) -> Int? {
        guard let n = ConfigText.decimal(value), n <= ConfigKeySpec.intMax else {
            throw fail("invalid \(key) \"\(value)\" (expected an integer)")
        }
        return n < 0 ? nil : n
    }

    /// A per-user or per-database timeout in seconds, written as the `[pgbouncer]` ones are (PgBouncer
    /// reads these with atoi, so "1.5" is 1 there; pgswift keeps the fraction and refuses garbage).
    private func timeout(_ value: String, _ key: String,
                         _ fail: (String) -> ConfigError) throws(ConfigError) -> Double {
        guard let v = ConfigText.seconds(value) else {
            throw fail("invalid \(key) \"\(value)\" (expected a non-negative number of seconds)")
        }
        return v
    }

    /// A per-user or per-database timeout that, once set, applies even when 0 (off): PgBouncer's
    /// `query_wait_timeout` in `[databases]` and `[users]`, where a negative value means "not set"
    /// (its documentation; nil here), so the next level applies.
    private func optionalTimeout(_ value: String, _ key: String,
                                 _ fail: (String) -> ConfigError) throws(ConfigError) -> Double? {
        if let n = ConfigText.decimal(value), n < 0 { return nil }
        return try timeout(value, key, fail)
    }

    // MARK: [peers]

    /// `N = host=... port=... pool_size=...`, read as PgBouncer's parse_peer reads it, but every
    /// value checked: a peer that could never be reached is an error, not a silent no-op.
    private mutating func peer(_ name: String, _ connstr: String, _ file: String, _ line: Int) throws(ConfigError) {
        func fail(_ message: String) -> ConfigError {
            ConfigError(file: file, line: line, message: "peer \"\(name)\": \(message)")
        }
        guard let id = ConfigText.decimal(name), id >= 1 && id <= PeerEntry.maxID else {
            throw fail("a peer's name is its peer id, a number from 1 to \(PeerEntry.maxID)")
        }
        let pairs = try connectionPairs(connstr, fail)
        var host: String? = nil
        var entry = PeerEntry(id: id, host: "")
        for (rawKey, value) in pairs {
            switch rawKey.lowercased() {
            case "host":
                if value.hasPrefix("@") {
                    throw fail("abstract Unix sockets (host=@...) are not supported by pgswift")
                }
                host = value
            case "port":
                guard let p = ConfigText.decimal(value), p >= 1 && p <= 65535 else { throw fail("invalid port \"\(value)\"") }
                entry.port = p
            case "pool_size":
                guard let n = ConfigText.decimal(value), n <= ConfigKeySpec.intMax else {
                    throw fail("invalid pool_size \"\(value)\" (expected an integer)")
                }
                if n == 0 { throw fail("pool_size 0 would never forward a cancel request (leave it out for default_pool_size)") }
                entry.poolSize = n < 0 ? nil : n
            default:
                throw fail("unrecognized connection parameter \"\(rawKey)\" (expected host, port or pool_size)")
            }
        }
        guard let host else { throw fail("host was not provided") }
        entry.host = host
        if let i = config.peers.firstIndex(where: { $0.id == id }) {
            config.peers[i] = entry
        } else {
            config.peers.append(entry)
            config.peers.sort { $0.id < $1.id }
        }
    }

    // MARK: [users]

    private mutating func user(_ name: String, _ settings: String, _ file: String, _ line: Int) throws(ConfigError) {
        func fail(_ message: String) -> ConfigError {
            ConfigError(file: file, line: line, message: "user \"\(name)\": \(message)")
        }
        let pairs = try connectionPairs(settings, fail)
        var entry = UserEntry(name: name)
        for (rawKey, value) in pairs {
            let key = rawKey.lowercased()
            switch key {
            case "pool_mode": entry.poolMode = try choice(value, key, Self.poolModes, fail)
            case "pool_size": entry.poolSize = try poolNumber(value, key, fail)
            case "reserve_pool_size": entry.reservePoolSize = try poolNumber(value, key, fail)
            case "max_user_connections": entry.maxUserConnections = try poolNumber(value, key, fail)
            case "query_timeout": entry.queryTimeout = try timeout(value, key, fail)
            case "transaction_timeout": entry.transactionTimeout = try timeout(value, key, fail)
            case "idle_transaction_timeout": entry.idleTransactionTimeout = try timeout(value, key, fail)
            case "client_idle_timeout": entry.clientIdleTimeout = try timeout(value, key, fail)
            case "query_wait_timeout": entry.queryWaitTimeout = try optionalTimeout(value, key, fail)
            case "max_user_client_connections": entry.maxUserClientConnections = try poolNumber(value, key, fail)
            default:
                // PgBouncer 1.25 takes the old name `reserve_pool` in [databases] only, not here.
                let hint = key == "reserve_pool" ? " (reserve_pool is a [databases] option; use reserve_pool_size)" : ""
                throw fail("unrecognized user parameter \"\(rawKey)\"\(hint)")
            }
        }
        config.users[name] = entry
    }
}

/// PgBouncer's connection-string syntax: `key=value` pairs separated by spaces; a value may be
/// single-quoted, with `''` standing for one quote. Empty values are not allowed.
enum ConfigConnString {
    static func pairs(_ text: String) throws(ConfigValueError) -> [(String, String)] {
        let b = Array(text.utf8)
        var p = 0
        var result: [(String, String)] = []
        while true {
            while p < b.count && ConfigText.isSpace(b[p]) { p += 1 }
            if p == b.count { return result }
            let keyStart = p
            while p < b.count && b[p] != UInt8(ascii: "=") && !ConfigText.isSpace(b[p]) { p += 1 }
            let key = String(decoding: b[keyStart..<p], as: UTF8.self)
            while p < b.count && ConfigText.isSpace(b[p]) { p += 1 }
            guard p < b.count && b[p] == UInt8(ascii: "="), !key.isEmpty else {
                throw ConfigValueError(reason: key.isEmpty ? "syntax error in connection string: missing parameter name"
                                                           : "syntax error in connection string: expected \"=\" after \"\(key)\"")
            }
            p += 1
            while p < b.count && ConfigText.isSpace(b[p]) { p += 1 }
            var value: [UInt8] = []
            if p < b.count && b[p] == UInt8(ascii: "'") {
                guard let quoted = QuotedText.read(b[...], at: &p, quote: UInt8(ascii: "'")) else {
                    throw ConfigValueError(reason: "syntax error in connection string: unterminated quote in \(key)")
                }
                value = Array(quoted.utf8)
                if p < b.count && !ConfigText.isSpace(b[p]) {
                    throw ConfigValueError(reason: "syntax error in connection string: text right after the closing quote of \(key)")
                }
            } else {
                while p < b.count && !ConfigText.isSpace(b[p]) {
                    value.append(b[p])
                    p += 1
                }
            }
            if value.isEmpty {
                throw ConfigValueError(reason: "syntax error in connection string: empty value for \(key)")
            }
            result.append((key, String(decoding: value, as: UTF8.self)))
        }
    }
}
