// Splitting stats and admin blobs into control-channel-sized chunks, and putting them back together.

/// What a blob carries; the receiver routes on it.
public enum StatsBlobKind: UInt8, Sendable, CaseIterable {
    /// worker → supervisor, unsolicited once a second: a `WorkerStatsSnapshot` without connection rows.
    case periodicSnapshot = 1
    /// worker → supervisor, answering a `StatsRequest`: a `WorkerStatsSnapshot` with the rows asked for.
    case requestedSnapshot = 2
    /// supervisor → worker: a `StatsRequest`.
    case statsRequest = 3
    /// worker → supervisor: an admin console command to run (`AdminRequest`).
    case adminRequest = 4
    /// supervisor → worker: the wire bytes answering an admin request (RowDescription ... CommandComplete,
    /// or an ErrorResponse), to be sent to the admin client followed by ReadyForQuery.
    case adminResult = 5
    /// worker → supervisor, before the snapshot answering a `StatsRequest` with `queries`: its
    /// `QueryStatsSnapshot` (issue 21).
    case queryStats = 6
}

/// One datagram's worth of a blob: [kind u8][slot i32][requestID u32][index u32][total u32][payload].
///
/// A SOCK_SEQPACKET channel delivers datagrams whole and in order, so chunks of one blob arrive in
/// sequence; `total` lets the receiver refuse a blob that would be too large before buffering it.
public struct StatsChunk: Equatable, Sendable {
    public var kind: StatsBlobKind
    /// The worker slot the blob is about (sender for worker → supervisor, addressee otherwise).
    public var slot: Int32
    /// Pairs an answer with its request; 0 for unsolicited pushes.
    public var requestID: UInt32
    public var index: UInt32
    public var total: UInt32
    public var payload: ArraySlice<UInt8>

    public static let headerSize = 17
    /// Largest chunk that fits one control message (ControlMessage.maximumSize, less its kind byte).
    public static let maximumSize = 65_535

    public func encode() -> [UInt8] {
        var w = MessageWriter(capacity: Self.headerSize + payload.count)
        w.put(kind, slot, requestID, index, total)
        w.raw(payload)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(StatsDecodeError) -> StatsChunk {
        guard bytes.count >= headerSize else { throw StatsDecodeError("chunk shorter than its header") }
        let chunk = try StatsReader.reading(bytes) { r throws(StatsDecodeError) in
            StatsChunk(kind: try r.code(StatsBlobKind.self, "blob kind"), slot: try r.i32("slot"),
                       requestID: try r.u32("request id"), index: try r.u32("index"), total: try r.u32("total"),
                       payload: bytes[headerSize...])
        }
        guard chunk.total >= 1, chunk.index < chunk.total else {
            throw StatsDecodeError("chunk \(chunk.index) of \(chunk.total)")
        }
        return chunk
    }

    /// Splits `blob` into encoded chunks of at most `maximumSize` bytes each (at least one chunk, even
    /// for an empty blob).
    public static func split(_ blob: [UInt8], kind: StatsBlobKind, slot: Int32, requestID: UInt32,
                             maximumSize: Int = StatsChunk.maximumSize) -> [[UInt8]] {
        precondition(maximumSize > headerSize, "chunk size must exceed the header")
        let per = maximumSize - headerSize
        let total = max(1, (blob.count + per - 1) / per)
        var chunks: [[UInt8]] = []
        chunks.reserveCapacity(total)
        for i in 0..<total {
            let from = i * per
            let to = min(blob.count, from + per)
            let c = StatsChunk(kind: kind, slot: slot, requestID: requestID, index: UInt32(i),
                               total: UInt32(total), payload: blob[from..<to])
            chunks.append(c.encode())
        }
        return chunks
    }
}

/// A complete blob put back together.
public struct StatsBlob: Equatable, Sendable {
    public var kind: StatsBlobKind
    public var slot: Int32
    public var requestID: UInt32
    public var bytes: [UInt8]
}

/// Collects chunks per (kind, slot, requestID) until a blob is complete.
///
/// Bounded: a blob larger than `maximumBlobSize` is refused at its first chunk, and at most
/// `maximumPending` partial blobs are kept (the oldest is dropped), so a confused peer cannot make the
/// supervisor or a worker buffer without limit.
public struct StatsReassembler {
    struct Key: Hashable {
        var kind: UInt8
        var slot: Int32
        var requestID: UInt32
    }
    struct Partial {
        var next: UInt32
        var total: UInt32
        var bytes: [UInt8]
        var age: UInt64
    }

    public let maximumBlobSize: Int
    public let maximumPending: Int
    var pending: [Key: Partial] = [:]
    var clock: UInt64 = 0

