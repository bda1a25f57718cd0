// Rolling restarts, worker side: a draining worker hands its idle clients (socket + state) to its
// successor over a socket pair the supervisor set up; the successor adopts them and their cancel keys.
import Shared
import Glibc

/// Handoff state of this worker, in either role (a successor may later drain too).
struct WorkerHandoff {
    /// Draining: our end of the socket to the successor (-1: none, or the successor is gone).
    var outFD: Int32 = -1
    /// Successor: where the predecessor's clients arrive (-1: none, or it has finished).
    var inFD: Int32 = -1
    /// Draining: when the clients still here are closed (drain_timeout).
    var drainDeadline: Int64 = 0
    /// Draining: when to log the next progress line.
    var nextReport: Int64 = 0
    var moved = 0
    var adoptedCount = 0
    /// Of those, clients that moved with their server (PairHandoff.swift).
    var movedPairs = 0
    var adoptedPairs = 0
    /// Draining: the `WorkerFeatures` the successor announced (from `drain`; 0: unknown, so nothing is
    /// sent that an older build could not read).
    var successorFeatures: UInt32 = 0
    /// Draining because the supervisor died, not for a rolling restart: no successor, and idle
    /// servers stay (the clients here keep using them until they leave).
    var orphaned = false
    /// Adopted clients keep the BackendKeyData they got from a predecessor: its process id →
    /// (table index, generation) here, and back, so cancels still find them and a later drain
    /// passes the same key on.
    var adopted: [Int32: (ci: Int32, gen: UInt32)] = [:]
    var original: [Int32: (pid: Int32, gen: UInt32)] = [:]
    /// Descriptors that came with a control datagram (only `drain` carries one), kept for the worker's life.
    let controlFDs = UnsafeMutablePointer<Int32>.allocate(capacity: 4)
    /// Receive buffer, allocated while a predecessor is handing off.
    var buffer: UnsafeMutableRawPointer? = nil
    static let bufferSize = HandoffClient.maximumSize + 1
}

extension Worker {
    // MARK: Draining (the old worker)

    /// The supervisor's `drain`: stop accepting (the supervisor keeps the listening sockets open, so
    /// nothing queued is lost), move clients to the successor (alone between transactions, or with
    /// their server when the successor can adopt pairs: `successorFeatures`), exit when the last client
    /// has left or drain_timeout has passed.
    func beginDrain(handoffFD: Int32?, successorFeatures: UInt32 = 0) {
        hot.pointee.draining = true
        handoff.outFD = handoffFD ?? -1
        handoff.successorFeatures = handoffFD == nil ? 0 : successorFeatures
        if let fd = handoffFD { try? Posix.setNonBlocking(fd) }
        handoff.drainDeadline = now + Clock.nanos(seconds: config.drainTimeout)
        let pairs = handoff.successorFeatures & WorkerFeatures.pairMoves != 0
        log.info("draining for a rolling restart: \(clients.used) clients; \(handoffFD == nil ? "no successor socket: they stay" : pairs ? "they move to the successor between transactions, or with their server (session mode, or inside a transaction)" : "they move to the successor between transactions (the successor cannot adopt a client with its server: session-mode clients with a server stay)"); drain_timeout \(Int(config.drainTimeout)) s")
        beginShutdown(.graceful)
        // The slot's share of each pool belongs to the successor now and the supervisor no longer
        // adjusts ours: a share lowered just before the drain must not strand the clients that stay
        // (session mode). So whoever stays here may use up to the pool size while we drain.
        for pi in pools.indices { pools[pi].limit = pools[pi].size }
        handOffIdleClients()
        for pi in pools.indices where pools[pi].waiting.count > 0 { launchIfNeeded(Int32(pi)) }
    }

