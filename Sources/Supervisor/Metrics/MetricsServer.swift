// The /metrics and /health listener ([pgswift] metrics_listen), served by the supervisor's epoll loop.
import Glibc
import Shared

/// One listening socket and its open connections, each a `MetricsConnection` state machine, bounded
/// by `MetricsConnectionLimits`.
///
/// The listener is level-triggered: every readiness event accepts (a connection past a cap evicts an
/// idle one or is closed at once), because a pending connection left in the queue keeps the listener
/// readable and `epoll_wait` would return at once, forever. When accept itself fails for lack of
/// descriptors, the listener leaves the epoll set until the next tick for the same reason.
final class MetricsServer {
    /// Connections accepted per listener event; the rest wait for the next `epoll_wait`.
    static let acceptsPerEvent = 16
    let listenFD: Int32
    let address: String
    var connections: [Int32: MetricsConnection] = [:]
    var limits = MetricsConnectionLimits()
    /// Out of the epoll set after EMFILE/ENFILE; put back at the next tick.
    var listenerParked = false
    /// Connections closed by the caps and timers since start (logged in batches, not one line each).
    var evicted = 0
    var refused = 0
    var expiredCount = 0
    var lastReported = (evicted: 0, refused: 0, expired: 0)

    /// /metrics requests are answered from a round of StatsRequests to every worker (a scrape shows
    /// what the workers hold when it arrives, not their last once-a-second push). Requests that come
    /// while a round is in flight wait for the next one, so no answer predates its request; one round
    /// answers every request waiting for it, and rounds start at most every `roundGapNanos`, so a
    /// burst of scrapes costs the workers a few snapshots, not one each.
    static let roundGapNanos: Int64 = 100_000_000
    /// Requests waiting for the next round.
    private(set) var awaitingNextRound: Set<Int32> = []
    /// Requests answered when the round in flight ends.
    private(set) var inRound: Set<Int32> = []
    private(set) var roundInFlight = false
    private var lastRoundStart: Int64 = 0
    /// Rounds started since start (a test hook and a figure for debugging).
    private(set) var rounds = 0

    let log: Logger

    init(listenFD: Int32, address: String, log: Logger) {
        self.listenFD = listenFD
        self.address = address
        self.log = log
    }

    /// "host:port", "[v6]:port" or ":port" / "port" (all interfaces).
    static func parseAddress(_ text: String) -> SocketAddress? {
        var host = "0.0.0.0"
        var portText = text
        if let colon = text.lastIndex(of: ":") {
            host = String(text[..<colon])
            portText = String(text[text.index(after: colon)...])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            if host.isEmpty || host == "*" { host = "0.0.0.0" }
        }
        guard let port = Int(portText), port > 0 && port < 65536 else { return nil }
        if host == "localhost" { host = "127.0.0.1" }
        return SocketAddress.numeric(host: host, port: port)
    }

    static func open(_ text: String, epoll: borrowing Epoll, log: Logger) throws(StartupError) -> MetricsServer {
        guard let address = parseAddress(text) else {
            throw StartupError("metrics_listen = \(text): expected host:port with a numeric address")
        }
        do throws(SyscallError) {
            let fd = try Sockets.listenTCP(address, reusePort: false, backlog: 64)
            try epoll.add(fd, events: .input, data: SupervisorToken.metricsListener.raw)
            return MetricsServer(listenFD: fd, address: address.description, log: log)
        } catch {
            throw StartupError("metrics_listen = \(text): \(error)")
        }
    }

    func handle(_ token: SupervisorToken, epoll: borrowing Epoll, respond: (HTTPRequest) -> MetricsRoute) {
        if token == .metricsListener {
            accept(epoll: epoll, respond: respond)
        } else {
            let fd = Int32(truncatingIfNeeded: token.index)
            serve(fd, epoll: epoll, respond: respond)
        }
    }

    private func accept(epoll: borrowing Epoll, respond: (HTTPRequest) -> MetricsRoute) {
        var peer = SocketAddress()
        let now = Clock.monotonicNanos()
        for _ in 0..<Self.acceptsPerEvent {
            let fd: Int32
            do throws(SyscallError) {
                guard let f = try Sockets.accept(listenFD, peer: &peer) else { return }
                fd = f
            } catch {
                if error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesSystem {
                    // The queued connection stays: watching the listener now would only spin.
                    epoll.remove(listenFD)
                    listenerParked = true
                }
                log.warning("metrics: accept: \(error)")
                return
            }
            var answerable: [Int32] = []
            let admission = limits.admit(fd, address: MetricsConnectionLimits.host(of: peer.description), now: now) { victim in
                switch readRequest(victim, respond: respond) {
                case .write?:
                    answerable.append(victim)
                    return true
                case .awaitMetrics?:
                    awaitingNextRound.insert(victim)
                    return true
                default:
                    return false
                }
            }
            // Requests found complete while looking for a victim are answered now.
            for ready in answerable { serve(ready, epoll: epoll, respond: respond) }
            switch admission {
            case .refuse:
                refused += 1
                Posix.close(fd)
                continue
            case .accept(let evict):
                for victim in evict { close(victim, epoll: epoll) }
                evicted += evict.count
            }
            do throws(SyscallError) {
                try epoll.add(fd, events: .input, data: SupervisorToken.metricsConnection(fd: fd).raw)
                connections[fd] = MetricsConnection()
            } catch {
                limits.closed(fd)
                Posix.close(fd)
            }
        }
    }

