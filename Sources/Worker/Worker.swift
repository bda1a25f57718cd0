// The worker: one thread, one epoll loop, owning its clients, servers and pools.
import Shared
import Glibc
import CLinux

/// Names of startup parameters that follow a client from server to server.
struct TrackedParams {
    /// Canonical names as PostgreSQL reports them in ParameterStatus.
    var names: [String]
    /// Lowercased names, for matching startup-packet keys case-insensitively.
    var lowered: [String]

    init(extra: [String]) {
        var n = ["client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name",
                 "search_path", "default_transaction_read_only"]
        for e in extra where !e.isEmpty && !n.contains(where: { $0.lowercased() == e.lowercased() }) {
            n.append(e)
        }
        names = n
        lowered = n.map { $0.lowercased() }
    }

    func index(of name: String) -> Int? {
        let l = name.lowercased()
        return lowered.firstIndex(of: l)
    }
}

/// See `Worker.hot`.
struct HotState {
    var now: Int64 = 0
    var paused = false
    var activeServerCount = 0
    var useTick: UInt64 = 0
    var safeShutdown = false
    var trackPrepared = false
    /// server_round_robin: idle servers are taken oldest first (FIFO) instead of LIFO (Pool.swift).
    var serverRoundRobin = false
    /// server_check_delay in ns: an idle server that waited this long is checked with
    /// server_check_query before a client gets it (`Int64.max`: never, the query is empty).
    var serverCheckDelay: Int64 = .max
    /// server_reset_query_always with a server_reset_query: every release runs the reset, in
    /// transaction and statement mode too (Linking.swift `releaseServer`).
    var resetOnEveryRelease = false
    /// Rolling restart: clients move to the successor when they become idle (Handoff.swift).
    var draining = false
    /// auth_query lookups waiting for a server of their pool (AuthQuery.swift).
    var authQueriesWaiting = 0
    /// Read by every loop turn.
    var running = true
    var nextJanitor: Int64 = 0
    var shutdownMode: ShutdownMode? = nil
    /// query_stats or log_min_duration_statement: statements are followed (QueryStats.swift).
    var queryTracking = false
    /// listen_mode = relay (ListenRelay.swift); clients with a LISTEN in flight; clients whose
    /// notifications wait for the end of a forwarded message.
    var listenRelay = false
    /// listen_mode = relay or pin: LISTEN statements are followed; pin: a listening client's server stays.
    var listenFollow = false
    var listenPin = false
    var listenPending = 0
    var listenDeferred = 0
    /// Some pool routes reads and writes (Routing.swift): transactions' first messages are classified.
    var routing = false
}

struct WorkerOptions {
    var configPath: String
    var slot: Int32
    var tcpFDs: [Int32]
    var unixFDs: [Int32]
    var controlFD: Int32
    var verbose: Int
    /// Started to replace a worker that exited: no pool share until the supervisor gives one.
    var respawned = false
    /// Started by a rolling restart: the predecessor's clients arrive on this socket (Handoff.swift).
    var handoffFD: Int32 = -1
    /// The supervisor's shared client count (ClientCounter), or -1.
    var clientsFD: Int32 = -1
    /// This process's word in the shared client count (-1: its slot).
    var clientsWord: Int = -1
    /// The admin console's SET values the service runs with (`--set key=value`).
    var overrides: [ConfigOverride] = []
    /// The service's peer id (`--peer-id`; 0: peering off), fixed for the process's life.
    var peerID = 0
}

