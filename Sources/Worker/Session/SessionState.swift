// Transaction mode without the session caveats (issue 19): a client's session-level SETs are
// remembered once its server confirmed (and committed) them and replayed on whichever server it gets
// next when that server's values differ; state that cannot move (a temporary table, a session advisory
// lock, a WITH HOLD cursor) pins the client to its server until it is gone. The pure logic is here;
// `SessionHooks.swift` calls it from the data path.
import Shared

/// One remembered session setting: its key (the parameter's folded name) and the SQL that sets it on a
/// server, and the SQL that puts it back to the server's default.
struct CarriedSetting: Equatable {
    var key: String
    var set: String
    var reset: String
}

/// Session settings beyond the tracked parameters: those a client wants, or those a server has.
struct SessionSettings: Equatable {
    private(set) var entries: [CarriedSetting] = []

    var isEmpty: Bool { entries.isEmpty }

    func value(_ key: String) -> CarriedSetting? { entries.first { $0.key == key } }

    mutating func apply(_ s: CarriedSetting) {
        if let i = entries.firstIndex(where: { $0.key == s.key }) { entries[i] = s } else { entries.append(s) }
    }

    mutating func remove(key: String) {
        entries.removeAll { $0.key == key }
    }

    mutating func removeAll() { entries.removeAll() }

    /// The SQL that turns a server holding `self` into one holding `wanted`: a RESET for what it has and
    /// should not, a SET for what differs; "" when nothing does.
    func transition(to wanted: SessionSettings) -> String {
        var sql = ""
        for e in entries where wanted.value(e.key) == nil { sql += e.reset + ";" }
        for w in wanted.entries where value(w.key)?.set != w.set { sql += w.set + ";" }
        return sql
    }
}

/// The CommandComplete tags a tracked statement answers with.
enum SessionTag: UInt8, Equatable {
    case set, reset, discardAll, discardTemp, discardOther, commit, rollback, prepareTransaction, closeCursor
    case prepare, deallocate, deallocateAll

    /// The tag of a CommandComplete body (NUL-terminated), nil for one that does not concern session state.
    static func of(_ body: UnsafeRawBufferPointer) -> SessionTag? {
        guard let first = body.first else { return nil }
        switch first {
        case UInt8(ascii: "S"):
            return SessionTags.matches(body, "SET") ? .set : nil
        case UInt8(ascii: "R"):
            if SessionTags.matches(body, "RESET") { return .reset }
            return SessionTags.matches(body, "ROLLBACK") ? .rollback : nil
        case UInt8(ascii: "D"):
            if SessionTags.matches(body, "DEALLOCATE") { return .deallocate }
            if SessionTags.matches(body, "DEALLOCATE ALL") { return .deallocateAll }
            if SessionTags.matches(body, "DISCARD ALL") { return .discardAll }
            if SessionTags.matches(body, "DISCARD TEMP") { return .discardTemp }
            if SessionTags.matches(body, "DISCARD PLANS") || SessionTags.matches(body, "DISCARD SEQUENCES") { return .discardOther }
            return nil
        case UInt8(ascii: "C"):
            if SessionTags.matches(body, "COMMIT") { return .commit }
            return SessionTags.matches(body, "CLOSE CURSOR") || SessionTags.matches(body, "CLOSE CURSOR ALL") ? .closeCursor : nil
        case UInt8(ascii: "P"):
            if SessionTags.matches(body, "PREPARE") { return .prepare }
            return SessionTags.matches(body, "PREPARE TRANSACTION") ? .prepareTransaction : nil
        default:
            return nil
        }
    }

    /// Tags that stand for one statement of a tracked Query (the others end transactions).
    var isStatementTag: Bool {
        switch self {
        case .set, .reset, .discardAll, .discardTemp, .discardOther, .prepare, .deallocate, .deallocateAll: return true
        default: return false
        }
    }
}

