// Splits a simple-Query text into its statements at top-level semicolons, by the lexer's tokens.

/// One statement of a multi-statement text.
public struct SQLStatementRange: Equatable, Sendable {
    /// From the statement's first non-whitespace token (a leading comment, such as a routing hint,
    /// is part of the statement) to the end of its last non-whitespace token, without the `;`.
    public var range: Range<Int>
    /// False for a last statement that no `;` ends.
    public var terminated: Bool

    public init(range: Range<Int>, terminated: Bool) {
        self.range = range
        self.terminated = terminated
    }
}

/// Yields the statements of a text the way PostgreSQL runs a simple Query: a `;` ends a statement
/// unless it is in a quote, a dollar quote, a comment or parentheses, or in the `BEGIN ATOMIC ... END`
/// body of a `CREATE [OR REPLACE] FUNCTION|PROCEDURE` (tracked as psql does: `BEGIN` and, inside it,
/// `CASE` open a level that `END` closes). Empty statements (`;;`, only comments) yield nothing,
/// as PostgreSQL sends nothing back for them. No allocation.
public struct SQLStatementSplitter {
    var lexer: SQLLexer

    public init(_ bytes: UnsafeRawBufferPointer, range: Range<Int>? = nil, standardConformingStrings: Bool = true) {
        lexer = SQLLexer(bytes, range: range, standardConformingStrings: standardConformingStrings)
    }

    /// Where a routine definition stands in its first words: `CREATE [OR REPLACE] FUNCTION|PROCEDURE`.
    enum Routine {
        case undecided(words: Int, sawOr: Bool)
        case yes
        case no
    }

    /// The next statement, nil when none is left.
    public mutating func next() -> SQLStatementRange? {
        var first = -1
        var last = -1
        var significant = false
        var parenDepth = 0
        var beginDepth = 0
        var routine = Routine.undecided(words: 0, sawOr: false)
        while let t = lexer.next() {
            switch t.kind {
            case .whitespace:
                continue
            case .semicolon where parenDepth == 0 && beginDepth == 0:
                if significant { return SQLStatementRange(range: first..<last, terminated: true) }
                first = -1
                last = -1
                routine = .undecided(words: 0, sawOr: false)
                continue
            default:
                break
            }
            if first < 0 { first = t.start }
            last = t.end
            if t.kind == .lineComment || t.kind == .blockComment { continue }
            significant = true
            switch t.kind {
            case .leftParen:
                parenDepth &+= 1
            case .rightParen:
                if parenDepth > 0 { parenDepth &-= 1 }
            case .identifier:
                if case .undecided(let words, let sawOr) = routine {
                    routine = Self.advance(lexer, t, words: words, sawOr: sawOr)
                }
                if case .yes = routine, parenDepth == 0 {
                    if lexer.isWord(t, "begin") {
                        beginDepth &+= 1
                    } else if lexer.isWord(t, "case") {
                        if beginDepth > 0 { beginDepth &+= 1 }
                    } else if lexer.isWord(t, "end") {
                        if beginDepth > 0 { beginDepth &-= 1 }
                    }
                }
            default:
                if case .undecided = routine { routine = .no }
            }
        }
        if significant { return SQLStatementRange(range: first..<last, terminated: false) }
        return nil
    }

    static func advance(_ lx: SQLLexer, _ t: SQLToken, words: Int, sawOr: Bool) -> Routine {
        switch words {
        case 0:
            return lx.isWord(t, "create") ? .undecided(words: 1, sawOr: false) : .no
        case 1:
            if lx.isWord(t, "or") { return .undecided(words: 2, sawOr: true) }
        case 2 where sawOr:
            return lx.isWord(t, "replace") ? .undecided(words: 3, sawOr: true) : .no
        default:
            break
        }
        return lx.isWord(t, "function") || lx.isWord(t, "procedure") ? .yes : .no
    }
}
