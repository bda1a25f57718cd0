// Helpers for the Shared/SQL tests: run the byte-level APIs on Swift strings, and a seeded generator.
import XCTest
import Shared

/// Tokens of `text` as (kind, text) pairs, and the raw tokens.
func sqlTokens(_ text: String, standardConformingStrings: Bool = true) -> [SQLToken] {
    let bytes = Array(text.utf8)
    return bytes.withUnsafeBytes { b in
        var lx = SQLLexer(b, standardConformingStrings: standardConformingStrings)
        var out: [SQLToken] = []
        while let t = lx.next() { out.append(t) }
        return out
    }
}

/// The significant tokens as "kind:text" strings, for compact table-driven expectations.
func sqlShape(_ text: String, standardConformingStrings: Bool = true) -> [String] {
    let bytes = Array(text.utf8)
    return sqlTokens(text, standardConformingStrings: standardConformingStrings).filter { !$0.isTrivia }.map {
        "\($0.kind):" + String(decoding: bytes[$0.range], as: UTF8.self)
    }
}

func sqlClassify(_ text: String, _ classifier: SQLClassifier = SQLClassifier()) -> (SQLStatementInfo, (Range<Int>?) -> String?) {
    let bytes = Array(text.utf8)
    let info = bytes.withUnsafeBytes { classifier.classify($0) }
    return (info, { r in r.map { String(decoding: bytes[$0], as: UTF8.self) } })
}

func sqlNormalize(_ text: String, _ n: inout SQLNormalizer) -> String {
    let bytes = Array(text.utf8)
    bytes.withUnsafeBytes { _ = n.normalize($0) }
    return n.patternText
}

func sqlNormalize(_ text: String) -> String {
    var n = SQLNormalizer()
    return sqlNormalize(text, &n)
}

func sqlStatements(_ text: String) -> [String] {
    let bytes = Array(text.utf8)
    return bytes.withUnsafeBytes { b in
        var s = SQLStatementSplitter(b)
        var out: [String] = []
        while let st = s.next() { out.append(String(decoding: bytes[st.range], as: UTF8.self)) }
        return out
    }
}

/// SplitMix64 seeded from PGSWIFT_TEST_SEED or the clock; prints the seed so a failure can be replayed.
struct SQLTestRandom: RandomNumberGenerator {
    private var state: UInt64
    let seed: UInt64

    init(_ name: String) {
        let given = Posix.getenv("PGSWIFT_TEST_SEED").flatMap { UInt64($0) }
        seed = given ?? UInt64(truncatingIfNeeded: Clock.monotonicNanos()) ^ 0x9E37_79B9_7F4A_7C15
        state = seed
        print("\(name): seed \(seed) (replay with PGSWIFT_TEST_SEED=\(seed))")
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Fragments that random "token soups" are made of: every token form, broken ones included.
let sqlSoupFragments: [String] = [
    "select", "SELECT", " ", "\n", "\t", "--c\n", "--", "/*", "*/", "/* a /* b */ c */", "'", "''", "'x'", "E'\\''",
    "e'\\\\'", "U&'\\0041'", "U&\"a\"", "B'01'", "X'1F'", "N'n'", "\"", "\"\"", "\"q\"\"q\"", "$$", "$a$", "$a$x$a$",
    "$1", "$", "$_", "1", "1.5", ".5", "1e10", "1e", "0x1F", "0x", "0o7", "0b1", "1_000", "1..2", "::", ":=", ":", "=>",
    "<=", "->>", "-", "+", "*", "/", "=", "(", ")", "[", "]", ",", ";", ".", "\\", "{", "}", "é", "日本", "\u{0}",
    "in", "IN", "(1, 2)", "null", "true", "is", "not", "from", "t", "join", "insert", "into", "update", "delete",
    "with", "as", "begin", "atomic", "end", "create", "function", "case", "for", "array", "pg_advisory_lock",
    "nextval", "set", "to", "default", "listen", "unlisten", "*",
]
