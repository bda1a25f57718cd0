// Every id pgswift packs into one integer, each layout written once: epoll user data (worker and
// supervisor), the ptr/link columns of SHOW CLIENTS and SHOW SERVERS, and the process id of the
// BackendKeyData pgswift gives its clients. (Their `id` column is not packed: one sequence for the
// whole service, `ClientCounter.nextConnectionID`.)
//
// Values users see (`AdminPointer`, `CancelProcessID`) are behaviour: clients and
// tests read them, cancel keys cross a rolling restart, so their bits must not change. The epoll
// layouts never leave a process. Everything is `@inlinable`: the worker decodes a `WorkerToken` on
// every event.

/// The worker's epoll user data: which kind of descriptor an event is for, and which record.
///
/// ```
///  63      56 55                 32 31                       0
/// ┌──────────┬─────────────────────┬──────────────────────────┐
/// │ kind (8) │ generation (24)     │ index (32, Int32 bits)   │
/// └──────────┴─────────────────────┴──────────────────────────┘
/// ```
/// For a client or server the index is its table index and the generation the low 24 bits of the
/// record's `io.gen`, so an event queued for a record freed and reused within one `epoll_wait` batch
/// (same index, next generation) is recognised and dropped. The generation wraps at 2^24: a record
/// would have to be reused 16 million times within one batch to be confused. For a listener, the
/// control socket and the handoff socket the index is the descriptor and the generation 0.
@frozen public struct WorkerToken: Equatable, Sendable {
    public var raw: UInt64

    @frozen public enum Kind: UInt8, Sendable {
        case listener = 1
        case client = 2
        case server = 3
        case control = 4
        // 5 was the worker's signalfd, which no longer exists.
        case handoff = 6
    }

    /// Bits kept of a record's generation.
    @inlinable public static var generationMask: UInt32 { 0xFF_FFFF }

    @inlinable @inline(__always) public init(raw: UInt64) { self.raw = raw }

    /// A client's or server's token: its table index and (the low 24 bits of) its generation.
    @inlinable @inline(__always)
    public init(_ kind: Kind, generation: UInt32, index: Int32) {
        raw = UInt64(kind.rawValue) << 56 | UInt64(generation & Self.generationMask) << 32
            | UInt64(UInt32(bitPattern: index))
    }

    /// A descriptor that is not a connection record (listener, control, handoff): generation 0.
    @inlinable @inline(__always)
    public init(_ kind: Kind, fd: Int32) { self.init(kind, generation: 0, index: fd) }

    /// nil for a kind this build does not know (never made, so never seen).
    @inlinable public var kind: Kind? { @inline(__always) get { Kind(rawValue: UInt8(truncatingIfNeeded: raw >> 56)) } }
    @inlinable public var generation: UInt32 { @inline(__always) get { UInt32(truncatingIfNeeded: raw >> 32) & Self.generationMask } }
    @inlinable public var index: Int32 { @inline(__always) get { Int32(bitPattern: UInt32(truncatingIfNeeded: raw)) } }

    /// Whether the token was made for a record whose generation is now `generation`.
    @inlinable @inline(__always)
    public func matches(generation g: UInt32) -> Bool { g & Self.generationMask == generation }
}

/// The supervisor's epoll user data. Two tag bits say whose descriptor it is; without either it is a
/// worker's control channel, or the signalfd (0).
///
/// ```
///  63  62  61                 32 31                           0
/// ┌───┬───┬─────────────────────┬──────────────────────────────┐
/// │ M │ H │ generation / serial │ index + 1 (0: see below)     │
/// └───┴───┴─────────────────────┴──────────────────────────────┘
/// ```
/// - signalfd: 0.
/// - worker control channel (M = H = 0): the slot's process generation, low 30 bits (it wraps; a
///   rolling restart adds 256, so wrapping takes four million rolls), and slot index + 1.
/// - metrics (M): low 32 bits 0 for the listener, fd + 1 for a connection.
/// - health check (H): probe serial in bits 32-55 (24 bits, wraps), low 32 bits 0 for the DNS
///   resolver's wake-up pipe, target index + 1 for a probe.
/// - peer cancels (M and H): the wake-up pipe of the threads that forward cancels to peers; the rest 0.
///
/// A stale event (a channel of an earlier process, a finished probe) carries an older generation or
/// serial than the one in force and is dropped by the owner's comparison.
@frozen public struct SupervisorToken: Equatable, Sendable {
    public var raw: UInt64