final class Worker {
    let slot: Int32
    /// This host's peer id as the supervisor started the service with it (0: peering off): it shapes
    /// every cancel key (`PeerCancelKey`), so a reload does not change it.
    let peerID: Int
    let configPath: String
    /// `-v` on the command line: debug lines whatever `verbose` says.
    let commandLineVerbose: Bool
    /// The admin console's SET values applied on top of the file; replaced by every reload message.
    var overrides: [ConfigOverride]
    var config: Config
    var userlist: Userlist
    var log: Logger
    let epoll: Epoll
    let clients: Table<Client>
    let servers: Table<Server>
    let pools = Table<Pool>(capacity: 16)
    var poolIndex: [String: Int32] = [:]
    let buffers: BufferPool
    /// Cancel keys, SCRAM nonces and md5 salts (RandomPool.swift).
    let random = RandomPool()
    /// Where pgswift builds the messages it writes itself (rewritten Binds, injected Parses, errors,
    /// SETs), behind a pointer as `hot` is: a stored `var` cost a run-time exclusivity check at each
    /// function that used it, three per transaction on the prepared-statement path.
    let scratchStorage: UnsafeMutablePointer<OutBuffer> = {
        let p = UnsafeMutablePointer<OutBuffer>.allocate(capacity: 1)
        p.initialize(to: OutBuffer(capacity: 4096))
        return p
    }()
    var scratch: OutBuffer {
        unsafeAddress { UnsafePointer(scratchStorage) }
        unsafeMutableAddress { scratchStorage }
    }
    var tracked: TrackedParams
    var listenFDs: [Int32]
    var unixFDs: [Int32]
    /// The supervisor's control socket; -1 without one, or once the supervisor is gone (Handoff.swift).
    var controlFD: Int32
    /// Loop state read on every event, behind a pointer: a computed property over it costs no run-time
    /// exclusivity check, where a stored `var` of this class would cost one per access.
    let hot: UnsafeMutablePointer<HotState> = {
        let p = UnsafeMutablePointer<HotState>.allocate(capacity: 1)
        p.initialize(to: HotState())
        return p
    }()
    /// LISTEN/NOTIFY relay state (ListenRelay.swift).
    let listens = ListenRelayState()
    /// Recent Query/Parse texts found plain (PlainTextCache.swift).
    let plainTexts = PlainTextCache()
    /// Per-pattern statistics and the slow log (QueryStats.swift), behind a pointer as `hot` is.
    let queryStats: UnsafeMutablePointer<QueryStatsState> = {
        let p = UnsafeMutablePointer<QueryStatsState>.allocate(capacity: 1)
        p.initialize(to: QueryStatsState(capacity: 5000))
        return p
    }()
    /// Read/write routing (Routing.swift), behind a pointer as `hot` is.
    let routes: UnsafeMutablePointer<RoutingState> = {
        let p = UnsafeMutablePointer<RoutingState>.allocate(capacity: 1)
        p.initialize(to: RoutingState())
        return p
    }()
    var now: Int64 {
        get { hot.pointee.now }
        set { hot.pointee.now = newValue }
    }
    /// Connection ids when there is no shared counter to take them from (`newConnectionID`).
    var nextLocalID: UInt64 = 0
    var scramCache = ScramKeyCache()
    /// Salts of unknown users' mock SCRAM exchanges and of plain-password users (MockAuthKey.swift).
    let mockAuthKey = MockAuthKey.current()
    lazy var clientSecrets = ClientScramSecrets(saltKey: mockAuthKey, iterations: config.scramIterations)
    var accepting = true
    /// The service is stopping (the supervisor's `shutdown`: SHUTDOWN, SIGTERM, SIGINT), as opposed to
    /// this worker draining for a rolling restart: new logins to a database get PgBouncer's `pooler
    /// is shutting down`, the admin console still logs in (ShutdownDrain.swift).
    var serviceStopping = false
    /// TCP_NODELAY and SO_KEEPALIVE are set on the listeners and inherited (ListenerTuning.swift).
    var listenersTuned = false
    /// Clients accepted over max_client_conn whose startup packet has not come yet (`ClientLoginState
    /// .overLimit`), at most `overLimitLogins` per worker.
    var overLimitClients = 0
    /// Welcome parameters other workers' pools learnt, by "database\0user" (SharedWelcome.swift).
    var sharedWelcomes: [String: [(String, String)]] = [:]
    static let sharedWelcomeCapacity = 10_000
    static let overLimitLogins = 64
    /// What `tuneListeners` last set on the listeners (nil before the first time).
    var listenerKeepalive: TCPKeepalive?
    /// gethostname, read once when application_name_add_host first needs it for a Unix client.
    var hostName: String?
    /// Listeners shared by every worker (`takeTurnOnSharedListener`).
    var sharedListeners: Set<Int32> = []
    var maxPacket: Int
    var statements = StatementRegistry()
    /// TLS contexts for clients and servers (TLS.swift).
    var tlsState = WorkerTLS()
    /// One control datagram at a time (SEQPACKET, at most 64 KiB), read into a buffer kept for the
    /// worker's life instead of a fresh 64 KiB array per control event.
    static let controlBufferSize = 65536
    let controlBuffer = UnsafeMutableRawPointer.allocate(byteCount: Worker.controlBufferSize, alignment: 16)
    var secretCache: [String: PasswordSecret] = [:]
    /// `ignore_startup_parameters`, lowercased.
    var ignoredStartupParameters: Set<String> = []
    /// Stats pushed to the supervisor and admin queries relayed to it (WorkerStats.swift, AdminConsole.swift).
    var stats = WorkerStatsState()
    /// This worker's share of each pool, as the supervisor set it (Quotas.swift).
    var quotas = WorkerQuotas()
    /// Rolling restarts: clients handed to a successor or adopted from a predecessor (Handoff.swift).
    var handoff = WorkerHandoff()
    /// Server connections moved to and from other workers (ServerMove.swift).
    var moves = ServerMoveCounts()
    let initialHandoffFD: Int32
    /// Service-wide connection limits and per-database admin state (ServiceLimits.swift).
    var limits = WorkerLimits()
    /// auth_query lookups in flight, their cache, and the secrets they gave pools (AuthQuery.swift).
    var authQuery = AuthQueryState()
    /// Backend host states and addresses from the supervisor (BackendHealth.swift).
    var health = WorkerHealth()

