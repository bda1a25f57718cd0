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

    /// Answers a parsed request. `metrics` is called only for /metrics; `healthy` says whether every
    /// worker slot has a ready worker.
    static func route(_ request: HTTPRequest, healthy: Bool, metrics: () -> String) -> [UInt8] {
        let head = request.method == "HEAD"
        guard request.method == "GET" || head else {
            return response(status: 405, reason: "Method Not Allowed", body: Array("method not allowed\n".utf8),
                            extraHeaders: [("Allow", "GET, HEAD")])
        }
        switch request.path {
        case "/metrics":
            return response(status: 200, reason: "OK", contentType: MetricsExposition.contentType,
                            body: Array(metrics().utf8), headOnly: head)
        case "/health", "/healthz":
            return healthy
                ? response(status: 200, reason: "OK", body: Array("ok\n".utf8), headOnly: head)
                : response(status: 503, reason: "Service Unavailable", body: Array("unavailable\n".utf8), headOnly: head)
        default:
            return response(status: 404, reason: "Not Found", body: Array("not found\n".utf8), headOnly: head)
        }
    }
}

/// One accepted /metrics connection, driven by the supervisor's epoll loop.
///
/// The loop reads into `received`, writes what `pendingOutput` holds, reports what it wrote with
/// `wrote`, and closes the socket on `.close` or when `deadline` (monotonic ns) passes. One request
/// per connection: the answer says `Connection: close`, so no pipelining or keep-alive state exists.
struct MetricsConnection {
    enum Action: Equatable {
        /// Wait for more input (keep EPOLLIN).
        case readMore
        /// Output is pending: watch EPOLLOUT and write `pendingOutput`.
        case write
        /// Done (or hopeless): close the socket.
        case close
    }

    private(set) var input: [UInt8] = []
    private(set) var output: [UInt8] = []
    private(set) var written = 0
    let deadline: Int64

    /// `now`: monotonic nanoseconds at accept; a client gets `timeoutNanos` to send its request and
    /// read the answer.
    init(now: Int64, timeoutNanos: Int64 = 10_000_000_000) {
        deadline = now + timeoutNanos
    }

    var pendingOutput: ArraySlice<UInt8> { output[written...] }

    /// Feeds bytes read from the socket (an empty read is EOF). `respond` builds the answer once the
    /// request is complete.
    mutating func received(_ bytes: [UInt8], respond: (HTTPRequest) -> [UInt8]) -> Action {
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
            output = respond(request)
        }
        input = []
        return .write
    }

    /// Reports `n` bytes written from `pendingOutput`.
    mutating func wrote(_ n: Int) -> Action {
        written = min(output.count, written + max(n, 0))
        return written == output.count ? .close : .write
    }

    func expired(now: Int64) -> Bool { now >= deadline }
}
