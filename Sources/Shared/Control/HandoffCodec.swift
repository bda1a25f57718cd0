// Rolling restarts: the state of a client moving from a draining worker to its successor, and its codec.

/// One startup parameter that follows the client (by name: two builds may track different lists);
/// the same name/value pair as a `[databases]` entry's forced parameter.
public typealias HandoffParameter = ConnParam

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

/// A session setting a client carries (Worker/Session/SessionState.swift's `CarriedSetting`): its
/// folded name and the SQL that sets and undoes it.
public struct HandoffSetting: Equatable, Sendable {
    public var key: String
    public var set: String
    public var reset: String
    public init(key: String, set: String, reset: String) {
        self.key = key
        self.set = set
        self.reset = reset
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
    /// Carried session state (issue 19): the settings the client made, replayed on the successor's
    /// servers at link, and its SQL prepared statements (name → the PREPARE as written). Sent only to a
    /// successor that announced `WorkerFeatures.sessionMoves`, and written only when not empty, so a
    /// client without any reads as before in a build that predates them.
    public var settings: [HandoffSetting]
    public var sqlPrepared: [HandoffParameter]

    public init(user: String, database: String, parameters: [HandoffParameter] = [], applicationName: String = "",
                protocolMinor: Int32 = 0, processID: Int32, secretKey: UInt32, isUnix: Bool = false, peer: String = "",
                connectedAt: Int64 = 0, prepared: [HandoffStatement] = [], pending: [UInt8] = [],
                scramClientKey: [UInt8] = [], settings: [HandoffSetting] = [], sqlPrepared: [HandoffParameter] = []) {
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
        self.settings = settings
        self.sqlPrepared = sqlPrepared
    }

    /// Format tag and version: a successor from another build refuses what it cannot read (the
    /// client then stays on the draining worker) instead of misreading it.
    static let magic: [UInt8] = Array("PGH1".utf8)
    /// Larger states are not sent: one datagram must fit the socket's send buffer (about 200 KiB).
    public static let maximumSize = 160_000

    public func encode() -> [UInt8] {
        var w = HandoffFormat.writer(Self.magic, capacity: 256 + pending.count)
        w.put(user, database)
        w.array(parameters)
        w.put(applicationName, protocolMinor, processID, secretKey, isUnix, peer, connectedAt)
        w.array(prepared)
        w.put(pending, scramClientKey)
        if !settings.isEmpty || !sqlPrepared.isEmpty {
            w.array(settings)
            w.array(sqlPrepared)
        }
        return w.bytes
    }

    /// Decodes exactly one state: anything short, long or malformed is an error, never a crash.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(HandoffDecodeError) -> HandoffClient {
        var r = try HandoffFormat.reader(bytes, magic, "client handoff")
        let user = try r.string("user")
        let database = try r.string("database")
        let parameters = try r.parameters("parameters", each: "parameter")
        let applicationName = try r.string("application name")
        let minor = try r.i32("protocol")
        let pid = try r.i32("process id")
        let key = try r.u32("secret key")
        let isUnix = try r.bool("unix")
        let peer = try r.string("peer")
        let connectedAt = Int64(bitPattern: try r.u64("connected at"))
        let prepared = try r.array("statements", minimumEach: 8) { r throws(HandoffDecodeError) in
            HandoffStatement(name: try r.string("statement"), body: try r.blob("statement"))
        }
        let pending = try r.blob("pending")
        let scram = try r.blob("scram key")
        var settings: [HandoffSetting] = []
        var sqlPrepared: [HandoffParameter] = []
        if !r.isAtEnd {
            settings = try r.array("settings", minimumEach: 12) { r throws(HandoffDecodeError) in
                HandoffSetting(key: try r.string("setting"), set: try r.string("setting"), reset: try r.string("setting"))
            }
            sqlPrepared = try r.parameters("SQL statements", each: "SQL statement")
        }
        try r.expectEnd("the client state")
        return HandoffClient(user: user, database: database, parameters: parameters, applicationName: applicationName,
                             protocolMinor: minor, processID: pid, secretKey: key, isUnix: isUnix, peer: peer,
                             connectedAt: connectedAt, prepared: prepared, pending: pending, scramClientKey: scram,
                             settings: settings, sqlPrepared: sqlPrepared)
    }
}

/// A handoff datagram that cannot be read.
public struct HandoffDecodeError: MessageDecodeFailure, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "invalid client handoff: \(reason)" }
}

