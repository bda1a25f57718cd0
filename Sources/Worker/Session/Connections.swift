// Connection records and their tables: plain structs in manually managed arrays, indexed by Int32.
import Shared
import Glibc

enum ClientState: UInt8 {
    case free
    /// Reading the startup packet (and SSL/GSS requests before it).
    case startup
    /// Authentication exchange in progress.
    case auth
    /// Authenticated; waiting for the pool's first server login to learn the welcome parameters.
    case waitWelcome
    /// Logged in, no server linked.
    case idle
    /// Has data to send, queued for a server (FIFO in the pool).
    case waitServer
    /// Linked to a server.
    case active
    /// Flushing a final message, then closing.
    case closing
    /// A replication client (`replication=database`/`true`), authenticated, whose own server connection
    /// is not opened yet: its pool (or a connection limit) has no room. Still logging in (no
    /// AuthenticationOk yet); counted in its pool's `replicationWaitCount` (Replication.swift).
    case replicationWait
    /// A replication client whose own server connection (`server`, linked from its launch, as PgBouncer
    /// links it) is connecting and logging in; at its ReadyForQuery both become `active`.
    case replicationLogin
}

enum ServerState: UInt8 {
    case free
    /// Non-blocking connect in progress.
    case connecting
    /// Startup and authentication with PostgreSQL.
    case login
    /// In the pool's idle list.
    case idle
    /// Linked to a client.
    case active
    /// Running server_reset_query (or a ROLLBACK) before going back to the pool.
    case resetting
    /// A one-shot connection that carries a CancelRequest.
    case cancelRequest
    /// Free again but a cancel aimed at it is still in flight: no client gets it until that ends,
    /// or the cancel could hit the next client's query (PgBouncer's being_canceled).
    case beingCanceled
    /// Closed, waiting to be freed.
    case closing
    /// Running auth_query for clients that wait to log in (AuthQuery.swift); back to the pool after.
    case authQuery
    /// A pool's listening connection, logged in (ListenRelay.swift; `Server.listener`).
    case listening
}

/// Startup-parameter values that follow a client onto whichever server it gets (PgBouncer's varcache).
/// Index i is `TrackedParams.names[i]`.
struct ParamValues {
    var values: [String?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
}

/// Per-session details of a client: touched at login, link time and in logs, never per message. One
/// is held by every connected client (10,000 idle clients hold 10,000), so what only a login needs
/// lives in `login`, dropped when the login ends.
final class ClientInfo {
    var user = ""
    var database = ""
    var peer = ""
    var params: ParamValues
    var applicationName = ""
    /// While the client is in `.startup` or `.auth` (a freshly accepted one); `setClientState` drops it
    /// as the client leaves them, so an idle client pays one nil pointer for its login.
    var login: ClientLoginState? = nil
    /// Protocol-level prepared statements: client name → StatementRegistry id (transaction/statement
    /// mode), with a memo of the last name a Bind looked up (StatementNames.swift). Nil until the
    /// client's first named statement (`preparedNames`), and again after its DEALLOCATE ALL or DISCARD ALL.
    var prepared: ClientStatementNames? = nil
    /// Carried session settings, statements in flight, WITH HOLD cursors (SessionState.swift).
    var session = ClientSessionState()
    var protocolMinor = 0
    /// The database and user name keys this client is counted under for max_db_client_connections
    /// and max_user_client_connections (0: not counted; ClientLimits.swift).
    var countedDB: Int64 = 0
    var countedUser: Int64 = 0
    init(trackedCount: Int) { params = ParamValues(count: trackedCount) }