/// What one statement of a tracked Query does to the client's settings once its tag confirms it.
enum SessionOp: Equatable {
    /// SET name = value (tag SET).
    case set(CarriedSetting)
    /// RESET name, SET name TO DEFAULT (tag RESET or SET): back to the server's default.
    case reset(key: String, tag: SessionTag)
    /// RESET ALL (tag RESET).
    case resetAll
    /// DISCARD ALL (tag DISCARD ALL): settings, SQL prepared statements and pins go.
    case discardAll
    /// PREPARE name AS ... (tag PREPARE): `sql` is the statement as written, replayed on a server that
    /// lacks it. Not transactional in PostgreSQL: remembered at its tag.
    case prepare(name: String, sql: String)
    /// DEALLOCATE [PREPARE] name | ALL (tag DEALLOCATE / DEALLOCATE ALL).
    case deallocate(name: String)
    case deallocateAll
    /// SET / RESET of a tracked parameter the server does not report (search_path before PostgreSQL
    /// 18, track_extra_parameters): the client's tracked value becomes `value` (nil: the pool's
    /// default), and `syncParameters` follows it as it follows startup values.
    case tracked(index: Int, value: String?)
    /// RESET of such a parameter (tag RESET).
    case trackedReset(index: Int)
    /// SET LOCAL, SET TRANSACTION, a parameter the server reports (followed by ParameterStatus),
    /// DISCARD TEMP/PLANS/SEQUENCES: its tag changes nothing here.
    case none(tag: SessionTag)
    /// A setting pgswift cannot replay (SET ... FROM CURRENT, SET SESSION CHARACTERISTICS, a tracked
    /// parameter the server does not report): its tag calls for a reset before another client gets the
    /// server, as before issue 19.
    case untracked(tag: SessionTag)

    var tag: SessionTag {
        switch self {
        case .set: return .set
        case .reset(_, let t): return t
        case .resetAll: return .reset
        case .discardAll: return .discardAll
        case .prepare: return .prepare
        case .deallocate: return .deallocate
        case .deallocateAll: return .deallocateAll
        case .tracked: return .set
        case .trackedReset: return .reset
        case .none(let t), .untracked(let t): return t
        }
    }
}

/// Session state that keeps a client on its server.
struct SessionPins: OptionSet, Equatable {
    let rawValue: UInt8
    static let temporary = SessionPins(rawValue: 1 << 0)
    static let advisoryLock = SessionPins(rawValue: 1 << 1)
    static let holdCursor = SessionPins(rawValue: 1 << 2)
    /// A setting the client made for its session that pgswift cannot carry: set_config(..., false)
    /// (a value pgswift does not see: a parameter, an expression), SET SESSION CHARACTERISTICS,
    /// SET ... FROM CURRENT, a value it cannot read.
    static let setConfig = SessionPins(rawValue: 1 << 3)
}

/// What a tracked text (a Query, or a Parse's statement) does: the ops its tags confirm, in order, what
/// it pins at once, and what it unpins once it ran without an error.
struct SessionPlan: Equatable {
    var ops: [SessionOp] = []
    var pin: SessionPins = []
    var unpinOnSuccess: SessionPins = []
    /// WITH HOLD cursors declared (folded names), cursors closed, and CLOSE ALL.
    var holdCursors: [String] = []
    var closedCursors: [String] = []
    var closeAll = false
    /// SQL prepared statements the text needs on the server before it runs (EXECUTE, DEALLOCATE, a
    /// PREPARE of a name the client has: PostgreSQL's own error then), not prepared earlier in it.
    var referenced: [String] = []

    var isEmpty: Bool { ops.isEmpty && pin.isEmpty && referenced.isEmpty && unpinOnSuccess.isEmpty && closedCursors.isEmpty && !closeAll }
}

/// How the existing parameter tracking follows a setting (`Worker.tracked`, ParameterStatus).
enum FollowedParameter {
    /// Not a tracked parameter: carried here.
    case no
    /// Tracked and reported by the server: ParameterStatus follows it; nothing to do here.
    case reported
    /// Tracked but not reported (its index in `Worker.tracked`): the SET's value becomes the client's
    /// tracked value.
    case unreported(Int)
}

