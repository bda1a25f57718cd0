// Read/write routing (issue 20): the first message of a transaction is classified before a server is
// chosen; reads go to standbys (spread over them), everything else to the primary.
import Shared
import Glibc

/// Where a routed client's next transaction goes, and why (for the counters).
enum RouteTarget: UInt8 {
    /// Not decided (a pool that does not route).
    case any = 0
    /// Not known to be read-only: the primary.
    case write
    /// Read-only: a standby.
    case read
    /// Read-only, but on the primary: read_after_write (the client wrote a moment ago).
    case readOnPrimary
    /// Read-only, but on the primary: no standby is usable (standby_reads_fallback=primary).
    case fallback
    /// A read a standby refused with 25006, re-run on the primary.
    case retry

    @inline(__always) var wantsStandby: Bool { self == .read }
}

/// Per host of a routed pool: SHOW ROUTING's and /metrics' counters (this worker's share).
struct RouteCounters: Equatable {
    var reads: UInt64 = 0
    var writes: UInt64 = 0
    var fallbacks: UInt64 = 0
    var retries: UInt64 = 0
}

/// One routed pool's state.
struct PoolRouting {
    var classifier = SQLClassifier()
    /// Each host's counters, in the entry's host order.
    var counters: [RouteCounters] = []
    /// Some standby is usable for reads now, and which hosts are (recomputed when the supervisor reports
    /// a host, so choosing a standby reads no dictionary).
    var standbyUsable = false
    var usableStandbys: [Bool] = []
    /// Round-robin cursor over the standbys, for reads.
    var nextStandby = 0
    /// The entry's host keys ("host:port"), in its order.
    var hostKeys: [String] = []
    /// The standby host (entry index) the next launch for a read should go to (-1: any).
    var launchHost = -1
    /// Routes reads at all (transaction and statement mode; a session-mode pool sends all to the primary).
    var routesReads = false
    var readAfterWrite = RoutingSettings.ReadAfterWrite.lsn
    /// standby_reads_fallback: a read with no usable standby runs on the primary, waits, or is refused
    /// (RoutingFallback.swift).
    var fallback = RoutingSettings.Fallback.primary
    var windowNanos: Int64 = 0
    /// Each host's replay position as the supervisor last pushed it (read_after_write=lsn; 0: unknown),
    /// and the smallest of the usable standbys' (0 when one is unknown or none is usable).
    var hostLSN: [UInt64] = []
    var minStandbyLSN: UInt64 = 0
}

/// The worker's routing state, behind a pointer as `Worker.hot` is. Arrays indexed by client, server and
/// pool slot grow as their tables do.
struct RoutingState {
    /// Per client slot.
    var want: [RouteTarget] = []
    /// Per client slot: when its last transaction on the primary was seen to end (primary_window).
    var lastWrite: [Int64] = []
    /// Per client slot (read_after_write=lsn): the WAL position its last write transaction's commit
    /// reached on the primary (0: none to wait for; `.max`: being learnt), and the client id it is for.
    var commitLSN: [UInt64] = []
    var commitFor: [UInt64] = []
    /// Per server slot: the client (slot, id) whose commit position the server's internal query is
    /// learning (-1: none).
    var lsnClient: [Int32] = []
    var lsnClientID: [UInt64] = []
    /// Per server slot: the id of the connection running `commitLSNQuery` (0: none; its end goes to
    /// `commitLSNDone`, not to a reset's).
    var lsnQuery: [UInt64] = []
    /// Per server slot: the connection id the cached role is for, its role (1 primary, 2 standby) and
    /// its host's index in the pool's entry.
    var serverID: [UInt64] = []
    var serverRole: [UInt8] = []
    var serverHost: [Int16] = []
    /// Per pool slot (nil: the pool does not route).
    var pools: [PoolRouting?] = []
    /// 25006 safety net. Per client slot: the Query message of its current read (kept to re-run it), and
    /// whether its next transaction must go to the primary (the re-run). Per server slot: the id of the
    /// connection whose answer may still be retried (nothing of it has reached the client yet; 0: none),
    /// and of one draining the rest of a dropped answer.
    var retryQuery: [[UInt8]] = []
    var retryNext: [Bool] = []
    var armed: [UInt64] = []
    var retryDrain: [UInt64] = []
    /// Per client slot (standby_reads_fallback=error): the id of the client whose refused extended-protocol
    /// read is being skipped up to its Sync (0: none; RoutingFallback.swift).
    var refusing: [UInt64] = []
    /// The verdict on each prepared statement (StatementRegistry id; ids are never reused), made at the
    /// first Bind that starts a transaction with it: a named statement is classified once.
    var statementTargets: [Int64: RouteTarget] = [:]
    /// Verdicts on transactions' first texts by shape (`RouteVerdictCache`): texts that differ only in
    /// their constants are classified once.
    var verdicts = RouteVerdictCache()

