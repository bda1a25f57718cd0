// Forwards cancel requests whose key names another peer to that peer's host, as PgBouncer's peering does.
import Glibc
import Shared

/// What a forwarding thread reports to the loop.
struct PeerEvent: Sendable {
    enum Kind: Sendable {
        /// Connected, and the CancelRequest went out.
        case sent
        /// The connection ended: `error` nil once the peer closed it after the cancel (it has acted on it).
        case done(sent: Bool, error: String?)
    }
    var peer: Int
    var kind: Kind
}

/// One cancel sent to one peer, on its own short-lived thread: resolve (a host name may block),
/// connect, send the CancelRequest, wait for the peer to close the connection (PgBouncer closes it
/// once it has passed the cancel on; so does pgswift). Each step is bounded by `timeoutMillis`.
final class PeerCancelJob: Sendable {
    let peer: PeerEntry
    let cancel: PeerCancel
    let timeoutMillis: Int32
    let mailbox: ThreadMailbox<PeerEvent>

    init(peer: PeerEntry, cancel: PeerCancel, timeoutMillis: Int32, mailbox: ThreadMailbox<PeerEvent>) {
        self.peer = peer
        self.cancel = cancel
        self.timeoutMillis = timeoutMillis
        self.mailbox = mailbox
    }

    func run() {
        let (sent, error) = forward()
        mailbox.post(PeerEvent(peer: peer.id, kind: .done(sent: sent, error: error)))
    }

    private func forward() -> (sent: Bool, error: String?) {
        var addresses: [SocketAddress] = []
        if let path = peer.unixSocketPath {
            guard let a = SocketAddress.unix(path: path) else { return (false, "socket path \(path) is too long") }
            addresses = [a]
        } else {
            do throws(SyscallError) {
                addresses = try SocketAddress.resolve(host: peer.host, port: peer.port)
            } catch {
                return (false, "\(error)")
            }
        }
        var lastError = "no address for \(peer.host)"
        for address in addresses {
            let fd: Int32
            do throws(SyscallError) {
                let (f, connected) = try Sockets.connect(address)
                fd = f
                if !connected {
                    guard try Posix.poll(fd, events: Int16(POLLOUT), timeoutMillis: timeoutMillis) else {
                        Posix.close(fd)
                        lastError = "connect to \(address) timed out"
                        continue
                    }
                    if let e = Sockets.pendingError(fd) {
                        Posix.close(fd)
                        lastError = "connect to \(address): \(e)"
                        continue
                    }
                }
            } catch {
                lastError = "\(error)"
                continue
            }
            defer { Posix.close(fd) }
            var out = OutBuffer(capacity: 16)
            defer { out.deallocate() }
            Frontend.cancelRequest(into: &out, processID: cancel.processID, secretKey: cancel.secretKey)
            let bytes = out.bytes
            let r = bytes.withUnsafeBytes { b in try? Posix.send(fd, b.baseAddress!, b.count) }
            guard case .processed(let n)? = r, n == bytes.count else {
                return (false, "send to \(address) failed")
            }
            mailbox.post(PeerEvent(peer: peer.id, kind: .sent))
            // The peer closes the connection once it has acted on the cancel; read until then.
            var buf = [UInt8](repeating: 0, count: 256)
            while true {
                guard (try? Posix.poll(fd, events: Int16(POLLIN), timeoutMillis: timeoutMillis)) == true else {
                    return (true, "\(address) did not close the connection in time")
                }
                let r = buf.withUnsafeMutableBytes { try? Posix.read(fd, $0.baseAddress!, $0.count) }
                switch r {
                case .processed(0)?, nil: return (true, nil)
                case .processed?, .wouldBlock?: continue
                }
            }
        }
        return (false, lastError)
    }
}

/// The supervisor's side of peering: the peer pools and the mailbox their threads report to.
struct PeerForwardState {
    var pools = PeerPools()
    var mailbox: ThreadMailbox<PeerEvent>? = nil
}

