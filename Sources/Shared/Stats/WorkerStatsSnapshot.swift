// One worker's stats at one moment (pools, connection rows, process usage) and its binary codec.

/// One row of SHOW CLIENTS or SHOW SERVERS, with PgBouncer's columns.
public struct ConnectionRow: Equatable, Sendable, CompactRecord {
    /// True for a server connection (`type` S), false for a client (`type` C).
    public var isServer: Bool
    public var user: String
    public var database: String
    public var replication: ReplicationMode = .none
    /// PgBouncer's state names. Clients: active, idle, waiting, active_cancel_req, waiting_cancel_req.
    /// Servers: active, idle, used, tested, new, active_cancel, being_canceled.
    public var state: String
    public var addr: String = ""
    public var port: Int32 = 0
    public var localAddr: String = ""
    public var localPort: Int32 = 0
    /// Wall-clock microseconds since the epoch; 0 when unknown.
    public var connectTime: Int64 = 0
    public var requestTime: Int64 = 0
    /// Current wait for a server (clients), split into `wait` + `wait_us`.
    public var waitMicros: Int64 = 0
    public var closeNeeded: Bool = false
    /// An opaque identity of this connection (`ptr`, printed in hex), and of its partner (`link`, 0: none).
    public var ptr: UInt64 = 0
    public var link: UInt64 = 0
    public var remotePid: Int32 = 0
    /// TLS description, empty without TLS.
    public var tls: String = ""
    public var applicationName: String = ""
    public var preparedStatements: Int32 = 0
    /// PgBouncer's `id`: one sequence for clients and servers of the whole service (what KILL_CLIENT takes).
    public var id: Int64 = 0

    // SHOW FDS and SHOW SOCKETS only:
    /// The socket's descriptor in its worker process, and its partner's there (0: no partner).
    public var fd: Int32 = 0
    public var linkFD: Int32 = 0
    /// An admin console client: SHOW FDS leaves these out, as PgBouncer leaves out its admin pool.
    public var isAdmin = false
    /// The cancel key as PgBouncer's 8 bytes read big-endian: process id above secret key.
    public var cancelKey: UInt64 = 0
    /// The session's client_encoding, standard_conforming_strings, DateStyle and TimeZone (nil: not known).
    public var clientEncoding: String? = nil
    public var standardConformingStrings: String? = nil
    public var dateStyle: String? = nil
    public var timeZone: String? = nil
    /// The socket's input buffer and pending output (SHOW SOCKETS' last columns).
    public var buffers = SocketBuffers()

    public init(isServer: Bool, user: String, database: String, state: String) {
        self.isServer = isServer
        self.user = user
        self.database = database
        self.state = state
    }

    func encode(into w: inout MessageWriter) {
        w.put(isServer)
        w.compactString(user)
        w.compactString(database)
        w.u8(replication.rawValue)
        w.compactString(state)
        w.compactString(addr)
        w.signed(Int64(port))
        w.compactString(localAddr)
        w.signed(Int64(localPort))
        w.signed(connectTime)
        w.signed(requestTime)
        w.signed(waitMicros)
        w.put(closeNeeded)
        w.varint(ptr)
        w.varint(link)
        w.signed(Int64(remotePid))
        w.compactString(tls)
        w.compactString(applicationName)
        w.signed(Int64(preparedStatements))
        w.signed(id)
        w.signed(Int64(fd))
        w.signed(Int64(linkFD))
        w.put(isAdmin)
        w.varint(cancelKey)
        for v in [clientEncoding, standardConformingStrings, dateStyle, timeZone] {
            w.put(v != nil)
            if let v { w.compactString(v) }
        }
        for v in [buffers.recvPos, buffers.pktPos, buffers.pktRemain, buffers.sendPos, buffers.sendRemain] {
            w.signed(Int64(v))
        }
    }

