// The /metrics and /health listener ([pgswift] metrics_listen), served by the supervisor's epoll loop.
import Glibc
import Shared

/// One listening socket and its open connections, each a `MetricsConnection` state machine.
final class MetricsServer {
    /// epoll data: bit 63 marks metrics sockets; the listener is bit 63 alone, a connection adds its fd + 1.
    static let tag: UInt64 = 1 << 63
    let listenFD: Int32
    let address: String
    var connections: [Int32: MetricsConnection] = [:]

    init(listenFD: Int32, address: String) {
        self.listenFD = listenFD
        self.address = address
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

    static func open(_ text: String, epoll: borrowing Epoll) throws(StartupError) -> MetricsServer {
        guard let address = parseAddress(text) else {
            throw StartupError("metrics_listen = \(text): expected host:port with a numeric address")
        }
        do throws(SyscallError) {
            let fd = try Sockets.listenTCP(address, reusePort: false, backlog: 64)
            try epoll.add(fd, events: .input, data: tag)
            return MetricsServer(listenFD: fd, address: address.description)
        } catch {
            throw StartupError("metrics_listen = \(text): \(error)")
        }
    }

    func handle(data: UInt64, epoll: borrowing Epoll, respond: (HTTPRequest) -> [UInt8]) {
        if data == Self.tag {
            accept(epoll: epoll)
        } else {
            let fd = Int32(truncatingIfNeeded: data & 0xFFFF_FFFF) - 1
            serve(fd, epoll: epoll, respond: respond)
        }
    }

    private func accept(epoll: borrowing Epoll) {
        var peer = SocketAddress()
        while connections.count < 64 {
            guard let fd = try? Sockets.accept(listenFD, peer: &peer) else { return }
            do throws(SyscallError) {
                try epoll.add(fd, events: .input, data: Self.tag | UInt64(fd + 1))
                connections[fd] = MetricsConnection(now: Clock.monotonicNanos())
            } catch {
                Posix.close(fd)
            }
        }
    }

    private func serve(_ fd: Int32, epoll: borrowing Epoll, respond: (HTTPRequest) -> [UInt8]) {
        guard var conn = connections[fd] else { return }
        var action = MetricsConnection.Action.write
        if conn.pendingOutput.isEmpty {
            var buf = [UInt8](repeating: 0, count: 4096)
            let r = buf.withUnsafeMutableBytes { raw -> IOResult? in try? Posix.read(fd, raw.baseAddress!, raw.count) }
            let n: Int
            switch r {
            case .processed(let k)?: n = k
            case .wouldBlock?: return
            case nil: n = 0
            }
            action = conn.received(Array(buf[0..<n]), respond: respond)
        }
        while action == .write {
            let pending = Array(conn.pendingOutput)
            var written = 0
            let r = pending.withUnsafeBytes { raw -> IOResult? in try? Posix.send(fd, raw.baseAddress!, raw.count) }
            switch r {
            case .processed(let k)?: written = k
            case .wouldBlock?:
                connections[fd] = conn
                try? epoll.modify(fd, events: .output, data: Self.tag | UInt64(fd + 1))
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

    private func close(_ fd: Int32, epoll: borrowing Epoll) {
        epoll.remove(fd)
        Posix.close(fd)
        connections[fd] = nil
    }

    /// Closes connections past their deadline (a scraper that never sent its request).
    func expire(now: Int64, epoll: borrowing Epoll) {
        for (fd, c) in connections where c.expired(now: now) { close(fd, epoll: epoll) }
    }

    func shutdown(epoll: borrowing Epoll) {
        for fd in connections.keys { close(fd, epoll: epoll) }
        epoll.remove(listenFD)
        Posix.close(listenFD)
    }
}

extension Supervisor {
    /// Opens the metrics listener when configured; a failure is logged and the service runs without it.
    func openMetrics() {
        guard !config.metricsListen.isEmpty, statsState.metrics == nil else { return }
        do throws(StartupError) {
            statsState.metrics = try MetricsServer.open(config.metricsListen, epoll: epoll)
            log.info("metrics on http://\(statsState.metrics!.address)/metrics")
        } catch {
            log.error("\(error)")
        }
    }

    func handleMetrics(_ data: UInt64) {
        guard let server = statsState.metrics else { return }
        server.handle(data: data, epoll: epoll) { request in
            let healthy = stopping == nil && slots.allSatisfy { $0.pid != 0 && $0.ready }
            return MetricsHTTP.route(request, healthy: healthy) { MetricsExposition.render(metricsInput()) + healthMetrics() }
        }
    }

    func metricsInput() -> MetricsInput {
        let merged = latestMerged()
        var input = MetricsInput(merged: merged)
        input.databases = databaseRows(merged)
        input.workers = workerRows(merged)
        input.configuredDatabases = config.databases.count
        input.configuredUsers = config.users.count
        input.maxClientConnections = Int64(config.maxClientConn)
        input.maxUserConnections = Int64(config.maxUserConnections)
        return input
    }
}
