// The admin console's command language (PgBouncer's grammar and error texts), parsed into a value.

/// What SHOW can show. Raw values are the names the console accepts (case-insensitively).
public enum AdminShowTarget: String, Sendable, CaseIterable {
    case help, config, databases, fds, lists, peers
    case peerPools = "peer_pools"
    case pools, servers, clients, sockets
    case activeSockets = "active_sockets"
    case stats
    case statsTotals = "stats_totals"
    case statsAverages = "stats_averages"
    case users, version, totals, mem
    case dnsHosts = "dns_hosts"
    case dnsZones = "dns_zones"
    case state
    /// pgswift's own: one row per worker process.
    case workers
    /// pgswift's own: one row per backend host the health check watches.
    case health
    /// pgswift's own: one row per routed database and host (issue 20; Supervisor/Admin/RoutingReport.swift).
    case routing
}

/// One admin console command.
public enum AdminCommand: Equatable, Sendable {
    case show(AdminShowTarget)
    /// SHOW of a session parameter some drivers ask for (client_encoding, ...): a fixed answer.
    case showFakeParameter(name: String, value: String)
    /// SET of such a parameter: accepted and ignored with a NOTICE, for anyone.
    case setFakeParameter(name: String)
    /// SET key = value (or TO): changes a setting (admin only).
    case set(key: String, value: String)
    case pause(database: String?)
    case resume(database: String?)
    /// nil when the database is missing: the executor answers `AdminError.databaseRequired`
    /// after its access check, as PgBouncer does.
    case disable(database: String?)
    case enable(database: String?)
    case reconnect(database: String?)
    case kill(database: String?)
    /// nil when the argument is not a number: the executor answers `AdminError.invalidClientID`.
    case killClient(id: UInt64?)
    case suspend
    /// .immediate for plain SHUTDOWN, .safe for WAIT_FOR_SERVERS, .graceful for WAIT_FOR_CLIENTS.
    case shutdown(ShutdownMode)
    case reload
    case waitClose(database: String?)
    /// pgswift's own: rolling restart of the workers / binary upgrade.
    case upgrade
    /// pgswift's own (issue 21): per-pattern statistics merged over workers, the top `limit` by time.
    case showQueries(limit: Int?)
    /// pgswift's own: per-relation figures from the patterns that name it.
    case showTables
    /// pgswift's own: forget every worker's patterns (admin only).
    case resetQueries

    /// Everything except SHOW (and the fake SET) needs an admin_users member; SHOW FDS too.
    public var requiresAdmin: Bool {
        switch self {
        case .show(let t): return t == .fds
        case .showFakeParameter, .setFakeParameter, .showQueries, .showTables: return false
        default: return true
        }
    }

    /// Session parameters PgBouncer pretends to have on the console, with its answers.
    public static let fakeParameters: [(name: String, value: String)] = [
        ("client_encoding", "UTF-8"),
        ("default_transaction_isolation", "read committed"),
        ("standard_conforming_strings", "on"),
        ("datestyle", "ISO"),
        ("timezone", "GMT"),
        ("extra_float_digits", "2"),
    ]

    /// Parses one simple-protocol query string. Throws `AdminError` with PgBouncer's text for an
    /// unknown or malformed command.
    public static func parse(_ query: String) throws(AdminError) -> AdminCommand {
        if let q = queryInsight(query) { return q }
        var lexer = AdminLexer(Array(query.utf8))
        if let normal = lexer.normalForm() {
            return try command(normal.name, normal.arg, query: query)
        }
        lexer = AdminLexer(Array(query.utf8))
        if let set = try lexer.setForm() {
            if let fake = fakeParameters.first(where: { equalsIgnoringCase($0.name, set.key) }) {
                return .setFakeParameter(name: fake.name)
            }
            return .set(key: set.key, value: set.value)
        }
        throw AdminError.invalidCommand(query)
    }

