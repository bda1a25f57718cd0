// Server connections that move between workers. When the supervisor moves pool quota from this worker
// to one whose clients wait, the lowering names that worker (`quota` with `moveTo`): the idle servers
// above the new quota go there, socket and state (`HandoffServer`), through the supervisor
// (`moveServer` → `adoptServer`), instead of being closed here and opened again there. PostgreSQL keeps
// the same backend: no fork, no login, warm caches, the prepared statements it holds.
import Shared
import Glibc

/// This worker's server moves, for its log lines and SHOW/metrics.
struct ServerMoveCounts {
    var movedOut = 0
    var adopted = 0
    /// Idle servers above a lowered quota that could not move (TLS, bytes in flight): retired as before.
    var notMovable = 0
}

extension Worker {
    /// A server may move when nothing of it lives only in this process: plaintext (its OpenSSL state
    /// cannot cross), no client linked, no query or internal query running, nothing buffered either
    /// way, outside a transaction, no cancel aimed at it, and clean.
    func canMove(_ si: Int32) -> Bool {
        let s = servers[si]
        return (s.state == .idle || s.state == .active) && s.client < 0 && s.io.tls == nil
            && s.tlsPhase == .none && s.io.out.isEmpty && s.io.input.isEmpty && s.io.input.partial == 0
            && !s.io.eof && !s.io.hangup && s.pendingSyncs == 0 && !s.unsynced && s.internalQueries == 0
            && s.answerCount == 0 && s.txStatus == UInt8(ascii: "I") && !s.dirty && !s.needsReset
            && !s.unreliable && s.cancelsInFlight == 0 && s.info != nil && !s.sessionCarried
    }

    /// Hands server `si` to the worker in slot `target` through the supervisor; true when it is gone
    /// from here (the outbox owns its socket now). False, and nothing changed, when it cannot move.
    func moveServer(_ si: Int32, toSlot target: Int) -> Bool {
        guard controlFD >= 0, target != Int(slot), canMove(si), let state = serverHandoffState(si) else {
            moves.notMovable += 1
            return false
        }
        let p = Int(servers[si].pool)
        let bytes = ControlMessage.moveServer(targetSlot: Int32(target), state: state.encode()).encode()
        guard bytes.count <= ControlMessage.maximumSize else {
            moves.notMovable += 1
            return false
        }
        // Out of our epoll set first: the socket stays open in flight, so its registration would not end
        // with our descriptor.
        let fd = servers[si].io.fd
        epoll.remove(fd)
        servers[si].io.fd = -1
        log.debug("S-\(servers[si].id): idle server moves to worker \(target) (\(pools[p].database)/\(pools[p].user), backend pid \(servers[si].backendPID))")
        freeServerRecord(si)
        sendControlBytes(bytes, passing: fd)
        moves.movedOut += 1
        return true
    }

    /// What another worker needs to take over server `si` without a login (`HandoffServer`): its pool,
    /// identity, tracked parameter values, the statements prepared on it, the pool's welcome set.
    func serverHandoffState(_ si: Int32) -> HandoffServer? {
        guard let info = servers[si].info else { return nil }
        let p = Int(servers[si].pool)
        var state = HandoffServer(database: pools[p].database, user: pools[p].user, id: servers[si].id,
                                  backendPID: servers[si].backendPID, backendKey: servers[si].backendKey,
                                  createdAt: servers[si].createdAt, hostKey: info.hostKey, address: info.address)
        for (t, name) in tracked.names.enumerated() {
            if let v = info.params.values[t] { state.parameters.append(HandoffParameter(name: name, value: v)) }
        }
        // In id order, as a client's (clientHandoffState): a fresh registry then gives them the same ids.
        for id in info.prepared.keys.sorted() {
            if let body = statements.body(id) { state.prepared.append(HandoffServerStatement(serverID: id, body: body)) }
        }
        for (name, value) in pools[p].welcome ?? [] { state.welcome.append(HandoffParameter(name: name, value: value)) }
        return state
    }

