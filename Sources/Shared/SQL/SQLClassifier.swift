// What one SQL statement is, from its tokens: its kind, the session state it touches (transaction
// pooling) and whether a standby may run it (read/write routing). A lexer's heuristics, not a parser.

/// The statement's kind, from its first words.
public enum SQLStatementKind: UInt8, Sendable {
    /// Only whitespace and comments.
    case empty
    case select, values, table, show, explain
    case insert, update, delete, merge
    case copyFrom, copyTo
    case begin, startTransaction, commit, rollback, rollbackToSavepoint, savepoint, release
    case prepareTransaction, commitPrepared, rollbackPrepared
    /// `SET [SESSION] ...` (with `setting` saying what is set).
    case set
    /// `SET LOCAL ...`: lasts until the end of the transaction.
    case setLocal
    /// `SET TRANSACTION ...` and `SET LOCAL TRANSACTION ...`.
    case setTransaction
    case reset, discard
    case listen, unlisten, notify
    /// SQL-level `PREPARE name AS ...` (not `PREPARE TRANSACTION`).
    case prepare, execute, deallocate
    case declareCursor, close
    /// `FETCH` and `MOVE`.
    case fetch
    /// CREATE, ALTER, DROP, COMMENT, GRANT, REVOKE, SECURITY LABEL, REINDEX, CLUSTER, REFRESH,
    /// IMPORT FOREIGN SCHEMA, REASSIGN OWNED.
    case ddl
    case truncate, call, `do`, lock, vacuum, analyze
    /// Anything else (CHECKPOINT, LOAD, a syntax error...).
    case other
}

/// A routing hint in a comment before the statement's first word.
public enum SQLRoutingHint: UInt8, Sendable {
    case none
    /// `/* pgswift:primary */`
    case primary
    /// `/* pgswift:standby */`
    case standby
}

