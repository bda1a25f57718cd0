// Supervisor binary upgrade: check the binary now on disk in a child, then exec it in place (same PID,
// so systemd keeps tracking it) keeping exactly the listening sockets and the worker channels; the new
// image adopts the running workers from PGSWIFT_REEXEC and then rolls them.
import Shared

/// What the old image hands the new one: descriptor numbers, worker pids and slots, a pending UPGRADE.
struct ReexecState: Equatable, Sendable {
    struct Process: Equatable, Sendable {
        var slot: Int
        var pid: Int32
        var controlFD: Int32
        var generation: UInt32
        var restarts: Int32
        var startedAt: Int64
        /// Its word in the shared client count (ClientCounter); -1: its slot.
        var counterWord: Int = -1
        /// The `WorkerFeatures` it announced in its `ready` (it is not asked again). Written as a field
        /// of its own (`features=pid:bits,...`), which an image that does not know it ignores.
        var features: UInt32 = 0
    }
    /// tcp[slot] as in `Listeners`.
    var tcp: [[Int32]] = []
    var unix: Int32 = -1
    /// The shared client count's memory file (-1: none).
    var counter: Int32 = -1
    /// Databases paused (PAUSE db, KILL db) or disabled (DISABLE db) one by one.
    var pausedDBs: [String] = []
    var disabledDBs: [String] = []
    var workers: [Process] = []
    /// Replaced workers still draining.
    var retired: [Process] = []
    var paused = false
    /// The worker holding the admin client that sent UPGRADE (0: none) and its request.
    var requesterPid: Int32 = 0
    var requestID: UInt32 = 0
    /// The peer id the service runs with (restart only: every cancel key carries it). Written only
    /// when not 0 (`peer=N`); absent, as in states of images before peering, it is 0.
    var peerID = 0

    static let environmentName = "PGSWIFT_REEXEC"

    /// One line of space-separated `key=value` fields; numbers only, so no quoting is needed.
    func encode() -> String {
        func list(_ ps: [Process]) -> String {
            ps.isEmpty ? "-" : ps.map { "\($0.slot):\($0.pid):\($0.controlFD):\($0.generation):\($0.restarts):\($0.startedAt):\($0.counterWord)" }
                .joined(separator: ",")
        }
        // tcp=<slots>/<slot 0's fds>/<slot 1's fds>...; "-" for a slot without TCP sockets.
        let tcpText = ([String(tcp.count)] + tcp.map { $0.isEmpty ? "-" : $0.map(String.init).joined(separator: ",") })
            .joined(separator: "/")
        let announced = (workers + retired).filter { $0.features != 0 }
        let featuresText = announced.isEmpty ? "-" : announced.map { "\($0.pid):\($0.features)" }.joined(separator: ",")
        return "v1 paused=\(paused ? 1 : 0) request=\(requesterPid):\(requestID) unix=\(unix) counter=\(counter) pausedDBs=\(Self.names(pausedDBs)) disabledDBs=\(Self.names(disabledDBs)) tcp=\(tcpText) workers=\(list(workers)) retired=\(list(retired))\(peerID != 0 ? " peer=\(peerID)" : "") features=\(featuresText)"
    }

    /// Names as hex of their UTF-8 bytes, comma-separated ("-": none), so the line stays free of quoting.
    static func names(_ list: [String]) -> String {
        if list.isEmpty { return "-" }
        let digits = Array("0123456789abcdef")
        return list.map { name in
            String(name.utf8.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
        }.joined(separator: ",")
    }

    static func decodeNames(_ text: String) -> [String]? {
        if text == "-" { return [] }
        var out: [String] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let chars = Array(item.utf8)
            guard !chars.isEmpty, chars.count % 2 == 0 else { return nil }
            var bytes: [UInt8] = []
            var i = 0
            while i < chars.count {
                guard let hi = hexValue(chars[i]), let lo = hexValue(chars[i + 1]) else { return nil }
                bytes.append(hi << 4 | lo)
                i += 2
            }
            out.append(String(decoding: bytes, as: UTF8.self))
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        default: return nil
        }
    }

