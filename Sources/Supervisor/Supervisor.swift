// The supervisor's event loop: spawns, reaps and respawns workers and turns signals into control messages.
import Glibc
import Shared

enum SupervisorMain {
    /// Runs `pgswift` with the arguments after the program name; returns the exit status.
    static func run(_ args: [String]) -> Int32 {
        let command: SupervisorCommand
        do throws(UsageError) {
            command = try Arguments.parse(args)
        } catch {
            writeStderr("pgswift: \(error)\n" + Arguments.shortUsage)
            return 1
        }
        switch command {
        case .help:
            print(Arguments.usage, terminator: "")
            return 0
        case .version:
            print("pgswift \(PgswiftVersion.string)")
            return 0
        case .checkConfig(let options):
            return checkConfig(options.configPath, quiet: options.quiet)
        case .run(let options):
            MockAuthKey.ensureInEnvironment()  // workers and upgrades inherit it (Shared/Auth/MockAuthKey.swift)
            return Supervisor.start(options)
        case .upgrade(let options):
            return UpgradeCLI.run(configPath: options.configPath)
        case .top(let options):
            return TopCLI.run(options)
        }
    }

    /// `--check-config`: warnings and errors as FILE:LINE: reason on stderr, verdict in the exit status.
    /// Unless `quiet`, the effective values of every setting that is not at its default, with where each
    /// comes from, and the databases go to stdout first (`CheckConfigReport`).
    static func checkConfig(_ path: String, quiet: Bool = false) -> Int32 {
        guard let config = loadConfig(path, report: { writeStderr("\($0)\n") }) else { return 1 }
        for w in config.warnings { writeStderr("\(w.location): warning: \(w.message)\n") }
        if !quiet { print(CheckConfigReport.render(config), terminator: "") }
        print("configuration OK")
        return 0
    }

    /// Loads the config file for a command, with this process's environment (`${NAME}` in its lines,
    /// `PGSWIFT_<KEY>` settings), or hands the error to `report` and returns nil.
    static func loadConfig(_ path: String, report: (ConfigError) -> Void) -> Config? {
        do throws(ConfigError) {
            return try Config.load(path: path, environment: .process())
        } catch {
            report(error)
            return nil
        }
    }

    static func writeStderr(_ text: String) {
        var t = text
        t.withUTF8 { _ = Posix.writeAll(2, UnsafeRawBufferPointer($0)) }
    }
}

final class Supervisor {
    /// How long workers get to exit after `shutdown(.immediate)` before SIGKILL.
    static let immediateGraceNanos: Int64 = 5_000_000_000

    let options: SupervisorOptions
    /// Absolute, so workers find it whatever their working directory.
    let configPath: String
    let workerBinary: String
    var config: Config
    /// The socket/process settings the service started with; a reload cannot change them.
    let running: RestartSettings
    var log: Logger
    let epoll: Epoll
    let signals: SignalFD
    var listeners: Listeners
    /// Each slot's current process (a rolling restart swaps in the new one: Upgrade.swift).
    var slots: [WorkerSlot]
    let systemd: Systemd
    /// Set once a shutdown began: the strongest mode asked for so far.
    var stopping: ShutdownMode?
    var killDeadline: Int64?
    var paused = false
    var announcedReady = false
    var nextWatchdog: Int64 = 0
    /// Worker stats, admin commands in progress, the metrics listener (SupervisorStats.swift).
    var statsState: SupervisorStatsState
    /// Why the last reload failed (the admin RELOAD answer says it).
    var reloadError: AdminError?
    /// The admin console's SET values since the last RELOAD, applied on top of the file by every
    /// worker (passed to new ones as `--set`); a RELOAD or SIGHUP clears them.
    var setOverrides: [ConfigOverride] = []
    /// Each worker's share of every pool (PoolQuotas.swift).
    var quotas: PoolQuotas
    /// Server connections relayed from one worker to another for a quota move, and those that could
    /// not be delivered (closed) (`relayServer`, ServiceLimits.swift).
    var serverMoves = (relayed: 0, lost: 0)
    /// The welcome parameters each pool's first server sent, as the workers report them, passed on to
    /// the other workers (Workers/SharedWelcomes.swift).
    var welcomes = SharedWelcomes()
    /// Rolling restart in progress and replaced workers still draining (Upgrade.swift).
    var upgrade = UpgradeState()
    var systemdState = SystemdState()
    /// Our own binary's path as it was at start: UPGRADE re-executes whatever is at that path now.
    var supervisorExecutable = "/usr/bin/pgswift"
    /// Connection-limit shares, the shared client count, per-database admin state (ServiceLimits.swift).
    var limits: SupervisorLimits
    /// Backend health checks and host-name lookups (HealthCheck.swift).
    var healthState = HealthCheckState()
    /// Cancel requests being forwarded to peers (Peers/PeerForwarding.swift).
    var peerState = PeerForwardState()

