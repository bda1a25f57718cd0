// Rolling restarts: the state of a client moving from a draining worker to its successor, and its codec.

/// One startup parameter that follows the client (by name: two builds may track different lists).
public struct HandoffParameter: Equatable, Sendable {
    public var name: String
    public var value: String
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// A protocol-level prepared statement: the client's name and the Parse body after that name
/// (query text, parameter count and type OIDs), which the successor interns again.
public struct HandoffStatement: Equatable, Sendable {
    public var name: String
    public var body: [UInt8]
    public init(name: String, body: [UInt8]) {
        self.name = name
        self.body = body
    }
}

/// Everything a worker needs to go on serving a logged-in client that sits between transactions.
/// The socket itself travels beside it (SCM_RIGHTS) in the same datagram.
public struct HandoffClient: Equatable, Sendable {
    public var user: String
    public var database: String
    public var parameters: [HandoffParameter]
    public var applicationName: String
    public var protocolMinor: Int32
    /// The BackendKeyData the client got at login: it keeps cancelling with it, so the successor
    /// must accept it (Worker/Control/Handoff.swift keeps a map from it to the new table index).
    public var processID: Int32
    public var secretKey: UInt32
    public var isUnix: Bool
    public var peer: String
    /// CLOCK_MONOTONIC nanoseconds, which are the same in every process of the machine.
    public var connectedAt: Int64
    public var prepared: [HandoffStatement]
    /// Bytes read from the client and not processed yet (the start of a message).
    public var pending: [UInt8]
    /// The pool's ClientKey recovered from a SCRAM proof (empty: none), so the successor can log in
    /// to PostgreSQL with a userlist SCRAM secret before any client has logged in there.
    public var scramClientKey: [UInt8]

    public init(user: String, database: String, parameters: [HandoffParameter] = [], applicationName: String = "",
                protocolMinor: Int32 = 0, processID: Int32, secretKey: UInt32, isUnix: Bool = false, peer: String = "",
                connectedAt: Int64 = 0, prepared: [HandoffStatement] = [], pending: [UInt8] = [],
                scramClientKey: [UInt8] = []) {
        self.user = user
        self.database = database
        self.parameters = parameters
        self.applicationName = applicationName
        self.protocolMinor = protocolMinor
        self.processID = processID
        self.secretKey = secretKey
        self.isUnix = isUnix
        self.peer = peer
        self.connectedAt = connectedAt
        self.prepared = prepared
        self.pending = pending
        self.scramClientKey = scramClientKey
    }

    /// Format tag and version: a successor from another build refuses what it cannot read (the
    /// client then stays on the draining worker) instead of misreading it.
    static let magic: [UInt8] = Array("PGH1".utf8)
    /// Larger states are not sent: one datagram must fit the socket's send buffer (about 200 KiB).
    public static let maximumSize = 160_000

    public func encode() -> [UInt8] {
        var w = HandoffWriter()
        w.bytes.append(contentsOf: Self.magic)
        w.string(user)
        w.string(database)
        w.u32(UInt32(parameters.count))
        for p in parameters {
            w.string(p.name)
            w.string(p.value)
        }
        w.string(applicationName)
        w.u32(UInt32(bitPattern: protocolMinor))
        w.u32(UInt32(bitPattern: processID))
        w.u32(secretKey)
        w.bytes.append(isUnix ? 1 : 0)
        w.string(peer)
        w.u64(UInt64(bitPattern: connectedAt))
        w.u32(UInt32(prepared.count))
        for s in prepared {
            w.string(s.name)
            w.blob(s.body)
        }
        w.blob(pending)
        w.blob(scramClientKey)
        return w.bytes
    }

