// Connection events and endings: epoll dispatch per state, errors to clients, close and free.
import Shared
import Glibc
import CLinux

extension Worker {
    // MARK: Events

    func clientEvent(_ ci: Int32, _ events: UInt32) {
        if events & cl_EPOLLOUT() != 0 { clients[ci].io.writable = true }
        if let t = clients[ci].io.tls, !t.pointee.out.isEmpty, !flushClientTLS(ci, t) { return }
        let hangup = events & (cl_EPOLLERR() | cl_EPOLLHUP()) != 0
        if events & (cl_EPOLLIN() | cl_EPOLLRDHUP() | cl_EPOLLERR() | cl_EPOLLHUP()) != 0 { clients[ci].io.readable = true }
        if events & (cl_EPOLLRDHUP() | cl_EPOLLERR() | cl_EPOLLHUP()) != 0 { noteHangup(client: ci) }
        switch clients[ci].state {
        case .startup, .auth:
            if !flushClient(ci) && clients[ci].state == .free { return }
            clientLoginInput(ci)
        case .closing:
            if hangup { freeClient(ci) } else { flushClient(ci) }
        case .waitWelcome, .replicationWait, .replicationLogin:
            // Nothing is read until the pool's first server has logged in (a replication client: until
            // its own server is ready, then at once); one that gives up meanwhile closes its socket,
            // which must not hold a place in the pool's queue until client_login_timeout.
            if hangup || events & cl_EPOLLRDHUP() != 0 {
                closeClient(ci, reason: "client went away during login", notify: false)
                return
            }
            flushClient(ci)
        case .waitServer:
            if hangup || events & cl_EPOLLRDHUP() != 0 {
                closeClient(ci, reason: "client went away while waiting for a server", notify: false)
                return
            }
            flushClient(ci)
        case .idle, .active:
            if clients[ci].admin != .none { adminInput(ci); return }
            if !clients[ci].io.out.isEmpty && !flushClient(ci) { return }
            let si = clients[ci].server
            if si >= 0 && (servers[si].io.input.hasUnsent || servers[si].io.input.hasUnscanned) {
                serverData(si)
                if clients[ci].state == .free { return }
            }
            clientData(ci)
        case .free:
            break
        }
    }

    func serverEvent(_ si: Int32, _ events: UInt32) {
        if events & cl_EPOLLOUT() != 0 { servers[si].io.writable = true }
        if let t = servers[si].io.tls, !t.pointee.out.isEmpty, !flushServerTLS(si, t) { return }
        if events & (cl_EPOLLIN() | cl_EPOLLRDHUP() | cl_EPOLLERR() | cl_EPOLLHUP()) != 0 { servers[si].io.readable = true }
        if events & (cl_EPOLLRDHUP() | cl_EPOLLERR() | cl_EPOLLHUP()) != 0 { servers[si].io.hangup = true }
        switch servers[si].state {
        case .connecting:
            if let err = Sockets.pendingError(servers[si].io.fd) {
                // PgBouncer's "connect failed" close, with the cause on a line of its own.
                let address = servers[si].info?.address ?? ""
                log.warning("\(serverLogPrefix(si)) connect to \(address) failed: \(err)")
                serverLoginFailed(si, ErrorFields(severity: "FATAL", code: SQLState.connectionFailure,
                    message: "could not connect to server \(address): \(err)"), closeReason: "connect failed")
                return
            }
            if events & cl_EPOLLOUT() != 0 { serverConnected(si) }
        case .login:
            if !flushServer(si) && servers[si].state == .free { return }
            serverLoginInput(si)
        case .active:
            if !servers[si].io.out.isEmpty && !flushServer(si) { return }
            let ci = servers[si].client
            if ci >= 0 && clients[ci].io.input.hasUnsent {
                clientData(ci)
                if servers[si].state != .active { return }
            }
            serverData(si)
        case .idle:
            idleServerInput(si)
        case .resetting:
            if !servers[si].io.out.isEmpty && !flushServer(si) { return }
            serverData(si)
        case .cancelRequest:
            cancelConnectionEvent(si)
        case .authQuery:
            authQueryServerEvent(si)
        case .listening:
            listenServerInput(si)
        case .beingCanceled:
            idleServerInput(si)
        case .closing:
            retiringInput(si)
        case .free:
            break
        }
    }

