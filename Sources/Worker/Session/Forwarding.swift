// The data path: read until EAGAIN, scan message headers, forward bytes as read, backpressure by
// not reading a side whose peer cannot take more. Only a few message types are looked into.
import Shared
import Glibc

/// What scanServer reads from `HotState` once per call (it changes only at reload or between calls):
/// off, each test below is a register test.
struct ServerScanFlags {
    /// query_stats: statements end at CommandComplete and friends (QueryStats.swift).
    let queryTracking: Bool
    /// listen_mode = relay: a pooled server's own notifications are dropped (the listening connection
    /// delivers them).
    let listenRelay: Bool
    /// Some client's LISTEN is in flight: errors are read (ListenRelay.swift).
    let listenPending: Bool
    /// Some pool routes reads and writes (Routing.swift).
    let routing: Bool

    @inline(__always)
    init(_ hot: HotState) {
        queryTracking = hot.queryTracking
        listenRelay = hot.listenRelay
        listenPending = hot.listenPending > 0
        routing = hot.routing
    }
}

/// The client message types the LISTEN relay and carried session state act on (Query, Parse, Bind,
/// Execute), one bit per type's low six bits: without query statistics the other types (Describe,
/// Sync, CopyData...) skip `clientMessageHooks` with one test. A prefilter: the hooks test the type
/// exactly, so an unknown byte sharing a bit only costs their tests.
enum SessionHookTypes {
    @inline(__always)
    static func bit(_ type: UInt8) -> UInt64 { 1 << UInt64(type & 63) }

    @inline(__always)
    static func contains(_ type: UInt8) -> Bool {
        let bits = bit(FrontendType.query) | bit(FrontendType.parse) | bit(FrontendType.bind) | bit(FrontendType.execute)
        return bits & bit(type) != 0
    }
}

/// What a scanner helper tells the scanning loop.
enum ScanStep {
    /// Go on with this message (count it, inspect it, forward it).
    case handle
    /// The message was dealt with: scan the next.
    case next
    /// Return this at once (the position is already written back).
    case done(ScanResult)
}

enum ScanResult {
    /// Scanned what could be scanned; go on (forward, then scan again).
    case progress
    /// The unscanned tail is an incomplete message: read more.
    case needMore
    /// The pump must stop (waiting for a server, connection closed, released).
    case stop
}

/// What becomes of the rest of a client message larger than what is buffered (`IOBuf.partial`).
enum PartialMode: UInt8 {
    /// Forwarded to the server as it arrives (big rows, COPY data, large parameters).
    case forward
    /// Read and thrown away: a message skipped up to Sync, or one pgswift answered itself.
    case drop
    /// Copied into the client's `largeParse` side buffer: a named Parse too big for the I/O buffer.
    case collect
}

enum ReadOutcome {
    case data
    case wouldBlock
    /// The buffer has no room: the peer must drain it first.
    case full
    case closed
}

extension Worker {
    // MARK: Reading and writing (Endpoint.swift does the I/O; here what differs per side)

    @inline(__always)
    func readInto(client ci: Int32) -> ReadOutcome {
        var n = 0
        let r = clients[ci].io.read(buffers, bytes: &n)
        clients[ci].statBytesIn &+= UInt64(n)  // stats hook
        if r == .closed && clients[ci].io.tls != nil { tlsReadFailed(client: ci) }
        return r
    }

    @inline(__always)
    func readInto(server si: Int32) -> ReadOutcome {
        var n = 0
        let r = servers[si].io.read(buffers, bytes: &n)
        if r == .closed && servers[si].io.tls != nil { tlsReadFailed(server: si) }
        return r
    }

    @inline(never)
    private func tlsReadFailed(client ci: Int32) {
        if let reason = clients[ci].io.tlsReadFailure { log.warning("C-\(clients[ci].id): TLS read failed: \(reason)") }
    }

    @inline(never)
    private func tlsReadFailed(server si: Int32) {
        if let reason = servers[si].io.tlsReadFailure { log.warning("S-\(servers[si].id): TLS read failed: \(reason)") }
    }

    /// Adds a server socket to epoll, once for its life (edge-triggered, both directions); on failure the
    /// server is closed and false returned.
    func watchServer(_ si: Int32) -> Bool {
        do {
            try epoll.add(servers[si].io.fd, events: [.input, .output, .readHangup, .edgeTriggered],
                          data: WorkerToken(.server, generation: servers[si].io.gen, index: si).raw)
            return true
        } catch {
            log.error("epoll add for S-\(servers[si].id): \(error)")
            closeServer(si, reason: "epoll failure")
            return false
        }
    }

    /// Reads and drops what a server sends while its socket is readable (a cancel connection, a server
    /// being retired). True once the server has closed.
    func discardServerInput(_ si: Int32) -> Bool {
        while servers[si].io.readable {
            switch readInto(server: si) {
            case .data, .full:
                servers[si].io.discardInput(buffers)
            case .wouldBlock:
                return false
            case .closed:
                return true
            }
        }
        return false
    }

    func queueClient(_ ci: Int32, byte: UInt8) {
        var b = byte
        withUnsafeBytes(of: &b) { clients[ci].io.out.append($0) }
    }