    /// Every 100 ms while draining: move who can move, shed idle servers nobody waits for, and
    /// close what is left once drain_timeout has passed.
    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func drainTick() {
        if now >= handoff.drainDeadline {
            log.info("drain_timeout passed: closing the \(clients.used) clients still here")
            hot.pointee.draining = false
            beginShutdown(.immediate)
            return
        }
        handOffIdleClients()
        if now >= handoff.nextReport {
            handoff.nextReport = now + 5_000_000_000
            var counts: [ClientState: Int] = [:]
            var ci: Int32 = 0
            while ci < Int32(clients.capacity) {
                if clients[ci].state != .free { counts[clients[ci].state, default: 0] += 1 }
                ci += 1
            }
            let pools = pools.indices.map { "\(self.pools[$0].database)/\(self.pools[$0].user) servers \(self.pools[$0].serverCount) limit \(self.pools[$0].limit) waiting \(self.pools[$0].waiting.count)" }
            log.info("draining: \(clients.used) clients left (\(counts.map { "\($0.key): \($0.value)" }.sorted().joined(separator: ", "))), \(handoff.moved) moved (\(handoff.movedPairs) with their server); \(pools.joined(separator: "; "))\(handoff.outFD < 0 ? "; no successor socket" : "")")
        }
        guard !handoff.orphaned else { return }
        for pi in pools.indices where pools[pi].waiting.count == 0 {
            while pools[pi].idle.head >= 0 { closeServer(pools[pi].idle.head, reason: "draining") }
        }
    }

    // MARK: The supervisor is gone

    /// The control channel closed: the supervisor died (a clean stop always sends `shutdown` first).
    /// Stop accepting (a restarted supervisor opens new listeners on the same port and Unix path),
    /// keep serving the clients here until they leave or drain_timeout passes, then exit. Nothing
    /// they need comes from the supervisor: a pool's (and a limit group's) share stays at least the
    /// even split, the shared client count is a memory mapping that outlives it, backend states stay
    /// as last told. What is lost: cancels to forward to other workers, the admin console, stats.
    func supervisorLost() {
        epoll.remove(controlFD)
        Posix.close(controlFD)
        controlFD = -1
        stats.outbox.discard()
        failPendingAdminRequests()
        if hot.pointee.draining {
            // A rolling restart's drain goes on as it was (its pool limits are already the pool sizes).
            log.warning("supervisor gone (control channel closed) while draining: \(clients.used) clients still here")
            return
        }
        quotas.orphaned = true
        for pi in pools.indices { updateLimit(pi) }
        handoff.orphaned = true
        hot.pointee.draining = true
        handoff.drainDeadline = now + Clock.nanos(seconds: config.drainTimeout)
        log.warning("supervisor gone (control channel closed): no longer accepting; serving the \(clients.used) clients here until they leave (drain_timeout \(Int(config.drainTimeout)) s)")
        beginShutdown(.graceful)
        for pi in pools.indices where pools[pi].waiting.count > 0 { launchIfNeeded(Int32(pi)) }
    }

    /// At drain start and every 100 ms: every client that can move now, alone or with its server.
    func handOffIdleClients() {
        guard handoff.outFD >= 0 else { return }
        var ci: Int32 = 0
        let cap = Int32(clients.capacity)
        while ci < cap && handoff.outFD >= 0 {
            switch clients[ci].state {
            case .idle, .waitServer: _ = handOff(ci)
            case .active: _ = handOffPair(ci)
            default: break
            }
            ci += 1
        }
    }

    /// Moves one client if it sits between transactions with nothing in flight in either direction
    /// (idle, or queued for a server with its next query still unsent); true when it is gone from here.
    /// A session-mode client moves too when it has no server (it has not sent a query yet, so there is no
    /// session to lose); one linked to its server moves with it (`handOffPair`).
    @discardableResult
    func handOff(_ ci: Int32) -> Bool {
        guard handoff.outFD >= 0, clients[ci].state == .idle || clients[ci].state == .waitServer,
              clients[ci].server < 0, !listenKeepsClient(ci),
              let state = clientHandoffState(ci, carriedState: handoff.successorFeatures & WorkerFeatures.sessionMoves != 0)
        else { return false }
        let bytes = state.encode()
        guard bytes.count <= HandoffClient.maximumSize else {
            log.debug("C-\(clients[ci].id): state too large to hand off (\(bytes.count) bytes); it stays")
            return false
        }
        guard sendToSuccessor(bytes, fds: [clients[ci].io.fd]) else { return false }
        // The successor holds the socket now: our copy must not stay in our epoll set (it would, as
        // long as any process keeps the file open) nor be written to again.
        epoll.remove(clients[ci].io.fd)
        log.debug("C-\(clients[ci].id): handed to the successor")
        handoff.original[ci] = nil
        handoff.moved += 1
        freeClient(ci)
        return true
    }