    mutating func fit(clients: Int, servers: Int, pools n: Int) {
        if want.count < clients {
            want += [RouteTarget](repeating: .any, count: clients - want.count)
            lastWrite += [Int64](repeating: 0, count: clients - lastWrite.count)
            commitLSN += [UInt64](repeating: 0, count: clients - commitLSN.count)
            commitFor += [UInt64](repeating: 0, count: clients - commitFor.count)
            retryQuery += [[UInt8]](repeating: [], count: clients - retryQuery.count)
            retryNext += [Bool](repeating: false, count: clients - retryNext.count)
            refusing += [UInt64](repeating: 0, count: clients - refusing.count)
        }
        if serverID.count < servers {
            let k = servers - serverID.count
            serverID += [UInt64](repeating: 0, count: k)
            serverRole += [UInt8](repeating: 0, count: k)
            serverHost += [Int16](repeating: -1, count: k)
            lsnClient += [Int32](repeating: -1, count: k)
            lsnClientID += [UInt64](repeating: 0, count: k)
            lsnQuery += [UInt64](repeating: 0, count: k)
            armed += [UInt64](repeating: 0, count: k)
            retryDrain += [UInt64](repeating: 0, count: k)
        }
        if pools.count < n { pools += [PoolRouting?](repeating: nil, count: n - pools.count) }
    }
}

/// A direct-mapped cache of classifications, keyed by the text's shape (`SQLHash.shape`: constants' values
/// left out) and the pool slot: pgbench's `SELECT ... WHERE aid = 42` is lexed once, not once per
/// transaction. Texts with a comment are never cached, because the shape counts a comment without its
/// text and a `/* pgswift:primary */` hint must not share a verdict with an unhinted text. Emptied when
/// a pool's routing settings change (a deny list decides verdicts). Fixed size, no allocation after init.
struct RouteVerdictCache {
    static let size = 4096
    private var keys = [UInt64](repeating: 0, count: RouteVerdictCache.size)
    private var targets = [RouteTarget](repeating: .any, count: RouteVerdictCache.size)

    /// The cache key of `sql` in pool `pool`, nil when it must not be cached.
    @inline(__always)
    static func key(_ sql: UnsafeRawBufferPointer, pool: Int) -> UInt64? {
        guard let base = sql.baseAddress, sql.count > 0 else { return nil }
        // Comments (a hint is one) are rare in application SQL: `/` or `--` anywhere opts out.
        if memchr(base, Int32(UInt8(ascii: "/")), sql.count) != nil { return nil }
        var from = 0
        while from < sql.count, let dash = memchr(base + from, Int32(UInt8(ascii: "-")), sql.count - from) {
            let i = base.distance(to: UnsafeRawPointer(dash))
            if i + 1 < sql.count && sql[i + 1] == UInt8(ascii: "-") { return nil }
            from = i + 1
        }
        guard let shape = SQLHash.shape(sql) else { return nil }
        let k = shape ^ (UInt64(UInt32(truncatingIfNeeded: pool)) &* 0x9E37_79B9_7F4A_7C15)
        return k == 0 ? 1 : k
    }

    @inline(__always)
    func lookup(_ key: UInt64) -> RouteTarget? {
        let i = Int(truncatingIfNeeded: key) & (Self.size - 1)
        return keys[i] == key ? targets[i] : nil
    }

    @inline(__always)
    mutating func store(_ key: UInt64, _ target: RouteTarget) {
        let i = Int(truncatingIfNeeded: key) & (Self.size - 1)
        keys[i] = key
        targets[i] = target
    }

    mutating func clear() {
        for i in keys.indices { keys[i] = 0 }
    }
}

/// Classifies a routed transaction's first message (pure: tested in RoutingTests).
enum RouteClassifier {
    /// The message's SQL text: a Query's string, or a Parse's query (after the statement name). nil for
    /// any other message, or a malformed one.
    static func text(type: UInt8, body: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        var start = 0
        if type == FrontendType.parse {
            guard let nul = body.firstIndex(of: 0) else { return nil }
            start = nul + 1
        } else if type != FrontendType.query {
            return nil
        }
        var end = start
        while end < body.count && body[end] != 0 { end += 1 }
        guard end < body.count else { return nil }
        return UnsafeRawBufferPointer(rebasing: body[start..<end])
    }

