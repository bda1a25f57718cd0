// Protocol-level prepared statements in transaction and statement mode (PgBouncer's
// max_prepared_statements): client names are mapped to server names shared by identical statements,
// Parse is injected where a server lacks a statement, and answers the server never sends are
// synthesized in order through a per-server queue of expected responses.
import Shared
import Glibc

/// One entry of a server's ring of expected answers (`Server.answers`, oldest first): what the
/// server owes for one message forwarded on a tracked link, or an answer pgswift gives itself.
///
/// ```
///    7                  6                        5 ... 0
/// │ swallow │ afterCopyData (Sync only) │ kind (6 bits: 1-13, 20-22) │
/// ```
/// `kind` is the entry without the flags, so `head.kind == .sync` reads as it says; 0 (`none`) is
/// "no entry" and never stored. Kept to one byte: the ring is walked on every server message of a
/// tracked link.
struct ExpectedAnswer: Equatable {
    var raw: UInt8
    @inline(__always) init(raw: UInt8) { self.raw = raw }

    @inline(__always) static var none: ExpectedAnswer { .init(raw: 0) }
    @inline(__always) static var parse: ExpectedAnswer { .init(raw: 1) }
    @inline(__always) static var bind: ExpectedAnswer { .init(raw: 2) }
    @inline(__always) static var close: ExpectedAnswer { .init(raw: 3) }
    @inline(__always) static var describeStatement: ExpectedAnswer { .init(raw: 4) }
    @inline(__always) static var describePortal: ExpectedAnswer { .init(raw: 5) }
    @inline(__always) static var execute: ExpectedAnswer { .init(raw: 6) }
    @inline(__always) static var sync: ExpectedAnswer { .init(raw: 7) }
    @inline(__always) static var query: ExpectedAnswer { .init(raw: 8) }
    @inline(__always) static var functionCall: ExpectedAnswer { .init(raw: 9) }
    /// A Parse of a tracked statement: its entry in `ServerInfo.parsesInFlight` says which, so a Parse
    /// the server fails or skips is forgotten (the statement does not exist there, nor for the client).
    @inline(__always) static var parseTracked: ExpectedAnswer { .init(raw: 10) }
    /// The Close pgswift sends to evict a statement from a server's cache: its id is the head of
    /// `ServerInfo.closesInFlight`, so a Close the server skips leaves the statement known there.
    @inline(__always) static var closeTracked: ExpectedAnswer { .init(raw: 11) }
    /// A CopyDone or CopyFail: no answer of its own, but it ends a COPY FROM STDIN, which reads (and
    /// never answers) the Syncs sent during it. Stale (popped unanswered) when no COPY was running.
    @inline(__always) static var copyEnd: ExpectedAnswer { .init(raw: 12) }
    /// A Flush with a body: PostgreSQL fails it (08P01) as an extended-protocol message, so it skips to
    /// the next Sync. Popped by that error (or skipped itself, or ignored inside a COPY).
    @inline(__always) static var badFlush: ExpectedAnswer { .init(raw: 13) }
    /// No server message: pgswift answers ParseComplete / CloseComplete / an ErrorResponse itself.
    @inline(__always) static var synthParseComplete: ExpectedAnswer { .init(raw: 20) }
    @inline(__always) static var synthCloseComplete: ExpectedAnswer { .init(raw: 21) }
    @inline(__always) static var synthError: ExpectedAnswer { .init(raw: 22) }

    /// Flag bit: the answer is to a message pgswift injected; the client never sees it.
    @inline(__always) static var swallowBit: UInt8 { 0x80 }
    /// Flag bit of a Sync: CopyData went to the server before it. Inside a COPY FROM STDIN that the
    /// server fails on bad data, such a Sync may have been read during the COPY (no ReadyForQuery) or
    /// after it (a ReadyForQuery): pgswift cannot tell which (`Server.unreliable`).
    @inline(__always) static var afterCopyDataBit: UInt8 { 0x40 }
    /// Entries a ring holds; a client pipelining more is failed ("too many pipelined messages"). A
    /// power of two: a position wraps with `& ringMask`.
    static var capacity: Int32 { 1024 }
    @inline(__always) static var ringMask: Int32 { capacity &- 1 }