    /// A server connection another worker gave up for our waiting clients: it joins the pool as a
    /// server that just became free, without a login. The quota the supervisor raises next already
    /// counts it; until then the pool's quota is at least what it holds, so it is not shed at once.
    /// A state that cannot be read, or a pool that no longer exists, closes the socket (PostgreSQL
    /// ends that session; nobody was using it).
    func adoptServer(_ bytes: [UInt8], fd: Int32) {
        guard fd >= 0 else {
            log.warning("a moved server connection came without its socket")
            return
        }
        let decoded: Result<HandoffServer, HandoffDecodeError> = bytes.withUnsafeBytes { raw in
            do throws(HandoffDecodeError) {
                return .success(try HandoffServer.decode(raw))
            } catch {
                return .failure(error)
            }
        }
        let state: HandoffServer
        switch decoded {
        case .success(let s):
            state = s
        case .failure(let error):
            log.warning("\(error); closing that server connection")
            Posix.close(fd)
            return
        }
        guard let p = pool(database: state.database, user: state.user) else {
            log.warning("a server connection moved here for \(state.database)/\(state.user), which is not configured: closed")
            Posix.close(fd)
            return
        }
        let pi = Int(p)
        let (si, stale) = adoptServerRecord(state, fd: fd, pool: p)
        moves.adopted += 1
        log.debug("S-\(state.id): server connection adopted from another worker (\(state.database)/\(state.user), backend pid \(state.backendPID)\(stale.isEmpty ? "" : ", \(stale.count) statements to deallocate"))")
        if !stale.isEmpty {
            setServerState(si, .resetting)
            guard watchServer(si) else { return }
            scratch.clear()
            Frontend.query(into: &scratch, sql: stale.map { "DEALLOCATE \(StatementRegistry.serverName($0))" }.joined(separator: "; "))
            servers[si].io.out.append(scratch)
            servers[si].internalQueries += 1
            holdAdopted(pi)
            flushServer(si)
            return
        }
        setServerState(si, .idle)
        guard watchServer(si) else { return }
        holdAdopted(pi)
        serveWaiting(p)
    }

    /// A server record for a server connection another process gave up (still `.free`: the caller moves
    /// it on through `setServerState`): same `S-<id>`, backend pid and cancel key, creation time, host,
    /// tracked parameter values. `stale`: statements the server holds under a name (`PGSWIFT_<old
    /// worker's id>`) that means another statement here, or nothing yet: the caller drops them before
    /// anyone uses the server. Also gives the pool its welcome set if it had none.
    func adoptServerRecord(_ state: HandoffServer, fd: Int32, pool p: Int32) -> (si: Int32, stale: [Int32]) {
        let pi = Int(p)
        try? Posix.setNonBlocking(fd)
        let si = servers.allocate()
        servers[si].io.fd = fd
        servers[si].io.readable = false
        servers[si].io.writable = true
        servers[si].id = state.id
        servers[si].pool = p
        servers[si].createdAt = state.createdAt
        servers[si].backendPID = state.backendPID
        servers[si].backendKey = state.backendKey
        servers[si].txStatus = UInt8(ascii: "I")
        servers[si].lastReady = now
        let info = ServerInfo(trackedCount: tracked.names.count)
        info.address = state.address
        info.hostKey = state.hostKey
        info.socketAddress = Sockets.peerAddress(fd)
        for param in state.parameters {
            if let t = tracked.index(of: param.name) { info.params.values[t] = param.value }
        }
        // The server knows its statements as PGSWIFT_<old worker's id>: those our registry gives the same
        // id stay usable; the others must go before anyone uses the server, since that name may mean
        // another statement here.
        var stale: [Int32] = []
        for s in state.prepared {
            let id = s.body.withUnsafeBytes { statements.intern($0) }
            if id == s.serverID {
                info.prepared[id] = 0
            } else {
                stale.append(s.serverID)
            }
        }
        servers[si].info = info
        servers[si].paramsKey = serverParamsKey(si)
        if pools[pi].welcome == nil && !state.welcome.isEmpty {
            setWelcome(pi, state.welcome.map { ($0.name, $0.value) })
            finishWelcomeWaits(pi)
        }
        return (si, stale)
    }

    /// The pool's quota covers what it holds now, until the supervisor's raise (which counts the
    /// moved server) replaces it.
    private func holdAdopted(_ pi: Int) {
        if pools[pi].serverCount > pools[pi].limit {
            pools[pi].quota = max(pools[pi].quota, pools[pi].serverCount)
            updateLimit(pi)
        }
    }
}
