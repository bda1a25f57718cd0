// The fuzzer's deterministic PRNG: xoshiro256** seeded through splitmix64, one stream per input.

/// splitmix64: seeds xoshiro and mixes (seed, phase, index) into one independent stream per input.
public struct SplitMix64 {
    public var state: UInt64

    public init(_ seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// xoshiro256** (Blackman & Vigna). Our own bounded draws (not `Int.random(in:using:)`) so that a
/// seed means the same inputs whatever the standard library's sampling algorithm becomes.
public struct FuzzRandom: RandomNumberGenerator {
    private var s0, s1, s2, s3: UInt64

    public init(seed: UInt64) {
        var sm = SplitMix64(seed)
        s0 = sm.next(); s1 = sm.next(); s2 = sm.next(); s3 = sm.next()
    }

    /// The stream of input `index` of `phase` in a run seeded `seed`: independent of the order in
    /// which inputs are run, so one input is replayed from (seed, phase, index) alone.
    public static func forInput(seed: UInt64, phase: FuzzPhase, index: UInt64) -> FuzzRandom {
        var sm = SplitMix64(seed ^ (UInt64(phase.rawValue) &* 0xD1B5_4A32_D192_ED03))
        let base = sm.next()
        var mix = SplitMix64(base ^ (index &* 0x9E37_79B9_7F4A_7C15))
        return FuzzRandom(seed: mix.next())
    }

    @inline(__always) private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = FuzzRandom.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = FuzzRandom.rotl(s3, 45)
        return result
    }

    /// Uniform in 0..<n (n > 0), Lemire's multiply-high without the rejection step (bias < n / 2^64).
    public mutating func below(_ n: Int) -> Int {
        precondition(n > 0)
        return Int(next().multipliedFullWidth(by: UInt64(n)).high)
    }

    /// Uniform in lo...hi.
    public mutating func between(_ lo: Int, _ hi: Int) -> Int { lo + below(hi - lo + 1) }

    /// True with probability percent / 100.
    public mutating func chance(_ percent: Int) -> Bool { below(100) < percent }

    public mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }

    public mutating func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        for i in 0..<n { out[i] = UInt8(truncatingIfNeeded: next() >> 24) }
        return out
    }
}

/// The two phases; the raw value enters the per-input stream, so never renumber them.
public enum FuzzPhase: UInt8, Sendable {
    case preAuth = 1
    case postAuth = 2

    public var name: String { self == .preAuth ? "pre" : "post" }

    public init?(name: String) {
        switch name {
        case "pre", "pre-auth": self = .preAuth
        case "post", "post-auth": self = .postAuth
        default: return nil
        }
    }
}