    static func decode(_ text: String) -> ReexecState? {
        let fields = text.split(separator: " ").map(String.init)
        guard fields.first == "v1" else { return nil }
        var kv: [String: String] = [:]
        for f in fields.dropFirst() {
            guard let eq = f.firstIndex(of: "=") else { return nil }
            kv[String(f[..<eq])] = String(f[f.index(after: eq)...])
        }
        func processes(_ s: String?) -> [Process]? {
            guard let s else { return nil }
            if s == "-" { return [] }
            var out: [Process] = []
            for item in s.split(separator: ",") {
                let p = item.split(separator: ":").map(String.init)
                // A seventh field (the client-count word) is absent in states written before it existed.
                guard p.count == 6 || p.count == 7, let slot = Int(p[0]), let pid = Int32(p[1]), let fd = Int32(p[2]),
                      let gen = UInt32(p[3]), let restarts = Int32(p[4]), let started = Int64(p[5]),
                      slot >= 0, pid > 0, fd >= 0 else { return nil }
                var word = -1
                if p.count == 7 {
                    guard let w = Int(p[6]), w >= -1 else { return nil }
                    word = w
                }
                out.append(Process(slot: slot, pid: pid, controlFD: fd, generation: gen, restarts: restarts, startedAt: started,
                                   counterWord: word))
            }
            return out
        }
        var s = ReexecState()
        guard let paused = kv["paused"], let request = kv["request"], let unix = kv["unix"].flatMap({ Int32($0) }),
              let tcp = kv["tcp"], let workers = processes(kv["workers"]), let retired = processes(kv["retired"]) else { return nil }
        s.paused = paused == "1"
        let r = request.split(separator: ":")
        guard r.count == 2, let rp = Int32(r[0]), let rid = UInt32(r[1]) else { return nil }
        s.requesterPid = rp
        s.requestID = rid
        s.unix = unix
        if let p = kv["pausedDBs"] {
            guard let names = decodeNames(p) else { return nil }
            s.pausedDBs = names
        }
        if let d = kv["disabledDBs"] {
            guard let names = decodeNames(d) else { return nil }
            s.disabledDBs = names
        }
        if let c = kv["counter"] {
            guard let fd = Int32(c), fd >= -1 else { return nil }
            s.counter = fd
        }
        let parts = tcp.split(separator: "/", omittingEmptySubsequences: false)
        guard let count = parts.first.flatMap({ Int($0) }), count == parts.count - 1 else { return nil }
        for slotText in parts.dropFirst() {
            if slotText == "-" { s.tcp.append([]); continue }
            let fds = slotText.split(separator: ",").compactMap { Int32($0) }
            guard !fds.isEmpty, fds.count == slotText.split(separator: ",").count else { return nil }
            s.tcp.append(fds)
        }
        s.workers = workers
        s.retired = retired
        if let p = kv["peer"] {
            guard let id = Int(p), id > 0 && id <= PeerEntry.maxOwnID else { return nil }
            s.peerID = id
        }
        // Absent in states written before it existed: no features known (the old workers are then not
        // sent anything they might not read).
        if let f = kv["features"], f != "-" {
            for item in f.split(separator: ",") {
                let p = item.split(separator: ":")
                guard p.count == 2, let pid = Int32(p[0]), let bits = UInt32(p[1]) else { return nil }
                for i in s.workers.indices where s.workers[i].pid == pid { s.workers[i].features = bits }
                for i in s.retired.indices where s.retired[i].pid == pid { s.retired[i].features = bits }
            }
        }
        return s
    }

    /// Every descriptor the new image inherits.
    var descriptors: [Int32] {
        tcp.flatMap { $0 } + (unix >= 0 ? [unix] : []) + (counter >= 0 ? [counter] : [])
            + workers.map(\.controlFD) + retired.map(\.controlFD)
    }
}

/// A binary check in progress before the exec.
struct SupervisorCheck {
    var pid: Int32
    var deadline: Int64
    var requester: WorkerSlot?
    var requestID: UInt32
}

extension Supervisor {
    static let checkTimeoutNanos: Int64 = 15_000_000_000