    /// Writes pending pgswift-generated bytes to the client. Returns true when nothing is left; a
    /// closing client is freed once its last bytes (TLS ciphertext included) are out.
    @discardableResult
    func flushClient(_ ci: Int32) -> Bool {
        switch clients[ci].io.flushOut() {
        case .done:
            break
        case .blocked:
            return false
        case .failed(let error):
            closeClient(ci, reason: "write to client failed: \(error.errno)", notify: false)
            return false
        }
        if clients[ci].state == .closing {
            if clients[ci].io.tlsPending {
                clients[ci].io.writable = false
                return false
            }
            freeClient(ci)
            return false
        }
        return true
    }

    @discardableResult
    func flushServer(_ si: Int32) -> Bool {
        switch servers[si].io.flushOut() {
        case .done:
            return true
        case .blocked:
            return false
        case .failed(let error):
            serverBroken(si, reason: "write to server failed: \(error.errno)")
            return false
        }
    }

    // MARK: Client → server

    /// Pumps a logged-in client's bytes to its server: forward what is scanned, scan what is read,
    /// read until EAGAIN. Stops when the server cannot take more or the client waits for a server.
    func clientData(_ ci: Int32) {
        while true {
            if clients[ci].io.input.hasUnsent {
                let si = clients[ci].server
                guard si >= 0, servers[si].state == .active else { return }
                let start = clients[ci].io.input.start
                let count = clients[ci].io.input.scan - start
                if !servers[si].io.out.isEmpty {
                    // What pgswift queued (a rewritten Bind) goes first; on a plain socket, in the same
                    // system call as the client's bytes after it.
                    if servers[si].io.tls != nil {
                        if !flushServer(si) { return }
                    } else {
                        do {
                            let n = try servers[si].io.sendQueued(then: clients[ci].io.input.base! + start, count)
                            clients[ci].io.input.start = start &+ n
                            if !servers[si].io.writable { return }
                        } catch {
                            serverBroken(si, reason: "write to server failed: \(error.errno)")
                            return
                        }
                        clients[ci].io.releaseIfEmpty(buffers)
                        continue
                    }
                }
                do {
                    switch try servers[si].io.send(clients[ci].io.input.base! + start, count) {
                    case .processed(let n):
                        clients[ci].io.input.start = start &+ n
                        if n < count {
                            servers[si].io.writable = false
                            return
                        }
                    case .wouldBlock:
                        servers[si].io.writable = false
                        return
                    }
                } catch {
                    serverBroken(si, reason: "write to server failed: \(error.errno)")
                    return
                }
                clients[ci].io.releaseIfEmpty(buffers)
                continue
            }
            if clients[ci].io.input.hasUnscanned {
                switch scanClient(ci) {
                case .stop: return
                case .progress: if clients[ci].io.input.hasUnsent { continue }
                case .needMore: break
                }
            }
            // Messages pgswift rewrote or injected may be all there is to send.
            let si = clients[ci].server
            if si >= 0 && !servers[si].io.out.isEmpty && servers[si].state == .active && !flushServer(si) { return }
            if !clients[ci].io.readable { return }
            switch readInto(client: ci) {
            case .data: continue
            case .wouldBlock, .full: return
            case .closed:
                closeClient(ci, reason: "client unexpected eof", notify: false)  // PgBouncer's words
                return
            }
        }
    }

    /// Walks complete message headers of client input. Links a server before the first message of a
    /// transaction. Returns false when the pump must stop.
    @inline(__always)
    func scanClient(_ ci: Int32) -> ScanResult {
        let base = clients[ci].io.input.base!
        var scan = clients[ci].io.input.scan
        let end = clients[ci].io.input.end
        var partial = clients[ci].io.input.partial
        let queryTracking = hot.pointee.queryTracking  // changes only at reload
        let listenFollow = hot.pointee.listenFollow  // changes only at reload
        defer {
            if clients[ci].state != .free {
                clients[ci].io.input.scan = scan
                clients[ci].io.input.partial = partial
            }
        }
        while scan < end {
            if partial > 0 {
                if let r = clientMessageTail(ci, base, &scan, &partial, end) { return r }
                continue
            }
            let type: UInt8, len: Int
            switch frameHeader(base + scan, available: end &- scan, .forwarded) {
            case .incomplete:
                return scan > clients[ci].io.input.start ? .progress : .needMore
            case .header(let h):
                (type, len) = (h.type, h.length)
            case .invalid(let h):
                clients[ci].io.input.scan = scan
                failClient(ci, code: SQLState.protocolViolation, message: h.length < 4 ? "invalid message length \(h.length)"
                           : "message too long (\(h.length) bytes; max_packet_size is \(maxPacket))")
                return .stop
            }
            if type == FrontendType.terminate {
                // Forward what came before, then leave. Terminate itself never reaches a pooled server.
                if scan > clients[ci].io.input.start { return .progress }
                clients[ci].io.input.scan = scan
                closeClient(ci, reason: "client close request", notify: false)  // PgBouncer's words
                return .stop
            }
            var si = clients[ci].server
            if si < 0 {
                clients[ci].io.input.scan = scan
                clients[ci].io.input.partial = partial
                if scan > clients[ci].io.input.start { return .progress }
                switch linkForMessage(ci, type, base + scan, len: len, avail: end &- scan) {
                case .handle: si = clients[ci].server
                case .next:  // answered and consumed by routing (no `&scan`: the loop's locals stay in registers)
                    scan = clients[ci].io.input.scan
                    partial = clients[ci].io.input.partial
                    continue
                case .done(let r): return r
                }
            }
            let total = len &+ 1
            let avail = end &- scan
            if queryTracking || SessionHookTypes.contains(type),
               let r = clientMessageHooks(ci, si, type, base + scan, len: len, avail: avail,
                                          listenFollow: listenFollow, queryTracking: queryTracking) { return r }
            if servers[si].tracking {
                switch trackClientMessage(ci, si, type, len, base, &scan, &partial, end) {
                case .handle: break
                case .next: continue
                case .done(let r): return r
                }
            }
            if !countClientMessage(si, type, base + scan, avail: avail) {
                clients[ci].io.input.scan = scan
                unknownClientMessage(ci, type)
                return .stop
            }
            if total <= avail {
                scan &+= total
            } else {
                partial = total &- avail
                scan = end
            }
        }
        return .progress
    }

