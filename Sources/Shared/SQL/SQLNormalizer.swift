// A statement's pattern, as pg_stat_statements shows one (constants become $n), and the relations it
// reads and writes; written into buffers the caller keeps and reuses.

/// Whether a statement reads or writes a relation.
public struct SQLRelationAccess: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// FROM x, JOIN x, USING x (DELETE, MERGE), COPY x TO.
    public static let read = SQLRelationAccess(rawValue: 1)
    /// INSERT INTO x, UPDATE x, DELETE FROM x, MERGE INTO x, COPY x FROM.
    public static let write = SQLRelationAccess(rawValue: 2)
}

/// One relation of a statement: its name's bytes in `SQLNormalizer.relationNames`.
public struct SQLRelation: Equatable, Sendable {
    public var name: Range<Int>
    public var access: SQLRelationAccess
}

/// Counts from one normalization.
public struct SQLNormalizeSummary: Equatable, Sendable {
    /// Constants replaced by a `$n` (a collapsed list counts once).
    public var literals = 0
    /// The highest `$n` the text already had (0 if none): constants are numbered after it.
    public var highestParameter = 0
    /// IN (...) and ARRAY[...] lists collapsed.
    public var collapsedLists = 0
    /// Relations beyond `maxRelations`, not recorded.
    public var relationsDropped = 0

    public init() {}
}

/// Turns a statement into its pattern:
///
/// - Constants (numbers, every string form, dollar-quoted strings, TRUE/FALSE, NULL as a value) become
///   `$n`. `IS [NOT] NULL|TRUE|FALSE` and `NOT NULL` stay as written. A `-` that can only be a sign
///   (after an operator, `(`, `[`, `,`, the start, or a keyword such as SELECT, WHERE, THEN) goes
///   into the constant: `x = -1` and `x = 1` are one pattern.
/// - Parameters the text already has (`$1`) keep their number; constants are numbered after the
///   highest one, in order of appearance (pg_stat_statements' choice), so numbers never collide.
/// - `IN (c, ...)` and `ARRAY[c, ...]` whose elements are all constants or parameters (each maybe
///   signed and cast: `'a'::text`) become `IN ($n /*, ... */)` / `ARRAY[$n /*, ... */]` whatever
///   their length (PostgreSQL 18's squashed form). `$n` is the first element's own parameter when it
///   is one, so `IN ($1, $2)` and `IN ($1, $2, $3)` read the same; parameters after such a list keep
///   their numbers and so still differ.
/// - Comments go; tokens are separated by one space, or by none where SQL writes none (after `(`,
///   `[` and `.`, before `)`, `]`, `,`, `;` and `.`, around `::`, before the `(` of a call), decided by
///   the tokens alone, so any spacing of the input gives the same pattern.
/// - Unquoted words, keywords and names alike, are lower-cased (ASCII letters only): that is what
///   PostgreSQL folds them to, so `Users` and `users` are one pattern, and no keyword table is
///   needed. Quoted identifiers stay as written, quotes included. A trailing `;` is dropped.
///
/// Relations (issue 21's SHOW TABLES) come from FROM/JOIN lists (read) and INSERT INTO, UPDATE,
/// DELETE FROM, MERGE INTO (write), plus USING of DELETE/MERGE (read) and COPY's table; names are
/// folded as PostgreSQL folds them (`Public.Users` → `public.users`, `"Users"` stays quoted,
/// `"users"` → `users`), schema-qualified names keep their schema, WITH query names are not
/// relations, functions in FROM are skipped, and each relation is listed once with both accesses
/// merged. At most `maxRelations` per statement.
///
/// Keep one normalizer and reuse it: its buffers keep their capacity, so once warm a normalization
/// allocates nothing. Not for per-message use: normalize on a pattern-cache miss (`SQLHash.rawText`).
public struct SQLNormalizer {
    /// The last pattern, UTF-8 (the input's bytes are copied as they are; the lexer never splits a
    /// multi-byte character).
    public private(set) var pattern: [UInt8] = []
    /// The last statement's relations.
    public private(set) var relations: [SQLRelation] = []
    /// Their names' bytes.
    public private(set) var relationNames: [UInt8] = []
    public var maxRelations: Int
    /// WITH query names seen (ranges in `relationNames`' scratch tail are not used: kept apart).
    var cteNames: [UInt8] = []
    var cteEnds: [Int] = []

