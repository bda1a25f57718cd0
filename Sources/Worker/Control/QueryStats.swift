// Per-pattern query statistics and the slow-statement log (issue 21): which statement each answer
// ends, timed from the client's message to the end of that statement's answer.
import Shared
import Glibc

/// A text's pattern, by its shape or raw hash (`Worker.cacheKey`) and its (database, user): a hit costs
/// one pass over the text and no normalization.
struct RawPatternCacheEntry {
    var key: UInt64 = 0
    var ref = QueryPatternRef.none
    /// The text holds several statements: split it (each statement then has its own entry).
    var multi = false
}

/// A statement forwarded to a server whose answer has not ended yet.
struct PendingStatement {
    var ref: QueryPatternRef
    /// Monotonic ns: when it was sent, or when the statement before it on the server ended if later.
    var start: Int64
    /// The Query or Sync whose ReadyForQuery closes it (the server's count of them, `sent`).
    var seq: UInt32
    /// The client's wait for this server, on the first statement after a link (µs).
    var waitMicros: UInt32
    /// log_statement_parameters: its key in `QueryStatsState.parameters`; 0 none.
    var parametersID: UInt32 = 0
}

/// A server's statements in flight, in order (a ring grown by doubling; kept for the worker's life).
struct ServerQueryLink {
    var gen: UInt32 = 0
    var live = false
    var ring: UnsafeMutablePointer<PendingStatement>? = nil
    var capacity: Int32 = 0
    var head: Int32 = 0
    var count: Int32 = 0
    /// Queries, Syncs and FunctionCalls forwarded since the link; ReadyForQuery answered.
    var sent: UInt32 = 0
    var answered: UInt32 = 0
    /// The client's wait for this server, given to the first statement after the link (µs).
    var waitMicros: Int64 = 0
}

/// A client's extended-protocol names: which pattern its unnamed statement and portal, and its named
/// ones, run.
struct ClientQuerySession {
    var gen: UInt32 = 0
    var live = false
    var unnamedStatement = QueryPatternRef.none
    var unnamedPortal = QueryPatternRef.none
    /// Named statements and portals by a hash of (kind, name); made at the first named Parse.
    var named: [UInt64: QueryPatternRef]? = nil
    /// log_statement_parameters: the Bind values of the unnamed portal and of named ones (by name hash).
    var unnamedPortalParameters: String? = nil
    var namedParameters: [UInt64: String]? = nil
}

/// A record kept per connection slot (server or client index) for the connection of one generation.
protocol QueryStatsSlotRecord {
    init()
    var gen: UInt32 { get }
    var live: Bool { get }
    /// The record for a new connection (generation `gen`) in the same slot.
    func fresh(gen: UInt32) -> Self
}

extension ServerQueryLink: QueryStatsSlotRecord {
    /// Nothing in flight; the ring is kept (for the worker's life).
    func fresh(gen: UInt32) -> ServerQueryLink {
        ServerQueryLink(gen: gen, live: true, ring: ring, capacity: capacity)
    }
}

extension ClientQuerySession: QueryStatsSlotRecord {
    func fresh(gen: UInt32) -> ClientQuerySession {
        ClientQuerySession(gen: gen, live: true)
    }
}

extension RecordBuffer where Element: QueryStatsSlotRecord {
    /// Slot `i`'s record for the connection of generation `gen`: the buffer grown to hold it, the record
    /// made fresh when the slot was reused. Returns `i`.
    @inline(__always)
    mutating func current(_ i: Int, gen: UInt32) -> Int {
        if i >= count { extend(to: max(i + 1, count + 64), with: Element()) }
        if !self[i].live || self[i].gen != gen { self[i] = self[i].fresh(gen: gen) }
        return i
    }
}

