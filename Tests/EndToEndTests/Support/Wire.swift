// A raw TCP socket and a minimal PostgreSQL v3 wire client for tests that need byte-level control.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP connection (to 127.0.0.1 unless told otherwise) with poll()-based timeouts on every read.
final class TestSocket {
    private(set) var fd: Int32 = -1
    private var buffer: [UInt8] = []
    /// Set once the peer has closed (EOF) or reset the connection.
    private(set) var peerClosed = false

    /// `host` is an IPv4 address (e.g. a network namespace's, see FleetNetwork).
    init(host: String = "127.0.0.1", port: Int, timeout: Double = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw E2EError("socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_in.loopback(port: port)
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
            close()
            throw E2EError("not an IPv4 address: \(host)")
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 && errno != EINPROGRESS {
            let e = errno
            close()
            throw E2EError("connect \(host):\(port): \(String(cString: strerror(e)))")
        }
        if rc != 0 {
            guard waitFor(Int16(POLLOUT), timeout: timeout) else {
                close()
                throw E2EError("connect \(host):\(port): timed out")
            }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 {
                close()
                throw E2EError("connect \(host):\(port): \(String(cString: strerror(err)))")
            }
        }
        // Back to blocking; reads are bounded by poll().
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
    }

    deinit { close() }

    /// True if a TCP connection to host:port is accepted now.
    static func canConnect(host: String = "127.0.0.1", port: Int, timeout: Double = 2) -> Bool {
        (try? TestSocket(host: host, port: port, timeout: timeout)) != nil
    }

    /// True if bytes (or EOF) are waiting to be read now: something arrived that nobody asked for yet.
    var hasInput: Bool { !buffer.isEmpty || peerClosed || waitFor(Int16(POLLIN), timeout: 0) }

    var localPort: Int {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    /// Half-close: the peer reads EOF, we can still read what it sends.
    func shutdownWrite() { _ = shutdown(fd, Int32(SHUT_WR)) }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw E2EError("send: \(String(cString: strerror(errno)))")
            }
            sent += n
        }
    }

    private func waitFor(_ events: Int16, timeout: Double) -> Bool {
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        let deadline = monotonicNow() + timeout
        while true {
            let left = max(0, deadline - monotonicNow())
            let rc = Glibc.poll(&pfd, 1, Int32(left * 1000))
            if rc > 0 { return true }
            if rc == 0 { return false }
            if errno != EINTR { return false }
        }
    }

    /// Reads what is there into the buffer. False on timeout; on EOF or reset sets `peerClosed`.
    @discardableResult
    private func fill(timeout: Double) -> Bool {
        guard !peerClosed else { return false }
        guard waitFor(Int16(POLLIN), timeout: timeout) else { return false }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n > 0 {
            buffer += chunk[0..<n]
            return true
        }
        if n < 0 && errno == EINTR { return true }
        peerClosed = true  // 0 = EOF; < 0 = ECONNRESET and friends
        return false
    }

    /// Exactly `count` bytes, or nil if the peer closed first. Throws on timeout.
    func read(count: Int, timeout: Double) throws -> [UInt8]? {
        let deadline = monotonicNow() + timeout
        while buffer.count < count {
            if peerClosed { return nil }
            let left = deadline - monotonicNow()
            if left <= 0 { throw E2EError("read timed out after \(timeout) s (have \(buffer.count) of \(count) bytes)") }
            fill(timeout: left)
        }
        let out = Array(buffer[0..<count])
        buffer.removeFirst(count)
        return out
    }

    /// Everything the peer sends until it closes; `closed` is false if `timeout` passed first.
    func readUntilClosed(timeout: Double) -> (data: [UInt8], closed: Bool) {
        let deadline = monotonicNow() + timeout
        while !peerClosed {
            let left = deadline - monotonicNow()
            if left <= 0 { break }
            fill(timeout: left)
        }
        let data = buffer
        buffer.removeAll()
        return (data, peerClosed)
    }
}

/// One backend message: its type byte and body (without the length word).
struct WireMessage {
    let type: UInt8
    let body: [UInt8]
    var typeChar: Character { Character(UnicodeScalar(type)) }
}