    /// The first message of a transaction, with nothing unsent before it: garbage is refused (no server
    /// is linked or launched for it), read/write routing may read it whole or answer it itself
    /// (Routing.swift), then a server is linked. `.handle`: linked; `.next`: routing consumed it.
    @inline(__always)
    private func linkForMessage(_ ci: Int32, _ type: UInt8, _ message: UnsafeMutableRawPointer, len: Int,
                                avail: Int) -> ScanStep {
        if !knownClientMessage(type) {
            unknownClientMessage(ci, type)
            return .done(.stop)
        }
        if hot.pointee.routing {
            switch routeTransaction(ci, type, message, total: len &+ 1, avail: avail) {
            case .handle: break
            case .next: return .next
            case .done(let r): return .done(r)
            }
        }
        return acquireServer(ci) ? .handle : .done(.stop)
    }

    /// The hooks a client message meets before it is forwarded, in this order: the LISTEN relay
    /// (ListenRelay.swift), query statistics (QueryStats.swift) and carried session state
    /// (SessionHooks.swift). `message` is the message's first byte, `avail` what is buffered of it.
    /// nil: forward it; otherwise what `scanClient` returns now (wait for the rest, forward what
    /// precedes it first, or stop).
    @inline(__always)
    private func clientMessageHooks(_ ci: Int32, _ si: Int32, _ type: UInt8, _ message: UnsafeMutableRawPointer, len: Int,
                                    avail: Int, listenFollow: Bool, queryTracking: Bool) -> ScanResult? {
        let total = len &+ 1
        let body = message + 5
        // A Query or Parse whose text holds no keyword of the LISTEN relay's or of carried session
        // state's (`plainText`: one pass for both) needs neither hook.
        let hooked = (type == FrontendType.query || type == FrontendType.parse) && (listenFollow || servers[si].watchTags)
            && !(total <= avail && (type == FrontendType.query || !servers[si].sessionExtended)
                 && plainText(type, body, len &- 4))
        if hooked && listenFollow {
            // LISTEN/UNLISTEN/DISCARD relayed: a first-keyword test, no lexing.
            switch listenScan(ci, si, type, body, min(len &- 4, avail &- 5), complete: total <= avail,
                              first: isFirstUnsent(ci, message)) {
            case .go: break
            case .flushFirst: return .progress
            case .hold: return waitingResult(ci, message, stop: true)
            case .needMore:
                if total <= buffers.size { return waitingResult(ci, message, stop: false) }
            }
        }
        if queryTracking && queryStatsType(type) {
            // Query statistics read the message whole when it fits the buffer.
            if total > avail && total <= buffers.size { return waitingResult(ci, message, stop: false) }
            if !clients[ci].skipUntilSync || type == FrontendType.sync {
                queryStatsClientMessage(ci, si, type, total <= avail ? UnsafeRawBufferPointer(start: body, count: len &- 4) : nil)
            }
        }
        if servers[si].watchTags && (hooked || (servers[si].sessionExtended
                && (type == FrontendType.bind || type == FrontendType.execute))) {
            // Carried session state and pinning: the text whole, when it fits.
            if total > avail {
                if total <= buffers.size { return waitingResult(ci, message, stop: false) }
            } else if !clients[ci].skipUntilSync && !sessionClientMessage(ci, si, type,
                        UnsafeRawBufferPointer(start: body, count: len &- 4), first: isFirstUnsent(ci, message)) {
                return .progress  // a PREPARE to replay first: what precedes it goes before
            }
        }
        return nil
    }

    /// A hook waits for more of the message at `message` (or, `stop`, for an event of its own):
    /// what precedes it in the buffer is forwarded first.
    @inline(__always)
    private func waitingResult(_ ci: Int32, _ message: UnsafeMutableRawPointer, stop: Bool) -> ScanResult {
        !isFirstUnsent(ci, message) ? .progress : (stop ? .stop : .needMore)
    }

    /// No byte of the client's input before `message` waits to be forwarded.
    @inline(__always)
    private func isFirstUnsent(_ ci: Int32, _ message: UnsafeMutableRawPointer) -> Bool {
        message == clients[ci].io.input.base! + clients[ci].io.input.start
    }

    /// The rest of a message larger than what was buffered (`partial` bytes still to come): forwarded
    /// as it streams, or consumed here when it is not for the server (skipped to Sync, or a large named
    /// Parse collected). nil: go on scanning.
    @inline(__always)
    private func clientMessageTail(_ ci: Int32, _ base: UnsafeMutableRawPointer, _ scan: inout Int, _ partial: inout Int,
                                   _ end: Int) -> ScanResult? {
        let take = min(partial, end &- scan)
        if clients[ci].partialMode == .forward {
            scan &+= take
            partial &-= take
            return nil
        }
        // Not for the server: consumed here (the message's head was, too: start == scan).
        if clients[ci].partialMode == .collect && !clients[ci].largeParse.append(base + scan, take) {
            clients[ci].io.input.scan = scan
            failClient(ci, code: SQLState.outOfMemory, message: "out of memory")
            return .stop
        }
        scan &+= take
        partial &-= take
        clients[ci].io.input.start = scan
        if partial == 0 {
            let collected = clients[ci].partialMode == .collect
            clients[ci].partialMode = .forward
            if collected {
                clients[ci].io.input.scan = scan
                clients[ci].io.input.partial = 0
                if !finishLargeParse(ci) { return .stop }
            }
        }
        return nil
    }

