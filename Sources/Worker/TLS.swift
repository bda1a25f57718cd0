// TLS in the worker: contexts (rebuilt on reload), the I/O entry points the data path branches to,
// and the client side (SSLRequest, direct TLS, handshake, sslmode checks, cert auth).
import Shared
import Glibc
import COpenSSL

/// The worker's TLS contexts: one per side, replaced on reload. Connections keep the context they
/// were made with (OpenSSL counts references), so a reload drops nobody.
struct WorkerTLS {
    var clientContext: TLSContext? = nil
    var serverContext: TLSContext? = nil
    let bio = TLSBIOMethod()

    /// Builds both contexts from a configuration; throws without changing anything when one fails.
    mutating func load(_ config: Config) throws(TLSSetupError) {
        let c = try TLSContext.acceptingClients(config.clientTLS)
        let s = try TLSContext.connectingServers(config.serverTLS)
        clientContext = c
        serverContext = s
    }
}

extension Worker {
    // MARK: I/O entry points (the plaintext path pays one nil test)

    @inline(__always)
    func sendToClient(_ ci: Int32, _ p: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        if let t = clients[ci].tls { return try TLSIO.send(t, p, count) }
        return try Posix.send(clients[ci].fd, p, count)
    }

    @inline(__always)
    func sendToServer(_ si: Int32, _ p: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        if let t = servers[si].tls { return try TLSIO.send(t, p, count) }
        return try Posix.send(servers[si].fd, p, count)
    }

    /// readInto(client:)'s TLS half: SSL_read into the same pooled buffer. `readable` stays set while
    /// OpenSSL may hold decrypted or read-ahead bytes, which no epoll edge would announce.
    func readTLS(client ci: Int32, _ t: TLSConn, _ b: UnsafeMutableRawPointer, _ end: Int) -> ReadOutcome {
        switch TLSIO.read(t, b + end, buffers.size - end) {
        case .data(let n, let drained):
            clients[ci].input.end = end &+ n
            clients[ci].statBytesIn &+= UInt64(n)  // stats hook
            if drained && !clients[ci].hangup { clients[ci].readable = false }
            return .data
        case .wouldBlock:
            clients[ci].readable = false
            releaseIfEmpty(client: ci)
            return .wouldBlock
        case .closed:
            clients[ci].eof = true
            clients[ci].readable = false
            return .closed
        case .failed(let reason):
            log.warning("C-\(clients[ci].id): TLS read failed: \(reason)")
            clients[ci].eof = true
            clients[ci].readable = false
            return .closed
        }
    }

    func readTLS(server si: Int32, _ t: TLSConn, _ b: UnsafeMutableRawPointer, _ end: Int) -> ReadOutcome {
        switch TLSIO.read(t, b + end, buffers.size - end) {
        case .data(let n, let drained):
            servers[si].input.end = end &+ n
            if drained && !servers[si].hangup { servers[si].readable = false }
            return .data
        case .wouldBlock:
            servers[si].readable = false
            releaseIfEmpty(server: si)
            return .wouldBlock
        case .closed:
            servers[si].eof = true
            servers[si].readable = false
            return .closed
        case .failed(let reason):
            log.warning("S-\(servers[si].id): TLS read failed: \(reason)")
            servers[si].eof = true
            servers[si].readable = false
            return .closed
        }
    }

    /// On EPOLLOUT: ciphertext left from an earlier write goes first. Returns false if the client was closed.
    func flushClientTLS(_ ci: Int32, _ t: TLSConn) -> Bool {
        do {
            try TLSIO.flush(t)
        } catch {
            closeClient(ci, reason: "write to client failed: \(error.errno)", notify: false)
            return false
        }
        if !t.pointee.out.isEmpty { clients[ci].writable = false }
        return true
    }

    func flushServerTLS(_ si: Int32, _ t: TLSConn) -> Bool {
        do {
            try TLSIO.flush(t)
        } catch {
            serverBroken(si, reason: "write to server failed: \(error.errno)")
            return false
        }
        if !t.pointee.out.isEmpty { servers[si].writable = false }
        return true
    }

    func freeTLS(client ci: Int32) {
        if let t = clients[ci].tls {
            TLSIO.free(t)
            clients[ci].tls = nil
        }
    }

    func freeTLS(server si: Int32) {
        if let t = servers[si].tls {
            TLSIO.free(t)
            servers[si].tls = nil
        }
    }

    /// Rebuilds the contexts after a reload: new certificates for new connections, nobody dropped.
    func reloadTLS() {
        do {
            try tlsState.load(config)
        } catch {
            log.error("TLS settings not reloaded, keeping the old certificates: \(error)")
        }
    }

    // MARK: Client side

    /// "TLSv1.3/TLS_AES_256_GCM_SHA384" for a client on TLS, "no" otherwise (login log line).
    func tlsDescription(client ci: Int32) -> String {
        guard clients[ci].usesTLS, let t = clients[ci].tls else { return "no" }
        return TLSIO.describe(t)
    }

