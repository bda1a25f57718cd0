// SQL lexer over raw bytes with PostgreSQL's token rules: tokens are byte ranges, nothing is allocated.

/// What a token is. Keywords are not told apart from names: both are `identifier` (compare them with
/// `SQLLexer.isWord`), as PostgreSQL's own scanner does before the grammar runs.
public enum SQLTokenKind: UInt8, Sendable {
    /// Spaces, tabs, newlines, carriage returns, form feeds, vertical tabs.
    case whitespace
    /// `-- ...` up to (not including) the end of the line.
    case lineComment
    /// `/* ... */`, nested as PostgreSQL nests them.
    case blockComment
    /// An unquoted word: a keyword or a name. PostgreSQL folds its ASCII letters to lower case.
    case identifier
    /// `"a""b"` or `U&"..."` (flag `unicode`): kept as written, case and all.
    case quotedIdentifier
    /// `42`, `1_000`, `3.14`, `.5`, `1e-3`, `0x1F`, `0o17`, `0b101`.
    case number
    /// `'...'`, `E'...'`, `U&'...'`, `B'...'`, `X'...'`, `N'...'`: the flags say which.
    case string
    /// `$$...$$` or `$tag$...$tag$`.
    case dollarString
    /// A positional parameter: `$1`.
    case parameter
    /// An operator: `+`, `::`, `<=`, `->>`, `:=`, `=>`, `@>`, `..`, ...
    case op
    case leftParen, rightParen, leftBracket, rightBracket, comma, semicolon, dot, colon
    /// One byte that starts no token (a backslash, `{`, a `$` that opens nothing, a control byte).
    case other
}

/// Details of a token.
public struct SQLTokenFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// A quote, dollar quote or block comment that the input ends inside of: the token runs to the end.
    public static let unterminated = SQLTokenFlags(rawValue: 1 << 0)
    /// `E'...'`: backslash escapes.
    public static let escape = SQLTokenFlags(rawValue: 1 << 1)
    /// `U&'...'` or `U&"..."`.
    public static let unicode = SQLTokenFlags(rawValue: 1 << 2)
    /// `B'...'`.
    public static let bitString = SQLTokenFlags(rawValue: 1 << 3)
    /// `X'...'`.
    public static let hexString = SQLTokenFlags(rawValue: 1 << 4)
    /// `N'...'` (a plain string for PostgreSQL).
    public static let national = SQLTokenFlags(rawValue: 1 << 5)
    /// A plain `'...'` lexed with standard_conforming_strings off: backslashes escaped the next byte.
    public static let backslashEscapes = SQLTokenFlags(rawValue: 1 << 6)
}

/// One token: its kind and the byte range `start..<end` of the lexed buffer.
@frozen
public struct SQLToken: Equatable, Sendable {
    public var kind: SQLTokenKind
    public var flags: SQLTokenFlags
    public var start: Int
    public var end: Int

    @inlinable public init(kind: SQLTokenKind, flags: SQLTokenFlags = [], start: Int, end: Int) {
        self.kind = kind
        self.flags = flags
        self.start = start
        self.end = end
    }

    @inlinable public var range: Range<Int> { start..<end }
    @inlinable public var length: Int { end &- start }
    /// Whitespace and comments: what the grammar never sees.
    @inlinable public var isTrivia: Bool {
        kind == .whitespace || kind == .lineComment || kind == .blockComment
    }
    /// A constant: number, any string form, dollar-quoted string.
    @inlinable public var isLiteral: Bool { kind == .number || kind == .string || kind == .dollarString }
    /// An unquoted or quoted name.
    @inlinable public var isName: Bool { kind == .identifier || kind == .quotedIdentifier }
}