    init(options: SupervisorOptions, configPath: String, workerBinary: String, config: Config, log: Logger,
         epoll: consuming Epoll, signals: consuming SignalFD, listeners: Listeners) {
        self.options = options
        self.configPath = configPath
        self.workerBinary = workerBinary
        self.config = config
        self.running = RestartSettings(config)
        self.log = log
        self.epoll = epoll
        self.signals = signals
        self.listeners = listeners
        self.slots = (0..<max(1, config.workers)).map { WorkerSlot(index: $0) }
        self.quotas = PoolQuotas(workers: max(1, config.workers))
        self.limits = SupervisorLimits(workers: max(1, config.workers))
        self.systemd = Systemd()
        self.statsState = SupervisorStatsState(now: Clock.monotonicNanos(), statsPeriod: config.statsPeriod)
    }

    // MARK: Start-up

    /// Everything up to the event loop. Any failure here is FATAL with exit status 1, and nothing is left running.
    static func start(_ options: SupervisorOptions) -> Int32 {
        var log = Logger(who: "supervisor", minimumLevel: options.verbosity > 0 ? .debug : .log)
        let configPath = WorkerLaunch.absolutePath(options.configPath, currentDirectory: Files.currentDirectory() ?? "/")
        guard var config = SupervisorMain.loadConfig(configPath, report: { log.fatal("\($0)") }) else { return 1 }
        log.minimumLevel = options.verbosity + config.verbose > 0 ? .debug : .log
        if let path = config.logfile, !path.isEmpty, !log.openLogFile(path) {
            log.fatal("cannot open logfile \(path): \(Errno.current)")
            return 1
        }
        Syslog.configure(enabled: config.syslog, ident: config.syslogIdent, facility: config.syslogFacility)
        // Set when a previous image of this process re-executed us for UPGRADE (Reexec.swift).
        let reexec = takeReexecState(log: log)
        if let reexec, reexec.tcp.count != config.workers {
            // The listening sockets exist per slot: the slot count is one of the restart-only settings.
            log.warning("changed workers: takes effect only after a restart (keeping \(reexec.tcp.count))")
            config.workers = reexec.tcp.count
        }
        if let reexec, reexec.peerID != config.peerID {
            // Every cancel key the running workers handed out carries it.
            log.warning("changed peer_id: takes effect only after a restart (keeping \(reexec.peerID))")
            config.peerID = reexec.peerID
        }
        let executable = (Posix.executablePath() ?? CommandLine.arguments[0])
        let fileLimit = Posix.raiseOpenFilesLimit()
        log.info("pgswift \(PgswiftVersion.string) starting: config \(configPath), \(config.workers) workers, open files limit \(fileLimit)")
        for w in config.warnings { log.warning("\(w)") }
        logEnvironmentSettings(config, log: log)
        guard config.workers >= 1 else {
            log.fatal("workers must be at least 1")
            return 1
        }

        // Block the signals before anything else exists: one sent during start-up waits in the signalfd.
        let signals: SignalFD
        do throws(SyscallError) {
            signals = try SignalFD(signals: SignalPolicy.handled)
        } catch {
            log.fatal("cannot set up signal handling: \(error)")
            return 1
        }
        Signals.ignoreSIGPIPE()

        let workerBinary = WorkerLaunch.locateBinary(configured: config.workerBinary,
                                                     executablePath: Posix.executablePath(),
                                                     isExecutable: Posix.isExecutable)
        guard Posix.isExecutable(workerBinary) else {
            log.fatal("worker binary \(workerBinary) is missing or not executable (set worker_binary in [pgswift])")
            return 1
        }

        // A pidfile naming a dead process: the previous supervisor crashed, and its workers may still
        // be draining their clients (Handoff.swift, supervisorLost); we start beside them.
        var predecessorCrashed = false
        if reexec == nil, let path = config.pidfile, !path.isEmpty {
            if let pid = PidFile.livePID(at: path) {
                log.fatal("pidfile \(path) names a running process (pid \(pid)): is pgswift already running?")
                return 1
            }
            if let pid = PidFile.recordedPID(at: path) {
                log.warning("pidfile \(path) names pid \(pid), which is gone: starting beside whatever workers it left draining")
                predecessorCrashed = true
            }
            do throws(SyscallError) {
                try PidFile.write(path)
            } catch {
                log.fatal("cannot write pidfile: \(error)")
                return 1
            }
        }
        func abandon() -> Int32 {
            if let path = config.pidfile, !path.isEmpty { PidFile.remove(path) }
            return 1
        }

        let warnLog = log
        var listeners: Listeners
        if let reexec {
            listeners = adoptListeners(reexec, config: config)
        } else { do throws(StartupError) {
            listeners = try Listeners.open(listenAddr: config.listenAddr, port: config.listenPort,
                                           unixSocketDir: config.unixSocketDir, unixSocketMode: config.unixSocketMode,
                                           unixSocketGroup: config.unixSocketGroup, reusePort: config.soReuseport,
                                           backlog: config.listenBacklog, slots: config.workers,
                                           predecessorCrashed: predecessorCrashed, warn: { warnLog.warning($0) })
        } catch {
            log.fatal("\(error)")
            return abandon()
        } }
        guard listeners.isOpen else {
            log.fatal("nothing to listen on: set listen_addr and/or unix_socket_dir")
            return abandon()
        }
        var places = listeners.addresses.map { $0.description }
        if let path = listeners.unixPath { places.append("unix:\(path)") }
        log.info("listening on \(places.joined(separator: ", "))")

        let epoll: Epoll
        do throws(SyscallError) {
            epoll = try Epoll(capacity: 64)
        } catch {
            log.fatal("\(error)")
            if let path = listeners.unixPath { Files.remove(path) }
            return abandon()
        }
        do throws(SyscallError) {
            try epoll.add(signals.fd, events: .input, data: SupervisorToken.signal.raw)
        } catch {
            log.fatal("\(error)")
            if let path = listeners.unixPath { Files.remove(path) }
            return abandon()
        }
        // Only now: a start-up failure still reaches the terminal (or the journal) with -q.
        if options.quiet { Files.redirectToDevNull(2) }  // workers inherit fd 2, so they are quiet too
        let supervisor = Supervisor(options: options, configPath: configPath, workerBinary: workerBinary,
                                    config: config, log: log, epoll: epoll, signals: signals, listeners: listeners)
        supervisor.supervisorExecutable = executable.hasSuffix(" (deleted)") ? String(executable.dropLast(10)) : executable
        if let reexec { supervisor.adopt(reexec) }
        return supervisor.run()
    }

