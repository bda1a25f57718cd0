// Read/write routing of one `[databases]` entry (issue 20): its keys, their values, what is refused.

/// `routing=`, `read_after_write=`, `read_after_write_window=`, `max_standby_lag=`,
/// `standby_reads_fallback=` and `routing_deny_functions=` of a `[databases]` entry.
public struct RoutingSettings: Sendable, Equatable {
    public enum Mode: String, Sendable {
        /// Today's behaviour: every transaction goes wherever the pool's host choice puts it.
        case none
        /// Reads to standbys, everything else to the primary (Worker/Pool/Routing.swift).
        case readWriteSplit = "read-write-split"
    }

    public enum ReadAfterWrite: String, Sendable {
        /// After a client's write transaction, its reads go to the primary until every usable standby
        /// has replayed that commit (the pooler asks the primary for its WAL position at release).
        case lsn
        /// A client's reads go to the primary for `windowMillis` after its last transaction there.
        case primaryWindow = "primary_window"
        case none
    }

    /// `standby_reads_fallback`: what a read that would go to a standby does when none is usable (all
    /// down, lagging over `max_standby_lag`, of unknown role or just failed). A read that read_after_write
    /// keeps on the primary is not such a read: it goes to the primary whatever this says.
    public enum Fallback: String, Sendable {
        /// It runs on the primary (counted as a fallback).
        case primary
        /// It waits in the pool's queue until a standby is usable, within query_wait_timeout.
        case wait
        /// It is answered at once with an ErrorResponse (SQLSTATE 57P03); the client stays connected.
        case error
    }

    public var mode = Mode.none
    public var readAfterWrite = ReadAfterWrite.lsn
    /// `read_after_write_window`, milliseconds.
    public var windowMillis = 1000
    /// `max_standby_lag`, milliseconds: a standby whose replay lag is larger gets no reads.
    public var maxStandbyLagMillis = 5000
    public var fallback = Fallback.primary
    /// Functions a read must not call (`routing_deny_functions`, comma-separated; default issue 20's list).
    public var denyFunctions = SQLFunctionDenyList.default
    /// The keys given for this entry (the others take the `[pgbouncer]`/`[pgswift]` default, `inherit`).
    public var setKeys: Set<String> = []

    public init() {}

    /// Keys that may also be given in `[pgbouncer]` or `[pgswift]` as defaults for every entry.
    public static let defaultableKeys: Set<String> = keys.subtracting(["routing"])

    /// Takes each value `defaults` sets and this entry does not.
    public mutating func inherit(_ defaults: RoutingSettings) {
        for k in defaults.setKeys where !setKeys.contains(k) {
            switch k {
            case "read_after_write": readAfterWrite = defaults.readAfterWrite
            case "read_after_write_window": windowMillis = defaults.windowMillis
            case "max_standby_lag": maxStandbyLagMillis = defaults.maxStandbyLagMillis
            case "standby_reads_fallback": fallback = defaults.fallback
            case "routing_deny_functions": denyFunctions = defaults.denyFunctions
            default: break
            }
        }
    }

    public var enabled: Bool { mode == .readWriteSplit }

    /// The keys this struct takes.
    public static let keys: Set<String> = [
        "routing", "read_after_write", "read_after_write_window", "max_standby_lag", "standby_reads_fallback",
        "routing_deny_functions",
    ]

    /// What a routed entry's settings ask that is not done yet, said at load.
    public var loadWarnings: [String] {
        []
    }

    /// Stores `key = value`. Returns an error text for a value that is refused.
    public mutating func set(_ key: String, _ value: String) -> String? {
        let v = value.lowercased()
        // Stores what `value` parsed to, or says what was expected instead.
        func store<T>(_ parsed: T?, in field: inout T, expected: String) -> String? {
            guard let parsed else { return "invalid \(key) \"\(value)\" (expected \(expected))" }
            field = parsed
            return nil
        }
        let refusal: String?
        switch key {
        case "routing": refusal = store(Mode(rawValue: v), in: &mode, expected: "none or read-write-split")
        case "read_after_write":
            refusal = store(ReadAfterWrite(rawValue: v), in: &readAfterWrite, expected: "lsn, primary_window or none")
        case "read_after_write_window": refusal = store(Self.millis(v), in: &windowMillis, expected: "milliseconds")
        case "max_standby_lag": refusal = store(Self.millis(v), in: &maxStandbyLagMillis, expected: "milliseconds")
        case "standby_reads_fallback":
            refusal = store(Fallback(rawValue: v), in: &fallback, expected: "primary, wait or error")
        case "routing_deny_functions":
            denyFunctions = SQLFunctionDenyList(commaSeparated: value)
            refusal = nil
        default:
            return "unrecognized routing setting \"\(key)\""
        }
        if let refusal { return refusal }
        setKeys.insert(key)
        return nil
    }

    /// SHOW CONFIG's rows for the keys `[pgbouncer]`/`[pgswift]` may set as defaults (alphabetical):
    /// key, value, default. They change at RELOAD; the admin console's SET does not take them.
    public var defaultsRows: [(key: String, value: String, defaultValue: String)] {
        let d = RoutingSettings()
        func list(_ l: SQLFunctionDenyList) -> String {
            l.patterns.map { String(decoding: $0.name, as: UTF8.self) + ($0.isPrefix ? "*" : "") }.joined(separator: ",")
        }
        return [
            ("max_standby_lag", String(maxStandbyLagMillis), String(d.maxStandbyLagMillis)),
            ("read_after_write", readAfterWrite.rawValue, d.readAfterWrite.rawValue),
            ("read_after_write_window", String(windowMillis), String(d.windowMillis)),
            ("routing_deny_functions", list(denyFunctions), list(d.denyFunctions)),
            ("standby_reads_fallback", fallback.rawValue, d.fallback.rawValue),
        ]
    }

    /// A non-negative number of milliseconds (`500`, `500ms`).
    static func millis(_ v: String) -> Int? {
        var s = Substring(v)
        if s.hasSuffix("ms") { s = s.dropLast(2) }
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(s), n <= 86_400_000 else { return nil }
        return n
    }
}
