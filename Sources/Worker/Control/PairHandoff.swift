// Rolling restarts: a client moves to the successor together with the server connection linked to it
// (issue 18). A session-mode client whose server is quiet, or a transaction-mode client linked inside a
// transaction, goes with its server in one datagram on the handoff socket: both sockets (SCM_RIGHTS)
// and `HandoffPair`. The successor links them again as they were: the same PostgreSQL session, with
// its temp tables, SETs and open transaction; no SET, no reset, no login.
import Shared
import Glibc

extension Worker {
    // MARK: The draining worker

    /// Client `ci` and its server can move together now: the successor adopts pairs, the pool mode keeps
    /// the link across queries (session mode; transaction mode inside a transaction), nothing of either
    /// lives only in this process (TLS), and nothing is in flight or half done in either direction:
    /// the server's last message was a ReadyForQuery that has reached the client.
    func canMovePair(_ ci: Int32) -> Bool {
        guard handoff.outFD >= 0, handoff.successorFeatures & WorkerFeatures.pairMoves != 0,
              clients[ci].state == .active, clients[ci].pool >= 0 else { return false }
        let si = clients[ci].server
        // A replication client's own server stays: a walsender streams without pause, and the successor
        // could not tell its link from a pooled one. It leaves with its client or at drain_timeout.
        guard si >= 0, servers[si].client == ci, servers[si].state == .active, servers[si].replication == .none
        else { return false }
        switch pools[Int(clients[ci].pool)].mode {
        case .session:
            break
        case .transaction:
            // Outside a transaction the server is on its way back to the pool; the client moves alone then.
            guard servers[si].txStatus != UInt8(ascii: "I") else { return false }
        case .statement:
            return false
        }
        let s = servers[si]
        guard s.io.tls == nil, s.tlsPhase == .none, s.io.out.isEmpty, s.io.input.isEmpty, s.io.input.partial == 0,
              !s.io.eof, !s.io.hangup, s.pendingSyncs == 0, !s.unsynced, s.internalQueries == 0, s.answerCount == 0,
              !s.copyIn, !s.skipping, !s.copyDataSent, !s.unreliable, !s.dirty, s.cancelsInFlight == 0,
              !s.releaseOnFlush, !s.checking, let info = s.info, info.parsesInFlight.isEmpty,
              info.closesInFlight.isEmpty, info.pendingErrors.isEmpty else { return false }
        // The client's side (TLS, pending bytes, a message half read) is checked by `clientHandoffState`.
        return true
    }

    /// Moves client `ci` and its linked server to the successor; true when both are gone from here.
    /// False, and nothing changed, when the pair cannot move now (it is tried again at its next
    /// ReadyForQuery and every 100 ms) or the datagram could not be sent.
    @inline(never)  // cold: only while draining
    @discardableResult
    func handOffPair(_ ci: Int32) -> Bool {
        guard canMovePair(ci), let client = clientHandoffState(ci, carriedState: false) else { return false }
        let si = clients[ci].server
        guard let server = serverHandoffState(si) else { return false }
        let mode = pools[Int(clients[ci].pool)].mode
        let pair = HandoffPair(client: client, server: server, poolMode: mode.rawValue, txStatus: servers[si].txStatus,
                               needsReset: servers[si].needsReset, lastReady: servers[si].lastReady,
                               xactStart: servers[si].xactStart)
        let bytes = pair.encode()
        guard bytes.count <= HandoffClient.maximumSize else {
            log.debug("C-\(clients[ci].id): state with its server too large to hand off (\(bytes.count) bytes); it stays")
            return false
        }
        guard sendToSuccessor(bytes, fds: [clients[ci].io.fd, servers[si].io.fd]) else { return false }
        // The successor holds both sockets now: ours leave the epoll set (a registration lives as long as
        // any process keeps the file open) and are closed with their records; nothing is sent on them.
        epoll.remove(clients[ci].io.fd)
        epoll.remove(servers[si].io.fd)
        log.debug("C-\(clients[ci].id): handed to the successor with S-\(servers[si].id) (\(mode) mode, transaction status \(Character(UnicodeScalar(servers[si].txStatus))), backend pid \(servers[si].backendPID))")
        unlink(client: ci, server: si)
        freeServerRecord(si)
        handoff.original[ci] = nil
        handoff.moved += 1
        handoff.movedPairs += 1
        freeClient(ci)
        return true
    }

    // MARK: The successor