    // MARK: The loop

    func run() -> Int32 {
        let now = Clock.monotonicNanos()
        setUpClientCounter()
        warmForcedUserPools()  // recorded here, sent to each worker as it starts (limitsWorkerStarted)
        for slot in slots where slot.pid == 0 { spawn(slot, now: now) }
        openMetrics()
        resumeUpgradeAfterReexec()
        startHealthChecks(now: now)
        if systemd.watchdogIntervalNanos > 0 { nextWatchdog = now }
        var status: Int32 = 0
        while !(stopping != nil && slots.allSatisfy({ $0.pid == 0 }) && upgrade.isIdle) {
            let n: Int
            do throws(SyscallError) {
                n = try epoll.wait(timeoutMillis: timeoutMillis(now: Clock.monotonicNanos()))
            } catch {
                // Cannot happen short of a bug; workers see their control socket close and drain.
                log.fatal("\(error)")
                status = 1
                break
            }
            for i in 0..<n {
                let token = SupervisorToken(raw: epoll.event(i).data)
                switch token.owner {
                case .signal: handleSignals()
                case .metrics: handleMetrics(token)
                case .health: handleHealthEvent(token)
                case .channel: handleChannel(token)
                case .peers: handlePeerEvents()
                }
            }
            runTimers(now: Clock.monotonicNanos())
            runStatsTimers(now: Clock.monotonicNanos())
            updateSystemdStatus(now: Clock.monotonicNanos())
            runLimitsTimers(now: Clock.monotonicNanos())
            runHealthTimers(now: Clock.monotonicNanos())
            updateChannelInterest()
        }
        statsState.metrics?.shutdown(epoll: epoll)
        listeners.close()
        if let path = listeners.unixPath { Files.remove(path) }
        if let path = running.pidfile, !path.isEmpty { PidFile.remove(path) }
        log.info(status == 0 ? "all workers stopped: exiting" : "exiting after a fatal error")
        return status
    }