    /// Read (a standby may run it) or write (the primary), from the text of a transaction's first message.
    /// A hint comment decides first; BEGIN/START TRANSACTION READ ONLY is a read; a simple Query of
    /// several statements is a read only when each of them is.
    static func target(_ sql: UnsafeRawBufferPointer, _ classifier: SQLClassifier) -> RouteTarget {
        var splitter = SQLStatementSplitter(sql)
        var any = false
        while let s = splitter.next() {
            let info = classifier.classify(sql, range: s.range)
            if !any {
                if info.hint == .primary { return .write }
                if info.hint == .standby { return .read }
                if (info.kind == .begin || info.kind == .startTransaction) && info.flags.contains(.readOnlyTransaction)
                    && !info.flags.contains(.readWriteTransaction) {
                    return .read
                }
            }
            if !info.readOnly { return .write }
            any = true
        }
        return any ? .read : .write
    }
}

extension Worker {
    /// The routing state of pool `pi`, made when the pool is (or its entry changes at reload).
    func setUpRouting(_ pi: Int, fresh: Bool = false) {
        let entry = pools[pi].entry
        guard entry.routing.enabled else {
            // A pool that does not route allocates nothing: the per-client and per-server tables (about
            // 40 bytes a client slot) exist only once some pool routes.
            if pi < routes.pointee.pools.count { routes.pointee.pools[pi] = nil }
            return
        }
        routes.pointee.fit(clients: clients.capacity, servers: servers.capacity, pools: pools.highWater)
        var r = (fresh ? nil : routes.pointee.pools[pi]) ?? PoolRouting()
        r.classifier = SQLClassifier(denyList: entry.routing.denyFunctions)
        r.routesReads = pools[pi].mode != .session
        r.readAfterWrite = entry.routing.readAfterWrite
        r.fallback = entry.routing.fallback
        r.windowNanos = Int64(entry.routing.windowMillis) * 1_000_000
        r.hostKeys = backendHosts(entry).map { $0.key }
        let n = r.hostKeys.count
        if r.hostLSN.count != n { r.hostLSN = [UInt64](repeating: 0, count: n) }
        if r.counters.count != n { r.counters = [RouteCounters](repeating: RouteCounters(), count: n) }
        routes.pointee.pools[pi] = r
        routes.pointee.verdicts.clear()
        hot.pointee.routing = true
        refreshRouting(pi)
    }

    @inline(__always)
    func poolRoutes(_ pi: Int) -> Bool {
        pi < routes.pointee.pools.count && routes.pointee.pools[pi] != nil
    }

    /// scanClient's hook before a server is linked for a new transaction (only while some pool routes).
    /// Decides where it goes from its first message. `.handle`: go on (link a server); `.done(.needMore)`:
    /// that message must be read whole first; `.next`: the message was answered here and consumed
    /// (standby_reads_fallback=error, RoutingFallback.swift), the client's input position written back.
    @inline(never)
    func routeTransaction(_ ci: Int32, _ type: UInt8, _ msg: UnsafeMutableRawPointer, total: Int, avail: Int) -> ScanStep {
        let pi = Int(clients[ci].pool)
        guard poolRoutes(pi) else { return .handle }
        routes.pointee.fit(clients: clients.capacity, servers: servers.capacity, pools: pools.highWater)
        let c = Int(ci)
        if routes.pointee.refusing[c] != 0 {
            if routes.pointee.refusing[c] == clients[ci].id { return skipRefused(ci, type, total: total, avail: avail) }
            routes.pointee.refusing[c] = 0  // another client's, in a reused slot
        }
        // The previous transaction went to the primary and has ended: this is when it was last seen writing.
        if routes.pointee.want[c] == .write { routes.pointee.lastWrite[c] = now }
        var target = RouteTarget.write
        // The pool's settings read field by field: a copy of the whole PoolRouting would retain and
        // release each of its arrays at every transaction.
        if routes.pointee.pools[pi]!.routesReads && (type == FrontendType.query || type == FrontendType.parse
                             || (type == FrontendType.bind && hot.pointee.trackPrepared)) {
            if total > avail {
                if total <= buffers.size { return .done(.needMore) }
            } else if type == FrontendType.bind {
                target = boundTarget(ci, UnsafeRawBufferPointer(start: msg + 5, count: total - 5),
                                     routes.pointee.pools[pi]!.classifier)
            } else if let sql = RouteClassifier.text(type: type, body: UnsafeRawBufferPointer(start: msg + 5, count: total - 5)) {
                let key = RouteVerdictCache.key(sql, pool: pi)
                if let key, let known = routes.pointee.verdicts.lookup(key) {
                    target = known
                } else {
                    target = RouteClassifier.target(sql, routes.pointee.pools[pi]!.classifier)
                    if let key { routes.pointee.verdicts.store(key, target) }
                }
            }
        }
        let readAfterWrite = routes.pointee.pools[pi]!.readAfterWrite
        if target == .read && readAfterWrite == .primaryWindow && routes.pointee.lastWrite[c] != 0
            && now &- routes.pointee.lastWrite[c] < routes.pointee.pools[pi]!.windowNanos {
            target = .readOnPrimary
        }
        if target == .read && readAfterWrite == .lsn && routes.pointee.commitLSN[c] != 0 {
            let need = routes.pointee.commitLSN[c]
            if routes.pointee.commitFor[c] != clients[ci].id {
                routes.pointee.commitLSN[c] = 0  // another client's, in a reused slot
            } else if need != .max && routes.pointee.pools[pi]!.minStandbyLSN >= need {
                routes.pointee.commitLSN[c] = 0  // every usable standby has replayed the client's last commit
            } else if need == .max && now &- routes.pointee.lastWrite[c] > Worker.commitLSNPatience {
                routes.pointee.commitLSN[c] = 0  // the position never came (the query failed): stop waiting
            } else {
                target = .readOnPrimary
            }
        }
        if target == .read && !routes.pointee.pools[pi]!.standbyUsable && !routes.pointee.retryNext[c] {
            // standby_reads_fallback: the primary; or wait in the queue (nothing fits it until a standby is
            // usable); or an error now.
            if routes.pointee.pools[pi]!.fallback == .primary {
                target = .fallback
            } else if routes.pointee.pools[pi]!.fallback == .error {
                return refuseRead(ci, type, total: total)
            }
        }
        if routes.pointee.retryNext[c] {
            routes.pointee.retryNext[c] = false
            target = .retry
        } else if target == .read && type == FrontendType.query && total <= avail {
            // Kept until the standby has answered: re-run on the primary if it refuses with 25006.
            routes.pointee.retryQuery[c].removeAll(keepingCapacity: true)
            routes.pointee.retryQuery[c].append(contentsOf: UnsafeRawBufferPointer(start: msg, count: total))
        } else if !routes.pointee.retryQuery[c].isEmpty {
            routes.pointee.retryQuery[c].removeAll(keepingCapacity: true)
        }
        routes.pointee.want[c] = target
        return .handle
    }

