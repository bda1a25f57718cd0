// SQLLexer (Shared/SQL/SQLLexer.swift): PostgreSQL's token rules on real and broken input, and the
// invariant every caller relies on: tokens cover the input exactly, in order, within bounds.
import XCTest
import Shared

final class SQLLexerTests: XCTestCase {
    func testTokenShapes() {
        let cases: [(String, [String])] = [
            ("SELECT a, b FROM t;", ["identifier:SELECT", "identifier:a", "comma:,", "identifier:b", "identifier:FROM",
                                     "identifier:t", "semicolon:;"]),
            ("x::int", ["identifier:x", "op:::", "identifier:int"]),
            ("a:=1", ["identifier:a", "op::=", "number:1"]),
            ("f(a => 1)", ["identifier:f", "leftParen:(", "identifier:a", "op:=>", "number:1", "rightParen:)"]),
            ("a<=b", ["identifier:a", "op:<=", "identifier:b"]),
            ("j->>'k'", ["identifier:j", "op:->>", "string:'k'"]),
            ("j#>>'{a,b}'", ["identifier:j", "op:#>>", "string:'{a,b}'"]),
            ("a[1:2]", ["identifier:a", "leftBracket:[", "number:1", "colon::", "number:2", "rightBracket:]"]),
            // PostgreSQL drops a trailing + or - from an operator without ~!@#^&|`?%: =-1 is = then -1.
            ("a=-1", ["identifier:a", "op:=", "op:-", "number:1"]),
            ("a*-+1", ["identifier:a", "op:*", "op:-", "op:+", "number:1"]),
            ("a@-1", ["identifier:a", "op:@-", "number:1"]),
            ("a!=b", ["identifier:a", "op:!=", "identifier:b"]),
            ("a<>b", ["identifier:a", "op:<>", "identifier:b"]),
            // A comment start ends an operator.
            ("a+--c\nb", ["identifier:a", "op:+", "identifier:b"]),
            ("a*/*c*/b", ["identifier:a", "op:*", "identifier:b"]),
            ("t.col", ["identifier:t", "dot:.", "identifier:col"]),
            ("t.*", ["identifier:t", "dot:.", "op:*"]),
            ("\"My \"\"T\"\"\".x", ["quotedIdentifier:\"My \"\"T\"\"\"", "dot:.", "identifier:x"]),
            ("U&\"d\\0061t\"", ["quotedIdentifier:U&\"d\\0061t\""]),
            ("u & 1", ["identifier:u", "op:&", "number:1"]),
            ("foo$bar $1 $12", ["identifier:foo$bar", "parameter:$1", "parameter:$12"]),
            ("日本語 é_1", ["identifier:日本語", "identifier:é_1"]),
            ("_x1$", ["identifier:_x1$"]),
        ]
        for (sql, expected) in cases {
            XCTAssertEqual(sqlShape(sql), expected, sql)
        }
    }

    func testNumbers() {
        let cases: [(String, [String])] = [
            ("42", ["number:42"]),
            ("3.14", ["number:3.14"]),
            (".5", ["number:.5"]),
            ("5.", ["number:5."]),
            ("1e10 1E-3 2.5e+7 1.e5", ["number:1e10", "number:1E-3", "number:2.5e+7", "number:1.e5"]),
            ("1_000_000", ["number:1_000_000"]),
            ("1__0", ["number:1", "identifier:__0"]),
            ("1_", ["number:1", "identifier:_"]),
            ("0x1F 0XfF 0o17 0b101 0x_1F", ["number:0x1F", "number:0XfF", "number:0o17", "number:0b101", "number:0x_1F"]),
            ("0x", ["number:0", "identifier:x"]),
            ("0b2", ["number:0", "identifier:b2"]),
            ("1e", ["number:1", "identifier:e"]),
            ("1..10", ["number:1", "op:..", "number:10"]),
            ("123abc", ["number:123", "identifier:abc"]),
            ("a.5", ["identifier:a", "number:.5"]),
        ]
        for (sql, expected) in cases {
            XCTAssertEqual(sqlShape(sql), expected, sql)
        }
    }