    /// `prepared`, made when the client names its first statement.
    func preparedNames() -> ClientStatementNames {
        if let names = prepared { return names }
        let names = ClientStatementNames()
        prepared = names
        return names
    }
}

/// What only a client's login needs (ClientLogin.swift, AuthQuery.swift): the exchange in progress,
/// the secret it runs against and what it learnt for the pool. Allocated on accept, dropped by
/// `setClientState` when the client leaves `.startup`/`.auth` (`authenticated` has handed the pool
/// what it needed by then).
final class ClientLoginState {
    var auth = ClientAuth.none
    /// The database entry asked for; nil: unknown, which is told only after authentication (as
    /// PgBouncer does), so that unauthenticated clients cannot probe database names.
    var entry: DatabaseEntry? = nil
    /// The secret the exchange runs against (auth_file or auth_query), and whether auth_query found the
    /// user (a found user with no password still passes `trust`). Nothing per user goes into a pool
    /// before authentication succeeds (`authenticated`).
    var secret: PasswordSecret? = nil
    var authQueryFound = false
    /// Handed to the pool once the client has authenticated: auth_query's secret (server logins use it)
    /// and the ClientKey recovered from a SCRAM proof (server logins with a userlist SCRAM secret).
    var authQuerySecret: PasswordSecret? = nil
    var scramClientKey: [UInt8]? = nil
    /// Why the exchange in progress cannot succeed (unknown user, an MD5 secret under SCRAM), for the log:
    /// the client still goes through the whole exchange and gets the wrong-password error.
    var mockReason: String? = nil
    /// The `map=` of the auth_hba_file cert line that chose certificate authentication (HbaLogin.swift).
    var identMap: IdentMap? = nil
    /// The startup packet's `replication` value (Replication.swift): such a client's login ends only
    /// when its own server connection's does, so this lives until then.
    var replication = ReplicationMode.none
    /// A replication client's `options` startup parameter, untouched: its own server gets it as it came
    /// (PgBouncer takes any options from replication clients, as nothing else shares that server).
    var replicationOptions: String? = nil
    /// Accepted while max_client_conn was reached, so not counted: refused once its startup packet
    /// names a database (after TLS, so that the client can read why), unless that is the admin console,
    /// which PgBouncer lets in beyond the limit (counted then).
    var overLimit = false
    /// Still over max_client_conn when its startup packet came: the packet, kept for one janitor tick
    /// (`admitAndAuthenticate`), as a place may be freeing on another worker that very moment.
    var deferredStartup: StartupMessage? = nil
    /// When it was kept (`Worker.now`): the janitor takes it up at a later turn, never the same one.
    var deferredAt: Int64 = 0
}

enum ClientAuth {
    case none
    case cleartext(secret: PasswordSecret)
    case md5(salt: [UInt8], secret: PasswordSecret)
    case scram(ScramServerExchange, sawClientFirst: Bool)
    case failing
}

/// What an admin-console client may do.
enum AdminAccess: UInt8 {
    /// Not an admin-console client.
    case none
    /// Logging in to the console; the level is decided once the client has authenticated.
    case pending
    /// SHOW only (stats_users).
    case statsOnly
    /// Everything (admin_users, or root / pgswift's own user over the Unix socket).
    case full
}

/// A server connection's TLS step during login (ServerTLS.swift).
enum ServerTLSPhase: UInt8 {
    /// Plaintext, or TLS settled.
    case none
    /// SSLRequest sent, its one-byte answer awaited.
    case requested
    /// TLS handshake in progress.
    case handshaking
}

/// One slot of the client table, which holds max_client_conn of them whether used or not: the fields
/// go by size (8-byte, 4-byte, then 1-byte), so that no padding is added between them.
struct Client {
    /// Socket, buffers, readiness and TLS (Endpoint.swift), the same for both sides.
    var io = Endpoint(writable: true)
    var pool: Int32 = -1
    var server: Int32 = -1
    /// Its place in its pool's wait queue (`.waitServer`; Pool/RowList.swift).
    var links = RowLinks()
    var cancelKey: UInt32 = 0
    /// The admin query forwarded to the supervisor and not answered yet (0: none).
    var adminRequest: UInt32 = 0
    /// Its carried session settings are not empty (SessionHooks.swift `clientCarries`); here, in the
    /// four bytes before the first 8-byte field, it costs no space.
    var carriesSettings = false
    /// SHOW CLIENTS' `id` (`newConnectionID`), also in log lines (`C-<id>`).
    var id: UInt64 = 0
    var connectedAt: Int64 = 0
    var stateSince: Int64 = 0
    /// A named Parse larger than the I/O buffer, collected before it is interned (Prepared.swift).
    var largeParse = SideBuffer()
    /// When epoll first reported the peer's hang-up (the janitor closes a client still here after it).
    var hangupAt: Int64 = 0
    /// Fingerprint of the tracked parameter values this client expects (0: not computed yet).
    var paramsKey: UInt64 = 0
    /// Bytes read from / forwarded to this client since they were last added to its pool's totals
    /// (kept here so the data path never touches the pools array; folded in by WorkerStats.swift).
    var statBytesIn: UInt64 = 0
    var statBytesOut: UInt64 = 0
    var info: ClientInfo? = nil
    var state: ClientState = .free
    var isUnix = false
    /// After an error pgswift raised for a prepared statement: drop messages until Sync, as PostgreSQL does.
    var skipUntilSync = false
    /// What becomes of the rest of a message larger than what is buffered (`input.partial`):
    /// forwarded as it arrives, dropped, or collected whole (Forwarding.swift).
    var partialMode = PartialMode.forward
    /// Admin console access (AdminConsole.swift).
    var admin = AdminAccess.none
    /// The admin console counted this client's first query in its stats (AdminConsole.swift).
    var adminCounted = false
    /// The TLS handshake with this client completed (hostssl/hostnossl, cert auth, SCRAM -PLUS).
    var usesTLS = false
    /// In `.waitServer` only: the client was told it is queued (query_wait_notify; Janitor.swift).
    var waitNotified = false
}

final class ServerInfo {
    var params: ParamValues
    /// Answers PostgreSQL's authentication requests (ServerLogin.swift); nil before the first one.
    var login: BackendLoginMachine? = nil
    /// The database's connect_query was sent and its ReadyForQuery has not come (ConnectQuery.swift).
    var connectQueryRunning = false
    var address = ""
    /// The backend host ("host:port") this connection went to (BackendHealth.swift).
    var hostKey = ""
    /// Where it is connected (a cancel request goes to the same address).
    var socketAddress: SocketAddress? = nil
    /// ParameterStatus values reported at login (the pool's welcome set if it is the first).
    var reported: [(String, String)] = []
    /// Statements prepared on this server: StatementRegistry id → last use (LRU). Behind a pointer, as
    /// the worker's tables are: a stored `var` of a class costs a run-time exclusivity check at every
    /// access, and every Bind of a prepared statement touches this one.
    private let preparedStorage: UnsafeMutablePointer<[Int32: UInt64]> = {
        let p = UnsafeMutablePointer<[Int32: UInt64]>.allocate(capacity: 1)
        p.initialize(to: [:])
        return p
    }()
    var prepared: [Int32: UInt64] {
        unsafeAddress { UnsafePointer(preparedStorage) }
        unsafeMutableAddress { preparedStorage }
    }
    /// Session settings a client set (or pgswift replayed) on it beyond the tracked parameters.
    var session = SessionSettings()
    /// SQL prepared statements on it (folded name → PREPARE statement), all of one client's (the
    /// client's `id`; another client's are deallocated when it links: SessionHooks.swift).
    var sqlPrepared: [String: String] = [:]
    var sqlPreparedOwner: UInt64 = 0
    /// Errors pgswift raised itself, in the order their `synthError` entries come due.
    var pendingErrors: [ErrorFields] = []
    /// Tracked Parses not answered yet, in the order of their `ExpectedAnswer.parseTracked` entries (Prepared.swift).
    var parsesInFlight: [ParseInFlight] = []
    /// Statements evicted by a Close not answered yet, in the order of their `ExpectedAnswer.closeTracked` entries.
    var closesInFlight: [Int32] = []
    init(trackedCount: Int) { params = ParamValues(count: trackedCount) }