    /// A transaction that starts with a Bind of a statement the client prepared earlier (transaction
    /// pooling's prepared-statement tracking): the statement's text decides, classified once per statement.
    /// An unnamed or unknown statement goes to the primary.
    private func boundTarget(_ ci: Int32, _ body: UnsafeRawBufferPointer, _ classifier: SQLClassifier) -> RouteTarget {
        guard let portalEnd = body.firstIndex(of: 0) else { return .write }
        let nameStart = portalEnd + 1
        guard let nameEnd = body[nameStart...].firstIndex(of: 0), nameEnd > nameStart else { return .write }
        let name = String(decoding: UnsafeRawBufferPointer(rebasing: body[nameStart..<nameEnd]), as: UTF8.self)
        guard let id = clients[ci].info?.prepared?[name] else { return .write }
        // Per pool too: the pool's deny list may differ.
        let key = Int64(clients[ci].pool) << 32 | Int64(UInt32(bitPattern: id))
        if let t = routes.pointee.statementTargets[key] { return t }
        guard let rest = statements.body(id) else { return .write }
        let t = rest.withUnsafeBytes { raw -> RouteTarget in
            guard let nul = raw.firstIndex(of: 0) else { return .write }
            return RouteClassifier.target(UnsafeRawBufferPointer(rebasing: raw[..<nul]), classifier)
        }
        // Bounded: forgetting costs one classification per statement.
        if routes.pointee.statementTargets.count >= 100_000 { routes.pointee.statementTargets.removeAll() }
        routes.pointee.statementTargets[key] = t
        return t
    }

    /// The role (1 primary, 2 standby, 0 unknown) of server `si` and its host's index, cached per connection.
    func serverRoute(_ si: Int32) -> (role: UInt8, host: Int) {
        let s = Int(si)
        if routes.pointee.serverID.count <= s {
            routes.pointee.fit(clients: clients.capacity, servers: servers.capacity, pools: pools.highWater)
        }
        if routes.pointee.serverID[s] == servers[si].id && routes.pointee.serverRole[s] != 0 {
            return (routes.pointee.serverRole[s], Int(routes.pointee.serverHost[s]))
        }
        guard let key = servers[si].info?.hostKey, let role = health.backends[key]?.flags.role else { return (0, -1) }
        let pi = Int(servers[si].pool)
        let host = (poolRoutes(pi) ? routes.pointee.pools[pi]!.hostKeys.firstIndex(of: key) : nil) ?? -1
        routes.pointee.serverID[s] = servers[si].id
        routes.pointee.serverRole[s] = role.inRecovery ? 2 : 1
        routes.pointee.serverHost[s] = Int16(host)
        return (routes.pointee.serverRole[s], host)
    }