    @inlinable public static var metricsBit: UInt64 { 1 << 63 }
    @inlinable public static var healthBit: UInt64 { 1 << 62 }
    @inlinable public static var channelGenerationMask: UInt32 { 0x3FFF_FFFF }
    @inlinable public static var probeSerialMask: UInt32 { 0xFF_FFFF }

    @inlinable public init(raw: UInt64) { self.raw = raw }

    @inlinable public static var signal: SupervisorToken { SupervisorToken(raw: 0) }
    @inlinable public static var metricsListener: SupervisorToken { SupervisorToken(raw: metricsBit) }
    @inlinable public static var healthResolver: SupervisorToken { SupervisorToken(raw: healthBit) }
    @inlinable public static var peerCancels: SupervisorToken { SupervisorToken(raw: metricsBit | healthBit) }

    @inlinable public static func channel(slot: Int, generation: UInt32) -> SupervisorToken {
        SupervisorToken(raw: UInt64(generation & channelGenerationMask) << 32 | UInt64(UInt32(truncatingIfNeeded: slot + 1)))
    }
    @inlinable public static func metricsConnection(fd: Int32) -> SupervisorToken {
        SupervisorToken(raw: metricsBit | UInt64(UInt32(bitPattern: fd + 1)))
    }
    @inlinable public static func healthProbe(target: Int, serial: UInt32) -> SupervisorToken {
        SupervisorToken(raw: healthBit | UInt64(serial & probeSerialMask) << 32 | UInt64(UInt32(truncatingIfNeeded: target + 1)))
    }

    public enum Owner: Equatable, Sendable { case signal, channel, metrics, health, peers }
    @inlinable public var owner: Owner {
        if raw == 0 { return .signal }
        if raw & (Self.metricsBit | Self.healthBit) == Self.metricsBit | Self.healthBit { return .peers }
        if raw & Self.metricsBit != 0 { return .metrics }
        if raw & Self.healthBit != 0 { return .health }
        return .channel
    }
    /// The slot, metrics fd or health target; -1 for the metrics listener, the resolver pipe and the signalfd.
    @inlinable public var index: Int { Int(UInt32(truncatingIfNeeded: raw)) - 1 }
    /// A channel's process generation (30 bits) or a probe's serial (24 bits).
    @inlinable public var generation: UInt32 {
        let g = UInt32(truncatingIfNeeded: raw >> 32)
        return raw & Self.healthBit != 0 ? g & Self.probeSerialMask : g & Self.channelGenerationMask
    }
}

/// The `ptr` and `link` columns of SHOW CLIENTS / SHOW SERVERS (PgBouncer prints object addresses
/// there; pgswift prints these, in hex): unique per worker record while it lives, so a client's
/// `link` finds its server's `ptr` and the other way round.
///
/// ```
///           63        40  39   38          16 15        0
/// client:  │ slot (24)  │ generation (24)    │ index (16) │
/// server:  │ slot (24)  │ 1 │ 0 ... │ index (32, bits 0-31) │
/// ```
/// A client pointer carries its table index's low 16 bits and its generation's low 24 bits (both
/// wrap); a server pointer sets bit 39 and carries the whole table index. Bit 39 is also a client
/// generation's top bit, so the two kinds are told apart by the column they are in, not by the value.
@frozen public struct AdminPointer: Equatable, Sendable {
    public var raw: UInt64
    @inlinable public init(raw: UInt64) { self.raw = raw }

    @inlinable public static var serverBit: UInt64 { 1 << 39 }

    @inlinable public static func client(slot: Int32, generation: UInt32, index: Int32) -> AdminPointer {
        AdminPointer(raw: UInt64(UInt32(bitPattern: slot)) << 40 | UInt64(generation & 0xFF_FFFF) << 16
            | UInt64(UInt32(bitPattern: index) & 0xFFFF))
    }
    @inlinable public static func server(slot: Int32, index: Int32) -> AdminPointer {
        AdminPointer(raw: UInt64(UInt32(bitPattern: slot)) << 40 | serverBit | UInt64(UInt32(bitPattern: index)))
    }