    /// The same entry, answered to pgswift alone.
    @inline(__always) var swallowed: ExpectedAnswer { .init(raw: raw | Self.swallowBit) }
    @inline(__always) var isSwallowed: Bool { raw & Self.swallowBit != 0 }
    @inline(__always) var kind: ExpectedAnswer { .init(raw: raw & 0x3F) }
    @inline(__always) var isSynthetic: Bool { raw & 0x3F >= 20 }
    @inline(__always) var afterCopyData: ExpectedAnswer { .init(raw: raw | Self.afterCopyDataBit) }
    @inline(__always) var isAfterCopyData: Bool { raw & Self.afterCopyDataBit != 0 }
    /// The entry a ParseComplete, BindComplete or CloseComplete (`type`) answers: a Parse (tracked or
    /// not), a Bind, a Close (tracked or not).
    @inline(__always) func isCompletedBy(_ type: UInt8) -> Bool {
        let k = kind
        switch type {
        case BackendType.parseComplete: return k == .parse || k == .parseTracked
        case BackendType.bindComplete: return k == .bind
        default: return k == .close || k == .closeTracked
        }
    }
    /// A Parse, Bind, Describe, Execute or Close the server reads (injected or not), or a malformed
    /// Flush: an error answering it makes the server skip to the next Sync.
    @inline(__always) var isExtendedMessage: Bool {
        let k = raw & 0x3F
        return (k >= 1 && k <= 6) || k == 10 || k == 11 || k == 13
    }
}

/// Distinct statements (query text + parameter types) seen in named Parse messages, per worker.
struct StatementRegistry {
    private var ids: [[UInt8]: Int32] = [:]
    private var bodies: [Int32: [UInt8]] = [:]
    /// Ids are never reused (a server may know PGSWIFT_<id> until it forgets it): the next one.
    private var nextID: Int32 = 0
    /// Statements, and bytes of statement text, at which a sweep is due (see `Worker.sweepStatements`):
    /// twice what the last sweep kept, and at least 10,000 statements or 16 MiB (a named Parse may be
    /// megabytes long, so counting statements alone would let a few thousand of them fill memory).
    private(set) var sweepAt = StatementRegistry.minimumSweep
    private(set) var sweepAtBytes = StatementRegistry.minimumSweepBytes
    static let minimumSweep = 10_000
    static let minimumSweepBytes = 16 << 20
    /// Bytes of all the statement texts kept.
    private(set) var bytes = 0

    var count: Int { bodies.count }
    var sweepDue: Bool { bodies.count >= sweepAt || bytes >= sweepAtBytes }

    /// `rest` is a Parse body after the statement name: query\0, int16 count, int32 type oids.
    mutating func intern(_ rest: UnsafeRawBufferPointer) -> Int32 {
        let key = [UInt8](rest)
        if let id = ids[key] { return id }
        let id = nextID
        nextID &+= 1
        bodies[id] = key
        ids[key] = id
        bytes += key.count
        return id
    }

    func body(_ id: Int32) -> [UInt8]? { bodies[id] }

    /// Forgets every statement not in `live`; the next sweep is due when the registry has doubled.
    mutating func keepOnly(_ live: Set<Int32>) {
        for (id, key) in bodies where !live.contains(id) {
            bodies[id] = nil
            ids[key] = nil
            bytes -= key.count
        }
        sweepAt = max(2 * bodies.count, StatementRegistry.minimumSweep)
        sweepAtBytes = max(2 * bytes, StatementRegistry.minimumSweepBytes)
    }

    static func serverName(_ id: Int32) -> String { "PGSWIFT_\(id)" }

    /// `serverName(id)`'s length in bytes, without making the string.
    @inline(__always)
    static func serverNameLength(_ id: Int32) -> Int {
        var n = 9  // "PGSWIFT_" and one digit
        var v = id.magnitude
        while v >= 10 { v /= 10; n &+= 1 }
        return id < 0 ? n &+ 1 : n
    }

    /// Appends `serverName(id)` and its NUL: what a forwarded Bind or Describe names, once per message,
    /// so no string is made (`serverName` made one, about 200 instructions a Bind).
    @inline(__always)
    static func appendServerName(_ id: Int32, to out: inout OutBuffer) {
        for c in "PGSWIFT_".utf8 { out.appendUInt8(c) }
        if id < 0 { out.appendUInt8(UInt8(ascii: "-")) }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var v = id.magnitude
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[n] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
                v /= 10
                n &+= 1
            } while v > 0
            while n > 0 { n &-= 1; out.appendUInt8(d[n]) }
        }
        out.appendUInt8(0)
    }

    /// Marks statement `id` of a server's cache as just used; false when the server does not hold it.
    /// One access to the map (one hash, one run-time exclusivity check on the class property it sits
    /// in) where a lookup and then an assignment took two of each.
    @inline(__always)
    static func touch(_ cache: inout [Int32: UInt64], _ id: Int32, tick: UInt64) -> Bool {
        guard let i = cache.index(forKey: id) else { return false }
        cache.values[i] = tick
        return true
    }
}