    /// First half of UPGRADE: run the binary now at our path with --check-config (it must start and
    /// accept the configuration); the exec follows when it exits 0 (`checkFinished`).
    func beginSupervisorUpgrade(requester: WorkerSlot?, requestID: UInt32) {
        let exe = supervisorExecutable
        log.info("UPGRADE: checking the supervisor binary \(exe) (--check-config \(configPath))")
        do throws(SyscallError) {
            // -q: the verdict only, not the effective values (they would go to our stdout, the journal).
            let pid = try Posix.spawn(path: exe, arguments: ["-q", "--check-config", configPath],
                                      environment: Posix.environment().filter { !$0.hasPrefix(ReexecState.environmentName + "=") },
                                      fds: [])
            upgrade.check = SupervisorCheck(pid: pid, deadline: Clock.monotonicNanos() + Self.checkTimeoutNanos,
                                            requester: requester, requestID: requestID)
        } catch {
            supervisorUpgradeFailed("cannot run the new supervisor binary \(exe): \(error)", requester: requester, requestID: requestID)
        }
    }

    /// The check child exited: exec on success, else report and keep serving.
    func checkFinished(_ check: SupervisorCheck, status: ChildStatus) {
        upgrade.check = nil
        guard status == .exited(0) else {
            supervisorUpgradeFailed("the new supervisor binary \(supervisorExecutable) failed its check (--check-config \(status))",
                                    requester: check.requester, requestID: check.requestID)
            return
        }
        reexec(requester: check.requester, requestID: check.requestID)
    }

    /// Nothing was replaced: every slot answers why; the running processes go on.
    func supervisorUpgradeFailed(_ reason: String, requester: WorkerSlot?, requestID: UInt32) {
        log.error("UPGRADE failed: \(reason); the running supervisor and workers keep serving")
        systemd.ready(status: "\(slots.count) workers accepting connections")
        guard let requester else { return }
        var out = OutBuffer(capacity: 512)
        AdminResults.resultSet(Self.upgradeColumns, slots.map {
            [String($0.index), String($0.pid), "0", "failed: \(reason)"]
        }, tag: "UPGRADE", into: &out)
        reply(to: requester, requestID: requestID, out)
    }

    /// Execs the binary at our path in place with the state in PGSWIFT_REEXEC. Returns only on failure.
    func reexec(requester: WorkerSlot?, requestID: UInt32) {
        var state = ReexecState()
        state.tcp = listeners.tcp
        state.unix = listeners.unix
        state.paused = paused
        state.peerID = running.peerID
        func describe(_ p: WorkerSlot) -> ReexecState.Process? {
            guard p.pid != 0, let fd = p.channel?.fd else { return nil }
            return .init(slot: p.index, pid: p.pid, controlFD: fd, generation: p.generation, restarts: p.restarts,
                         startedAt: p.startedAt, counterWord: p.counterWord, features: p.features)
        }
        state.counter = limits.counter?.fd ?? -1
        state.pausedDBs = limits.pausedDBs.sorted()
        state.disabledDBs = limits.disabledDBs.sorted()
        state.workers = slots.compactMap(describe)
        state.retired = upgrade.retired.compactMap { describe($0.process) }
        if let requester, requester.pid != 0 {
            state.requesterPid = requester.pid
            state.requestID = requestID
        }
        // Whatever is queued for the workers goes out now if it can; the rest is lost with this image.
        for p in allProcesses { if let fd = p.channel?.fd { _ = p.outbox.drain(fd: fd) } }
        let keep = state.descriptors
        for fd in keep { try? Posix.setCloseOnExec(fd, false) }
        Posix.setenv(ReexecState.environmentName, state.encode())
        var arguments: [String] = Array(repeating: "-v", count: max(0, options.verbosity))
        if options.quiet { arguments.append("-q") }
        arguments.append(configPath)
        log.info("UPGRADE: re-executing \(supervisorExecutable) in place (pid \(Posix.getpid())), keeping \(keep.count) descriptors and \(state.workers.count + state.retired.count) workers")
        let error = Posix.exec(path: supervisorExecutable, arguments: arguments)
        // Still here: the exec failed. Undo and carry on with this image.
        Posix.unsetenv(ReexecState.environmentName)
        for fd in keep { try? Posix.setCloseOnExec(fd, true) }
        supervisorUpgradeFailed("cannot execute \(supervisorExecutable): \(error)", requester: requester, requestID: requestID)
    }