    /// Where client `ci`'s transaction goes; a client that reached a routed pool without being routed
    /// (a handed-over one) counts as a write.
    @inline(__always)
    func wantOf(_ ci: Int32) -> RouteTarget {
        Int(ci) < routes.pointee.want.count ? routes.pointee.want[Int(ci)] : .write
    }

    /// A server of `role` on entry host `host` of pool `pi` may take a transaction that wants `want`: a
    /// read only on a standby usable now (not down, lagging or suspect).
    @inline(__always)
    private func fits(_ want: RouteTarget, _ role: UInt8, _ pi: Int, _ host: Int) -> Bool {
        guard want.wantsStandby else { return role == 1 }
        return role == 2 && host >= 0 && host < routes.pointee.pools[pi]!.usableStandbys.count
            && routes.pointee.pools[pi]!.usableStandbys[host]
    }

    /// Counts the transaction `ci` starts on `si`.
    private func countRoute(_ ci: Int32, _ si: Int32) {
        let pi = Int(clients[ci].pool)
        let (_, host) = serverRoute(si)
        guard host >= 0, poolRoutes(pi), host < routes.pointee.pools[pi]!.counters.count else { return }
        switch wantOf(ci) {
        case .write, .any: routes.pointee.pools[pi]!.counters[host].writes &+= 1
        case .read, .readOnPrimary: routes.pointee.pools[pi]!.counters[host].reads &+= 1
        case .fallback:
            routes.pointee.pools[pi]!.counters[host].reads &+= 1
            routes.pointee.pools[pi]!.counters[host].fallbacks &+= 1
        case .retry:
            routes.pointee.pools[pi]!.counters[host].reads &+= 1
            routes.pointee.pools[pi]!.counters[host].retries &+= 1
        }
        // A simple-Query read on a standby may be re-run on the primary until its answer starts.
        let s = Int(si)
        routes.pointee.armed[s] = wantOf(ci) == .read && !routes.pointee.retryQuery[Int(ci)].isEmpty ? servers[si].id : 0
    }

    /// acquireServer's choice of an idle server for a routed pool: one of the right role (for a read, on
    /// the standby whose turn it is when it has one idle, or when the pool has room to open one there).
    /// -1: none; when the pool is full of servers of the other role, an idle one of them closes for room.
    func routedIdle(_ ci: Int32) -> Int32 {
        let pi = Int(clients[ci].pool)
        let want = wantOf(ci)
        var turnHost = -1
        if want.wantsStandby { turnHost = standbyTurn(pi) }
        var first: Int32 = -1, onTurn: Int32 = -1, other: Int32 = -1
        var si = pools[pi].idle.head
        while si >= 0 {
            let (role, host) = serverRoute(si)
            if fits(want, role, pi, host) {
                if first < 0 { first = si }
                if host == turnHost { onTurn = si; break }
                if !want.wantsStandby { break }  // any server of the primary will do
            } else if other < 0 {
                other = si
            }
            si = servers[si].links.next
        }
        if want.wantsStandby {
            routes.pointee.pools[pi]!.nextStandby &+= 1
            if onTurn < 0 && pools[pi].serverCount < pools[pi].limit {
                routes.pointee.pools[pi]!.launchHost = turnHost
                first = -1
            }
        }
        let pick = onTurn >= 0 ? onTurn : first
        if pick >= 0 {
            // One idle past server_check_delay is checked first and reaches the client through
            // `routedWaiter`, which counts it then.
            if now &- servers[pick].stateSince < hot.pointee.serverCheckDelay { countRoute(ci, pick) }
            return pick
        }
        if other >= 0 && pools[pi].serverCount >= pools[pi].limit && !waitsForStandby(pi, want) {
            closeServer(other, reason: "room for a server of the other role (routing)")
        }
        return -1
    }

    /// The standby host (entry index) whose turn it is to take a read, -1 when none is usable. No
    /// allocation: two passes over the host keys.
    private func standbyTurn(_ pi: Int) -> Int {
        let hosts = routes.pointee.pools[pi]!.usableStandbys.count
        var usable = 0
        for i in 0..<hosts where routes.pointee.pools[pi]!.usableStandbys[i] { usable += 1 }
        guard usable > 0 else { return -1 }
        var n = routes.pointee.pools[pi]!.nextStandby % usable
        for i in 0..<hosts where routes.pointee.pools[pi]!.usableStandbys[i] {
            if n == 0 { return i }
            n -= 1
        }
        return -1
    }