    /// An idle server said something: a notice or parameter change is dropped, an error or EOF ends it.
    func idleServerInput(_ si: Int32) {
        while servers[si].io.readable {
            switch readInto(server: si) {
            case .data, .full:
                let dropped = servers[si].io.input.end - servers[si].io.input.start
                let first = servers[si].io.input.base!.load(fromByteOffset: servers[si].io.input.start, as: UInt8.self)
                servers[si].io.input.start = servers[si].io.input.end
                servers[si].io.input.scan = servers[si].io.input.end
                servers[si].io.releaseIfEmpty(buffers)
                if first == BackendType.errorResponse {
                    closeServer(si, reason: "idle server sent an error (\(dropped) bytes)")
                    return
                }
            case .wouldBlock:
                return
            case .closed:
                closeServer(si, reason: "idle server closed the connection")
                return
            }
        }
    }

    // MARK: New clients

    /// A client record for a socket pgswift now owns, accepted or adopted from a predecessor
    /// (Handoff.swift), registered with epoll for good; nil (the record freed, the socket closed) when
    /// that fails.
    func newClient(_ fd: Int32, isUnix: Bool, connectedAt: Int64, cancelKey: UInt32, info: ClientInfo,
                   state: ClientState) -> Int32? {
        let ci = clients.allocate()
        clients[ci].io.fd = fd
        clients[ci].id = newConnectionID()
        clients[ci].isUnix = isUnix
        clients[ci].io.readable = true
        clients[ci].io.writable = true
        clients[ci].io.eof = false
        clients[ci].connectedAt = connectedAt
        clients[ci].cancelKey = cancelKey
        clients[ci].info = info
        setClientState(ci, state)
        do {
            try epoll.add(fd, events: [.input, .output, .readHangup, .edgeTriggered],
                          data: WorkerToken(.client, generation: clients[ci].io.gen, index: ci).raw)
            return ci
        } catch {
            log.error("epoll add for C-\(clients[ci].id): \(error)")
            freeClient(ci)
            return nil
        }
    }

    // MARK: Errors to clients

    /// Sends a FATAL error and closes the client once it is written.
    @inline(never)  // error path: kept out of the forward loops it is called from
    func failClient(_ ci: Int32, code: String, message: String) {
        sendClientError(ci, ErrorFields(severity: "FATAL", code: code, message: message), close: true)
    }

    /// True while the client has been sent the start of a server message whose rest has not come yet
    /// (forwarded piecemeal, `IOBuf.partial`): anything pgswift wrote now would land inside it.
    func clientMidMessage(_ ci: Int32) -> Bool {
        let si = clients[ci].server
        return si >= 0 && servers[si].io.input.partial > 0
    }

    func sendClientError(_ ci: Int32, _ fields: ErrorFields, close: Bool) {
        guard clients[ci].state != .free, clients[ci].state != .closing else { return }
        if clientMidMessage(ci) {
            // An error now would corrupt the message being forwarded: the socket is closed instead,
            // after what was forwarded so far.
            closeClientMidMessage(ci, reason: fields.message)
            return
        }
        // log_pooler_errors: PgBouncer logs every error it sends itself as a warning ("pooler error").
        if config.logPoolerErrors { log.warning("C-\(clients[ci].id): pooler error: \(fields.message)") }
        scratch.clear()
        Backend.errorResponse(into: &scratch, fields)
        clients[ci].io.out.append(scratch)
        if !close {
            flushClient(ci)
            return
        }
        logClientClosing(ci, fields.message)
        closeOnceFlushed(ci)
    }

    /// Closes a client whose stream stops inside a server message: no error can be framed, so the
    /// closed socket is the error (libpq: "server closed the connection unexpectedly").
    func closeClientMidMessage(_ ci: Int32, reason: String) {
        logClientClosing(ci, "\(reason); inside a server message, closed without an error")
        closeOnceFlushed(ci)
    }