    // MARK: The new image

    /// Reads and clears PGSWIFT_REEXEC (workers must not inherit it).
    static func takeReexecState(log: Logger) -> ReexecState? {
        guard let text = Posix.getenv(ReexecState.environmentName) else { return nil }
        Posix.unsetenv(ReexecState.environmentName)
        guard let state = ReexecState.decode(text) else {
            log.fatal("cannot read \(ReexecState.environmentName)=\(text)")
            return nil
        }
        return state
    }

    /// The listening sockets the previous image kept open.
    static func adoptListeners(_ state: ReexecState, config: Config) -> Listeners {
        var l = Listeners()
        l.tcp = state.tcp
        l.unix = state.unix
        for fd in state.tcp.flatMap({ $0 }) + (state.unix >= 0 ? [state.unix] : []) { try? Posix.setCloseOnExec(fd, true) }
        if let first = state.tcp.first {
            l.addresses = first.map { Sockets.localAddress($0) ?? SocketAddress() }
        }
        if state.unix >= 0 { l.unixPath = Listeners.unixSocketPath(directory: config.unixSocketDir, port: config.listenPort) }
        return l
    }

    /// Takes over the previous image's workers; the UPGRADE it was answering continues with the roll.
    func adopt(_ state: ReexecState) {
        paused = state.paused
        limits.pausedDBs = Set(state.pausedDBs)
        limits.disabledDBs = Set(state.disabledDBs)
        if state.counter >= 0 {
            // The workers hold this memory file: the count must stay the one they update.
            try? Posix.setCloseOnExec(state.counter, true)
            do throws(SyscallError) {
                limits.counter = try ClientCounter.map(state.counter)
            } catch {
                log.error("cannot map the inherited client count (\(error)); max_client_conn applies per worker until a restart")
            }
        }
        let now = Clock.monotonicNanos()
        func make(_ p: ReexecState.Process) -> WorkerSlot {
            try? Posix.setCloseOnExec(p.controlFD, true)
            let w = WorkerSlot(index: p.slot)
            w.pid = p.pid
            w.generation = p.generation
            w.restarts = p.restarts
            w.startedAt = p.startedAt
            w.ready = true
            w.lastReportAt = now
            w.channel = ControlChannel(fd: p.controlFD)
            if p.counterWord >= 0 { w.counterWord = p.counterWord }
            w.features = p.features
            return w
        }
        var retired = state.retired.map(make)
        for p in state.workers {
            let w = make(p)
            if p.slot < slots.count && slots[p.slot].pid == 0 {
                slots[p.slot] = w
            } else {
                // The configuration now has fewer workers: this one drains like a replaced worker.
                retired.append(w)
                w.send(.drain(handoff: false))
            }
        }
        for w in retired {
            let grace = Clock.nanos(seconds: config.drainTimeout) + UpgradeState.drainGraceNanos
            upgrade.retired.append(RetiredWorker(process: w, killAt: now + grace))
        }
        for p in allProcesses {
            guard let fd = p.channel?.fd else { continue }
            do throws(SyscallError) {
                try epoll.add(fd, events: .input, data: p.epollData.raw)
            } catch {
                log.error("worker \(p.index) (pid \(p.pid)): cannot watch its control channel: \(error)")
            }
        }
        announcedReady = slots.allSatisfy { $0.pid != 0 }
        log.info("pgswift \(PgswiftVersion.string) took over from the previous image: \(state.workers.count) workers, \(state.retired.count) draining")
        // A re-exec only ever happens for UPGRADE: the roll follows once the loop runs.
        upgrade.resume = (state.requesterPid, state.requestID)
    }

    /// After the loop started in a re-executed image: the roll of the UPGRADE that caused it.
    func resumeUpgradeAfterReexec() {
        guard let (pid, requestID) = upgrade.resume else { return }
        upgrade.resume = nil
        let requester = pid == 0 ? nil : allProcesses.first { $0.pid == pid }
        startRoll(requester: requester, requestID: requestID)
    }
}
