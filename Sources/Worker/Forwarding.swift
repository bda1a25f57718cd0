// The data path: read until EAGAIN, scan message headers, forward bytes as read, backpressure by
// not reading a side whose peer cannot take more. Only a few message types are looked into.
import Shared
import Glibc

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
    // MARK: Reading

    @inline(__always)
    func readInto(client ci: Int32) -> ReadOutcome {
        if clients[ci].input.base == nil {
            clients[ci].input.base = buffers.take()
        } else if clients[ci].input.end == buffers.size {
            clients[ci].input.compact()
            if clients[ci].input.end == buffers.size { return .full }
        }
        let b = clients[ci].input.base!
        let end = clients[ci].input.end
        if let t = clients[ci].tls { return readTLS(client: ci, t, b, end) }
        do {
            switch try Posix.recv(clients[ci].fd, b + end, buffers.size - end) {
            case .processed(0):
                clients[ci].eof = true
                clients[ci].readable = false
                return .closed
            case .processed(let n):
                clients[ci].input.end = end &+ n
                clients[ci].statBytesIn &+= UInt64(n)  // stats hook
                // A short read emptied the socket; with edge-triggered epoll new bytes bring a new
                // event, so skip the read that would only say EAGAIN.
                if n < buffers.size &- end && !clients[ci].hangup { clients[ci].readable = false }
                return .data
            case .wouldBlock:
                clients[ci].readable = false
                releaseIfEmpty(client: ci)
                return .wouldBlock
            }
        } catch {
            clients[ci].eof = true
            clients[ci].readable = false
            return .closed
        }
    }

    @inline(__always)
    func readInto(server si: Int32) -> ReadOutcome {
        if servers[si].input.base == nil {
            servers[si].input.base = buffers.take()
        } else if servers[si].input.end == buffers.size {
            servers[si].input.compact()
            if servers[si].input.end == buffers.size { return .full }
        }
        let b = servers[si].input.base!
        let end = servers[si].input.end
        if let t = servers[si].tls { return readTLS(server: si, t, b, end) }
        do {
            switch try Posix.recv(servers[si].fd, b + end, buffers.size - end) {
            case .processed(0):
                servers[si].eof = true
                servers[si].readable = false
                return .closed
            case .processed(let n):
                servers[si].input.end = end &+ n
                // A short read emptied the socket; with edge-triggered epoll new bytes bring a new
                // event, so skip the read that would only say EAGAIN.
                if n < buffers.size &- end && !servers[si].hangup { servers[si].readable = false }
                return .data
            case .wouldBlock:
                servers[si].readable = false
                releaseIfEmpty(server: si)
                return .wouldBlock
            }
        } catch {
            servers[si].eof = true
            servers[si].readable = false
            return .closed
        }
    }

    @inline(__always)
    func releaseIfEmpty(client ci: Int32) {
        if let b = clients[ci].input.base, clients[ci].input.start == clients[ci].input.end, clients[ci].input.partial == 0 {
            buffers.give(b)
            clients[ci].input = IOBuf()
        }
    }

    @inline(__always)
    func releaseIfEmpty(server si: Int32) {
        if let b = servers[si].input.base, servers[si].input.start == servers[si].input.end, servers[si].input.partial == 0 {
            buffers.give(b)
            servers[si].input = IOBuf()
        }
    }

    /// Drops `n` bytes from the front of a client's input (login-phase packets pgswift handled itself).
    func consumeInput(client ci: Int32, _ n: Int) {
        clients[ci].input.start += n
        if clients[ci].input.scan < clients[ci].input.start { clients[ci].input.scan = clients[ci].input.start }
        releaseIfEmpty(client: ci)
    }

    func consumeInput(server si: Int32, _ n: Int) {
        servers[si].input.start += n
        if servers[si].input.scan < servers[si].input.start { servers[si].input.scan = servers[si].input.start }
        releaseIfEmpty(server: si)
    }

    // MARK: Writing pgswift's own bytes

    func queueClient(_ ci: Int32, byte: UInt8) {
        var b = byte
        withUnsafeBytes(of: &b) { clients[ci].out.append($0) }
    }

    /// Writes pending pgswift-generated bytes to the client. Returns true when nothing is left.
    @discardableResult
    func flushClient(_ ci: Int32) -> Bool {
        while !clients[ci].out.isEmpty {
            let o = clients[ci].out
            do {
                switch try sendToClient(ci, o.base! + o.start, o.end - o.start) {
                case .processed(let n):
                    clients[ci].out.consumed(n)
                    if !clients[ci].out.isEmpty {
                        clients[ci].writable = false
                        return false
                    }
                case .wouldBlock:
                    clients[ci].writable = false
                    return false
                }
            } catch {
                clients[ci].out.release()
                closeClient(ci, reason: "write to client failed: \(error.errno)", notify: false)
                return false
            }
        }
        if clients[ci].state == .closing {
            // The final error may still sit encrypted in the TLS buffer: free once it is out.
            if let t = clients[ci].tls, !t.pointee.out.isEmpty {
                clients[ci].writable = false
                return false
            }
            freeClient(ci)
            return false
        }
        return true
    }

    @discardableResult
    func flushServer(_ si: Int32) -> Bool {
        while !servers[si].out.isEmpty {
            let o = servers[si].out
            do {
                switch try sendToServer(si, o.base! + o.start, o.end - o.start) {
                case .processed(let n):
                    servers[si].out.consumed(n)
                    if !servers[si].out.isEmpty {
                        servers[si].writable = false
                        return false
                    }
                case .wouldBlock:
                    servers[si].writable = false
                    return false
                }
            } catch {
                servers[si].out.release()
                serverBroken(si, reason: "write to server failed: \(error.errno)")
                return false
            }
        }
        return true
    }

    // MARK: Client → server

    /// Pumps a logged-in client's bytes to its server: forward what is scanned, scan what is read,
    /// read until EAGAIN. Stops when the server cannot take more or the client waits for a server.
    func clientData(_ ci: Int32) {
        while true {
            if clients[ci].input.hasUnsent {
                let si = clients[ci].server
                guard si >= 0, servers[si].state == .active else { return }
                if !servers[si].out.isEmpty && !flushServer(si) { return }
                let start = clients[ci].input.start
                let count = clients[ci].input.scan - start
                do {
                    switch try sendToServer(si, clients[ci].input.base! + start, count) {
                    case .processed(let n):
                        clients[ci].input.start = start &+ n
                        if n < count {
                            servers[si].writable = false
                            return
                        }
                    case .wouldBlock:
                        servers[si].writable = false
                        return
                    }
                } catch {
                    serverBroken(si, reason: "write to server failed: \(error.errno)")
                    return
                }
                releaseIfEmpty(client: ci)
                continue
            }
            if clients[ci].input.hasUnscanned {
                switch scanClient(ci) {
                case .stop: return
                case .progress: if clients[ci].input.hasUnsent { continue }
                case .needMore: break
                }
            }
            // Messages pgswift rewrote or injected may be all there is to send.
            let si = clients[ci].server
            if si >= 0 && !servers[si].out.isEmpty && servers[si].state == .active && !flushServer(si) { return }
            if !clients[ci].readable { return }
            switch readInto(client: ci) {
            case .data: continue
            case .wouldBlock, .full: return
            case .closed:
                closeClient(ci, reason: "client closed the connection", notify: false)
                return
            }
        }
    }

    /// Walks complete message headers of client input. Links a server before the first message of a
    /// transaction. Returns false when the pump must stop.
    @inline(__always)
    func scanClient(_ ci: Int32) -> ScanResult {
        let base = clients[ci].input.base!
        var scan = clients[ci].input.scan
        let end = clients[ci].input.end
        var partial = clients[ci].input.partial
        defer {
            if clients[ci].state != .free {
                clients[ci].input.scan = scan
                clients[ci].input.partial = partial
            }
        }
        while scan < end {
            if partial > 0 {
                let take = min(partial, end &- scan)
                if clients[ci].partialMode != .forward {
                    // Not for the server: consumed here (the message's head was, too: start == scan).
                    if clients[ci].partialMode == .collect && !clients[ci].largeParse.append(base + scan, take) {
                        clients[ci].input.scan = scan
                        failClient(ci, code: SQLState.outOfMemory, message: "out of memory")
                        return .stop
                    }
                    scan &+= take
                    partial &-= take
                    clients[ci].input.start = scan
                    if partial == 0 {
                        let collected = clients[ci].partialMode == .collect
                        clients[ci].partialMode = .forward
                        if collected {
                            clients[ci].input.scan = scan
                            clients[ci].input.partial = 0
                            if !finishLargeParse(ci) { return .stop }
                        }
                    }
                    continue
                }
                scan &+= take
                partial &-= take
                continue
            }
            let type: UInt8, len: Int
            switch frameHeader(base + scan, available: end &- scan, .forwarded) {
            case .incomplete:
                return scan > clients[ci].input.start ? .progress : .needMore
            case .header(let h):
                (type, len) = (h.type, h.length)
            case .invalid(let h):
                clients[ci].input.scan = scan
                failClient(ci, code: SQLState.protocolViolation, message: h.length < 4 ? "invalid message length \(h.length)"
                           : "message too long (\(h.length) bytes; max_packet_size is \(maxPacket))")
                return .stop
            }
            if type == FrontendType.terminate {
                // Forward what came before, then leave. Terminate itself never reaches a pooled server.
                if scan > clients[ci].input.start { return .progress }
                clients[ci].input.scan = scan
                closeClient(ci, reason: "client sent Terminate", notify: false)
                return .stop
            }
            var si = clients[ci].server
            if si < 0 {
                clients[ci].input.scan = scan
                clients[ci].input.partial = partial
                if scan > clients[ci].input.start { return .progress }
                // Garbage is refused here: no server is linked (or launched) for it.
                if !knownClientMessage(type) {
                    unknownClientMessage(ci, type)
                    return .stop
                }
                if !acquireServer(ci) { return .stop }
                si = clients[ci].server
            }
            let total = len &+ 1
            let avail = end &- scan
            if servers[si].tracking {
                // After an error pgswift raised itself: PostgreSQL would skip to the Sync, so do we.
                if clients[ci].skipUntilSync && type != FrontendType.sync {
                    if scan > clients[ci].input.start { return .progress }
                    if total > avail {
                        // Never waited for whole (it may not fit): thrown away as it arrives.
                        partial = total &- avail
                        clients[ci].partialMode = .drop
                        scan = end
                    } else {
                        scan &+= total
                    }
                    clients[ci].input.start = scan
                    continue
                }
                var slot = slotFor(type, nil)
                let mayName = type == FrontendType.parse || type == FrontendType.bind
                    || type == FrontendType.describe || type == FrontendType.close
                if mayName {
                    if total > avail {
                        if total <= buffers.size { return scan > clients[ci].input.start ? .progress : .needMore }
                        // Larger than the buffer: only its head (the names) is looked at, the rest
                        // streams. Forward what precedes it first so the head has the whole buffer.
                        if scan > clients[ci].input.start { return .progress }
                        clients[ci].input.scan = scan
                        switch largeExtended(ci, si, type, avail: avail, total: total) {
                        case .needMore: return .needMore
                        case .stop: return .stop
                        case .handled:
                            scan = clients[ci].input.scan
                            partial = clients[ci].input.partial
                            continue
                        case .stream(let s): slot = s
                        }
                    } else {
                        let body = UnsafeRawBufferPointer(start: base + (scan &+ 5), count: len &- 4)
                        if namesStatement(type, body) {
                            if scan > clients[ci].input.start { return .progress }
                            servers[si].unsynced = true
                            scan &+= total
                            clients[ci].input.start = scan
                            clients[ci].input.scan = scan
                            clients[ci].input.partial = partial
                            if !rewritePrepared(ci, si, type, body) { return .stop }
                            continue
                        }
                        slot = slotFor(type, body)
                    }
                }
                if type == FrontendType.sync { clients[ci].skipUntilSync = false }
                if slot != 0 && !pushSlot(si, slot) {
                    failClient(ci, code: SQLState.programLimitExceeded, message: "too many pipelined messages")
                    return .stop
                }
            }
            switch type {
            case FrontendType.query, FrontendType.functionCall:
                if servers[si].queryStart == 0 { statsQueryStart(si) }  // stats hook
                servers[si].pendingSyncs &+= 1
            case FrontendType.sync:
                if servers[si].queryStart == 0 { statsQueryStart(si) }  // stats hook
                servers[si].pendingSyncs &+= 1
                servers[si].unsynced = false
            case FrontendType.parse, FrontendType.bind, FrontendType.describe, FrontendType.execute,
                 FrontendType.close, FrontendType.flush:
                servers[si].unsynced = true
            case FrontendType.copyData, FrontendType.copyDone, FrontendType.copyFail:
                break
            default:
                clients[ci].input.scan = scan
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
    func unknownClientMessage(_ ci: Int32, _ type: UInt8) {
        failClient(ci, code: SQLState.protocolViolation, message: "invalid frontend message type \(type)")
    }

    // MARK: Server → client

    /// Pumps a server's bytes to its client (or swallows them while pgswift talks to the server itself).
    func serverData(_ si: Int32) {
        while true {
            if servers[si].input.hasUnsent {
                let ci = servers[si].client
                if ci < 0 {
                    servers[si].input.start = servers[si].input.scan
                } else {
                    if !clients[ci].out.isEmpty && !flushClient(ci) { return }
                    let start = servers[si].input.start
                    let count = servers[si].input.scan - start
                    do {
                        switch try sendToClient(ci, servers[si].input.base! + start, count) {
                        case .processed(let n):
                            servers[si].input.start = start &+ n
                            clients[ci].statBytesOut &+= UInt64(n)  // stats hook
                            if n < count {
                                clients[ci].writable = false
                                return
                            }
                        case .wouldBlock:
                            clients[ci].writable = false
                            return
                        }
                    } catch {
                        closeClient(ci, reason: "write to client failed: \(error.errno)", notify: false)
                        return
                    }
                }
                if servers[si].slotCount > 0 && ci >= 0, let head = headSlot(si), Slot.isSynthetic(head) {
                    emitDueSynthetics(si)
                    if !flushClient(ci) { return }
                }
                if servers[si].releaseOnFlush {
                    servers[si].releaseOnFlush = false
                    releaseServer(si)
                    return
                }
                releaseIfEmpty(server: si)
                continue
            }
            if servers[si].input.hasUnscanned {
                switch scanServer(si) {
                case .stop: return
                case .progress: if servers[si].input.hasUnsent { continue }
                case .needMore: break
                }
            }
            if servers[si].eof {
                serverBroken(si, reason: "server closed the connection")
                return
            }
            if !servers[si].readable { return }
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
        let base = servers[si].input.base!
        var scan = servers[si].input.scan
        let end = servers[si].input.end
        var partial = servers[si].input.partial
        var result = ScanResult.progress
        scanning: while scan < end {
            let swallowing = servers[si].internalQueries > 0 || servers[si].client < 0
            if partial > 0 {
                let take = min(partial, end &- scan)
                scan &+= take
                partial &-= take
                if swallowing { servers[si].input.start = scan }
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
                servers[si].input.scan = scan
                serverBroken(si, reason: h.length < 4 ? "invalid message length \(h.length) from server"
                             : "message too long (\(h.length) bytes; max_packet_size is \(maxPacket))")
                return .stop
            }
            let total = len &+ 1
            let inspect = type == BackendType.readyForQuery || type == BackendType.parameterStatus
                || (swallowing && type == BackendType.errorResponse)
                || (type == BackendType.commandComplete && servers[si].watchTags)
            if inspect && total > avail {
                if total <= buffers.size { result = .needMore; break }
                // Too large to inspect (a giant ParameterStatus): pass it through unread.
            }
            if swallowing && scan > servers[si].input.start {
                // Bytes for the client still unsent before a message to swallow: send them first.
                break
            }
            if !swallowing && servers[si].tracking && servers[si].slotCount > 0 {
                if let head = headSlot(si), Slot.isSynthetic(head) {
                    // An answer pgswift owes comes before this message: send what precedes it first.
                    if scan > servers[si].input.start { break }
                    emitDueSynthetics(si)
                }
                if total > avail && (type == BackendType.parseComplete || type == BackendType.closeComplete) {
                    result = .needMore
                    break
                }
                if !serverAnswer(si, type) {
                    // The answer to an injected Parse/Close: drop it (after what precedes it is sent).
                    if scan > servers[si].input.start { break }
                    scan &+= total
                    servers[si].input.start = scan
                    continue
                }
            }
            if inspect && total <= avail {
                let body = UnsafeRawBufferPointer(start: base + (scan &+ 5), count: len &- 4)
                if type == BackendType.readyForQuery {
                    let status = len >= 5 ? body[0] : UInt8(ascii: "I")
                    servers[si].txStatus = status
                    servers[si].lastReady = now
                    scan &+= total
                    if swallowing {
                        servers[si].input.start = scan
                        if servers[si].internalQueries > 0 { servers[si].internalQueries &-= 1 }
                        if servers[si].internalQueries == 0 && servers[si].state == .resetting {
                            servers[si].input.scan = scan
                            servers[si].input.partial = partial
                            resetDone(si)
                            return .stop
                        }
                        continue
                    }
                    if servers[si].pendingSyncs > 0 { servers[si].pendingSyncs &-= 1 }
                    statsReadyForQuery(si, status: status)  // stats hook
                    if status != UInt8(ascii: "I") && pools[Int(servers[si].pool)].mode == .statement {
                        servers[si].input.scan = scan
                        servers[si].input.partial = partial
                        statementModeViolation(si)
                        return .stop
                    }
                    if servers[si].pendingSyncs == 0 && !servers[si].unsynced && status == UInt8(ascii: "I")
                        && servers[si].slotCount == 0 {
                        let p = Int(servers[si].pool)
                        if pools[p].mode != .session {
                            let ci = servers[si].client
                            if ci >= 0 && !clients[ci].input.hasUnsent {
                                servers[si].releaseOnFlush = true
                                servers[si].input.scan = scan
                                servers[si].input.partial = partial
                                return .progress
                            }
                        }
                    }
                    continue
                }
                if type == BackendType.parameterStatus {
                    if let (name, value) = ParameterStatus.parse(body), let t = tracked.index(of: name) {
                        if let info = servers[si].info, info.params.values[t] != value {
                            info.params.values[t] = value
                            servers[si].paramsKey = 0
                        }
                        // The client changed it itself (SET application_name ...): it follows the client.
                        let ci = servers[si].client
                        if !swallowing && ci >= 0, let cinfo = clients[ci].info, cinfo.params.values[t] != value {
                            cinfo.params.values[t] = value
                            clients[ci].paramsKey = 0
                        }
                    }
                } else if type == BackendType.commandComplete {
                    if !swallowing, let change = SessionTags.classify(body) {
                        servers[si].needsReset = change
                    }
                    if !swallowing && (SessionTags.matches(body, "DEALLOCATE ALL") || SessionTags.matches(body, "DISCARD ALL")) {
                        // The client wiped its statements: the server has none of ours left either.
                        servers[si].info?.prepared.removeAll()
                        let ci = servers[si].client
                        if ci >= 0 { clients[ci].info?.prepared.removeAll() }
                    }
                } else if type == BackendType.errorResponse {
                    let e = ErrorFields.parse(body)
                    log.warning("S-\(servers[si].id): query pgswift sent failed: \(e?.message ?? "?")")
                    servers[si].dirty = true
                }
            }
            if total <= avail {
                scan &+= total
            } else {
                partial = total &- avail
                scan = end
            }
            if swallowing { servers[si].input.start = scan }
        }
        servers[si].input.scan = scan
        servers[si].input.partial = partial
        if swallowing(si) { releaseIfEmpty(server: si) }
        if result == .needMore && scan > servers[si].input.start { return .progress }
        return result
    }

    /// Statement mode cannot keep a transaction open across statements: refuse, like PgBouncer.
    func statementModeViolation(_ si: Int32) {
        let ci = servers[si].client
        log.warning("S-\(servers[si].id): transaction block in statement pooling mode")
        if ci >= 0 {
            unlink(ci, si)
            sendClientError(ci, ErrorFields(severity: "FATAL", code: SQLState.featureNotSupported,
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