    func testStrings() {
        let cases: [(String, [String], SQLTokenFlags)] = [
            ("'it''s'", ["string:'it''s'"], []),
            ("'a\\'", ["string:'a\\'"], []),  // standard_conforming_strings on: backslash is a character
            ("E'it\\'s'", ["string:E'it\\'s'"], .escape),
            ("e'\\\\'", ["string:e'\\\\'"], .escape),
            ("E'a''b'", ["string:E'a''b'"], .escape),
            ("U&'d\\0061t'", ["string:U&'d\\0061t'"], .unicode),
            ("B'0101'", ["string:B'0101'"], .bitString),
            ("x'1F'", ["string:x'1F'"], .hexString),
            ("N'nat'", ["string:N'nat'"], .national),
            ("'$$'", ["string:'$$'"], []),
            ("'/* not a comment */'", ["string:'/* not a comment */'"], []),
            ("'-- nor this'", ["string:'-- nor this'"], []),
        ]
        for (sql, expected, flags) in cases {
            XCTAssertEqual(sqlShape(sql), expected, sql)
            XCTAssertEqual(sqlTokens(sql).first?.flags, flags, sql)
        }
        // Bit strings end at the first quote, as in PostgreSQL.
        XCTAssertEqual(sqlShape("B'01''1'"), ["string:B'01'", "string:'1'"])
        // A prefix only counts glued to the quote and as a whole word.
        XCTAssertEqual(sqlShape("e 'x'"), ["identifier:e", "string:'x'"])
        XCTAssertEqual(sqlShape("ee'x'"), ["identifier:ee", "string:'x'"])
    }

    func testStandardConformingStringsOff() {
        XCTAssertEqual(sqlShape("'a\\'b' c", standardConformingStrings: false), ["string:'a\\'b'", "identifier:c"])
        XCTAssertEqual(sqlTokens("'a\\'b'", standardConformingStrings: false).first?.flags, .backslashEscapes)
        XCTAssertEqual(sqlShape("N'a\\'b'", standardConformingStrings: false), ["string:N'a\\'b'"])
        // On (the default), the backslash does not escape: the string ends at the second quote.
        // (z, not b or x: b' and x' would start a bit or hex string.)
        XCTAssertEqual(sqlShape("'a\\'z' c"), ["string:'a\\'", "identifier:z", "string:' c"])
        XCTAssertTrue(sqlTokens("'a\\'z' c").last!.flags.contains(.unterminated))
    }

    func testDollarQuotes() {
        let cases: [(String, [String])] = [
            ("$$a ' \" -- /* b$$", ["dollarString:$$a ' \" -- /* b$$"]),
            ("$fn$ select $$x$$; $fn$", ["dollarString:$fn$ select $$x$$; $fn$"]),
            ("$a$ $b$ $a$", ["dollarString:$a$ $b$ $a$"]),
            ("$a$x$b$a$", ["dollarString:$a$x$b$a$"]),
            ("$_t1$x$_t1$", ["dollarString:$_t1$x$_t1$"]),
            ("$é$x$é$", ["dollarString:$é$x$é$"]),
            // A tag cannot start with a digit: $1 is a parameter.
            ("$1$", ["parameter:$1", "other:$"]),
            // A `$` that opens nothing is one byte of its own; the rest lexes normally.
            ("$a b", ["other:$", "identifier:a", "identifier:b"]),
            ("$ x", ["other:$", "identifier:x"]),
            ("'$$' $$'$$", ["string:'$$'", "dollarString:$$'$$"]),
        ]
        for (sql, expected) in cases {
            XCTAssertEqual(sqlShape(sql), expected, sql)
        }
    }

    func testComments() {
        let tokens = sqlTokens("a -- x /* y\n/* 1 /* 2 */ 3 */b/**/c/*/ d */e")
        let kinds = tokens.map(\.kind)
        XCTAssertEqual(kinds, [.identifier, .whitespace, .lineComment, .whitespace, .blockComment, .identifier,
                               .blockComment, .identifier, .blockComment, .identifier])
        XCTAssertEqual(sqlShape("-- only a comment"), [])
        XCTAssertEqual(sqlShape("/* only */ /* comments */"), [])
        XCTAssertEqual(sqlShape(""), [])
        XCTAssertEqual(sqlTokens("  \r\n\t\u{0B}\u{0C}").map(\.kind), [.whitespace])
        XCTAssertEqual(sqlTokens("a--x\r\nb").map(\.kind), [.identifier, .lineComment, .whitespace, .identifier])
    }

    func testUnterminatedRunToTheEnd() {
        let cases: [(String, SQLTokenKind)] = [
            ("select 'abc", .string), ("select E'abc\\'", .string), ("select \"abc", .quotedIdentifier),
            ("select $$abc", .dollarString), ("select $t$abc $t", .dollarString), ("select /* a /* b */", .blockComment),
            ("select U&'x", .string), ("select B'01", .string), ("'", .string), ("/*", .blockComment), ("$$", .dollarString),
            ("\"", .quotedIdentifier), ("E'\\", .string),
        ]
        for (sql, kind) in cases {
            let tokens = sqlTokens(sql)
            let last = tokens.last!
            XCTAssertEqual(last.kind, kind, sql)
            XCTAssertTrue(last.flags.contains(.unterminated), sql)
            XCTAssertEqual(last.end, sql.utf8.count, sql)
        }
        XCTAssertFalse(sqlTokens("'a'").last!.flags.contains(.unterminated))
    }

