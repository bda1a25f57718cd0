// The data path's cheap test before lexing a Query or Parse text in transaction mode (issue 19): does
// it possibly change session state (SET, PREPARE, a temp table, an advisory lock...)? No lexing, no
// allocation: the first word, and for the rest one pass over the bytes for a `;`, `advisory` or `into`.

public enum SQLSessionCandidate {
    /// True when the text may touch session state and is worth classifying (`SQLClassifier`). False
    /// only when it certainly does not: a single statement whose first word is none of SET, RESET,
    /// DISCARD, PREPARE, EXECUTE, DEALLOCATE, DECLARE, CLOSE, CREATE, SELECT INTO, and which names
    /// nothing like `advisory` (pg_advisory_lock inside any statement). A text starting with a comment
    /// or a parenthesis, or holding a second statement, is a candidate. Errs toward true.
    @inlinable
    public static func check(_ text: UnsafeRawBufferPointer) -> Bool {
        let n = text.count
        var i = 0
        while i < n && SQLLexer.isWhitespace(text[i]) { i &+= 1 }
        if i == n { return false }
        let c0 = text[i]
        if c0 == UInt8(ascii: "/") || c0 == UInt8(ascii: "-") || c0 == UInt8(ascii: "(") { return true }
        // The first word, folded, packed into a UInt64 (8 letters at most; longer is `long`).
        var word: UInt64 = 0
        var len = 0
        var j = i
        while j < n {
            let c = text[j] | 0x20
            guard c &- UInt8(ascii: "a") < 26 else { break }
            if len < 8 { word |= UInt64(c) << (UInt64(len) &* 8) }
            len &+= 1
            j &+= 1
        }
        if Self.sessionWord(word, len) { return true }
        // Anything else: a second statement, an advisory-lock function, SELECT ... INTO.
        let select = len == 6 && word == Words.select || len == 4 && word == Words.with
        return Self.scanRest(text, from: j, into: select)
    }

    // The text may run on past a NUL (a Parse message's parameter types): the check ends there.

    /// SET, RESET, DISCARD, PREPARE, EXECUTE, DEALLOCATE, DECLARE, CLOSE, CREATE.
    @inlinable
    static func sessionWord(_ w: UInt64, _ len: Int) -> Bool {
        switch len {
        case 3: return w == Words.set
        case 5: return w == Words.reset || w == Words.close
        case 6: return w == Words.create
        case 7: return w == Words.discard || w == Words.prepare || w == Words.execute || w == Words.declare
        case 10: return w == Words.dealloca
        default: return false
        }
    }

    /// One pass: a `;` followed by anything but whitespace, `advisory` in any letter case, and (for
    /// SELECT / WITH) `into`. Quotes and comments are not understood: a hit there only costs a lexing.
    @inlinable
    static func scanRest(_ text: UnsafeRawBufferPointer, from start: Int, into: Bool) -> Bool {
        let n = text.count
        var k = start
        while k < n {
            let c = text[k]
            if c == 0 { return false }
            if c == UInt8(ascii: ";") {
                var m = k &+ 1
                while m < n && (SQLLexer.isWhitespace(text[m]) || text[m] == UInt8(ascii: ";")) { m &+= 1 }
                return m < n && text[m] != 0
            }
            let l = c | 0x20
            if l == UInt8(ascii: "v") && k >= 2 && matches(text, k &- 2, "advisory") { return true }
            if into && l == UInt8(ascii: "t") && k >= 2 && matches(text, k &- 2, "into") { return true }
            k &+= 1
        }
        return false
    }

    /// `word` (lower case) at `at`, any letter case.
    @inlinable
    static func matches(_ text: UnsafeRawBufferPointer, _ at: Int, _ word: StaticString) -> Bool {
        let w = word.utf8Start
        let len = word.utf8CodeUnitCount
        guard at &+ len <= text.count else { return false }
        for q in 0..<len where text[at &+ q] | 0x20 != w[q] { return false }
        return true
    }

    /// The first words looked for, packed once.
    @usableFromInline
    enum Words {
        @usableFromInline static let set = pack("set")
        @usableFromInline static let reset = pack("reset")
        @usableFromInline static let close = pack("close")
        @usableFromInline static let create = pack("create")
        @usableFromInline static let discard = pack("discard")
        @usableFromInline static let prepare = pack("prepare")
        @usableFromInline static let execute = pack("execute")
        @usableFromInline static let declare = pack("declare")
        @usableFromInline static let dealloca = pack("dealloca")
        @usableFromInline static let select = pack("select")
        @usableFromInline static let with = pack("with")
    }

    /// Up to 8 lower-case letters packed as `check` packs the first word.
    @inlinable
    static func pack(_ s: StaticString) -> UInt64 {
        var v: UInt64 = 0
        let p = s.utf8Start
        for k in 0..<min(8, s.utf8CodeUnitCount) { v |= UInt64(p[k]) << (UInt64(k) &* 8) }
        return v
    }
}
