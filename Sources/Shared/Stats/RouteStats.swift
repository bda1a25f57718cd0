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

    /// Adds `other`'s counters to the host rows of the same name in `into` (new hosts appended).
    public static func merge(_ into: inout [RouteStat], _ other: [RouteStat]) {
        for o in other {
            if let i = into.firstIndex(where: { $0.host == o.host }) {
                into[i].reads &+= o.reads
                into[i].writes &+= o.writes
                into[i].fallbacks &+= o.fallbacks
                into[i].retries &+= o.retries
            } else {
                into.append(o)
            }
        }
    }

    static func write(_ rows: [RouteStat], _ w: inout MessageWriter) {
        w.varint(UInt64(rows.count))
        for r in rows {
            w.compactString(r.host)
            w.varint(r.reads)
            w.varint(r.writes)
            w.varint(r.fallbacks)
            w.varint(r.retries)
        }
    }

    static func read(_ r: inout StatsReader) throws(StatsDecodeError) -> [RouteStat] {
        let n = try r.compactCount("route count", minimumEach: 5)
        var rows: [RouteStat] = []
        for _ in 0..<n {
            rows.append(RouteStat(host: try r.compactString("route host"), reads: try r.varint("route reads"),
                                  writes: try r.varint("route writes"), fallbacks: try r.varint("route fallbacks"),
                                  retries: try r.varint("route retries")))
        }
        return rows
    }
}