    public init(maxRelations: Int = 16) {
        self.maxRelations = maxRelations
        pattern.reserveCapacity(1024)
        relations.reserveCapacity(maxRelations)
        relationNames.reserveCapacity(256)
    }

    /// The pattern as a string (allocates).
    public var patternText: String { String(decoding: pattern, as: UTF8.self) }

    /// A relation's name as a string (allocates).
    public func name(of r: SQLRelation) -> String {
        String(decoding: relationNames[r.name], as: UTF8.self)
    }

    /// Normalizes `range` of `bytes` (one statement: see `SQLStatementSplitter`).
    @discardableResult
    public mutating func normalize(_ bytes: UnsafeRawBufferPointer, range: Range<Int>? = nil,
                                   standardConformingStrings: Bool = true) -> SQLNormalizeSummary {
        pattern.removeAll(keepingCapacity: true)
        relations.removeAll(keepingCapacity: true)
        relationNames.removeAll(keepingCapacity: true)
        cteNames.removeAll(keepingCapacity: true)
        cteEnds.removeAll(keepingCapacity: true)
        let lx = SQLLexer(bytes, range: range, standardConformingStrings: standardConformingStrings)
        var summary = SQLNormalizeSummary()
        scanRelations(lx, &summary)
        emit(lx, &summary)
        return summary
    }

    // MARK: The pattern

    /// What was written last, for spacing.
    enum Last {
        case none, word, quoted, literal, param, op, cast, openParen, closeParen, openBracket, closeBracket
        case comma, semicolon, dot, colon, other
    }

    /// Words whose next tokens are read differently.
    enum Tag { case other, isKeyword, notKeyword }

    struct Emitter {
        var last = Last.none
        var lastBits: UInt8 = 0
        var nextNumber = 1
    }

    mutating func emit(_ start: SQLLexer, _ summary: inout SQLNormalizeSummary) {
        var lx = start
        var e = Emitter()
        e.nextNumber = summary.highestParameter &+ 1
        var tag1 = Tag.other
        var tag2 = Tag.other
        loop: while let t = lx.nextSignificant() {
            var tag = Tag.other
            switch t.kind {
            case .semicolon:
                var look = lx
                var more = false
                while let n = look.nextSignificant() {
                    if n.kind != .semicolon {
                        more = true
                        break
                    }
                }
                if !more { break loop }
                put(&e, .semicolon, lx, t)
            case .number, .string, .dollarString:
                putLiteral(&e, &summary)
            case .parameter:
                put(&e, .param, lx, t)
            case .quotedIdentifier:
                put(&e, .quoted, lx, t)
            case .identifier:
                let isNull = lx.isWord(t, "null")
                if isNull || lx.isWord(t, "true") || lx.isWord(t, "false") {
                    let keep = tag1 == .isKeyword || (tag1 == .notKeyword && (isNull || tag2 == .isKeyword))
                    if !keep {
                        putLiteral(&e, &summary)
                        break
                    }
                }
                if lx.isWord(t, "is") { tag = .isKeyword } else if lx.isWord(t, "not") { tag = .notKeyword }
                let bits = SQLWords.bits(lx, t)
                putWord(&e, lx, t, bits)
                if let open = lx.peekSignificant(),
                   (open.kind == .leftParen && lx.isWord(t, "in")) || (open.kind == .leftBracket && lx.isWord(t, "array")) {
                    var look = lx
                    _ = look.nextSignificant()
                    let close: SQLTokenKind = open.kind == .leftParen ? .rightParen : .rightBracket
                    if let found = constantList(look, close: close) {
                        let first = found.1
                        lx = found.0
                        put(&e, open.kind == .leftParen ? .openParen : .openBracket, lx, open)
                        if first.kind == .parameter {
                            put(&e, .param, lx, first)
                        } else {
                            putLiteral(&e, &summary)
                        }
                        pattern.append(contentsOf: " /*, ... */".utf8)
                        pattern.append(open.kind == .leftParen ? UInt8(ascii: ")") : UInt8(ascii: "]"))
                        e.last = open.kind == .leftParen ? .closeParen : .closeBracket
                        summary.collapsedLists &+= 1
                    }
                }
            case .op:
                if lx.isOp(t, "-"), signContext(e), let n = lx.peekSignificant(), n.kind == .number {
                    _ = lx.nextSignificant()
                    putLiteral(&e, &summary)
                } else {
                    put(&e, lx.isOp(t, "::") ? .cast : .op, lx, t)
                }
            case .leftParen: put(&e, .openParen, lx, t)
            case .rightParen: put(&e, .closeParen, lx, t)
            case .leftBracket: put(&e, .openBracket, lx, t)
            case .rightBracket: put(&e, .closeBracket, lx, t)
            case .comma: put(&e, .comma, lx, t)
            case .dot: put(&e, .dot, lx, t)
            case .colon: put(&e, .colon, lx, t)
            case .other: put(&e, .other, lx, t)
            case .whitespace, .lineComment, .blockComment: break
            }
            tag2 = tag1
            tag1 = tag
        }
    }

