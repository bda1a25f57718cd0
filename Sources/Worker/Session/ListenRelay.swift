// LISTEN/NOTIFY in transaction and statement mode (`[pgswift] listen_mode = relay`): clients' LISTEN,
// UNLISTEN and DISCARD ALL are read (ListenStatements) and followed to their commit (ListenBook); one
// listening server connection per pool and worker LISTENs to the union of the channels, outside
// pool_size, and each NotificationResponse it gets goes to every subscribed client of the worker at a
// message boundary. A pooled server's own notifications are dropped, so each arrives once.
//
// No loss between a client's LISTEN and the listening connection's: a client's LISTEN of a channel the
// listening connection does not hold yet is held (not forwarded) until that connection's own LISTEN
// has returned, so the connection listens before the client's LISTEN even runs; notifications that
// come before the client's transaction commits wait with the client (`tentative`) and are delivered if
// it commits. If the listening connection fails, every client that depends on it is closed with a
// FATAL error (08006): never a silent loss.
import Shared
import Glibc

/// The worker's relay state (cold: read only by the hooks' slow paths).
final class ListenRelayState {
    var clients: [Int32: ListenClientState] = [:]
    var pools: [Int32: ListenPoolState] = [:]
    /// Clients whose outbox waits for the end of a server message being forwarded to them.
    var deferred: Set<Int32> = []
    let classifier = SQLClassifier()
}

/// What the client-side hook decides for a Query or Parse.
enum ListenScan {
    case go
    /// Held until the listening connection holds its channels (the pump stops; resumed later).
    case hold
    /// Send what precedes the message first (the message is then looked at alone).
    case flushFirst
    /// The message's first word is not all read yet.
    case needMore
}

extension Worker {
    func applyListenSettings() {
        hot.pointee.listenRelay = config.listenMode == .relay
        hot.pointee.listenPin = config.listenMode == .pin
        hot.pointee.listenFollow = config.listenMode != .off
    }

    // MARK: Client side (hooks in Forwarding.swift)

    /// A Query or Parse on a pooled link: the cheap first-keyword test, then (rarely) the classifier.
    /// Out of line: inlined, it made `clientData` too large for the prepared-statement tracking it
    /// must inline (a call with eight arguments per message cost more than this call per Query/Parse).
    @inline(never)
    func listenScan(_ ci: Int32, _ si: Int32, _ type: UInt8, _ body: UnsafeRawPointer, _ count: Int,
                    complete: Bool, first: Bool) -> ListenScan {
        guard let (text, n) = Worker.queryText(type, body, count) else { return complete ? .go : .needMore }
        switch ListenStatements.firstKeyword(text, n) {
        case .no:
            // A later statement of a simple Query may be one (`BEGIN; LISTEN a; COMMIT`, asyncpg's reset
            // `...; UNLISTEN *; ...`): a memchr for `;`, and the classifier only when more follows it.
            guard type == FrontendType.query && complete && ListenStatements.laterStatement(text, n) else { return .go }
            if !first { return .flushFirst }
            var len = n
            if let nul = memchr(text, 0, n) { len = UnsafeRawPointer(nul) - text }
            return listenDetect(ci, si, UnsafeRawBufferPointer(start: text, count: len))
        case .needMore: return complete ? .go : .needMore
        case .maybe:
            if !complete { return .needMore }
            if !first { return .flushFirst }
            var len = n
            if let nul = memchr(text, 0, n) { len = UnsafeRawPointer(nul) - text }
            return listenDetect(ci, si, UnsafeRawBufferPointer(start: text, count: len))
        }
    }