    /// A whole Query or Parse text that neither `listenScan` nor `sessionClientMessage` would act on:
    /// its first word is no LISTEN, UNLISTEN or DISCARD, and `SQLSessionCandidate` finds nothing
    /// (which also means no second statement). For a Parse, an unnamed statement's text while the
    /// link follows one carrying session ops is not asked about (the caller checks that). A text
    /// found plain lately is recognised by a byte comparison (`plainTexts`).
    @inline(never)
    private func plainText(_ type: UInt8, _ body: UnsafeRawPointer, _ count: Int) -> Bool {
        guard let (text, n) = Worker.queryText(type, body, count) else { return false }
        let probe = plainTexts.probe(text, n)
        if probe.hit { return true }
        guard SQLSessionCandidate.plain(text, n) else { return false }
        plainTexts.notePlain(probe, text, n)
        return true
    }

    /// The SQL text of a Query or Parse body (`count` bytes of it at hand): a Query's body, or what
    /// follows a Parse's statement name; nil when that name's NUL is not among those bytes.
    @inline(__always)
    static func queryText(_ type: UInt8, _ body: UnsafeRawPointer, _ count: Int) -> (UnsafeRawPointer, Int)? {
        guard type == FrontendType.parse else { return (body, count) }
        // The unnamed statement, as most drivers send it: no call to memchr for an empty name.
        if count > 0 && body.load(as: UInt8.self) == 0 { return (body + 1, count &- 1) }
        guard let nul = memchr(body, 0, count) else { return nil }
        let skip = UnsafeRawPointer(nul) - body + 1
        return (body + skip, count &- skip)
    }

    /// A client message on a tracked link (prepared statements, Prepared.swift): skipped after an error
    /// pgswift raised, rewritten when it names a statement, or given its expected-answer slot.
    @inline(__always)
    private func trackClientMessage(_ ci: Int32, _ si: Int32, _ type: UInt8, _ len: Int, _ base: UnsafeMutableRawPointer,
                                    _ scan: inout Int, _ partial: inout Int, _ end: Int) -> ScanStep {
        let total = len &+ 1
        let avail = end &- scan
        // After an error pgswift raised itself: PostgreSQL would skip to the Sync, so do we.
        if clients[ci].skipUntilSync && type != FrontendType.sync {
            if scan > clients[ci].io.input.start { return .done(.progress) }
            if total > avail {
                // Never waited for whole (it may not fit): thrown away as it arrives.
                partial = total &- avail
                clients[ci].partialMode = .drop
                scan = end
            } else {
                scan &+= total
            }
            clients[ci].io.input.start = scan
            return .next
        }
        var expected = ExpectedAnswer.none
        let mayName = servers[si].rewriting && (type == FrontendType.parse || type == FrontendType.bind
            || type == FrontendType.describe || type == FrontendType.close)
        if !mayName {
            expected = answerFor(type, nil)
            // A Flush with a body is an extended-protocol error for PostgreSQL (see `badFlush`).
            if type == FrontendType.flush && len != 4 { expected = ExpectedAnswer.badFlush }
        } else {
            if total > avail {
                if total <= buffers.size { return .done(scan > clients[ci].io.input.start ? .progress : .needMore) }
                // Larger than the buffer: only its head (the names) is looked at, the rest
                // streams. Forward what precedes it first so the head has the whole buffer.
                if scan > clients[ci].io.input.start { return .done(.progress) }
                clients[ci].io.input.scan = scan
                switch largeExtended(ci, si, type, avail: avail, total: total) {
                case .needMore: return .done(.needMore)
                case .stop: return .done(.stop)
                case .handled:
                    scan = clients[ci].io.input.scan
                    partial = clients[ci].io.input.partial
                    return .next
                case .stream(let s): expected = s
                }
            } else {
                let body = UnsafeRawBufferPointer(start: base + (scan &+ 5), count: len &- 4)
                if namesStatement(type, body) {
                    if scan > clients[ci].io.input.start { return .done(.progress) }
                    let wasUnsynced = servers[si].unsynced
                    servers[si].unsynced = true
                    scan &+= total
                    clients[ci].io.input.start = scan
                    clients[ci].io.input.scan = scan
                    clients[ci].io.input.partial = partial
                    if !rewritePrepared(ci, si, type, body, wasUnsynced: wasUnsynced) { return .done(.stop) }
                    return .next
                }
                expected = answerFor(type, body)
            }
        }
        if type == FrontendType.sync {
            clients[ci].skipUntilSync = false
            if servers[si].copyDataSent { expected = expected.afterCopyData }
        }
        if expected != .none && !pushAnswer(si, expected) {
            failClient(ci, code: SQLState.programLimitExceeded, message: "too many pipelined messages")
            return .done(.stop)
        }
        return .handle
    }