    /// True when a `-` here can only be a sign.
    func signContext(_ e: Emitter) -> Bool {
        switch e.last {
        case .none, .op, .openParen, .openBracket, .comma, .semicolon, .colon: return true
        case .word: return e.lastBits & SQLWords.signAfter != 0
        default: return false
        }
    }

    /// Elements from just after an opening `(`/`[` to `close`, if all are constants or parameters:
    /// the lexer after the close and the first element.
    func constantList(_ start: SQLLexer, close: SQLTokenKind) -> (SQLLexer, SQLToken)? {
        var look = start
        var first: SQLToken?
        while true {
            guard var el = look.nextSignificant() else { return nil }
            if look.isOp(el, "-") {
                guard let n = look.nextSignificant(), n.kind == .number else { return nil }
                el = n
            }
            guard el.isLiteral || el.kind == .parameter
                    || look.isWord(el, "true") || look.isWord(el, "false") || look.isWord(el, "null") else { return nil }
            if first == nil { first = el }
            // Casts: ::text, ::character varying, ::pg_catalog.int4, ::int[]
            while let c = look.peekSignificant(), look.isOp(c, "::") {
                _ = look.nextSignificant()
                guard let ty = look.nextSignificant(), ty.isName else { return nil }
                while let n = look.peekSignificant(), n.isName || n.kind == .dot {
                    _ = look.nextSignificant()
                    if n.kind == .dot { guard let p = look.nextSignificant(), p.isName else { return nil } }
                }
                while let b = look.peekSignificant(), b.kind == .leftBracket {
                    _ = look.nextSignificant()
                    guard let cb = look.nextSignificant(), cb.kind == .rightBracket else { return nil }
                }
            }
            guard let sep = look.nextSignificant() else { return nil }
            if sep.kind == .comma { continue }
            if sep.kind == close, let first { return (look, first) }
            return nil
        }
    }

    mutating func space(_ e: Emitter, before cur: Last) {
        var spaced: Bool
        switch cur {
        case .closeParen, .closeBracket, .comma, .semicolon, .dot, .cast:
            spaced = false
        case .openParen:
            switch e.last {
            case .op, .comma, .semicolon, .colon, .literal, .param: spaced = true
            case .word: spaced = e.lastBits & SQLWords.spaceBeforeParen != 0
            default: spaced = false
            }
        case .openBracket:
            switch e.last {
            case .op, .comma, .semicolon, .colon: spaced = true
            default: spaced = false
            }
        default:
            switch e.last {
            case .none, .openParen, .openBracket, .dot, .cast: spaced = false
            default: spaced = true
            }
        }
        if spaced { pattern.append(UInt8(ascii: " ")) }
    }