/// The worker's query statistics (behind a pointer, as `HotState`: no run-time exclusivity checks).
struct QueryStatsState {
    var table: QueryStatsTable
    var normalizer = SQLNormalizer()
    var rawCache: RecordBuffer<RawPatternCacheEntry>
    /// By server index and by client index (records checked against the connection's generation).
    var links = RecordBuffer<ServerQueryLink>(capacity: 64)
    var sessions = RecordBuffer<ClientQuerySession>(capacity: 64)
    /// query_stats: figures are kept (else patterns are only found for the slow log).
    var recording = true
    /// log_min_duration_statement in µs; -1: off.
    var logMinMicros: Int64 = -1
    /// Statements whose pattern was evicted between their message and their answer, or too large to read.
    var untracked: UInt64 = 0
    /// log_statement_parameters (with log_min_duration_statement set): statements carry their values.
    var captureParameters = false
    /// Values of the statements in flight, by `PendingStatement.parametersID` (only while capturing).
    var parameters: [UInt32: String] = [:]
    var nextParametersID: UInt32 = 0

    static let rawCacheSize = 4096
    /// Named statements and portals remembered per client.
    static let maxNamesPerClient = 10_000

    init(capacity: Int) {
        table = QueryStatsTable(capacity: capacity)
        rawCache = RecordBuffer(repeating: RawPatternCacheEntry(), count: QueryStatsState.rawCacheSize)
    }
}

extension Worker {
    /// query_stats, query_stats_max and log_min_duration_statement (at start and on reload).
    func applyQueryStatsSettings() {
        let q = queryStats
        // Turned off: what was kept goes (and its memory with it), as RESET QUERIES would.
        if q.pointee.recording && !config.queryStats { resetQueryStats() }
        q.pointee.recording = config.queryStats
        q.pointee.logMinMicros = config.logMinDurationStatement < 0 ? -1 : Int64(config.logMinDurationStatement) * 1000
        q.pointee.table.setCapacity(config.queryStatsMax)
        q.pointee.captureParameters = config.logStatementParameters && config.logMinDurationStatement >= 0
        if !q.pointee.captureParameters { q.pointee.parameters = [:] }
        hot.pointee.queryTracking = config.queryStats || config.logMinDurationStatement >= 0
    }

    /// Message types the client side looks at.
    @inline(__always)
    func queryStatsType(_ type: UInt8) -> Bool {
        type == FrontendType.query || type == FrontendType.parse || type == FrontendType.bind
            || type == FrontendType.execute || type == FrontendType.sync || type == FrontendType.functionCall
            || type == FrontendType.close
    }

    /// The owner id of a pool's (database, user), interned at its first statement.
    @inline(__always)
    private func queryOwner(_ p: Int) -> Int32 {
        let o = pools[p].queryOwner
        if o >= 0 { return o }
        let n = queryStats.pointee.table.owner(database: pools[p].database, user: pools[p].user)
        pools[p].queryOwner = n
        return n
    }

    /// The server's link record, fresh when the server record was reused.
    @inline(__always)
    private func queryLink(_ si: Int32) -> Int {
        queryStats.pointee.links.current(Int(si), gen: servers[si].io.gen)
    }

    /// The client's session record, fresh when the client record was reused.
    @inline(__always)
    private func querySession(_ ci: Int32) -> Int {
        queryStats.pointee.sessions.current(Int(ci), gen: clients[ci].io.gen)
    }

    /// A server was linked to a client that waited `waitedMicros` for it: a fresh start.
    func queryStatsLinked(_ si: Int32, waitedMicros: Int64) {
        let i = queryLink(si)
        let q = queryStats
        q.pointee.links[i] = q.pointee.links[i].fresh(gen: servers[si].io.gen)
        q.pointee.links[i].waitMicros = waitedMicros
    }

    // MARK: Client messages