extension Worker {
    /// Statements no client names and no server holds are forgotten (a client that prepares endless
    /// distinct texts would otherwise grow the registry for the worker's life). Run when the registry
    /// has doubled since the last sweep (at least 10,000 statements): a walk of the tables, marking
    /// every id a client maps a name to, a server has prepared, or a Parse or Close in flight names.
    func sweepStatements() {
        var live = Set<Int32>()
        var ci: Int32 = 0
        while ci < Int32(clients.capacity) {
            if clients[ci].state != .free, let names = clients[ci].info?.prepared { live.formUnion(names.values) }
            ci += 1
        }
        var si: Int32 = 0
        while si < Int32(servers.capacity) {
            if servers[si].state != .free, let info = servers[si].info {
                live.formUnion(info.prepared.keys)
                for p in info.parsesInFlight { live.insert(p.id) }
                live.formUnion(info.closesInFlight)
            }
            si += 1
        }
        let before = statements.count
        statements.keepOnly(live)
        log.debug("prepared statements: kept \(statements.count) of \(before)")
    }
}

/// Bytes of one client message too large for the I/O buffer that pgswift needs whole (a named Parse,
/// to intern it): malloc'ed when such a message starts, grown as it arrives (up to max_packet_size),
/// freed once handled.
struct SideBuffer {
    var base: UnsafeMutableRawPointer? = nil
    var count = 0
    var capacity = 0

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// False if memory ran out.
    mutating func append(_ p: UnsafeRawPointer, _ n: Int) -> Bool {
        if capacity - count < n {
            let newCap = max(capacity * 2, count + n, 64 * 1024)
            guard let nb = realloc(base, newCap) else { return false }
            base = nb
            capacity = newCap
        }
        (base! + count).copyMemory(from: p, byteCount: n)
        count += n
        return true
    }

    mutating func release() {
        free(base)
        self = SideBuffer()
    }
}

/// A tracked Parse sent to a server and not answered yet: the statement, and the client's name for it
/// when the Parse was the client's own (nil when pgswift injected it before a Bind or Describe).
struct ParseInFlight {
    let id: Int32
    let clientName: String?
}

/// What `largeExtended` did with a message larger than the buffer.
enum LargeStep {
    /// Its head is not all buffered yet.
    case needMore
    /// The client was failed.
    case stop
    /// Handled: the client's input (start, scan, partial, partialMode) says what happens to the rest.
    case handled
    /// Nothing to rewrite: it streams through like any message, adding this expected answer.
    case stream(ExpectedAnswer)
}

extension Worker {
    // MARK: The response queue

    @inline(__always)
    func pushAnswer(_ si: Int32, _ s: ExpectedAnswer) -> Bool {
        if servers[si].answers == nil {
            servers[si].answers = .allocate(capacity: Int(ExpectedAnswer.capacity))
        }
        if servers[si].answerCount >= ExpectedAnswer.capacity { return false }
        let i = (servers[si].answerHead &+ servers[si].answerCount) & ExpectedAnswer.ringMask
        servers[si].answers![Int(i)] = s
        servers[si].answerCount &+= 1
        return true
    }

    @inline(__always)
    func headAnswer(_ si: Int32) -> ExpectedAnswer? {
        guard servers[si].answerCount > 0 else { return nil }
        return servers[si].answers![Int(servers[si].answerHead)]
    }

    /// One message that awaited a ReadyForQuery (Query, FunctionCall, Sync) got it, or never will.
    @inline(__always)
    func syncAnswered(_ si: Int32) {
        if servers[si].pendingSyncs > 0 { servers[si].pendingSyncs &-= 1 }
    }

    @inline(__always)
    func popAnswer(_ si: Int32) {
        servers[si].answerHead = (servers[si].answerHead &+ 1) & ExpectedAnswer.ringMask
        servers[si].answerCount &-= 1
    }

    /// A COPY FROM STDIN began (CopyInResponse; `copyIn`): the head of the queue is the Query or
    /// Execute running it.
    func copyStarted(_ si: Int32) {
        popStaleCopyEnds(si)
        servers[si].copyIn = true
    }

    /// CopyDone/CopyFail entries at the head: sent while no COPY ran, ignored by the server.
    @inline(never)
    func popStaleCopyEnds(_ si: Int32) {
        while let h = headAnswer(si), h.kind == ExpectedAnswer.copyEnd { popAnswer(si) }
    }

