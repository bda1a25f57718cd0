// Messages between the supervisor and a worker: one per SEQPACKET datagram, [kind u8][payload], big-endian.

/// How a worker stops (PgBouncer's SIGTERM / SIGINT / second signal or SIGQUIT).
public enum ShutdownMode: UInt8, Sendable {
    /// Stop accepting; exit when the last client has left.
    case graceful = 1
    /// Stop accepting; exit when no server connection is in use.
    case safe = 2
    /// Close everything now.
    case immediate = 3
}

public enum ControlMessage: Equatable, Sendable {
    // supervisor → worker
    case shutdown(ShutdownMode)
    /// Re-read the config file and apply it, with the admin console's SET values since the last
    /// RELOAD on top (empty after a RELOAD: the file wins). Encoded as the bare kind when empty, the
    /// bytes of a plain reload before SET existed; otherwise a u32 count of (key, value) strings.
    case reload(overrides: [ConfigOverride])
    case pause
    case resume
    /// A cancel request for a client of this worker.
    case cancel(processID: Int32, secretKey: UInt32)
    /// One encoded `StatsChunk` (a stats request or an admin answer).
    case statsToWorker([UInt8])
    /// This worker's share of the pool (database, user): it keeps at most `quota` server connections
    /// there. `seq` grows with every quota the supervisor sends for the pool; reports echo the last one seen.
    /// `moveTo` >= 0 (a lowering, wire kind 0x08, sent only to a worker that announced
    /// `WorkerFeatures.serverMoves`): the quota goes to worker slot `moveTo`, and idle server connections
    /// above the new quota move there (`moveServer`) instead of closing.
    case quota(database: String, user: String, quota: Int32, seq: UInt32, moveTo: Int32 = -1)
    /// A server connection another worker gave up (`moveServer`), relayed by the supervisor: the
    /// datagram carries its socket (SCM_RIGHTS) and the encoded `HandoffServer`.
    case adoptServer([UInt8])
    /// Rolling restart: stop accepting, finish or hand off the clients, exit. With `handoff` the datagram
    /// also carries (SCM_RIGHTS) this worker's end of a socket to its successor (Worker/Control/Handoff.swift).
    /// `successorFeatures`: the `WorkerFeatures` the successor announced in its `ready`, a trailing field
    /// encoded only when not 0. The supervisor sets it only for a worker that announced
    /// `WorkerFeatures.pairMoves` itself: an older build refuses a `drain` with a field it does not know.
    case drain(handoff: Bool, successorFeatures: UInt32 = 0)
    /// Service-wide limits and per-database admin commands (LimitsMessage.swift), kind 0x30.
    case limitsToWorker(LimitsMessage)
    /// The welcome parameters (the ParameterStatus set a server sent at login: name, value, name, value...)
    /// another worker learnt for the pool (database, user): a worker whose pool has none answers its
    /// clients' logins with them instead of waiting for a server of its own (Worker/Login/SharedWelcome.swift).
    /// Sent only to a worker that announced `WorkerFeatures.sharedWelcome`.
    case welcomeToWorker(database: String, user: String, parameters: [String])
    /// PostgreSQL refused another worker's server login for the pool (database, user) with this error:
    /// this worker treats it as its own refusal (no connect until server_login_retry, its waiting
    /// clients get the error), so that the service tries a failing login once, as PgBouncer's one
    /// process does. Sent only to a worker that announced `WorkerFeatures.sharedLoginFailures`.
    case loginRefusedToWorker(database: String, user: String, code: String, message: String)
    /// Health of one backend host (host, port) as the supervisor's check sees it (`BackendFlags`), and
    /// for a host name the addresses it resolved to (numeric strings; workers never resolve names).
    case backendState(host: String, port: Int32, flags: UInt8, addresses: [String])
    /// A standby's replay position (`pg_last_wal_replay_lsn()`) as the last health check read it, for
    /// read/write routing's read_after_write=lsn (Worker/Pool/Routing.swift). Sent when it moves.
    case standbyReplay(host: String, port: Int32, lsn: UInt64)
    // worker → supervisor
    /// The worker accepts connections.
    /// `features` (`WorkerFeatures` bits) is encoded only when not 0: the bytes of a `ready` before it
    /// existed, which a newer supervisor still reads.
    case ready(slot: Int32, pid: Int32, features: UInt32 = 0)
    /// An idle server connection handed to worker slot `targetSlot` (its socket rides along,
    /// SCM_RIGHTS); the supervisor relays it as `adoptServer`.
    case moveServer(targetSlot: Int32, state: [UInt8])
    /// A cancel request that reached the wrong worker: relay it to `targetSlot`.
    case forwardCancel(targetSlot: Int32, processID: Int32, secretKey: UInt32)
    /// A cancel request whose key names another peer (`PeerCancelKey`), its TTL already lowered by
    /// one: the supervisor forwards it to that `[peers]` entry.
    case peerCancel(peerID: Int32, processID: Int32, secretKey: UInt32)
    case heartbeat(clients: Int32, servers: Int32)
    /// Reserved: a log line to be written by the supervisor.
    case log(String)
    /// One encoded `StatsChunk` (a snapshot or an admin request).
    case statsFromWorker([UInt8])
    /// One pool's state in this worker: server connections in any state, idle ones, waiting clients,
    /// and the `seq` of the last quota applied (0: none yet). Sent when it changes (at most every 100 ms),
    /// while clients wait, and at once after a quota was applied (its acknowledgement). `overdue`: clients
    /// that have waited longer than reserve_pool_timeout with the worker at its quota (they may have a
    /// reserve_pool_size connection). Encoded only when not 0, after `seq`: a report without it has the
    /// bytes of a report before the reserve pool existed, which a newer supervisor still reads.
    case poolReport(database: String, user: String, servers: Int32, idle: Int32, waiting: Int32, seq: UInt32,
                    overdue: Int32 = 0)
    /// Group reports and answers to per-database commands (LimitsMessage.swift), kind 0x70.
    case limitsFromWorker(LimitsMessage)
    /// A worker could not connect to a backend host: the supervisor checks it now instead of waiting.
    case backendFailed(host: String, port: Int32, reason: String)
    /// The welcome parameters this worker's first server of the pool (database, user) sent at login
    /// (name, value, ...): the supervisor keeps them and passes them to the other workers.
    case welcomeFromWorker(database: String, user: String, parameters: [String])
    /// PostgreSQL refused this worker's server login for the pool: passed to the other workers.
    case loginRefusedFromWorker(database: String, user: String, code: String, message: String)