    /// A client message about to go to server `si` (whole in the buffer: `body` is its payload; nil
    /// for one too large to read, whose statements go uncounted).
    @inline(never)
    func queryStatsClientMessage(_ ci: Int32, _ si: Int32, _ type: UInt8, _ body: UnsafeRawBufferPointer?) {
        let li = queryLink(si)
        let q = queryStats
        let p = Int(servers[si].pool)
        switch type {
        case FrontendType.sync, FrontendType.functionCall:
            q.pointee.links[li].sent &+= 1
        case FrontendType.query:
            q.pointee.links[li].sent &+= 1
            guard let body, p >= 0 else {
                q.pointee.untracked &+= 1
                return
            }
            // The text is the body up to its final NUL (a NUL inside would end it for the server too).
            let n = body.count > 0 && body[body.count &- 1] == 0 && memchr(body.baseAddress!, 0, body.count &- 1) == nil
                ? body.count &- 1 : cStringLength(body, from: 0)
            let text = UnsafeRawBufferPointer(rebasing: body[0..<n])
            simpleQuery(text, owner: queryOwner(p), li: li)
        case FrontendType.parse:
            guard let body, p >= 0 else { return }
            queryStatsParse(ci, body, owner: queryOwner(p))
        case FrontendType.bind:
            guard let body else { return }
            queryStatsBind(ci, body)
        case FrontendType.close:
            // A closed statement or portal leaves the client's map (named ones only).
            guard let body, body.count >= 2, body[1] != 0 else { return }
            let sx = querySession(ci)
            let key = Self.nameKey(body, 1..<cStringLength(body, from: 1), portal: body[0] != UInt8(ascii: "S"))
            q.pointee.sessions[sx].named?[key] = nil
        case FrontendType.execute:
            guard let body else { return }
            queryStatsExecute(ci, li, body)
        default:
            break
        }
    }

    /// A Parse: its text's pattern, kept for the unnamed statement or under the statement's name.
    @inline(__always)
    private func queryStatsParse(_ ci: Int32, _ body: UnsafeRawBufferPointer, owner: Int32) {
        let sx = querySession(ci)
        let nameEnd = cStringLength(body, from: 0)
        guard nameEnd < body.count else { return }
        let textEnd = cStringLength(body, from: nameEnd + 1)
        let ref = patternRef(UnsafeRawBufferPointer(rebasing: body[(nameEnd + 1)..<textEnd]), range: nil, owner: owner,
                             useCache: true)
        if nameEnd == 0 {
            queryStats.pointee.sessions[sx].unnamedStatement = ref
        } else {
            ClientQuerySession.remember(ref, at: Self.nameKey(body, 0..<nameEnd, portal: false),
                                        in: &queryStats.pointee.sessions[sx].named)
        }
    }

    /// A Bind: the portal takes its statement's pattern (and, with log_statement_parameters, its values).
    @inline(__always)
    private func queryStatsBind(_ ci: Int32, _ body: UnsafeRawBufferPointer) {
        let q = queryStats
        let sx = querySession(ci)
        let portalEnd = cStringLength(body, from: 0)
        guard portalEnd < body.count else { return }
        let stmtEnd = cStringLength(body, from: portalEnd + 1)
        let ref = stmtEnd == portalEnd + 1 ? q.pointee.sessions[sx].unnamedStatement
            : q.pointee.sessions[sx].named?[Self.nameKey(body, (portalEnd + 1)..<stmtEnd, portal: false)] ?? .none
        if portalEnd == 0 {
            q.pointee.sessions[sx].unnamedPortal = ref
        } else {
            ClientQuerySession.remember(ref, at: Self.nameKey(body, 0..<portalEnd, portal: true), in: &q.pointee.sessions[sx].named)
        }
        if q.pointee.captureParameters { keepBindParameters(sx, body, portalEnd: portalEnd, valuesAt: stmtEnd + 1) }
    }

    /// An Execute: its portal's pattern is a statement in flight on the link (uncounted without one).
    @inline(__always)
    private func queryStatsExecute(_ ci: Int32, _ li: Int, _ body: UnsafeRawBufferPointer) {
        let q = queryStats
        let sx = querySession(ci)
        let portalEnd = cStringLength(body, from: 0)
        let ref = portalEnd == 0 ? q.pointee.sessions[sx].unnamedPortal
            : q.pointee.sessions[sx].named?[Self.nameKey(body, 0..<portalEnd, portal: true)] ?? .none
        if ref.isNone {
            q.pointee.untracked &+= 1
            return
        }
        let values = q.pointee.captureParameters ? boundParameters(sx, body, portalEnd: portalEnd) : nil
        pushStatement(li, ref, seq: q.pointee.links[li].sent &+ 1, parameters: values)
    }

    /// A statement's or portal's name (`range` of a message body): its key in the client's map by name.
    @inline(__always)
    private static func nameKey(_ body: UnsafeRawBufferPointer, _ range: Range<Int>, portal: Bool) -> UInt64 {
        SQLHash.rawText(UnsafeRawBufferPointer(rebasing: body[range]), seed: portal ? 0x706f_7274 : 0x7374_6d74)
    }