    /// The COPY ended (CommandComplete, or an ErrorResponse: `failed`). It read the client's messages
    /// up to its CopyDone/CopyFail, so the Syncs among them got no ReadyForQuery: their entries go,
    /// from behind the head (the COPY's Query or Execute), with the CopyDone/CopyFail. When the COPY
    /// failed on a message it did not expect (08P01, `consumed`), that message was read and dropped.
    ///
    /// A COPY that failed on its data may have stopped reading before a Sync sent after CopyData: that
    /// Sync then gets a ReadyForQuery after all, or not, and nothing the server sends tells which. The
    /// count of answers is then unknown: the server stays with its client (`unreliable`) and is
    /// closed when the client leaves, so no answer can ever reach another client.
    func copyEnded(_ si: Int32, consumed: Bool, failed dataError: Bool) {
        servers[si].copyIn = false
        let count = Int(servers[si].answerCount)
        guard count > 1 else { return }
        let cap = Int(ExpectedAnswer.capacity)
        let head = Int(servers[si].answerHead)
        var failed: [Int32] = []
        // Compacted in place behind the head: what the COPY read goes, the rest keeps its order.
        // Answers pgswift gives itself (an error for a Bind it refused amid the COPY) are not the
        // server's: they stay, and the Syncs behind them were read by the COPY all the same.
        var w = 1
        var done = false
        for r in 1..<count {
            let e = servers[si].answers![(head &+ r) % cap]
            if !done && !e.isSynthetic {
                let k = e.kind
                // A malformed Flush read by the COPY is ignored like a Sync (and has no answer to lose).
                if k == ExpectedAnswer.sync || k == ExpectedAnswer.badFlush {
                    if dataError && !consumed && e.isAfterCopyData { markUnreliable(si) }
                    if k == ExpectedAnswer.sync { syncAnswered(si) }
                    continue
                }
                done = true
                if k == ExpectedAnswer.copyEnd { continue }
                if consumed {
                    // The message the COPY did not expect: read and dropped.
                    if k == ExpectedAnswer.query || k == ExpectedAnswer.functionCall {
                        syncAnswered(si)
                    } else {
                        unanswered(si, k, &failed)
                    }
                    continue
                }
            }
            servers[si].answers![(head &+ w) % cap] = e
            w &+= 1
        }
        servers[si].answerCount = Int32(w)
    }

    /// The answers this server owes can no longer be counted (`copyEnded`): it is never given back to
    /// the pool; the client keeps it until it leaves, and then it is closed.
    @inline(never)
    func markUnreliable(_ si: Int32) {
        guard !servers[si].unreliable else { return }
        servers[si].unreliable = true
        log.warning("S-\(servers[si].id): COPY failed after a Sync sent amid its data: the server's answers "
            + "cannot be counted; it stays with its client and is closed when the client leaves")
    }

    /// The server skips every message up to the next Sync: the answers owed for them are popped
    /// unanswered (a Query or FunctionCall among them gets no ReadyForQuery either), and that Sync's
    /// own too when `throughSync` (its ReadyForQuery came).
    func skippedToSync(_ si: Int32, throughSync: Bool) {
        var failed: [Int32] = []
        while let h = headAnswer(si) {
            let k = h.kind
            if k == ExpectedAnswer.sync {
                if throughSync { popAnswer(si) }
                return
            }
            popAnswer(si)
            if k == ExpectedAnswer.query || k == ExpectedAnswer.functionCall { syncAnswered(si) }
            unanswered(si, k, &failed)
        }
    }

    /// Writes synthesized answers that are due (at the head of the queue) to the client. They may go
    /// out only when no server bytes are waiting ahead of them. Returns false when blocked by those.
    @discardableResult
    func emitDueSynthetics(_ si: Int32) -> Bool {
        // While the server skips to a Sync, what pgswift would have answered is skipped too.
        if servers[si].skipping { return true }
        while let head = headAnswer(si), head.isSynthetic {
            if servers[si].io.input.hasUnsent { return false }
            let ci = servers[si].client
            popAnswer(si)
            guard ci >= 0 else {
                // Nobody to tell: the error queued for this answer goes with it.
                if head.kind == ExpectedAnswer.synthError, let sinfo = servers[si].info, !sinfo.pendingErrors.isEmpty {
                    sinfo.pendingErrors.removeFirst()
                }
                continue
            }
            scratch.clear()
            switch head.kind {
            case ExpectedAnswer.synthParseComplete: scratch.appendEmptyMessage(BackendType.parseComplete)
            case ExpectedAnswer.synthCloseComplete: scratch.appendEmptyMessage(BackendType.closeComplete)
            default:
                let e = servers[si].info?.pendingErrors.isEmpty == false ? servers[si].info!.pendingErrors.removeFirst()
                    : ErrorFields(severity: "ERROR", code: SQLState.protocolViolation, message: "protocol error")
                Backend.errorResponse(into: &scratch, e)
            }
            clients[ci].io.out.append(scratch)
        }
        return true
    }