    /// Gives back the client's server and queue place, then frees it once what is queued for it
    /// (its final error, or the forwarded bytes) is written (`flushClient`; the janitor gives up
    /// after 5 s).
    private func closeOnceFlushed(_ ci: Int32) {
        detachClient(ci)
        setClientState(ci, .closing)
        flushClient(ci)
    }

    // MARK: Closing

    /// Ends a client: its server goes back to the pool (or is closed if dirty), then the socket closes.
    /// `notify`: a FATAL `reason` (SQLSTATE `code`) is written first, best effort.
    @inline(never)  // error path: kept out of the forward loops it is called from
    func closeClient(_ ci: Int32, reason: String, notify: Bool, quiet: Bool = false, code: String = SQLState.adminShutdown) {
        guard clients[ci].state != .free else { return }
        if notify && clients[ci].state != .closing && !clientMidMessage(ci) {
            if config.logPoolerErrors { log.warning("C-\(clients[ci].id): pooler error: \(reason)") }
            scratch.clear()
            Backend.errorResponse(into: &scratch, ErrorFields(severity: "FATAL", code: code, message: reason))
            clients[ci].io.out.append(scratch)
            _ = flushClientBestEffort(ci)
        }
        if !quiet { logClientClosing(ci, reason) }
        detachClient(ci)
        freeClient(ci)
    }

    private func flushClientBestEffort(_ ci: Int32) -> Bool {
        let o = clients[ci].io.out
        guard let b = o.base, o.end > o.start else { return true }
        _ = try? clients[ci].io.send(b + o.start, o.end - o.start)
        return true
    }

    /// Takes the client out of its pool's queues and gives back its server.
    func detachClient(_ ci: Int32) {
        switch clients[ci].state {
        case .waitServer:
            setClientState(ci, .idle)  // out of the wait queue
        case .active:
            detachServer(fromClient: ci)
        case .replicationWait, .replicationLogin:
            replicationClientLeaves(ci)  // its own server, if launched, closes (Replication.swift)
        default:
            break
        }
        if clients[ci].pool >= 0 {
            foldClientBytes(ci)
            pools[Int(clients[ci].pool)].clientCount -= 1
            // Counted only while it belongs to the pool (States.swift).
            if clients[ci].state == .waitWelcome { pools[Int(clients[ci].pool)].welcomeWaitCount -= 1 }
            clients[ci].pool = -1
        }
    }

    func freeClient(_ ci: Int32) {
        guard clients[ci].state != .free else { return }
        if clients[ci].pool >= 0 { detachClient(ci) }
        listenClientGone(ci)  // ListenRelay.swift
        freeTLS(client: ci)
        if clients[ci].io.fd >= 0 { Posix.close(clients[ci].io.fd) }
        clientLeft(ci)
        if let info = clients[ci].info, info.countedDB != 0 || info.countedUser != 0 { giveBackClientPlaces(info) }
        if let b = clients[ci].io.input.base { buffers.give(b) }
        clients[ci].largeParse.release()
        clients[ci].io.out.release()
        setClientState(ci, .free)
        let gen = clients[ci].io.gen &+ 1
        clients[ci] = Client()
        clients[ci].io.gen = gen
        clients.release(ci)
    }

    /// The server connection broke while in use: its client gets a clean error, the pool refills.
    @inline(never)  // error path: kept out of the forward loops it is called from
    func serverBroken(_ si: Int32, reason: String) {
        guard servers[si].state != .free else { return }
        let ci = servers[si].client
        let p = servers[si].pool
        if ci >= 0 {
            // Whatever the server managed to say (a FATAL from pg_terminate_backend) goes first.
            handOverUnsent(si, to: ci)
            dropLinkedClient(ci, si, ErrorFields(severity: "FATAL", code: SQLState.connectionFailure,
                                                 message: "server conn crashed? (\(reason))"))
        }
        closeServer(si, reason: reason)
        if p >= 0 { launchIfNeeded(p) }
    }