    /// A text's pattern-cache key: its shape (constants' values left out, `SQLHash.shape`), so texts
    /// that differ only in literal values hit without normalizing; the raw text's hash when the byte
    /// scan cannot tell (comments, `$n`, quoted names, ...).
    @inline(__always)
    static func cacheKey(_ text: UnsafeRawBufferPointer) -> UInt64 {
        SQLHash.shape(text) ?? SQLHash.rawText(text)
    }

    /// The statements of a simple Query, each pushed with the Query's sequence number.
    private func simpleQuery(_ text: UnsafeRawBufferPointer, owner: Int32, li: Int) {
        let q = queryStats
        let seq = q.pointee.links[li].sent
        let key = Worker.cacheKey(text) ^ (UInt64(UInt32(bitPattern: owner)) &* 0x9E37_79B9_7F4A_7C15)
        let c = Int(truncatingIfNeeded: key) & (QueryStatsState.rawCacheSize - 1)
        if q.pointee.rawCache[c].key == key {
            if !q.pointee.rawCache[c].multi {
                if q.pointee.table.isValid(q.pointee.rawCache[c].ref) {
                    pushStatement(li, q.pointee.rawCache[c].ref, seq: seq, parameters: rawParameters(text, nil))
                    return
                }
                // Its pattern was evicted: normalized again.
                var splitter = SQLStatementSplitter(text)
                guard let first = splitter.next() else { return }
                let ref = patternRef(text, range: first.range, owner: owner, useCache: false)
                q.pointee.rawCache[c].ref = ref
                pushStatement(li, ref, seq: seq, parameters: rawParameters(text, first.range))
                return
            }
        } else {
            // Unknown text: one statement or several?
            var splitter = SQLStatementSplitter(text)
            guard let first = splitter.next() else { return }  // empty: EmptyQueryResponse, no statement
            if splitter.next() == nil {
                let ref = patternRef(text, range: first.range, owner: owner, useCache: false)
                q.pointee.rawCache[c] = RawPatternCacheEntry(key: key, ref: ref, multi: false)
                pushStatement(li, ref, seq: seq, parameters: rawParameters(text, first.range))
                return
            }
            q.pointee.rawCache[c] = RawPatternCacheEntry(key: key, ref: .none, multi: true)
        }
        // Several statements: each has its own cache entry.
        var splitter = SQLStatementSplitter(text)
        while let s = splitter.next() {
            pushStatement(li, patternRef(text, range: s.range, owner: owner, useCache: true), seq: seq,
                          parameters: rawParameters(text, s.range))
        }
    }

    /// The pattern of `range` of `text` (all of it when nil): from the raw-text cache, else normalized
    /// and found or added in the table.
    private func patternRef(_ text: UnsafeRawBufferPointer, range: Range<Int>?, owner: Int32,
                            useCache: Bool) -> QueryPatternRef {
        let q = queryStats
        var key: UInt64 = 0
        var c = -1
        if useCache {
            let r = range ?? 0..<text.count
            key = Worker.cacheKey(UnsafeRawBufferPointer(rebasing: text[r])) ^ (UInt64(UInt32(bitPattern: owner)) &* 0x9E37_79B9_7F4A_7C15)
            c = Int(truncatingIfNeeded: key) & (QueryStatsState.rawCacheSize - 1)
            if q.pointee.rawCache[c].key == key && !q.pointee.rawCache[c].multi && q.pointee.table.isValid(q.pointee.rawCache[c].ref) {
                return q.pointee.rawCache[c].ref
            }
        }
        q.pointee.normalizer.normalize(text, range: range)
        let queryid = SQLHash.pattern(q.pointee.normalizer.pattern)
        let ref = q.pointee.table.findOrInsert(queryid: queryid, owner: owner) {
            let n = q.pointee.normalizer
            return (n.patternText, n.relations.map { QueryTableUse(name: n.name(of: $0), access: $0.access.rawValue) })
        }
        if c >= 0 { q.pointee.rawCache[c] = RawPatternCacheEntry(key: key, ref: ref, multi: false) }
        return ref
    }

