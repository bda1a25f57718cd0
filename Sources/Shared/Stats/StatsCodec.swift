// Stats blobs' fields in the compact style of the internal message codec (MessageCodec.swift), plus histograms.

/// A stats blob that cannot be decoded (truncated, corrupt, or from an incompatible version).
public struct StatsDecodeError: MessageDecodeFailure, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "invalid stats data: \(reason)" }
}

/// Reads stats blobs. Counters are mostly small or zero, so the compact style's varints keep a pool's
/// record (11 gauges, 11 counters, 75 histogram buckets) to well under 200 bytes in practice.
public typealias StatsReader = MessageReader<StatsDecodeError>

/// A record of a stats blob's lists, written in the compact style (`MessageWriter.compactArray`); each
/// type reads itself back with a `decode(_:)` passed to `MessageReader.compactArray`.
protocol CompactRecord {
    func encode(into w: inout MessageWriter)
}

extension MessageWriter {
    /// A varint count, then the records.
    mutating func compactArray(_ records: [some CompactRecord]) {
        varint(UInt64(records.count))
        for record in records { record.encode(into: &self) }
    }

    /// A mask of the buckets in use (25 bits), then, when any, the sum and those buckets' counts: an
    /// empty histogram (most pools' most of the time) is one byte.
    public mutating func histogram(_ h: LatencyHistogram) {
        var mask: UInt64 = 0
        for i in 0..<LatencyHistogram.bucketCount where h.bucketCount(i) != 0 { mask |= 1 << UInt64(i) }
        varint(mask)
        guard mask != 0 else { return }
        varint(h.sumMicros)
        for i in 0..<LatencyHistogram.bucketCount where mask & (1 << UInt64(i)) != 0 { varint(h.bucketCount(i)) }
    }
}

extension MessageReader {
    public mutating func histogram(_ what: StaticString) throws(Failure) -> LatencyHistogram {
        let mask = try varint(what)
        if mask == 0 { return LatencyHistogram() }
        guard mask >> UInt64(LatencyHistogram.bucketCount) == 0 else { throw Failure("histogram bucket mask (\(what))") }
        let sum = try varint(what)
        var h = LatencyHistogram()
        var total: UInt64 = 0
        for i in 0..<LatencyHistogram.bucketCount where mask & (1 << UInt64(i)) != 0 {
            let c = try varint(what)
            let (t, overflow) = total.addingReportingOverflow(c)
            if overflow { throw Failure("histogram counts overflow (\(what))") }
            total = t
            h.setDecoded(bucket: i, count: c)
        }
        h.setDecodedTotals(sum: sum, count: total)
        return h
    }
}