    /// Until the nearest timer (respawn, kill deadline, watchdog), or forever when none is armed.
    func timeoutMillis(now: Int64) -> Int32 {
        var next: Int64 = .max
        if stopping == nil {
            for slot in slots { if let t = slot.respawnAt { next = min(next, t) } }
        }
        if let t = killDeadline { next = min(next, t) }
        if systemd.watchdogIntervalNanos > 0 { next = min(next, nextWatchdog) }
        next = min(next, statsTimeout(now: now))
        next = min(next, upgradeNextDeadline())
        next = min(next, limitsTimeout(now: now))
        next = min(next, healthTimeout(now: now))
        if next == .max { return -1 }
        let wait = next - now
        if wait <= 0 { return 0 }
        return Int32(clamping: (wait + 999_999) / 1_000_000)
    }

    func runTimers(now: Int64) {
        if stopping == nil {
            for slot in slots {
                if let t = slot.respawnAt, t <= now {
                    slot.respawnAt = nil
                    spawn(slot, now: now)
                }
            }
        }
        if let deadline = killDeadline, now >= deadline {
            killDeadline = nil
            for slot in slots where slot.pid != 0 {
                log.warning("worker \(slot.index) (pid \(slot.pid)) did not exit within 5 s: killing it")
                try? Posix.kill(slot.pid, SIGKILL)
            }
        }
        if systemd.watchdogIntervalNanos > 0 && now >= nextWatchdog {
            // Only while every worker runs and reports (SystemdStatus.swift): else systemd's watchdog fires.
            if workersHealthy || stopping != nil { systemd.watchdog() }
            nextWatchdog = now + systemd.watchdogIntervalNanos
        }
        runUpgradeTimers(now: now)
    }

    // MARK: Workers

    func spawn(_ slot: WorkerSlot, now: Int64) {
        guard stopping == nil, listeners.isOpen else { return }
        let pair: (Int32, Int32)
        do throws(SyscallError) {
            pair = try Posix.socketPair()
        } catch {
            log.error("cannot start worker \(slot.index): \(error)")
            scheduleRespawn(slot, ranForNanos: 0, now: now)
            return
        }
        let (mine, theirs) = pair
        let arguments = WorkerLaunch.arguments(configPath: configPath, slot: slot.index,
                                               tcpCount: listeners.addresses.count, hasUnix: listeners.unix >= 0,
                                               verbosity: options.verbosity, respawned: slot.generation > 0,
                                               clientsFD: limits.counter != nil, clientsWord: slot.counterWord,
                                               overrides: setOverrides, peerID: running.peerID)
        let pid: Int32
        do throws(SyscallError) {
            pid = try Posix.spawn(path: workerBinary, arguments: arguments, environment: Posix.environment(),
                                  fds: listeners.fds(forSlot: slot.index) + [theirs] + (limits.counter.map { [$0.fd] } ?? []))
        } catch {
            Posix.close(mine)
            Posix.close(theirs)
            log.error("cannot start worker \(slot.index): \(error)")
            scheduleRespawn(slot, ranForNanos: 0, now: now)
            return
        }
        Posix.close(theirs)
        if slot.generation > 0 { slot.restarts += 1 }
        slot.outbox.discard()
        slot.latest = nil
        slot.lastReportAt = 0
        slot.reportedSilent = false
        statsState.reassembler.discard(slot: Int32(slot.index))
        slot.generation &+= 1
        slot.pid = pid
        slot.startedAt = now
        slot.ready = false
        slot.respawnAt = nil
        slot.channel = ControlChannel(fd: mine)
        do throws(SyscallError) {
            try epoll.add(mine, events: .input, data: slot.epollData.raw)
        } catch {
            log.error("worker \(slot.index): cannot watch its control channel: \(error)")
        }
        log.info("worker \(slot.index) started (pid \(pid))")
        if paused { slot.send(.pause) }
        sendQuotas(quotas.workerStarted(slot: slot.index))
        limitsWorkerStarted(slot)
        sendHealth(to: slot)
    }