    private func pushStatement(_ li: Int, _ ref: QueryPatternRef, seq: UInt32, parameters: String? = nil) {
        let q = queryStats
        var pid: UInt32 = 0
        if let parameters { pid = keepParameters(parameters) }
        if q.pointee.links[li].count == q.pointee.links[li].capacity { growRing(li) }
        let cap = q.pointee.links[li].capacity
        var at = q.pointee.links[li].head &+ q.pointee.links[li].count
        if at >= cap { at &-= cap }
        let wait = q.pointee.links[li].waitMicros
        q.pointee.links[li].waitMicros = 0
        q.pointee.links[li].ring![Int(at)] = PendingStatement(ref: ref, start: now, seq: seq,
                                                              waitMicros: UInt32(clamping: max(0, wait)),
                                                              parametersID: pid)
        q.pointee.links[li].count &+= 1
    }

    private func growRing(_ li: Int) {
        let q = queryStats
        let old = q.pointee.links[li]
        let cap = max(8, old.capacity * 2)
        let ring = UnsafeMutablePointer<PendingStatement>.allocate(capacity: Int(cap))
        for k in 0..<Int(old.count) {
            ring[k] = old.ring![(Int(old.head) + k) % Int(old.capacity)]
        }
        old.ring?.deallocate()
        q.pointee.links[li].ring = ring
        q.pointee.links[li].capacity = cap
        q.pointee.links[li].head = 0
    }

    // MARK: Server messages

    /// Message types that end a statement's answer.
    @inline(__always)
    func queryStatsEnd(_ type: UInt8) -> Bool {
        type == BackendType.commandComplete || type == BackendType.errorResponse
            || type == BackendType.emptyQueryResponse || type == BackendType.portalSuspended
    }

    /// CommandComplete, ErrorResponse, EmptyQueryResponse or PortalSuspended from a server linked to a
    /// client: the statement at the head ends, if the message belongs to it.
    @inline(never)
    func queryStatsStatementEnd(_ si: Int32, _ type: UInt8, _ body: UnsafeRawBufferPointer?) {
        let i = Int(si)
        let q = queryStats
        guard i < q.pointee.links.count, q.pointee.links[i].live, q.pointee.links[i].gen == servers[si].io.gen,
              q.pointee.links[i].count > 0 else { return }
        let cap = q.pointee.links[i].capacity
        let h = q.pointee.links[i].head
        let st = q.pointee.links[i].ring![Int(h)]
        guard st.seq == q.pointee.links[i].answered &+ 1 else { return }
        q.pointee.links[i].head = h &+ 1 == cap ? 0 : h &+ 1
        q.pointee.links[i].count &-= 1
        var rows: UInt64 = 0
        var errorClass: UInt16 = 0
        if type == BackendType.commandComplete, let body { rows = Worker.tagRows(body) }
        if type == BackendType.errorResponse, let body { errorClass = QueryErrorClasses.code(errorBody: body) }
        statementDone(si, st, rows: rows, error: type == BackendType.errorResponse, errorClass: errorClass)
        if q.pointee.links[i].count > 0 {
            let n = q.pointee.links[i].head
            if q.pointee.links[i].ring![Int(n)].start < now { q.pointee.links[i].ring![Int(n)].start = now }
        }
    }

    /// A ReadyForQuery for the client (after `pendingSyncs` was decremented): statements of that Query
    /// or Sync still pending never ran (an error ended them); with nothing more awaited, none is left.
    @inline(never)
    func queryStatsReady(_ si: Int32) {
        let i = Int(si)
        let q = queryStats
        guard i < q.pointee.links.count, q.pointee.links[i].live, q.pointee.links[i].gen == servers[si].io.gen else { return }
        q.pointee.links[i].answered &+= 1
        if servers[si].pendingSyncs == 0 { q.pointee.links[i].answered = q.pointee.links[i].sent }
        let answered = q.pointee.links[i].answered
        let cap = q.pointee.links[i].capacity
        while q.pointee.links[i].count > 0 {
            let h = q.pointee.links[i].head
            guard Int32(bitPattern: q.pointee.links[i].ring![Int(h)].seq &- answered) <= 0 else { break }
            let pid = q.pointee.links[i].ring![Int(h)].parametersID
            if pid != 0 { q.pointee.parameters[pid] = nil }
            q.pointee.links[i].head = h &+ 1 == cap ? 0 : h &+ 1
            q.pointee.links[i].count &-= 1
        }
        if q.pointee.links[i].count > 0 {
            let n = q.pointee.links[i].head
            if q.pointee.links[i].ring![Int(n)].start < now { q.pointee.links[i].ring![Int(n)].start = now }
        }
    }