/// Splits bytes into tokens the way PostgreSQL's scanner (scan.l) does, without its errors: every byte
/// of the range lands in exactly one token, tokens come in order and touch each other, and malformed
/// input (an unterminated quote, a stray byte) still yields tokens. A struct of a pointer and three
/// integers: copy it to look ahead.
///
/// Not handled, on purpose: string continuation across a newline (`'a'\n'b'` is two strings here),
/// `UESCAPE` (its string is an ordinary string token), and PostgreSQL 15's "trailing junk" errors
/// (`123abc` is a number then an identifier, as PostgreSQL 14 read it).
public struct SQLLexer {
    /// The buffer the token ranges index into.
    public let bytes: UnsafeRawBufferPointer
    /// Where the next token starts.
    public private(set) var position: Int
    /// Where lexing stops (exclusive).
    public let end: Int
    /// PostgreSQL's standard_conforming_strings: when off, a plain `'...'` takes backslash escapes.
    public let standardConformingStrings: Bool

    /// Lexes `range` of `bytes` (all of it by default).
    public init(_ bytes: UnsafeRawBufferPointer, range: Range<Int>? = nil, standardConformingStrings: Bool = true) {
        self.bytes = bytes
        let r = range ?? 0..<bytes.count
        precondition(r.lowerBound >= 0 && r.upperBound <= bytes.count, "SQLLexer: range outside the buffer")
        position = r.lowerBound
        end = r.upperBound
        self.standardConformingStrings = standardConformingStrings
    }

    @inlinable public var isAtEnd: Bool { position >= end }

    @inlinable @inline(__always)
    func byte(_ i: Int) -> UInt8 { i < end ? bytes[i] : 0 }

    /// The next token, nil at the end.
    public mutating func next() -> SQLToken? {
        let s = position
        guard s < end else { return nil }
        let b = bytes[s]
        var i = s &+ 1
        var kind = SQLTokenKind.other
        var flags: SQLTokenFlags = []
        switch b {
        case 0x20, 0x09, 0x0A, 0x0D, 0x0C, 0x0B:
            while i < end && SQLLexer.isWhitespace(bytes[i]) { i &+= 1 }
            kind = .whitespace
        case UInt8(ascii: "-") where byte(i) == UInt8(ascii: "-"):
            i &+= 1
            while i < end && bytes[i] != 0x0A && bytes[i] != 0x0D { i &+= 1 }
            kind = .lineComment
        case UInt8(ascii: "/") where byte(i) == UInt8(ascii: "*"):
            kind = .blockComment
            (i, flags) = scanBlockComment(from: s &+ 2)
        case UInt8(ascii: "'"):
            kind = .string
            let backslashes = !standardConformingStrings
            if backslashes { flags = .backslashEscapes }
            i = scanQuoted(from: i, quote: UInt8(ascii: "'"), backslashes: backslashes, doubling: true, flags: &flags)
        case UInt8(ascii: "\""):
            kind = .quotedIdentifier
            i = scanQuoted(from: i, quote: UInt8(ascii: "\""), backslashes: false, doubling: true, flags: &flags)
        case UInt8(ascii: "$"):
            (kind, i, flags) = scanDollar(s)
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            kind = .number
            i = scanNumber(s)
        case UInt8(ascii: "."):
            if SQLLexer.isDigit(byte(i)) {
                kind = .number
                i = scanNumber(s)
            } else if byte(i) == UInt8(ascii: ".") {
                kind = .op  // `..` (PL/pgSQL ranges): one token, as in PostgreSQL
                i &+= 1
            } else {
                kind = .dot
            }
        case UInt8(ascii: "("): kind = .leftParen
        case UInt8(ascii: ")"): kind = .rightParen
        case UInt8(ascii: "["): kind = .leftBracket
        case UInt8(ascii: "]"): kind = .rightBracket
        case UInt8(ascii: ","): kind = .comma
        case UInt8(ascii: ";"): kind = .semicolon
        case UInt8(ascii: ":"):
            let n = byte(i)
            if n == UInt8(ascii: ":") || n == UInt8(ascii: "=") {
                kind = .op
                i &+= 1
            } else {
                kind = .colon
            }
        default:
            if SQLLexer.isOpChar(b) {
                kind = .op
                i = scanOperator(s)
            } else if SQLLexer.isIdentStart(b) {
                (kind, i, flags) = scanWordOrPrefixedQuote(s)
            }
        }
        position = i
        return SQLToken(kind: kind, flags: flags, start: s, end: i)
    }