    /// A server message on a tracked link: advances the queue. Returns false if the client must not see it.
    /// The caller lets DataRow, the commonest message, through without a call (it answers nothing).
    @inline(__always)
    func serverAnswer(_ si: Int32, _ type: UInt8) -> Bool {
        guard let head = headAnswer(si) else { return true }
        let kind = head.kind
        switch type {
        case BackendType.readyForQuery:
            if servers[si].skipping {
                // The Sync that ended the server's skipping: nothing forwarded before it is answered.
                servers[si].skipping = false
                skippedToSync(si, throughSync: true)
                return true
            }
            while let h = headAnswer(si) {
                let k = h.kind
                popAnswer(si)
                if k == ExpectedAnswer.parseTracked || k == ExpectedAnswer.closeTracked || k == ExpectedAnswer.synthError {
                    unansweredAtReady(si, k)
                }
                if k == ExpectedAnswer.sync || k == ExpectedAnswer.query || k == ExpectedAnswer.functionCall { break }
            }
            return true
        case BackendType.errorResponse:
            // Only an extended-protocol message's error makes the server skip to the next Sync.
            if !kind.isExtendedMessage { return true }
            // An unnamed statement that failed to parse does not exist: nothing to hold the link for.
            if kind == ExpectedAnswer.parse { servers[si].unnamedParsed = false }
            // The server skips everything up to the next Sync: so do the answers we owe, for what was
            // forwarded already and (`skipping`, until its ReadyForQuery) for what is forwarded next.
            servers[si].skipping = true
            skippedToSync(si, throughSync: false)
            return true
        case BackendType.parseComplete, BackendType.bindComplete, BackendType.closeComplete:
            guard kind.isCompletedBy(type) else { return true }
            if kind == ExpectedAnswer.parseTracked || kind == ExpectedAnswer.closeTracked { trackedCompleted(si, kind) }
            popAnswer(si)
            return !head.isSwallowed
        case BackendType.rowDescription, BackendType.noData:
            if kind == ExpectedAnswer.describeStatement || kind == ExpectedAnswer.describePortal { popAnswer(si) }
            return true
        case BackendType.commandComplete, BackendType.emptyQueryResponse, BackendType.portalSuspended:
            if kind == ExpectedAnswer.execute { popAnswer(si) }
            return true
        default:
            return true
        }
    }

    /// A ParseComplete or CloseComplete of a statement pgswift tracks arrived: it is no longer in
    /// flight. Off the common path (a class reference: retain and release).
    @inline(never)
    func trackedCompleted(_ si: Int32, _ kind: ExpectedAnswer) {
        guard let sinfo = servers[si].info else { return }
        if kind == ExpectedAnswer.parseTracked {
            if !sinfo.parsesInFlight.isEmpty { sinfo.parsesInFlight.removeFirst() }
        } else if !sinfo.closesInFlight.isEmpty {
            sinfo.closesInFlight.removeFirst()
        }
    }

    /// An answer popped at ReadyForQuery that never came (an error made the server skip it).
    /// Abnormal: kept off the common path.
    @inline(never)
    func unansweredAtReady(_ si: Int32, _ kind: ExpectedAnswer) {
        var failed: [Int32] = []
        unanswered(si, kind, &failed)
    }

    // MARK: Client messages

    /// The expected answer a passed-through message adds (`none`: none).
    @inline(__always)
    func answerFor(_ type: UInt8, _ body: UnsafeRawBufferPointer?) -> ExpectedAnswer {
        switch type {
        case FrontendType.query: return ExpectedAnswer.query
        case FrontendType.sync: return ExpectedAnswer.sync
        case FrontendType.functionCall: return ExpectedAnswer.functionCall
        case FrontendType.parse: return ExpectedAnswer.parse
        case FrontendType.bind: return ExpectedAnswer.bind
        case FrontendType.execute: return ExpectedAnswer.execute
        case FrontendType.close: return ExpectedAnswer.close
        case FrontendType.copyDone, FrontendType.copyFail: return ExpectedAnswer.copyEnd
        case FrontendType.describe:
            if let b = body, b.count > 0, b[0] == UInt8(ascii: "P") { return ExpectedAnswer.describePortal }
            return ExpectedAnswer.describeStatement
        default: return .none
        }
    }

    /// Does this Parse/Bind/Describe/Close name a statement (and so need rewriting)?
    @inline(__always)
    func namesStatement(_ type: UInt8, _ body: UnsafeRawBufferPointer) -> Bool {
        guard body.count > 1 else { return false }
        switch type {
        case FrontendType.parse:
            return body[0] != 0
        case FrontendType.bind:
            guard let portalEnd = body.firstIndex(of: 0), portalEnd + 1 < body.count else { return false }
            return body[portalEnd + 1] != 0
        case FrontendType.describe, FrontendType.close:
            return body[0] == UInt8(ascii: "S") && body[1] != 0
        default:
            return false
        }
    }

    /// Where the NUL-terminated string at `from` ends (the index after its NUL), without making it.
    @inline(__always)
    private func cStringEnd(_ body: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard from < body.count, let end = body[from...].firstIndex(of: 0) else { return nil }
        return end + 1
    }