    private func statementDone(_ si: Int32, _ st: PendingStatement, rows: UInt64, error: Bool, errorClass: UInt16) {
        let q = queryStats
        let parameters = st.parametersID == 0 ? nil : q.pointee.parameters.removeValue(forKey: st.parametersID)
        guard q.pointee.table.isValid(st.ref) else {
            q.pointee.untracked &+= 1
            return
        }
        let micros = UInt64(max(0, now &- st.start) / 1000)
        if q.pointee.recording {
            q.pointee.table.record(st.ref, micros: micros, rows: rows, error: error, waitMicros: UInt64(st.waitMicros),
                                   errorClass: errorClass)
        }
        let min = q.pointee.logMinMicros
        if min >= 0 && Int64(micros) >= min { logSlowStatement(si, st, micros: micros, parameters: parameters) }
    }

    /// log_min_duration_statement's line: duration, pool wait, who, and the pattern; the literal values
    /// only with log_statement_parameters on (`parameters`, StatementParameters.swift).
    @inline(never)
    private func logSlowStatement(_ si: Int32, _ st: PendingStatement, micros: UInt64, parameters: String?) {
        let q = queryStats
        let e = q.pointee.table.entries[Int(st.ref.slot)]
        let owner = q.pointee.table.owners[Int(e.owner)]
        let ci = servers[si].client
        let info = ci >= 0 ? clients[ci].info : nil
        let text = e.text.utf8.count > 300 ? String(decoding: e.text.utf8.prefix(300), as: UTF8.self) : e.text
        let ms = Double(micros) / 1000
        let wait = Double(st.waitMicros) / 1000
        log.info("duration: \(formatMillis(ms)) ms  wait: \(formatMillis(wait)) ms  db=\(owner.database) user=\(owner.user) "
                 + "client=\(info?.peer ?? "?") application_name=\(info?.applicationName ?? "") "
                 + "queryid=\(Int64(bitPattern: e.queryid)) statement: \(text)" + (parameters.map { "  " + $0 } ?? ""))
    }

    private func formatMillis(_ v: Double) -> String {
        let t = Int64((v * 1000).rounded())
        let frac = t % 1000
        return "\(t / 1000)." + (frac < 10 ? "00" : frac < 100 ? "0" : "") + "\(frac)"
    }

    /// The row count a CommandComplete tag ends with ("SELECT 5", "INSERT 0 5"); 0 when none.
    static func tagRows(_ body: UnsafeRawBufferPointer) -> UInt64 {
        var end = body.count
        while end > 0 && body[end - 1] == 0 { end -= 1 }
        var start = end
        while start > 0 && body[start - 1] >= 0x30 && body[start - 1] <= 0x39 { start -= 1 }
        guard start < end, start > 0, body[start - 1] == 0x20 else { return 0 }
        var v: UInt64 = 0
        for k in start..<end { v = v &* 10 &+ UInt64(body[k] - 0x30) }
        return v
    }

    /// Bytes from `from` to the next NUL (or the end).
    @inline(__always)
    func cStringLength(_ b: UnsafeRawBufferPointer, from: Int) -> Int {
        var i = from
        while i < b.count && b[i] != 0 { i += 1 }
        return i
    }

    // MARK: Reporting

    /// SHOW QUERIES and SHOW TABLES: this worker's patterns.
    func queryStatsSnapshot() -> QueryStatsSnapshot {
        var s = queryStats.pointee.table.snapshot()
        s.untracked = queryStats.pointee.untracked
        return s
    }

    /// RESET QUERIES.
    func resetQueryStats() {
        let q = queryStats
        q.pointee.table.reset()
        for k in 0..<q.pointee.rawCache.count { q.pointee.rawCache[k] = RawPatternCacheEntry() }
    }
}