    /// The next token that is not whitespace or a comment, nil at the end.
    @inlinable
    public mutating func nextSignificant() -> SQLToken? {
        while let t = next() {
            if !t.isTrivia { return t }
        }
        return nil
    }

    /// The next significant token without consuming it.
    @inlinable
    public func peekSignificant() -> SQLToken? {
        var copy = self
        return copy.nextSignificant()
    }

    // MARK: Scanners (each returns the index after the token)

    @usableFromInline
    func scanBlockComment(from start: Int) -> (Int, SQLTokenFlags) {
        var depth = 1
        var i = start
        while i < end {
            let c = bytes[i]
            if c == UInt8(ascii: "*") && byte(i &+ 1) == UInt8(ascii: "/") {
                depth &-= 1
                i &+= 2
                if depth == 0 { return (i, []) }
            } else if c == UInt8(ascii: "/") && byte(i &+ 1) == UInt8(ascii: "*") {
                depth &+= 1
                i &+= 2
            } else {
                i &+= 1
            }
        }
        return (end, .unterminated)
    }

    /// A quoted body from `start` (just after the opening quote) through the closing quote.
    @usableFromInline
    func scanQuoted(from start: Int, quote: UInt8, backslashes: Bool, doubling: Bool, flags: inout SQLTokenFlags) -> Int {
        var i = start
        while i < end {
            let c = bytes[i]
            if c == quote {
                if doubling && byte(i &+ 1) == quote {
                    i &+= 2
                    continue
                }
                return i &+ 1
            }
            if backslashes && c == UInt8(ascii: "\\") {
                i &+= 2
                continue
            }
            i &+= 1
        }
        flags.insert(.unterminated)
        return end
    }

    /// `$1`, `$$...$$`, `$tag$...$tag$`, or a lone `$` (PostgreSQL returns it as a character the
    /// grammar rejects; the bytes after it lex on their own).
    @usableFromInline
    func scanDollar(_ s: Int) -> (SQLTokenKind, Int, SQLTokenFlags) {
        let n = byte(s &+ 1)
        if SQLLexer.isDigit(n) { return (.parameter, scanDecimalDigits(s &+ 1), []) }
        var tagEnd: Int  // index of the closing `$` of the opening delimiter
        if n == UInt8(ascii: "$") {
            tagEnd = s &+ 1
        } else if SQLLexer.isIdentStart(n) {
            tagEnd = s &+ 2
            while tagEnd < end && SQLLexer.isDollarTagChar(bytes[tagEnd]) { tagEnd &+= 1 }
            guard tagEnd < end && bytes[tagEnd] == UInt8(ascii: "$") else { return (.other, s &+ 1, []) }
        } else {
            return (.other, s &+ 1, [])
        }
        let delimiterLength = tagEnd &+ 1 &- s
        var i = tagEnd &+ 1
        while i &+ delimiterLength <= end {
            if bytes[i] == UInt8(ascii: "$") {
                var k = 1
                while k < delimiterLength && bytes[i &+ k] == bytes[s &+ k] { k &+= 1 }
                if k == delimiterLength { return (.dollarString, i &+ delimiterLength, []) }
            }
            i &+= 1
        }
        return (.dollarString, end, .unterminated)
    }

    /// Digits with single underscores between them (PostgreSQL 16), from a digit at `start`.
    @usableFromInline
    func scanDecimalDigits(_ start: Int) -> Int {
        var i = start &+ 1
        while i < end {
            let c = bytes[i]
            if SQLLexer.isDigit(c) {
                i &+= 1
            } else if c == UInt8(ascii: "_") && SQLLexer.isDigit(byte(i &+ 1)) {
                i &+= 2
            } else {
                break
            }
        }
        return i
    }

