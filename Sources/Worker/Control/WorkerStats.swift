// The worker's statistics: counters recorded on the data path, snapshots pushed to the supervisor.
import Shared
import Glibc

/// Stats and admin-console bookkeeping of one worker (one stored property of Worker).
struct WorkerStatsState {
    var outbox = ControlOutbox()
    /// Only stats requests (a byte) are reassembled here: admin answers are streamed (`adminAnswerChunk`).
    var reassembler = StatsReassembler(maximumBlobSize: 1 << 20, maximumPending: 16)
    /// The admin console's counters (database and user `pgbouncer`): one query and one transaction per
    /// admin client, at its first query, as PgBouncer counts its admin pool.
    var adminTotals = PoolCounters()
    /// Wall-clock seconds at start-up (SHOW WORKERS started_at).
    let startedAt: Int64
    /// Monotonic ns of the next periodic snapshot.
    var nextPush: Int64 = 0
    var nextAdminRequest: UInt32 = 0
    /// Admin request id → (client index, client generation).
    var pendingAdmin: [UInt32: (client: Int32, gen: UInt32)] = [:]

    init() {
        startedAt = Int64(Clock.wallClock().seconds)
    }

    static let pushIntervalNanos: Int64 = 1_000_000_000
}

extension Worker {
    /// The id of a new client or server connection: from the service-wide sequence in the shared
    /// memory file, so ids are unique and consecutive whichever worker takes them; without that file
    /// (no supervisor, or it could not make one) this worker's own sequence above its slot.
    func newConnectionID() -> UInt64 {
        if let c = limits.counter { return c.nextConnectionID() }
        nextLocalID &+= 1
        return UInt64(UInt32(bitPattern: slot)) << 40 | nextLocalID
    }

    // MARK: Recording (called from the data path; `now` is the loop's cached clock)

    /// A server is being linked to a client: one assignment, and the client's wait if it queued.
    @inline(__always)
    func statsLink(_ ci: Int32, _ si: Int32) {
        let p = Int(clients[ci].pool)
        guard p >= 0 else { return }
        let waited = clients[ci].state == .waitServer ? max(0, now &- clients[ci].stateSince) / 1000 : 0
        pools[p].totals.serverAssignmentCount &+= 1
        pools[p].totals.waitTimeMicros &+= UInt64(waited)
        pools[p].waitDuration.record(micros: waited)
        servers[si].queryStart = 0
        servers[si].xactStart = 0
        if hot.pointee.queryTracking { queryStatsLinked(si, waitedMicros: waited) }
    }

    /// A Query or Sync was forwarded to a server with no query running.
    @inline(__always)
    func statsQueryStart(_ si: Int32) {
        servers[si].queryStart = now
        if servers[si].xactStart == 0 { servers[si].xactStart = now }
    }

    /// A ReadyForQuery answered the client's query (after `pendingSyncs` was decremented).
    @inline(__always)
    func statsReadyForQuery(_ si: Int32, status: UInt8) {
        let p = Int(servers[si].pool)
        guard p >= 0 else { return }
        if servers[si].queryStart != 0 {
            let d = max(0, now &- servers[si].queryStart) / 1000
            pools[p].totals.queryCount &+= 1
            pools[p].totals.queryTimeMicros &+= UInt64(d)
            pools[p].queryDuration.record(micros: d)
            // A pipelined query behind this one starts now.
            servers[si].queryStart = servers[si].pendingSyncs > 0 ? now : 0
        }
        if status == UInt8(ascii: "I") && servers[si].xactStart != 0 {
            let d = max(0, now &- servers[si].xactStart) / 1000
            pools[p].totals.xactCount &+= 1
            pools[p].totals.xactTimeMicros &+= UInt64(d)
            pools[p].xactDuration.record(micros: d)
            servers[si].xactStart = servers[si].queryStart
        }
    }

    /// Adds a client's byte counts to its pool (at detach and before every snapshot).
    func foldClientBytes(_ ci: Int32) {
        let p = Int(clients[ci].pool)
        guard p >= 0, clients[ci].statBytesIn | clients[ci].statBytesOut != 0 else { return }
        pools[p].totals.bytesReceived &+= clients[ci].statBytesIn
        pools[p].totals.bytesSent &+= clients[ci].statBytesOut
        clients[ci].statBytesIn = 0
        clients[ci].statBytesOut = 0
    }

    // MARK: Snapshots

