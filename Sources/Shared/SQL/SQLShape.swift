// A pattern-cache key that ignores the values of plain constants: texts that differ only in their
// numbers and plain strings share it, so the pattern of `... WHERE id = 42` is found without lexing.

extension SQLHash {
    /// A 64-bit hash of `bytes` with the contents of plain constants left out: a number not inside a
    /// word (digits, `_` between digits, one `.`), and a plain `'...'` string (`''` inside), each count
    /// as one marker (one kind for numbers, another for strings).
    /// Two texts with the same shape hash have the same `SQLNormalizer` pattern (barring a hash
    /// collision), because they differ only in what the normalizer turns into `$n`; spacing, case and
    /// IN-list lengths still count, so one pattern may have several shapes.
    ///
    /// Comments count as a marker whatever their text (so a trace id in a comment does not make a new
    /// key). nil (use `rawText`) when the text has anything this byte scan does not read exactly as
    /// the lexer does: an unterminated block comment or quoted name, a `$` (parameters, dollar quotes),
    /// `U&"..."`, a backslash, a prefixed string (`E'`, `B'`, `X'`, `N'`, `U&'`, or any word right before a quote),
    /// a number that runs into a word or another dot (`1e5`, `0x1F`, `1.2.3`, `1..2`), or an
    /// unterminated string. One pass, a few
    /// instructions per byte, no allocation.
    public static func shape(_ b: UnsafeRawBufferPointer, seed: UInt64 = 0x7368_6170_6573_2121) -> UInt64? {
        let n = b.count
        var h = seed &+ p5
        var i = 0
        var runStart = 0
        @inline(__always) func isWordByte(_ c: UInt8) -> Bool { SQLLexer.isIdentContinue(c) }
        @inline(__always) func flush(_ end: Int) {
            var k = runStart
            while k &+ 8 <= end {
                h = round(h, load64(b, k))
                k &+= 8
            }
            if k < end {
                var tail: UInt64 = UInt64(end &- k) << 56
                var s: UInt64 = 0
                while k < end {
                    tail |= UInt64(b[k]) << s
                    s &+= 8
                    k &+= 1
                }
                h = round(h, tail)
            }
        }
        @inline(__always) func digits(_ i: inout Int) {
            while i < n && (SQLLexer.isDigit(b[i])
                            || (b[i] == UInt8(ascii: "_") && i &+ 1 < n && SQLLexer.isDigit(b[i &+ 1]))) { i &+= 1 }
        }
        // From the opening quote `q` at i to just after its closing one (a doubled `q` inside is one
        // character); false when the text ends first.
        @inline(__always) func skipQuoted(_ q: UInt8) -> Bool {
            i &+= 1
            while i < n {
                if b[i] == q {
                    if i &+ 1 < n && b[i &+ 1] == q {
                        i &+= 2
                        continue
                    }
                    i &+= 1
                    return true
                }
                i &+= 1
            }
            return false
        }
        // Numbers and strings count apart: a `-` before a number may be its sign, before a string not.
        @inline(__always) func marker(_ kind: UInt64) { h = round(h, kind) }
        let number: UInt64 = 0x4E55_4D42_4552_0000, string: UInt64 = 0x5354_5249_4E47_0000
        let comment: UInt64 = 0x434F_4D4D_454E_5400
        while i < n {
            let c = b[i]
            // Most bytes are letters, `_` or spaces, none of them special: two compares.
            if (c > UInt8(ascii: "9") && c != UInt8(ascii: "\\")) || c == UInt8(ascii: " ") {
                i &+= 1
                continue
            }
            switch c {
            case UInt8(ascii: "'"):
                if i > 0 && (isWordByte(b[i &- 1]) || b[i &- 1] == UInt8(ascii: "&")) { return nil }
                flush(i)
                guard skipQuoted(UInt8(ascii: "'")) else { return nil }
                marker(string)
                runStart = i
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if i > 0 && isWordByte(b[i &- 1]) {
                    i &+= 1  // inside a word (t1): part of it
                    continue
                }
                // As the lexer reads a number: digits (a `_` only between digits), then at most one
                // `.` and digits.
                flush(i)
                digits(&i)
                if i < n && b[i] == UInt8(ascii: ".") {
                    i &+= 1
                    if i < n && b[i] == UInt8(ascii: ".") { return nil }
                    digits(&i)
                }
                if i < n && (isWordByte(b[i]) || b[i] == UInt8(ascii: ".")) { return nil }
                marker(number)
                runStart = i
            case UInt8(ascii: ".") where i &+ 1 < n && SQLLexer.isDigit(b[i &+ 1]):
                // `.5`: a number, the dot included (the lexer's longest match), however it is preceded.
                flush(i)
                i &+= 1
                digits(&i)
                if i < n && (isWordByte(b[i]) || b[i] == UInt8(ascii: ".")) { return nil }
                marker(number)
                runStart = i
            case UInt8(ascii: "\""):
                // A quoted name (ORMs quote every name): its bytes count as they are, and nothing in
                // it is a constant or a comment. `U&"..."` is left to the lexer.
                if i > 0 && b[i &- 1] == UInt8(ascii: "&") { return nil }
                guard skipQuoted(UInt8(ascii: "\"")) else { return nil }
            case UInt8(ascii: "$"), UInt8(ascii: "\\"):
                return nil
            case UInt8(ascii: "-"):
                guard i &+ 1 < n && b[i &+ 1] == UInt8(ascii: "-") else {
                    i &+= 1
                    continue
                }
                // A line comment: its text does not count (the normalizer drops comments), its place does.
                flush(i)
                while i < n && b[i] != UInt8(ascii: "\n") { i &+= 1 }
                marker(comment)
                runStart = i
            case UInt8(ascii: "/"):
                guard i &+ 1 < n && b[i &+ 1] == UInt8(ascii: "*") else {
                    i &+= 1
                    continue
                }
                // A block comment, nested as PostgreSQL nests them.
                flush(i)
                var depth = 0
                while true {
                    guard i &+ 1 < n else { return nil }
                    if b[i] == UInt8(ascii: "/") && b[i &+ 1] == UInt8(ascii: "*") {
                        depth &+= 1
                        i &+= 2
                    } else if b[i] == UInt8(ascii: "*") && b[i &+ 1] == UInt8(ascii: "/") {
                        depth &-= 1
                        i &+= 2
                        if depth == 0 { break }
                    } else {
                        i &+= 1
                    }
                }
                marker(comment)
                runStart = i
            default:
                i &+= 1
            }
        }
        flush(n)
        return avalanche(h)
    }
}