    public init(maximumBlobSize: Int = 64 << 20, maximumPending: Int = 64) {
        self.maximumBlobSize = maximumBlobSize
        self.maximumPending = maximumPending
    }

    public var pendingCount: Int { pending.count }

    /// Adds one chunk from `sender`; returns the blob when this chunk completed it. A malformed chunk
    /// is logged as a warning ("<sender> sent ...") and dropped: nil, as for a chunk that completes nothing.
    public mutating func add(_ encoded: [UInt8], from sender: @autoclosure () -> String, log: Logger) -> StatsBlob? {
        do throws(StatsDecodeError) {
            return try add(encoded)
        } catch {
            log.warning("\(sender()) sent \(error)")
            return nil
        }
    }

    /// Adds one encoded chunk; returns the blob when this chunk completed it.
    public mutating func add(_ encoded: [UInt8]) throws(StatsDecodeError) -> StatsBlob? {
        let c = try StatsChunk.decode(encoded)
        let key = Key(kind: c.kind.rawValue, slot: c.slot, requestID: c.requestID)
        clock &+= 1
        if c.index == 0 {
            let bound = UInt64(c.total) * UInt64(StatsChunk.maximumSize)
            if c.total > 1 && bound > UInt64(maximumBlobSize) + UInt64(StatsChunk.maximumSize) {
                pending[key] = nil
                throw StatsDecodeError("blob of \(c.total) chunks exceeds \(maximumBlobSize) bytes")
            }
            if c.total == 1 {
                pending[key] = nil
                return StatsBlob(kind: c.kind, slot: c.slot, requestID: c.requestID, bytes: Array(c.payload))
            }
            if pending[key] == nil && pending.count >= maximumPending, let oldest = pending.min(by: { $0.value.age < $1.value.age }) {
                pending[oldest.key] = nil
            }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(min(maximumBlobSize, Int(c.total) * c.payload.count))
            bytes.append(contentsOf: c.payload)
            pending[key] = Partial(next: 1, total: c.total, bytes: bytes, age: clock)
            return nil
        }
        guard var p = pending[key] else {
            throw StatsDecodeError("chunk \(c.index) of \(c.total) without its beginning")
        }
        guard c.index == p.next, c.total == p.total else {
            pending[key] = nil
            throw StatsDecodeError("chunk \(c.index) of \(c.total) out of sequence (expected \(p.next) of \(p.total))")
        }
        guard p.bytes.count + c.payload.count <= maximumBlobSize else {
            pending[key] = nil
            throw StatsDecodeError("blob exceeds \(maximumBlobSize) bytes")
        }
        pending[key] = nil  // keep the array uniquely referenced while appending
        p.bytes.append(contentsOf: c.payload)
        p.next += 1
        p.age = clock
        if p.next == p.total {
            return StatsBlob(kind: c.kind, slot: c.slot, requestID: c.requestID, bytes: p.bytes)
        }
        pending[key] = p
        return nil
    }

    /// Forgets partial blobs from or about a slot (its worker died or restarted).
    public mutating func discard(slot: Int32) {
        pending = pending.filter { $0.key.slot != slot }
    }
}

/// What SHOW CLIENTS / SHOW SERVERS (rows), SHOW QUERIES / TABLES (patterns) and RESET QUERIES need
/// from each worker.
public struct StatsRequest: Equatable, Sendable {
    public var requestID: UInt32
    public var includeClients: Bool
    public var includeServers: Bool
    /// Send the query statistics (a `queryStats` blob before the snapshot).
    public var includeQueries: Bool
    /// Forget the query statistics first (RESET QUERIES).
    public var resetQueries: Bool

    public init(requestID: UInt32, includeClients: Bool, includeServers: Bool, includeQueries: Bool = false,
                resetQueries: Bool = false) {
        self.requestID = requestID
        self.includeClients = includeClients
        self.includeServers = includeServers
        self.includeQueries = includeQueries
        self.resetQueries = resetQueries
    }

    public func encode() -> [UInt8] {
        [UInt8(includeClients ? 1 : 0) | UInt8(includeServers ? 2 : 0) | UInt8(includeQueries ? 4 : 0)
            | UInt8(resetQueries ? 8 : 0)]
    }

    /// `requestID` travels in the chunk header.
    public static func decode(_ bytes: [UInt8], requestID: UInt32) throws(StatsDecodeError) -> StatsRequest {
        guard bytes.count == 1, bytes[0] & ~15 == 0 else { throw StatsDecodeError("bad stats request") }
        return StatsRequest(requestID: requestID, includeClients: bytes[0] & 1 != 0, includeServers: bytes[0] & 2 != 0,
                            includeQueries: bytes[0] & 4 != 0, resetQueries: bytes[0] & 8 != 0)
    }
}

extension StatsBlobKind: MessageField {}