    init(options: WorkerOptions, config: Config, userlist: Userlist) throws {
        slot = options.slot
        peerID = options.peerID
        configPath = options.configPath
        commandLineVerbose = options.verbose > 0
        overrides = options.overrides
        self.config = config
        self.userlist = userlist
        log = Logger(who: "w\(options.slot)", minimumLevel: options.verbose > 0 || config.verbose > 0 ? .debug : .log)
        if let lf = config.logfile, !lf.isEmpty { _ = log.openLogFile(lf) }
        Syslog.configure(enabled: config.syslog, ident: config.syslogIdent, facility: config.syslogFacility)
        epoll = try Epoll(capacity: 512)
        clients = Table(capacity: 256, growthTarget: min(max(config.maxClientConn + 16, 64), 100_000))
        servers = Table(capacity: 64)
        buffers = BufferPool(size: 32 * 1024)
        tracked = TrackedParams(extra: config.trackExtraParameters)
        listenFDs = options.tcpFDs
        unixFDs = options.unixFDs
        controlFD = options.controlFD
        quotas.workers = max(1, config.workers)
        quotas.respawned = options.respawned
        initialHandoffFD = options.handoffFD
        if options.clientsFD >= 0 { limits.counter = try ClientCounter.map(options.clientsFD) }
        limits.counterWord = options.clientsWord >= 0 ? options.clientsWord : Int(options.slot)
        maxPacket = 0
        do {
            try tlsState.load(config)
        } catch {
            // SET TLS values the running workers could not set up either: they kept their previous
            // contexts; a new process starts with the TLS settings of the file and the other SETs.
            guard config.tlsNotApplied != nil else { throw error }
            try tlsState.load(try Config.load(path: configPath, overrides: overrides.filter { !$0.isTLS }, environment: .process()))
            log.error("TLS settings from SET not applied, using the config file's: \(error)")
        }
        applyHotSettings()
    }