    private func serve(_ fd: Int32, epoll: borrowing Epoll, respond: (HTTPRequest) -> MetricsRoute) {
        guard var conn = connections[fd] else { return }
        var action = MetricsConnection.Action.write
        if conn.pendingOutput.isEmpty {
            guard let a = read(fd, &conn, respond: respond) else { return }
            action = a
            if action == .write || action == .awaitMetrics { limits.requestComplete(fd) }
        }
        if action == .awaitMetrics {
            connections[fd] = conn
            if !inRound.contains(fd) { awaitingNextRound.insert(fd) }
            return
        }
        flush(fd, &conn, action, epoll: epoll)
    }

    /// Writes what the connection has pending until done (closed) or the socket is full (EPOLLOUT).
    private func flush(_ fd: Int32, _ conn: inout MetricsConnection, _ first: MetricsConnection.Action,
                       epoll: borrowing Epoll) {
        var action = first
        while action == .write {
            let pending = Array(conn.pendingOutput)
            var written = 0
            let r = pending.withUnsafeBytes { raw -> IOResult? in try? Posix.send(fd, raw.baseAddress!, raw.count) }
            switch r {
            case .processed(let k)?: written = k
            case .wouldBlock?:
                connections[fd] = conn
                try? epoll.modify(fd, events: .output, data: SupervisorToken.metricsConnection(fd: fd).raw)
                return
            case nil:
                action = .close
                continue
            }
            action = conn.wrote(written)
        }
        if action == .close {
            close(fd, epoll: epoll)
        } else {
            connections[fd] = conn
        }
    }

    // MARK: Rounds

    /// Whether a round should start now: requests wait, none is in flight, and the last one started
    /// at least `roundGapNanos` ago.
    func roundDue(now: Int64) -> Bool {
        !awaitingNextRound.isEmpty && !roundInFlight && (rounds == 0 || now - lastRoundStart >= Self.roundGapNanos)
    }

    /// When the stats timer must start a round that `roundDue` held back; nil when none waits.
    var nextRoundAt: Int64? {
        guard !awaitingNextRound.isEmpty, !roundInFlight else { return nil }
        return lastRoundStart + Self.roundGapNanos
    }

    /// The requests waiting now are the ones this round answers.
    func beginRound(now: Int64) {
        inRound = awaitingNextRound
        awaitingNextRound = []
        roundInFlight = true
        lastRoundStart = now
        rounds += 1
    }

    /// The round's figures are in: every request of the round gets `body` (or its head).
    func answerRound(body: [UInt8], epoll: borrowing Epoll) {
        let fds = inRound
        inRound = []
        roundInFlight = false
        for fd in fds.sorted() {
            guard var conn = connections[fd] else { continue }
            let action = conn.answerMetrics(body: body)
            flush(fd, &conn, action, epoll: epoll)
        }
    }

    /// One read into the connection's state machine; nil when the socket had nothing (EAGAIN).
    private func read(_ fd: Int32, _ conn: inout MetricsConnection, respond: (HTTPRequest) -> MetricsRoute) -> MetricsConnection.Action? {
        var buf = [UInt8](repeating: 0, count: 4096)
        let r = buf.withUnsafeMutableBytes { raw -> IOResult? in try? Posix.read(fd, raw.baseAddress!, raw.count) }
        let n: Int
        switch r {
        case .processed(let k)?: n = k
        case .wouldBlock?: return nil
        case nil: n = 0
        }
        return conn.received(Array(buf[0..<n]), respond: respond)
    }

    /// Reads an eviction candidate: `.write` when its request is now complete (its answer is built),
    /// `.awaitMetrics` when it is a /metrics request (answered by the next round); nil when nothing
    /// was read.
    private func readRequest(_ fd: Int32, respond: (HTTPRequest) -> MetricsRoute) -> MetricsConnection.Action? {
        guard var conn = connections[fd], conn.pendingOutput.isEmpty, !conn.awaitingMetrics else { return nil }
        let action = read(fd, &conn, respond: respond)
        connections[fd] = conn
        return action
    }

