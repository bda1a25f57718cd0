// The data path's cheap test before lexing a Query or Parse text in transaction mode (issue 19): does
// it possibly change session state (SET, PREPARE, a temp table, an advisory lock...)? No lexing, no
// allocation: the first word, and for the rest one pass over the bytes for a `;`, `advisory`,
// `set_config` or `into`.

public enum SQLSessionCandidate {
    /// True when the text may touch session state and is worth classifying (`SQLClassifier`). False
    /// only when it certainly does not: a single statement whose first word is none of SET, RESET,
    /// DISCARD, PREPARE, EXECUTE, DEALLOCATE, DECLARE, CLOSE, CREATE, SELECT INTO, and which names
    /// nothing like `advisory` (pg_advisory_lock inside any statement) or `set_config`. A text starting with a comment
    /// or a parenthesis, or holding a second statement, is a candidate. Errs toward true. The text may
    /// run on past a NUL (a Parse message's parameter types): the check ends there.
    public static func check(_ text: UnsafeRawBufferPointer) -> Bool {
        guard let p = text.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return false }
        return classify(p, text.count, listen: false) == .candidate
    }

    /// For the data path's hooks (the worker's `plainText`): true when `check` would say false and the
    /// first word is no LISTEN or UNLISTEN either (the LISTEN relay's words; DISCARD is a candidate
    /// already) and the text is not all blanks. One call, for both hooks.
    public static func plain(_ text: UnsafeRawPointer, _ count: Int) -> Bool {
        classify(text.assumingMemoryBound(to: UInt8.self), count, listen: true) == .plain
    }

    enum Verdict { case plain, candidate, blank }

    @inline(__always)
    static func classify(_ p: UnsafePointer<UInt8>, _ n: Int, listen: Bool) -> Verdict {
        var i = 0
        while i < n && isSpace(p[i]) { i &+= 1 }
        if i == n { return .blank }
        let c0 = p[i]
        if c0 == UInt8(ascii: "/") || c0 == UInt8(ascii: "-") || c0 == UInt8(ascii: "(") { return .candidate }
        let (word, len) = firstWord(p, i, n)
        switch len {
        // SET; RESET, CLOSE; CREATE, LISTEN; DISCARD, PREPARE, EXECUTE, DECLARE; UNLISTEN; DEALLOCATE
        // (its first 8).
        case 3: if word == 0x746573 { return .candidate }
        case 5: if word == 0x74_6573_6572 || word == 0x65_736f_6c63 { return .candidate }
        case 6: if word == 0x6574_6165_7263 || (listen && word == 0x6e65_7473_696c) { return .candidate }
        case 7:
            if word == 0x64_7261_6373_6964 || word == 0x65_7261_7065_7270 || word == 0x65_7475_6365_7865
                || word == 0x65_7261_6c63_6564 { return .candidate }
        case 8: if listen && word == 0x6e65_7473_696c_6e75 { return .candidate }
        case 10: if word == 0x6163_6f6c_6c61_6564 { return .candidate }
        default: break
        }
        // SELECT or WITH: SELECT ... INTO creates a table.
        let select = (len == 6 && word == 0x7463_656c_6573) || (len == 4 && word == 0x6874_6977)
        return scanRest(p, from: i &+ len, count: n, into: select) ? .candidate : .plain
    }

    @inline(__always)
    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (c &- 0x09) < 5 }

    /// The ASCII letters starting at `i`: their count, and the first eight of them folded to lower
    /// case, packed little-endian. With eight bytes to read, one load finds the word's end: a byte is
    /// a letter when, OR 0x20, it lies in `a`...`z` (the sums below never carry out of a byte, since
    /// the high bits are masked first; bytes of 0x80 and above are no letters).
    @inline(__always)
    static func firstWord(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> (word: UInt64, count: Int) {
        if i &+ 8 <= n {
            let f = UInt64(littleEndian: UnsafeRawPointer(p).loadUnaligned(fromByteOffset: i, as: UInt64.self))
                | 0x2020_2020_2020_2020
            let x = f & 0x7F7F_7F7F_7F7F_7F7F
            let letters = (x &+ 0x1F1F_1F1F_1F1F_1F1F) & ~(x &+ 0x0505_0505_0505_0505) & ~f & 0x8080_8080_8080_8080
            let others = ~letters & 0x8080_8080_8080_8080
            if others != 0 {
                let count = others.trailingZeroBitCount >> 3
                return (f & ((1 &<< (UInt64(count) &* 8)) &- 1), count)
            }
            var j = i &+ 8
            while j < n && (p[j] | 0x20) &- UInt8(ascii: "a") < 26 { j &+= 1 }
            return (f, j &- i)
        }
        var word: UInt64 = 0
        var j = i
        while j < n {
            let c = p[j] | 0x20
            guard c &- UInt8(ascii: "a") < 26 else { break }
            word |= UInt64(c) << (UInt64(j &- i) &* 8)
            j &+= 1
        }
        return (word, j &- i)
    }

    /// One pass: a `;` followed by anything but whitespace, `advisory` and `set_config` in any letter
    /// case, and (for SELECT / WITH) `into`. Quotes and comments are not understood: a hit there only
    /// costs a lexing. Eight bytes at a time are skipped with a few integer operations when none of
    /// them may decide (`candidates`: NUL, `;`, `_`, `v`/`V`, and with `into` `t`/`T`); the last 1-7
    /// bytes are the text's last eight, shifted down so that they start at `k`, blanks above. `byte`
    /// decides at a candidate, or the scan goes on after it.
    @inline(__always)
    static func scanRest(_ p: UnsafePointer<UInt8>, from start: Int, count n: Int, into: Bool) -> Bool {
        let raw = UnsafeRawPointer(p)
        var k = start
        while k < n {
            let m: UInt64
            if k &+ 8 <= n {
                m = candidates(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: k, as: UInt64.self)), into)
                if m == 0 { k &+= 8; continue }
            } else if n >= 8 {
                let r = n &- k
                let w = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self)) &>> (UInt64(8 &- r) &* 8)
                    | (0x2020_2020_2020_2020 &<< (UInt64(r) &* 8))
                m = candidates(w, into)
                if m == 0 { return false }
            } else {
                let c = p[k], l = c | 0x20
                guard c == 0 || c == UInt8(ascii: ";") || c == UInt8(ascii: "_") || l == UInt8(ascii: "v")
                    || (into && l == UInt8(ascii: "t")) else { k &+= 1; continue }
                m = 0x80
            }
            let c = k &+ m.trailingZeroBitCount >> 3
            if let r = byte(p, c, n, into) { return r }
            k = c &+ 1
        }
        return false
    }

    /// 0x80 in each byte of `w` that may decide (see `nextCandidate`), possibly in bytes above one.
    @inline(__always)
    static func candidates(_ w: UInt64, _ into: Bool) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let f = w | 0x2020_2020_2020_2020
        let m = zeroBytes(w) | zeroBytes(w ^ (ones &* 0x3B)) | zeroBytes(w ^ (ones &* 0x5F)) | zeroBytes(f ^ (ones &* 0x76))
        return into ? m | zeroBytes(f ^ (ones &* 0x74)) : m
    }

    /// 0x80 in each byte of `v` that is zero, and possibly in bytes above such a byte (a borrow): the
    /// lowest bit set is always a zero byte.
    @inline(__always)
    static func zeroBytes(_ v: UInt64) -> UInt64 {
        (v &- 0x0101_0101_0101_0101) & ~v & 0x8080_8080_8080_8080
    }

    /// The byte at `k`: the answer when it decides one (end, second statement, advisory, set_config,
    /// into).
    @inline(__always)
    static func byte(_ p: UnsafePointer<UInt8>, _ k: Int, _ n: Int, _ into: Bool) -> Bool? {
        let c = p[k]
        if c == 0 { return false }
        if c == UInt8(ascii: ";") {
            var m = k &+ 1
            while m < n && (isSpace(p[m]) || p[m] == UInt8(ascii: ";")) { m &+= 1 }
            return m < n && p[m] != 0
        }
        let l = c | 0x20
        if l == UInt8(ascii: "v") && k >= 2 && k &+ 6 <= n && folded8(p, k &- 2) == 0x7972_6f73_6976_6461 { return true }
        // `set_conf`, the underscore folded to 0x7F.
        if c == UInt8(ascii: "_") && k >= 3 && k &+ 5 <= n && folded8(p, k &- 3) == 0x666e_6f63_7f74_6573 { return true }
        if into && l == UInt8(ascii: "t") && k >= 2 && k &+ 2 <= n && folded4(p, k &- 2) == 0x6f74_6e69 { return true }
        return nil
    }

    /// The eight bytes at `at`, each OR 0x20 (ASCII letters folded), little-endian: one load.
    @inline(__always)
    static func folded8(_ p: UnsafePointer<UInt8>, _ at: Int) -> UInt64 {
        UInt64(littleEndian: UnsafeRawPointer(p).loadUnaligned(fromByteOffset: at, as: UInt64.self)) | 0x2020_2020_2020_2020
    }

    /// The four bytes at `at`, each OR 0x20, little-endian: one load.
    @inline(__always)
    static func folded4(_ p: UnsafePointer<UInt8>, _ at: Int) -> UInt32 {
        UInt32(littleEndian: UnsafeRawPointer(p).loadUnaligned(fromByteOffset: at, as: UInt32.self)) | 0x2020_2020
    }
}
