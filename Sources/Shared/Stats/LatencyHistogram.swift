// A fixed log-scale latency histogram: O(1) record, inline storage, mergeable across workers.

/// Durations in microseconds, counted in power-of-two buckets from 16 µs to about 134 s plus +Inf.
///
/// Bucket i (0 ≤ i < finiteBucketCount) holds values v with `upperBound(i-1) < v ≤ upperBound(i)`,
/// where `upperBound(i) = 2^(i + 4)` µs; the last bucket holds everything larger. Power-of-two bounds
/// make the bucket a count-leading-zeros away from the value (no search, no division), and each bound
/// is an exact decimal number of seconds, so the Prometheus `le` labels print without rounding.
/// Storage is inline (no heap), so a pool can keep three of these in its record and record on the
/// hot path without allocating.
public struct LatencyHistogram: Sendable {
    /// Buckets with a finite upper bound (16 µs ... 2^27 µs ≈ 134 s).
    public static let finiteBucketCount = 24
    /// Finite buckets plus the +Inf bucket.
    public static let bucketCount = 25
    /// log2 of the first upper bound (16 µs).
    @usableFromInline static let firstShift = 4

    /// Non-cumulative counts per bucket.
    @usableFromInline var buckets = InlineArray<25, UInt64>(repeating: 0)
    @usableFromInline var _sum: UInt64 = 0
    @usableFromInline var _count: UInt64 = 0
    /// Sum of all recorded values, in microseconds.
    public var sumMicros: UInt64 { _sum }
    /// Number of recorded values.
    public var count: UInt64 { _count }

    public init() {}

    /// Upper bound of bucket `i` in microseconds; nil for the +Inf bucket.
    public static func upperBoundMicros(_ i: Int) -> UInt64? {
        precondition(i >= 0 && i < bucketCount, "histogram bucket index out of range")
        if i == finiteBucketCount { return nil }
        return UInt64(1) << UInt64(i + firstShift)
    }

    /// The bucket a value falls into.
    @inlinable @inline(__always)
    public static func bucketIndex(micros v: UInt64) -> Int {
        if v <= 16 { return 0 }
        // ceil(log2(v)) for v ≥ 2 is the bit width of v - 1.
        let ceilLog2 = 64 &- (v &- 1).leadingZeroBitCount
        let i = ceilLog2 &- firstShift
        return i < finiteBucketCount ? i : finiteBucketCount
    }

    /// Records one duration (negative durations, from a clock quirk, count as zero).
    @inlinable @inline(__always)
    public mutating func record(micros: Int64) {
        let v = micros > 0 ? UInt64(micros) : 0
        buckets[LatencyHistogram.bucketIndex(micros: v)] &+= 1
        _sum &+= v
        _count &+= 1
    }

    /// Count in bucket `i` alone (not cumulative).
    public func bucketCount(_ i: Int) -> UInt64 { buckets[i] }

    /// Count of values ≤ upperBound(i): what Prometheus calls the bucket.
    public func cumulativeCount(_ i: Int) -> UInt64 {
        var total: UInt64 = 0
        for j in 0...i { total &+= buckets[j] }
        return total
    }

    /// Adds another histogram's counts (merging workers, or a pool's periods).
    public mutating func merge(_ other: LatencyHistogram) {
        for i in 0..<LatencyHistogram.bucketCount { buckets[i] &+= other.buckets[i] }
        _sum &+= other._sum
        _count &+= other._count
    }

    public var isEmpty: Bool { count == 0 }

    /// Decoding (MessageReader.histogram): one bucket's count, then the totals, with no array in between.
    mutating func setDecoded(bucket i: Int, count c: UInt64) { buckets[i] = c }
    mutating func setDecodedTotals(sum: UInt64, count: UInt64) {
        _sum = sum
        _count = count
    }

    /// Rebuilds a histogram from decoded parts; false when the parts are inconsistent.
    public init?(bucketCounts: [UInt64], sumMicros: UInt64) {
        guard bucketCounts.count == LatencyHistogram.bucketCount else { return nil }
        var total: UInt64 = 0
        for (i, c) in bucketCounts.enumerated() {
            buckets[i] = c
            let (t, overflow) = total.addingReportingOverflow(c)
            if overflow { return nil }
            total = t
        }
        _sum = sumMicros
        _count = total
    }
}

extension LatencyHistogram: Equatable {
    public static func == (a: LatencyHistogram, b: LatencyHistogram) -> Bool {
        guard a.count == b.count, a.sumMicros == b.sumMicros else { return false }
        for i in 0..<LatencyHistogram.bucketCount where a.buckets[i] != b.buckets[i] { return false }
        return true
    }
}
