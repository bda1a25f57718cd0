// A minimal HTTP/1.1 responder for /metrics and /health: pure parsing, routing and a connection state.

/// A parsed request line (headers are checked for form, then ignored: every answer closes).
struct HTTPRequest: Equatable {
    var method: String
    /// The path, without query string or fragment ("/metrics").
    var path: String
    var version: String
}

enum HTTPParseResult: Equatable {
    /// No blank line yet: read more.
    case incomplete
    case request(HTTPRequest)
    /// Answer with this status and close.
    case invalid(status: Int, reason: String)
}

enum MetricsHTTP {
    /// Largest request head accepted; a scraper sends a few hundred bytes.
    static let maximumRequestSize = 8192

    /// Parses a request head from the bytes received so far.
    static func parse(_ bytes: [UInt8]) -> HTTPParseResult {
        guard let headEnd = findHeadEnd(bytes) else {
            return bytes.count >= maximumRequestSize
                ? .invalid(status: 431, reason: "Request Header Fields Too Large") : .incomplete
        }
        if headEnd > maximumRequestSize { return .invalid(status: 431, reason: "Request Header Fields Too Large") }
        // Lines end in CRLF; a bare LF is tolerated, as most servers do.
        var lines = bytes[0..<headEnd].split(separator: 0x0A, omittingEmptySubsequences: false).map { line -> ArraySlice<UInt8> in
            line.last == 0x0D ? line.dropLast() : line
        }
        while let first = lines.first, first.isEmpty { lines.removeFirst() }  // RFC 9112: ignore leading blank lines
        guard let requestLine = lines.first else { return .invalid(status: 400, reason: "Bad Request") }
        let parts = requestLine.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(isTokenChar), !parts[1].isEmpty,
              parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return .invalid(status: 400, reason: "Bad Request")
        }
        let version = String(decoding: parts[2], as: UTF8.self)
        guard version.hasPrefix("HTTP/") else { return .invalid(status: 400, reason: "Bad Request") }
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else {
            return .invalid(status: 505, reason: "HTTP Version Not Supported")
        }
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = line.firstIndex(of: 0x3A), colon > line.startIndex,
                  line[line.startIndex..<colon].allSatisfy(isTokenChar) else {
                return .invalid(status: 400, reason: "Bad Request")
            }
        }
        var target = String(decoding: parts[1], as: UTF8.self)
        // absolute-form ("http://host:port/metrics"), as sent through a proxy
        if let scheme = target.firstRange(of: "://") {
            let rest = target[scheme.upperBound...]
            target = rest.firstIndex(of: "/").map { String(rest[$0...]) } ?? "/"
        }
        if let q = target.firstIndex(where: { $0 == "?" || $0 == "#" }) { target = String(target[..<q]) }
        return .request(HTTPRequest(method: String(decoding: parts[0], as: UTF8.self), path: target, version: version))
    }

    /// Offset just past the blank line ending the head, or nil.
    static func findHeadEnd(_ b: [UInt8]) -> Int? {
        var i = 0
        while i < b.count {
            if b[i] == 0x0A {
                if i + 1 < b.count && b[i + 1] == 0x0A { return i + 2 }
                if i + 2 < b.count && b[i + 1] == 0x0D && b[i + 2] == 0x0A { return i + 3 }
            }
            i += 1
        }
        return nil
    }

    static func isTokenChar(_ c: UInt8) -> Bool {
        switch c {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        default: return "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }

    /// A complete response; always `Connection: close`.
    static func response(status: Int, reason: String, contentType: String = "text/plain; charset=utf-8",
                         body: [UInt8], headOnly: Bool = false, extraHeaders: [(String, String)] = []) -> [UInt8] {
        var head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        for (k, v) in extraHeaders { head += "\(k): \(v)\r\n" }
        head += "Connection: close\r\n\r\n"
        var out = Array(head.utf8)
        if !headOnly { out.append(contentsOf: body) }
        return out
    }

    /// Answers a parsed request, except /metrics: its body needs fresh figures from the workers, so
    /// the caller answers it later with `metricsResponse`. `health` decides /health's answer.
    static func route(_ request: HTTPRequest, health: ServiceHealth) -> MetricsRoute {
        let head = request.method == "HEAD"
        guard request.method == "GET" || head else {
            return .answer(response(status: 405, reason: "Method Not Allowed", body: Array("method not allowed\n".utf8),
                                    extraHeaders: [("Allow", "GET, HEAD")]))
        }
        switch request.path {
        case "/metrics":
            return .metrics(headOnly: head)
        case "/health", "/healthz":
            guard let problem = health.problem else {
                return .answer(response(status: 200, reason: "OK", body: Array("ok\n".utf8), headOnly: head))
            }
            return .answer(response(status: 503, reason: "Service Unavailable", body: Array("unavailable: \(problem)\n".utf8),
                                    headOnly: head))
        default:
            return .answer(response(status: 404, reason: "Not Found", body: Array("not found\n".utf8), headOnly: head))
        }
    }

    /// The answer to /metrics once its body is rendered.
    static func metricsResponse(body: [UInt8], headOnly: Bool) -> [UInt8] {
        response(status: 200, reason: "OK", contentType: MetricsExposition.contentType, body: body, headOnly: headOnly)
    }
}

/// What a request gets: an answer now, or the metrics once the workers have sent fresh figures.
enum MetricsRoute: Equatable {
    case answer([UInt8])
    case metrics(headOnly: Bool)
}

/// One accepted /metrics connection, driven by the supervisor's epoll loop.
///
/// The loop reads into `received`, writes what `pendingOutput` holds, reports what it wrote with
/// `wrote`, and closes the socket on `.close`; how long it may stay open is `MetricsConnectionLimits`'
/// business. One request per connection: the answer says `Connection: close`, so no pipelining or
/// keep-alive state exists.
struct MetricsConnection {
    enum Action: Equatable {
        /// Wait for more input (keep EPOLLIN).
        case readMore
        /// Output is pending: watch EPOLLOUT and write `pendingOutput`.
        case write
        /// The request is /metrics: wait for the workers' figures (`answerMetrics`), reading only to
        /// notice the client leaving.
        case awaitMetrics
        /// Done (or hopeless): close the socket.
        case close
    }

    private(set) var input: [UInt8] = []
    private(set) var output: [UInt8] = []
    private(set) var written = 0
    /// A /metrics request waits for its body; `headOnly` for HEAD.
    private(set) var awaitingMetrics = false
    private(set) var headOnly = false

    var pendingOutput: ArraySlice<UInt8> { output[written...] }

    /// Feeds bytes read from the socket (an empty read is EOF). `respond` routes the request once it
    /// is complete.
    mutating func received(_ bytes: [UInt8], respond: (HTTPRequest) -> MetricsRoute) -> Action {
        if awaitingMetrics {
            // Anything sent after the request is ignored; a client that hangs up gets no answer
            // (reading EOF again and again would spin the loop until the figures come).
            return bytes.isEmpty ? .close : .awaitMetrics
        }
        guard output.isEmpty else { return .write }  // ignore anything sent after the request
        if bytes.isEmpty { return .close }
        // Keep at most one byte past the limit: enough for parse() to tell "too large" from "incomplete".
        input.append(contentsOf: bytes.prefix(max(0, MetricsHTTP.maximumRequestSize + 1 - input.count)))
        switch MetricsHTTP.parse(input) {
        case .incomplete:
            return .readMore
        case .invalid(let status, let reason):
            output = MetricsHTTP.response(status: status, reason: reason, body: Array("\(reason)\n".utf8))
        case .request(let request):
            switch respond(request) {
            case .answer(let bytes):
                output = bytes
            case .metrics(let head):
                input = []
                awaitingMetrics = true
                headOnly = head
                return .awaitMetrics
            }
        }
        input = []
        return .write
    }

    /// The body of an awaited /metrics answer: the response is now pending output.
    mutating func answerMetrics(body: [UInt8]) -> Action {
        guard awaitingMetrics else { return output.isEmpty ? .close : .write }
        awaitingMetrics = false
        output = MetricsHTTP.metricsResponse(body: body, headOnly: headOnly)
        return .write
    }

    /// Reports `n` bytes written from `pendingOutput`.
    mutating func wrote(_ n: Int) -> Action {
        written = min(output.count, written + max(n, 0))
        return written == output.count ? .close : .write
    }
}

/// Which /metrics connections stay open: a pure policy, driven by the server's accepts, completed
/// requests, closes and clock ticks, that never touches a socket.
///
/// A connection is *idle* until its request is complete (after that it is writing an answer). Idle
/// connections are what a broken or hostile client leaves behind, so they are the ones bounded:
/// at most `perAddress` connections per client address and `total` in all (a new connection past
/// either cap evicts the oldest idle one of that address, else the oldest idle one overall, so a
/// fresh scrape is always answered; it is refused only when every connection it would compete with
/// is busy answering), `idleNanos` to send a complete request, `lifetimeNanos` in all.
struct MetricsConnectionLimits {
    struct Entry: Equatable {
        var address: String
        var openedAt: Int64
        /// Accept order: "oldest" is the smallest, whatever the clock's resolution.
        var order: UInt64
        var idle = true
    }

    enum Admission: Equatable {
        /// Take the new connection after closing these (oldest first).
        case accept(evict: [Int32])
        /// Close the new connection at once: every connection it would replace is busy.
        case refuse
    }

    var total = 64
    var perAddress = 8
    var idleNanos: Int64 = 5_000_000_000
    var lifetimeNanos: Int64 = 10_000_000_000
    private(set) var entries: [Int32: Entry] = [:]
    private var nextOrder: UInt64 = 0

    var count: Int { entries.count }

    /// A connection was accepted on `fd` from `address` (host only, no port). `hasRequest` is asked
    /// about an idle connection before it is evicted (the server reads what it was sent): one whose
    /// request is complete is busy, not idle, and the next candidate is taken. A burst of connections
    /// (SYN retries after a full backlog) must not push out a scrape whose request is only unread.
    mutating func admit(_ fd: Int32, address: String, now: Int64,
                        hasRequest: (Int32) -> Bool = { _ in false }) -> Admission {
        var evict: [Int32] = []
        if entries.values.lazy.filter({ $0.address == address }).count >= perAddress {
            guard let victim = takeIdleVictim(where: { $0.address == address }, hasRequest) else { return .refuse }
            evict.append(victim)
        }
        if entries.count >= total {
            // Only reached with nothing evicted above (that eviction made room), so nothing to undo.
            guard let victim = takeIdleVictim(where: { _ in true }, hasRequest) else { return .refuse }
            evict.append(victim)
        }
        nextOrder &+= 1
        entries[fd] = Entry(address: address, openedAt: now, order: nextOrder)
        return .accept(evict: evict)
    }

    private mutating func takeIdleVictim(where match: (Entry) -> Bool, _ hasRequest: (Int32) -> Bool) -> Int32? {
        while let victim = oldestIdle(where: match) {
            if hasRequest(victim) {
                entries[victim]?.idle = false
                continue
            }
            entries[victim] = nil
            return victim
        }
        return nil
    }

    /// The request on `fd` is complete: it no longer counts as idle.
    mutating func requestComplete(_ fd: Int32) {
        entries[fd]?.idle = false
    }

    mutating func closed(_ fd: Int32) {
        entries[fd] = nil
    }

    /// Connections to close at `now`: idle past `idleNanos`, or open past `lifetimeNanos`.
    func expired(now: Int64) -> [Int32] {
        entries.filter { _, e in
            now - e.openedAt >= lifetimeNanos || (e.idle && now - e.openedAt >= idleNanos)
        }.map(\.key).sorted()
    }

    /// When the next connection expires, or nil when none is open.
    var nextExpiry: Int64? {
        entries.values.map { $0.openedAt + ($0.idle ? min(idleNanos, lifetimeNanos) : lifetimeNanos) }.min()
    }

    private func oldestIdle(where match: (Entry) -> Bool) -> Int32? {
        entries.filter { $0.value.idle && match($0.value) }.min { $0.value.order < $1.value.order }?.key
    }

    /// The host part of "host:port" / "[v6]:port", so all of one client's connections share a key.
    static func host(of peer: String) -> String {
        guard let colon = peer.lastIndex(of: ":") else { return peer }
        return String(peer[..<colon])
    }
}