    /// What the successor needs to go on serving client `ci` (`HandoffClient`); nil when it cannot move:
    /// an admin client, a TLS client (its session keys live in this process: it stays until it leaves),
    /// bytes pending towards it, its peer gone, a message half read or half forwarded, session state
    /// that cannot travel (`sessionMovable`; with `carriedState`, its settings and SQL prepared
    /// statements go along).
    func clientHandoffState(_ ci: Int32, carriedState: Bool) -> HandoffClient? {
        guard clients[ci].admin == .none, clients[ci].io.tls == nil && !clients[ci].usesTLS,
              clients[ci].io.out.isEmpty, !clients[ci].io.hangup, !clients[ci].io.eof, !clients[ci].skipUntilSync,
              clients[ci].io.input.start == clients[ci].io.input.scan, clients[ci].io.input.partial == 0,
              clients[ci].partialMode == .forward, clients[ci].largeParse.count == 0,
              clients[ci].pool >= 0, let info = clients[ci].info, sessionMovable(ci, carriedState: carriedState)
        else { return nil }
        let p = Int(clients[ci].pool)
        var state = HandoffClient(user: info.user, database: info.database, processID: clientProcessID(ci),
                                  secretKey: clients[ci].cancelKey)
        if let o = handoff.original[ci], o.gen == clients[ci].io.gen { state.processID = o.pid }
        for (t, name) in tracked.names.enumerated() {
            if let v = info.params.values[t] { state.parameters.append(HandoffParameter(name: name, value: v)) }
        }
        state.applicationName = info.applicationName
        state.protocolMinor = Int32(info.protocolMinor)
        state.isUnix = clients[ci].isUnix
        state.peer = info.peer
        state.connectedAt = clients[ci].connectedAt
        // In id order: a successor with a fresh registry interns them in that order, so it gives them
        // the ids they have here, the names a server moved with its client knows them by.
        for (name, id) in (info.prepared?.map ?? [:]).sorted(by: { $0.value < $1.value }) {
            guard let body = statements.body(id) else { continue }
            state.prepared.append(HandoffStatement(name: name, body: body))
        }
        if let b = clients[ci].io.input.base, clients[ci].io.input.end > clients[ci].io.input.start {
            state.pending = [UInt8](UnsafeRawBufferPointer(start: b + clients[ci].io.input.start,
                                                           count: clients[ci].io.input.end - clients[ci].io.input.start))
        }
        state.scramClientKey = pools[p].scramClientKey ?? []
        if carriedState {
            state.settings = info.session.settings.entries.map { HandoffSetting(key: $0.key, set: $0.set, reset: $0.reset) }
            state.sqlPrepared = info.session.prepared.sorted { $0.key < $1.key }.map { HandoffParameter(name: $0.key, value: $0.value) }
        }
        return state
    }

    /// One datagram and its sockets to the successor. True once sent: the successor holds the sockets
    /// then (the caller forgets its copies). False and nothing changed: the socket is full (tried again
    /// later), or the successor is gone (the handoff socket is closed: the rest stay here).
    func sendToSuccessor(_ bytes: [UInt8], fds: [Int32]) -> Bool {
        let outFD = handoff.outFD
        guard outFD >= 0 else { return false }
        let sent: Result<IOResult, SyscallError> = bytes.withUnsafeBytes { raw in
            do throws(SyscallError) {
                return .success(try Posix.sendWithFDs(outFD, raw, fds: fds))
            } catch {
                return .failure(error)
            }
        }
        switch sent {
        case .success(.processed):
            return true
        case .success(.wouldBlock):
            return false
        case .failure(let error):
            log.warning("cannot hand clients to the successor (\(error)); the remaining ones stay here")
            Posix.close(handoff.outFD)
            handoff.outFD = -1
            return false
        }
    }