    /// What a forwarded message means for its server: a Query, FunctionCall or Sync awaits a
    /// ReadyForQuery, extended-protocol messages leave it unsynced, a Parse of the unnamed statement
    /// holds the link until something is executed (`unnamedParsed`). `message` is the message's first
    /// byte, `avail` what is buffered of it. False for a type a logged-in client may not send.
    @inline(__always)
    private func countClientMessage(_ si: Int32, _ type: UInt8, _ message: UnsafeMutableRawPointer, avail: Int) -> Bool {
        switch type {
        case FrontendType.query, FrontendType.functionCall:
            if servers[si].queryStart == 0 { statsQueryStart(si) }  // stats hook
            servers[si].pendingSyncs &+= 1
            servers[si].copyDataSent = false
            servers[si].unnamedParsed = false
        case FrontendType.sync:
            if servers[si].queryStart == 0 { statsQueryStart(si) }  // stats hook
            servers[si].pendingSyncs &+= 1
            servers[si].unsynced = false
        case FrontendType.parse:
            servers[si].unsynced = true
            servers[si].copyDataSent = false
            // The statement name's first byte: NUL for the unnamed statement.
            if avail > 5 && message.load(fromByteOffset: 5, as: UInt8.self) == 0 { servers[si].unnamedParsed = true }
        case FrontendType.execute:
            servers[si].unsynced = true
            servers[si].copyDataSent = false
            servers[si].unnamedParsed = false
        case FrontendType.bind, FrontendType.describe, FrontendType.close:
            servers[si].unsynced = true
            servers[si].copyDataSent = false
        case FrontendType.flush:
            // Read and ignored inside a COPY, like Sync: it does not end a run of CopyData.
            servers[si].unsynced = true
        case FrontendType.copyData:
            servers[si].copyDataSent = true
        case FrontendType.copyDone, FrontendType.copyFail:
            servers[si].copyDataSent = false
        default:
            return false
        }
        return true
    }

    /// Message types a logged-in client may send (PostgreSQL's list, Terminate handled apart).
    @inline(__always)
    func knownClientMessage(_ type: UInt8) -> Bool {
        switch type {
        case FrontendType.query, FrontendType.parse, FrontendType.bind, FrontendType.describe,
             FrontendType.execute, FrontendType.sync, FrontendType.flush, FrontendType.close,
             FrontendType.copyData, FrontendType.copyDone, FrontendType.copyFail, FrontendType.functionCall:
            return true
        default:
            return false
        }
    }

    /// PostgreSQL's answer to a message type it does not know: one FATAL, and the connection ends.
    @inline(never)  // error path: kept out of the forward loops it is called from
    func unknownClientMessage(_ ci: Int32, _ type: UInt8) {
        failClient(ci, code: SQLState.protocolViolation, message: "invalid frontend message type \(type)")
    }

    // MARK: Server → client

    /// Pumps a server's bytes to its client (or swallows them while pgswift talks to the server itself).
    func serverData(_ si: Int32) {
        while true {
            if servers[si].io.input.hasUnsent {
                let ci = servers[si].client
                if ci < 0 {
                    servers[si].io.input.start = servers[si].io.input.scan
                } else {
                    if !clients[ci].io.out.isEmpty && !flushClient(ci) { return }
                    let start = servers[si].io.input.start
                    let count = servers[si].io.input.scan - start
                    do {
                        switch try clients[ci].io.send(servers[si].io.input.base! + start, count) {
                        case .processed(let n):
                            servers[si].io.input.start = start &+ n
                            clients[ci].statBytesOut &+= UInt64(n)  // stats hook
                            if n < count {
                                clients[ci].io.writable = false
                                return
                            }
                        case .wouldBlock:
                            clients[ci].io.writable = false
                            return
                        }
                    } catch {
                        closeClient(ci, reason: "write to client failed: \(error.errno)", notify: false)
                        return
                    }
                }
                if servers[si].answerCount > 0 && ci >= 0, let head = headAnswer(si), head.isSynthetic {
                    emitDueSynthetics(si)
                    if !flushClient(ci) { return }
                }
                if servers[si].releaseOnFlush {
                    servers[si].releaseOnFlush = false
                    // Checked again: the client may have pipelined its next query onto this server
                    // while the answer waited for it to read; then the server stays linked. (Only a
                    // draining worker sets the flag in session mode, where nothing is released.)
                    if transactionDone(si) && servers[si].watchTags {
                        releaseServer(si)
                        return
                    }
                    // Rolling restart: the ReadyForQuery has reached the client, so the pair may move
                    // to the successor now (PairHandoff.swift).
                    if hot.pointee.draining && ci >= 0 && handOffPair(ci) { return }
                }
                listenDeferredHook(ci)  // notifications held for the end of a message (ListenRelay.swift)
                servers[si].io.releaseIfEmpty(buffers)
                continue
            }
            if servers[si].io.input.hasUnscanned {
                switch scanServer(si) {
                case .stop: return
                case .progress: if servers[si].io.input.hasUnsent { continue }
                case .needMore: break
                }
            }
            if servers[si].io.eof {
                serverBroken(si, reason: "server closed the connection")
                return
            }
            if !servers[si].io.readable { return }
            switch readInto(server: si) {
            case .data: continue
            case .wouldBlock, .full: return
            case .closed:
                continue
            }
        }
    }