    static func command(_ name: AdminLexer.Word, _ arg: AdminLexer.Word?, query: String) throws(AdminError) -> AdminCommand {
        // PgBouncer copies the command into 16 bytes and the argument into 64, quotes included.
        guard name.rawLength < 16, (arg?.rawLength ?? 0) < 64 else { throw AdminError.badArguments }
        let a = arg?.text ?? ""
        let db: String? = a.isEmpty ? nil : a
        switch name.text.lowercased() {
        case "show", "select":
            if let fake = fakeParameters.first(where: { equalsIgnoringCase($0.name, a) }) {
                return .showFakeParameter(name: fake.name, value: fake.value)
            }
            guard let target = AdminShowTarget(rawValue: a.lowercased()) else { throw AdminError.invalidCommand(query) }
            return .show(target)
        case "pause": return .pause(database: db)
        case "resume": return .resume(database: db)
        case "disable": return .disable(database: db)
        case "enable": return .enable(database: db)
        case "reconnect": return .reconnect(database: db)
        case "kill": return .kill(database: db)
        case "kill_client": return .killClient(id: leadingNumber(a))
        case "wait_close": return .waitClose(database: db)
        case "suspend":
            guard db == nil else { throw AdminError.invalidCommand(query) }
            return .suspend
        case "reload":
            guard db == nil else { throw AdminError.invalidCommand(query) }
            return .reload
        case "upgrade":
            guard db == nil else { throw AdminError.invalidCommand(query) }
            return .upgrade
        case "shutdown":
            switch a.lowercased() {
            case "": return .shutdown(.immediate)
            case "wait_for_servers": return .shutdown(.safe)
            case "wait_for_clients": return .shutdown(.graceful)
            default: throw AdminError.invalidCommand(query)
            }
        default:
            throw AdminError.invalidCommand(query)
        }
    }

    /// SHOW QUERIES [n], SHOW TABLES, RESET QUERIES (words separated by white space, an optional `;`).
    static func queryInsight(_ query: String) -> AdminCommand? {
        var text = Substring(query)
        while let last = text.last, last == ";" || last == " " || last == "\t" || last == "\n" || last == "\r" {
            text = text.dropLast()
        }
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).map { $0.lowercased() }
        switch words.count {
        case 2 where words[0] == "show" && words[1] == "queries": return .showQueries(limit: nil)
        case 2 where words[0] == "show" && words[1] == "tables": return .showTables
        case 2 where words[0] == "reset" && words[1] == "queries": return .resetQueries
        case 3 where words[0] == "show" && words[1] == "queries":
            guard let n = Int(words[2]), n >= 0 else { return nil }
            return .showQueries(limit: n)
        default: return nil
        }
    }

    /// Like sscanf("%llu"): optional leading whitespace, then digits; what follows is ignored.
    static func leadingNumber(_ s: String) -> UInt64? {
        var value: UInt64 = 0
        var digits = 0
        var started = false
        for c in s.utf8 {
            if !started && (c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D) { continue }
            if !started && c == UInt8(ascii: "+") { started = true; continue }
            started = true
            guard c >= 0x30 && c <= 0x39 else { break }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (v, o2) = m.addingReportingOverflow(UInt64(c - 0x30))
            if o1 || o2 { return nil }
            value = v
            digits += 1
        }
        return digits > 0 ? value : nil
    }

    static func equalsIgnoringCase(_ a: String, _ b: String) -> Bool {
        a.lowercased() == b.lowercased()
    }
}

/// An admin command that failed, with the text PgBouncer sends (SQLSTATE 08P01 unless stated).
public struct AdminError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public var code: String
    /// pgswift's addition to PgBouncer's fixed text (the ErrorResponse's DETAIL field), e.g. why a
    /// SET or RELOAD failed, which PgBouncer only logs.
    public var detail: String?

    public init(_ message: String, code: String = "08P01", detail: String? = nil) {
        self.message = message
        self.code = code
        self.detail = detail
    }

    /// The same error with a DETAIL.
    public func detailed(_ detail: String) -> AdminError {
        AdminError(message, code: code, detail: detail)
    }

    public var description: String { message }

    public static func invalidCommand(_ query: String) -> AdminError {
        AdminError("invalid command '\(query)', use SHOW HELP;")
    }
    public static let badArguments = AdminError("bad arguments")
    public static let adminAccessNeeded = AdminError("admin access needed")
    public static let databaseRequired = AdminError("a database is required")
    public static let invalidClientID = AdminError("invalid client pointer supplied")
    public static let clientNotFound = AdminError("client not found")
    public static let alreadyPaused = AdminError("already suspended/paused")
    public static let notPaused = AdminError("pooler is not paused/suspended")
    public static let shuttingDown = AdminError("pooler is shutting down")
    public static let suspendWithPausedDatabases = AdminError("cannot suspend with paused databases")
    public static let setFailed = AdminError("SET failed")
    public static func noSuchDatabase(_ db: String) -> AdminError { AdminError("no such database: \(db)") }
    public static func databaseNotPaused(_ db: String) -> AdminError { AdminError("database \(db) is not paused") }
    /// `verb`: pause, reconnect, kill, disable, enable ("cannot <verb> admin db: <db>").
    public static func adminDatabase(_ verb: String, _ db: String) -> AdminError {
        AdminError("cannot \(verb) admin db: \(db)")
    }
    public static func cannotWaitInAdminDatabase(_ db: String) -> AdminError {
        AdminError("cannot wait in admin db: \(db)")
    }
    public static let reloadFailed = AdminError("RELOAD failed, see logs for additional details", code: "F0000")
}