    private func standbyUsable(_ key: String) -> Bool {
        guard let v = health.backends[key], v.flags.contains(.known), v.flags.contains(.up),
              v.flags.role?.inRecovery == true, !v.flags.contains(.lagging) else { return false }
        if let until = health.suspectUntil[key], now < until { return false }
        return true
    }

    /// serverIdle's choice of a waiting client for a freed server of a routed pool: the first whose
    /// transaction fits the server's role. -1: none (the server is parked, or closed for room when
    /// clients wait for the other role and the pool is full).
    func routedWaiter(_ si: Int32) -> Int32 {
        let pi = Int(servers[si].pool)
        let (role, host) = serverRoute(si)
        var ci = pools[pi].waiting.head
        while ci >= 0 {
            if fits(wantOf(ci), role, pi, host) {
                countRoute(ci, si)
                return ci
            }
            ci = clients[ci].links.next
        }
        return -1
    }

    /// After `routedWaiter` found nobody for `si` while clients wait: when the pool is full, the server
    /// closes so one of the role they need can open. True when it was closed.
    func routedMakeRoom(_ si: Int32) -> Bool {
        let p = servers[si].pool
        let pi = Int(p)
        guard pools[pi].waiting.head >= 0, pools[pi].serverCount >= pools[pi].limit, !onlyParkedReadsWait(pi) else { return false }
        closeServer(si, reason: "room for a server of the other role (routing)")
        launchIfNeeded(p)
        return true
    }

    /// serveWaiting for a routed pool: each waiting client, in order, gets an idle server of its role.
    func serveWaitingRouted(_ p: Int32) {
        let pi = Int(p)
        var linked = true
        while linked && pools[pi].waiting.head >= 0 && pools[pi].idle.head >= 0 {
            linked = false
            var ci = pools[pi].waiting.head
            while ci >= 0 {
                let si = routedIdle(ci)
                if si >= 0 {
                    link(ci, si)
                    clientData(ci)
                    linked = true
                    break
                }
                ci = clients[ci].links.next
            }
        }
        launchIfNeeded(p)
    }

    /// pickBackend's filter for a routed pool: hosts of the role the waiting clients need (a standby when
    /// more reads wait than standby connections are being opened), the standby whose turn it is first.
    /// Hosts whose role is not known yet take nothing: no write may reach a standby.
    func routeCandidates(_ p: Int32, _ candidates: inout [(key: String, addresses: [SocketAddress], standby: Bool)]) {
        let pi = Int(p)
        var readsWaiting = 0, othersWaiting = 0
        var ci = pools[pi].waiting.head
        while ci >= 0 {
            if wantOf(ci).wantsStandby { readsWaiting += 1 } else { othersWaiting += 1 }
            ci = clients[ci].links.next
        }
        if readsWaiting > 0 && othersWaiting == 0 && !(routes.pointee.pools[pi]?.standbyUsable ?? true) {
            // Only reads waiting for a standby while none is usable (standby_reads_fallback=wait): nothing to open.
            candidates.removeAll()
            return
        }
        var standbysOpening = 0
        if readsWaiting > 0 {
            var si: Int32 = 0
            let cap = Int32(servers.capacity)
            while si < cap {
                if servers[si].pool == p && (servers[si].state == .connecting || servers[si].state == .login)
                    && serverRoute(si).role == 2 {
                    standbysOpening += 1
                }
                si += 1
            }
        }
        let standby = readsWaiting > standbysOpening && (routes.pointee.pools[pi]?.standbyUsable ?? false)
        candidates.removeAll { c in
            guard let role = health.backends[c.key]?.flags.role else { return true }
            return role.inRecovery != standby
        }
        if standby, let r = routes.pointee.pools[pi], r.launchHost >= 0 {
            let hosts = backendHosts(pools[pi].entry)
            if r.launchHost < hosts.count, let i = candidates.firstIndex(where: { $0.key == hosts[r.launchHost].key }) {
                candidates = [candidates[i]]
            }
            routes.pointee.pools[pi]!.launchHost = -1
        }
    }

    /// After a health report: whether each routed pool has a usable standby; reads waiting for one that
    /// is gone fall back to the primary.
    func refreshRouting() {
        for pi in pools.indices where poolRoutes(pi) { refreshRouting(pi) }
    }

    private func refreshRouting(_ pi: Int) {
        let ok = routes.pointee.pools[pi]!.hostKeys.map { standbyUsable($0) }
        let usable = ok.contains(true)
        routes.pointee.pools[pi]!.usableStandbys = ok
        routes.pointee.pools[pi]!.standbyUsable = usable
        refreshMinLSN(pi)
        if !usable { standbysGone(pi) }  // RoutingFallback.swift
    }