    static func decode(_ r: inout StatsReader) throws(StatsDecodeError) -> ConnectionRow {
        let isServer = try r.bool("row type")
        var row = ConnectionRow(isServer: isServer, user: try r.compactString("row user"),
                                database: try r.compactString("row database"), state: "")
        row.replication = try r.code(ReplicationMode.self, "replication mode")
        row.state = try r.compactString("row state")
        row.addr = try r.compactString("row addr")
        row.port = try r.signed32("row port")
        row.localAddr = try r.compactString("row local_addr")
        row.localPort = try r.signed32("row local_port")
        row.connectTime = try r.signed("row connect_time")
        row.requestTime = try r.signed("row request_time")
        row.waitMicros = try r.signed("row wait")
        row.closeNeeded = try r.bool("row close_needed")
        row.ptr = try r.varint("row ptr")
        row.link = try r.varint("row link")
        row.remotePid = try r.signed32("row remote_pid")
        row.tls = try r.compactString("row tls")
        row.applicationName = try r.compactString("row application_name")
        row.preparedStatements = try r.signed32("row prepared_statements")
        row.id = try r.signed("row id")
        row.fd = try r.signed32("row fd")
        row.linkFD = try r.signed32("row link fd")
        row.isAdmin = try r.bool("row admin")
        row.cancelKey = try r.varint("row cancel key")
        func optional() throws(StatsDecodeError) -> String? {
            try r.bool("row parameter") ? try r.compactString("row parameter") : nil
        }
        row.clientEncoding = try optional()
        row.standardConformingStrings = try optional()
        row.dateStyle = try optional()
        row.timeZone = try optional()
        row.buffers = SocketBuffers(recvPos: try r.signed32("row recv_pos"), pktPos: try r.signed32("row pkt_pos"),
                                    pktRemain: try r.signed32("row pkt_remain"), sendPos: try r.signed32("row send_pos"),
                                    sendRemain: try r.signed32("row send_remain"))
        return row
    }
}

/// A socket's buffer positions, as PgBouncer's SHOW SOCKETS names them. pgswift's input buffer
/// (`IOBuf`) holds, in order, bytes already forwarded to the partner, bytes scanned (whole message
/// headers seen) and not yet forwarded, and bytes read but not scanned yet: the three positions are
/// where those parts end. Offsets are within the buffer now held (a connection holds one only while
/// bytes are in flight; none: all 0).
public struct SocketBuffers: Equatable, Sendable {
    /// Bytes read into the buffer (PgBouncer's recv_pos).
    public var recvPos: Int32 = 0
    /// Bytes scanned (parse_pos, `pkt_pos`).
    public var pktPos: Int32 = 0
    /// Bytes of the current message still to come past what is buffered (`pkt_remain`): a message
    /// larger than the buffer is forwarded as it arrives.
    public var pktRemain: Int32 = 0
    /// Bytes forwarded (done_pos, `send_pos`).
    public var sendPos: Int32 = 0
    /// Bytes pgswift itself queued for this socket and not yet written (login answers, errors, SET and
    /// reset queries, admin answers); PgBouncer always shows 0 here.
    public var sendRemain: Int32 = 0

    public init(recvPos: Int32 = 0, pktPos: Int32 = 0, pktRemain: Int32 = 0, sendPos: Int32 = 0, sendRemain: Int32 = 0) {
        self.recvPos = recvPos; self.pktPos = pktPos; self.pktRemain = pktRemain
        self.sendPos = sendPos; self.sendRemain = sendRemain
    }

    /// Read and not scanned yet (`pkt_avail`).
    public var pktAvail: Int32 { recvPos &- pktPos }
    /// Scanned and not forwarded yet (`send_avail`).
    public var sendAvail: Int32 { pktPos &- sendPos }
    /// Nothing buffered either way: SHOW ACTIVE_SOCKETS leaves the socket out (PgBouncer's `sbuf_is_empty`,
    /// plus pgswift's own queued output).
    public var isEmpty: Bool { recvPos == sendPos && pktRemain == 0 && sendRemain == 0 }
}

/// One kind of object a worker keeps in a preallocated table or free list (SHOW MEM). PgBouncer's
/// rows are its slab caches; pgswift's are its connection and pool tables and its I/O buffer pool.
public struct MemoryRow: Equatable, Sendable {
    public var name: String
    /// Bytes per object.
    public var size: Int64
    public var used: Int64
    /// Allocated and not in use (table records free for reuse, buffers kept on the free list).
    public var free: Int64

    public init(name: String, size: Int64, used: Int64, free: Int64) {
        self.name = name; self.size = size; self.used = used; self.free = free
    }

    /// Bytes allocated for this kind, used or free.
    public var memtotal: Int64 { (used &+ free) &* size }
}

extension MemoryRow: CompactRecord {
    func encode(into w: inout MessageWriter) {
        w.compactString(name)
        w.signed(size)
        w.signed(used)
        w.signed(free)
    }

    static func decode(_ r: inout StatsReader) throws(StatsDecodeError) -> MemoryRow {
        MemoryRow(name: try r.compactString("memory name"), size: try r.signed("memory size"),
                  used: try r.signed("memory used"), free: try r.signed("memory free"))
    }
}

/// Object counts for SHOW LISTS (per worker; summed across workers).
public struct ListCounts: Equatable, Sendable {
    public var usedClients: Int32 = 0
    public var freeClients: Int32 = 0
    public var loginClients: Int32 = 0
    public var usedServers: Int32 = 0
    public var freeServers: Int32 = 0
    public init() {}