    mutating func put(_ e: inout Emitter, _ cls: Last, _ lx: SQLLexer, _ t: SQLToken) {
        space(e, before: cls)
        pattern.append(contentsOf: UnsafeRawBufferPointer(rebasing: lx.bytes[t.range]))
        e.last = cls
        e.lastBits = 0
    }

    mutating func putWord(_ e: inout Emitter, _ lx: SQLLexer, _ t: SQLToken, _ bits: UInt8) {
        space(e, before: .word)
        for k in t.range { pattern.append(SQLLexer.lower(lx.bytes[k])) }
        e.last = .word
        e.lastBits = bits
    }

    mutating func putLiteral(_ e: inout Emitter, _ summary: inout SQLNormalizeSummary) {
        space(e, before: .literal)
        pattern.append(UInt8(ascii: "$"))
        appendDecimal(e.nextNumber)
        e.nextNumber &+= 1
        summary.literals &+= 1
        e.last = .literal
        e.lastBits = 0
    }

    mutating func appendDecimal(_ v: Int) {
        var divisor = 1
        while divisor <= v / 10 { divisor &*= 10 }
        repeat {
            pattern.append(UInt8(ascii: "0") &+ UInt8(v / divisor % 10))
            divisor /= 10
        } while divisor > 0
    }

    // MARK: Relations

    /// The first words of statements whose FROM lists name relations (not REVOKE ... FROM role,
    /// FETCH ... FROM cursor, SET ... FROM CURRENT).
    static func extractsRelations(_ lx: SQLLexer, _ first: SQLToken) -> Bool {
        if first.kind == .leftParen { return true }
        return lx.isWord(first, "select") || lx.isWord(first, "with") || lx.isWord(first, "insert")
            || lx.isWord(first, "update") || lx.isWord(first, "delete") || lx.isWord(first, "merge")
            || lx.isWord(first, "values") || lx.isWord(first, "table") || lx.isWord(first, "explain")
            || lx.isWord(first, "prepare") || lx.isWord(first, "declare") || lx.isWord(first, "create")
            || lx.isWord(first, "copy")
    }