    private func cString(_ body: UnsafeRawBufferPointer, from: Int) -> (String, Int)? {
        guard let next = cStringEnd(body, from: from) else { return nil }
        return (String(decoding: UnsafeRawBufferPointer(rebasing: body[from..<(next - 1)]), as: UTF8.self), next)
    }

    /// A Parse/Bind/Describe/Close larger than the I/O buffer on a tracked link, first in the client's
    /// unsent bytes (`input.scan == input.start`, `avail` bytes of it buffered). The statement name is
    /// at the start of Bind (after the portal name), Describe and Close, so only that head is read: an
    /// unnamed one streams through, a named Bind gets its head rewritten and its parameters stream
    /// after it (or are dropped if the statement is unknown). A named Parse is needed whole to be
    /// interned: it is collected in a side buffer (`largeParse`), then handled as if it had fitted.
    func largeExtended(_ ci: Int32, _ si: Int32, _ type: UInt8, avail: Int, total: Int) -> LargeStep {
        let at = clients[ci].io.input.scan
        let end = clients[ci].io.input.end
        let head = UnsafeRawBufferPointer(start: clients[ci].io.input.base! + (at &+ 5), count: avail &- 5)
        // No more of it can be buffered once it fills the buffer from its first byte.
        let full = avail >= buffers.size
        let rest = total &- avail
        switch type {
        case FrontendType.parse:
            guard head.count >= 1 else { return .needMore }
            if head[0] == 0 { return .stream(ExpectedAnswer.parse) }
            guard clients[ci].largeParse.append(head.baseAddress!, head.count) else {
                failClient(ci, code: SQLState.outOfMemory, message: "out of memory")
                return .stop
            }
            servers[si].unsynced = true
            clients[ci].io.input.start = end
            clients[ci].io.input.scan = end
            clients[ci].io.input.partial = rest
            clients[ci].partialMode = .collect
            return .handled
        case FrontendType.bind:
            guard let portalEnd = head.firstIndex(of: 0), portalEnd + 1 < head.count,
                  let stmtEnd = head[(portalEnd + 1)...].firstIndex(of: 0) else {
                if !full { return .needMore }
                failClient(ci, code: SQLState.protocolViolation,
                           message: "Bind portal and statement names longer than \(buffers.size) bytes")
                return .stop
            }
            if stmtEnd == portalEnd + 1 { return .stream(ExpectedAnswer.bind) }
            let names = stmtEnd + 1
            let wasUnsynced = servers[si].unsynced
            servers[si].unsynced = true
            clients[ci].io.input.start = at &+ 5 &+ names
            clients[ci].io.input.scan = end
            clients[ci].io.input.partial = rest
            clients[ci].partialMode = .forward
            if !rewritePrepared(ci, si, type, UnsafeRawBufferPointer(rebasing: head[0..<names]),
                                following: total &- 5 &- names, wasUnsynced: wasUnsynced) { return .stop }
            if clients[ci].skipUntilSync {
                // Unknown statement: answered with an error, the parameters go nowhere.
                clients[ci].io.input.start = end
                clients[ci].partialMode = .drop
            }
            return .handled
        default:  // Describe, Close: a kind byte and a name, nothing after it
            guard head.count >= 2 else { return .needMore }
            if head[0] == UInt8(ascii: "S") && head[1] != 0 {
                failClient(ci, code: SQLState.protocolViolation, message: "malformed extended-protocol message")
                return .stop
            }
            return .stream(answerFor(type, head))
        }
    }

    /// The last byte of a collected named Parse arrived: intern and forward it as if it had fitted.
    @inline(never)  // error path: kept out of the forward loops it is called from
    func finishLargeParse(_ ci: Int32) -> Bool {
        var side = clients[ci].largeParse
        clients[ci].largeParse = SideBuffer()
        defer { side.release() }
        let si = clients[ci].server
        guard si >= 0 else {
            failClient(ci, code: SQLState.protocolViolation, message: "server link lost during a large Parse")
            return false
        }
        return rewritePrepared(ci, si, FrontendType.parse, side.bytes)
    }