    /// Largest datagram either side sends or accepts (a receiver rejects longer ones as invalid).
    public static let maximumSize = 65_536

    /// Wire kinds. Supervisor → worker below 0x40, worker → supervisor from 0x40, so a message sent
    /// the wrong way is recognisable in a trace.
    @usableFromInline
    enum Kind: UInt8 {
        case shutdown = 0x01, reload = 0x02, pause = 0x03, resume = 0x04, cancel = 0x05, statsToWorker = 0x06, quota = 0x07
        case quotaMove = 0x08, adoptServer = 0x09
        case drain = 0x10
        case backendState = 0x20, standbyReplay = 0x21
        case limitsToWorker = 0x30, welcomeToWorker = 0x31, loginRefusedToWorker = 0x32
        case backendFailed = 0x60
        case limitsFromWorker = 0x70
        case ready = 0x41, forwardCancel = 0x42, heartbeat = 0x43, log = 0x44, statsFromWorker = 0x45, poolReport = 0x46
        case moveServer = 0x47, peerCancel = 0x48, welcomeFromWorker = 0x49, loginRefusedFromWorker = 0x4A
    }

    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        encode(into: &out)
        return out
    }

    /// Appends the encoded message to `out` (lets a caller reuse one buffer).
    public func encode(into out: inout [UInt8]) {
        var w = MessageWriter(appendingTo: &out)
        switch self {
        case .shutdown(let mode): w.put(Kind.shutdown, mode)
        case .reload(let overrides):
            w.put(Kind.reload)
            if !overrides.isEmpty {
                w.u32(UInt32(truncatingIfNeeded: overrides.count))
                for o in overrides { w.string(o.key); w.string(o.value) }
            }
        case .pause: w.put(Kind.pause)
        case .resume: w.put(Kind.resume)
        case .cancel(let processID, let secretKey): w.put(Kind.cancel, processID, secretKey)
        case .ready(let slot, let pid, let features):
            w.put(Kind.ready, slot, pid)
            if features != 0 { w.put(features) }
        case .moveServer(let target, let state): w.put(Kind.moveServer, target); w.raw(state)
        case .adoptServer(let state): w.put(Kind.adoptServer); w.raw(state)
        case .forwardCancel(let targetSlot, let processID, let secretKey):
            w.put(Kind.forwardCancel, targetSlot, processID, secretKey)
        case .peerCancel(let peerID, let processID, let secretKey):
            w.put(Kind.peerCancel, peerID, processID, secretKey)
        case .heartbeat(let clients, let servers): w.put(Kind.heartbeat, clients, servers)
        case .log(let text): w.put(Kind.log, text)
        case .statsToWorker(let chunk): w.put(Kind.statsToWorker); w.raw(chunk)
        case .statsFromWorker(let chunk): w.put(Kind.statsFromWorker); w.raw(chunk)
        case .quota(let database, let user, let quota, let seq, let moveTo):
            if moveTo >= 0 {
                w.put(Kind.quotaMove, database, user, quota, seq, moveTo)
            } else {
                w.put(Kind.quota, database, user, quota, seq)
            }
        case .drain(let handoff, let successorFeatures):
            w.put(Kind.drain, handoff)
            if successorFeatures != 0 { w.put(successorFeatures) }
        case .backendState(let host, let port, let flags, let addresses):
            w.put(Kind.backendState, host, port, flags, UInt32(truncatingIfNeeded: addresses.count))
            for a in addresses { w.string(a) }
        case .standbyReplay(let host, let port, let lsn):
            w.put(Kind.standbyReplay, host, port)
            w.u64(lsn)
        case .backendFailed(let host, let port, let reason): w.put(Kind.backendFailed, host, port, reason)
        case .welcomeToWorker(let database, let user, let parameters):
            w.put(Kind.welcomeToWorker, database, user, UInt32(truncatingIfNeeded: parameters.count))
            for p in parameters { w.string(p) }
        case .welcomeFromWorker(let database, let user, let parameters):
            w.put(Kind.welcomeFromWorker, database, user, UInt32(truncatingIfNeeded: parameters.count))
            for p in parameters { w.string(p) }
        case .loginRefusedToWorker(let database, let user, let code, let message):
            w.put(Kind.loginRefusedToWorker, database, user, code, message)
        case .loginRefusedFromWorker(let database, let user, let code, let message):
            w.put(Kind.loginRefusedFromWorker, database, user, code, message)
        case .poolReport(let database, let user, let servers, let idle, let waiting, let seq, let overdue):
            w.put(Kind.poolReport, database, user, servers, idle, waiting, seq)
            if overdue != 0 { w.put(overdue) }
        case .limitsToWorker(let m): w.put(Kind.limitsToWorker); m.encode(into: &w)
        case .limitsFromWorker(let m): w.put(Kind.limitsFromWorker); m.encode(into: &w)
        }
        w.finish(into: &out)
    }

    typealias Reader = MessageReader<ControlDecodeError>

    /// Decodes exactly one message: a short, long or unknown datagram is an error, never a crash.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ControlDecodeError) -> ControlMessage {
        var r = Reader(bytes)
        let kind = try r.code(Kind.self, "message kind")
        let message: ControlMessage
        switch kind {
        case .shutdown:
            message = .shutdown(try r.code(ShutdownMode.self, "shutdown mode"))
        case .reload:
            var overrides: [ConfigOverride] = []
            if !r.isAtEnd {
                overrides = try r.array("overrides", minimumEach: 8, maximum: 4096) { r throws(ControlDecodeError) in
                    ConfigOverride(key: try r.string("override key"), value: try r.string("override value"))
                }
            }
            message = .reload(overrides: overrides)
        case .pause:
            message = .pause
        case .resume:
            message = .resume
        case .cancel:
            message = .cancel(processID: try r.i32("cancel"), secretKey: try r.u32("cancel"))
        case .ready:
            let slot = try r.i32("ready"), pid = try r.i32("ready")
            message = .ready(slot: slot, pid: pid, features: r.isAtEnd ? 0 : try r.u32("ready features"))
        case .moveServer:
            message = .moveServer(targetSlot: try r.i32("move target"), state: Array(r.rest()))
        case .adoptServer:
            message = .adoptServer(Array(r.rest()))
        case .forwardCancel:
            message = .forwardCancel(targetSlot: try r.i32("forwardCancel"), processID: try r.i32("forwardCancel"),
                                     secretKey: try r.u32("forwardCancel"))
        case .peerCancel:
            message = .peerCancel(peerID: try r.i32("peerCancel"), processID: try r.i32("peerCancel"),
                                  secretKey: try r.u32("peerCancel"))
        case .heartbeat:
            message = .heartbeat(clients: try r.i32("heartbeat"), servers: try r.i32("heartbeat"))
        case .log:
            message = .log(try r.string("log text"))
        case .quota:
            message = .quota(database: try r.string("quota database"), user: try r.string("quota user"),
                             quota: try r.i32("quota"), seq: try r.u32("quota"))
        case .quotaMove:
            message = .quota(database: try r.string("quota database"), user: try r.string("quota user"),
                             quota: try r.i32("quota"), seq: try r.u32("quota"), moveTo: try r.i32("quota move"))
        case .poolReport:
            let database = try r.string("report database"), user = try r.string("report user")
            let servers = try r.i32("report"), idle = try r.i32("report")
            let waiting = try r.i32("report"), seq = try r.u32("report")
            var overdue: Int32 = 0
            if !r.isAtEnd { overdue = try r.i32("report overdue") }
            message = .poolReport(database: database, user: user, servers: servers, idle: idle,
                                  waiting: waiting, seq: seq, overdue: overdue)
        case .drain:
            let handoff = try r.bool("drain")
            message = .drain(handoff: handoff, successorFeatures: r.isAtEnd ? 0 : try r.u32("drain successor features"))
        case .limitsToWorker, .limitsFromWorker:
            let inner = try LimitsMessage.decode(&r)
            guard inner.isToWorker == (kind == .limitsToWorker) else {
                throw ControlDecodeError("limits message sent the wrong way")
            }
            message = kind == .limitsToWorker ? .limitsToWorker(inner) : .limitsFromWorker(inner)
        case .backendState:
            let host = try r.string("backend host")
            let port = try r.i32("backend port")
            let flags = try r.u8("backend flags")
            let addresses = try r.array("addresses", minimumEach: 4, maximum: 1024) { r throws(ControlDecodeError) in
                try r.string("address")
            }
            message = .backendState(host: host, port: port, flags: flags, addresses: addresses)
        case .standbyReplay:
            let host = try r.string("standby host")
            let port = try r.i32("standby port")
            message = .standbyReplay(host: host, port: port, lsn: try r.u64("standby replay lsn"))
        case .loginRefusedToWorker, .loginRefusedFromWorker:
            let database = try r.string("login database"), user = try r.string("login user")
            let code = try r.string("login error code"), text = try r.string("login error")
            message = kind == .loginRefusedToWorker
                ? .loginRefusedToWorker(database: database, user: user, code: code, message: text)
                : .loginRefusedFromWorker(database: database, user: user, code: code, message: text)
        case .welcomeToWorker, .welcomeFromWorker:
            let database = try r.string("welcome database"), user = try r.string("welcome user")
            let parameters = try r.array("welcome parameters", minimumEach: 4, maximum: 1024) { r throws(ControlDecodeError) in
                try r.string("welcome parameter")
            }
            guard parameters.count % 2 == 0 else { throw ControlDecodeError("welcome parameters not in pairs") }
            message = kind == .welcomeToWorker ? .welcomeToWorker(database: database, user: user, parameters: parameters)
                : .welcomeFromWorker(database: database, user: user, parameters: parameters)
        case .backendFailed:
            message = .backendFailed(host: try r.string("backend host"), port: try r.i32("backend port"),
                                     reason: try r.string("backend failure"))
        case .statsToWorker, .statsFromWorker:
            // The chunk fills the rest of the datagram; its own header is checked by StatsChunk.decode.
            let chunk = Array(r.rest())
            do throws(StatsDecodeError) {
                _ = try StatsChunk.decode(chunk)
            } catch {
                throw ControlDecodeError(error.description)
            }
            message = kind == .statsToWorker ? .statsToWorker(chunk) : .statsFromWorker(chunk)
        }
        try r.expectEnd("\(kind)")
        return message
    }
}