    @inline(never)
    func listenDetect(_ ci: Int32, _ si: Int32, _ text: UnsafeRawBufferPointer) -> ListenScan {
        let p = clients[ci].pool
        guard p >= 0, pools[Int(p)].mode != .session else { return .go }
        let ops = ListenStatements.ops(text, classifier: listens.classifier)
        guard !ops.isEmpty else { return .go }
        var st = listens.clients[ci] ?? ListenClientState(pool: p)
        var channels: [String] = []
        for o in ops { if case .listen(let c) = o { channels.append(c) } }
        var ps = listens.pools[p] ?? ListenPoolState()
        let missing = hot.pointee.listenPin ? [] : channels.filter { !ps.holds($0) }
        if !missing.isEmpty {
            st.wants.formUnion(missing)
            storeListenClient(ci, st)
            ps.held.insert(ci)
            listens.pools[p] = ps
            log.debug("C-\(clients[ci].id): LISTEN \(missing.joined(separator: ",")) held until the listening connection has it")
            listenReconcile(p)
            return .hold
        }
        st.wants.subtract(channels)
        let before = servers[si].pendingSyncs
        for o in ops { st.predicted.append(PredictedListenOp(op: o, readiesBefore: before)) }
        storeListenClient(ci, st)
        return .go
    }

    /// Saves a client's record (dropping an empty one) and keeps `listenPending` right.
    func storeListenClient(_ ci: Int32, _ st: ListenClientState) {
        let was = listens.clients[ci]?.pending ?? false
        if st.empty { listens.clients[ci] = nil } else { listens.clients[ci] = st }
        if was != st.pending { hot.pointee.listenPending &+= st.pending ? 1 : -1 }
    }

    // MARK: Answers on the client's link (hooks in Forwarding.swift)

    /// CommandComplete on a pooled link (not pgswift's own): only LISTEN/UNLISTEN, and while some
    /// client of the worker has a LISTEN in flight COMMIT/ROLLBACK/DISCARD, go further.
    @inline(__always)
    func listenTagHook(_ si: Int32, _ body: UnsafeRawBufferPointer) {
        guard body.count >= 2 else { return }
        let f = body[0], g = body[1]
        if (f == UInt8(ascii: "L") && g == UInt8(ascii: "I")) || (f == UInt8(ascii: "U") && g == UInt8(ascii: "N"))
            || (hot.pointee.listenPending > 0 && (f == UInt8(ascii: "C") || f == UInt8(ascii: "R") || f == UInt8(ascii: "D"))) {
            listenTag(si, body)
        }
    }

    @inline(never)
    func listenTag(_ si: Int32, _ body: UnsafeRawBufferPointer) {
        let ci = servers[si].client
        // The pool's mode: a link pinned by listen_mode = pin answers session to `linkMode`.
        guard ci >= 0, servers[si].replication == .none, pools[Int(servers[si].pool)].mode != .session else { return }
        let t = ListenTag(body)
        if t == .other { return }
        var st = listens.clients[ci] ?? ListenClientState(pool: clients[ci].pool)
        guard st.pending || t == .listen || t == .unlisten else { return }
        let effect = st.tag(t)
        if effect == .unpredicted && t == .listen && hot.pointee.listenPin {
            // pin: the server listens itself; a LISTEN pgswift cannot attribute keeps the link to the end.
            st.pinnedForGood = true
            storeListenClient(ci, st)
            listenPinUpdate(si, st)
            return
        }
        if effect == .unpredicted && (t == .listen || t == .unlisten) && hot.pointee.listenRelay {
            log.warning("C-\(clients[ci].id): \(t == .listen ? "LISTEN" : "UNLISTEN") not relayed: it was not the first statement of its query")
            scratch.clear()
            Backend.noticeResponse(into: &scratch, ErrorFields(severity: "WARNING", code: "0A000",
                message: "pgswift cannot relay this \(t == .listen ? "LISTEN" : "UNLISTEN"): send it as a query of its own "
                    + "(a LISTEN inside a longer query gets no notifications in transaction pooling)"))
            st.outbox.append(contentsOf: UnsafeRawBufferPointer(start: scratch.base, count: scratch.count))
            storeListenClient(ci, st)
            listenDeliver(ci)
            return
        }
        storeListenClient(ci, st)
        if hot.pointee.listenPin {
            listenPinUpdate(si, st)
        } else if t == .commit || t == .rollback || effect == .confirmed {
            listenReconcile(st.pool)
        }
    }