    /// Walks server messages: counts ReadyForQuery, tracks ParameterStatus, swallows answers to
    /// pgswift's own queries. Returns false when the pump must stop.
    @inline(__always)
    func scanServer(_ si: Int32) -> ScanResult {
        let base = servers[si].io.input.base!
        var scan = servers[si].io.input.scan
        let end = servers[si].io.input.end
        var partial = servers[si].io.input.partial
        var result = ScanResult.progress
        let flags = ServerScanFlags(hot.pointee)
        scanning: while scan < end {
            let swallowing = servers[si].internalQueries > 0 || servers[si].client < 0
            if partial > 0 {
                let take = min(partial, end &- scan)
                scan &+= take
                partial &-= take
                if swallowing { servers[si].io.input.start = scan }
                continue
            }
            let avail = end &- scan
            let type: UInt8, len: Int
            switch frameHeader(base + scan, available: avail, .forwarded) {
            case .incomplete:
                result = .needMore
                break scanning
            case .header(let h):
                (type, len) = (h.type, h.length)
            case .invalid(let h):
                servers[si].io.input.scan = scan
                serverFrameInvalid(si, h)
                return .stop
            }
            let total = len &+ 1
            // Read/write routing's 25006 safety net (Routing.swift): true, dropped; false, read it whole.
            if flags.routing && !swallowing, let dropped = routedServerMessage(si, type, total: total, avail: avail, &scan) {
                if dropped { continue }
                result = .needMore
                break scanning
            }
            let inspect = inspects(si, type, swallowing: swallowing, flags)
            if inspect && total > avail {
                if total <= buffers.size { result = .needMore; break }
                // Too large to inspect (a giant ParameterStatus): pass it through unread.
            }
            if swallowing && scan > servers[si].io.input.start {
                // Bytes for the client still unsent before a message to swallow: send them first.
                break
            }
            switch serverMessageStep(si, type, total: total, avail: avail, swallowing: swallowing, flags, &scan) {
            case .handle: break
            case .next: continue
            case .done(let r):
                result = r
                break scanning
            }
            if flags.queryTracking && !swallowing && queryStatsEnd(type) {
                queryStatsStatementEnd(si, type, total <= avail
                    ? UnsafeRawBufferPointer(start: base + (scan &+ 5), count: len &- 4) : nil)
            }
            if inspect && total <= avail {
                let body = UnsafeRawBufferPointer(start: base + (scan &+ 5), count: len &- 4)
                if type == BackendType.readyForQuery {
                    switch serverReadyForQuery(si, body, swallowing: swallowing, &scan, total: total, partial: partial) {
                    case .done(let r): return r
                    default: continue
                    }
                }
                inspectServerMessage(si, type, body, swallowing: swallowing)
            }
            if total <= avail {
                scan &+= total
            } else {
                partial = total &- avail
                scan = end
            }
            if swallowing { servers[si].io.input.start = scan }
        }
        servers[si].io.input.scan = scan
        servers[si].io.input.partial = partial
        if swallowing(si) { servers[si].io.releaseIfEmpty(buffers) }
        if result == .needMore && scan > servers[si].io.input.start { return .progress }
        return result
    }

    /// Whether a server message is for the client at all. A pooled server's own notification in relay
    /// mode (its clients get it from the listening connection, ListenRelay.swift) and the answer to an
    /// injected Parse/Close are dropped (`.next`), after what precedes them is sent (`.done(.progress)`
    /// first); on a tracked link the answer queue moves (Prepared.swift).
    @inline(__always)
    private func serverMessageStep(_ si: Int32, _ type: UInt8, total: Int, avail: Int, swallowing: Bool,
                                   _ flags: ServerScanFlags, _ scan: inout Int) -> ScanStep {
        var drop = flags.listenRelay && type == BackendType.notificationResponse && !swallowing && total <= avail
            && linkMode(si) != .session
        if !drop && !swallowing && servers[si].tracking && servers[si].answerCount > 0 {
            if let r = trackServerMessage(si, type, total: total, avail: avail, &scan) { return .done(r) }
            drop = type != BackendType.dataRow && !serverAnswer(si, type)
        }
        guard drop else { return .handle }
        if scan > servers[si].io.input.start { return .done(.progress) }
        scan &+= total
        servers[si].io.input.start = scan
        return .next
    }

    /// Whether scanServer reads a message whole and looks at it (`inspectServerMessage`): DataRow,
    /// the commonest, first.
    @inline(__always)
    private func inspects(_ si: Int32, _ type: UInt8, swallowing: Bool, _ flags: ServerScanFlags) -> Bool {
        switch type {
        case BackendType.dataRow: return swallowing && flags.routing
        case BackendType.readyForQuery, BackendType.parameterStatus: return true
        case BackendType.commandComplete: return servers[si].watchTags || flags.queryTracking
        case BackendType.errorResponse: return swallowing || flags.listenPending || servers[si].sessionPending
        default: return false
        }
    }

    /// A server sent a frame header pgswift cannot accept: the connection is broken.
    @inline(never)
    private func serverFrameInvalid(_ si: Int32, _ h: MessageHeader) {
        serverBroken(si, reason: h.length < 4 ? "invalid message length \(h.length) from server"
                     : "message too long (\(h.length) bytes; max_packet_size is \(maxPacket))")
    }

    /// A server message on a tracked link with expected answers pending, before its slot is popped:
    /// pgswift's own synthesized answers due before it go first, and a ParseComplete/CloseComplete is
    /// read whole. Non-nil: stop scanning with that result.
    @inline(__always)
    private func trackServerMessage(_ si: Int32, _ type: UInt8, total: Int, avail: Int, _ scan: inout Int) -> ScanResult? {
        if let head = headAnswer(si), head.kind == ExpectedAnswer.copyEnd || head.isSynthetic {
            if let r = answersDueFirst(si, scan) { return r }
        }
        if total > avail && (type == BackendType.parseComplete || type == BackendType.closeComplete) {
            return .needMore
        }
        if type == BackendType.copyInResponse || type == BackendType.copyBothResponse {
            copyStarted(si)
        } else if servers[si].copyIn && (type == BackendType.commandComplete || type == BackendType.errorResponse) {
            return copyMayEnd(si, type, total: total, avail: avail, scan)
        }
        return nil
    }