enum SessionPlanner {
    /// Splits and classifies `text` (its statements in order). `followed` says how a setting's folded
    /// name is tracked already.
    static func plan(_ text: UnsafeRawBufferPointer, classifier: SQLClassifier,
                     followed: (String) -> FollowedParameter) -> SessionPlan {
        var plan = SessionPlan()
        var splitter = SQLStatementSplitter(text, standardConformingStrings: classifier.standardConformingStrings)
        let lx = SQLLexer(text, standardConformingStrings: classifier.standardConformingStrings)
        var preparedHere: [String] = []
        while let st = splitter.next() {
            let info = classifier.classify(text, range: st.range)
            statement(info, lx, followed, &plan)
            switch info.kind {
            case .prepare:
                guard let n = info.name, info.body != nil else {
                    plan.ops.append(.untracked(tag: .prepare))
                    continue
                }
                let name = lx.foldedName(n)
                if !preparedHere.contains(name) && !plan.referenced.contains(name) { plan.referenced.append(name) }
                preparedHere.append(name)
                plan.ops.append(.prepare(name: name, sql: lx.text(st.range)))
            case .execute, .deallocate:
                if info.kind == .deallocate {
                    plan.ops.append(info.flags.contains(.all) ? .deallocateAll
                                    : info.name.map { .deallocate(name: lx.foldedName($0)) } ?? .untracked(tag: .deallocate))
                }
                if let n = info.name {
                    let name = lx.foldedName(n)
                    if !preparedHere.contains(name) && !plan.referenced.contains(name) { plan.referenced.append(name) }
                }
            default:
                break
            }
        }
        return plan
    }

    static func statement(_ info: SQLStatementInfo, _ lx: SQLLexer, _ followed: (String) -> FollowedParameter,
                          _ plan: inout SessionPlan) {
        if info.flags.contains(.sessionAdvisoryLock) { plan.pin.insert(.advisoryLock) }
        if info.flags.contains(.sessionSetConfig) && !setConfigFollowed(info, lx, followed) { plan.pin.insert(.setConfig) }
        if info.flags.contains(.advisoryUnlockAll) { plan.unpinOnSuccess.insert(.advisoryLock) }
        switch info.kind {
        case .set:
            let op = setOp(info, lx, followed)
            // A session setting pgswift cannot replay on another server keeps the client on this one,
            // as set_config(..., false) does: lost at the next release, it would change the client's
            // later transactions without a word (SET SESSION CHARACTERISTICS: their isolation level).
            if case .untracked = op { plan.pin.insert(.setConfig) }
            plan.ops.append(op)
        case .setLocal, .setTransaction:
            plan.ops.append(.none(tag: .set))
        case .reset:
            plan.ops.append(resetOp(info, lx, followed))
        case .discard:
            switch info.discard {
            case .all: plan.ops.append(.discardAll)
            case .temporary: plan.ops.append(.none(tag: .discardTemp))
            default: plan.ops.append(.none(tag: .discardOther))
            }
        case .ddl, .select, .values, .table:
            if info.flags.contains(.temporary) && !info.flags.contains(.onCommitDrop) { plan.pin.insert(.temporary) }
        case .declareCursor:
            if info.flags.contains(.withHold) {
                plan.pin.insert(.holdCursor)
                // Unnamed (never expected): only CLOSE ALL or DISCARD ALL lets it go.
                plan.holdCursors.append(info.name.map { lx.foldedName($0) } ?? "")
            }
        case .close:
            if info.flags.contains(.all) {
                plan.closeAll = true
            } else if let n = info.name {
                plan.closedCursors.append(lx.foldedName(n))
            }
        default:
            break
        }
    }

