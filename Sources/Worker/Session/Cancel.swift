// Cancel requests: find the client by our BackendKeyData, relay to its server over a new connection.
import Shared

extension Worker {
    /// A CancelRequest arrived on this worker: handle it here, pass it to the owning worker, or (with
    /// peering) to the supervisor, which forwards it to the peer whose id the key carries.
    func handleCancelRequest(processID: Int32, secretKey: UInt32) {
        var secretKey = secretKey
        let owner: Int32
        if peerID > 0 {
            let keyPeer = PeerCancelKey.peer(processID: processID)
            if keyPeer != peerID {
                forwardCancelToPeer(keyPeer, processID: processID, secretKey: secretKey)
                return
            }
            // Ours: the keys we hand out have all TTL bits set; a forwarded copy has fewer.
            secretKey = PeerCancelKey.secret(random: secretKey)
            owner = PeerCancelKey.slot(processID: processID)
        } else {
            owner = CancelProcessID(raw: processID).slot
        }
        if owner == slot {
            cancelLocal(processID: processID, secretKey: secretKey)
        } else {
            sendControl(.forwardCancel(targetSlot: owner, processID: processID, secretKey: secretKey))
        }
    }

    /// A key with another peer's id: PgBouncer's rules. One whose TTL is spent (it went round three
    /// peers already) or whose peer is not in `[peers]` is dropped with a log line; any other goes to
    /// the supervisor with one forward less, which sends it to the peer (Supervisor/Peers).
    func forwardCancelToPeer(_ peer: Int, processID: Int32, secretKey: UInt32) {
        let ttl = PeerCancelKey.ttl(secret: secretKey)
        guard ttl > 0 else {
            log.warning("cancel request for peer \(peer) dropped: forwarded too many times (TTL exhausted)")
            return
        }
        guard config.peer(id: peer) != nil else {
            log.warning("cancel request for unknown peer \(peer) dropped: no such entry in [peers]")
            return
        }
        log.debug("cancel request for peer \(peer): forwarding")
        sendControl(.peerCancel(peerID: Int32(peer), processID: processID, secretKey: secretKey - 1))
    }

    /// Sends PostgreSQL a CancelRequest for the server this client is linked to right now. A wrong
    /// key, or a client that is not running anything, cancels nothing.
    func cancelLocal(processID: Int32, secretKey: UInt32) {
        let ci = cancelTarget(processID: processID, secretKey: secretKey)  // Handoff.swift: adopted keys too
        guard ci >= 0, clients[ci].state == .active,
              clients[ci].cancelKey == secretKey else {
            log.debug("cancel request for an unknown or idle client ignored")
            return
        }
        let target = clients[ci].server
        guard target >= 0 else { return }
        log.info("C-\(clients[ci].id): cancel request for backend pid \(servers[target].backendPID)")
        sendCancel(toServer: target)
    }

    /// Opens a short connection to the server's host and sends a CancelRequest with its backend key.
    func sendCancel(toServer target: Int32) {
        guard let addr = servers[target].info?.socketAddress else { return }
        let si: Int32, connected: Bool
        do throws(SyscallError) {
            (si, connected) = try connectServer(addr, pool: servers[target].pool, .cancelRequest)
        } catch {
            log.warning("cancel: connect to \(addr) failed: \(error)")
            return
        }
        servers[si].cancelTarget = target
        servers[si].cancelTargetGen = servers[target].io.gen
        servers[target].cancelsInFlight += 1
        scratch.clear()
        Frontend.cancelRequest(into: &scratch, processID: servers[target].backendPID, secretKey: servers[target].backendKey)
        servers[si].io.out.append(scratch)
        if !watchServer(si) { return }
        if connected { servers[si].io.writable = true; flushServer(si) }
    }

    /// The cancel connection is done once PostgreSQL closes it (it has signalled the backend by then).
    func cancelConnectionEvent(_ si: Int32) {
        if !flushServer(si) { return }
        if discardServerInput(si) { closeServer(si, reason: "cancel request done") }
    }

    /// A cancel connection ended: its target may be handed out again.
    func cancelFinished(_ si: Int32) {
        let target = servers[si].cancelTarget
        guard target >= 0, servers[target].io.gen == servers[si].cancelTargetGen,
              servers[target].state != .free else { return }
        servers[target].cancelsInFlight -= 1
        if servers[target].cancelsInFlight == 0 && servers[target].state == .beingCanceled {
            serverIdle(target)
        }
    }
}
