// Query and Parse texts lately found plain (`SQLSessionCandidate.plain`: no session statement, no
// LISTEN word, one statement): most applications send the same few texts again and again, and a
// byte comparison with the copy kept here costs a fraction of the scan. The answer is a function of
// the text's bytes alone, so an entry never goes stale; a text that is not plain is not kept (it goes
// on to the hooks, which classify it).
import Glibc

/// A direct-mapped set of recent plain texts, one per worker: `slots` entries of at most `maxText`
/// bytes (texts shorter than 8 bytes or longer than that are scanned each time), picked by a hash of
/// the length and the first and last eight bytes. A text is copied in the second time it is found
/// plain in a row in its slot (the first time only its hash is noted), so a stream of texts that never
/// repeat costs a hash and a store each, not a copy. Preallocated once (`slots` × `maxText` bytes),
/// never freed: it lives as long as the worker.
struct PlainTextCache {
    static var slots: Int { 64 }
    static var maxText: Int { 512 }

    /// Where a text goes (`slot` -1: a length the cache does not hold), and whether it is there.
    struct Probe {
        let slot: Int
        let hash: UInt64
        let hit: Bool
    }

    /// Per slot: the hash of the text last noted there, and the length of the text held (0: none).
    private let hashes: UnsafeMutablePointer<UInt64>
    private let lengths: UnsafeMutablePointer<Int>
    private let texts: UnsafeMutableRawPointer

    init() {
        hashes = .allocate(capacity: Self.slots)
        hashes.initialize(repeating: 0, count: Self.slots)
        lengths = .allocate(capacity: Self.slots)
        lengths.initialize(repeating: 0, count: Self.slots)
        texts = .allocate(byteCount: Self.slots * Self.maxText, alignment: 16)
    }

    /// Looks a text up. Its first and last eight bytes, loaded for the hash, are compared first; a
    /// text of up to 16 bytes needs nothing more.
    @inline(__always)
    func probe(_ text: UnsafeRawPointer, _ count: Int) -> Probe {
        guard count >= 8 && count <= Self.maxText else { return Probe(slot: -1, hash: 0, hit: false) }
        let first = text.loadUnaligned(as: UInt64.self)
        let last = text.loadUnaligned(fromByteOffset: count &- 8, as: UInt64.self)
        var h = (first ^ UInt64(truncatingIfNeeded: count)) &* 0x9E37_79B9_7F4A_7C15 ^ last
        h = (h ^ (h &>> 29)) &* 0xBF58_476D_1CE4_E5B9
        let s = Int(truncatingIfNeeded: h &>> 58)  // 64 slots
        guard lengths[s] == count && hashes[s] == h else { return Probe(slot: s, hash: h, hit: false) }
        let held = texts + s &* Self.maxText
        let same = held.loadUnaligned(as: UInt64.self) == first
            && held.loadUnaligned(fromByteOffset: count &- 8, as: UInt64.self) == last
            && (count <= 16 || memcmp(held + 8, text + 8, count &- 16) == 0)
        return Probe(slot: s, hash: h, hit: same)
    }

    /// The text `probe` missed was found plain: its hash is noted, or, noted already, the text is
    /// copied in.
    @inline(__always)
    func notePlain(_ p: Probe, _ text: UnsafeRawPointer, _ count: Int) {
        guard p.slot >= 0 else { return }
        if hashes[p.slot] == p.hash {
            copyIn(p.slot, text, count)
        } else {
            hashes[p.slot] = p.hash
            lengths[p.slot] = 0
        }
    }

    @inline(never)
    private func copyIn(_ s: Int, _ text: UnsafeRawPointer, _ count: Int) {
        (texts + s &* Self.maxText).copyMemory(from: text, byteCount: count)
        lengths[s] = count
    }
}