    @usableFromInline
    func scanNumber(_ s: Int) -> Int {
        if bytes[s] == UInt8(ascii: "0") {
            let radix = byte(s &+ 1) | 0x20
            let base: UInt8 = radix == UInt8(ascii: "x") ? 16 : radix == UInt8(ascii: "o") ? 8 : radix == UInt8(ascii: "b") ? 2 : 0
            if base != 0 {
                // 0x, 0o, 0b: groups of an optional underscore and a digit; "0x" alone is 0 then a word.
                var i = s &+ 2
                while true {
                    var t = i
                    if byte(t) == UInt8(ascii: "_") { t &+= 1 }
                    guard t < end && SQLLexer.isDigit(bytes[t], base: base) else { break }
                    i = t &+ 1
                }
                if i > s &+ 2 { return i }
            }
        }
        var i = s
        if SQLLexer.isDigit(bytes[s]) { i = scanDecimalDigits(s) }
        // A decimal point, unless it starts `..` (`1..10` is 1 then `..`).
        if byte(i) == UInt8(ascii: ".") && byte(i &+ 1) != UInt8(ascii: ".") {
            i &+= 1
            if SQLLexer.isDigit(byte(i)) { i = scanDecimalDigits(i) }
        }
        if byte(i) | 0x20 == UInt8(ascii: "e") && i < end {
            var t = i &+ 1
            if byte(t) == UInt8(ascii: "+") || byte(t) == UInt8(ascii: "-") { t &+= 1 }
            if SQLLexer.isDigit(byte(t)) { i = scanDecimalDigits(t) }
        }
        return i
    }

    /// PostgreSQL's operator rule: the longest run of operator characters, cut before a comment
    /// start inside it; a trailing `+`/`-` is dropped unless the operator has one of `~!@#^&|`?%`
    /// (so `=-1` is `=` then `-` then `1`).
    @usableFromInline
    func scanOperator(_ s: Int) -> Int {
        var j = s &+ 1
        while j < end && SQLLexer.isOpChar(bytes[j]) {
            let c = bytes[j]
            let n = byte(j &+ 1)
            if (c == UInt8(ascii: "-") && n == UInt8(ascii: "-")) || (c == UInt8(ascii: "/") && n == UInt8(ascii: "*")) { break }
            j &+= 1
        }
        var last = j
        if last &- s > 1 && SQLLexer.isPlusOrMinus(bytes[last &- 1]) {
            var special = false
            var k = s
            while k < last &- 1 {
                switch bytes[k] {
                case UInt8(ascii: "~"), UInt8(ascii: "!"), UInt8(ascii: "@"), UInt8(ascii: "#"), UInt8(ascii: "^"),
                     UInt8(ascii: "&"), UInt8(ascii: "|"), UInt8(ascii: "`"), UInt8(ascii: "?"), UInt8(ascii: "%"):
                    special = true
                default: break
                }
                k &+= 1
            }
            if !special {
                repeat { last &-= 1 } while last &- s > 1 && SQLLexer.isPlusOrMinus(bytes[last &- 1])
            }
        }
        return last
    }