    func testWordHelpers() {
        let text = Array("SeLeCt \"select\" nextval \"NextVal\" \"a\"\"b\" MySchema.\"T\"".utf8)
        text.withUnsafeBytes { b in
            var lx = SQLLexer(b)
            let select = lx.nextSignificant()!, quoted = lx.nextSignificant()!
            let nextval = lx.nextSignificant()!, quotedNextval = lx.nextSignificant()!
            let ab = lx.nextSignificant()!
            XCTAssertTrue(lx.isWord(select, "select"))
            XCTAssertFalse(lx.isWord(select, "selec"))
            XCTAssertFalse(lx.isWord(quoted, "select"), "a quoted identifier is never a keyword")
            let name = Array("nextval".utf8)
            name.withUnsafeBytes { n in
                XCTAssertTrue(lx.names(nextval, n))
                XCTAssertFalse(lx.names(quotedNextval, n), "quoted names keep their case")
            }
            var folded: [UInt8] = []
            lx.appendFoldedName(ab, to: &folded)
            XCTAssertEqual(String(decoding: folded, as: UTF8.self), "a\"b")
            let rest = lx.nextSignificant()!.start..<b.count
            XCTAssertEqual(lx.foldedName(rest), "myschema.T")
        }
    }

    func testSubrangeOnly() {
        let text = Array("xx select 1 yy".utf8)
        text.withUnsafeBytes { b in
            var lx = SQLLexer(b, range: 3..<11)
            var seen: [String] = []
            while let t = lx.nextSignificant() { seen.append(lx.text(t.range)) }
            XCTAssertEqual(seen, ["select", "1"])
        }
    }

    // MARK: Robustness

    /// Tokens cover `bytes` exactly: contiguous, non-empty, in bounds; and lexing ends.
    static func checkCoverage(_ bytes: [UInt8], scs: Bool, _ context: String) {
        bytes.withUnsafeBytes { b in
            var lx = SQLLexer(b, standardConformingStrings: scs)
            var at = 0
            var count = 0
            while let t = lx.next() {
                if t.start != at || t.end <= t.start || t.end > bytes.count {
                    XCTFail("token \(t) breaks coverage at \(at) of \(bytes.count): \(context)")
                    return
                }
                if t.flags.contains(.unterminated) && t.end != bytes.count {
                    XCTFail("unterminated token \(t) does not reach the end: \(context)")
                }
                at = t.end
                count += 1
                if count > bytes.count {
                    XCTFail("more tokens than bytes: \(context)")
                    return
                }
            }
            XCTAssertEqual(at, bytes.count, context)
        }
    }

    func testRandomBytesAreCoveredExactly() {
        var rng = SQLTestRandom("SQLLexerTests.testRandomBytesAreCoveredExactly")
        // Bytes biased toward the ones that mean something to the lexer.
        let interesting = Array("'\"$-/*().,;:[]\\eEuUbBxXnN&0123456789_ \n".utf8)
        for i in 0..<3000 {
            let n = Int(rng.next() % 64)
            let bytes: [UInt8] = (0..<n).map { _ in
                rng.next() % 3 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : interesting[Int(rng.next() % UInt64(interesting.count))]
            }
            Self.checkCoverage(bytes, scs: i % 2 == 0, "seed \(rng.seed), case \(i), bytes \(bytes)")
        }
    }

    func testRandomTokenSoupsAreCoveredExactly() {
        var rng = SQLTestRandom("SQLLexerTests.testRandomTokenSoupsAreCoveredExactly")
        for i in 0..<2000 {
            let n = Int(rng.next() % 30)
            let text = (0..<n).map { _ in sqlSoupFragments[Int(rng.next() % UInt64(sqlSoupFragments.count))] }.joined()
            Self.checkCoverage(Array(text.utf8), scs: i % 3 != 0, "seed \(rng.seed), case \(i), text \(text.debugDescription)")
        }
    }

    /// Every byte value alone and after every prefix that starts a quoted form.
    func testEveryByteAfterEveryOpener() {
        for prefix in ["", "'", "E'", "\"", "$", "$a", "$$", "/*", "-", "U&", "0x", "1.", "1e", ":"] {
            for byte in 0...255 {
                let bytes = Array(prefix.utf8) + [UInt8(byte)]
                Self.checkCoverage(bytes, scs: true, "\(prefix.debugDescription) + \(byte)")
            }
        }
    }
}