/// What a worker build can do beyond the messages every build reads (`ready`'s `features`).
public enum WorkerFeatures {
    /// Reads `quota` with `moveTo` and `adoptServer`: server connections move to it and from it.
    public static let serverMoves: UInt32 = 1
    /// Reads `drain`'s `successorFeatures`, and adopts a client together with its linked server
    /// (`HandoffPair`, two sockets in one datagram) on the handoff socket: a draining worker moves such
    /// pairs only to a successor that announced this (Worker/Control/PairHandoff.swift).
    public static let pairMoves: UInt32 = 2
    /// Reads `welcomeToWorker`: a pool answers logins with the welcome another worker learnt.
    public static let sharedWelcome: UInt32 = 4
    /// Reads `loginRefusedToWorker`: a login PostgreSQL refused on another worker counts as its own.
    public static let sharedLoginFailures: UInt32 = 8
    /// Reads a `HandoffClient`'s carried session state (settings, SQL prepared statements): a
    /// draining worker moves a client that has some only to a successor that announced this.
    public static let sessionMoves: UInt32 = 16
    /// What this build announces.
    public static let all: UInt32 = serverMoves | pairMoves | sharedWelcome | sharedLoginFailures | sessionMoves
}

extension ShutdownMode: MessageField {}
extension ControlMessage.Kind: MessageField {}

/// A datagram that is not a valid control message.
public struct ControlDecodeError: MessageDecodeFailure, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "invalid control message: \(reason)" }
}