    mutating func scanRelations(_ start: SQLLexer, _ summary: inout SQLNormalizeSummary) {
        var lx = start
        guard let first = lx.peekSignificant() else { return }
        let extract = Self.extractsRelations(lx, first)
        var depth = 0
        var functionParens: UInt64 = 0  // bit (depth & 63): the paren at that depth holds call arguments
        var prev: SQLToken?
        var deleteOrMerge = false
        let isCopy = lx.isWord(first, "copy")
        var copyName: Range<Int>?
        while let t = lx.nextSignificant() {
            defer { prev = t }
            switch t.kind {
            case .parameter:
                var v = 0
                for k in (t.start &+ 1)..<t.end where SQLLexer.isDigit(lx.bytes[k]) {
                    v = min(v &* 10 &+ Int(lx.bytes[k] &- UInt8(ascii: "0")), 1 << 30)
                }
                summary.highestParameter = max(summary.highestParameter, v)
            case .leftParen:
                depth &+= 1
                var call = false
                if let p = prev, p.kind == .quotedIdentifier || (p.kind == .identifier && SQLWords.bits(lx, p) & SQLWords.spaceBeforeParen == 0) {
                    // f(...) holds arguments, unless it holds a subquery: ARRAY(SELECT ...), or t(...) after INTO.
                    if let n = lx.peekSignificant(), lx.isWord(n, "select") || lx.isWord(n, "with") || lx.isWord(n, "values") {
                        call = false
                    } else {
                        call = true
                    }
                }
                let bit = UInt64(1) << UInt64(depth & 63)
                if call { functionParens |= bit } else { functionParens &= ~bit }
            case .rightParen:
                if depth > 0 { depth &-= 1 }
            case .identifier where extract:
                let inCall = depth > 0 && functionParens & (UInt64(1) << UInt64(depth & 63)) != 0
                if lx.isWord(t, "from") {
                    if inCall { break }
                    if let p = prev, lx.isWord(p, "distinct") { break }  // IS [NOT] DISTINCT FROM
                    if isCopy && depth == 0 {
                        if let c = copyName { addRelation(lx, c, .write, &summary) }
                        break
                    }
                    if let p = prev, lx.isWord(p, "delete") {
                        fromItems(lx, .write, list: false, calls: false, &summary)
                    } else {
                        fromItems(lx, .read, list: true, calls: true, &summary)
                    }
                } else if lx.isWord(t, "join") {
                    fromItems(lx, .read, list: false, calls: true, &summary)
                } else if lx.isWord(t, "into") {
                    if let p = prev, lx.isWord(p, "insert") || lx.isWord(p, "merge") {
                        fromItems(lx, .write, list: false, calls: false, &summary)
                    }
                } else if lx.isWord(t, "update") {
                    if Self.startsStatement(lx, prev) { fromItems(lx, .write, list: false, calls: false, &summary) }
                } else if lx.isWord(t, "delete") || lx.isWord(t, "merge") {
                    deleteOrMerge = true
                } else if lx.isWord(t, "using") {
                    if deleteOrMerge && depth == 0 { fromItems(lx, .read, list: true, calls: true, &summary) }
                } else if lx.isWord(t, "to") {
                    if isCopy && depth == 0, let c = copyName { addRelation(lx, c, .read, &summary) }
                } else if lx.isWord(t, "copy") && prev == nil {
                    var look = lx
                    if let n = look.nextSignificant(), n.isName {
                        let end = look.dottedNameEnd(from: n)
                        copyName = n.start..<end
                    }
                } else if let p = prev, p.kind == .comma || lx.isWord(p, "with") || lx.isWord(p, "recursive") {
                    cteName(lx, t)
                }
            case .quotedIdentifier where extract:
                if let p = prev, p.kind == .comma || lx.isWord(p, "with") || lx.isWord(p, "recursive") { cteName(lx, t) }
            default:
                break
            }
        }
    }

    /// UPDATE as a statement's verb: first, after `(` (a WITH query), after `)` (the main statement
    /// after a WITH list or EXPLAIN's options), or after AS / EXPLAIN [ANALYZE] [VERBOSE]. Not
    /// FOR UPDATE, DO UPDATE, THEN UPDATE, ON UPDATE.
    static func startsStatement(_ lx: SQLLexer, _ prev: SQLToken?) -> Bool {
        guard let p = prev else { return true }
        if p.kind == .leftParen || p.kind == .rightParen { return true }
        return lx.isWord(p, "as") || lx.isWord(p, "explain") || lx.isWord(p, "analyze")
            || lx.isWord(p, "analyse") || lx.isWord(p, "verbose")
    }

    /// Records `t` as a WITH query name when `t [(cols)] AS [NOT] [MATERIALIZED] (` follows.
    mutating func cteName(_ lx: SQLLexer, _ t: SQLToken) {
        var look = lx
        guard var n = look.nextSignificant() else { return }
        if n.kind == .leftParen {
            guard skipBalanced(&look, budget: 256), let a = look.nextSignificant() else { return }
            n = a
        }
        guard lx.isWord(n, "as"), var m = look.nextSignificant() else { return }
        if lx.isWord(m, "not"), let x = look.nextSignificant() { m = x }
        if lx.isWord(m, "materialized"), let x = look.nextSignificant() { m = x }
        guard m.kind == .leftParen else { return }
        Self.appendCanonicalName(lx, t.range, to: &cteNames)
        cteEnds.append(cteNames.count)
    }