    /// A host's role changed (promotion, demotion, switchover): its idle connections close now and busy
    /// ones at release, for every pool (routed or target_session_attrs), so no write reaches a standby.
    func noteRoleChange(_ key: String, before: BackendFlags?, after: BackendFlags) {
        guard let old = before?.role, let new = after.role, old.inRecovery != new.inRecovery else { return }
        log.info("backend \(key) is now a \(new.inRecovery ? "standby" : "primary"): closing its server connections")
        drainServers(key: key, keep: nil, reason: "backend \(key) changed role")
    }

    /// This worker's routing counters of pool `pi`, per host (empty for a pool that does not route).
    func routeStats(_ pi: Int) -> [RouteStat] {
        guard poolRoutes(pi) else { return [] }
        let c = routes.pointee.pools[pi]!.counters
        return backendHosts(pools[pi].entry).enumerated().map { (i, h) in
            i < c.count ? RouteStat(host: h.key, reads: c[i].reads, writes: c[i].writes, fallbacks: c[i].fallbacks,
                                    retries: c[i].retries) : RouteStat(host: h.key)
        }
    }

    // MARK: read_after_write=lsn

    /// How long a client's reads wait for its commit position to be learnt before going anywhere again.
    static let commitLSNPatience: Int64 = 10_000_000_000

    private func refreshMinLSN(_ pi: Int) {
        let r = routes.pointee.pools[pi]!
        var m = UInt64.max
        for i in r.hostKeys.indices where i < r.usableStandbys.count && r.usableStandbys[i] { m = min(m, r.hostLSN[i]) }
        routes.pointee.pools[pi]!.minStandbyLSN = m == .max ? 0 : m
    }

    /// The supervisor read a standby's replay position.
    func standbyReplayed(key: String, lsn: UInt64) {
        guard hot.pointee.routing else { return }
        for pi in pools.indices where poolRoutes(pi) {
            guard let i = routes.pointee.pools[pi]!.hostKeys.firstIndex(of: key) else { continue }
            routes.pointee.pools[pi]!.hostLSN[i] = lsn
            refreshMinLSN(pi)
        }
    }

    static let commitLSNQuery = "SELECT pg_catalog.pg_current_wal_insert_lsn()"

    /// releaseServer's hook (read_after_write=lsn): a write transaction just ended on the primary, so
    /// before the server goes back to the pool it is asked for its WAL insert position, which covers
    /// the commit; the answer (`commitLSNRow`) becomes the client's. Until then its reads go to the
    /// primary. True when the query was sent (the server comes back through `resetDone`).
    func learnCommitLSN(_ si: Int32, _ ci: Int32) -> Bool {
        let pi = Int(servers[si].pool)
        guard ci >= 0, poolRoutes(pi), routes.pointee.pools[pi]!.readAfterWrite == .lsn,
              wantOf(ci) == .write, serverRoute(si).role == 1 else { return false }
        let c = Int(ci), s = Int(si)
        routes.pointee.commitLSN[c] = .max
        routes.pointee.commitFor[c] = clients[ci].id
        routes.pointee.lastWrite[c] = now
        routes.pointee.lsnClient[s] = ci
        routes.pointee.lsnClientID[s] = clients[ci].id
        routes.pointee.lsnQuery[s] = servers[si].id
        setServerState(si, .resetting)
        scratch.clear()
        Frontend.query(into: &scratch, sql: Worker.commitLSNQuery)
        servers[si].io.out.append(scratch)
        servers[si].internalQueries += 1
        flushServer(si)
        return true
    }

    /// resetDone's hook: the end of `commitLSNQuery` (not a reset: what the server's session holds is
    /// unchanged). True when it was that; the server went on (`serverIdle`).
    func routedInternalDone(_ si: Int32) -> Bool {
        let s = Int(si)
        if s < routes.pointee.retryDrain.count && routes.pointee.retryDrain[s] != 0 {
            let mine = routes.pointee.retryDrain[s] == servers[si].id
            routes.pointee.retryDrain[s] = 0
            if mine {
                if servers[si].txStatus != UInt8(ascii: "I") {
                    closeServer(si, reason: "still in a transaction after a refused read")
                } else {
                    serverIdle(si)
                }
                return true
            }
        }
        guard s < routes.pointee.lsnQuery.count, routes.pointee.lsnQuery[s] != 0 else { return false }
        let mine = routes.pointee.lsnQuery[s] == servers[si].id
        routes.pointee.lsnQuery[s] = 0
        guard mine else { return false }
        routes.pointee.lsnClient[s] = -1
        if servers[si].txStatus != UInt8(ascii: "I") {
            closeServer(si, reason: "still in a transaction after the commit position query")
            return true
        }
        serverIdle(si)
        return true
    }