    /// Counts every connection by PgBouncer's lists; rows only when asked (SHOW CLIENTS / SERVERS).
    func makeSnapshot(includeClients: Bool, includeServers: Bool) -> WorkerStatsSnapshot {
        let wall = Clock.wallClock()
        let wallMicros = Int64(wall.seconds) * 1_000_000 + Int64(wall.micros)
        func wallTime(_ mono: Int64) -> Int64 { mono == 0 ? 0 : wallMicros - max(0, now - mono) / 1000 }
        var snap = WorkerStatsSnapshot(slot: slot, pid: Posix.getpid(), startedAt: stats.startedAt, takenAt: wallMicros)
        snap.process = ProcessStats.readSelf() ?? ProcessStats()
        // Freed pools leave holes in the table: `at[pool index]` is the pool's place in `ps`.
        var at = [Int32](repeating: -1, count: pools.highWater)
        var ps: [PoolStats] = []
        ps.reserveCapacity(pools.count + 1)
        for pi in pools.indices {
            at[pi] = Int32(ps.count)
            ps.append(PoolStats(database: pools[pi].database, user: pools[pi].user, poolMode: pools[pi].mode))
            if hot.pointee.routing { ps[ps.count - 1].routes = routeStats(pi) }  // Routing.swift
        }
        var adminPool = PoolStats(database: "pgbouncer", user: "pgbouncer", poolMode: .statement)
        adminPool.totals = stats.adminTotals
        var login: Int32 = 0
        // SHOW FDS' session parameters: where they are among the tracked ones.
        let paramIndex = ["client_encoding", "standard_conforming_strings", "DateStyle", "TimeZone"].map { tracked.index(of: $0) }
        func setParams(_ row: inout ConnectionRow, _ values: ParamValues?) {
            func param(_ k: Int) -> String? {
                guard let values, let i = paramIndex[k], i < values.values.count else { return nil }
                return values.values[i]
            }
            row.clientEncoding = param(0)
            row.standardConformingStrings = param(1)
            row.dateStyle = param(2)
            row.timeZone = param(3)
        }
        let ccap = Int32(clients.capacity)
        var ci: Int32 = 0
        while ci < ccap {
            defer { ci += 1 }
            let state = clients[ci].state
            if state == .free { continue }
            foldClientBytes(ci)
            let p = Int(clients[ci].pool)
            let sp = p >= 0 ? Int(at[p]) : -1
            var stateName = ""
            switch state {
            case .startup, .auth:
                login += 1
                stateName = "login"
            case .waitWelcome, .waitServer, .replicationWait, .replicationLogin:
                if sp >= 0 { ps[sp].clWaiting += 1 }
                stateName = "waiting"
            case .idle, .active:
                if clients[ci].admin != .none {
                    adminPool.clActive += 1
                } else if sp >= 0 {
                    ps[sp].clActive += 1
                    let si = clients[ci].server
                    if si >= 0 && servers[si].sessionPins != 0 { ps[sp].clPinned += 1 }
                }
                stateName = state == .active ? "active" : "idle"
            case .closing:
                stateName = "closing"
            case .free:
                break
            }
            guard includeClients, state != .closing else { continue }
            let info = clients[ci].info
            let isAdmin = clients[ci].admin != .none
            var row = ConnectionRow(isServer: false, user: info?.user ?? "",
                                    database: isAdmin ? "pgbouncer" : (p >= 0 ? pools[p].database : info?.database ?? ""),
                                    state: stateName)
            splitPeer(info?.peer ?? "", into: &row)
            row.connectTime = wallTime(clients[ci].connectedAt)
            row.requestTime = wallTime(clients[ci].stateSince)
            if state == .waitServer || state == .waitWelcome || state == .replicationWait || state == .replicationLogin {
                row.waitMicros = max(0, now - clients[ci].stateSince) / 1000
            }
            row.ptr = AdminPointer.client(slot: slot, generation: clients[ci].io.gen, index: ci).raw
            let si = clients[ci].server
            // Replication clients (Replication.swift): from the startup packet until linked, then their server's.
            row.replication = info?.login?.replication ?? (state == .active && si >= 0 ? servers[si].replication : .none)
            if si >= 0 { row.link = AdminPointer.server(slot: slot, index: si).raw }
            row.remotePid = clientProcessID(ci)
            row.applicationName = info?.applicationName ?? ""
            if clients[ci].usesTLS, let t = clients[ci].io.tls { row.tls = TLSIO.describe(t) }  // TLS hook
            row.preparedStatements = Int32(clamping: info?.prepared?.count ?? 0)
            row.id = Int64(bitPattern: clients[ci].id)
            row.fd = clients[ci].io.fd
            if si >= 0 { row.linkFD = servers[si].io.fd }
            row.isAdmin = isAdmin
            row.cancelKey = UInt64(UInt32(bitPattern: row.remotePid)) << 32 | UInt64(clients[ci].cancelKey)
            setParams(&row, info?.params)
            row.buffers = socketBuffers(clients[ci].io)
            snap.clients.append(row)
        }
        // maxwait: the head of each wait queue has waited longest (FIFO).
        for p in pools.indices where pools[p].waiting.head >= 0 {
            ps[Int(at[p])].maxWaitMicros = max(0, now - clients[pools[p].waiting.head].stateSince) / 1000
        }
        let scap = Int32(servers.capacity)
        var si: Int32 = 0
        while si < scap {
            defer { si += 1 }
            let state = servers[si].state
            let p = Int(servers[si].pool)
            guard state != .free, state != .cancelRequest, p >= 0, at[p] >= 0 else { continue }
            let sp = Int(at[p])
            var stateName = ""
            switch state {
            case _ where servers[si].listener:
                ps[sp].svListen += 1
                stateName = "listen"  // a pool's listening connection (ListenRelay.swift): only in sv_listen
            case .active, .authQuery: ps[sp].svActive += 1; stateName = "active"
            case .idle:
                // PgBouncer's sv_used: idle past server_check_delay, checked before its next client.
                if now &- servers[si].stateSince >= hot.pointee.serverCheckDelay {
                    ps[sp].svUsed += 1; stateName = "used"
                } else {
                    ps[sp].svIdle += 1; stateName = "idle"
                }
            case .beingCanceled: ps[sp].svBeingCanceled += 1; stateName = "being_canceled"
            case .resetting: ps[sp].svTested += 1; stateName = "tested"
            case .connecting, .login: ps[sp].svLogin += 1; stateName = "new"
            default: continue
            }
            guard includeServers else { continue }
            var row = ConnectionRow(isServer: true, user: pools[p].serverUser, database: pools[p].database, state: stateName)
            row.replication = servers[si].replication
            splitPeer(servers[si].info?.address ?? "", into: &row)
            row.connectTime = wallTime(servers[si].createdAt)
            row.requestTime = wallTime(servers[si].stateSince)
            row.ptr = AdminPointer.server(slot: slot, index: si).raw
            let c = servers[si].client
            if c >= 0 { row.link = AdminPointer.client(slot: slot, generation: clients[c].io.gen, index: c).raw }
            row.remotePid = servers[si].backendPID
            row.applicationName = ""
            if servers[si].tlsPhase == .none, let t = servers[si].io.tls { row.tls = TLSIO.describe(t) }  // TLS hook
            row.preparedStatements = Int32(clamping: servers[si].info?.prepared.count ?? 0)
            row.id = Int64(bitPattern: servers[si].id)
            row.fd = servers[si].io.fd
            if c >= 0 { row.linkFD = clients[c].io.fd }
            row.cancelKey = UInt64(UInt32(bitPattern: servers[si].backendPID)) << 32 | UInt64(servers[si].backendKey)
            setParams(&row, servers[si].info?.params)
            row.buffers = socketBuffers(servers[si].io)
            snap.servers.append(row)
        }
        for p in pools.indices {
            let sp = Int(at[p])
            ps[sp].totals = pools[p].totals
            ps[sp].queryDuration = pools[p].queryDuration
            ps[sp].xactDuration = pools[p].xactDuration
            ps[sp].waitDuration = pools[p].waitDuration
        }
        // The admin pool stays listed once it has counted something, as PgBouncer's admin pool does.
        if adminPool.clActive > 0 || adminPool.totals != PoolCounters() { ps.append(adminPool) }
        snap.pools = ps
        snap.memory = [
            MemoryRow(name: "client_cache", size: Int64(MemoryLayout<Client>.stride), used: Int64(clients.used),
                      free: Int64(clients.capacity - clients.used)),
            MemoryRow(name: "server_cache", size: Int64(MemoryLayout<Server>.stride), used: Int64(servers.used),
                      free: Int64(servers.capacity - servers.used)),
            MemoryRow(name: "pool_cache", size: Int64(MemoryLayout<Pool>.stride), used: Int64(pools.used),
                      free: Int64(pools.capacity - pools.used)),
            MemoryRow(name: "iobuf_cache", size: Int64(buffers.size), used: Int64(buffers.inUse),
                      free: Int64(buffers.freeCount)),
        ]
        snap.lists.usedClients = Int32(clamping: clients.used)
        snap.lists.freeClients = Int32(clamping: clients.capacity - clients.used)
        snap.lists.loginClients = login
        snap.lists.usedServers = Int32(clamping: servers.used)
        snap.lists.freeServers = Int32(clamping: servers.capacity - servers.used)
        return snap
    }