/// The fields of an ErrorResponse / NoticeResponse, keyed by field type ('C' = SQLSTATE, 'M' = message).
struct WireErrorFields: CustomStringConvertible {
    let fields: [Character: String]
    var sqlstate: String? { fields["C"] }
    var message: String? { fields["M"] }
    var severity: String? { fields["V"] ?? fields["S"] }
    var description: String { "\(severity ?? "?") \(sqlstate ?? "?") \(message ?? "?")" }

    init(body: [UInt8]) {
        var f: [Character: String] = [:]
        var i = 0
        while i < body.count, body[i] != 0 {
            let key = Character(UnicodeScalar(body[i]))
            i += 1
            let start = i
            while i < body.count, body[i] != 0 { i += 1 }
            f[key] = String(decoding: body[start..<i], as: UTF8.self)
            i += 1
        }
        fields = f
    }
}

/// The server (through pgswift) answered with an ErrorResponse.
struct WireServerError: Error, CustomStringConvertible {
    let fields: WireErrorFields
    var description: String { "server error: \(fields)" }
}

/// Builders for frontend messages.
enum WireEncode {
    static func int32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }

    static func cString(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

    /// StartupMessage: length, protocol version, key/value pairs, terminator.
    static func startup(parameters: [(String, String)], protocolVersion: UInt32 = 0x0003_0000) -> [UInt8] {
        var body = int32(protocolVersion)
        for (k, v) in parameters { body += cString(k) + cString(v) }
        body.append(0)
        return int32(UInt32(body.count + 4)) + body
    }

    static func message(_ type: Character, _ body: [UInt8]) -> [UInt8] {
        [type.asciiValue!] + int32(UInt32(body.count + 4)) + body
    }

    static func query(_ sql: String) -> [UInt8] { message("Q", cString(sql)) }
    static func password(_ text: String) -> [UInt8] { message("p", cString(text)) }
    static let terminate: [UInt8] = message("X", [])
}

/// A minimal PostgreSQL client: logs in with trust or a clear-text password, runs simple queries.
final class WireClient {
    let socket: TestSocket
    let timeout: Double
    /// The process id of the BackendKeyData the server sent at login (pgswift: slot << 20 | index).
    var backendProcessID: Int32 = 0
    var backendSecretKey: UInt32 = 0
    /// ParameterStatus values the server sent at login, by name.
    var reported: [String: String] = [:]

    init(socket: TestSocket, timeout: Double) {
        self.socket = socket
        self.timeout = timeout
    }

    /// Reads one message; nil if the peer closed the connection instead.
    func readMessage(timeout: Double? = nil) throws -> WireMessage? {
        let t = timeout ?? self.timeout
        guard let header = try socket.read(count: 5, timeout: t) else { return nil }
        let len = Int(header[1]) << 24 | Int(header[2]) << 16 | Int(header[3]) << 8 | Int(header[4])
        guard len >= 4, len < 64 << 20 else { throw E2EError("bad message length \(len) (type \(header[0]))") }
        guard let body = try socket.read(count: len - 4, timeout: t) else { return nil }
        return WireMessage(type: header[0], body: body)
    }

    /// Connects and logs in. Handles AuthenticationOk and the clear-text password request;
    /// throws WireServerError on an ErrorResponse. `parameters` go into the startup packet after
    /// user and database; the ParameterStatus values of the login are kept in `reported`.
    static func connect(port: Int, user: String, database: String, password: String? = nil,
                        parameters: [(String, String)] = [], timeout: Double = 30) throws -> WireClient {
        let client = WireClient(socket: try TestSocket(port: port, timeout: timeout), timeout: timeout)
        try client.socket.send(WireEncode.startup(parameters: [("user", user), ("database", database)] + parameters))
        while true {
            guard let m = try client.readMessage() else { throw E2EError("connection closed during login") }
            switch m.typeChar {
            case "R":
                let code = m.body.count >= 4 ? Int(m.body[3]) : -1
                if code == 0 { continue }
                guard code == 3, let password else {
                    throw E2EError("WireClient supports only trust and clear-text logins (got auth code \(code))")
                }
                try client.socket.send(WireEncode.password(password))
            case "E": throw WireServerError(fields: WireErrorFields(body: m.body))
            case "Z": return client
            case "K" where m.body.count >= 4:
                client.backendProcessID = Int32(bitPattern: UInt32(m.body[0]) << 24 | UInt32(m.body[1]) << 16
                                                | UInt32(m.body[2]) << 8 | UInt32(m.body[3]))
                if m.body.count >= 8 {
                    client.backendSecretKey = UInt32(m.body[4]) << 24 | UInt32(m.body[5]) << 16 | UInt32(m.body[6]) << 8 | UInt32(m.body[7])
                }
            case "S":
                let fields = m.body.split(separator: 0, omittingEmptySubsequences: false)
                if fields.count >= 2 {
                    client.reported[String(decoding: fields[0], as: UTF8.self)] = String(decoding: fields[1], as: UTF8.self)
                }
            default: continue  // NoticeResponse
            }
        }
    }