    /// One control datagram into `buf`, with the descriptors that came along (almost always none).
    func receiveControl(_ buf: UnsafeMutableRawPointer) -> (Result<Int, SyscallError>, UnsafeBufferPointer<Int32>) {
        var count: Int32 = 0
        let r: Result<Int, SyscallError>
        do throws(SyscallError) {
            switch try Posix.receive(controlFD, buf, Worker.controlBufferSize, fds: handoff.controlFDs, maxFDs: 4,
                                     received: &count) {
            case .processed(let n): r = .success(n)
            case .wouldBlock: r = .success(-1)
            }
        } catch {
            r = .failure(error)
        }
        return (r, UnsafeBufferPointer(start: handoff.controlFDs, count: Int(count)))
    }

    // MARK: Adopting (the new worker)

    /// Registers the socket the predecessor's clients will arrive on (`--handoff-fd`).
    func registerHandoffInput(_ fd: Int32) throws {
        try Posix.setNonBlocking(fd)
        handoff.inFD = fd
        try epoll.add(fd, events: [.input], data: WorkerToken(.handoff, fd: fd).raw)
    }

    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func handoffEvent() {
        guard handoff.inFD >= 0 else { return }
        if handoff.buffer == nil { handoff.buffer = .allocate(byteCount: WorkerHandoff.bufferSize, alignment: 16) }
        let buf = handoff.buffer!
        while handoff.inFD >= 0 {
            var fds: [Int32] = []
            let result: IOResult
            do throws(SyscallError) {
                result = try Posix.receiveWithFDs(handoff.inFD, buf, WorkerHandoff.bufferSize, fds: &fds)
            } catch {
                finishAdopting("\(error)")
                return
            }
            switch result {
            case .wouldBlock:
                return
            case .processed(0) where fds.isEmpty:
                finishAdopting(nil)
                return
            case .processed(let n):
                let raw = UnsafeRawBufferPointer(start: buf, count: n)
                if HandoffPair.isPair(raw) {
                    adoptPairDatagram(raw, fds: fds)
                    continue
                }
                guard let fd = fds.first else {
                    log.warning("handoff datagram without a socket ignored")
                    continue
                }
                for extra in fds.dropFirst() { Posix.close(extra) }
                do throws(HandoffDecodeError) {
                    let state = try HandoffClient.decode(raw)
                    adopt(state, fd: fd)
                } catch {
                    // Cannot serve it without its state: better a clean close than a confused session.
                    log.warning("\(error); closing that client")
                    Posix.close(fd)
                }
            }
        }
    }

    private func finishAdopting(_ error: String?) {
        epoll.remove(handoff.inFD)
        Posix.close(handoff.inFD)
        handoff.inFD = -1
        handoff.buffer?.deallocate()
        handoff.buffer = nil
        log.info("predecessor done handing off\(error.map { " (\($0))" } ?? ""): \(handoff.adoptedCount) clients adopted (\(handoff.adoptedPairs) with their server)")
    }

    /// Takes over a client from the predecessor: same state, same cancel key, its unprocessed bytes.
    func adopt(_ state: HandoffClient, fd: Int32) {
        guard let ci = adoptClientRecord(state, fd: fd) else { return }
        log.debug("C-\(clients[ci].id): adopted from the predecessor (db=\(state.database) user=\(state.user))")
        if hot.pointee.draining {
            // Adopted while draining ourselves (rolls in quick succession): pass it on when it can move.
            if handOff(ci) { return }
        }
        clientData(ci)
    }