    /// A datagram that says it is a pair: exactly two sockets, the client's then the server's.
    func adoptPairDatagram(_ raw: UnsafeRawBufferPointer, fds: [Int32]) {
        guard fds.count == 2 else {
            log.warning("client-server handoff with \(fds.count) sockets instead of 2: closed")
            for fd in fds { Posix.close(fd) }
            return
        }
        do throws(HandoffDecodeError) {
            adoptPair(try HandoffPair.decode(raw), clientFD: fds[0], serverFD: fds[1])
        } catch {
            refusePair(clientFD: fds[0], serverFD: fds[1], reason: "\(error)")
        }
    }

    /// Takes over a client and its server from the predecessor and links them again as they were:
    /// the client's state as a lone client's (login state, statements, cancel key, unprocessed bytes),
    /// the server's as a moved server's, and the link's (transaction status, reset flag, timestamps; the
    /// flags the pool's mode gives a link). Statements the server holds under a name that means another
    /// statement here are closed first with protocol-level Close messages and a Sync, answers swallowed:
    /// PostgreSQL takes those even inside an aborted transaction, where DEALLOCATE is refused.
    func adoptPair(_ pair: HandoffPair, clientFD: Int32, serverFD: Int32) {
        let database = pair.server.database, user = pair.server.user
        guard let p = pool(database: database, user: user), poolUser(database: pair.client.database,
                                                                       clientUser: pair.client.user) == user,
              pair.client.database == database else {
            refusePair(clientFD: clientFD, serverFD: serverFD,
                       reason: "its pool \(database)/\(user) is not configured here")
            return
        }
        let mode = pools[Int(p)].mode
        guard mode.rawValue == pair.poolMode else {
            refusePair(clientFD: clientFD, serverFD: serverFD,
                       reason: "its pool \(database)/\(user) is in \(mode) mode here, \(pair.poolMode) mode there")
            return
        }
        // The same pool key as the server's (checked above), so the client joins the server's pool.
        guard let ci = adoptClientRecord(pair.client, fd: clientFD) else {
            // The client was refused (it got an error): its server session goes too.
            terminateAndClose(serverFD)
            return
        }
        let (si, stale) = adoptServerRecord(pair.server, fd: serverFD, pool: p)
        join(ci, si)
        servers[si].txStatus = pair.txStatus
        servers[si].needsReset = pair.needsReset
        servers[si].lastReady = pair.lastReady
        servers[si].xactStart = pair.xactStart
        // A failure closes the server, and its client with an error (closeServer).
        guard watchServer(si) else { return }
        handoff.adoptedPairs += 1
        log.debug("C-\(clients[ci].id): adopted from the predecessor with S-\(pair.server.id) (\(database)/\(user), \(mode) mode, transaction status \(Character(UnicodeScalar(pair.txStatus))), backend pid \(pair.server.backendPID)\(stale.isEmpty ? "" : ", \(stale.count) statements to close"))")
        if !stale.isEmpty {
            scratch.clear()
            for id in stale { Frontend.close(into: &scratch, kind: UInt8(ascii: "S"), name: StatementRegistry.serverName(id)) }
            scratch.appendEmptyMessage(FrontendType.sync)
            servers[si].io.out.append(scratch)
            servers[si].internalQueries += 1
            if !flushServer(si) && servers[si].state == .free { return }
        }
        if hot.pointee.draining && handOffPair(ci) { return }
        clientData(ci)
    }

    /// A pair that cannot be served here: the client gets a FATAL error (it moved between messages,
    /// so the error is well framed) and both sockets close; PostgreSQL ends the session (rolling back
    /// what was open) on the Terminate or the closed socket.
    func refusePair(clientFD: Int32, serverFD: Int32, reason: String) {
        log.warning("cannot adopt a client with its server connection (\(reason)): both closed")
        scratch.clear()
        Backend.errorResponse(into: &scratch, ErrorFields(severity: "FATAL", code: SQLState.adminShutdown,
                                                          message: "pgswift could not move this connection in an upgrade"))
        scratch.withUnsafeBytes { _ = try? Posix.send(clientFD, $0.baseAddress!, $0.count) }
        Posix.close(clientFD)
        terminateAndClose(serverFD)
    }

    /// A server connection nobody will use: Terminate (best effort), then close.
    private func terminateAndClose(_ fd: Int32) {
        scratch.clear()
        scratch.appendEmptyMessage(FrontendType.terminate)
        scratch.withUnsafeBytes { _ = try? Posix.send(fd, $0.baseAddress!, $0.count) }
        Posix.close(fd)
    }
}