/// A statement prepared on a server connection: the name the old worker gave it on the server
/// (`PGSWIFT_<serverID>`) and its Parse body. The new worker keeps it when its own registry gives
/// the body the same id, and DEALLOCATEs the name otherwise (Worker/Control/ServerMove.swift).
public struct HandoffServerStatement: Equatable, Sendable {
    public var serverID: Int32
    public var body: [UInt8]
    public init(serverID: Int32, body: [UInt8]) {
        self.serverID = serverID
        self.body = body
    }
}

/// Everything a worker needs to take over a logged-in server connection that is idle (ReadyForQuery
/// received, nothing in flight) without a new login: its pool, what PostgreSQL told it, what
/// pgswift set on it. The socket travels beside it (SCM_RIGHTS) in the same datagram.
public struct HandoffServer: Equatable, Sendable {
    /// The pool as the worker keys it: the database as the client asked and the pool's user.
    public var database: String
    public var user: String
    /// SHOW SERVERS' id and the `S-<id>` of log lines: one sequence for the whole service, so it stays.
    public var id: UInt64
    public var backendPID: Int32
    public var backendKey: UInt32
    /// CLOCK_MONOTONIC nanoseconds (the same in every process of the machine): server_lifetime counts on.
    public var createdAt: Int64
    /// "host:port" of the backend host (health and round robin) and the address as logged.
    public var hostKey: String
    public var address: String
    /// Tracked parameter values the server has (by name: two builds may track different lists).
    public var parameters: [HandoffParameter]
    public var prepared: [HandoffServerStatement]
    /// The old worker's welcome set for the pool (ParameterStatus values a new client gets), for a
    /// new worker whose pool never logged in a server.
    public var welcome: [HandoffParameter]

    public init(database: String, user: String, id: UInt64 = 0, backendPID: Int32 = 0, backendKey: UInt32 = 0,
                createdAt: Int64 = 0, hostKey: String = "", address: String = "", parameters: [HandoffParameter] = [],
                prepared: [HandoffServerStatement] = [], welcome: [HandoffParameter] = []) {
        self.database = database
        self.user = user
        self.id = id
        self.backendPID = backendPID
        self.backendKey = backendKey
        self.createdAt = createdAt
        self.hostKey = hostKey
        self.address = address
        self.parameters = parameters
        self.prepared = prepared
        self.welcome = welcome
    }

    static let magic: [UInt8] = Array("PGS1".utf8)
    /// A state must fit one control datagram with room to spare (ControlMessage.maximumSize).
    public static let maximumSize = 60_000

    public func encode() -> [UInt8] {
        var w = HandoffFormat.writer(Self.magic, capacity: 256)
        w.put(database, user, id, backendPID, backendKey, createdAt, hostKey, address)
        w.array(parameters)
        w.array(prepared)
        w.array(welcome)
        return w.bytes
    }

    /// Decodes exactly one state: anything short, long or malformed is an error, never a crash.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(HandoffDecodeError) -> HandoffServer {
        var r = try HandoffFormat.reader(bytes, magic, "server handoff")
        var s = HandoffServer(database: try r.string("database"), user: try r.string("user"))
        s.id = try r.u64("id")
        s.backendPID = try r.i32("backend pid")
        s.backendKey = try r.u32("backend key")
        s.createdAt = Int64(bitPattern: try r.u64("created at"))
        s.hostKey = try r.string("host")
        s.address = try r.string("address")
        s.parameters = try r.parameters("parameters", each: "parameter")
        s.prepared = try r.array("statements", minimumEach: 8) { r throws(HandoffDecodeError) in
            HandoffServerStatement(serverID: try r.i32("statement id"), body: try r.blob("statement"))
        }
        s.welcome = try r.parameters("welcome", each: "welcome")
        try r.expectEnd("the server state")
        return s
    }
}

/// A client and the server connection linked to it, moving together to the successor on a rolling
/// restart (Worker/Control/PairHandoff.swift): a session-mode client between queries, or a
/// transaction-mode client inside a transaction. Both sockets travel beside it (SCM_RIGHTS, the
/// client's first) in one datagram on the handoff socket, only to a successor that announced
/// `WorkerFeatures.pairMoves`. The two states are the ones a lone client or an idle server moves with,
/// nested whole, plus what the link itself holds.
public struct HandoffPair: Equatable, Sendable {
    public var client: HandoffClient
    public var server: HandoffServer
    /// The pool mode the link was made under (`PoolMode`'s text): a successor whose pool has another
    /// mode cannot go on with it (a session's server would be released after a transaction).
    public var poolMode: String
    /// The status of the server's last ReadyForQuery: `I`, `T` or `E`.
    public var txStatus: UInt8
    /// Transaction mode: a CommandComplete tag showed session state, so the server is reset before
    /// another client gets it.
    public var needsReset: Bool
    /// CLOCK_MONOTONIC nanoseconds (the same in every process of the machine) of the last
    /// ReadyForQuery (idle_transaction_timeout) and of the transaction's start (0: none;
    /// transaction_timeout and the stats).
    public var lastReady: Int64
    public var xactStart: Int64