    /// ErrorResponse on a pooled link while a LISTEN is in flight: its transaction will not commit.
    @inline(never)
    func listenErrorSeen(_ si: Int32) {
        let ci = servers[si].client
        guard ci >= 0, var st = listens.clients[ci], st.pending else { return }
        st.error()
        storeListenClient(ci, st)
    }

    /// ReadyForQuery on a pooled link while a LISTEN is in flight somewhere in the worker.
    @inline(never)
    func listenReadySeen(_ si: Int32, _ status: UInt8) {
        let ci = servers[si].client
        guard ci >= 0, var st = listens.clients[ci], st.pending || !st.tentative.isEmpty else { return }
        let due = st.ready(status)
        for m in due { st.outbox.append(contentsOf: m) }
        storeListenClient(ci, st)
        if hot.pointee.listenPin { listenPinUpdate(si, st) }
        listenReconcile(st.pool)
        if !due.isEmpty { listenDeliver(ci) }
    }

    // MARK: listen_mode = pin

    /// The link stays (`Server.listenPinned`, `linkMode` answers session) while the client listens or a
    /// LISTEN is in flight; a LISTEN pgswift could not attribute pins it until the client leaves (errs
    /// toward pinning). UNLISTEN *, DISCARD ALL or the last UNLISTEN unpin at their commit.
    private func listenPinUpdate(_ si: Int32, _ st: ListenClientState) {
        let stay = st.pinnedForGood || !st.subscribed.isEmpty || st.pending
        if stay != servers[si].listenPinned {
            servers[si].listenPinned = stay
            log.debug("S-\(servers[si].id): \(stay ? "pinned to" : "unpinned from") C-\(clients[servers[si].client].id) (listen_mode = pin)")
        }
    }

    // MARK: Delivery

    /// Writes the client's due messages if it stands at a message boundary; else they wait for the end
    /// of what is being forwarded (`listenDeferredHook`).
    func listenDeliver(_ ci: Int32) {
        guard var st = listens.clients[ci], !st.outbox.isEmpty else {
            listenUndefer(ci)
            return
        }
        switch clients[ci].state {
        case .idle, .waitServer:
            break
        case .active:
            let si = clients[ci].server
            if si >= 0 && (servers[si].io.input.hasUnsent || servers[si].io.input.partial > 0) {
                if listens.deferred.insert(ci).inserted { hot.pointee.listenDeferred = listens.deferred.count }
                return
            }
        default:
            return
        }
        st.outbox.withUnsafeBytes { clients[ci].io.out.append($0) }
        st.outbox = []
        storeListenClient(ci, st)
        listenUndefer(ci)
        flushClient(ci)
    }

    private func listenUndefer(_ ci: Int32) {
        if listens.deferred.remove(ci) != nil { hot.pointee.listenDeferred = listens.deferred.count }
    }

    /// After a server's bytes were all forwarded to client `ci` (Forwarding.swift, Linking.swift).
    @inline(__always)
    func listenDeferredHook(_ ci: Int32) {
        if hot.pointee.listenDeferred > 0 && ci >= 0 { listenDeliverIfDeferred(ci) }
    }

    /// Out of line: `listens` is a class, and an access to its stored properties inlined into the
    /// forward loop is one run-time exclusivity check per call, hoisted to the loop's entry.
    @inline(never)
    private func listenDeliverIfDeferred(_ ci: Int32) {
        if listens.deferred.contains(ci) { listenDeliver(ci) }
    }

    // MARK: Clients leaving

    /// The client is freed (Lifecycle.swift): its subscriptions go, and the listening connection
    /// forgets channels nobody wants.
    @inline(__always)
    func listenClientGone(_ ci: Int32) {
        if !listens.clients.isEmpty, let st = listens.clients[ci] { listenForget(ci, st) }
    }

    @inline(never)
    private func listenForget(_ ci: Int32, _ st: ListenClientState) {
        storeListenClient(ci, ListenClientState(pool: st.pool))  // empty: removed, pending count kept right
        listenUndefer(ci)
        listens.pools[st.pool]?.held.remove(ci)
        listenReconcile(st.pool)
    }