    @inlinable public var slot: Int32 { Int32(truncatingIfNeeded: raw >> 40) }
    /// A client pointer's generation (24 bits).
    @inlinable public var clientGeneration: UInt32 { UInt32(truncatingIfNeeded: raw >> 16) & 0xFF_FFFF }
    /// A client pointer's table index (low 16 bits).
    @inlinable public var clientIndex: Int32 { Int32(truncatingIfNeeded: raw & 0xFFFF) }
    /// A server pointer's table index.
    @inlinable public var serverIndex: Int32 { Int32(bitPattern: UInt32(truncatingIfNeeded: raw)) }
}

/// The process id in the BackendKeyData pgswift sends a client, which the client's CancelRequest
/// brings back to any worker: the owning worker's slot above the client's table index.
///
/// ```
///  31 30          20 19                    0
/// │ 0 │ slot (11)   │ table index (20)      │
/// └───┴─────────────┴───────────────────────┘
/// ```
/// The index is cut to 20 bits (a table past 1,048,576 clients would give two clients one process
/// id; the random secret key still tells them apart). A client handed to a successor in a rolling
/// restart keeps its process id: the successor has the same slot and maps the old index to its own.
/// A process id from the network may be anything: `slot` is then whatever its top bits say.
@frozen public struct CancelProcessID: Equatable, Hashable, Sendable {
    public var raw: Int32
    @inlinable public static var indexMask: Int32 { 0xF_FFFF }
    @inlinable public init(raw: Int32) { self.raw = raw }
    @inlinable public init(slot: Int32, index: Int32) { raw = slot << 20 | (index & Self.indexMask) }
    /// The slot of the worker that gave the key (arithmetic shift, as the key was read off the wire).
    @inlinable public var slot: Int32 { raw >> 20 }
    @inlinable public var index: Int32 { raw & Self.indexMask }
}

/// The BackendKeyData pgswift sends when peering is on (`peer_id` > 0), laid out as PgBouncer ≥ 1.21
/// lays out its keys, so that any peer, pgswift or PgBouncer, reads the peer id and the hop count
/// from a key it did not make. As the 8 bytes of the key (process id then secret, big-endian):
///
/// ```
///  byte 0          1            2            3          4  5  6   7
/// │0│slot hi (7) │ peer id lo │ peer id hi │ slot lo  │ random    │random (6)│TTL(2)│
/// ```
/// PgBouncer puts the peer id in bytes 1 and 2 (low byte first), the number of forwards left (TTL,
/// 3 when made) in the low two bits of byte 7, and clears the process id's sign bit; the rest is its
/// own business, random in PgBouncer's keys. pgswift puts the owning worker's slot in the process id's
/// other 15 bits (byte 0's low 7 and byte 3), so the process id is the same for every client of a
/// worker, and a client is found by its secret (30 random bits plus the TTL bits) among that worker's
/// clients (`Worker.cancelTarget`). Without peering the layout is `CancelProcessID`.
@frozen public enum PeerCancelKey {
    /// The low two bits of the secret: how many more times the key may be forwarded between peers.
    @inlinable public static var ttlMask: UInt32 { 0x3 }
    /// Slots that fit in the process id's 15 free bits.
    @inlinable public static var maxSlot: Int32 { 0x7FFF }

    /// The process id of every client of worker `slot` on the host whose peer id is `peer`.
    @inlinable public static func processID(slot: Int32, peer: Int) -> Int32 {
        let p = UInt32(truncatingIfNeeded: peer) & 0xFFFF
        let s = UInt32(bitPattern: slot) & 0x7FFF
        return Int32(bitPattern: (s >> 8) << 24 | (p & 0xFF) << 16 | (p >> 8) << 8 | (s & 0xFF))
    }

    /// The peer id a key names (bytes 1 and 2, low byte first).
    @inlinable public static func peer(processID: Int32) -> Int {
        let u = UInt32(bitPattern: processID)
        return Int((u >> 16) & 0xFF | ((u >> 8) & 0xFF) << 8)
    }

    /// The worker slot a key made by pgswift names.
    @inlinable public static func slot(processID: Int32) -> Int32 {
        let u = UInt32(bitPattern: processID)
        return Int32(bitPattern: ((u >> 24) & 0x7F) << 8 | u & 0xFF)
    }

    /// A secret as handed out: random, with the TTL bits set (three forwards left).
    @inlinable public static func secret(random: UInt32) -> UInt32 { random | ttlMask }

    /// Forwards left on a key that arrived.
    @inlinable public static func ttl(secret: UInt32) -> UInt32 { secret & ttlMask }
}