    /// A DataRow of one of pgswift's own queries (scanServer, while some pool routes): the answer to
    /// `commitLSNQuery`, when this server was asked one.
    func commitLSNRow(_ si: Int32, _ body: UnsafeRawBufferPointer) {
        let s = Int(si)
        guard s < routes.pointee.lsnClient.count, routes.pointee.lsnClient[s] >= 0,
              routes.pointee.lsnQuery[s] == servers[si].id else { return }
        let ci = routes.pointee.lsnClient[s]
        routes.pointee.lsnClient[s] = -1
        guard let lsn = RouteClassifier.lsn(dataRow: body), clients[ci].id == routes.pointee.lsnClientID[s],
              routes.pointee.commitFor[Int(ci)] == clients[ci].id, routes.pointee.commitLSN[Int(ci)] == .max else { return }
        routes.pointee.commitLSN[Int(ci)] = lsn
    }
}

extension RouteClassifier {
    /// The LSN in a one-column DataRow's text ("16/B374D848"); nil for anything else. No allocation.
    static func lsn(dataRow body: UnsafeRawBufferPointer) -> UInt64? {
        guard body.count >= 6, body[0] == 0, body[1] == 1 else { return nil }
        let len = Int(body[2]) << 24 | Int(body[3]) << 16 | Int(body[4]) << 8 | Int(body[5])
        guard len > 0, len <= 17, 6 + len == body.count else { return nil }
        var hi: UInt64 = 0, lo: UInt64 = 0, slash = false, digits = 0
        for i in 6..<body.count {
            let b = body[i]
            let v: UInt64
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt64(b - 48)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = UInt64(b - 55)
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = UInt64(b - 87)
            case UInt8(ascii: "/") where !slash && digits > 0:
                slash = true
                digits = 0
                continue
            default: return nil
            }
            digits += 1
            if digits > 8 { return nil }
            if slash { lo = lo << 4 | v } else { hi = hi << 4 | v }
        }
        guard slash, digits > 0 else { return nil }
        return hi << 32 | lo
    }
}

extension Worker {
    // MARK: 25006 safety net

    /// scanServer's hook while some pool routes, for each message of a linked server. A server armed for
    /// a retry (a simple-Query read on a standby) is disarmed by any message but an ErrorResponse; an
    /// ErrorResponse 25006 (read_only_sql_transaction) as the answer's first message is dropped, the
    /// rest of the answer swallowed, and the client's Query re-run on the primary. nil: go on as usual;
    /// true: the message was dropped; false: the error must be read whole first.
    func routedServerMessage(_ si: Int32, _ type: UInt8, total: Int, avail: Int, _ scan: inout Int) -> Bool? {
        let s = Int(si)
        guard s < routes.pointee.armed.count, routes.pointee.armed[s] != 0 else { return nil }
        guard routes.pointee.armed[s] == servers[si].id, type == BackendType.errorResponse else {
            routes.pointee.armed[s] = 0
            return nil
        }
        routes.pointee.armed[s] = 0
        if total > avail { return total <= buffers.size ? false : nil }
        let ci = servers[si].client
        let body = UnsafeRawBufferPointer(start: servers[si].io.input.base! + (scan &+ 5), count: total &- 5)
        guard ci >= 0, scan == servers[si].io.input.start, servers[si].pendingSyncs == 1, !servers[si].unsynced,
              clients[ci].io.input.start == clients[ci].io.input.end, clients[ci].io.input.partial == 0,
              Int(ci) < routes.pointee.retryQuery.count, !routes.pointee.retryQuery[Int(ci)].isEmpty,
              ErrorFields.parse(body)?.code == "25006" else { return nil }  // read_only_sql_transaction
        log.info("C-\(clients[ci].id): standby S-\(servers[si].id) refused a read (25006): re-running it on the primary")
        // The error goes nowhere; the ReadyForQuery after it is swallowed (`routedInternalDone`).
        scan &+= total
        servers[si].io.input.start = scan
        unlink(client: ci, server: si)
        servers[si].pendingSyncs = 0
        servers[si].internalQueries = 1
        routes.pointee.retryDrain[s] = servers[si].id
        setServerState(si, .resetting)
        // The Query goes back in front of the client's input, bound for the primary.
        let q = routes.pointee.retryQuery[Int(ci)]
        if clients[ci].io.input.base == nil { clients[ci].io.input.base = buffers.take() }
        q.withUnsafeBytes { clients[ci].io.input.base!.copyMemory(from: $0.baseAddress!, byteCount: q.count) }
        clients[ci].io.input.start = 0
        clients[ci].io.input.scan = 0
        clients[ci].io.input.end = q.count
        routes.pointee.retryNext[Int(ci)] = true
        clientData(ci)
        return true
    }
}