extension Supervisor {
    /// A worker's `peerCancel`: queue it for the peer, start a forward if the peer's pool has room.
    func forwardToPeer(_ peerID: Int, _ cancel: PeerCancel) {
        guard let peer = config.peer(id: peerID) else {
            // The worker checked [peers]; a reload in between may have removed it.
            log.warning("cancel request for unknown peer \(peerID) dropped: no such entry in [peers]")
            return
        }
        switch peerState.pools.request(peer: peerID, cancel, poolSize: config.poolSize(of: peer),
                                       maxWaiting: max(config.maxClientConn, 1)) {
        case .start(let c): startPeerJob(peer, c)
        case .queued: log.debug("cancel request for peer \(peerID) queued: its pool_size is in use")
        case .dropped:
            log.warning("cancel request for peer \(peerID) dropped: \(max(config.maxClientConn, 1)) already waiting")
        }
    }

    private func ensurePeerMailbox() -> ThreadMailbox<PeerEvent>? {
        if let m = peerState.mailbox { return m }
        do throws(SyscallError) {
            let m = try ThreadMailbox<PeerEvent>()
            try epoll.add(m.wakeRead, events: .input, data: SupervisorToken.peerCancels.raw)
            peerState.mailbox = m
            return m
        } catch {
            log.error("cannot forward cancel requests to peers: \(error)")
            return nil
        }
    }

    private func startPeerJob(_ peer: PeerEntry, _ cancel: PeerCancel) {
        let timeout = Int32(clamping: Int(max(config.serverConnectTimeout, 1) * 1000))
        guard let mailbox = ensurePeerMailbox() else {
            peerFinished(peer.id, sent: false, error: "no mailbox")
            return
        }
        let job = PeerCancelJob(peer: peer, cancel: cancel, timeoutMillis: timeout, mailbox: mailbox)
        log.debug("forwarding a cancel request to peer \(peer.id) (\(peer.host):\(peer.port))")
        if !Threads.startDetached({ job.run() }) {
            peerFinished(peer.id, sent: false, error: "cannot start a thread")
        }
    }

    /// The forwarding threads' reports.
    func handlePeerEvents() {
        guard let m = peerState.mailbox else { return }
        for e in m.collect() {
            switch e.kind {
            case .sent: peerState.pools.sent(peer: e.peer)
            case .done(let sent, let error): peerFinished(e.peer, sent: sent, error: error)
            }
        }
    }

    private func peerFinished(_ peerID: Int, sent: Bool, error: String?) {
        if let error { log.warning("forwarding a cancel request to peer \(peerID) failed: \(error)") }
        let peer = config.peer(id: peerID)
        let (start, dropped) = peerState.pools.finished(peer: peerID, wasSent: sent, poolSize: peer.map { config.poolSize(of: $0) })
        if dropped > 0 { log.warning("\(dropped) cancel requests for peer \(peerID) dropped: it left [peers]") }
        if let peer { for c in start { startPeerJob(peer, c) } }
    }

    /// After a reload: [peers] may have changed.
    func reconfigurePeers() {
        let (start, dropped) = peerState.pools.reconfigure { id in self.config.peer(id: id).map { self.config.poolSize(of: $0) } }
        if dropped > 0 { log.warning("\(dropped) cancel requests dropped: their peers left [peers]") }
        for (id, c) in start { if let peer = config.peer(id: id) { startPeerJob(peer, c) } }
    }

    /// SHOW PEERS: every `[peers]` entry (this host's own included, as PgBouncer lists it).
    func peerRows() -> [[String?]] {
        config.peers.map { [String($0.id), $0.host, String($0.port), String(config.poolSize(of: $0))] }
    }

    /// SHOW PEER_POOLS: a row per peer a cancel was forwarded to.
    func peerPoolRows() -> [[String?]] {
        peerState.pools.rows.map { $0.map { String($0) } }
    }
}