    func scheduleRespawn(_ slot: WorkerSlot, ranForNanos: Int64, now: Int64) {
        let delay = slot.backoff.delayAfterExit(ranForNanos: ranForNanos)
        // Even "at once" goes through the timer: it runs at the end of this loop iteration.
        slot.respawnAt = now + delay
        if delay > 0 {
            log.info("restarting worker \(slot.index) in \(delay / 1_000_000) ms (\(slot.backoff.quickFailures) failures in a row)")
        }
    }

    func closeChannel(_ slot: WorkerSlot) {
        if let fd = slot.channel?.fd { epoll.remove(fd) }
        slot.channel = nil
    }

    func reapChildren() {
        while let (pid, status) = Posix.reapChild() {
            if upgradeReaped(pid: pid, status: status) { continue }
            guard let slot = slots.first(where: { $0.pid == pid }) else {
                log.debug("reaped process \(pid) (\(status))")
                continue
            }
            let now = Clock.monotonicNanos()
            closeChannel(slot)
            slot.pid = 0
            slot.ready = false
            slot.latest = nil
            forgetInCollections(slot.index)
            slot.clients = 0
            slot.servers = 0
            sendQuotas(quotas.workerGone(slot: slot.index, now: now))
            limitsWorkerGone(slot.index, counterWord: slot.counterWord)
            if stopping != nil {
                log.info("worker \(slot.index) (pid \(pid)) \(status)")
                continue
            }
            log.log(status == .exited(0) ? .warning : .error, "worker \(slot.index) (pid \(pid)) \(status)")
            scheduleRespawn(slot, ranForNanos: now - slot.startedAt, now: now)
        }
    }

    func handleChannel(_ token: SupervisorToken) {
        // A slot's worker, or a new / replaced one during a rolling restart (Upgrade.swift).
        guard let slot = channelOwner(token) else { return }
        let index = slot.index
        drainChannel(slot)
        // Bounded, so one chatty worker cannot starve the others (the fd stays readable: level-triggered).
        for _ in 0..<64 {
            guard let received = slot.channel?.receive() else { return }
            switch received {
            case .wouldBlock:
                return
            case .closed:
                if stopping == nil { log.debug("worker \(index) (pid \(slot.pid)) closed its control channel") }
                closeChannel(slot)
                return
            case .invalid(let reason):
                log.warning("worker \(index) (pid \(slot.pid)): \(reason)")
            case .message(let message):
                handle(message, from: slot)
            }
        }
    }