    /// A client with relay state must not move to a successor (Handoff.swift): its subscriptions live here.
    func listenKeepsClient(_ ci: Int32) -> Bool { listens.clients[ci] != nil }

    // MARK: The listening connection

    /// Brings the pool's listening connection to the union of what its clients want: launched when
    /// first needed, LISTEN/UNLISTEN sent, closed when nobody wants anything.
    func listenReconcile(_ p: Int32) {
        if hot.pointee.listenPin { return }  // pin: the client's own server listens
        var wanted = Set<String>()
        for (_, st) in listens.clients where st.pool == p { st.channelsWanted(into: &wanted) }
        guard var ps = listens.pools[p] else {
            if wanted.isEmpty { return }
            listens.pools[p] = ListenPoolState()
            launchListenServer(p)
            return
        }
        if ps.server < 0 {
            if wanted.isEmpty && ps.held.isEmpty {
                listens.pools[p] = nil
                return
            }
            launchListenServer(p)
            return
        }
        if ps.ready && wanted.isEmpty && ps.inFlight.isEmpty && ps.held.isEmpty {
            let si = ps.server
            listens.pools[p] = nil
            log.debug("S-\(servers[si].id): the last listener left")
            closeServer(si, reason: "no client listens any more")
            return
        }
        let commands = ps.commands(toward: wanted)
        listens.pools[p] = ps
        guard !commands.isEmpty else { return }
        scratch.clear()
        for c in commands {
            switch c {
            // The comment names the connection in pg_stat_activity.
            case .listen(let ch): Frontend.query(into: &scratch, sql: Self.listenCommandPrefix + "LISTEN " + quotedIdentifier(ch))
            case .unlisten(let ch): Frontend.query(into: &scratch, sql: Self.listenCommandPrefix + "UNLISTEN " + quotedIdentifier(ch))
            default: break
            }
        }
        let si = ps.server
        servers[si].io.out.append(scratch)
        flushServer(si)
    }

    static let listenCommandPrefix = "/* pgswift listening connection */ "

    /// Opens the pool's listening connection: a server record of the pool that its counters do not
    /// hold (outside pool_size, `Server.listener`), logged in like any other.
    private func launchListenServer(_ p: Int32) {
        let pi = Int(p)
        guard let (address, hostKey) = pickBackend(p) else {
            listenFailed(p, reason: "no server address to connect to")
            return
        }
        let si: Int32, connected: Bool
        do throws(SyscallError) {
            (si, connected) = try connectServer(address, pool: p, .connecting)
        } catch {
            listenFailed(p, reason: "could not connect to server: \(error.errno)")
            return
        }
        // connectServer counted it as one of the pool's connecting servers: it is not one.
        pools[pi].serverCount -= 1
        pools[pi].connectingCount -= 1
        servers[si].listener = true
        servers[si].client = -1
        servers[si].io.readable = false
        servers[si].io.writable = false
        servers[si].io.eof = false
        servers[si].createdAt = now
        servers[si].txStatus = UInt8(ascii: "I")
        let info = ServerInfo(trackedCount: tracked.names.count)
        info.address = address.description
        info.hostKey = hostKey
        info.socketAddress = address
        servers[si].info = info
        listens.pools[p, default: ListenPoolState()].server = si
        if !watchServer(si) { return }
        log.debug("S-\(servers[si].id): listening connection for \(pools[pi].database)/\(pools[pi].user) connecting to \(address)")
        if connected { serverConnected(si) }
    }

    /// Its login ended (ServerLogin.swift `serverLoginDone`).
    func listenServerReady(_ si: Int32) {
        let p = servers[si].pool
        setServerState(si, .listening)
        servers[si].info?.login = nil
        servers[si].info?.reported = []
        log.debug("S-\(servers[si].id): listening connection ready (backend pid \(servers[si].backendPID))")
        guard listens.pools[p]?.server == si else {
            closeServer(si, reason: "no client listens any more")
            return
        }
        listens.pools[p]?.ready = true
        listenReconcile(p)
    }