    /// Handles a named Parse/Bind/Describe/Close: writes what the server must see into its out queue and
    /// records what the client must get back. Returns false when the client was failed. For a Bind whose
    /// parameters stream after it, `body` is its head (portal and statement names) and `following` the
    /// bytes the caller forwards after the rewritten head. `wasUnsynced`: the server's `unsynced` before
    /// this message (the caller set it): a client refused here sent nothing of it to the server, so the
    /// server leaves as clean as it was (back to the pool, not closed and cancelled).
    func rewritePrepared(_ ci: Int32, _ si: Int32, _ type: UInt8, _ body: UnsafeRawBufferPointer,
                         following: Int = 0, wasUnsynced: Bool = true) -> Bool {
        // No local strong reference to the client's info: binding one costs a retain and a release
        // per Bind. Each use below reads it through the table (the guard holds for the whole call).
        guard clients[ci].info != nil else { return false }
        scratch.clear()
        var ok = true
        switch type {
        case FrontendType.parse:
            guard let (name, restStart) = cString(body, from: 0) else { return protocolFailure(ci) }
            if clients[ci].info!.prepared?[name] != nil {
                // PgBouncer's log line and, by default, its disconnect.
                log.warning("C-\(clients[ci].id): prepared statement '\(name)' was already prepared")
                if config.preparedStatementErrors == .disconnect {
                    servers[si].unsynced = wasUnsynced  // nothing of this Parse reached the server
                    failClient(ci, code: SQLState.protocolViolation, message: "prepared statement name is already in use")
                    return false
                }
                ok = synthesizeError(ci, si, ErrorFields(severity: "ERROR", code: SQLState.duplicatePreparedStatement,
                                                         message: "prepared statement \"\(name)\" already exists"))
                break
            }
            let id = statements.intern(UnsafeRawBufferPointer(rebasing: body[restStart...]))
            clients[ci].info!.preparedNames()[name] = id
            pools[Int(servers[si].pool)].totals.clientParseCount &+= 1  // stats hook (SHOW STATS)
            if statements.sweepDue { sweepStatements() }
            if servers[si].info?.touchPrepared(id, tick: nextUseTick()) == true {
                ok = pushAnswer(si, ExpectedAnswer.synthParseComplete)
            } else {
                ok = injectParse(si, id, swallow: false, clientName: name)
            }
        case FrontendType.bind:
            guard let stmtStart = cStringEnd(body, from: 0),
                  let restStart = cStringEnd(body, from: stmtStart) else { return protocolFailure(ci) }
            // Counted whether the name is known or not, as PgBouncer counts it.
            pools[Int(servers[si].pool)].totals.bindCount &+= 1  // stats hook (SHOW STATS)
            let nameBytes = UnsafeRawBufferPointer(rebasing: body[stmtStart..<(restStart - 1)])
            guard let id = clients[ci].info!.prepared?.lookup(nameBytes) else {
                let name = String(decoding: nameBytes, as: UTF8.self)
                guard let answered = unknownStatement(ci, si, name, wasUnsynced: wasUnsynced) else { return false }
                ok = answered
                break
            }
            ok = ensurePrepared(si, id)
            let inline = UnsafeRawBufferPointer(rebasing: body[restStart...])
            scratch.appendUInt8(FrontendType.bind)
            scratch.appendInt32(Int32(truncatingIfNeeded: 4 &+ stmtStart &+ StatementRegistry.serverNameLength(id) &+ 1
                                      &+ inline.count &+ following))
            scratch.appendBytes(UnsafeRawBufferPointer(rebasing: body[0..<stmtStart]))  // portal name and NUL
            StatementRegistry.appendServerName(id, to: &scratch)
            scratch.appendBytes(inline)
            ok = ok && pushAnswer(si, ExpectedAnswer.bind)
        case FrontendType.describe:
            guard let (name, _) = cString(body, from: 1) else { return protocolFailure(ci) }
            guard let id = clients[ci].info!.prepared?[name] else {
                guard let answered = unknownStatement(ci, si, name, wasUnsynced: wasUnsynced) else { return false }
                ok = answered
                break
            }
            ok = ensurePrepared(si, id)
            Frontend.describe(into: &scratch, kind: UInt8(ascii: "S"), name: StatementRegistry.serverName(id))
            ok = ok && pushAnswer(si, ExpectedAnswer.describeStatement)
        case FrontendType.close:
            guard let (name, _) = cString(body, from: 1) else { return protocolFailure(ci) }
            // Only the client's mapping goes; the server keeps the statement for whoever needs it next.
            clients[ci].info!.prepared?.removeValue(forKey: name)
            ok = pushAnswer(si, ExpectedAnswer.synthCloseComplete)
        default:
            return true
        }
        if !scratch.isEmpty { servers[si].io.out.append(scratch) }
        if !ok {
            failClient(ci, code: SQLState.programLimitExceeded, message: "too many pipelined messages")
            return false
        }
        if emitDueSynthetics(si) { flushClient(ci) }
        return clients[ci].state != .free && clients[ci].state != .closing
    }

    /// A Bind or Describe names a statement the client has not prepared: PgBouncer's log line, then by
    /// default its disconnect (nil: the client was failed); with `prepared_statement_errors =
    /// postgresql`, PostgreSQL's error, answered in its turn (false: the queue of answers is full).
    private func unknownStatement(_ ci: Int32, _ si: Int32, _ name: String, wasUnsynced: Bool) -> Bool? {
        log.warning("C-\(clients[ci].id): prepared statement '\(name)' not found")
        guard config.preparedStatementErrors == .disconnect else {
            return synthesizeError(ci, si, ErrorFields(severity: "ERROR", code: SQLState.invalidSQLStatementName,
                                                       message: "prepared statement \"\(name)\" does not exist"))
        }
        servers[si].unsynced = wasUnsynced  // nothing of this message reached the server
        failClient(ci, code: SQLState.protocolViolation, message: "prepared statement did not exist")
        return nil
    }