    // MARK: The loop

    func run() throws {
        tuneListeners()
        // Every worker shares the Unix socket and, without so_reuseport, the TCP ones: wake only one of
        // them per connection. A per-slot SO_REUSEPORT socket has one watcher (two during a roll), so
        // the flag costs nothing there.
        for fd in listenFDs + unixFDs {
            try epoll.add(fd, events: [.input, .exclusive], data: WorkerToken(.listener, fd: fd).raw)
        }
        sharedListeners = Set(unixFDs + listenFDs.filter { !Sockets.reusesPort($0) })
        if controlFD >= 0 {
            try epoll.add(controlFD, events: [.input], data: WorkerToken(.control, fd: controlFD).raw)
            if initialHandoffFD >= 0 { try registerHandoffInput(initialHandoffFD) }
            sendControl(.ready(slot: slot, pid: Posix.getpid(), features: WorkerFeatures.all))
        }
        log.info("worker \(slot) ready (pid \(Posix.getpid()), \(listenFDs.count) tcp + \(unixFDs.count) unix listeners)")
        now = Clock.monotonicNanos()
        hot.pointee.nextJanitor = now + 100_000_000
        while hot.pointee.running {
            try turn(timeoutMillis: 100)
        }
        log.info("worker \(slot) exiting")
    }

    /// One turn of the loop: wait for events (at most `timeoutMillis`), handle them, run the janitor
    /// when due. `run` repeats it; unit tests call it themselves to drive the worker step by step.
    /// What it calls for listeners, control, handoff and the janitor is `@inline(never)`: inlined here,
    /// their accesses to this class's stored `var`s (stats, handoff) were hoisted into every turn, two
    /// run-time exclusivity checks per turn that no forwarded byte needed.
    @inline(__always)
    func turn(timeoutMillis: Int32) throws {
        let n = try epoll.wait(timeoutMillis: timeoutMillis)
        now = Clock.monotonicNanos()
        for i in 0..<n {
            let (events, data) = epoll.event(i)
            dispatch(events: events, token: data)
        }
        if now >= hot.pointee.nextJanitor {
            janitor()
            hot.pointee.nextJanitor = now + 100_000_000
            pushStatsIfDue()
            reportPools()
            if hot.pointee.draining { drainTick() }
            if hot.pointee.safeShutdown { shutdownTick() }
            healthTick()
        }
        if hot.pointee.shutdownMode != nil { checkShutdown() }
    }

    @inline(__always)
    func dispatch(events: UInt32, token data: UInt64) {
        let token = WorkerToken(raw: data)
        let index = token.index
        switch token.kind {
        case .client?:
            guard token.matches(generation: clients[index].io.gen), clients[index].state != .free else { return }
            clientEvent(index, events)
        case .server?:
            guard token.matches(generation: servers[index].io.gen), servers[index].state != .free else { return }
            serverEvent(index, events)
        case .listener?:
            acceptClients(index)
        case .control?:
            controlEvent()
        case .handoff?:
            handoffEvent()
        case nil:
            break
        }
    }

    // MARK: Accepting

    /// One connection per readiness event: listeners are level-triggered, so the next epoll_wait
    /// (which the loop makes anyway) reports any still pending, and the accept4 that would only say
    /// EAGAIN — one per connection when they come one at a time — is never made.
    static let acceptsPerEvent = 1

    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func acceptClients(_ listenFD: Int32) {
        guard accepting else { return }
        var peer = SocketAddress()
        for _ in 0..<Worker.acceptsPerEvent {
            let fd: Int32
            do {
                guard let f = try Sockets.accept(listenFD, peer: &peer) else { return }
                fd = f
            } catch {
                if error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesSystem {
                    log.error("accept: \(error); refusing new clients until descriptors free up")
                } else {
                    log.error("accept: \(error)")
                }
                return
            }
            adoptAcceptedClient(fd, peer: peer)
            if sharedListeners.contains(listenFD) { takeTurnOnSharedListener(listenFD) }
        }
    }

