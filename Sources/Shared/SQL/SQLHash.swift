// Stable 64-bit hashes of SQL text: XXH64, the same value in every process, run and version.

/// XXH64 (the xxHash 64-bit algorithm, written here from its public specification). Swift's `Hasher`
/// is seeded per process, so it cannot name a query pattern across workers, restarts and SHOW output;
/// these values never change unless this file does.
public enum SQLHash {
    /// The id of a normalized pattern (`SQLNormalizer.pattern`): XXH64 with seed 0. It is what SHOW
    /// QUERIES and the metrics call `queryid`; PostgreSQL's queryid is a signed bigint, so print it
    /// as `Int64(bitPattern:)` to look alike.
    @inlinable
    public static func pattern(_ bytes: UnsafeRawBufferPointer) -> UInt64 { xxh64(bytes, seed: 0) }

    public static func pattern(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { xxh64($0, seed: 0) }
    }

    /// The key of a raw query text in a pattern cache (so normalization runs only on a miss). A
    /// different seed from `pattern`, so a raw text and a pattern with the same bytes differ; pass a
    /// per-process seed to make collisions hard to provoke. 64 bits: compare the text on a hit if a
    /// collision must never merge two texts.
    @inlinable
    public static func rawText(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0x7067_7377_6966_7421) -> UInt64 {
        xxh64(bytes, seed: seed)
    }

    @usableFromInline static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    @usableFromInline static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    @usableFromInline static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    @usableFromInline static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    @usableFromInline static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inlinable @inline(__always)
    static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 &- r)) }

    @inlinable @inline(__always)
    static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    @inlinable @inline(__always)
    static func mergeRound(_ acc: UInt64, _ val: UInt64) -> UInt64 {
        (acc ^ round(0, val)) &* p1 &+ p4
    }

    @inlinable @inline(__always)
    static func load64(_ b: UnsafeRawBufferPointer, _ i: Int) -> UInt64 {
        UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt64.self))
    }

    @inlinable @inline(__always)
    static func load32(_ b: UnsafeRawBufferPointer, _ i: Int) -> UInt64 {
        UInt64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
    }

    /// XXH64's final mix, which spreads every input bit over the whole value (also ends `shape`).
    @inlinable @inline(__always)
    static func avalanche(_ h: UInt64) -> UInt64 {
        var h = h
        h ^= h >> 33
        h &*= p2
        h ^= h >> 29
        h &*= p3
        h ^= h >> 32
        return h
    }

    /// XXH64 of `bytes` with `seed`.
    @inlinable
    public static func xxh64(_ bytes: UnsafeRawBufferPointer, seed: UInt64) -> UInt64 {
        let n = bytes.count
        var i = 0
        var h: UInt64
        if n >= 32 {
            var v1 = seed &+ p1 &+ p2
            var v2 = seed &+ p2
            var v3 = seed
            var v4 = seed &- p1
            while i &+ 32 <= n {
                v1 = round(v1, load64(bytes, i))
                v2 = round(v2, load64(bytes, i &+ 8))
                v3 = round(v3, load64(bytes, i &+ 16))
                v4 = round(v4, load64(bytes, i &+ 24))
                i &+= 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = mergeRound(h, v1)
            h = mergeRound(h, v2)
            h = mergeRound(h, v3)
            h = mergeRound(h, v4)
        } else {
            h = seed &+ p5
        }
        h &+= UInt64(n)
        while i &+ 8 <= n {
            h ^= round(0, load64(bytes, i))
            h = rotl(h, 27) &* p1 &+ p4
            i &+= 8
        }
        if i &+ 4 <= n {
            h ^= load32(bytes, i) &* p1
            h = rotl(h, 23) &* p2 &+ p3
            i &+= 4
        }
        while i < n {
            h ^= UInt64(bytes[i]) &* p5
            h = rotl(h, 11) &* p1
            i &+= 1
        }
        return avalanche(h)
    }
}