    /// Marks statement `id` used at `tick` (LRU); false when this server does not have it.
    @inline(__always)
    func touchPrepared(_ id: Int32, tick: UInt64) -> Bool { StatementRegistry.touch(&prepared, id, tick: tick) }

    deinit {
        preparedStorage.deinitialize(count: 1)
        preparedStorage.deallocate()
    }
}

struct Server {
    /// Socket, buffers, readiness and TLS (Endpoint.swift), the same for both sides.
    var io = Endpoint(writable: false)
    var state: ServerState = .free
    var pool: Int32 = -1
    var client: Int32 = -1
    /// SHOW SERVERS' `id` (`newConnectionID`), also in log lines (`S-<id>`).
    var id: UInt64 = 0
    /// Its place in its pool's idle list (`.idle`; Pool/RowList.swift).
    var links = RowLinks()
    var createdAt: Int64 = 0
    var stateSince: Int64 = 0
    /// Query and Sync messages forwarded whose ReadyForQuery has not come back yet.
    var pendingSyncs: Int32 = 0
    /// Extended-protocol messages forwarded since the last Sync: the server is not free yet.
    var unsynced = false
    /// The client parsed the unnamed statement and has executed nothing since (no Execute, Query or
    /// FunctionCall): a Parse/Describe/Sync whose Bind/Execute comes in a later batch (pgx's
    /// describe-then-execute). The link is held until then, as PostgreSQL keeps that statement on
    /// this server only (`transactionDone`).
    var unnamedParsed = false
    /// ReadyForQuery answers still owed for queries pgswift sent itself (SET, reset): swallowed.
    var internalQueries: Int32 = 0
    var txStatus: UInt8 = UInt8(ascii: "I")
    /// Something outside a transaction changed session state: reset before another client gets it.
    var dirty = false
    /// Release to the pool once the bytes up to the final ReadyForQuery reached the client; in a
    /// draining worker, also set at any ReadyForQuery so the pair may then move (PairHandoff.swift).
    var releaseOnFlush = false
    /// Transaction/statement mode: CommandComplete tags are watched for session-state changes.
    var watchTags = false
    /// A tag showed session state a later client must not inherit: reset before reuse.
    var needsReset = false
    /// Its client's session statements, transaction or pins are followed (SessionHooks.swift), and
    /// it holds carried settings (`ServerInfo.session` not empty).
    var sessionPending = false
    var sessionCarried = false
    /// Session state keeping its client on it (`SessionPins`): a pinned client is always linked, so
    /// the pin lives here (the client table's records are kept small). Cleared when the client leaves.
    var sessionPins: UInt8 = 0
    /// Its client's unnamed statement or portal carries session ops: Bind and Execute are looked at.
    var sessionExtended = false
    /// In `.resetting` for server_check_query (not a reset): counted in the pool's `checkingCount`.
    var checking = false
    /// When the last ReadyForQuery arrived (idle_transaction_timeout).
    var lastReady: Int64 = 0
    /// Expected answers for what was forwarded on a tracked link (see Prepared.swift); nil until used.
    var tracking = false
    /// Tracked link with max_prepared_statements > 0: named statements are rewritten (Prepared.swift).
    var rewriting = false
    var answers: UnsafeMutablePointer<ExpectedAnswer>? = nil
    var answerHead: Int32 = 0
    var answerCount: Int32 = 0
    /// Tracked link: the server sent CopyInResponse (or CopyBothResponse) and the COPY has not ended;
    /// the Syncs it reads meanwhile get no ReadyForQuery (`Worker.copyEnded`).
    var copyIn = false
    /// Tracked link: an extended-protocol message failed, so the server skips every message up to the
    /// next Sync; the ReadyForQuery for that Sync drops what was forwarded meanwhile.
    var skipping = false
    /// CopyData went to the server since the last CopyDone/CopyFail or other message that starts or
    /// ends a COPY: a Sync sent now is marked `ExpectedAnswer.afterCopyData`.
    var copyDataSent = false
    /// The answers owed can no longer be counted (a COPY failed on its data after a Sync amid it,
    /// `Worker.copyEnded`): never released to the pool; closed when its client leaves.
    var unreliable = false
    /// Fingerprint of the tracked parameter values this server has (0: unknown): equal to the client's
    /// means no SET is needed, without comparing strings.
    var paramsKey: UInt64 = 0
    /// Cancel connections aimed at this server that have not finished yet.
    var cancelsInFlight: Int32 = 0
    /// For a cancel connection: the server it targets (index and generation).
    var cancelTarget: Int32 = -1
    var cancelTargetGen: UInt32 = 0
    var backendPID: Int32 = 0
    var backendKey: UInt32 = 0
    /// Monotonic ns at which the query / transaction now running began (0: none), for the stats.
    var queryStart: Int64 = 0
    var xactStart: Int64 = 0
    var info: ServerInfo? = nil
    /// Login-time TLS step (ServerTLS.swift).
    var tlsPhase = ServerTLSPhase.none
    /// What kind of connection this is, for its whole life: not `.none` for a replication client's own
    /// server (Replication.swift), which is linked to that client from its launch, never pooled and
    /// closed when the client leaves.
    var replication = ReplicationMode.none
    /// A pool's listening connection for its life (ListenRelay.swift): outside the pool's counters.
    var listener = false
    /// listen_mode = pin: its client listens, so the link stays at ReadyForQuery (`linkMode` is session).
    var listenPinned = false
}

/// Records that start out empty in a fresh table slot.
protocol TableRecord {
    init()
    /// False for a record that was released and not allocated again (`Table.indices` skips it).
    var inUse: Bool { get }
}

extension TableRecord {
    var inUse: Bool { true }
}

extension Client: ListedRow {}
extension Server: ListedRow {}
extension Pool: TableRecord {
    init() { self.init(database: "", user: "", entry: DatabaseEntry(name: ""), mode: .session, size: 0) }
}

/// A growable table of records with a free list, behind one pointer: copying the handle is free (no
/// reference counting) and the worker keeps it in a `let`, so no access is exclusivity-checked at run
/// time. Records move when the table grows, so code keeps indexes, never pointers into it.
struct Table<Record: TableRecord> {
    private struct Header {
        var base: UnsafeMutablePointer<Record>
        var capacity: Int
        var freeStack: UnsafeMutablePointer<Int32>
        var freeCount: Int
        var used: Int
        var growthTarget: Int
        /// One past the highest index ever allocated.
        var highWater = 0
    }
    private let header: UnsafeMutablePointer<Header>