    /// A listener every worker shares (the Unix socket; TCP without so_reuseport) wakes the first
    /// worker in its wait queue that sits in epoll_wait (EPOLLEXCLUSIVE), so when the service is quiet
    /// one worker would get every connection, and long sessions opened then would all stay on it. A
    /// worker holding more than its share of the service's clients (`takesTurn`) re-registers the
    /// listener, which puts it at the back of the queue: connections go round the workers. Two
    /// epoll_ctl calls per such accept, none per message.
    func takeTurnOnSharedListener(_ fd: Int32) {
        guard let counter = limits.counter, quotas.workers > 1 else { return }
        guard Worker.takesTurn(held: counter.held(bySlot: limits.counterWord), total: counter.total,
                               workers: quotas.workers) else { return }
        epoll.remove(fd)
        do {
            try epoll.add(fd, events: [.input, .exclusive], data: WorkerToken(.listener, fd: fd).raw)
        } catch {
            log.error("could not re-register a listening socket (\(error)); this worker no longer accepts on it")
        }
    }

    /// Whether a worker holding `held` of the service's `total` clients (the one just accepted
    /// included) goes to the back of a shared listener's queue: when it holds more than its share
    /// rounded up. Clients that come one at a time, each gone before the next, thus stay with one
    /// worker, whose idle servers serve them all as one PgBouncer process's would (with the share
    /// rounded down, every such client went to the other worker, which had to open its own server);
    /// clients that stay are spread over the workers, a worker at most two above another.
    static func takesTurn(held: Int, total: Int, workers: Int) -> Bool {
        workers > 1 && held > (total + workers - 1) / workers
    }

    /// Takes a freshly accepted, non-blocking client socket: counts it against max_client_conn,
    /// gives it a table slot, registers it and reads its startup packet. Returns the slot, or nil
    /// when the client was refused (the socket is closed then).
    @discardableResult
    func adoptAcceptedClient(_ fd: Int32, peer: SocketAddress) -> Int32? {
        let isUnix = peer.family == AF_UNIX
        if !isUnix && !listenersTuned { Sockets.tuneTCP(fd, keepalive: config.tcpKeepaliveSettings) }
        // Over max_client_conn, PgBouncer still reads the startup packet: the refusal comes after the
        // TLS exchange (a client that asked for TLS can read it) and the admin console gets in. At
        // most `overLimitClients` such logins wait at once; beyond that, refused at once (memory).
        let admitted = admitClient()
        if !admitted && overLimitClients >= Worker.overLimitLogins {
            rejectEarly(fd, code: SQLState.tooManyConnections,
                        message: "no more connections allowed (max_client_conn)")
            return nil
        }
        let info = ClientInfo(trackedCount: tracked.names.count)
        info.peer = isUnix ? "unix" : peer.description
        info.login = ClientLoginState()
        info.login?.overLimit = !admitted
        guard let ci = newClient(fd, isUnix: isUnix, connectedAt: now, cancelKey: newCancelSecret(), info: info,
                                 state: .startup) else { return nil }
        if !admitted { overLimitClients += 1 }
        clientLoginInput(ci)
        return ci
    }

    /// Refuses a connection before it has a table slot: one best-effort write, then close.
    func rejectEarly(_ fd: Int32, code: String, message: String) {
        scratch.clear()
        Backend.errorResponse(into: &scratch, ErrorFields(severity: "FATAL", code: code, message: message))
        scratch.withUnsafeBytes { _ = try? Posix.send(fd, $0.baseAddress!, $0.count) }
        Posix.close(fd)
        log.warning("refused a client: \(message)")
    }

    // MARK: Control channel