    /// Runs one simple query; returns the rows as text (nil = NULL). Throws on an ErrorResponse.
    func query(_ sql: String) throws -> [[String?]] {
        try socket.send(WireEncode.query(sql))
        return try readResult(sql)
    }

    /// The rows of a query sent earlier, up to its ReadyForQuery (for several clients' queries in
    /// flight at once: send on each, then read each). Throws on an ErrorResponse.
    func readResult(_ sql: String = "") throws -> [[String?]] {
        var rows: [[String?]] = []
        var failure: WireErrorFields?
        while true {
            guard let m = try readMessage() else { throw E2EError("connection closed during query '\(sql)'") }
            switch m.typeChar {
            case "D": rows.append(Self.decodeDataRow(m.body))
            case "E": failure = WireErrorFields(body: m.body)
            case "Z":
                if let failure { throw WireServerError(fields: failure) }
                return rows
            default: continue
            }
        }
    }

    func close() {
        try? socket.send(WireEncode.terminate)
        socket.close()
    }

    private static func decodeDataRow(_ body: [UInt8]) -> [String?] {
        func int(_ at: Int, _ width: Int) -> Int {
            (0..<width).reduce(0) { $0 << 8 | Int(body[at + $1]) }
        }
        var out: [String?] = []
        let n = int(0, 2)
        var i = 2
        for _ in 0..<n {
            let len = Int32(truncatingIfNeeded: int(i, 4))
            i += 4
            if len < 0 { out.append(nil); continue }
            out.append(String(decoding: body[i..<i + Int(len)], as: UTF8.self))
            i += Int(len)
        }
        return out
    }

    /// Logs in with a deliberately wrong password, whatever method the server asks for
    /// (clear text, MD5, SCRAM-SHA-256 with a bogus proof; no real crypto is needed to be wrong).
    /// Returns the ErrorResponse; throws if the login succeeds or the connection just closes.
    static func failedLogin(port: Int, user: String, database: String,
                            timeout: Double = 30) throws -> WireErrorFields {
        let client = WireClient(socket: try TestSocket(port: port, timeout: timeout), timeout: timeout)
        defer { client.socket.close() }
        try client.socket.send(WireEncode.startup(parameters: [("user", user), ("database", database)]))
        let clientNonce = randomAlphanumeric(24)
        while true {
            guard let m = try client.readMessage() else {
                throw E2EError("connection closed without an ErrorResponse")
            }
            switch m.typeChar {
            case "E": return WireErrorFields(body: m.body)
            case "R":
                let code = m.body.count >= 4 ? Int(m.body[3]) : -1
                switch code {
                case 0: throw E2EError("login with a wrong password succeeded")
                case 3: try client.socket.send(WireEncode.password("definitely-the-wrong-password"))
                case 5: try client.socket.send(WireEncode.password("md5" + String(repeating: "0", count: 32)))
                case 10:
                    let first = Array("n,,n=,r=\(clientNonce)".utf8)
                    let body = WireEncode.cString("SCRAM-SHA-256") + WireEncode.int32(UInt32(first.count)) + first
                    try client.socket.send(WireEncode.message("p", body))
                case 11:
                    let serverFirst = String(decoding: m.body.dropFirst(4), as: UTF8.self)
                    guard let nonce = serverFirst.split(separator: ",").first(where: { $0.hasPrefix("r=") }) else {
                        throw E2EError("bad SCRAM server-first message: \(serverFirst)")
                    }
                    let proof = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
                    try client.socket.send(WireEncode.message("p", Array("c=biws,\(nonce),p=\(proof)".utf8)))
                case 12: throw E2EError("server accepted a bogus SCRAM proof")
                default: throw E2EError("unexpected authentication request \(code)")
                }
            default: continue
            }
        }
    }
}

func randomAlphanumeric(_ count: Int) -> String {
    let chars = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
    return String((0..<count).map { _ in chars.randomElement()! })
}