/// A hand-written matcher for PgBouncer's two admin regular expressions (POSIX ERE, case-insensitive):
///   `^WS* WORD (WS+ WORD)? WS* (; WS*)?$`
///   `^WS* set WS+ WORD WS* (=|to) WS* (WORD|STRING) WS* (; WS*)?$`
/// where WORD is `"..."` (with `""` for a quote) or `[0-9a-z_]+`, and STRING is `'...'` (with `''`).
struct AdminLexer {
    struct Word {
        var text: String
        /// Length as written, quotes included (PgBouncer's buffer limits apply to this).
        var rawLength: Int
    }

    let s: [UInt8]
    var i = 0

    init(_ s: [UInt8]) { self.s = s }

    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }
    static func isWordChar(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F
    }

    mutating func skipSpace() -> Int {
        let from = i
        while i < s.count && AdminLexer.isSpace(s[i]) { i += 1 }
        return i - from
    }

    /// A quoted or bare word at the cursor.
    mutating func word() -> Word? {
        guard i < s.count else { return nil }
        if s[i] == UInt8(ascii: "\"") {
            return quoted(UInt8(ascii: "\""))
        }
        let from = i
        while i < s.count && AdminLexer.isWordChar(s[i]) { i += 1 }
        guard i > from else { return nil }
        return Word(text: String(decoding: s[from..<i], as: UTF8.self), rawLength: i - from)
    }

    /// `q...q` with `qq` standing for one q; the text is unquoted.
    mutating func quoted(_ q: UInt8) -> Word? {
        let from = i
        guard i < s.count, s[i] == q, let text = QuotedText.read(s[...], at: &i, quote: q) else { return nil }
        return Word(text: text, rawLength: i - from)
    }

    /// Optional `;` and trailing space, then the end.
    mutating func end() -> Bool {
        _ = skipSpace()
        if i < s.count && s[i] == UInt8(ascii: ";") {
            i += 1
            _ = skipSpace()
        }
        return i == s.count
    }

    mutating func normalForm() -> (name: Word, arg: Word?)? {
        _ = skipSpace()
        guard let name = word() else { return nil }
        let save = i
        if skipSpace() > 0, let arg = word(), end() {
            return (name, arg)
        }
        i = save
        guard end() else { return nil }
        return (name, nil)
    }

    mutating func keyword(_ k: String) -> Bool {
        let bytes = Array(k.utf8)
        guard s.count - i >= bytes.count else { return false }
        for (j, b) in bytes.enumerated() where s[i + j] | 0x20 != b { return false }
        i += bytes.count
        return true
    }

    mutating func setForm() throws(AdminError) -> (key: String, value: String)? {
        _ = skipSpace()
        guard keyword("set"), skipSpace() > 0, let key = word() else { return nil }
        _ = skipSpace()
        if i < s.count && s[i] == UInt8(ascii: "=") {
            i += 1
        } else if !keyword("to") {
            return nil
        }
        _ = skipSpace()
        let value: Word?
        if i < s.count && s[i] == UInt8(ascii: "'") {
            value = quoted(UInt8(ascii: "'"))
        } else {
            value = word()
        }
        guard let value, end() else { return nil }
        // PgBouncer's buffers: key 64 bytes, value 256 bytes (quotes included); an empty key is refused.
        guard key.rawLength < 64, value.rawLength < 256, !key.text.isEmpty else { throw AdminError.badArguments }
        return (key.text, value.text)
    }
}
