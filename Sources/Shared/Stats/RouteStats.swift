// Read/write routing's per-host counters of a routed pool (issue 20): carried in worker snapshots,
// summed by the supervisor for SHOW ROUTING and /metrics.

/// One backend host's share of a routed pool's transactions.
public struct RouteStat: Equatable, Sendable {
    /// "host:port", as the health check names it.
    public var host: String
    /// Transactions started on this host that were reads (on a standby, or on the primary for
    /// read-after-write or a fallback).
    public var reads: UInt64 = 0
    /// Transactions that were not known read-only (always on the primary).
    public var writes: UInt64 = 0
    /// Reads sent to this host (the primary) because no standby was usable.
    public var fallbacks: UInt64 = 0
    /// Statements re-run here after a standby refused them with 25006.
    public var retries: UInt64 = 0

    public init(host: String, reads: UInt64 = 0, writes: UInt64 = 0, fallbacks: UInt64 = 0, retries: UInt64 = 0) {
        self.host = host
        self.reads = reads
        self.writes = writes
        self.fallbacks = fallbacks
        self.retries = retries
    }

    /// The counters, in the wire codec's order and the one `merge` walks, each with its name in decode errors.
    static let counters: [(path: WritableKeyPath<RouteStat, UInt64> & Sendable, name: StaticString)] = [
        (\.reads, "route reads"), (\.writes, "route writes"), (\.fallbacks, "route fallbacks"), (\.retries, "route retries"),
    ]

    /// Adds `other`'s counters to the host rows of the same name in `into` (new hosts appended).
    public static func merge(_ into: inout [RouteStat], _ other: [RouteStat]) {
        for o in other {
            into.fold(o, by: \.host) { row, o in
                for c in counters { row[keyPath: c.path] &+= o[keyPath: c.path] }
            }
        }
    }
}

extension RouteStat: CompactRecord {
    func encode(into w: inout MessageWriter) {
        w.compactString(host)
        for c in Self.counters { w.varint(self[keyPath: c.path]) }
    }

    static func decode(_ r: inout StatsReader) throws(StatsDecodeError) -> RouteStat {
        var row = RouteStat(host: try r.compactString("route host"))
        for c in counters { row[keyPath: c.path] = try r.varint(c.name) }
        return row
    }
}