    func sendControl(_ m: ControlMessage) {
        sendControlBytes(m.encode())
    }

    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func controlEvent() {
        guard controlFD >= 0 else { return }  // the supervisor is gone (supervisorLost)
        if !stats.outbox.isEmpty { drainControl() }
        let buf = controlBuffer
        while true {
            // recvmsg, not read: a `drain` or `adoptServer` carries a socket (SCM_RIGHTS), which read() would drop.
            let (r, fds) = receiveControl(buf)
            switch r {
            case .success(-1):
                return
            case .success(0), .failure:
                // The supervisor died (a clean stop always sends `shutdown` first): drain on our own.
                supervisorLost()
                return
            case .success(let n):
                let msg = try? ControlMessage.decode(UnsafeRawBufferPointer(start: buf, count: n))
                guard let msg else {
                    for fd in fds { Posix.close(fd) }
                    log.warning("invalid control message ignored")
                    continue
                }
                if case .drain(let withSocket, let successorFeatures) = msg {
                    for fd in fds.dropFirst(withSocket ? 1 : 0) { Posix.close(fd) }
                    beginDrain(handoffFD: withSocket ? fds.first : nil, successorFeatures: successorFeatures)
                    continue
                }
                if case .adoptServer(let state) = msg {
                    for fd in fds.dropFirst() { Posix.close(fd) }
                    adoptServer(state, fd: fds.first ?? -1)
                    continue
                }
                for fd in fds { Posix.close(fd) }
                handleControl(msg)
            }
        }
    }

    func handleControl(_ m: ControlMessage) {
        switch m {
        case .shutdown(let mode):
            beginServiceShutdown(mode)
        case .reload(let overrides):
            self.overrides = overrides
            reload()
        case .pause:
            hot.pointee.paused = true
            log.info("paused")
        case .resume:
            if hot.pointee.paused {
                hot.pointee.paused = false
                log.info("resumed")
                for p in pools.indices { serveWaiting(Int32(p)) }
            }
        case .cancel(let pid, let key):
            cancelLocal(processID: pid, secretKey: key)
        case .statsToWorker(let chunk):
            handleStatsChunk(chunk)
        case .quota(let database, let user, let quota, let seq, let moveTo):
            applyQuota(database: database, user: user, quota: Int(quota), seq: seq, moveTo: Int(moveTo))
        case .limitsToWorker(let m):
            handleLimits(m)
        case .backendState(let host, let port, let flags, let addresses):
            applyBackendState(host: host, port: Int(port), flags: flags, addresses: addresses)
        case .standbyReplay(let host, let port, let lsn):
            standbyReplayed(key: "\(host):\(port)", lsn: lsn)  // Routing.swift
        case .welcomeToWorker(let database, let user, let parameters):
            sharedWelcomeArrived(database: database, user: user, parameters: parameters)
        case .loginRefusedToWorker(let database, let user, let code, let message):
            loginRefusedElsewhere(database: database, user: user, code: code, message: message)
        default:
            break
        }
    }

    func reload() {
        do {
            let newConfig = try Config.load(path: configPath, overrides: overrides, environment: .process())
            var newUsers = Userlist(entries: [:])
            if let af = newConfig.authFile, !af.isEmpty {
                newUsers = try Userlist.load(path: af)
            }
            config = newConfig
            userlist = newUsers
            // Reopened on every reload, as the supervisor does: log rotation needs only a SIGHUP.
            if !log.useLogFile(config.logfile) { log.error("cannot open logfile \(config.logfile ?? ""): \(Errno.current)") }
            Syslog.configure(enabled: config.syslog, ident: config.syslogIdent, facility: config.syslogFacility)
            // `verbose` by RELOAD or SET reaches the workers too, as the supervisor's own log.
            log.minimumLevel = commandLineVerbose || config.verbose > 0 ? .debug : .log
            clientSecrets = ClientScramSecrets(saltKey: mockAuthKey, iterations: config.scramIterations)
            secretCache.removeAll()
            authQuery.cache.removeAll()
            refreshPools()
            applyHotSettings()
            tuneListeners()
            reloadTLS()
            log.info("configuration reloaded")
        } catch {
            log.error("reload failed, keeping the old configuration: \(error)")
        }
    }

