// The `replication` startup parameter: which kind of walsender connection a client asks for.

/// Replication mode of a connection: none, logical (`replication=database`) or physical
/// (`replication=true`/`on`/`yes`/`1`). SHOW CLIENTS/SERVERS print `name` in their `replication`
/// column; the server connection opened for such a client carries `startupValue`.
public enum ReplicationMode: UInt8, Sendable {
    case none = 0, logical = 1, physical = 2

    public var name: String {
        switch self {
        case .none: return "none"
        case .logical: return "logical"
        case .physical: return "physical"
        }
    }

    /// The value PgBouncer logs (`login attempt: ... replication=`) and sends to PostgreSQL.
    public var startupValue: String {
        switch self {
        case .none: return "no"
        case .logical: return "database"
        case .physical: return "yes"
        }
    }

    /// The mode a startup packet's `replication` value asks for, as PostgreSQL reads it: `database`, or
    /// a boolean in PostgreSQL's spelling (`parse_bool`: a case-insensitive prefix of true/false/yes/no,
    /// at least two letters of on/off, or 1/0). nil: not a value PostgreSQL accepts.
    public init?(startupValue value: String) {
        if value == "database" {
            self = .logical
            return
        }
        guard let b = ReplicationMode.parseBool(value) else { return nil }
        self = b ? .physical : .none
    }

    static func parseBool(_ value: String) -> Bool? {
        let v = value.lowercased()
        guard let first = v.first else { return nil }
        func prefix(of word: String, minimum: Int = 1) -> Bool { v.count >= minimum && word.hasPrefix(v) }
        switch first {
        case "t": return prefix(of: "true") ? true : nil
        case "f": return prefix(of: "false") ? false : nil
        case "y": return prefix(of: "yes") ? true : nil
        case "n": return prefix(of: "no") ? false : nil
        case "o":
            if prefix(of: "on", minimum: 2) { return true }
            if prefix(of: "off", minimum: 2) { return false }
            return nil
        case "1": return v == "1" ? true : nil
        case "0": return v == "0" ? false : nil
        default: return nil
        }
    }
}