    /// SET [SESSION] name TO value | DEFAULT, and the special forms that set one parameter.
    /// set_config of a parameter the server reports (TimeZone, application_name...): its
    /// ParameterStatus makes the value the client's, which follows it to every server, so no pin.
    static func setConfigFollowed(_ info: SQLStatementInfo, _ lx: SQLLexer, _ followed: (String) -> FollowedParameter) -> Bool {
        guard let r = info.setConfigName, r.count > 2 else { return false }
        let quoted = lx.text(r)
        let name = quoted.dropFirst().dropLast()
        guard !name.contains("'") else { return false }
        if case .reported = followed(name.lowercased()) { return true }
        return false
    }

    static func setOp(_ info: SQLStatementInfo, _ lx: SQLLexer, _ followed: (String) -> FollowedParameter) -> SessionOp {
        if info.flags.contains(.fromCurrent) { return .untracked(tag: .set) }
        let toDefault = info.flags.contains(.toDefault)
        let value = info.value.map { lx.text($0) }
        guard toDefault || value != nil else { return .untracked(tag: .set) }
        let key: String
        let setSQL: String
        let resetSQL: String
        switch info.setting {
        case .named:
            guard let n = info.name else { return .untracked(tag: .set) }
            key = lx.foldedName(n)
            let written = lx.text(n)
            setSQL = "SET \(written) TO \(value ?? "")"
            resetSQL = "RESET \(written)"
        case .schema:
            key = "search_path"
            setSQL = "SET search_path TO \(value ?? "")"
            resetSQL = "RESET search_path"
        case .role:
            key = "role"
            setSQL = "SET ROLE \(value ?? "")"
            resetSQL = "RESET ROLE"
        case .sessionAuthorization:
            key = "session_authorization"
            setSQL = "SET SESSION AUTHORIZATION \(value ?? "")"
            resetSQL = "RESET SESSION AUTHORIZATION"
        case .xmlOption:
            key = "xmloption"
            setSQL = "SET XML OPTION \(value ?? "")"
            resetSQL = "RESET xmloption"
        case .timeZone, .names:
            // TimeZone and client_encoding: reported by every server, followed by ParameterStatus.
            if case .reported = followed(info.setting == .timeZone ? "timezone" : "client_encoding") { return .none(tag: .set) }
            return .untracked(tag: .set)
        default:
            return .untracked(tag: .set)
        }
        switch followed(key) {
        case .reported: return .none(tag: .set)
        case .unreported(let t):
            if toDefault { return .tracked(index: t, value: nil) }
            guard let v = info.value, let text = settingText(lx, v) else { return .untracked(tag: .set) }
            return .tracked(index: t, value: text)
        case .no: break
        }
        if toDefault { return .reset(key: key, tag: .set) }
        return .set(CarriedSetting(key: key, set: setSQL, reset: resetSQL))
    }

    /// RESET name | ALL | ROLE | SESSION AUTHORIZATION | TIME ZONE | TRANSACTION ISOLATION LEVEL.
    static func resetOp(_ info: SQLStatementInfo, _ lx: SQLLexer, _ followed: (String) -> FollowedParameter) -> SessionOp {
        let key: String
        switch info.setting {
        case .all: return .resetAll
        case .named:
            guard let n = info.name else { return .untracked(tag: .reset) }
            key = lx.foldedName(n)
        case .role: key = "role"
        case .sessionAuthorization: key = "session_authorization"
        case .timeZone: key = "timezone"
        case .transactionIsolation: return .none(tag: .reset)
        default: return .untracked(tag: .reset)
        }
        switch followed(key) {
        case .reported: return .none(tag: .reset)
        case .unreported(let t):
            // The tag of RESET is RESET: a tracked op stands for SET's, so the tag is checked apart.
            return .trackedReset(index: t)
        case .no: return .reset(key: key, tag: .reset)
        }
    }