    /// `growthTarget`: the size the table is expected to reach at most (clients: max_client_conn).
    /// Records are initialised, so every page of the table is resident: it starts at `capacity` and
    /// doubles, but not past the target until that is full, so that a worker never holding more than
    /// a few hundred clients does not carry (and the janitor does not walk) a table sized for 10,000.
    init(capacity: Int, growthTarget: Int = 0) {
        let cap = max(capacity, 16)
        let base = UnsafeMutablePointer<Record>.allocate(capacity: cap)
        base.initialize(repeating: Record(), count: cap)
        let free = UnsafeMutablePointer<Int32>.allocate(capacity: cap)
        for i in 0..<cap { free[i] = Int32(cap - 1 - i) }
        header = .allocate(capacity: 1)
        header.initialize(to: Header(base: base, capacity: cap, freeStack: free, freeCount: cap, used: 0,
                                     growthTarget: growthTarget))
    }

    var capacity: Int { header.pointee.capacity }
    var used: Int { header.pointee.used }

    @inline(__always)
    subscript(i: Int32) -> Record {
        _read { yield header.pointee.base[Int(i)] }
        nonmutating _modify { yield &header.pointee.base[Int(i)] }
    }

    @inline(__always)
    subscript(i: Int) -> Record {
        _read { yield header.pointee.base[i] }
        nonmutating _modify { yield &header.pointee.base[i] }
    }