    func handle(_ message: ControlMessage, from slot: WorkerSlot) {
        if case .ready(_, _, let features) = message { slot.features = features }
        if case .moveServer(let target, let state) = message {
            relayServer(from: slot, to: Int(target), state: state)
            return
        }
        if upgradeIntercepts(message, from: slot) { return }
        switch message {
        case .ready(let reportedSlot, let pid, _):
            if Int(reportedSlot) != slot.index || pid != slot.pid {
                log.warning("worker \(slot.index) (pid \(slot.pid)) reported itself as slot \(reportedSlot), pid \(pid)")
            }
            slot.ready = true
            log.info("worker \(slot.index) ready (pid \(slot.pid))")
            sendWelcomes(to: slot)
            announceReadyIfAll()
        case .forwardCancel(let target, let processID, let secretKey):
            let t = Int(target)
            guard t >= 0 && t < slots.count else {
                log.debug("cancel request for unknown worker slot \(target) dropped")
                return
            }
            if !slots[t].send(.cancel(processID: processID, secretKey: secretKey)) {
                log.debug("cancel request for worker \(t) dropped: worker not reachable")
            }
            forwardCancelToRetired(slot: t, processID: processID, secretKey: secretKey)
        case .peerCancel(let peer, let processID, let secretKey):
            forwardToPeer(Int(peer), PeerCancel(processID: processID, secretKey: secretKey))
        case .heartbeat(let clients, let servers):
            slot.clients = clients
            slot.servers = servers
        case .log(let text):
            log.info("worker \(slot.index): \(text)")
        case .statsFromWorker(let chunk):
            handleStatsChunk(chunk, from: slot)
        case .poolReport(let database, let user, let servers, let idle, let waiting, let seq, let overdue):
            let key = PoolQuotaKey(database: database, user: user)
            let orders = quotas.report(slot: slot.index, key: key, size: poolSize(key), reserve: reservePoolSize(key),
                                       servers: Int(servers), idle: Int(idle), waiting: Int(waiting),
                                       overdue: Int(overdue), seq: seq, now: Clock.monotonicNanos())
            if orders.contains(where: { $0.quota < 0 }) { log.debug("pool \(database)/\(user) forgotten: no worker holds it") }
            sendQuotas(orders)
            updateWarmShares(key)
        case .limitsFromWorker(let m):
            handleLimitsReport(m, from: slot)
        case .backendFailed(let host, let port, let reason):
            healthBackendFailed(host: host, port: Int(port), reason: reason)
        case .welcomeFromWorker(let database, let user, let parameters):
            welcomeLearnt(database: database, user: user, parameters: parameters, from: slot)
        case .loginRefusedFromWorker(let database, let user, let code, let text):
            relay(.loginRefusedToWorker(database: database, user: user, code: code, message: text),
                  from: slot, toWorkersWith: WorkerFeatures.sharedLoginFailures)
        case .moveServer:
            break  // relayed above
        case .shutdown, .reload, .pause, .resume, .cancel, .statsToWorker, .quota, .backendState, .standbyReplay, .drain,
             .limitsToWorker,
             .adoptServer, .welcomeToWorker, .loginRefusedToWorker:
            log.warning("worker \(slot.index) sent a supervisor-only message: \(message)")
        }
    }

    func announceReadyIfAll() {
        guard !announcedReady, stopping == nil, slots.allSatisfy({ $0.ready }) else { return }
        announcedReady = true
        log.info("all \(slots.count) workers ready")
        systemd.ready(status: "\(slots.count) workers accepting connections")
    }

    /// Passes what one worker reported to every other running worker that announced `feature` (best
    /// effort: a worker that does not take it acts on its own knowledge, as before the feature).
    func relay(_ message: ControlMessage, from source: WorkerSlot, toWorkersWith feature: UInt32) {
        for slot in slots where slot !== source && slot.pid != 0 && slot.features & feature != 0 {
            _ = slot.send(message)
        }
    }

    func broadcast(_ message: ControlMessage) {
        for slot in slots where slot.pid != 0 {
            if !slot.send(message) {
                log.warning("worker \(slot.index) (pid \(slot.pid)) did not take \(message)")
            }
        }
    }

    // MARK: Signals

    func handleSignals() {
        while let signal = signals.next() {
            let name = Signals.name(signal)
            switch SignalPolicy.action(for: signal, stopping: stopping) {
            case .reapChildren:
                reapChildren()
            case .shutdown(let mode):
                beginShutdown(mode, because: name)
            case .reload:
                reload(because: name)
            case .pause:
                paused = true
                log.info("\(name): pausing all workers")
                broadcast(.pause)
            case .resume:
                paused = false
                log.info("\(name): resuming all workers")
                broadcast(.resume)
            case .ignore:
                // PgBouncer's words for it.
                log.info(stopping != nil ? "got \(name) while shutting down, ignoring" : "\(name) ignored")
            }
        }
    }

