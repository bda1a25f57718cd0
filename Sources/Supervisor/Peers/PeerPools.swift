// Cancel requests forwarded to peers: one queue per peer, at most its pool_size in flight (pure, tested).

/// A cancel key on its way to a peer (TTL already lowered).
struct PeerCancel: Equatable, Sendable {
    var processID: Int32
    var secretKey: UInt32
}

/// PgBouncer's peer pools: created for a peer at its first forwarded cancel (SHOW PEER_POOLS lists
/// those), each a FIFO of requests waiting for a connection and counts of connections opening
/// (`sv_login`) and of cancels sent, waiting for the peer to close (`sv_active_cancel`).
struct PeerPools {
    struct Pool: Equatable {
        var waiting: [PeerCancel] = []
        var connecting = 0
        var sent = 0
        var inFlight: Int { connecting + sent }
    }

    enum Admission: Equatable {
        /// Open a connection for it now (counted as connecting).
        case start(PeerCancel)
        case queued
        /// The queue is full: dropped.
        case dropped
    }

    private(set) var pools: [Int: Pool] = [:]

    /// A cancel for `peer`: started at once while fewer than `poolSize` are in flight, else queued,
    /// up to `maxWaiting` waiting.
    mutating func request(peer: Int, _ cancel: PeerCancel, poolSize: Int, maxWaiting: Int) -> Admission {
        var p = pools[peer] ?? Pool()
        defer { pools[peer] = p }
        if p.inFlight < poolSize && p.waiting.isEmpty {
            p.connecting += 1
            return .start(cancel)
        }
        guard p.waiting.count < maxWaiting else { return .dropped }
        p.waiting.append(cancel)
        return .queued
    }

    /// A connection to `peer` is open and the cancel went out.
    mutating func sent(peer: Int) {
        guard var p = pools[peer], p.connecting > 0 else { return }
        p.connecting -= 1
        p.sent += 1
        pools[peer] = p
    }

    /// A connection to `peer` ended (`wasSent`: after the cancel went out). Returns the waiting cancels
    /// that may start now (counted as connecting), in arrival order; `poolSize` nil: the peer is no
    /// longer configured, and its waiting cancels are dropped (returned in `dropped`).
    mutating func finished(peer: Int, wasSent: Bool, poolSize: Int?) -> (start: [PeerCancel], dropped: Int) {
        guard var p = pools[peer] else { return ([], 0) }
        if wasSent { p.sent = max(0, p.sent - 1) } else { p.connecting = max(0, p.connecting - 1) }
        var start: [PeerCancel] = []
        var dropped = 0
        if let poolSize {
            let n = min(p.waiting.count, max(0, poolSize - p.inFlight))
            start = Array(p.waiting.prefix(n))
            p.waiting.removeFirst(n)
            p.connecting += n
        } else {
            dropped = p.waiting.count
            p.waiting = []
        }
        pools[peer] = p
        return (start, dropped)
    }

    /// After a reload: the pools of peers no longer configured lose their waiting cancels (the
    /// count is returned), and are forgotten once nothing is in flight; a larger pool_size starts
    /// waiting cancels at once.
    mutating func reconfigure(poolSize: (Int) -> Int?) -> (start: [(peer: Int, cancel: PeerCancel)], dropped: Int) {
        var start: [(Int, PeerCancel)] = []
        var dropped = 0
        for peer in pools.keys.sorted() {
            var p = pools[peer]!
            if let size = poolSize(peer) {
                let n = min(p.waiting.count, max(0, size - p.inFlight))
                for c in p.waiting.prefix(n) { start.append((peer, c)) }
                p.waiting.removeFirst(n)
                p.connecting += n
                pools[peer] = p
            } else {
                dropped += p.waiting.count
                p.waiting = []
                pools[peer] = p.inFlight == 0 ? nil : p
            }
        }
        return (start, dropped)
    }

    /// SHOW PEER_POOLS rows in peer id order: peer_id, cl_active_cancel_req, cl_waiting_cancel_req,
    /// sv_active_cancel, sv_login.
    var rows: [[Int]] {
        pools.keys.sorted().map { id in
            let p = pools[id]!
            return [id, p.inFlight, p.waiting.count, p.sent, p.connecting]
        }
    }
}