    /// Records in use, in index order (pools: a freed pool leaves a hole, reused by a later pool;
    /// its record says `inUse == false` meanwhile).
    var count: Int { header.pointee.used }
    var indices: LazyFilterSequence<Range<Int>> {
        let t = self
        return (0..<header.pointee.highWater).lazy.filter { t[$0].inUse }
    }
    /// One past the highest index ever allocated (arrays indexed by record index need this many).
    var highWater: Int { header.pointee.highWater }

    @discardableResult
    func append(_ r: Record) -> Int32 {
        let i = allocate()
        self[i] = r
        return i
    }

    func allocate() -> Int32 {
        if header.pointee.freeCount == 0 { grow() }
        header.pointee.freeCount -= 1
        header.pointee.used += 1
        let i = header.pointee.freeStack[header.pointee.freeCount]
        if Int(i) >= header.pointee.highWater { header.pointee.highWater = Int(i) + 1 }
        return i
    }

    func release(_ i: Int32) {
        header.pointee.freeStack[header.pointee.freeCount] = i
        header.pointee.freeCount += 1
        header.pointee.used -= 1
    }

    private func grow() {
        let old = header.pointee.capacity
        var newCap = old * 2
        let target = header.pointee.growthTarget
        if old < target && newCap > target { newCap = target }
        let nb = UnsafeMutablePointer<Record>.allocate(capacity: newCap)
        nb.moveInitialize(from: header.pointee.base, count: old)
        (nb + old).initialize(repeating: Record(), count: newCap - old)
        header.pointee.base.deallocate()
        let nf = UnsafeMutablePointer<Int32>.allocate(capacity: newCap)
        nf.update(from: header.pointee.freeStack, count: header.pointee.freeCount)
        header.pointee.freeStack.deallocate()
        var n = header.pointee.freeCount
        for i in stride(from: newCap - 1, through: old, by: -1) {
            nf[n] = Int32(i)
            n += 1
        }
        header.pointee.freeStack = nf
        header.pointee.freeCount = n
        header.pointee.base = nb
        header.pointee.capacity = newCap
    }
}
