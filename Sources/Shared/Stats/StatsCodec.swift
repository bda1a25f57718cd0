// Compact binary writer/reader for stats blobs: LEB128 varints, zigzag for signed, length-prefixed UTF-8.

/// A stats blob that cannot be decoded (truncated, corrupt, or from an incompatible version).
public struct StatsDecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "invalid stats data: \(reason)" }
}

/// Appends values to a byte array. Counters are mostly small or zero, so varints keep a pool's
/// record (11 gauges, 11 counters, 75 histogram buckets) to well under 200 bytes in practice.
public struct StatsWriter {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }

    public mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Zigzag keeps small negative numbers small.
    public mutating func signed(_ v: Int64) {
        varint(UInt64(bitPattern: (v << 1) ^ (v >> 63)))
    }

    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }

    /// Appends bytes written by another writer.
    public mutating func append(_ other: [UInt8]) { bytes.append(contentsOf: other) }

    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            varint(UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
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

/// Bounds-checked cursor over a stats blob; every read throws instead of trapping.
public struct StatsReader {
    let bytes: [UInt8]
    public private(set) var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }
    public var isAtEnd: Bool { offset == bytes.count }

    public mutating func u8(_ what: StaticString) throws(StatsDecodeError) -> UInt8 {
        guard offset < bytes.count else { throw StatsDecodeError("truncated (\(what))") }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func varint(_ what: StaticString) throws(StatsDecodeError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8(what)
            if shift == 63 && b > 1 { throw StatsDecodeError("varint overflow (\(what))") }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw StatsDecodeError("varint too long (\(what))") }
        }
    }

    public mutating func signed(_ what: StaticString) throws(StatsDecodeError) -> Int64 {
        let z = try varint(what)
        return Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1)))
    }

    public mutating func int32(_ what: StaticString) throws(StatsDecodeError) -> Int32 {
        let v = try signed(what)
        guard let r = Int32(exactly: v) else { throw StatsDecodeError("value out of range (\(what))") }
        return r
    }

    public mutating func bool(_ what: StaticString) throws(StatsDecodeError) -> Bool {
        switch try u8(what) {
        case 0: return false
        case 1: return true
        default: throw StatsDecodeError("bad boolean (\(what))")
        }
    }

    public mutating func string(_ what: StaticString) throws(StatsDecodeError) -> String {
        let n = try varint(what)
        guard n <= UInt64(remaining) else { throw StatsDecodeError("truncated string (\(what))") }
        let count = Int(n)
        let s = bytes[offset..<(offset + count)].withUnsafeBufferPointer { String(validating: $0, as: UTF8.self) }
        guard let s else { throw StatsDecodeError("string is not valid UTF-8 (\(what))") }
        offset += count
        return s
    }

    /// An element count, refused when it could not possibly fit in the bytes left (each element
    /// takes at least `minimumElementSize` bytes), so a corrupt count cannot reserve gigabytes.
    public mutating func count(_ what: StaticString, minimumElementSize: Int = 1) throws(StatsDecodeError) -> Int {
        let n = try varint(what)
        guard n <= UInt64(remaining / max(minimumElementSize, 1)) else {
            throw StatsDecodeError("element count \(n) exceeds the data (\(what))")
        }
        return Int(n)
    }

    public mutating func histogram(_ what: StaticString) throws(StatsDecodeError) -> LatencyHistogram {
        let mask = try varint(what)
        if mask == 0 { return LatencyHistogram() }
        guard mask >> UInt64(LatencyHistogram.bucketCount) == 0 else { throw StatsDecodeError("histogram bucket mask (\(what))") }
        let sum = try varint(what)
        var h = LatencyHistogram()
        var total: UInt64 = 0
        for i in 0..<LatencyHistogram.bucketCount where mask & (1 << UInt64(i)) != 0 {
            let c = try varint(what)
            let (t, overflow) = total.addingReportingOverflow(c)
            if overflow { throw StatsDecodeError("histogram counts overflow (\(what))") }
            total = t
            h.setDecoded(bucket: i, count: c)
        }
        h.setDecodedTotals(sum: sum, count: total)
        return h
    }
}
