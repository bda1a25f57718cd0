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
    case reload
    case pause
    case resume
    /// A cancel request for a client of this worker.
    case cancel(processID: Int32, secretKey: UInt32)
    /// One encoded `StatsChunk` (a stats request or an admin answer).
    case statsToWorker([UInt8])
    /// This worker's share of the pool (database, user): it keeps at most `quota` server connections
    /// there. `seq` grows with every quota the supervisor sends for the pool; reports echo the last one seen.
    case quota(database: String, user: String, quota: Int32, seq: UInt32)
    /// Rolling restart: stop accepting, finish or hand off the clients, exit. With `handoff` the datagram
    /// also carries (SCM_RIGHTS) this worker's end of a socket to its successor (Worker/Control/Handoff.swift).
    case drain(handoff: Bool)
    /// Service-wide limits and per-database admin commands (LimitsMessage.swift), kind 0x30.
    case limitsToWorker(LimitsMessage)
    /// Health of one backend host (host, port) as the supervisor's check sees it (`BackendFlags`), and
    /// for a host name the addresses it resolved to (numeric strings; workers never resolve names).
    case backendState(host: String, port: Int32, flags: UInt8, addresses: [String])
    // worker → supervisor
    /// The worker accepts connections.
    case ready(slot: Int32, pid: Int32)
    /// A cancel request that reached the wrong worker: relay it to `targetSlot`.
    case forwardCancel(targetSlot: Int32, processID: Int32, secretKey: UInt32)
    case heartbeat(clients: Int32, servers: Int32)
    /// Reserved: a log line to be written by the supervisor.
    case log(String)
    /// One encoded `StatsChunk` (a snapshot or an admin request).
    case statsFromWorker([UInt8])
    /// One pool's state in this worker: server connections in any state, idle ones, waiting clients,
    /// and the `seq` of the last quota applied (0: none yet). Sent when it changes (at most every 100 ms),
    /// while clients wait, and at once after a quota was applied (its acknowledgement).
    case poolReport(database: String, user: String, servers: Int32, idle: Int32, waiting: Int32, seq: UInt32)
    /// Group reports and answers to per-database commands (LimitsMessage.swift), kind 0x70.
    case limitsFromWorker(LimitsMessage)
    /// A worker could not connect to a backend host: the supervisor checks it now instead of waiting.
    case backendFailed(host: String, port: Int32, reason: String)

    /// Largest datagram either side sends or accepts (a receiver rejects longer ones as invalid).
    public static let maximumSize = 65_536

    /// Wire kinds. Supervisor → worker below 0x40, worker → supervisor from 0x40, so a message sent
    /// the wrong way is recognisable in a trace.
    @usableFromInline
    enum Kind: UInt8 {
        case shutdown = 0x01, reload = 0x02, pause = 0x03, resume = 0x04, cancel = 0x05, statsToWorker = 0x06, quota = 0x07
        case drain = 0x10
        case backendState = 0x20
        case limitsToWorker = 0x30
        case backendFailed = 0x60
        case limitsFromWorker = 0x70
        case ready = 0x41, forwardCancel = 0x42, heartbeat = 0x43, log = 0x44, statsFromWorker = 0x45, poolReport = 0x46
    }

    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        encode(into: &out)
        return out
    }

    /// Appends the encoded message to `out` (lets a caller reuse one buffer).
    public func encode(into out: inout [UInt8]) {
        switch self {
        case .shutdown(let mode):
            out.append(Kind.shutdown.rawValue)
            out.append(mode.rawValue)
        case .reload:
            out.append(Kind.reload.rawValue)
        case .pause:
            out.append(Kind.pause.rawValue)
        case .resume:
            out.append(Kind.resume.rawValue)
        case .cancel(let processID, let secretKey):
            out.append(Kind.cancel.rawValue)
            out.appendControlI32(processID)
            out.appendControlU32(secretKey)
        case .ready(let slot, let pid):
            out.append(Kind.ready.rawValue)
            out.appendControlI32(slot)
            out.appendControlI32(pid)
        case .forwardCancel(let targetSlot, let processID, let secretKey):
            out.append(Kind.forwardCancel.rawValue)
            out.appendControlI32(targetSlot)
            out.appendControlI32(processID)
            out.appendControlU32(secretKey)
        case .heartbeat(let clients, let servers):
            out.append(Kind.heartbeat.rawValue)
            out.appendControlI32(clients)
            out.appendControlI32(servers)
        case .log(let text):
            out.append(Kind.log.rawValue)
            out.appendControlString(text)
        case .statsToWorker(let chunk):
            out.append(Kind.statsToWorker.rawValue)
            out.append(contentsOf: chunk)
        case .statsFromWorker(let chunk):
            out.append(Kind.statsFromWorker.rawValue)
            out.append(contentsOf: chunk)
        case .quota(let database, let user, let quota, let seq):
            out.append(Kind.quota.rawValue)
            out.appendControlString(database)
            out.appendControlString(user)
            out.appendControlI32(quota)
            out.appendControlU32(seq)
        case .drain(let handoff):
            out.append(Kind.drain.rawValue)
            out.append(handoff ? 1 : 0)
        case .backendState(let host, let port, let flags, let addresses):
            out.append(Kind.backendState.rawValue)
            out.appendControlString(host)
            out.appendControlI32(port)
            out.append(flags)
            out.appendControlU32(UInt32(truncatingIfNeeded: addresses.count))
            for a in addresses { out.appendControlString(a) }
        case .backendFailed(let host, let port, let reason):
            out.append(Kind.backendFailed.rawValue)
            out.appendControlString(host)
            out.appendControlI32(port)
            out.appendControlString(reason)
        case .poolReport(let database, let user, let servers, let idle, let waiting, let seq):
            out.append(Kind.poolReport.rawValue)
            out.appendControlString(database)
            out.appendControlString(user)
            out.appendControlI32(servers)
            out.appendControlI32(idle)
            out.appendControlI32(waiting)
            out.appendControlU32(seq)
        case .limitsToWorker(let m):
            out.append(Kind.limitsToWorker.rawValue)
            m.encode(into: &out)
        case .limitsFromWorker(let m):
            out.append(Kind.limitsFromWorker.rawValue)
            m.encode(into: &out)
        }
    }

    /// Decodes exactly one message: a short, long or unknown datagram is an error, never a crash.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ControlDecodeError) -> ControlMessage {
        var r = Reader(bytes: bytes)
        let rawKind = try r.u8("kind")
        guard let kind = Kind(rawValue: rawKind) else {
            throw ControlDecodeError("unknown message kind \(rawKind)")
        }
        let message: ControlMessage
        switch kind {
        case .shutdown:
            let raw = try r.u8("shutdown mode")
            guard let mode = ShutdownMode(rawValue: raw) else {
                throw ControlDecodeError("unknown shutdown mode \(raw)")
            }
            message = .shutdown(mode)
        case .reload:
            message = .reload
        case .pause:
            message = .pause
        case .resume:
            message = .resume
        case .cancel:
            message = .cancel(processID: try r.i32("cancel"), secretKey: try r.u32("cancel"))
        case .ready:
            message = .ready(slot: try r.i32("ready"), pid: try r.i32("ready"))
        case .forwardCancel:
            message = .forwardCancel(targetSlot: try r.i32("forwardCancel"), processID: try r.i32("forwardCancel"),
                                     secretKey: try r.u32("forwardCancel"))
        case .heartbeat:
            message = .heartbeat(clients: try r.i32("heartbeat"), servers: try r.i32("heartbeat"))
        case .log:
            let length = Int(try r.u32("log length"))
            let raw = try r.bytes(length, "log text")
            guard let text = String(validating: raw, as: UTF8.self) else {
                throw ControlDecodeError("log text is not valid UTF-8")
            }
            message = .log(text)
        case .quota:
            message = .quota(database: try r.string("quota database"), user: try r.string("quota user"),
                             quota: try r.i32("quota"), seq: try r.u32("quota"))
        case .poolReport:
            message = .poolReport(database: try r.string("report database"), user: try r.string("report user"),
                                  servers: try r.i32("report"), idle: try r.i32("report"),
                                  waiting: try r.i32("report"), seq: try r.u32("report"))
        case .drain:
            let flag = try r.u8("drain")
            guard flag <= 1 else { throw ControlDecodeError("bad drain flag \(flag)") }
            message = .drain(handoff: flag == 1)
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
            let count = Int(try r.u32("address count"))
            guard count <= 1024 else { throw ControlDecodeError("too many addresses (\(count))") }
            var addresses: [String] = []
            for _ in 0..<count { addresses.append(try r.string("address")) }
            message = .backendState(host: host, port: port, flags: flags, addresses: addresses)
        case .backendFailed:
            message = .backendFailed(host: try r.string("backend host"), port: try r.i32("backend port"),
                                     reason: try r.string("backend failure"))
        case .statsToWorker, .statsFromWorker:
            // The chunk fills the rest of the datagram; its own header is checked by StatsChunk.decode.
            let rest = try r.bytes(bytes.count - r.offset, "stats chunk")
            let chunk = Array(rest)
            do throws(StatsDecodeError) {
                _ = try StatsChunk.decode(chunk)
            } catch {
                throw ControlDecodeError(error.description)
            }
            message = kind == .statsToWorker ? .statsToWorker(chunk) : .statsFromWorker(chunk)
        }
        if r.offset != bytes.count {
            throw ControlDecodeError("\(bytes.count - r.offset) unexpected trailing bytes after \(kind)")
        }
        return message
    }

    /// A bounds-checked big-endian cursor over one datagram.
    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        mutating func u8(_ what: StaticString) throws(ControlDecodeError) -> UInt8 {
            guard offset < bytes.count else { throw ControlDecodeError("truncated message (\(what))") }
            defer { offset &+= 1 }
            return bytes[offset]
        }

        mutating func u32(_ what: StaticString) throws(ControlDecodeError) -> UInt32 {
            guard bytes.count - offset >= 4 else { throw ControlDecodeError("truncated message (\(what))") }
            defer { offset &+= 4 }
            return UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
        }

        mutating func i32(_ what: StaticString) throws(ControlDecodeError) -> Int32 {
            Int32(bitPattern: try u32(what))
        }

        mutating func string(_ what: StaticString) throws(ControlDecodeError) -> String {
            let length = Int(try u32(what))
            let raw = try bytes(length, what)
            guard let text = String(validating: raw, as: UTF8.self) else {
                throw ControlDecodeError("\(what) is not valid UTF-8")
            }
            return text
        }

        mutating func bytes(_ count: Int, _ what: StaticString) throws(ControlDecodeError) -> UnsafeRawBufferPointer {
            guard count >= 0, bytes.count - offset >= count else {
                throw ControlDecodeError("truncated message (\(what))")
            }
            defer { offset &+= count }
            return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
        }
    }
}

/// The writing side of `ControlMessage.Reader`: big-endian integers and u32-length-prefixed UTF-8, shared
/// by every control-message encoder (ControlMessage, LimitsMessage).
extension [UInt8] {
    mutating func appendControlU32(_ v: UInt32) {
        append(UInt8(truncatingIfNeeded: v >> 24))
        append(UInt8(truncatingIfNeeded: v >> 16))
        append(UInt8(truncatingIfNeeded: v >> 8))
        append(UInt8(truncatingIfNeeded: v))
    }

    mutating func appendControlI32(_ v: Int32) { appendControlU32(UInt32(bitPattern: v)) }

    mutating func appendControlString(_ text: String) {
        var t = text
        t.withUTF8 { utf8 in
            appendControlU32(UInt32(truncatingIfNeeded: utf8.count))
            append(contentsOf: utf8)
        }
    }
}

/// A datagram that is not a valid control message.
public struct ControlDecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "invalid control message: \(reason)" }
}