    // MARK: Shutdown

    /// Stops accepting and exits when `mode` allows. `keepUnixSocket`: a graceful or safe stop of the
    /// service keeps accepting on the Unix socket, as PgBouncer does, so that the admin console stays
    /// reachable during the drain (ShutdownDrain.swift); a rolling restart's drain, a lost supervisor and
    /// an immediate stop close every listener.
    func beginShutdown(_ mode: ShutdownMode, keepUnixSocket: Bool = false) {
        if hot.pointee.shutdownMode == nil || mode.rawValue > hot.pointee.shutdownMode!.rawValue {
            hot.pointee.shutdownMode = mode
        }
        hot.pointee.safeShutdown = hot.pointee.shutdownMode == .safe
        let closeUnix = !keepUnixSocket || hot.pointee.shutdownMode == .immediate
        for fd in listenFDs + (closeUnix ? unixFDs : []) {
            epoll.remove(fd)
            Posix.close(fd)
            sharedListeners.remove(fd)
        }
        listenFDs = []
        if closeUnix { unixFDs = [] }
        accepting = !unixFDs.isEmpty
        log.info("shutdown requested (\(mode)); " + (accepting ? "accepting on the Unix socket only" : "no longer accepting"))
        checkShutdown()
    }

    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func checkShutdown() {
        guard let mode = hot.pointee.shutdownMode else { return }
        switch mode {
        case .immediate:
            hot.pointee.running = false
        case .safe:
            // Exit when no server is linked to a client: in-flight transactions finish first. While the
            // supervisor is there it decides, for the whole service (Supervisor/Service/ServiceStop.swift):
            // a worker with nothing in use waits for the others, as PgBouncer, one process, would.
            if hot.pointee.activeServerCount == 0 && (controlFD < 0 || hot.pointee.draining) { hot.pointee.running = false }
        case .graceful:
            if clients.used == 0 { hot.pointee.running = false }
        }
        if !hot.pointee.running {
            let (reason, code) = exitNotice()
            var i: Int32 = 0
            while i < Int32(clients.capacity) {
                if clients[i].state != .free { closeClient(i, reason: reason, notify: true, code: code) }
                i += 1
            }
            i = 0
            while i < Int32(servers.capacity) {
                if servers[i].state != .free { closeServer(i, reason: "shutdown") }
                i += 1
            }
        }
    }

    // MARK: Helpers

    /// Copies the settings the data path reads into `hot`.
    func applyHotSettings() {
        ignoredStartupParameters = Set(config.ignoreStartupParameters.map { $0.lowercased() })
        hot.pointee.trackPrepared = config.maxPreparedStatements > 0
        // PostgreSQL's own cap for a single message is 1 GB; a larger limit only invites an OOM.
        maxPacket = min(max(config.maxPacketSize, 1024), 0x3FFF_FFFF)
        hot.pointee.serverRoundRobin = config.serverRoundRobin
        hot.pointee.serverCheckDelay = config.serverCheckQueryToSend == nil ? .max : Clock.nanos(seconds: config.serverCheckDelay)
        hot.pointee.resetOnEveryRelease = config.serverResetQueryAlways && !config.serverResetQuery.isEmpty
        applyQueryStatsSettings()
        applyListenSettings()
    }

    func randomUInt32() -> UInt32 {
        random.uint32()
    }

    /// A new client's cancel secret: random; with peering, with PgBouncer's TTL bits set (PeerCancelKey).
    func newCancelSecret() -> UInt32 {
        peerID > 0 ? PeerCancelKey.secret(random: random.uint32()) : random.uint32()
    }
}
