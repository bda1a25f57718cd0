// What `pgswift --check-config` prints besides its verdict: the effective values and where each comes from.
import Shared

/// The settings a configuration sets (by a file line, `PGSWIFT_<KEY>` or nothing: the others keep their
/// defaults) with their effective values and where each was set, then the `[databases]` and `[users]`
/// entries as loaded (after `${NAME}` expansion), passwords masked. For an operator checking what a
/// container's environment made of the file; nothing here is parsed by pgswift.
enum CheckConfigReport {
    static let maskedPassword = "********"

    static func render(_ config: Config) -> String {
        var out = ""
        for section in ["pgbouncer", "pgswift"] {
            let rows = config.settings().filter { Config.section(ofKey: $0.key) == section }
                .compactMap { s in config.location(ofSetting: s.key).map { (s, $0) } }
            guard !rows.isEmpty else { continue }
            out += "[\(section)]\n"
            for (s, at) in rows { out += "\(s.key) = \(s.value)    ; \(at)\n" }
        }
        let databases = config.databases + (config.fallbackDatabase.map { [$0] } ?? [])
        if !databases.isEmpty {
            out += "[databases]\n"
            for d in databases {
                out += "\(d.name) = \(connectionText(d))    ; \(ConfigLocation(file: d.file, line: d.line))\n"
            }
        }
        if !config.users.isEmpty {
            out += "[users]\n"
            for name in config.users.keys.sorted() { out += "\(name) = \(userText(config.users[name]!))\n" }
        }
        return out
    }

    /// A database entry's main fields in connection-string form; the password only as "set".
    static func connectionText(_ d: DatabaseEntry) -> String {
        var parts: [String] = []
        func add(_ key: String, _ value: String?) {
            if let value, !value.isEmpty { parts.append("\(key)=\(value)") }
        }
        add("host", d.hosts.joined(separator: ","))
        add("port", d.ports.map(String.init).joined(separator: ","))
        add("dbname", d.dbname)
        add("user", d.user)
        if d.password != nil { parts.append("password=\(maskedPassword)") }
        add("auth_user", d.authUser)
        add("pool_size", d.poolSize.map(String.init))
        add("min_pool_size", d.minPoolSize.map(String.init))
        add("reserve_pool_size", d.reservePoolSize.map(String.init))
        add("max_db_connections", d.maxDBConnections.map(String.init))
        add("pool_mode", d.poolMode?.rawValue)
        return parts.joined(separator: " ")
    }

    static func userText(_ u: UserEntry) -> String {
        var parts: [String] = []
        if let m = u.poolMode { parts.append("pool_mode=\(m.rawValue)") }
        if let n = u.poolSize { parts.append("pool_size=\(n)") }
        if let n = u.reservePoolSize { parts.append("reserve_pool_size=\(n)") }
        if let n = u.maxUserConnections { parts.append("max_user_connections=\(n)") }
        return parts.joined(separator: " ")
    }
}