    /// The head of the queue is not this server message's: a stale CopyDone/CopyFail (it never ended a
    /// COPY, a running COPY's Query or Execute would be ahead of it: the server ignored it, so it must
    /// not stand for this message) goes, and answers pgswift owes go out (after what precedes them).
    @inline(never)
    private func answersDueFirst(_ si: Int32, _ scan: Int) -> ScanResult? {
        popStaleCopyEnds(si)
        if let head = headAnswer(si), head.isSynthetic {
            if scan > servers[si].io.input.start { return .progress }
            emitDueSynthetics(si)
        }
        return nil
    }

    /// CommandComplete or ErrorResponse while a COPY FROM STDIN runs: it ended (`copyEnded`). An error's
    /// SQLSTATE is read to tell a message the COPY could not take (08P01: read and dropped) from bad data.
    @inline(never)
    private func copyMayEnd(_ si: Int32, _ type: UInt8, total: Int, avail: Int, _ scan: Int) -> ScanResult? {
        var consumed = false
        if type == BackendType.errorResponse {
            if total > avail && total <= buffers.size { return .needMore }
            if total <= avail {
                let body = UnsafeRawBufferPointer(start: servers[si].io.input.base! + (scan &+ 5), count: total &- 5)
                consumed = ErrorFields.parse(body)?.code == SQLState.protocolViolation
            }
        }
        copyEnded(si, consumed: consumed, failed: type == BackendType.errorResponse)
        return nil
    }

    /// ReadyForQuery: the end of pgswift's own query (swallowed; a reset may be done), or of the
    /// client's — where transaction and statement mode give the server back once its bytes are out.
    @inline(__always)
    private func serverReadyForQuery(_ si: Int32, _ body: UnsafeRawBufferPointer, swallowing: Bool, _ scan: inout Int,
                                     total: Int, partial: Int) -> ScanStep {
        let status = body.count >= 1 ? body[0] : UInt8(ascii: "I")
        servers[si].txStatus = status
        servers[si].lastReady = now
        scan &+= total
        if swallowing {
            servers[si].io.input.start = scan
            if servers[si].internalQueries > 0 { servers[si].internalQueries &-= 1 }
            if servers[si].internalQueries == 0 && servers[si].state == .resetting {
                servers[si].io.input.scan = scan
                servers[si].io.input.partial = partial
                resetDone(si)
                return .done(.stop)
            }
            return .next
        }
        syncAnswered(si)
        if hot.pointee.listenPending > 0 { listenReadySeen(si, status) }  // ListenRelay.swift
        if servers[si].sessionPending { sessionReady(si, status) }  // carried session state (SessionHooks.swift)
        statsReadyForQuery(si, status: status)  // stats hook
        if hot.pointee.queryTracking { queryStatsReady(si) }  // query stats hook (QueryStats.swift)
        // The pool's mode, or session for a replication client's own server (`linkMode`).
        let mode = linkMode(si)
        if status != UInt8(ascii: "I") && mode == .statement {
            servers[si].io.input.scan = scan
            servers[si].io.input.partial = partial
            statementModeViolation(si)
            return .done(.stop)
        }
        if mode != .session && transactionDone(si) {
            servers[si].releaseOnFlush = true
            servers[si].io.input.scan = scan
            servers[si].io.input.partial = partial
            return .done(.progress)
        }
        if hot.pointee.draining {
            // Rolling restart: a client linked in session mode or inside a transaction moves with its
            // server once this ReadyForQuery has reached it (checked where `releaseOnFlush` is).
            servers[si].releaseOnFlush = true
            servers[si].io.input.scan = scan
            servers[si].io.input.partial = partial
            return .done(.progress)
        }
        return .next
    }

    /// Transaction and statement mode: the server may go back to the pool — idle ('I'), nothing
    /// forwarded awaits an answer, no extended-protocol batch is open, no unnamed statement parsed
    /// and not executed yet (`unnamedParsed`), no pin, no answer pgswift owes, and the
    /// client has nothing scanned for it that is not sent yet and is not in the middle of a message
    /// to it (the rest of a large one would have no server to go to).
    @inline(__always)
    func transactionDone(_ si: Int32) -> Bool {
        let ci = servers[si].client
        return servers[si].pendingSyncs == 0 && !servers[si].unsynced && servers[si].txStatus == UInt8(ascii: "I")
            && servers[si].answerCount == 0 && !servers[si].unreliable && ci >= 0 && !clients[ci].io.input.hasUnsent
            && clients[ci].io.input.partial == 0 && servers[si].sessionPins == 0 && !servers[si].unnamedParsed
    }

