// Per-pattern latency histograms (issue 21): log-linear buckets, a fixed-size window kept per pattern
// in a worker, and the sparse form that crosses to the supervisor and merges exactly.

/// Log-linear buckets over microseconds: values below 16 µs have a bucket each; above, every power of
/// two is cut into 16 equal buckets. A bucket is then at most 1/16 of its lower bound wide, so its
/// midpoint is within 3.2 % of any value in it: percentiles read from the buckets are that close to the
/// recorded values. The bucket of a value is a count-leading-zeros and two shifts away.
public enum QueryLatencyBuckets {
    /// Sub-buckets per power of two (log2).
    public static let subBits = 4
    public static let subCount = 1 << subBits
    /// Indexes run from 0 to this (a value of 2^64 - 1 µs).
    public static let maxIndex = subCount + (63 - subBits) * subCount + (subCount - 1)

    @inlinable @inline(__always)
    public static func index(micros v: UInt64) -> Int {
        if v < 16 { return Int(truncatingIfNeeded: v) }
        let e = 63 &- v.leadingZeroBitCount  // floor(log2 v), at least 4
        let sub = Int(truncatingIfNeeded: (v >> UInt64(e &- 4)) & 15)
        return 16 &+ (e &- 4) &* 16 &+ sub
    }

    /// The smallest value of bucket `g`.
    public static func lowerBound(_ g: Int) -> UInt64 {
        if g < 16 { return UInt64(g) }
        let e = (g - 16) / 16 + 4
        let sub = UInt64((g - 16) % 16)
        return (16 + sub) << UInt64(e - 4)
    }

    /// How many values bucket `g` holds.
    public static func width(_ g: Int) -> UInt64 {
        if g < 16 { return 1 }
        return 1 << UInt64((g - 16) / 16)
    }

    /// The value a percentile in bucket `g` is reported as: the midpoint.
    public static func midpoint(_ g: Int) -> UInt64 {
        lowerBound(g) &+ (width(g) - 1) / 2
    }
}

/// A worker's histogram of one pattern: 192 consecutive buckets (12 powers of two, a factor of 4096)
/// from `base`, inline, so recording allocates nothing. The window starts six powers of two below the
/// first value. A value above it shifts it up, and the buckets that fall off the bottom are added into
/// its lowest bucket (as DDSketch collapses its lowest buckets), which keeps high percentiles exact to
/// the bucket and may only overstate values more than 4096 times below the largest. A value below it
/// shifts it down as far as its highest non-empty bucket allows, else counts in its lowest bucket.
public struct QueryLatencyWindow: Sendable {
    public static let size = 192
    @usableFromInline var counts = InlineArray<192, UInt32>(repeating: 0)
    /// Global bucket index of `counts[0]`; -1 before the first value.
    @usableFromInline var base: Int32 = -1

    public init() {}

    @inlinable @inline(__always)
    public mutating func record(micros: UInt64) {
        let g = QueryLatencyBuckets.index(micros: micros)
        if base < 0 { base = Int32(max(0, g &- 96)) }
        var i = g &- Int(base)
        if i < 0 {
            shiftDown(to: g)
            i = max(0, g &- Int(base))
        } else if i >= QueryLatencyWindow.size {
            shift(to: g)
            i = QueryLatencyWindow.size &- 1
        }
        if counts[i] != .max { counts[i] &+= 1 }
    }

    /// Moves the window up so that bucket `g` is its last one.
    @usableFromInline
    mutating func shift(to g: Int) {
        let newBase = g - (QueryLatencyWindow.size - 1)
        let d = newBase - Int(base)
        guard d > 0 else { return }
        var low: UInt64 = 0
        for j in 0..<min(d + 1, QueryLatencyWindow.size) { low += UInt64(counts[j]) }
        for j in 0..<QueryLatencyWindow.size {
            counts[j] = j + d < QueryLatencyWindow.size ? counts[j + d] : 0
        }
        counts[0] = UInt32(min(low, UInt64(UInt32.max)))
        base = Int32(newBase)
    }