    public init(client: HandoffClient, server: HandoffServer, poolMode: String, txStatus: UInt8 = UInt8(ascii: "I"),
                needsReset: Bool = false, lastReady: Int64 = 0, xactStart: Int64 = 0) {
        self.client = client
        self.server = server
        self.poolMode = poolMode
        self.txStatus = txStatus
        self.needsReset = needsReset
        self.lastReady = lastReady
        self.xactStart = xactStart
    }

    static let magic: [UInt8] = Array("PGP1".utf8)

    /// The datagram is a pair (the handoff socket carries lone clients too).
    public static func isPair(_ bytes: UnsafeRawBufferPointer) -> Bool {
        HandoffFormat.starts(bytes, with: magic)
    }

    public func encode() -> [UInt8] {
        let c = client.encode(), s = server.encode()
        var w = HandoffFormat.writer(Self.magic, capacity: c.count + s.count + 64)
        w.put(c, s, poolMode, txStatus, needsReset, lastReady, xactStart)
        return w.bytes
    }

    /// Decodes exactly one pair: anything short, long or malformed, in either nested state, is an
    /// error, never a crash.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(HandoffDecodeError) -> HandoffPair {
        var r = try HandoffFormat.reader(bytes, magic, "client-server handoff")
        // Each nested state is u32-length-prefixed (as `put` writes a byte array) and decoded in place.
        let client = try HandoffClient.decode(try r.bytes(Int(try r.u32("client state")), "client state"))
        let server = try HandoffServer.decode(try r.bytes(Int(try r.u32("server state")), "server state"))
        let mode = try r.string("pool mode")
        let status = try r.u8("transaction status")
        let needsReset = try r.bool("needs reset")
        let lastReady = Int64(bitPattern: try r.u64("last ready"))
        let xactStart = Int64(bitPattern: try r.u64("transaction start"))
        try r.expectEnd("the pair state")
        return HandoffPair(client: client, server: server, poolMode: mode, txStatus: status, needsReset: needsReset,
                           lastReady: lastReady, xactStart: xactStart)
    }
}

/// The framing every handoff state shares: its four-byte format tag, then its fields in MessageCodec's
/// fixed style.
enum HandoffFormat {
    /// A writer holding `magic`, for the fields to follow.
    static func writer(_ magic: [UInt8], capacity: Int) -> MessageWriter {
        var w = MessageWriter(capacity: capacity)
        w.raw(magic)
        return w
    }

    static func starts(_ bytes: UnsafeRawBufferPointer, with magic: [UInt8]) -> Bool {
        bytes.count >= magic.count && magic.indices.allSatisfy { bytes[$0] == magic[$0] }
    }

    /// A reader past `magic`; bytes that do not start with it are refused as not a pgswift `what`.
    static func reader(_ bytes: UnsafeRawBufferPointer, _ magic: [UInt8],
                       _ what: String) throws(HandoffDecodeError) -> MessageReader<HandoffDecodeError> {
        guard starts(bytes, with: magic) else {
            throw HandoffDecodeError("not a pgswift \(what) (format \(String(decoding: magic, as: UTF8.self)))")
        }
        var r = MessageReader<HandoffDecodeError>(bytes)
        _ = try r.bytes(magic.count, "format")
        return r
    }
}

// The elements of the states' lists, each written as its fields in order (`MessageWriter.array`).

extension HandoffParameter: MessageField {
    public func write(to w: inout MessageWriter) { w.put(name, value) }
}

extension HandoffSetting: MessageField {
    public func write(to w: inout MessageWriter) { w.put(key, set, reset) }
}

extension HandoffStatement: MessageField {
    public func write(to w: inout MessageWriter) { w.put(name, body) }
}

extension HandoffServerStatement: MessageField {
    public func write(to w: inout MessageWriter) { w.put(serverID, body) }
}

extension MessageReader {
    /// A list of name/value pairs as `MessageWriter.array` wrote it; `what` names the list and `each`
    /// the pairs' fields in errors.
    mutating func parameters(_ what: StaticString, each: StaticString) throws(Failure) -> [HandoffParameter] {
        try array(what, minimumEach: 8) { r throws(Failure) in
            HandoffParameter(name: try r.string(each), value: try r.string(each))
        }
    }
}