    /// Decodes exactly one state: anything short, long or malformed is an error, never a crash.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(HandoffDecodeError) -> HandoffClient {
        var r = HandoffReader(bytes: bytes)
        guard bytes.count >= magic.count, Array(bytes[0..<magic.count]) == magic else {
            throw HandoffDecodeError("not a pgswift client handoff (format PGH1)")
        }
        r.offset = magic.count
        let user = try r.string()
        let database = try r.string()
        let nparams = try r.count(minimumEach: 8)
        var parameters: [HandoffParameter] = []
        for _ in 0..<nparams { parameters.append(HandoffParameter(name: try r.string(), value: try r.string())) }
        let applicationName = try r.string()
        let minor = Int32(bitPattern: try r.u32())
        let pid = Int32(bitPattern: try r.u32())
        let key = try r.u32()
        let unixFlag = try r.u8()
        guard unixFlag <= 1 else { throw HandoffDecodeError("bad flag \(unixFlag)") }
        let peer = try r.string()
        let connectedAt = Int64(bitPattern: try r.u64())
        let nprepared = try r.count(minimumEach: 8)
        var prepared: [HandoffStatement] = []
        for _ in 0..<nprepared { prepared.append(HandoffStatement(name: try r.string(), body: try r.blob())) }
        let pending = try r.blob()
        let scram = try r.blob()
        guard r.offset == bytes.count else {
            throw HandoffDecodeError("\(bytes.count - r.offset) unexpected trailing bytes")
        }
        return HandoffClient(user: user, database: database, parameters: parameters, applicationName: applicationName,
                             protocolMinor: minor, processID: pid, secretKey: key, isUnix: unixFlag == 1, peer: peer,
                             connectedAt: connectedAt, prepared: prepared, pending: pending, scramClientKey: scram)
    }
}

/// A handoff datagram that cannot be read.
public struct HandoffDecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "invalid client handoff: \(reason)" }
}

/// Big-endian, length-prefixed fields appended to one array.
struct HandoffWriter {
    var bytes: [UInt8] = []

    mutating func u32(_ v: UInt32) {
        bytes.append(UInt8(truncatingIfNeeded: v >> 24))
        bytes.append(UInt8(truncatingIfNeeded: v >> 16))
        bytes.append(UInt8(truncatingIfNeeded: v >> 8))
        bytes.append(UInt8(truncatingIfNeeded: v))
    }

    mutating func u64(_ v: UInt64) {
        u32(UInt32(truncatingIfNeeded: v >> 32))
        u32(UInt32(truncatingIfNeeded: v))
    }

    mutating func blob(_ b: [UInt8]) {
        u32(UInt32(b.count))
        bytes.append(contentsOf: b)
    }

    mutating func string(_ s: String) {
        blob(Array(s.utf8))
    }
}

/// The bounds-checked reader for `HandoffWriter`'s output.
struct HandoffReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    mutating func u8() throws(HandoffDecodeError) -> UInt8 {
        guard offset < bytes.count else { throw HandoffDecodeError("truncated") }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u32() throws(HandoffDecodeError) -> UInt32 {
        guard bytes.count - offset >= 4 else { throw HandoffDecodeError("truncated") }
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(bytes[offset + i]) }
        offset += 4
        return v
    }

    mutating func u64() throws(HandoffDecodeError) -> UInt64 {
        let hi = try u32()
        let lo = try u32()
        return UInt64(hi) << 32 | UInt64(lo)
    }

    /// An element count that the remaining bytes could hold (a huge count in a short datagram is an error).
    mutating func count(minimumEach: Int) throws(HandoffDecodeError) -> Int {
        let n = Int(try u32())
        guard n <= (bytes.count - offset) / minimumEach else { throw HandoffDecodeError("count \(n) too large") }
        return n
    }

    mutating func blob() throws(HandoffDecodeError) -> [UInt8] {
        let n = Int(try u32())
        guard bytes.count - offset >= n else { throw HandoffDecodeError("truncated (a \(n)-byte field)") }
        defer { offset += n }
        return Array(bytes[offset..<(offset + n)])
    }

    mutating func string() throws(HandoffDecodeError) -> String {
        let b = try blob()
        guard let s = String(validating: b, as: UTF8.self) else { throw HandoffDecodeError("text is not valid UTF-8") }
        return s
    }
}