    public mutating func add(_ o: ListCounts) {
        usedClients &+= o.usedClients
        freeClients &+= o.freeClients
        loginClients &+= o.loginClients
        usedServers &+= o.usedServers
        freeServers &+= o.freeServers
    }
}

/// Everything one worker reports about itself.
///
/// The periodic push (once a second) carries pools, lists and process usage with `clients` and
/// `servers` empty; SHOW CLIENTS / SHOW SERVERS ask each worker for a snapshot with the rows
/// (`StatsRequest`), because 10 000 rows a second per worker would be wasted work. Either way the
/// encoded blob travels in chunks (`StatsChunk`), so its size is not bound by one datagram.
public struct WorkerStatsSnapshot: Equatable, Sendable {
    public var slot: Int32
    public var pid: Int32
    /// Wall-clock seconds since the epoch at which the worker process started.
    public var startedAt: Int64
    /// Wall-clock microseconds since the epoch at which this snapshot was taken.
    public var takenAt: Int64
    public var process = ProcessStats()
    public var lists = ListCounts()
    public var pools: [PoolStats] = []
    public var clients: [ConnectionRow] = []
    public var servers: [ConnectionRow] = []
    /// The worker's tables and buffer pool (SHOW MEM); on the first page only.
    public var memory: [MemoryRow] = []

    public init(slot: Int32, pid: Int32, startedAt: Int64, takenAt: Int64) {
        self.slot = slot
        self.pid = pid
        self.startedAt = startedAt
        self.takenAt = takenAt
    }

    /// Paging: a worker with many pools or rows sends its snapshot as several blobs ("pages"), each a
    /// snapshot with the same header and a part of the pools and rows, numbered from 0; the receiver
    /// appends pages until `lastPage` (`appendPage`). No blob then grows with the number of pools.
    public var page: Int = 0
    public var lastPage = true

    /// Format tag and version: a supervisor and worker of different builds (during a binary upgrade)
    /// refuse each other's blobs cleanly instead of misreading them.
    static let magic: UInt8 = 0x57  // "W"
    static let version: UInt8 = 4
    /// What `encodePages` aims a page at: well below a reassembler's bound, a few chunks each.
    public static let targetPageBytes = 256 << 10

    private func writeHeader(_ w: inout MessageWriter, page: Int, last: Bool) {
        w.u8(Self.magic)
        w.u8(Self.version)
        w.signed(Int64(slot))
        w.signed(Int64(pid))
        w.signed(startedAt)
        w.signed(takenAt)
        w.varint(process.cpuUserMicros)
        w.varint(process.cpuSystemMicros)
        w.varint(process.residentBytes)
        for v in [lists.usedClients, lists.freeClients, lists.loginClients, lists.usedServers, lists.freeServers] {
            w.signed(Int64(v))
        }
        w.varint(UInt64(page))
        w.put(last)
    }

    /// This snapshot as one blob (its `page` and `lastPage` as they are).
    public func encode() -> [UInt8] {
        var w = MessageWriter(capacity: 128 + pools.count * 160 + (clients.count + servers.count) * 96)
        writeHeader(&w, page: page, last: lastPage)
        w.compactArray(memory)
        w.compactArray(pools)
        w.compactArray(clients)
        w.compactArray(servers)
        return w.bytes
    }

    /// This snapshot as pages of about `targetPageBytes` each (at least one): pools first, then client
    /// rows, then server rows; a page holds at least one record, so it exceeds the target by at most one.
    public func encodePages(targetPageBytes: Int = WorkerStatsSnapshot.targetPageBytes) -> [[UInt8]] {
        var pages: [[UInt8]] = []
        var pi = 0, ci = 0, si = 0
        while true {
            var w = MessageWriter(capacity: min(targetPageBytes, 64 << 10) + 256)
            writeHeader(&w, page: pages.count, last: false)
            let lastFlagAt = w.bytes.count - 1
            w.compactArray(pages.isEmpty ? memory : [])
            var body = MessageWriter(capacity: min(targetPageBytes, 64 << 10))
            var n = 0
            while pi < pools.count && (n == 0 || body.bytes.count < targetPageBytes) {
                pools[pi].encode(into: &body)
                pi += 1
                n += 1
            }
            w.varint(UInt64(n))
            w.raw(body.bytes)
            for (rows, index) in [(clients, 0), (servers, 1)] {
                var b = MessageWriter(capacity: 256)
                var k = 0
                var i = index == 0 ? ci : si
                while i < rows.count && (w.bytes.count + b.bytes.count < targetPageBytes || (k == 0 && n == 0)) {
                    rows[i].encode(into: &b)
                    i += 1
                    k += 1
                    n += 1
                }
                if index == 0 { ci = i } else { si = i }
                w.varint(UInt64(k))
                w.raw(b.bytes)
            }
            var bytes = w.bytes
            let done = pi == pools.count && ci == clients.count && si == servers.count
            if done { bytes[lastFlagAt] = 1 }
            pages.append(bytes)
            if done { return pages }
        }
    }