    private func protocolFailure(_ ci: Int32) -> Bool {
        failClient(ci, code: SQLState.protocolViolation, message: "malformed extended-protocol message")
        return false
    }

    /// An error the server would have raised: queued in order, then the client's messages are skipped
    /// up to its Sync, as PostgreSQL does.
    private func synthesizeError(_ ci: Int32, _ si: Int32, _ e: ErrorFields) -> Bool {
        servers[si].info?.pendingErrors.append(e)
        clients[ci].skipUntilSync = true
        return pushAnswer(si, ExpectedAnswer.synthError)
    }

    /// Makes sure the server has statement `id`, injecting a Parse whose ParseComplete is swallowed.
    private func ensurePrepared(_ si: Int32, _ id: Int32) -> Bool {
        if servers[si].info?.touchPrepared(id, tick: nextUseTick()) == true { return true }
        return injectParse(si, id, swallow: true, clientName: nil)
    }

    private func injectParse(_ si: Int32, _ id: Int32, swallow: Bool, clientName: String?) -> Bool {
        guard let sinfo = servers[si].info else { return false }
        // Keep each server's cache within max_prepared_statements: evict the least recently used, as
        // many as it takes (a RELOAD or SET may have lowered the limit below what the server holds; as
        // in PgBouncer, the cache shrinks at its next insert).
        while sinfo.prepared.count >= max(config.maxPreparedStatements, 1),
              let victim = sinfo.prepared.min(by: { $0.value < $1.value })?.key {
            sinfo.prepared.removeValue(forKey: victim)
            Frontend.close(into: &scratch, kind: UInt8(ascii: "S"), name: StatementRegistry.serverName(victim))
            if !pushAnswer(si, ExpectedAnswer.closeTracked.swallowed) { return false }
            sinfo.closesInFlight.append(victim)
        }
        pools[Int(servers[si].pool)].totals.serverParseCount &+= 1  // stats hook (SHOW STATS)
        let lo = scratch.beginMessage(FrontendType.parse)
        scratch.appendCString(StatementRegistry.serverName(id))
        statements.body(id)?.withUnsafeBytes { scratch.appendBytes($0) }
        scratch.endMessage(lo)
        sinfo.prepared[id] = nextUseTick()
        guard pushAnswer(si, swallow ? ExpectedAnswer.parseTracked.swallowed : ExpectedAnswer.parseTracked) else { return false }
        sinfo.parsesInFlight.append(ParseInFlight(id: id, clientName: clientName))
        return true
    }

    /// An entry popped without its own answer (an error, or the ReadyForQuery, came first): the server
    /// failed or skipped that message. `failed` gathers the statements whose Parse failed in this pass.
    private func unanswered(_ si: Int32, _ kind: ExpectedAnswer, _ failed: inout [Int32]) {
        guard kind == ExpectedAnswer.parseTracked || kind == ExpectedAnswer.closeTracked || kind == ExpectedAnswer.synthError,
              let sinfo = servers[si].info else { return }
        if kind == ExpectedAnswer.synthError {
            // An error pgswift owed but never sent (the server's own error came first and ended the
            // batch): its text goes too, or the next synthesized error would carry this one's.
            if !sinfo.pendingErrors.isEmpty { sinfo.pendingErrors.removeFirst() }
            return
        }
        if kind == ExpectedAnswer.parseTracked {
            // The statement is not on that server, and the name the client gave it in that Parse is
            // not defined either (as in PostgreSQL, where a failed Parse creates nothing).
            guard !sinfo.parsesInFlight.isEmpty else { return }
            let p = sinfo.parsesInFlight.removeFirst()
            sinfo.prepared.removeValue(forKey: p.id)
            failed.append(p.id)
            let ci = servers[si].client
            if let name = p.clientName, ci >= 0, let cinfo = clients[ci].info, cinfo.prepared?[name] == p.id {
                cinfo.prepared?.removeValue(forKey: name)
            }
        } else {
            // An eviction Close skipped: the statement is still there, unless its own Parse just failed.
            guard !sinfo.closesInFlight.isEmpty else { return }
            let id = sinfo.closesInFlight.removeFirst()
            if sinfo.prepared[id] == nil && !failed.contains(id) { sinfo.prepared[id] = nextUseTick() }
        }
    }

    func nextUseTick() -> UInt64 {
        hot.pointee.useTick &+= 1
        return hot.pointee.useTick
    }
}