    /// A SET value as PostgreSQL shows the setting: list elements joined by ", ", string literals
    /// unquoted, unquoted names folded, numbers (with a sign) as written. nil for anything else (a
    /// quoted name, an escape string, a dollar quote...): not carried then.
    static func settingText(_ lx: SQLLexer, _ range: Range<Int>) -> String? {
        var out = ""
        var element = ""
        var sign = ""
        var lexer = SQLLexer(lx.bytes, range: range, standardConformingStrings: lx.standardConformingStrings)
        var expectValue = true
        while let t = lexer.nextSignificant() {
            switch t.kind {
            case .comma where !expectValue:
                out += element + ", "
                element = ""
                expectValue = true
                continue
            case .string where expectValue && t.flags.isEmpty:
                var s: [UInt8] = []
                var k = t.start + 1
                while k < t.end - 1 {
                    s.append(lx.bytes[k])
                    k += lx.bytes[k] == UInt8(ascii: "'") ? 2 : 1
                }
                element = String(decoding: s, as: UTF8.self)
            case .identifier where expectValue:
                element = lx.foldedName(t.range)
            case .number where expectValue:
                element = sign + lx.text(t.range)
                sign = ""
            case .op where expectValue && sign.isEmpty && (lx.isOp(t, "-") || lx.isOp(t, "+")):
                sign = lx.isOp(t, "-") ? "-" : ""
                continue
            default:
                return nil
            }
            expectValue = false
        }
        return expectValue ? nil : out + element
    }
}

/// A client's carried session state (in its `ClientInfo`): the settings it has (confirmed and
/// committed), those its startup packet gave (`options -c`, what RESET goes back to), the statements
/// in flight and the changes confirmed inside a transaction not ended yet.
struct ClientSessionState {
    var settings = SessionSettings()
    var baseline = SessionSettings()
    /// Ops of the tracked Query in flight, waiting for their tags (head first).
    var ops: [SessionOp] = []
    var opsHead = 0
    /// Confirmed by their tag inside a transaction: remembered at COMMIT (or at a ReadyForQuery 'I'
    /// without an error: the implicit transaction of a simple Query), forgotten at ROLLBACK.
    var staged: [SessionOp] = []
    /// The tracked Query in flight failed: its implicit transaction is rolled back.
    var errorSeen = false
    var unpinOnSuccess: SessionPins = []
    var closedCursors: [String] = []
    var closeAll = false
    /// WITH HOLD cursors declared (folded names).
    var holdCursors: [String] = []
    /// SQL prepared statements: folded name → the PREPARE statement as written.
    var prepared: [String: String] = [:]
    /// Extended protocol: the session ops of the unnamed statement and of the unnamed portal bound to
    /// it, and whether the batch of that Parse began with nothing in flight.
    var unnamedStatement: SessionPlan? = nil
    var unnamedPortal: SessionPlan? = nil
    var extendedBatchQuiet = false
    /// Named statements (the extended protocol's, by the client's name) whose text carries session
    /// ops: a SET JDBC prepares once and executes again on later links. At most `namedPlanLimit`.
    var namedStatements: [String: SessionPlan] = [:]
    static let namedPlanLimit = 100

    /// A statement or the unnamed portal carries session ops: Bind and Execute are looked at.
    var extendedPlans: Bool { unnamedStatement != nil || unnamedPortal != nil || !namedStatements.isEmpty }
    /// max_prepared_statements: more SQL prepared statements than this are not carried (the server is
    /// then reset when released, as before issue 19); 0: none are.
    var preparedLimit = 0

    var inFlight: Bool { opsHead < ops.count || !staged.isEmpty || !unpinOnSuccess.isEmpty || !closedCursors.isEmpty || closeAll }

    /// What the server side must do after an event.
    struct Outcome: Equatable {
        /// The tag was a tracked statement's: the old reset-on-tag rule does not apply.
        var handled = false
        /// pgswift lost track of what the server holds: reset it before another client gets it.
        var needsReset = false
        /// Ops now remembered: apply them to the client's and the server's settings.
        var apply: [SessionOp] = []
        /// Prepared statements created or dropped (already in the client's `prepared`): the server's
        /// record follows.
        var prepared: [SessionOp] = []
        /// Pins gone.
        var unpin: SessionPins = []
    }