    /// Adds the pools and rows of the next page of the same snapshot.
    public mutating func appendPage(_ next: WorkerStatsSnapshot) {
        pools.append(contentsOf: next.pools)
        clients.append(contentsOf: next.clients)
        servers.append(contentsOf: next.servers)
        memory.append(contentsOf: next.memory)
        page = next.page
        lastPage = next.lastPage
    }

    public static func decode(_ bytes: [UInt8]) throws(StatsDecodeError) -> WorkerStatsSnapshot {
        try StatsReader.reading(bytes) { r throws(StatsDecodeError) in try decode(&r) }
    }

    private static func decode(_ r: inout StatsReader) throws(StatsDecodeError) -> WorkerStatsSnapshot {
        guard try r.u8("magic") == magic else { throw StatsDecodeError("not a worker snapshot") }
        let v = try r.u8("version")
        guard v == version else { throw StatsDecodeError("snapshot version \(v), expected \(version)") }
        var s = WorkerStatsSnapshot(slot: try r.signed32("slot"), pid: try r.signed32("pid"),
                                    startedAt: try r.signed("started_at"), takenAt: try r.signed("taken_at"))
        s.process.cpuUserMicros = try r.varint("cpu user")
        s.process.cpuSystemMicros = try r.varint("cpu system")
        s.process.residentBytes = try r.varint("rss")
        s.lists.usedClients = try r.signed32("lists")
        s.lists.freeClients = try r.signed32("lists")
        s.lists.loginClients = try r.signed32("lists")
        s.lists.usedServers = try r.signed32("lists")
        s.lists.freeServers = try r.signed32("lists")
        let page = try r.varint("page")
        guard page < UInt64(Int32.max) else { throw StatsDecodeError("page number \(page)") }
        s.page = Int(page)
        s.lastPage = try r.bool("last page")
        s.memory = try r.compactArray("memory row count", minimumEach: 4) { r throws(StatsDecodeError) in
            try MemoryRow.decode(&r)
        }
        s.pools = try r.compactArray("pool count", minimumEach: 3 + PoolStats.gaugeCount + 1 + PoolCounters.fieldCount) {
            r throws(StatsDecodeError) in try PoolStats.decode(&r)
        }
        s.clients = try r.compactArray("client count", minimumEach: 20) { r throws(StatsDecodeError) in
            try ConnectionRow.decode(&r)
        }
        s.servers = try r.compactArray("server count", minimumEach: 20) { r throws(StatsDecodeError) in
            try ConnectionRow.decode(&r)
        }
        try r.expectEnd("snapshot")
        return s
    }
}

/// A pool's record in a snapshot: its key, the gauges and counters in `gaugePaths` / `fieldPaths`
/// order, the histograms and the routing rows.
extension PoolStats: CompactRecord {
    func encode(into w: inout MessageWriter) {
        w.compactString(database)
        w.compactString(user)
        w.compactString(poolMode.rawValue)
        for k in Self.gaugePaths { w.signed(Int64(self[keyPath: k])) }
        w.signed(maxWaitMicros)
        for k in PoolCounters.fieldPaths { w.varint(totals[keyPath: k]) }
        w.histogram(queryDuration)
        w.histogram(xactDuration)
        w.histogram(waitDuration)
        w.compactArray(routes)
    }

    static func decode(_ r: inout StatsReader) throws(StatsDecodeError) -> PoolStats {
        let db = try r.compactString("pool database")
        let user = try r.compactString("pool user")
        let modeName = try r.compactString("pool mode")
        guard let mode = PoolMode(rawValue: modeName) else { throw StatsDecodeError("unknown pool mode \(modeName)") }
        var p = PoolStats(database: db, user: user, poolMode: mode)
        for k in gaugePaths { p[keyPath: k] = try r.signed32("pool gauge") }
        p.maxWaitMicros = try r.signed("pool maxwait")
        for k in PoolCounters.fieldPaths { p.totals[keyPath: k] = try r.varint("pool counter") }
        p.queryDuration = try r.histogram("query histogram")
        p.xactDuration = try r.histogram("xact histogram")
        p.waitDuration = try r.histogram("wait histogram")
        p.routes = try r.compactArray("route count", minimumEach: 5) { r throws(StatsDecodeError) in try RouteStat.decode(&r) }
        return p
    }
}