    /// A client record for a client the predecessor handed over, idle in its pool: its login state,
    /// statements, cancel key (kept in `handoff.adopted`) and unprocessed bytes (in its input buffer,
    /// not processed yet). nil when it could not be taken (the client got an error, or its socket closed).
    func adoptClientRecord(_ state: HandoffClient, fd: Int32) -> Int32? {
        clientAdopted()
        let info = ClientInfo(trackedCount: tracked.names.count)
        info.user = state.user
        info.database = state.database
        info.peer = state.peer
        info.applicationName = state.applicationName
        info.protocolMinor = Int(state.protocolMinor)
        for p in state.parameters {
            if let t = tracked.index(of: p.name) { info.params.values[t] = p.value }
        }
        for s in state.prepared {
            info.preparedNames()[s.name] = s.body.withUnsafeBytes { statements.intern($0) }
        }
        // Carried session state: replayed on this worker's servers at link (SessionHooks.swift).
        for s in state.settings { info.session.settings.apply(CarriedSetting(key: s.key, set: s.set, reset: s.reset)) }
        for s in state.sqlPrepared { info.session.prepared[s.name] = s.value }
        info.session.preparedLimit = config.maxPreparedStatements
        guard let ci = newClient(fd, isUnix: state.isUnix, connectedAt: state.connectedAt, cancelKey: state.secretKey,
                                 info: info, state: .idle) else { return nil }
        noteClientSettings(ci, info)
        let poolUser = poolUser(database: state.database, clientUser: state.user)
        guard let p = pool(database: state.database, user: poolUser) else {
            failClient(ci, code: SQLState.invalidCatalogName, message: "no such database: \(state.database)")
            return nil
        }
        clients[ci].pool = p
        pools[Int(p)].clientCount += 1
        adoptClientLimits(info, entry: config.database(named: state.database))
        if pools[Int(p)].scramClientKey == nil && !state.scramClientKey.isEmpty && poolUser == state.user {
            pools[Int(p)].scramClientKey = state.scramClientKey
        }
        if !state.pending.isEmpty {
            guard state.pending.count <= buffers.size else {
                failClient(ci, code: SQLState.programLimitExceeded, message: "handed-off input too large")
                return nil
            }
            let b = buffers.take()
            state.pending.withUnsafeBytes { b.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            clients[ci].io.input.base = b
            clients[ci].io.input.end = state.pending.count
        }
        if state.processID != clientProcessID(ci) {
            handoff.adopted[state.processID] = (ci, clients[ci].io.gen)
            handoff.original[ci] = (state.processID, clients[ci].io.gen)
            if handoff.adopted.count > 2 * clients.used + 1024 { pruneAdopted() }
        }
        handoff.adoptedCount += 1
        return ci
    }

    /// With peering every client of this slot has the same process id (`PeerCancelKey`), an adopted
    /// one too (same slot, same peer id), so the secret names the client: a walk of the table, as
    /// PgBouncer walks its client lists. Cancels are rare; nothing is kept per client for them.
    func peerCancelTarget(processID: Int32, secretKey: UInt32) -> Int32 {
        guard processID == PeerCancelKey.processID(slot: slot, peer: peerID) else { return -1 }
        for i in clients.indices {
            let ci = Int32(i)
            if clients[ci].state != .free && clients[ci].cancelKey == secretKey && clients[ci].admin == .none { return ci }
        }
        return -1
    }

    /// Forgets adopted keys whose clients have left.
    func pruneAdopted() {
        handoff.adopted = handoff.adopted.filter { clients[$0.value.ci].io.gen == $0.value.gen && clients[$0.value.ci].state != .free }
        handoff.original = handoff.original.filter { clients[$0.key].io.gen == $0.value.gen && clients[$0.key].state != .free }
    }

    /// The table index a cancel key names: ours (`CancelProcessID`), else a key a client brought
    /// from a predecessor. -1 when none matches.
    func cancelTarget(processID: Int32, secretKey: UInt32) -> Int32 {
        if peerID > 0 { return peerCancelTarget(processID: processID, secretKey: secretKey) }
        let ci = CancelProcessID(raw: processID).index
        if ci < Int32(clients.capacity), clients[ci].state != .free, clients[ci].cancelKey == secretKey,
           handoff.original[ci] == nil || handoff.original[ci]!.gen != clients[ci].io.gen {
            return ci
        }
        if let a = handoff.adopted[processID], clients[a.ci].io.gen == a.gen, clients[a.ci].cancelKey == secretKey {
            return a.ci
        }
        return -1
    }
}