/// Which setting a SET, SET LOCAL or RESET names.
public enum SQLSetting: UInt8, Sendable {
    /// Not a setting statement.
    case none
    /// `name [. name ...]`, given by `SQLStatementInfo.name`.
    case named
    /// `RESET ALL`.
    case all
    case timeZone, names, schema, role, sessionAuthorization, xmlOption, catalog
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION ...` (the default_transaction_* settings).
    case sessionCharacteristics
    /// `SET TRANSACTION modes`.
    case transaction
    /// `SET TRANSACTION SNAPSHOT 'id'`.
    case transactionSnapshot
    /// `RESET TRANSACTION ISOLATION LEVEL`.
    case transactionIsolation

    /// The run-time parameter a special form sets, nil for `named` (read the name) and the rest.
    public var parameterName: StaticString? {
        switch self {
        case .timeZone: return "timezone"
        case .names: return "client_encoding"
        case .schema: return "search_path"
        case .role: return "role"
        case .sessionAuthorization: return "session_authorization"
        case .xmlOption: return "xmloption"
        case .transactionIsolation: return "transaction_isolation"
        default: return nil
        }
    }
}

/// What DISCARD discards.
public enum SQLDiscardTarget: UInt8, Sendable {
    case none, all, temporary, plans, sequences
}

/// Details of a statement, each one set only when the text says so.
public struct SQLStatementFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `ALL` or `*`: DEALLOCATE ALL, CLOSE ALL, UNLISTEN *, RESET ALL, DISCARD ALL.
    public static let all = SQLStatementFlags(rawValue: 1 << 0)
    /// SET ... TO DEFAULT / = DEFAULT, SET SESSION AUTHORIZATION DEFAULT, SET TIME ZONE DEFAULT|LOCAL,
    /// SET ROLE NONE, SET NAMES without a value: the setting goes back to its session default.
    public static let toDefault = SQLStatementFlags(rawValue: 1 << 1)
    /// `SET name FROM CURRENT`.
    public static let fromCurrent = SQLStatementFlags(rawValue: 1 << 2)
    /// BEGIN / START TRANSACTION / SET TRANSACTION / SET SESSION CHARACTERISTICS with READ ONLY.
    public static let readOnlyTransaction = SQLStatementFlags(rawValue: 1 << 3)
    /// ... with READ WRITE.
    public static let readWriteTransaction = SQLStatementFlags(rawValue: 1 << 4)
    /// COMMIT / ROLLBACK AND CHAIN (a new transaction starts at once).
    public static let andChain = SQLStatementFlags(rawValue: 1 << 5)
    /// Creates a temporary object: CREATE [GLOBAL|LOCAL] TEMP|TEMPORARY ..., SELECT ... INTO TEMP,
    /// or a CREATE or SELECT INTO naming `pg_temp.` explicitly.
    public static let temporary = SQLStatementFlags(rawValue: 1 << 6)
    /// The temporary table goes at commit: `ON COMMIT DROP`.
    public static let onCommitDrop = SQLStatementFlags(rawValue: 1 << 7)
    /// DECLARE ... WITH HOLD.
    public static let withHold = SQLStatementFlags(rawValue: 1 << 8)
    /// Calls pg_advisory_lock, pg_advisory_lock_shared, pg_try_advisory_lock or
    /// pg_try_advisory_lock_shared (session-level; the `_xact_` ones are not flagged).
    public static let sessionAdvisoryLock = SQLStatementFlags(rawValue: 1 << 9)
    /// Calls pg_advisory_unlock or pg_advisory_unlock_shared.
    public static let advisoryUnlock = SQLStatementFlags(rawValue: 1 << 10)
    /// Calls pg_advisory_unlock_all.
    public static let advisoryUnlockAll = SQLStatementFlags(rawValue: 1 << 11)
    /// FOR UPDATE / FOR NO KEY UPDATE / FOR SHARE / FOR KEY SHARE somewhere.
    public static let lockingClause = SQLStatementFlags(rawValue: 1 << 12)
    /// INSERT / UPDATE / DELETE / MERGE right after a `(`: a data-modifying WITH (or a subquery
    /// PostgreSQL would reject).
    public static let dataModifyingSubstatement = SQLStatementFlags(rawValue: 1 << 13)
    /// `INTO` in a SELECT, VALUES or TABLE statement: SELECT ... INTO creates a table.
    public static let selectInto = SQLStatementFlags(rawValue: 1 << 14)
    /// Calls a function of the classifier's deny list.
    public static let deniedFunction = SQLStatementFlags(rawValue: 1 << 15)
    /// EXPLAIN ANALYZE: the explained statement runs.
    public static let explainAnalyze = SQLStatementFlags(rawValue: 1 << 16)
    /// A quote, dollar quote or comment runs to the end of the text: PostgreSQL will reject it.
    public static let incomplete = SQLStatementFlags(rawValue: 1 << 17)
    /// Calls set_config with a third argument (`is_local`) other than the literal `true`: a setting
    /// that outlives the transaction (false, a parameter, an expression, all err toward the session).
    public static let sessionSetConfig = SQLStatementFlags(rawValue: 1 << 18)
}

/// What the classifier found in one statement. Ranges index the classified buffer.
public struct SQLStatementInfo: Equatable, Sendable {
    public var kind: SQLStatementKind = .empty
    /// True only when a standby can run the statement: SELECT / WITH ... SELECT / VALUES / TABLE /
    /// SHOW / EXPLAIN (EXPLAIN ANALYZE only of such a statement), without a locking clause, a
    /// data-modifying WITH, INTO or a denied function call, and with no unterminated quote.
    public var readOnly = false
    public var hint: SQLRoutingHint = .none
    public var flags: SQLStatementFlags = []
    /// For set, setLocal, setTransaction and reset.
    public var setting: SQLSetting = .none
    public var discard: SQLDiscardTarget = .none
    /// The object named: LISTEN/UNLISTEN/NOTIFY channel, PREPARE/EXECUTE/DEALLOCATE statement,
    /// DECLARE/CLOSE/FETCH cursor, SAVEPOINT/RELEASE/ROLLBACK TO savepoint, the setting's words for
    /// SET/RESET (`search_path`, `myapp.flag`, `time zone`, `role`). Fold it with
    /// `SQLLexer.foldedName(_:)`. Nil with the `all` flag.
    public var name: Range<Int>?
    /// SET's value as written, from its first token to its last (`app, public`, `'150ms'`): replay
    /// it as `SET name TO <value>`. Also NOTIFY's payload, and the transaction id of PREPARE
    /// TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED (string tokens, quotes included).
    public var value: Range<Int>?
    /// The statement inside: PREPARE ... AS <body>, DECLARE ... FOR <body>, EXPLAIN [options] <body>.
    public var body: Range<Int>?
    /// With `sessionSetConfig`: the setting's name when every such call names the same one as a plain
    /// string literal (`'TimeZone'`, quotes included); nil otherwise (a parameter, an expression).
    public var setConfigName: Range<Int>?

    public init() {}
}

/// Function names a read-only statement must not call: `name` or a `prefix*` pattern, matched on
/// the last part of a schema-qualified name, case-insensitively for unquoted names.
public struct SQLFunctionDenyList: Sendable, Equatable {
    public struct Pattern: Sendable, Equatable {
        /// Lower-case ASCII.
        public var name: [UInt8]
        public var isPrefix: Bool
    }

    public private(set) var patterns: [Pattern]

    /// Issue 20's default: functions that write, take session locks or need the primary.
    public static let defaultPatterns = [
        "nextval", "setval", "pg_advisory_lock*", "pg_try_advisory_lock*", "lo_*", "txid_current",
        "pg_current_wal*", "set_config", "dblink*",
    ]

    public static let `default` = SQLFunctionDenyList(defaultPatterns)

    /// Patterns as given (`nextval`, `lo_*`); blanks are ignored, ASCII letters are folded to lower
    /// case, a lone `*` denies every function.
    public init(_ patterns: [String]) {
        self.patterns = []
        for p in patterns {
            var bytes = Array(p.utf8).filter { !SQLLexer.isWhitespace($0) }
            guard !bytes.isEmpty else { continue }
            let prefix = bytes.last == UInt8(ascii: "*")
            if prefix { bytes.removeLast() }
            self.patterns.append(Pattern(name: bytes.map { $0 &- 65 < 26 ? $0 | 0x20 : $0 }, isPrefix: prefix))
        }
    }

    /// A comma-separated list, as a configuration value would give it.
    public init(commaSeparated list: String) {
        self.init(list.split(separator: ",").map(String.init))
    }

    /// True when the function name token `t` matches a pattern.
    public func matches(_ t: SQLToken, in lx: SQLLexer) -> Bool {
        let quoted = t.kind == .quotedIdentifier
        guard t.kind == .identifier || (quoted && !t.flags.contains(.unicode) && !t.flags.contains(.unterminated)) else {
            return false
        }
        let start = quoted ? t.start &+ 1 : t.start
        let count = quoted ? t.length &- 2 : t.length
        for p in patterns where p.isPrefix ? count >= p.name.count : count == p.name.count {
            var k = 0
            while k < p.name.count {
                let c = lx.bytes[start &+ k]
                if (quoted ? c : SQLLexer.lower(c)) != p.name[k] { break }
                k &+= 1
            }
            if k == p.name.count { return true }
        }
        return false
    }
}

/// Classifies one statement (a range from `SQLStatementSplitter`, or a Parse message's text; a
/// trailing `;` is allowed). No allocation; a few passes over the tokens.
///
/// It reads words, not a grammar: it can be fooled by unusual names (a column called `update` right
/// after a parenthesis), and every such mistake goes the safe way: not read-only, or flagged as
/// touching session state.
public struct SQLClassifier: Sendable {
    public var denyList: SQLFunctionDenyList
    public var standardConformingStrings: Bool

    public init(denyList: SQLFunctionDenyList = .default, standardConformingStrings: Bool = true) {
        self.denyList = denyList
        self.standardConformingStrings = standardConformingStrings
    }

    public func classify(_ bytes: UnsafeRawBufferPointer, range: Range<Int>? = nil) -> SQLStatementInfo {
        var info = SQLStatementInfo()
        var lx = SQLLexer(bytes, range: range, standardConformingStrings: standardConformingStrings)
        var first: SQLToken?
        while let t = lx.next() {
            if t.kind == .blockComment {
                if info.hint == .none { info.hint = Self.hint(in: t, lx) }
                continue
            }
            if t.isTrivia { continue }
            first = t
            break
        }
        guard let first else { return info }
        let facts = scanFacts(lx, first: first)
        info.flags = facts.flags
        info.setConfigName = facts.setConfigName
        dispatch(first, &lx, facts, &info)
        if info.flags.contains(.incomplete) { info.readOnly = false }
        switch info.kind {
        case .select, .values, .table, .ddl: break
        default: info.flags.remove(.temporary)  // `INSERT INTO temp ...` names a table
        }
        return info
    }

    // MARK: Routing hints

    /// `/* pgswift:primary */` or `/* pgswift:standby */`, with any spacing and letter case.
    static func hint(in t: SQLToken, _ lx: SQLLexer) -> SQLRoutingHint {
        guard !t.flags.contains(.unterminated) else { return .none }
        var s = t.start &+ 2
        var e = t.end &- 2
        while s < e && SQLLexer.isWhitespace(lx.bytes[s]) { s &+= 1 }
        while e > s && SQLLexer.isWhitespace(lx.bytes[e &- 1]) { e &-= 1 }
        let word = SQLToken(kind: .identifier, start: s, end: e)
        if lx.isWordLike(word, "pgswift:primary") { return .primary }
        if lx.isWordLike(word, "pgswift:standby") { return .standby }
        return .none
    }

    // MARK: Facts from the whole statement

    struct Facts {
        var flags: SQLStatementFlags = []
        var into = false
        /// The name of the session set_config calls (see `SQLStatementInfo.setConfigName`); nil once
        /// one of them names none or another.
        var setConfigName: Range<Int>?
    }

    /// One pass over every token: function calls (deny list, advisory locks), locking clauses,
    /// data-modifying substatements, INTO, pg_temp, unterminated tokens.
    func scanFacts(_ start: SQLLexer, first: SQLToken) -> Facts {
        var facts = Facts()
        var lx = start
        var prev: SQLToken?
        var t = first
        while true {
            if t.flags.contains(.unterminated) { facts.flags.insert(.incomplete) }
            switch t.kind {
            case .leftParen:
                if let p = prev, p.isName { callFacts(p, lx, &facts) }
            case .identifier:
                if let p = prev, p.kind == .leftParen,
                   lx.isWord(t, "insert") || lx.isWord(t, "update") || lx.isWord(t, "delete") || lx.isWord(t, "merge") {
                    facts.flags.insert(.dataModifyingSubstatement)
                } else if lx.isWord(t, "for") {
                    var look = lx
                    if let a = look.nextSignificant() {
                        if lx.isWord(a, "update") || lx.isWord(a, "share") {
                            facts.flags.insert(.lockingClause)
                        } else if lx.isWord(a, "no") || lx.isWord(a, "key"), let b = look.nextSignificant(),
                                  lx.isWord(b, "key") || lx.isWord(b, "share") || lx.isWord(b, "update") {
                            facts.flags.insert(.lockingClause)
                        }
                    }
                } else if lx.isWord(t, "into") {
                    facts.into = true
                    var look = lx
                    if var a = look.nextSignificant() {
                        if lx.isWord(a, "local") || lx.isWord(a, "global"), let b = look.nextSignificant() { a = b }
                        if lx.isWord(a, "temp") || lx.isWord(a, "temporary") { facts.flags.insert(.temporary) }
                    }
                } else if lx.isWord(t, "pg_temp"), let n = lx.peekSignificant(), n.kind == .dot {
                    facts.flags.insert(.temporary)
                }
            default:
                break
            }
            prev = t
            // Trivia is skipped, but an unterminated comment still makes the statement incomplete.
            var n: SQLToken?
            while let x = lx.next() {
                if !x.isTrivia {
                    n = x
                    break
                }
                if x.flags.contains(.unterminated) { facts.flags.insert(.incomplete) }
            }
            guard let n else { break }
            t = n
        }
        // pg_temp and INTO TEMP matter only to statements that create: CREATE and SELECT INTO.
        if !facts.into && !start.isWord(first, "create") { facts.flags.remove(.temporary) }
        return facts
    }

    func callFacts(_ name: SQLToken, _ lx: SQLLexer, _ facts: inout Facts) {
        if denyList.matches(name, in: lx) { facts.flags.insert(.deniedFunction) }
        if name.length >= 10 && name.length <= 12 && lx.isWordOrQuoted(name, "set_config") {
            let call = setConfigCall(lx)
            if !call.local {
                let first = !facts.flags.contains(.sessionSetConfig)
                facts.flags.insert(.sessionSetConfig)
                let same = call.name.map { n in facts.setConfigName.map { lx.text($0) == lx.text(n) } ?? first } ?? false
                facts.setConfigName = same ? call.name : nil
            }
        }
        guard name.length >= 16 else { return }
        if lx.isWordOrQuoted(name, "pg_advisory_lock") || lx.isWordOrQuoted(name, "pg_advisory_lock_shared")
            || lx.isWordOrQuoted(name, "pg_try_advisory_lock") || lx.isWordOrQuoted(name, "pg_try_advisory_lock_shared") {
            facts.flags.insert(.sessionAdvisoryLock)
        } else if lx.isWordOrQuoted(name, "pg_advisory_unlock") || lx.isWordOrQuoted(name, "pg_advisory_unlock_shared") {
            facts.flags.insert(.advisoryUnlock)
        } else if lx.isWordOrQuoted(name, "pg_advisory_unlock_all") {
            facts.flags.insert(.advisoryUnlockAll)
        }
    }

    /// A set_config call's arguments, `start` just past its `(`: `local` when the third (`is_local`)
    /// is the one word `true`, so the setting ends with the transaction; `name` the first when it is
    /// one plain string literal.
    func setConfigCall(_ start: SQLLexer) -> (local: Bool, name: Range<Int>?) {
        var lx = start
        var depth = 0, commas = 0
        var tokens = (0, 0, 0)
        var first: SQLToken? = nil, third: SQLToken? = nil
        while let t = lx.nextSignificant() {
            switch t.kind {
            case .leftParen, .leftBracket:
                depth += 1
            case .rightParen, .rightBracket:
                if depth == 0 {
                    let local = commas == 2 && tokens.2 == 1 && third.map { lx.isWord($0, "true") } == true
                    let name = tokens.0 == 1 ? first.flatMap { $0.kind == .string && $0.flags.isEmpty ? $0.range : nil } : nil
                    return (local, name)
                }
                depth -= 1
            case .comma where depth == 0:
                commas += 1
                if commas > 2 { return (false, nil) }
                continue
            default:
                break
            }
            switch commas {
            case 0: tokens.0 += 1; first = t
            case 1: tokens.1 += 1
            default: tokens.2 += 1; third = t
            }
        }
        return (false, nil)
    }

    // MARK: Dispatch on the first word

    func dispatch(_ first: SQLToken, _ lx: inout SQLLexer, _ facts: Facts, _ info: inout SQLStatementInfo) {
        if first.kind == .leftParen {
            // `(SELECT ...) UNION (SELECT ...)`, `((VALUES (1)))`.
            var t = first
            while t.kind == .leftParen {
                guard let n = lx.nextSignificant() else { info.kind = .other; return }
                t = n
            }
            if lx.isWord(t, "select") || lx.isWord(t, "values") || lx.isWord(t, "table") || lx.isWord(t, "with") {
                dispatch(t, &lx, facts, &info)
            } else {
                info.kind = .other
            }
            return
        }
        guard first.kind == .identifier else { info.kind = .other; return }
        if let k = Self.kind(of: first, lx, in: Self.mainWords) {
            mainStatement(k, facts, &info)
        } else if lx.isWord(first, "with") {
            withStatement(&lx, facts, &info)
        } else if let k = Self.kind(of: first, lx, in: Self.otherWords) {
            info.kind = k
            readRest(first, &lx, &info)
        } else {
            info.kind = .other
        }
    }

    typealias WordKinds = [(word: StaticString, kind: SQLStatementKind)]

    /// The statements a WITH list may lead to, also tried first as a statement's first word. Like
    /// `otherWords`, a constant table: the optimizer lays it out statically, with no lazy
    /// initialisation or reference counting when it is read.
    static let mainWords: WordKinds = [
        ("select", .select), ("values", .values), ("table", .table),
        ("insert", .insert), ("update", .update), ("delete", .delete), ("merge", .merge),
    ]

    /// The other first words and the kind each starts, tried in this order after `mainWords` and
    /// WITH; `readRest` reads what follows. COPY's kind is a placeholder until FROM or TO is read,
    /// START's until TRANSACTION is.
    static let otherWords: WordKinds = [
        ("show", .show), ("explain", .explain), ("copy", .copyFrom), ("begin", .begin), ("start", .startTransaction),
        ("commit", .commit), ("end", .commit), ("rollback", .rollback), ("abort", .rollback),
        ("savepoint", .savepoint), ("release", .release), ("prepare", .prepare), ("execute", .execute),
        ("deallocate", .deallocate), ("set", .set), ("reset", .reset), ("discard", .discard),
        ("listen", .listen), ("unlisten", .unlisten), ("notify", .notify),
        ("declare", .declareCursor), ("close", .close), ("fetch", .fetch), ("move", .fetch),
        ("create", .ddl), ("alter", .ddl), ("drop", .ddl), ("comment", .ddl), ("grant", .ddl), ("revoke", .ddl),
        ("security", .ddl), ("reindex", .ddl), ("cluster", .ddl), ("refresh", .ddl), ("import", .ddl),
        ("reassign", .ddl),
        ("truncate", .truncate), ("call", .call), ("do", .do), ("lock", .lock), ("vacuum", .vacuum),
        ("analyze", .analyze), ("analyse", .analyze),
    ]

    /// After the first word `w` of `otherWords`, with `info.kind` set from it: what follows.
    func readRest(_ w: SQLToken, _ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        switch info.kind {
        case .show: info.readOnly = true
        case .explain: explain(&lx, &info)
        case .copyFrom: copy(&lx, &info)
        case .begin: transactionModes(&lx, &info)
        case .startTransaction:
            guard let t = lx.nextSignificant(), lx.isWord(t, "transaction") else { info.kind = .other; return }
            transactionModes(&lx, &info)
        case .commit, .rollback: endTransaction(&lx, &info, commit: info.kind == .commit)
        case .savepoint, .execute, .listen: info.name = nameRange(&lx)
        case .release: info.name = next(&lx, skipping: "savepoint").flatMap { nameRange(from: $0, &lx) }
        case .prepare: prepare(&lx, &info)
        case .deallocate: nameOrAll(next(&lx, skipping: "prepare"), &lx, &info)
        case .set: set(&lx, &info)
        case .reset: reset(&lx, &info)
        case .discard: discard(&lx, &info)
        case .unlisten:
            if let t = lx.nextSignificant() {
                if lx.isOp(t, "*") { info.flags.insert(.all) } else { info.name = nameRange(from: t, &lx) }
            }
        case .notify:
            info.name = nameRange(&lx)
            if let c = lx.nextSignificant(), c.kind == .comma, let payload = lx.nextSignificant(), payload.kind == .string {
                info.value = payload.range
            }
        case .declareCursor: declare(&lx, &info)
        case .close: nameOrAll(lx.nextSignificant(), &lx, &info)
        case .fetch:
            // The cursor is the last word: FETCH c, FETCH NEXT FROM c, MOVE FORWARD 5 IN c.
            var last: SQLToken?
            while let t = lx.nextSignificant(), t.kind != .semicolon { last = t }
            if let last, last.isName { info.name = last.range }
        case .ddl: if lx.isWord(w, "create") { createFlags(&lx, &info) }
        default:
            break  // TRUNCATE, CALL, DO, LOCK, VACUUM, ANALYZE: the word says it all.
        }
    }

    /// The kind of the first word of `table` that `t` is, nil if none.
    @inline(__always)
    static func kind(of t: SQLToken, _ lx: SQLLexer, in table: WordKinds) -> SQLStatementKind? {
        for entry in table where lx.isWord(t, entry.word) { return entry.kind }
        return nil
    }

    /// The next word outside parentheses (the statement's own, not a subquery's or a list's); nil at
    /// the end. Called again, it goes on from there: the word it returned was at the top level.
    func nextTopLevelWord(_ lx: inout SQLLexer) -> SQLToken? {
        var depth = 0
        while let t = lx.nextSignificant() {
            switch t.kind {
            case .leftParen: depth &+= 1
            case .rightParen: depth &-= 1
            case .identifier where depth == 0: return t
            default: break
            }
        }
        return nil
    }

    /// A statement of `mainWords`: SELECT, VALUES, TABLE are read-only unless the facts say otherwise;
    /// INSERT, UPDATE, DELETE, MERGE are not.
    func mainStatement(_ kind: SQLStatementKind, _ facts: Facts, _ info: inout SQLStatementInfo) {
        info.kind = kind
        guard kind == .select || kind == .values || kind == .table else { return }
        if facts.into { info.flags.insert(.selectInto) }
        info.readOnly = !facts.into && facts.flags.isDisjoint(with: [.lockingClause, .dataModifyingSubstatement, .deniedFunction])
    }

    /// WITH: the kind of the main statement, the first SELECT/INSERT/UPDATE/DELETE/MERGE/VALUES/TABLE
    /// outside the parentheses of the WITH list.
    func withStatement(_ lx: inout SQLLexer, _ facts: Facts, _ info: inout SQLStatementInfo) {
        while let t = nextTopLevelWord(&lx) {
            if let k = Self.kind(of: t, lx, in: Self.mainWords) { return mainStatement(k, facts, &info) }
        }
        info.kind = .other
    }

    /// EXPLAIN [ANALYZE] [VERBOSE] stmt, EXPLAIN (option [value], ...) stmt.
    func explain(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        info.kind = .explain
        var analyze = false
        var t = lx.nextSignificant()
        if let p = t, p.kind == .leftParen {
            var expectOption = true
            var inAnalyze = false
            while let o = lx.nextSignificant() {
                if o.kind == .rightParen { break }
                if o.kind == .comma {
                    expectOption = true
                    inAnalyze = false
                    continue
                }
                if expectOption {
                    expectOption = false
                    inAnalyze = lx.isWord(o, "analyze") || lx.isWord(o, "analyse")
                    if inAnalyze { analyze = true }
                } else if inAnalyze && (lx.isWord(o, "false") || lx.isWord(o, "off")
                                          || (o.kind == .number && o.length == 1 && lx.bytes[o.start] == UInt8(ascii: "0"))) {
                    analyze = false
                }
            }
            t = lx.nextSignificant()
        } else {
            while let o = t, lx.isWord(o, "analyze") || lx.isWord(o, "analyse") || lx.isWord(o, "verbose") {
                if !lx.isWord(o, "verbose") { analyze = true }
                t = lx.nextSignificant()
            }
        }
        guard let bodyStart = t else { return }
        info.body = bodyStart.start..<lastEnd(&lx, after: bodyStart)
        let inner = classify(lx.bytes, range: bodyStart.start..<lx.end)
        if analyze { info.flags.insert(.explainAnalyze) }
        info.readOnly = !analyze || inner.readOnly
    }

    /// COPY ... FROM or COPY ... TO: the first FROM or TO outside parentheses decides.
    func copy(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        while let t = nextTopLevelWord(&lx) {
            if lx.isWord(t, "from") { info.kind = .copyFrom; return }
            if lx.isWord(t, "to") { info.kind = .copyTo; return }
        }
        info.kind = .other
    }

    /// DISCARD ALL | TEMP | TEMPORARY | PLANS | SEQUENCES.
    func discard(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        info.kind = .discard
        guard let t = lx.nextSignificant() else { return }
        if lx.isWord(t, "all") {
            info.discard = .all
            info.flags.insert(.all)
        } else if lx.isWord(t, "temp") || lx.isWord(t, "temporary") {
            info.discard = .temporary
        } else if lx.isWord(t, "plans") {
            info.discard = .plans
        } else if lx.isWord(t, "sequences") {
            info.discard = .sequences
        }
    }

    /// READ ONLY / READ WRITE among BEGIN's, START TRANSACTION's or SET TRANSACTION's modes.
    func transactionModes(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        while let t = lx.nextSignificant() {
            guard lx.isWord(t, "read"), let n = lx.peekSignificant() else { continue }
            if lx.isWord(n, "only") { info.flags.insert(.readOnlyTransaction) }
            if lx.isWord(n, "write") { info.flags.insert(.readWriteTransaction) }
        }
    }

    /// COMMIT|END / ROLLBACK|ABORT [WORK|TRANSACTION] [AND [NO] CHAIN], ROLLBACK ... TO [SAVEPOINT] x,
    /// COMMIT|ROLLBACK PREPARED 'id'.
    func endTransaction(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo, commit: Bool) {
        info.kind = commit ? .commit : .rollback
        var t = lx.nextSignificant()
        if let p = t, lx.isWord(p, "prepared") {
            info.kind = commit ? .commitPrepared : .rollbackPrepared
            if let id = lx.nextSignificant(), id.kind == .string { info.value = id.range }
            return
        }
        if let p = t, lx.isWord(p, "work") || lx.isWord(p, "transaction") { t = lx.nextSignificant() }
        guard let p = t else { return }
        if !commit && lx.isWord(p, "to") {
            info.kind = .rollbackToSavepoint
            info.name = next(&lx, skipping: "savepoint").flatMap { nameRange(from: $0, &lx) }
        } else if lx.isWord(p, "and"), let c = lx.nextSignificant(), lx.isWord(c, "chain") {
            info.flags.insert(.andChain)
        }
    }

    /// PREPARE TRANSACTION 'id', or PREPARE name [(types)] AS statement.
    func prepare(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        guard let n = lx.nextSignificant() else { info.kind = .other; return }
        if lx.isWord(n, "transaction"), let id = lx.peekSignificant(), id.kind == .string {
            info.kind = .prepareTransaction
            info.value = id.range
            return
        }
        info.kind = .prepare
        info.name = nameRange(from: n, &lx)
        while let t = nextTopLevelWord(&lx) {
            if lx.isWord(t, "as") {
                if let b = lx.nextSignificant() { info.body = b.start..<lastEnd(&lx, after: b) }
                return
            }
        }
    }

    /// DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR [WITH|WITHOUT HOLD] FOR query.
    func declare(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        info.kind = .declareCursor
        guard let n = lx.nextSignificant() else { return }
        if n.isName { info.name = n.range }
        var sawCursor = false
        while let t = lx.nextSignificant() {
            if lx.isWord(t, "cursor") { sawCursor = true }
            if lx.isWord(t, "with"), let h = lx.peekSignificant(), lx.isWord(h, "hold") { info.flags.insert(.withHold) }
            if sawCursor && lx.isWord(t, "for") {
                if let b = lx.nextSignificant() { info.body = b.start..<lastEnd(&lx, after: b) }
                return
            }
        }
    }

    /// CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP|TEMPORARY ..., and ON COMMIT DROP.
    func createFlags(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        var t = lx.nextSignificant()
        if let o = t, lx.isWord(o, "or") {
            _ = lx.nextSignificant()  // REPLACE
            t = lx.nextSignificant()
        }
        if let g = t, lx.isWord(g, "global") || lx.isWord(g, "local") { t = lx.nextSignificant() }
        if let tt = t, lx.isWord(tt, "temp") || lx.isWord(tt, "temporary") { info.flags.insert(.temporary) }
        guard info.flags.contains(.temporary) else { return }
        while let w = lx.nextSignificant() {
            guard lx.isWord(w, "on") else { continue }
            var look = lx
            if let c = look.nextSignificant(), lx.isWord(c, "commit"), let d = look.nextSignificant(), lx.isWord(d, "drop") {
                info.flags.insert(.onCommitDrop)
            }
        }
    }

    // MARK: SET and RESET

    func set(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        info.kind = .set
        guard var t = lx.nextSignificant() else { info.kind = .other; return }
        if lx.isWord(t, "local") {
            info.kind = .setLocal
            guard let n = lx.nextSignificant() else { return }
            t = n
        } else if lx.isWord(t, "session"), let n = lx.peekSignificant(),
                  !lx.isWord(n, "authorization") && !lx.isWord(n, "characteristics") && !lx.isOp(n, "=") && !lx.isWord(n, "to") {
            _ = lx.nextSignificant()
            t = n
        }
        if lx.isWord(t, "transaction") {
            info.kind = .setTransaction
            if let s = lx.peekSignificant(), lx.isWord(s, "snapshot") {
                _ = lx.nextSignificant()
                info.setting = .transactionSnapshot
                info.value = restRange(&lx)
            } else {
                info.setting = .transaction
                transactionModes(&lx, &info)
            }
            return
        }
        // `name [. name ...]` followed by TO / = is the generic form, whatever the first word is.
        var look = lx
        let nameEnd = look.dottedNameEnd(from: t)
        if let op = look.nextSignificant() {
            if lx.isOp(op, "=") || lx.isWord(op, "to") {
                lx = look
                info.setting = .named
                info.name = t.start..<nameEnd
                valueOrDefault(&lx, &info)
                return
            }
            if lx.isWord(op, "from"), let c = look.nextSignificant(), lx.isWord(c, "current") {
                lx = look
                info.setting = .named
                info.name = t.start..<nameEnd
                info.flags.insert(.fromCurrent)
                return
            }
        }
        // The special forms.
        var nameLast = t
        func second(_ w: StaticString) -> Bool {
            guard let n = lx.peekSignificant(), lx.isWord(n, w) else { return false }
            nameLast = lx.nextSignificant()!
            return true
        }
        if lx.isWord(t, "time") && second("zone") {
            info.setting = .timeZone
        } else if lx.isWord(t, "session") && second("authorization") {
            info.setting = .sessionAuthorization
        } else if lx.isWord(t, "session") && second("characteristics") {
            info.setting = .sessionCharacteristics
            info.name = t.start..<nameLast.end
            transactionModes(&lx, &info)
            return
        } else if lx.isWord(t, "xml") && second("option") {
            info.setting = .xmlOption
        } else if lx.isWord(t, "names") {
            info.setting = .names
        } else if lx.isWord(t, "schema") {
            info.setting = .schema
        } else if lx.isWord(t, "role") {
            info.setting = .role
        } else if lx.isWord(t, "catalog") {
            info.setting = .catalog
        } else {
            // Unknown shape: the words as the name, no value, not default. A user of it treats it as unknown.
            info.setting = .named
            info.name = t.start..<nameEnd
            return
        }
        info.name = t.start..<nameLast.end
        valueOrDefault(&lx, &info)
        if info.setting == .names && info.value == nil { info.flags.insert(.toDefault) }
        if let v = info.value, v.count > 0 {
            let single = SQLLexer(lx.bytes, range: v, standardConformingStrings: lx.standardConformingStrings)
            var one = single
            if let only = one.nextSignificant(), one.nextSignificant() == nil {
                if info.setting == .timeZone && single.isWord(only, "local") { setDefault(&info) }
                if info.setting == .role && single.isWord(only, "none") { setDefault(&info) }
            }
        }
    }

    func setDefault(_ info: inout SQLStatementInfo) {
        info.flags.insert(.toDefault)
        info.value = nil
    }

    /// The rest of the statement as the value, or the `toDefault` flag for a lone DEFAULT.
    func valueOrDefault(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        guard let v = restRange(&lx) else { return }
        var one = SQLLexer(lx.bytes, range: v, standardConformingStrings: lx.standardConformingStrings)
        if let only = one.nextSignificant(), one.nextSignificant() == nil, lx.isWord(only, "default") {
            setDefault(&info)
        } else {
            info.value = v
        }
    }

    func reset(_ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        info.kind = .reset
        guard let t = lx.nextSignificant() else { return }
        var nameLast = t
        func second(_ w: StaticString) -> Bool {
            guard let n = lx.peekSignificant(), lx.isWord(n, w) else { return false }
            nameLast = lx.nextSignificant()!
            return true
        }
        if lx.isWord(t, "all") {
            info.setting = .all
            info.flags.insert(.all)
            return
        }
        if lx.isWord(t, "time") && second("zone") {
            info.setting = .timeZone
        } else if lx.isWord(t, "session") && second("authorization") {
            info.setting = .sessionAuthorization
        } else if lx.isWord(t, "transaction") && second("isolation") {
            _ = second("level")
            info.setting = .transactionIsolation
        } else if lx.isWord(t, "role") {
            info.setting = .role
        } else {
            info.setting = .named
            var look = lx
            info.name = t.start..<look.dottedNameEnd(from: t)
            return
        }
        info.name = t.start..<nameLast.end
    }

    // MARK: Names and ranges

    /// The next token, or the one after it when it is the optional `word` (RELEASE [SAVEPOINT] x,
    /// DEALLOCATE [PREPARE] x, ROLLBACK TO [SAVEPOINT] x).
    func next(_ lx: inout SQLLexer, skipping word: StaticString) -> SQLToken? {
        guard let t = lx.nextSignificant() else { return nil }
        return lx.isWord(t, word) ? lx.nextSignificant() : t
    }

    func nameRange(_ lx: inout SQLLexer) -> Range<Int>? {
        guard let t = lx.nextSignificant() else { return nil }
        return nameRange(from: t, &lx)
    }

    /// A name token (or a dotted name) at `t`, nil if `t` is not a name.
    func nameRange(from t: SQLToken, _ lx: inout SQLLexer) -> Range<Int>? {
        guard t.isName else { return nil }
        return t.start..<lx.dottedNameEnd(from: t)
    }

    func nameOrAll(_ t: SQLToken?, _ lx: inout SQLLexer, _ info: inout SQLStatementInfo) {
        guard let t else { return }
        if lx.isWord(t, "all") {
            info.flags.insert(.all)
        } else {
            info.name = nameRange(from: t, &lx)
        }
    }

    /// From the next significant token to the end of the last one before a `;` or the end.
    func restRange(_ lx: inout SQLLexer) -> Range<Int>? {
        guard let f = lx.nextSignificant(), f.kind != .semicolon else { return nil }
        return f.start..<lastEnd(&lx, after: f)
    }

    /// The end of the last significant token from `t` on, stopping at a top-level `;`.
    func lastEnd(_ lx: inout SQLLexer, after t: SQLToken) -> Int {
        var end = t.end
        var depth = t.kind == .leftParen ? 1 : 0
        while let n = lx.nextSignificant() {
            if n.kind == .semicolon && depth <= 0 { break }
            if n.kind == .leftParen { depth &+= 1 } else if n.kind == .rightParen { depth &-= 1 }
            end = n.end
        }
        return end
    }
}

extension SQLLexer {
    /// `isWord` for a name with characters beyond a word's (`pgswift:primary`): case-insensitive
    /// over the token's exact bytes.
    @usableFromInline
    func isWordLike(_ t: SQLToken, _ word: StaticString) -> Bool {
        t.length == word.utf8CodeUnitCount && matches(at: t.start, SQLLexer.raw(word), folding: true)
    }

    /// A function name: the unquoted word (folded) or the quoted identifier (exact).
    @usableFromInline
    func isWordOrQuoted(_ t: SQLToken, _ name: StaticString) -> Bool {
        names(t, SQLLexer.raw(name))
    }
}
