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
    /// The server-side settings `serverContext` was built from (nil before the first load).
    var serverSettings: TLSSideSettings? = nil
    let bio = TLSBIOMethod()

    /// Builds both contexts from a configuration; throws without changing anything when one fails.
    mutating func load(_ config: Config) throws(TLSSetupError) {
        let c = try TLSContext.acceptingClients(config.resolvedTLS(\.clientTLS))
        let settings = config.resolvedTLS(\.serverTLS)
        let s = try TLSContext.connectingServers(settings)
        clientContext = c
        serverContext = s
        serverSettings = settings
    }
}

extension Worker {
    // MARK: TLS flush on EPOLLOUT (the I/O itself is Endpoint's)

    /// Ciphertext left from an earlier write goes first. Returns false if the client was closed.
    func flushClientTLS(_ ci: Int32, _ t: TLSConn) -> Bool {
        do {
            try clients[ci].io.flushTLS(t)
        } catch {
            closeClient(ci, reason: "write to client failed: \(error.errno)", notify: false)
            return false
        }
        return true
    }

    func flushServerTLS(_ si: Int32, _ t: TLSConn) -> Bool {
        do {
            try servers[si].io.flushTLS(t)
        } catch {
            serverBroken(si, reason: "write to server failed: \(error.errno)")
            return false
        }
        return true
    }

    func freeTLS(client ci: Int32) {
        if let t = clients[ci].io.tls {
            TLSIO.free(t)
            clients[ci].io.tls = nil
        }
    }

    func freeTLS(server si: Int32) {
        if let t = servers[si].io.tls {
            TLSIO.free(t)
            servers[si].io.tls = nil
        }
    }

    /// Rebuilds the contexts after a reload: new certificates for new connections, no client dropped.
    /// When the server-side settings changed (`serverChangeNeedsReconnect`), every pool's servers made
    /// with the old ones close as after RECONNECT (idle ones now, the others when released), as
    /// PgBouncer's RELOAD tags every pool dirty; not when the new settings could not be applied. A
    /// pool's failed login is forgotten then, as for a changed database entry (`refreshPools`): the new
    /// settings are worth a login at once, so a client arriving now is not given the cached error of a
    /// login made with the old ones (PgBouncer parks it until its next attempt, which then succeeds).
    /// Nor is a host this worker avoids after its connects failed (`noteConnectFailure`): a failed
    /// certificate check says nothing of the new settings, and with a host list the other hosts must not
    /// take every connection until the backoff runs out.
    func reloadTLS() {
        let before = tlsState.serverSettings
        do {
            try tlsState.load(config)
        } catch {
            log.error("TLS settings not reloaded, keeping the old certificates: \(error)")
            return
        }
        guard let before, before.serverChangeNeedsReconnect(to: config.resolvedTLS(\.serverTLS)) else { return }
        log.info("server TLS settings changed: closing the server connections made with the old ones")
        for pi in pools.indices {
            pools[pi].limits.closeBefore = now
            closeIdleBefore(pi)
            pools[pi].loginError = nil
            pools[pi].loginRefused = false
        }
        health.suspectUntil.removeAll()
        health.hostBackoff.removeAll()
    }

    // MARK: Client side

    /// "TLSv1.3/TLS_AES_256_GCM_SHA384" for a client on TLS, "no" otherwise (login log line).
    func tlsDescription(client ci: Int32) -> String {
        guard clients[ci].usesTLS, let t = clients[ci].io.tls else { return "no" }
        return TLSIO.describe(t)
    }

    /// An SSLRequest: 'S' and the handshake when client TLS is on (TCP only, as PgBouncer), else false
    /// and the caller answers 'N'.
    func clientSSLRequest(_ ci: Int32) -> Bool {
        guard let ctx = tlsState.clientContext, !clients[ci].isUnix else { return false }
        if clients[ci].io.tls != nil {
            failClient(ci, code: SQLState.protocolViolation, message: "SSLRequest received over TLS")
            return true
        }
        // Bytes after SSLRequest would be plaintext a man in the middle slipped in (CVE-2021-23214).
        if clients[ci].io.input.start < clients[ci].io.input.end {
            failClient(ci, code: SQLState.protocolViolation, message: "received unencrypted data after SSL request")
            return true
        }
        if !flushClient(ci) {
            if clients[ci].state != .free { closeClient(ci, reason: "client does not read", notify: false) }
            return true
        }
        var s = UInt8(ascii: "S")
        let sent = (try? Posix.send(clients[ci].io.fd, &s, 1)) ?? .wouldBlock
        guard sent == .processed(1) else {
            closeClient(ci, reason: "could not answer SSLRequest", notify: false)
            return true
        }
        guard let t = TLSIO.make(ctx, fd: clients[ci].io.fd, accepting: true, method: tlsState.bio) else {
            closeClient(ci, reason: "TLS setup failed: \(TLSContext.lastError())", notify: false)
            return true
        }
        clients[ci].io.tls = t
        return true
    }

    /// The first byte was a TLS handshake record (PostgreSQL 17 `sslnegotiation=direct`): start TLS
    /// with what was read so far.
    func clientDirectTLS(_ ci: Int32) {
        guard let ctx = tlsState.clientContext, !clients[ci].isUnix else {
            closeClient(ci, reason: "direct TLS connection but TLS is not enabled", notify: false)
            return
        }
        guard let t = TLSIO.make(ctx, fd: clients[ci].io.fd, accepting: true, method: tlsState.bio) else {
            closeClient(ci, reason: "TLS setup failed: \(TLSContext.lastError())", notify: false)
            return
        }
        t.pointee.direct = true
        if let b = clients[ci].io.input.base {
            let n = clients[ci].io.input.end - clients[ci].io.input.start
            t.pointee.pre.append(UnsafeRawBufferPointer(start: b + clients[ci].io.input.start, count: n))
            clients[ci].io.consume(n, buffers)
        }
        clients[ci].io.tls = t
    }

    /// Advances a client's handshake. True once it is complete (login goes on over TLS).
    func clientHandshake(_ ci: Int32) -> Bool {
        guard let t = clients[ci].io.tls else { return true }
        switch TLSIO.handshake(t) {
        case .done:
            if t.pointee.direct && !TLSIO.alpnIsPostgres(t) {
                closeClient(ci, reason: "direct TLS connection without ALPN \"postgresql\"", notify: false)
                return false
            }
            clients[ci].usesTLS = true
            // The startup packet may have come with the last handshake bytes, already read by OpenSSL.
            clients[ci].io.readable = true
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
        guard let ctx = tlsState.clientContext, !clients[ci].isUnix, !clients[ci].usesTLS, ctx.mode.requiresTLS else {
            return false
        }
        failClient(ci, code: SQLState.invalidAuthorizationSpecification, message: "SSL required")
        return true
    }

    /// auth_type cert (or an hba cert line): a verified client certificate whose CommonName is the user
    /// name, or, under an hba line's `map=`, one the ident map lets log in as that user.
    func certAuthenticate(_ ci: Int32) {
        guard let info = clients[ci].info else { return }
        guard clients[ci].usesTLS, let t = clients[ci].io.tls else {
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
        if let map = info.login?.identMap {
            // PgBouncer's words for a map without a line for this CN and user.
            guard map.permits(systemUser: name, databaseUser: info.user) else {
                certFailed(ci, reason: "ident map: \(map.name) does not have a match for certificate CN \"\(name)\"")
                return
            }
        } else if name != info.user {
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
        guard clients[ci].usesTLS, let t = clients[ci].io.tls else { return nil }
        let h = TLSIO.endPointHash(t)
        return h.isEmpty ? nil : h
    }
}