    /// Server bytes already scanned for the linked client but not yet sent go to the client's own queue,
    /// so that an error pgswift writes after them lands on a message boundary (a short send may have
    /// left the client inside a message whose rest is still in the server's buffer).
    func handOverUnsent(_ si: Int32, to ci: Int32) {
        if servers[si].io.input.hasUnsent, let b = servers[si].io.input.base {
            clients[ci].io.out.append(UnsafeRawBufferPointer(start: b + servers[si].io.input.start,
                                                          count: servers[si].io.input.scan - servers[si].io.input.start))
            servers[si].io.input.start = servers[si].io.input.scan
        }
    }

    /// The server under a linked client is going: the pair is undone and the client gets `fields` and
    /// is closed, or — inside a server message, where an error would be read as its bytes — the closed
    /// socket.
    private func dropLinkedClient(_ ci: Int32, _ si: Int32, _ fields: ErrorFields) {
        let midMessage = servers[si].io.input.partial > 0
        unlink(client: ci, server: si)
        if midMessage {
            closeClientMidMessage(ci, reason: fields.message)
        } else {
            sendClientError(ci, fields, close: true)
        }
    }

    /// query_timeout, transaction_timeout, idle_transaction_timeout (Janitor.swift): as in PgBouncer, the
    /// linked client gets FATAL 08P01 with PgBouncer's reason and is closed, and the server is closed,
    /// never handed to another client. A query still running is cancelled first: closing the socket
    /// alone would let the backend run on until it next writes.
    func serverTimedOut(_ si: Int32, reason: String) {
        let p = servers[si].pool
        let ci = servers[si].client
        let running = servers[si].pendingSyncs > 0 || servers[si].unsynced
        log.debug("S-\(servers[si].id): \(reason): backend pid \(servers[si].backendPID)"
                  + (ci >= 0 ? ", client C-\(clients[ci].id)" : "") + (running ? ", query cancelled" : ""))
        if running { sendCancel(toServer: si) }
        closeWithClient(si, reason: reason)
        if p >= 0 { launchIfNeeded(p) }
    }

    /// Closes a server and the client linked to it, which gets FATAL 08P01 `reason` after whatever
    /// server bytes it was already owed (PgBouncer's disconnect_server of a linked server).
    func closeWithClient(_ si: Int32, reason: String) {
        let ci = servers[si].client
        if ci >= 0 {
            handOverUnsent(si, to: ci)
            dropLinkedClient(ci, si, ErrorFields(severity: "FATAL", code: SQLState.protocolViolation, message: reason))
        }
        closeServer(si, reason: reason)
    }

    func closeServer(_ si: Int32, reason: String) {
        guard servers[si].state != .free else { return }
        // PgBouncer logs every server it closes (log_disconnections); a cancel connection is not one.
        if servers[si].state == .cancelRequest {
            log.debug("S-\(servers[si].id): closing: \(reason)")
        } else {
            logServerClosing(si, reason)
        }
        if servers[si].listener { listenServerClosing(si, reason: reason) }  // ListenRelay.swift
        switch servers[si].state {
        case .active:
            let ci = servers[si].client
            if ci >= 0 {
                dropLinkedClient(ci, si, ErrorFields(severity: "FATAL", code: SQLState.connectionFailure,
                                                     message: "server connection closed: \(reason)"))
            }
        case .authQuery:
            authQueryServerClosed(si, reason: reason)
        default:
            // A replication client's own server, before it was ready: the client's login fails with it.
            if servers[si].replication != .none && servers[si].client >= 0 { replicationLoginFailed(si, reason: reason) }
        }
        if servers[si].state == .cancelRequest { cancelFinished(si) }
        freeServerRecord(si)
    }

    /// The end of a server record: out of its pool's lists and counts, socket closed (unless it was
    /// handed to another process: `io.fd` -1), buffers back, the slot free for reuse.
    func freeServerRecord(_ si: Int32) {
        setServerState(si, .free)  // out of the idle list and the pool's counts
        freeTLS(server: si)
        if servers[si].io.fd >= 0 { Posix.close(servers[si].io.fd) }
        if let b = servers[si].io.input.base { buffers.give(b) }
        servers[si].answers?.deallocate()
        servers[si].io.out.release()
        let gen = servers[si].io.gen &+ 1
        servers[si] = Server()
        servers[si].io.gen = gen
        servers.release(si)
    }
}