    /// SHOW SOCKETS' buffer columns of one side of a connection (see `SocketBuffers`).
    private func socketBuffers(_ io: Endpoint) -> SocketBuffers {
        SocketBuffers(recvPos: Int32(clamping: io.input.end), pktPos: Int32(clamping: io.input.scan),
                      pktRemain: Int32(clamping: io.input.partial), sendPos: Int32(clamping: io.input.start),
                      sendRemain: Int32(clamping: io.out.end - io.out.start))
    }

    /// "10.0.0.1:5432", "[::1]:6432", "unix:/path" or "unix" into addr and port.
    private func splitPeer(_ peer: String, into row: inout ConnectionRow) {
        if peer.hasPrefix("unix") {
            row.addr = "unix"
            return
        }
        guard let colon = peer.lastIndex(of: ":") else {
            row.addr = peer
            return
        }
        var host = String(peer[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        row.addr = host
        row.port = Int32(peer[peer.index(after: colon)...]) ?? 0
    }

    /// Sends a snapshot in pages (WorkerStatsSnapshot.encodePages), each a blob in chunks: no blob
    /// grows with the number of pools or connections.
    func sendSnapshot(_ snap: WorkerStatsSnapshot, kind: StatsBlobKind, requestID: UInt32) {
        for page in snap.encodePages() { sendBlob(page, kind: kind, requestID: requestID) }
    }

    /// Sends a blob to the supervisor in chunks.
    func sendBlob(_ blob: [UInt8], kind: StatsBlobKind, requestID: UInt32) {
        for chunk in StatsChunk.split(blob, kind: kind, slot: slot, requestID: requestID) {
            sendControlBytes(ControlMessage.statsFromWorker(chunk).encode())
        }
    }

    /// Once a second from the loop: pools, lists and process usage (no rows).
    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func pushStatsIfDue() {
        guard controlFD >= 0, now >= stats.nextPush else { return }
        stats.nextPush = now + WorkerStatsState.pushIntervalNanos
        // A supervisor that is not reading gets no more snapshots piled up behind the old ones.
        if stats.outbox.count > 64 { return }
        sendSnapshot(makeSnapshot(includeClients: false, includeServers: false), kind: .periodicSnapshot, requestID: 0)
    }

    /// A chunk from the supervisor: a stats request or an admin answer.
    func handleStatsChunk(_ chunk: [UInt8]) {
        // An admin answer is written to its client chunk by chunk as it comes (chunks of a blob arrive
        // in order): no reassembly, so no bound on the size of an answer (SHOW POOLS with many pools).
        if chunk.first == StatsBlobKind.adminResult.rawValue {
            do throws(StatsDecodeError) {
                let c = try StatsChunk.decode(chunk)
                adminAnswerChunk(c)
            } catch {
                log.warning("supervisor sent \(error)")
            }
            return
        }
        guard let blob = stats.reassembler.add(chunk, from: "supervisor", log: log) else { return }
        switch blob.kind {
        case .statsRequest:
            do throws(StatsDecodeError) {
                let r = try StatsRequest.decode(blob.bytes, requestID: blob.requestID)
                if r.resetQueries { resetQueryStats() }
                if r.includeQueries { sendBlob(queryStatsSnapshot().encode(), kind: .queryStats, requestID: r.requestID) }
                let snap = makeSnapshot(includeClients: r.includeClients, includeServers: r.includeServers)
                sendSnapshot(snap, kind: .requestedSnapshot, requestID: r.requestID)
            } catch {
                log.warning("supervisor sent \(error)")
            }
        case .adminResult:
            adminAnswered(requestID: blob.requestID, bytes: blob.bytes)  // not reached: see above
        default:
            log.warning("supervisor sent a stats blob of kind \(blob.kind)")
        }
    }
}

extension Worker {
    /// One chunk of an admin answer: its bytes go to the client at once; the last one completes the
    /// answer (ReadyForQuery, next query). A client gone meanwhile drops the rest.
    func adminAnswerChunk(_ c: StatsChunk) {
        if c.index + 1 == c.total {
            adminAnswered(requestID: c.requestID, bytes: Array(c.payload))
            return
        }
        guard let (ci, gen) = stats.pendingAdmin[c.requestID] else { return }
        guard clients[ci].io.gen == gen, clients[ci].state == .idle, clients[ci].adminRequest == c.requestID else { return }
        c.payload.withUnsafeBytes { clients[ci].io.out.append($0) }
    }
}