    /// A word, or a one-letter prefix glued to a quote: `E'`, `B'`, `X'`, `N'`, `U&'`, `U&"`.
    @usableFromInline
    func scanWordOrPrefixedQuote(_ s: Int) -> (SQLTokenKind, Int, SQLTokenFlags) {
        let lower = bytes[s] | 0x20
        let n = byte(s &+ 1)
        var flags: SQLTokenFlags = []
        if n == UInt8(ascii: "'") {
            switch lower {
            case UInt8(ascii: "e"):
                flags = .escape
                return (.string, scanQuoted(from: s &+ 2, quote: n, backslashes: true, doubling: true, flags: &flags), flags)
            case UInt8(ascii: "b"), UInt8(ascii: "x"):
                // Bit strings end at the first quote (PostgreSQL does not double quotes in them).
                flags = lower == UInt8(ascii: "b") ? .bitString : .hexString
                return (.string, scanQuoted(from: s &+ 2, quote: n, backslashes: false, doubling: false, flags: &flags), flags)
            case UInt8(ascii: "n"):
                flags = .national
                let backslashes = !standardConformingStrings
                if backslashes { flags.insert(.backslashEscapes) }
                return (.string, scanQuoted(from: s &+ 2, quote: n, backslashes: backslashes, doubling: true, flags: &flags), flags)
            default: break
            }
        } else if lower == UInt8(ascii: "u") && n == UInt8(ascii: "&") {
            let q = byte(s &+ 2)
            if q == UInt8(ascii: "'") || q == UInt8(ascii: "\"") {
                flags = .unicode
                let i = scanQuoted(from: s &+ 3, quote: q, backslashes: false, doubling: true, flags: &flags)
                return (q == UInt8(ascii: "'") ? .string : .quotedIdentifier, i, flags)
            }
        }
        var i = s &+ 1
        while i < end && SQLLexer.isIdentContinue(bytes[i]) { i &+= 1 }
        return (.identifier, i, [])
    }

    // MARK: Byte classes (PostgreSQL's, for UTF-8 and other ASCII-compatible encodings)

    @inlinable @inline(__always)
    public static func isWhitespace(_ c: UInt8) -> Bool {
        c == 0x20 || (c >= 0x09 && c <= 0x0D)
    }

    @inlinable @inline(__always)
    public static func isDigit(_ c: UInt8) -> Bool { c &- UInt8(ascii: "0") < 10 }

    @inlinable @inline(__always)
    static func isDigit(_ c: UInt8, base: UInt8) -> Bool {
        if base == 16 {
            return isDigit(c) || ((c | 0x20) >= UInt8(ascii: "a") && (c | 0x20) <= UInt8(ascii: "f"))
        }
        return c &- UInt8(ascii: "0") < base
    }

    @inlinable @inline(__always)
    public static func isIdentStart(_ c: UInt8) -> Bool {
        let l = c | 0x20
        return (l >= UInt8(ascii: "a") && l <= UInt8(ascii: "z")) || c == UInt8(ascii: "_") || c >= 0x80
    }

    @inlinable @inline(__always)
    public static func isIdentContinue(_ c: UInt8) -> Bool {
        isIdentStart(c) || isDigit(c) || c == UInt8(ascii: "$")
    }

    @inlinable @inline(__always)
    static func isDollarTagChar(_ c: UInt8) -> Bool { isIdentStart(c) || isDigit(c) }

    @inlinable @inline(__always)
    static func isPlusOrMinus(_ c: UInt8) -> Bool { c == UInt8(ascii: "+") || c == UInt8(ascii: "-") }

    @inlinable @inline(__always)
    public static func isOpChar(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "~"), UInt8(ascii: "!"), UInt8(ascii: "@"), UInt8(ascii: "#"), UInt8(ascii: "^"),
             UInt8(ascii: "&"), UInt8(ascii: "|"), UInt8(ascii: "`"), UInt8(ascii: "?"), UInt8(ascii: "+"),
             UInt8(ascii: "-"), UInt8(ascii: "*"), UInt8(ascii: "/"), UInt8(ascii: "%"), UInt8(ascii: "<"),
             UInt8(ascii: ">"), UInt8(ascii: "="):
            return true
        default:
            return false
        }
    }

    @inlinable @inline(__always)
    static func lower(_ c: UInt8) -> UInt8 {
        c &- UInt8(ascii: "A") < 26 ? c | 0x20 : c
    }
}

// MARK: Comparing and folding words