    /// A tracked Query was sent (nothing else was in flight on the link).
    mutating func sent(_ plan: SessionPlan) {
        ops = plan.ops
        opsHead = 0
        errorSeen = false
        unpinOnSuccess = plan.unpinOnSuccess
        closedCursors = plan.closedCursors
        closeAll = plan.closeAll
        for c in plan.holdCursors where !holdCursors.contains(c) { holdCursors.append(c) }
    }

    /// A CommandComplete whose tag concerns session state.
    mutating func commandComplete(_ tag: SessionTag) -> Outcome {
        var out = Outcome()
        switch tag {
        case .commit:
            out.apply = staged
            staged.removeAll()
            return out
        case .rollback, .prepareTransaction:
            // A ROLLBACK TO SAVEPOINT keeps what came before the savepoint; which is unknown: reset.
            if !staged.isEmpty { out.needsReset = true }
            staged.removeAll()
            return out
        case .discardAll:
            out.unpin = [.temporary, .advisoryLock, .holdCursor, .setConfig]
            holdCursors.removeAll()
            prepared.removeAll()
            out.prepared.append(.deallocateAll)
        case .discardTemp:
            out.unpin = .temporary
        case .closeCursor:
            return out
        default:
            break
        }
        guard tag.isStatementTag else { return out }
        guard opsHead < ops.count else { return out }
        let op = ops[opsHead]
        guard op.tag == tag else {
            // Out of step (never expected): stop tracking this Query; the server is reset later.
            ops.removeAll()
            opsHead = 0
            out.needsReset = true
            return out
        }
        opsHead += 1
        out.handled = true
        switch op {
        case .untracked:
            out.needsReset = true
        case .none:
            break
        case .prepare(let name, let sql):
            if prepared[name] == nil && prepared.count >= preparedLimit {
                // Beyond max_prepared_statements: not carried; the server keeps it until a reset.
                out.needsReset = true
            } else {
                prepared[name] = sql
                out.prepared.append(op)
            }
        case .deallocate(let name):
            prepared[name] = nil
            out.prepared.append(op)
        case .deallocateAll:
            prepared.removeAll()
            out.prepared.append(op)
        default:
            staged.append(op)
        }
        return out
    }

    /// An ErrorResponse on the link: the rest of the Query does not run.
    mutating func error() {
        errorSeen = true
        ops.removeAll()
        opsHead = 0
    }

    /// ReadyForQuery with the server's transaction status.
    mutating func ready(_ status: UInt8) -> Outcome {
        var out = Outcome()
        let idle = status == UInt8(ascii: "I")
        if idle {
            if !errorSeen { out.apply = staged }
            staged.removeAll()
        }
        if !errorSeen {
            out.unpin = unpinOnSuccess
            if closeAll { holdCursors.removeAll() }
            holdCursors.removeAll { closedCursors.contains($0) }
            if holdCursors.isEmpty { out.unpin.insert(.holdCursor) }
        }
        unpinOnSuccess = []
        closedCursors.removeAll()
        closeAll = false
        ops.removeAll()
        opsHead = 0
        errorSeen = false
        return out
    }

    /// Applies remembered ops to the client's settings and to the server's (they are linked, so the
    /// server now holds exactly what the client asked for).
    mutating func remember(_ op: SessionOp, server: inout SessionSettings) {
        switch op {
        case .set(let s):
            settings.apply(s)
            server.apply(s)
        case .reset(let key, _):
            server.remove(key: key)
            if let b = baseline.value(key) { settings.apply(b) } else { settings.remove(key: key) }
        case .resetAll, .discardAll:
            server.removeAll()
            settings = baseline
        case .none, .untracked, .prepare, .deallocate, .deallocateAll, .tracked, .trackedReset:
            break  // prepared statements at their tag; tracked parameters by the caller (SessionHooks.swift)
        }
    }
}