    /// Moves the window down towards bucket `g` as far as its highest non-empty bucket stays in it.
    @usableFromInline
    mutating func shiftDown(to g: Int) {
        var top = QueryLatencyWindow.size - 1
        while top > 0 && counts[top] == 0 { top -= 1 }
        let d = min(Int(base) - g, QueryLatencyWindow.size - 1 - top)
        guard d > 0 else { return }
        var j = QueryLatencyWindow.size - 1
        while j >= 0 {
            counts[j] = j - d >= 0 ? counts[j - d] : 0
            j -= 1
        }
        base -= Int32(d)
    }

    /// The non-empty buckets, by global index.
    public var sparse: QueryLatencyHistogram {
        var h = QueryLatencyHistogram()
        guard base >= 0 else { return h }
        for i in 0..<QueryLatencyWindow.size where counts[i] != 0 {
            h.buckets.append(QueryLatencyHistogram.Bucket(index: Int32(base) + Int32(i), count: UInt64(counts[i])))
        }
        return h
    }
}

/// A histogram as its non-empty buckets in ascending order: what a worker reports and what the
/// supervisor merges (adding counts of equal indexes: exact).
public struct QueryLatencyHistogram: Equatable, Sendable {
    public struct Bucket: Equatable, Sendable {
        public var index: Int32
        public var count: UInt64
        public init(index: Int32, count: UInt64) { self.index = index; self.count = count }
    }
    public var buckets: [Bucket] = []
    public init() {}

    public var count: UInt64 { buckets.reduce(0) { $0 &+ $1.count } }

    public mutating func merge(_ other: QueryLatencyHistogram) {
        if other.buckets.isEmpty { return }
        if buckets.isEmpty { buckets = other.buckets; return }
        var out: [Bucket] = []
        out.reserveCapacity(buckets.count + other.buckets.count)
        var i = 0, j = 0
        while i < buckets.count || j < other.buckets.count {
            if j == other.buckets.count || (i < buckets.count && buckets[i].index < other.buckets[j].index) {
                out.append(buckets[i]); i += 1
            } else if i == buckets.count || other.buckets[j].index < buckets[i].index {
                out.append(other.buckets[j]); j += 1
            } else {
                out.append(Bucket(index: buckets[i].index, count: buckets[i].count &+ other.buckets[j].count))
                i += 1; j += 1
            }
        }
        buckets = out
    }

    /// The value at quantile `q` (0...1): the midpoint of the bucket holding the value of that rank
    /// (nearest-rank), 0 when empty.
    public func percentile(_ q: Double) -> UInt64 {
        let total = count
        guard total > 0 else { return 0 }
        var rank = UInt64((q * Double(total)).rounded(.up))
        rank = min(max(rank, 1), total)
        var seen: UInt64 = 0
        for b in buckets {
            seen &+= b.count
            if seen >= rank { return QueryLatencyBuckets.midpoint(Int(b.index)) }
        }
        return QueryLatencyBuckets.midpoint(Int(buckets[buckets.count - 1].index))
    }
}

extension MessageWriter {
    /// A sparse histogram: the bucket count, then each bucket's index as a delta from the previous one
    /// and its count.
    public mutating func queryHistogram(_ h: QueryLatencyHistogram) {
        varint(UInt64(h.buckets.count))
        var last: Int32 = 0
        for b in h.buckets {
            varint(UInt64(b.index - last))
            varint(b.count)
            last = b.index
        }
    }
}

extension MessageReader {
    public mutating func queryHistogram(_ what: StaticString) throws(Failure) -> QueryLatencyHistogram {
        let n = try compactCount(what, minimumEach: 2)
        var h = QueryLatencyHistogram()
        h.buckets.reserveCapacity(n)
        var last: UInt64 = 0
        for k in 0..<n {
            let d = try varint(what)
            let index = last &+ d
            guard index <= UInt64(QueryLatencyBuckets.maxIndex), k == 0 || d > 0 else {
                throw Failure("histogram bucket index (\(what))")
            }
            h.buckets.append(.init(index: Int32(index), count: try varint(what)))
            last = index
        }
        return h
    }
}