    /// FROM a [AS x] [(cols)], b, ONLY c, LATERAL f(...), (subquery) s ... (`list`), or one name
    /// (INSERT INTO t, UPDATE [ONLY] t, JOIN t).
    /// With `calls`, `name(` is a function in FROM; without (INSERT INTO t (a, b)), a column list.
    mutating func fromItems(_ lx: SQLLexer, _ access: SQLRelationAccess, list: Bool, calls: Bool,
                            _ summary: inout SQLNormalizeSummary) {
        var look = lx
        while true {
            guard var t = look.nextSignificant() else { return }
            while lx.isWord(t, "only") || lx.isWord(t, "lateral") {
                guard let n = look.nextSignificant() else { return }
                t = n
            }
            if t.kind == .leftParen {
                guard skipBalanced(&look, budget: 4096) else { return }
            } else {
                guard t.isName, !SQLWords.isReserved(lx, t) else { return }
                let end = look.dottedNameEnd(from: t)
                if calls, let p = look.peekSignificant(), p.kind == .leftParen {
                    _ = look.nextSignificant()
                    guard skipBalanced(&look, budget: 4096) else { return }
                } else {
                    addRelation(lx, t.start..<end, access, &summary)
                }
            }
            guard list else { return }
            if let s = look.peekSignificant(), lx.isOp(s, "*") { _ = look.nextSignificant() }
            if let a = look.peekSignificant() {
                if lx.isWord(a, "as") {
                    _ = look.nextSignificant()
                    _ = look.nextSignificant()
                } else if a.isName && !SQLWords.isReserved(lx, a) {
                    _ = look.nextSignificant()
                }
            }
            if let p = look.peekSignificant(), p.kind == .leftParen {
                _ = look.nextSignificant()
                guard skipBalanced(&look, budget: 4096) else { return }
            }
            guard let c = look.peekSignificant(), c.kind == .comma else { return }
            _ = look.nextSignificant()
        }
    }

    /// Skips to just after the `)` closing an already consumed `(`; false if the input ends first or
    /// more than `budget` tokens are in between (bounded look-ahead keeps nested input linear).
    func skipBalanced(_ look: inout SQLLexer, budget: Int) -> Bool {
        var depth = 1
        var left = budget
        while let t = look.nextSignificant() {
            if t.kind == .leftParen { depth &+= 1 } else if t.kind == .rightParen {
                depth &-= 1
                if depth == 0 { return true }
            }
            left &-= 1
            if left == 0 { return false }
        }
        return false
    }

    mutating func addRelation(_ lx: SQLLexer, _ range: Range<Int>, _ access: SQLRelationAccess, _ summary: inout SQLNormalizeSummary) {
        let start = relationNames.count
        Self.appendCanonicalName(lx, range, to: &relationNames)
        let new = start..<relationNames.count
        // A WITH query's name is not a relation.
        if !relationNames[new].contains(UInt8(ascii: ".")) {
            var s = 0
            for e in cteEnds {
                if cteNames[s..<e].elementsEqual(relationNames[new]) {
                    relationNames.removeSubrange(new)
                    return
                }
                s = e
            }
        }
        for i in relations.indices where relationNames[relations[i].name].elementsEqual(relationNames[new]) {
            relations[i].access.formUnion(access)
            relationNames.removeSubrange(new)
            return
        }
        guard relations.count < maxRelations else {
            relationNames.removeSubrange(new)
            summary.relationsDropped &+= 1
            return
        }
        relations.append(SQLRelation(name: new, access: access))
    }