    private func close(_ fd: Int32, epoll: borrowing Epoll) {
        epoll.remove(fd)
        Posix.close(fd)
        connections[fd] = nil
        limits.closed(fd)
        awaitingNextRound.remove(fd)
        inRound.remove(fd)
    }

    /// From the supervisor's 1 s tick: closes connections idle or open too long, puts a parked
    /// listener back, and logs what the caps closed since the last line.
    /// Named `expire` for its caller (SupervisorStats.swift).
    func expire(now: Int64, epoll: borrowing Epoll) {
        let expired = limits.expired(now: now)
        for fd in expired { close(fd, epoll: epoll) }
        expiredCount += expired.count
        if listenerParked {
            listenerParked = (try? epoll.add(listenFD, events: .input, data: SupervisorToken.metricsListener.raw)) == nil
        }
        let current = (evicted: evicted, refused: refused, expired: expiredCount)
        if current != lastReported {
            log.warning("metrics: closed \(current.expired - lastReported.expired) connections idle or open too long, "
                        + "\(current.evicted - lastReported.evicted) idle ones to make room, refused "
                        + "\(current.refused - lastReported.refused) (\(connections.count) open)")
            lastReported = current
        }
    }

    func shutdown(epoll: borrowing Epoll) {
        for fd in connections.keys { close(fd, epoll: epoll) }
        if !listenerParked { epoll.remove(listenFD) }
        Posix.close(listenFD)
    }
}

extension Supervisor {
    /// Opens the metrics listener when configured; a failure is logged and the service runs without it.
    func openMetrics() {
        guard !config.metricsListen.isEmpty, statsState.metrics == nil else { return }
        do throws(StartupError) {
            statsState.metrics = try MetricsServer.open(config.metricsListen, epoll: epoll, log: log)
            log.info("metrics on http://\(statsState.metrics!.address)/metrics")
        } catch {
            log.error("\(error)")
        }
    }

    func handleMetrics(_ token: SupervisorToken) {
        guard let server = statsState.metrics else { return }
        let health = serviceHealth()
        server.handle(token, epoll: epoll) { MetricsHTTP.route($0, health: health) }
        startMetricsRound(now: Clock.monotonicNanos())
    }

    /// The facts behind GET /health (ServiceHealth.swift).
    func serviceHealth() -> ServiceHealth {
        ServiceHealth(stopping: stopping != nil,
                      upgrading: upgrade.check != nil || upgrade.resume != nil || !upgrade.isIdle,
                      readyWorkers: slots.filter { $0.pid != 0 && $0.ready }.count, workerSlots: slots.count,
                      backends: healthState.targets.count,
                      backendsUp: healthState.targets.filter { $0.health.state == .up }.count)
    }

    /// Asks every worker for a fresh snapshot for the /metrics requests waiting, when a round is due
    /// (`MetricsServer.roundDue`; otherwise the stats timer comes back at `nextRoundAt`). The answer
    /// comes at `metricsRoundDone`, within `SupervisorStatsState.collectionTimeoutNanos` whatever the
    /// workers do: a worker that is late counts with its last periodic snapshot.
    func startMetricsRound(now: Int64) {
        guard let server = statsState.metrics, server.roundDue(now: now) else { return }
        server.beginRound(now: now)
        startCollection(.metrics, clients: false, servers: false, queries: config.queryStats)
    }

    /// The round's snapshots are in (or its time is up): one body for every request of the round.
    func metricsRoundDone(_ merged: MergedStats, queries: [QueryStatsSnapshot]) {
        guard let server = statsState.metrics else { return }
        var input = metricsInput(merged)
        if config.queryStats {
            input.queries = MergedQueryStats.merge(queries)
            input.queryTop = config.queryStatsMetricsTop
        }
        let body = Array((MetricsExposition.render(input) + healthMetrics() + routingMetrics(merged)).utf8)
        server.answerRound(body: body, epoll: epoll)
        startMetricsRound(now: Clock.monotonicNanos())
    }

    func metricsInput(_ merged: MergedStats) -> MetricsInput {
        var input = MetricsInput(merged: merged)
        input.databases = databaseRows(merged)
        input.workers = workerRows(merged)
        input.configuredDatabases = config.databases.count
        input.configuredUsers = config.users.count
        input.maxClientConnections = Int64(config.maxClientConn)
        input.maxUserConnections = Int64(config.maxUserConnections)
        let dns = dnsCounts()
        input.cachedDNSNames = Int64(dns.names)
        input.inFlightDNSQueries = Int64(dns.queries)
        input.serverMoves = Int64(serverMoves.relayed - serverMoves.lost)
        input.serverMovesLost = Int64(serverMoves.lost)
        return input
    }
}