    /// An SSLRequest: 'S' and the handshake when client TLS is on (TCP only, as PgBouncer), else false
    /// and the caller answers 'N'.
    func clientSSLRequest(_ ci: Int32) -> Bool {
        guard let ctx = tlsState.clientContext, !clients[ci].isUnix else { return false }
        if clients[ci].tls != nil {
            failClient(ci, code: SQLState.protocolViolation, message: "SSLRequest received over TLS")
            return true
        }
        // Bytes after SSLRequest would be plaintext a man in the middle slipped in (CVE-2021-23214).
        if clients[ci].input.start < clients[ci].input.end {
            failClient(ci, code: SQLState.protocolViolation, message: "received unencrypted data after SSL request")
            return true
        }
        if !flushClient(ci) {
            if clients[ci].state != .free { closeClient(ci, reason: "client does not read", notify: false) }
            return true
        }
        var s = UInt8(ascii: "S")
        let sent = (try? Posix.send(clients[ci].fd, &s, 1)) ?? .wouldBlock
        guard sent == .processed(1) else {
            closeClient(ci, reason: "could not answer SSLRequest", notify: false)
            return true
        }
        guard let t = TLSIO.make(ctx, fd: clients[ci].fd, accepting: true, method: tlsState.bio) else {
            closeClient(ci, reason: "TLS setup failed: \(TLSContext.lastError())", notify: false)
            return true
        }
        clients[ci].tls = t
        return true
    }

    /// The first byte was a TLS handshake record (PostgreSQL 17 `sslnegotiation=direct`): start TLS
    /// with what was read so far.
    func clientDirectTLS(_ ci: Int32) {
        guard let ctx = tlsState.clientContext, !clients[ci].isUnix else {
            closeClient(ci, reason: "direct TLS connection but TLS is not enabled", notify: false)
            return
        }
        guard let t = TLSIO.make(ctx, fd: clients[ci].fd, accepting: true, method: tlsState.bio) else {
            closeClient(ci, reason: "TLS setup failed: \(TLSContext.lastError())", notify: false)
            return
        }
        t.pointee.direct = true
        if let b = clients[ci].input.base {
            let n = clients[ci].input.end - clients[ci].input.start
            t.pointee.pre.append(UnsafeRawBufferPointer(start: b + clients[ci].input.start, count: n))
            consumeInput(client: ci, n)
        }
        clients[ci].tls = t
    }

    /// Advances a client's handshake. True once it is complete (login goes on over TLS).
    func clientHandshake(_ ci: Int32) -> Bool {
        guard let t = clients[ci].tls else { return true }
        switch TLSIO.handshake(t) {
        case .done:
            if t.pointee.direct && !TLSIO.alpnIsPostgres(t) {
                closeClient(ci, reason: "direct TLS connection without ALPN \"postgresql\"", notify: false)
                return false
            }
            clients[ci].usesTLS = true
            // The startup packet may have come with the last handshake bytes, already read by OpenSSL.
            clients[ci].readable = true
            log.debug("C-\(clients[ci].id): TLS established: \(TLSIO.describe(t))")
            return true
        case .wantMore:
            if !t.pointee.out.isEmpty { _ = flushClientTLS(ci, t) }
            return false
        case .failed(let reason):
            closeClient(ci, reason: "TLS handshake failed: \(reason)", notify: false)
            return false
        }
    }

    /// client_tls_sslmode require and above: a plaintext TCP startup is refused (Unix sockets are not
    /// subject to it, as in PgBouncer). Returns true when the client was refused.
    func clientTLSRefused(_ ci: Int32) -> Bool {
        guard let ctx = tlsState.clientContext, !clients[ci].isUnix, !clients[ci].usesTLS else { return false }
        switch ctx.mode {
        case .require, .verifyCA, .verifyFull:
            failClient(ci, code: SQLState.invalidAuthorizationSpecification, message: "SSL required")
            return true
        default:
            return false
        }
    }

    /// auth_type cert: a verified client certificate whose CommonName is the user name.
    func certAuthenticate(_ ci: Int32) {
        guard let info = clients[ci].info else { return }
        guard clients[ci].usesTLS, let t = clients[ci].tls else {
            certFailed(ci, reason: "TLS connection required")
            return
        }
        let (name, verified) = TLSIO.peerCommonName(t)
        guard let name else {
            certFailed(ci, reason: "no client certificate")
            return
        }
        guard verified else {
            certFailed(ci, reason: "client certificate not verified")
            return
        }
        guard name == info.user else {
            certFailed(ci, reason: "certificate CN \"\(name)\" does not match user")
            return
        }
        authenticated(ci)
    }

    private func certFailed(_ ci: Int32, reason: String) {
        let user = clients[ci].info?.user ?? ""
        log.warning("C-\(clients[ci].id): certificate authentication failed for user \"\(user)\" (\(reason))")
        failClient(ci, code: SQLState.invalidAuthorizationSpecification,
                   message: "certificate authentication failed for user \"\(user)\"")
    }

    /// tls-server-end-point data for SCRAM-SHA-256-PLUS, when the client is on TLS.
    func scramChannelBinding(_ ci: Int32) -> [UInt8]? {
        guard clients[ci].usesTLS, let t = clients[ci].tls else { return nil }
        let h = TLSIO.endPointHash(t)
        return h.isEmpty ? nil : h
    }
}