extension SQLLexer {
    /// True when `t` is the unquoted word `word` (given in lower case), compared as PostgreSQL folds
    /// unquoted names: ASCII letters only.
    @inlinable
    public func isWord(_ t: SQLToken, _ word: StaticString) -> Bool {
        t.kind == .identifier && t.length == word.utf8CodeUnitCount && matches(at: t.start, Self.raw(word), folding: true)
    }

    /// True when `t` is the operator `text` exactly.
    @inlinable
    public func isOp(_ t: SQLToken, _ text: StaticString) -> Bool {
        t.kind == .op && t.length == text.utf8CodeUnitCount && matches(at: t.start, Self.raw(text), folding: false)
    }

    /// True when the name `t` denotes `name` (lower case, no quotes): an unquoted word compared as
    /// PostgreSQL folds it, a quoted identifier byte for byte (`"NextVal"` is not `nextval`).
    @inlinable
    public func names(_ t: SQLToken, _ name: UnsafeRawBufferPointer) -> Bool {
        switch t.kind {
        case .identifier:
            return t.length == name.count && matches(at: t.start, name, folding: true)
        case .quotedIdentifier:
            guard !t.flags.contains(.unicode), !t.flags.contains(.unterminated), t.length == name.count &+ 2 else { return false }
            return matches(at: t.start &+ 1, name, folding: false)
        default:
            return false
        }
    }

    /// True when the buffer's bytes from `start` on are `text` (which the caller has checked fits):
    /// byte for byte, or with `folding` the buffer's ASCII letters lowered first (`text` is lower
    /// case). The one comparison loop behind isWord, isOp, isWordLike and names.
    @inlinable @inline(__always)
    func matches(at start: Int, _ text: UnsafeRawBufferPointer, folding: Bool) -> Bool {
        var k = 0
        while k < text.count {
            let c = bytes[start &+ k]
            if (folding ? SQLLexer.lower(c) : c) != text[k] { return false }
            k &+= 1
        }
        return true
    }

    @inlinable @inline(__always)
    static func raw(_ s: StaticString) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount)
    }

    /// The end of `name [. name ...]` from the name `t` just read; the lexer is left after the last
    /// name (a dot not followed by a name is not consumed).
    mutating func dottedNameEnd(from t: SQLToken) -> Int {
        var end = t.end
        while let d = peekSignificant(), d.kind == .dot {
            var look = self
            _ = look.nextSignificant()
            guard let n = look.nextSignificant(), n.isName else { break }
            self = look
            end = n.end
        }
        return end
    }

    /// Appends the name a token stands for: an unquoted word folded to lower case (ASCII letters
    /// only, as PostgreSQL does), a quoted identifier without its quotes and with `""` made `"`.
    /// `U&"..."` escapes are left as written. Other tokens are appended as they are.
    public func appendFoldedName(_ t: SQLToken, to out: inout [UInt8]) {
        switch t.kind {
        case .identifier:
            for k in t.start..<t.end { out.append(SQLLexer.lower(bytes[k])) }
        case .quotedIdentifier:
            var k = t.start &+ (t.flags.contains(.unicode) ? 3 : 1)
            let stop = t.flags.contains(.unterminated) ? t.end : t.end &- 1
            while k < stop {
                out.append(bytes[k])
                k &+= bytes[k] == UInt8(ascii: "\"") ? 2 : 1
            }
        default:
            for k in t.start..<t.end { out.append(bytes[k]) }
        }
    }

    /// The folded name of every name token in `range` of this lexer's buffer, joined by the dots
    /// between them (`MySchema."T".x` → `myschema.T.x`); whitespace and comments are skipped.
    /// Allocates: meant for rare statements (LISTEN, SET), not per message.
    public func foldedName(_ range: Range<Int>) -> String {
        var out: [UInt8] = []
        var lx = SQLLexer(bytes, range: range, standardConformingStrings: standardConformingStrings)
        while let t = lx.nextSignificant() { appendFoldedName(t, to: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of `range` as a string (for tests and logs).
    public func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }
}