    /// Its login failed (ServerLogin.swift `serverLoginFailed`).
    func listenServerLoginFailed(_ si: Int32, _ fields: ErrorFields, closeReason: String?) {
        log.warning("\(serverLogPrefix(si)) listening connection login failed: \(fields.severity) \(fields.message)")
        closeServer(si, reason: closeReason ?? fields.message)
    }

    /// It is being closed (Lifecycle.swift `closeServer`): unless pgswift closes it because nobody
    /// listens, everyone relying on it is told.
    func listenServerClosing(_ si: Int32, reason: String) {
        let p = servers[si].pool
        guard listens.pools[p]?.server == si else { return }
        listens.pools[p] = nil
        listenFailed(p, reason: reason)
    }

    /// The pool's listening connection is gone or could not be made: every client subscribed or about
    /// to be is closed with FATAL 08006, as notifications may have been lost.
    private func listenFailed(_ p: Int32, reason: String) {
        listens.pools[p] = nil
        let victims = listens.clients.filter { $0.value.pool == p }.map { $0.key }
        for ci in victims {
            guard let st = listens.clients[ci] else { continue }
            storeListenClient(ci, ListenClientState(pool: st.pool))
            listenUndefer(ci)
            guard clients[ci].state != .free && clients[ci].state != .closing else { continue }
            sendClientError(ci, ErrorFields(severity: "FATAL", code: "08006",
                message: "pgswift: the listening connection of this pool failed (\(reason)); notifications may have been lost"),
                close: true)
        }
    }

    /// Server events of a listening connection (Lifecycle.swift `serverEvent`).
    func listenServerInput(_ si: Int32) {
        if !servers[si].io.out.isEmpty && !flushServer(si) { return }
        while servers[si].state == .listening,
              let (type, body) = nextHeldMessage(server: si,
                  invalid: { _ in closeServer(si, reason: "invalid message from the listening connection") },
                  onClosed: { closeServer(si, reason: "server closed the listening connection") }) {
            listenServerMessage(si, type, body)
            if servers[si].state != .listening { return }
            servers[si].io.consume(Wire.headerSize + body.count, buffers)
        }
    }

    private func listenServerMessage(_ si: Int32, _ type: UInt8, _ body: UnsafeRawBufferPointer) {
        let p = servers[si].pool
        switch type {
        case BackendType.notificationResponse:
            guard body.count > 5, let end = body[4...].firstIndex(of: 0) else { return }
            let channel = String(decoding: UnsafeRawBufferPointer(rebasing: body[4..<end]), as: UTF8.self)
            var message: [UInt8] = [type]
            let length = UInt32(body.count + 4)
            message.append(contentsOf: [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)])
            message.append(contentsOf: body)
            var due: [Int32] = []
            for (ci, var st) in listens.clients where st.pool == p {
                switch st.delivery(channel) {
                case .now:
                    st.outbox.append(contentsOf: message)
                    due.append(ci)
                case .tentative:
                    st.tentative.append((channel, message))
                case .none:
                    continue
                }
                listens.clients[ci] = st
            }
            for ci in due { listenDeliver(ci) }
        case BackendType.readyForQuery:
            listens.pools[p]?.commandDone()
            listenReconcile(p)
            listenResumeHeld(p)
        case BackendType.errorResponse:
            let e = ErrorFields.parse(body)
            closeServer(si, reason: "listening connection error: \(e?.message ?? "?")")
        default:
            break
        }
    }

    /// Held clients whose channels the listening connection now holds go on.
    private func listenResumeHeld(_ p: Int32) {
        guard let ps = listens.pools[p], !ps.held.isEmpty else { return }
        for ci in ps.held {
            guard let st = listens.clients[ci] else {
                listens.pools[p]?.held.remove(ci)
                continue
            }
            guard st.wants.allSatisfy({ ps.holds($0) }) else { continue }
            listens.pools[p]?.held.remove(ci)
            let s = clients[ci].state
            if (s == .idle || s == .active) && clients[ci].io.input.hasUnscanned { clientData(ci) }
        }
    }
}