    /// `Public."Users".x` → `public."Users".x`: unquoted parts folded, quoted parts kept with their
    /// quotes unless they need none (`"users"` → `users`).
    static func appendCanonicalName(_ lx: SQLLexer, _ range: Range<Int>, to out: inout [UInt8]) {
        var parts = SQLLexer(lx.bytes, range: range, standardConformingStrings: lx.standardConformingStrings)
        while let t = parts.nextSignificant() {
            if t.kind == .quotedIdentifier && Self.needsNoQuotes(lx, t) {
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: lx.bytes[(t.start &+ 1)..<(t.end &- 1)]))
            } else if t.kind == .identifier {
                for k in t.range { out.append(SQLLexer.lower(lx.bytes[k])) }
            } else {
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: lx.bytes[t.range]))
            }
        }
    }

    /// `"users"`: a quoted name that reads the same unquoted (lower-case letters, digits, `_`, not
    /// starting with a digit).
    static func needsNoQuotes(_ lx: SQLLexer, _ t: SQLToken) -> Bool {
        guard t.flags.isEmpty, t.length > 2 else { return false }
        for k in (t.start &+ 1)..<(t.end &- 1) {
            let c = lx.bytes[k]
            let ok = (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || c == UInt8(ascii: "_")
                || (k > t.start &+ 1 && SQLLexer.isDigit(c))
            if !ok { return false }
        }
        return true
    }
}

/// The few facts about keywords the normalizer needs (PostgreSQL's keyword list, kwlist.h, has the
/// full story): which words take a space before `(`, after which a `-` is a sign, and which are
/// reserved (never a bare alias or table name).
enum SQLWords {
    static let spaceBeforeParen: UInt8 = 1
    static let signAfter: UInt8 = 2
    static let reserved: UInt8 = 4

    /// A word of up to 16 bytes, lower-cased, packed into two integers.
    struct Packed: Hashable {
        var a: UInt64
        var b: UInt64
    }

    static func pack<C: Collection>(_ bytes: C) -> Packed? where C.Element == UInt8 {
        guard bytes.count <= 16 else { return nil }
        var p = Packed(a: 0, b: 0)
        for (i, c) in bytes.enumerated() {
            let l = UInt64(SQLLexer.lower(c))
            if i < 8 { p.a |= l << UInt64(i * 8) } else { p.b |= l << UInt64((i - 8) * 8) }
        }
        return p
    }

    static let table: [Packed: UInt8] = {
        var t: [Packed: UInt8] = [:]
        func add(_ words: String, _ bit: UInt8) {
            for w in words.split(separator: " ") { t[pack(Array(w.utf8))!, default: 0] |= bit }
        }
        add("""
            all and any as between by case check conflict copy default distinct do else escape except exclude \
            exists explain filter from group having ilike in include intersect is join key lateral like limit \
            materialized not offset on or over recursive returning select set sets similar some table then to \
            union unique using values when where window with within
            """, spaceBeforeParen)
        add("""
            all and any between by case default distinct else escape for from having ilike in like limit not \
            offset on or return returning select set some then to values when where
            """, signAfter)
        add("""
            all analyse analyze and any array as asc asymmetric both case cast check collate column constraint \
            create current_catalog current_date current_role current_schema current_time current_user default \
            deferrable desc distinct do else end except false fetch for foreign from grant group having in \
            initially intersect into lateral leading limit localtime localtimestamp not null offset on only or \
            order placing primary references returning select session_user some symmetric system_user table \
            then to trailing true union unique user using variadic when where window with \
            authorization binary collation concurrently cross freeze full ilike inner is isnull join left like \
            natural notnull outer overlaps right similar tablesample verbose \
            set values overriding
            """, reserved)
        return t
    }()

    static func bits(_ lx: SQLLexer, _ t: SQLToken) -> UInt8 {
        guard t.kind == .identifier, t.length <= 16,
              let p = pack(UnsafeRawBufferPointer(rebasing: lx.bytes[t.range])) else { return 0 }
        return table[p] ?? 0
    }

    static func isReserved(_ lx: SQLLexer, _ t: SQLToken) -> Bool {
        t.kind == .identifier && bits(lx, t) & reserved != 0
    }
}
