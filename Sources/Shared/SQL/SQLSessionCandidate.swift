// The data path's cheap test before lexing a Query or Parse text in transaction mode (issue 19): does
// it possibly change session state (SET, PREPARE, a temp table, an advisory lock...)? No lexing, no
// allocation: the first word, and for the rest one pass over the bytes for a `;`, `advisory` or `into`.

public enum SQLSessionCandidate {
    /// True when the text may touch session state and is worth classifying (`SQLClassifier`). False
    /// only when it certainly does not: a single statement whose first word is none of SET, RESET,
    /// DISCARD, PREPARE, EXECUTE, DEALLOCATE, DECLARE, CLOSE, CREATE, SELECT INTO, and which names
    /// nothing like `advisory` (pg_advisory_lock inside any statement). A text starting with a comment
    /// or a parenthesis, or holding a second statement, is a candidate. Errs toward true. The text may
    /// run on past a NUL (a Parse message's parameter types): the check ends there.
    @inlinable
    public static func check(_ text: UnsafeRawBufferPointer) -> Bool {
        guard let p = text.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return false }
        let n = text.count
        var i = 0
        while i < n && isSpace(p[i]) { i &+= 1 }
        if i == n { return false }
        let c0 = p[i]
        if c0 == UInt8(ascii: "/") || c0 == UInt8(ascii: "-") || c0 == UInt8(ascii: "(") { return true }
        // The first word, folded, packed into a UInt64 (8 letters at most).
        var word: UInt64 = 0
        var len = 0
        var j = i
        while j < n {
            let c = p[j] | 0x20
            guard c &- UInt8(ascii: "a") < 26 else { break }
            if len < 8 { word |= UInt64(c) << (UInt64(len) &* 8) }
            len &+= 1
            j &+= 1
        }
        switch len {
        // SET; RESET, CLOSE; CREATE; DISCARD, PREPARE, EXECUTE, DECLARE; DEALLOCATE (its first 8).
        case 3: if word == 0x746573 { return true }
        case 5: if word == 0x74_6573_6572 || word == 0x65_736f_6c63 { return true }
        case 6: if word == 0x6574_6165_7263 { return true }
        case 7:
            if word == 0x64_7261_6373_6964 || word == 0x65_7261_7065_7270 || word == 0x65_7475_6365_7865
                || word == 0x65_7261_6c63_6564 { return true }
        case 10: if word == 0x6163_6f6c_6c61_6564 { return true }
        default: break
        }
        // SELECT or WITH: SELECT ... INTO creates a table.
        let select = (len == 6 && word == 0x7463_656c_6573) || (len == 4 && word == 0x6874_6977)
        return scanRest(p, from: j, count: n, into: select)
    }

    @inlinable
    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (c &- 0x09) < 5 }

    /// One pass: a `;` followed by anything but whitespace, `advisory` in any letter case, and (for
    /// SELECT / WITH) `into`. Quotes and comments are not understood: a hit there only costs a lexing.
    /// Eight bytes at a time: a word holding none of NUL, `;`, `v`/`V` (nor `t`/`T` for INTO) is
    /// skipped with a few integer operations (the has-zero-byte test; it may see a byte that is not
    /// there, never miss one that is).
    @inlinable
    static func scanRest(_ p: UnsafePointer<UInt8>, from start: Int, count n: Int, into: Bool) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let raw = UnsafeRawPointer(p)
        var k = start
        while k &+ 8 <= n {
            let w = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: k, as: UInt64.self))
            let f = w | 0x2020_2020_2020_2020
            var hit = hasZero(w) || hasZero(w ^ (ones &* 0x3B)) || hasZero(f ^ (ones &* 0x76))
            if into && !hit { hit = hasZero(f ^ (ones &* 0x74)) }
            if hit {
                for q in k..<(k &+ 8) {
                    if let r = byte(p, q, n, into) { return r }
                }
            }
            k &+= 8
        }
        while k < n {
            if let r = byte(p, k, n, into) { return r }
            k &+= 1
        }
        return false
    }

    @inlinable
    static func hasZero(_ v: UInt64) -> Bool {
        (v &- 0x0101_0101_0101_0101) & ~v & 0x8080_8080_8080_8080 != 0
    }

    /// The byte at `k`: the answer when it decides one (end, second statement, advisory, into).
    @inlinable
    static func byte(_ p: UnsafePointer<UInt8>, _ k: Int, _ n: Int, _ into: Bool) -> Bool? {
        let c = p[k]
        if c == 0 { return false }
        if c == UInt8(ascii: ";") {
            var m = k &+ 1
            while m < n && (isSpace(p[m]) || p[m] == UInt8(ascii: ";")) { m &+= 1 }
            return m < n && p[m] != 0
        }
        let l = c | 0x20
        if l == UInt8(ascii: "v") && k >= 2 && k &+ 6 <= n && folded(p, k &- 2, 8) == 0x7972_6f73_6976_6461 { return true }
        if into && l == UInt8(ascii: "t") && k >= 2 && k &+ 2 <= n && folded(p, k &- 2, 4) == 0x6f74_6e69 { return true }
        return nil
    }

    /// `len` bytes at `at`, each OR 0x20 (ASCII letters folded), packed little-endian.
    @inlinable
    static func folded(_ p: UnsafePointer<UInt8>, _ at: Int, _ len: Int) -> UInt64 {
        var v: UInt64 = 0
        for q in 0..<len { v |= UInt64(p[at &+ q] | 0x20) << (UInt64(q) &* 8) }
        return v
    }
}