    func beginShutdown(_ mode: ShutdownMode, because signal: String) {
        if stopping == .immediate {
            log.info("\(signal): already shutting down immediately")
            return
        }
        let first = stopping == nil
        stopping = mode
        switch mode {
        case .graceful: log.info("\(signal): shutting down: no new connections, exiting once all clients have left")
        case .safe: log.info("\(signal): shutting down: no new connections, exiting once no server connection is in use")
        case .immediate: log.info("\(signal): shutting down immediately")
        }
        if first {
            systemd.stopping(status: "shutting down")
            // Our copies of the listeners only kept the port open for respawns; each worker closes its own.
            listeners.close()
            for slot in slots { slot.respawnAt = nil }
        }
        for slot in slots where slot.pid != 0 {
            if !slot.send(.shutdown(mode)) {
                // No channel to ask through: fall back to a signal.
                log.warning("worker \(slot.index) (pid \(slot.pid)) unreachable: sending SIGTERM")
                try? Posix.kill(slot.pid, SIGTERM)
            }
        }
        if mode == .immediate { killDeadline = Clock.monotonicNanos() + Self.immediateGraceNanos }
        if mode == .safe { startServersCheck(now: Clock.monotonicNanos()) }
        upgradeShutdown(mode)
    }

    /// One line naming the settings `PGSWIFT_<KEY>` variables set (their values are in SHOW CONFIG).
    static func logEnvironmentSettings(_ config: Config, log: Logger) {
        let env = config.settingsFromTheEnvironment()
        guard !env.isEmpty else { return }
        log.info("set by the environment: " + env.map { "\($0.key) (\($0.variable))" }.joined(separator: ", "))
    }

    /// SIGHUP or RELOAD: re-read the file; a broken file leaves the running configuration (and workers) alone.
    /// The admin console's SET values are dropped: as in PgBouncer, the file wins.
    @discardableResult
    func reload(because reason: String) -> Bool {
        systemd.reloading()
        defer { systemd.ready(status: "\(slots.count) workers accepting connections") }
        log.info("\(reason): reloading \(configPath)")
        do throws(ConfigError) {
            let new = try Config.load(path: configPath, environment: .process())
            if !setOverrides.isEmpty {
                log.info("\(reason): dropping the SET values \(setOverrides.map { $0.key }.joined(separator: ", "))")
            }
            applyConfig(new, overrides: [])
            reloadError = nil
            return true
        } catch {
            log.error("reload failed, keeping the previous configuration: \(error)")
            reloadError = AdminError.reloadFailed.detailed("keeping the previous configuration: \(error)")
            return false
        }
    }

    /// Admin console SET: the file (as a RELOAD reads it) with every SET since the last RELOAD and
    /// this one on top, applied to the whole service the way a RELOAD is. The error names why not.
    /// Returns why the TLS settings cannot be set up, if they cannot (the SET holds all the same,
    /// and workers keep their TLS contexts, as in PgBouncer).
    @discardableResult
    func set(_ override: ConfigOverride) throws(ConfigError) -> ConfigError? {
        let overrides = ConfigOverride.merging(setOverrides, override)
        let new = try Config.load(path: configPath, overrides: overrides, environment: .process())
        log.info("SET \(override.key)=\(override.value): applying to all workers")
        if let problem = new.tlsNotApplied {
            log.error("TLS settings could not be applied, still using old configuration: \(problem)")
        }
        applyConfig(new, overrides: overrides)
        return new.tlsNotApplied
    }

    /// Makes `new` the running configuration: logs its warnings, the restart-only settings it would
    /// change, reopens the log file, and tells every worker to load the same (the file plus `overrides`).
    private func applyConfig(_ new: Config, overrides: [ConfigOverride]) {
        for w in new.warnings { log.warning("\(w)") }
        Self.logEnvironmentSettings(new, log: log)
        let ignored = running.changedKeys(in: RestartSettings(new))
        if !ignored.isEmpty {
            log.warning("changed \(ignored.joined(separator: ", ")): takes effect only after a restart")
        }
        config = new
        setOverrides = overrides
        log.minimumLevel = options.verbosity + new.verbose > 0 ? .debug : .log
        // Reopened on every reload, so log rotation only needs a SIGHUP (as with PgBouncer).
        if !log.useLogFile(new.logfile) { log.error("cannot open logfile \(new.logfile ?? ""): \(Errno.current)") }
        Syslog.configure(enabled: new.syslog, ident: new.syslogIdent, facility: new.syslogFacility)
        broadcast(.reload(overrides: overrides))
        sendQuotas(quotas.resizeAll(size: poolSize, reserve: reservePoolSize))
        limitsReloaded()
        loadAuthFileUsers()
        reconfigureHealthChecks(now: Clock.monotonicNanos())
        reconfigurePeers()
    }
}
