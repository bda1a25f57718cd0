// TLS to PostgreSQL: SSLRequest before the startup packet, the handshake inside the loop, host checks.
import Shared
import Glibc
import COpenSSL

extension Worker {
    /// With server_tls_sslmode above disable and a TCP server: send SSLRequest first. Returns false when
    /// the startup packet should go out now in plaintext.
    func beginServerTLS(_ si: Int32) -> Bool {
        guard tlsState.serverContext != nil, let info = servers[si].info, !info.address.hasPrefix("unix:") else {
            return false
        }
        scratch.clear()
        Frontend.sslRequest(into: &scratch)
        servers[si].io.out.append(scratch)
        servers[si].tlsPhase = .requested
        flushServer(si)
        return true
    }

    /// Drives the SSLRequest answer and the handshake. True once TLS (or the plaintext fallback) is
    /// settled and the startup packet has been queued.
    func serverTLSLogin(_ si: Int32) -> Bool {
        guard let ctx = tlsState.serverContext else { return true }
        if servers[si].tlsPhase == .requested {
            while servers[si].io.input.isEmpty {
                let read = readHeld(server: si) { serverTLSFailed(si, "server closed the connection after SSLRequest") }
                if read != .more { return false }
            }
            let answer = servers[si].io.input.base!.load(fromByteOffset: servers[si].io.input.start, as: UInt8.self)
            servers[si].io.consume(1, buffers)
            switch answer {
            case UInt8(ascii: "S"):
                if !servers[si].io.input.isEmpty {
                    serverTLSFailed(si, "server sent unencrypted data after accepting SSLRequest")
                    return false
                }
                guard let t = TLSIO.make(ctx, fd: servers[si].io.fd, accepting: false, method: tlsState.bio) else {
                    serverTLSFailed(si, "TLS setup failed: \(TLSContext.lastError())")
                    return false
                }
                // SNI, and for verify-full the name or address the certificate must carry.
                if let ssl = t.pointee.ssl { ctx.prepareServerCheck(ssl, host: serverHostName(si)) }
                servers[si].io.tls = t
                servers[si].tlsPhase = .handshaking
            case UInt8(ascii: "N"):
                if ctx.mode.requiresTLS {
                    serverTLSFailed(si, "server refused TLS (server_tls_sslmode is \(ctx.mode.rawValue))")
                    return false
                }
                servers[si].tlsPhase = .none
                sendServerStartup(si)
                return true
            default:
                serverTLSFailed(si, "unexpected answer to SSLRequest from server")
                return false
            }
        }
        guard let t = servers[si].io.tls else { return true }
        switch TLSIO.handshake(t) {
        case .done:
            servers[si].tlsPhase = .none
            servers[si].io.readable = true
            log.debug("S-\(servers[si].id): TLS established: \(TLSIO.describe(t))")
            sendServerStartup(si)
            return true
        case .wantMore:
            if !t.pointee.out.isEmpty { _ = flushServerTLS(si, t) }
            return false
        case .failed(let reason):
            serverTLSFailed(si, "TLS handshake with server failed: \(reason)")
            return false
        }
    }

    private func serverTLSFailed(_ si: Int32, _ message: String) {
        let address = servers[si].info?.address ?? ""
        log.warning("S-\(servers[si].id): \(message) (\(address))")
        serverLoginFailed(si, ErrorFields(severity: "FATAL", code: SQLState.connectionFailure,
                                          message: "\(message) (\(address))"))
    }

    /// The configured host name this server connection went to: what verify-full checks the
    /// certificate against (and what SNI names).
    func serverHostName(_ si: Int32) -> String? {
        let p = servers[si].pool
        guard p >= 0, let info = servers[si].info else { return nil }
        // The configured host this connection was picked for ("host:port", BackendHealth.swift).
        if let colon = info.hostKey.lastIndex(of: ":") {
            let host = String(info.hostKey[..<colon])
            return host.isEmpty || host.hasPrefix("/") ? nil : host
        }
        let hosts = pools[Int(p)].entry.hosts.filter { !$0.isEmpty && !$0.hasPrefix("/") }
        if hosts.count == 1 { return hosts[0] }
        for h in hosts {
            if info.address.hasPrefix(h + ":") || info.address.hasPrefix("[\(h)]:") { return h }
        }
        return hosts.first
    }
}
