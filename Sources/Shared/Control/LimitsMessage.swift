// Control messages for service-wide limits and per-database admin commands (kinds 0x30 / 0x70).

/// What a connection-limit group counts: the servers of one database (all users) or of one user (all databases).
public enum LimitGroupKind: UInt8, Sendable, Hashable {
    case database = 1
    case user = 2
}

/// A group of pools under one `max_db_connections` / `max_user_connections` limit.
public struct LimitGroupKey: Hashable, Sendable, CustomStringConvertible {
    public var kind: LimitGroupKind
    public var name: String
    public init(kind: LimitGroupKind, name: String) {
        self.kind = kind
        self.name = name
    }
    public var description: String { (kind == .database ? "database " : "user ") + name }
}

/// A per-database admin operation the supervisor applies on every worker. An empty database name means all.
public enum DatabaseOp: UInt8, Sendable {
    /// PAUSE db: hand out no server of db; linked clients finish their transaction.
    case pause = 1
    case resume = 2
    /// DISABLE db: refuse new clients of db.
    case disable = 3
    case enable = 4
    /// RECONNECT [db]: close every server of db when it is next released.
    case reconnect = 5
    /// KILL [db]: close every client and server of db, and pause it.
    case kill = 6
    /// Probes (answered with a count, change nothing): servers of db still linked to clients,
    /// servers of db opened before the last RECONNECT.
    case countActive = 7
    case countCloseNeeded = 8
}

/// Supervisor → worker (inside `ControlMessage.limitsToWorker`) and worker → supervisor
/// (inside `ControlMessage.limitsFromWorker`).
public enum LimitsMessage: Equatable, Sendable {
    // supervisor → worker
    /// This worker's share of a connection-limit group; `seq` as for pool quotas.
    case groupQuota(LimitGroupKey, quota: Int32, seq: UInt32)
    /// Apply `op` to `database` ("" = every database); answered with `reply(requestID, count)`.
    case database(DatabaseOp, database: String, requestID: UInt32)
    /// KILL_CLIENT: the client whose id (SHOW CLIENTS `id`, one sequence for the whole service) is
    /// `clientID`; answered with 1 if this worker had it, else 0.
    case killClient(clientID: UInt64, requestID: UInt32)
    /// This worker's share of min_pool_size for a pool (warm-up): keep at least `count` servers open.
    case warm(database: String, user: String, count: Int32)
    // worker → supervisor
    /// A group's state in this worker: servers in any state, idle ones, clients waiting, last quota seq applied.
    case groupReport(LimitGroupKey, servers: Int32, idle: Int32, waiting: Int32, seq: UInt32)
    /// The answer to `database` or `killClient`.
    case reply(requestID: UInt32, count: Int32)

    @usableFromInline
    enum Kind: UInt8 {
        // 3 was KILL_CLIENT with a 32-bit per-worker id (before ids were service-wide); not reused, so
        // that a worker of an older build refuses the new form instead of misreading it.
        case groupQuota = 1, database = 2, warm = 4, killClient = 5
        case groupReport = 0x81, reply = 0x82
    }

    public var isToWorker: Bool {
        switch self {
        case .groupQuota, .database, .killClient, .warm: return true
        case .groupReport, .reply: return false
        }
    }

    func encode(into w: inout MessageWriter) {
        switch self {
        case .groupQuota(let key, let quota, let seq): w.put(Kind.groupQuota, key.kind, key.name, quota, seq)
        case .database(let op, let database, let requestID): w.put(Kind.database, op, database, requestID)
        case .killClient(let clientID, let requestID): w.put(Kind.killClient, clientID, requestID)
        case .warm(let database, let user, let count): w.put(Kind.warm, database, user, count)
        case .groupReport(let key, let servers, let idle, let waiting, let seq):
            w.put(Kind.groupReport, key.kind, key.name, servers, idle, waiting, seq)
        case .reply(let requestID, let count): w.put(Kind.reply, requestID, count)
        }
    }

    static func decode(_ r: inout ControlMessage.Reader) throws(ControlDecodeError) -> LimitsMessage {
        let kind = try r.code(Kind.self, "limits message kind")
        func groupKey() throws(ControlDecodeError) -> LimitGroupKey {
            LimitGroupKey(kind: try r.code(LimitGroupKind.self, "limit group kind"), name: try r.string("group name"))
        }
        switch kind {
        case .groupQuota:
            return .groupQuota(try groupKey(), quota: try r.i32("group quota"), seq: try r.u32("group quota"))
        case .database:
            return .database(try r.code(DatabaseOp.self, "database op"), database: try r.string("database op name"),
                             requestID: try r.u32("database op"))
        case .killClient:
            return .killClient(clientID: try r.u64("kill client"), requestID: try r.u32("kill client"))
        case .warm:
            return .warm(database: try r.string("warm database"), user: try r.string("warm user"),
                         count: try r.i32("warm"))
        case .groupReport:
            return .groupReport(try groupKey(), servers: try r.i32("group report"), idle: try r.i32("group report"),
                                waiting: try r.i32("group report"), seq: try r.u32("group report"))
        case .reply:
            return .reply(requestID: try r.u32("reply"), count: try r.i32("reply"))
        }
    }
}

extension LimitGroupKind: MessageField {}
extension DatabaseOp: MessageField {}
extension LimitsMessage.Kind: MessageField {}