    /// ParameterStatus (tracked values follow the client), CommandComplete tags (session state that
    /// needs a reset; statements wiped) and errors of pgswift's own queries.
    @inline(__always)
    private func inspectServerMessage(_ si: Int32, _ type: UInt8, _ body: UnsafeRawBufferPointer, swallowing: Bool) {
        if type == BackendType.parameterStatus {
            if let (name, value) = ParameterStatus.parse(body), let t = tracked.index(of: name) {
                if let info = servers[si].info, info.params.values[t] != value {
                    info.params.values[t] = value
                    servers[si].paramsKey = 0
                }
                let ci = servers[si].client
                if ci >= 0, let cinfo = clients[ci].info, cinfo.params.values[t] != value {
                    if !swallowing {
                        // The client changed it itself (SET application_name ...): it follows the client.
                        cinfo.params.values[t] = value
                        clients[ci].paramsKey = 0
                    } else if let old = cinfo.params.values[t] {
                        // The answer to pgswift's own SET of the client's value (`syncParameters`): the
                        // server's spelling of it ("ISO" is "ISO, MDY") becomes the client's, or every
                        // later link would find them different and SET it again (PgBouncer's words).
                        log.debug("C-\(clients[ci].id): varcache_set_canonical: setting \(tracked.names[t]) to its "
                                  + "canonical version \(old) -> \(value)")
                        cinfo.params.values[t] = value
                        clients[ci].paramsKey = 0
                    }
                }
            }
        } else if type == BackendType.commandComplete {
            // A tracked statement's tag needs no reset (SessionHooks.swift); others keep the old rule.
            let carried = !swallowing && servers[si].sessionPending && sessionCommandComplete(si, body)
            // `SELECT <rows>`, the commonest tag, is none of the words tested below.
            if SessionTags.isSelectRows(body) { return }
            if !swallowing && !carried, let change = SessionTags.classify(body) {
                servers[si].needsReset = change
            }
            if !swallowing && hot.pointee.listenFollow { listenTagHook(si, body) }  // ListenRelay.swift
            if !swallowing && (SessionTags.matches(body, "DEALLOCATE ALL") || SessionTags.matches(body, "DISCARD ALL")) {
                // The client wiped its statements: the server has none of ours left either.
                servers[si].info?.prepared.removeAll()
                let ci = servers[si].client
                if ci >= 0 { clients[ci].info?.prepared = nil }
                sessionPreparedWiped(si, discardAll: SessionTags.matches(body, "DISCARD ALL"))
            }
        } else if type == BackendType.dataRow {
            commitLSNRow(si, body)  // read_after_write=lsn (Routing.swift)
        } else if type == BackendType.errorResponse {
            if !swallowing {
                if hot.pointee.listenPending > 0 { listenErrorSeen(si) }  // a client's LISTEN in flight (ListenRelay.swift)
                if servers[si].sessionPending { sessionError(si) }  // carried session state (SessionHooks.swift)
                return
            }
            let e = ErrorFields.parse(body)
            log.warning("S-\(servers[si].id): query pgswift sent failed: \(e?.message ?? "?")")
            servers[si].dirty = true
        }
    }

    /// Statement mode cannot keep a transaction open across statements: refuse, like PgBouncer (its
    /// words and SQLSTATE, FATAL 08P01, and the client is closed with its server).
    func statementModeViolation(_ si: Int32) {
        let ci = servers[si].client
        log.warning("S-\(servers[si].id): transaction block in statement pooling mode")
        if ci >= 0 {
            unlink(client: ci, server: si)
            sendClientError(ci, ErrorFields(severity: "FATAL", code: SQLState.protocolViolation,
                message: "transaction blocks not allowed in statement pooling mode"), close: true)
        }
        let p = servers[si].pool
        closeServer(si, reason: "transaction block in statement pooling mode")
        launchIfNeeded(p)
    }

    @inline(__always)
    private func swallowing(_ si: Int32) -> Bool {
        servers[si].internalQueries > 0 || servers[si].client < 0
    }
}

/// CommandComplete tags that show a client changed session state outside what a transaction undoes.
/// No SQL parsing: the server's own tag says what ran.
enum SessionTags {
    /// true: the session now carries state (SET, PREPARE, LISTEN, ...); false: it was wiped (DISCARD ALL);
    /// nil: nothing to note.
    @inline(__always)
    static func classify(_ body: UnsafeRawBufferPointer) -> Bool? {
        guard let first = body.first else { return nil }
        switch first {
        case UInt8(ascii: "S"), UInt8(ascii: "R"), UInt8(ascii: "P"), UInt8(ascii: "L"), UInt8(ascii: "D"), UInt8(ascii: "C"):
            break
        default:
            return nil
        }
        if matches(body, "SET") || matches(body, "RESET") || matches(body, "PREPARE") || matches(body, "LISTEN")
            || matches(body, "DECLARE CURSOR") || matches(body, "CREATE TABLE") || matches(body, "LOAD")
            || matches(body, "CREATE TEMPORARY TABLE") || matches(body, "SELECT INTO") {
            return true
        }
        if matches(body, "DISCARD ALL") { return false }
        return nil
    }

    /// `SELECT ` and a digit: a query's row count. One 8-byte load.
    @inline(__always)
    static func isSelectRows(_ body: UnsafeRawBufferPointer) -> Bool {
        guard body.count >= 9, let p = body.baseAddress else { return false }
        // "SELECT " in the low seven bytes, little-endian; the eighth byte is the count's first digit.
        let w = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
        return w & 0x00FF_FFFF_FFFF_FFFF == 0x0020_5443_454C_4553 && (UInt8(truncatingIfNeeded: w >> 56) &- 0x30) < 10
    }

    /// The tag (NUL-terminated) equals `word`.
    @inline(__always)
    static func matches(_ body: UnsafeRawBufferPointer, _ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard body.count == n + 1, body[n] == 0 else { return false }
        let w = word.utf8Start
        for i in 0..<n where body[i] != w[i] { return false }
        return true
    }
}
