// Rolling restarts (admin UPGRADE, `pgswift upgrade`): slot by slot, start a new worker from the binary
// now on disk on the same listening sockets, wait until it is ready, then tell the old one to drain and
// hand its idle clients to the new one over a socket pair made for the two of them.
import Glibc
import Shared

/// One row of the UPGRADE answer.
struct UpgradeRow: Equatable, Sendable {
    var slot: Int
    var oldPid: Int32
    var newPid: Int32
    var result: String
}

/// A replaced worker that is draining: it stops accepting, hands off what can move and exits when its
/// last client has left or `drain_timeout` has passed.
struct RetiredWorker {
    let process: WorkerSlot
    /// Backstop in case it never exits: killed then (its own drain_timeout plus a grace period).
    var killAt: Int64
}

struct UpgradeState {
    struct Roll {
        /// Slots in the order they are replaced: the one holding the UPGRADE client last, so the answer
        /// never has to cross a handoff.
        var order: [Int]
        var position = 0
        /// The new process for `order[position]` until it reports ready.
        var fresh: WorkerSlot?
        /// The old worker's end of the pair the new one got at spawn; sent with `drain`.
        var handoffSocket: Int32 = -1
        var readyDeadline: Int64 = 0
        var rows: [UpgradeRow] = []
        var requester: (process: WorkerSlot, requestID: UInt32)?
        var startedAt: Int64 = 0
    }
    var roll: Roll?
    /// The new supervisor binary being checked before the exec (Reexec.swift).
    var check: SupervisorCheck?
    /// Set by a re-executed image: the roll to run once the loop is up, and who asked for it.
    var resume: (pid: Int32, requestID: UInt32)?
    var retired: [RetiredWorker] = []
    /// Admin answers for console sessions on a process that is not (or no longer) its slot's worker are
    /// routed by a key of its own (a slot's worker uses its index, which names the successor after a swap).
    var nextAdminKey = 1 << 20
    var adminKeys: [ObjectIdentifier: Int] = [:]
    var adminProcesses: [Int: WorkerSlot] = [:]

    /// A new worker that is not ready by then stops the roll.
    static let readyTimeoutNanos: Int64 = 30_000_000_000
    /// Added to drain_timeout before a retired worker that did not exit on its own is killed.
    static let drainGraceNanos: Int64 = 30_000_000_000
    /// Rolled processes get generations far from their slot's, so a respawn in that slot never reuses
    /// the epoll data of a process that is still around.
    static let generationStride: UInt32 = 0x100

    var isIdle: Bool { roll == nil && retired.isEmpty }
}

extension Supervisor {
    // MARK: Starting

    static let upgradeColumns: [AdminColumn] = [("slot", Backend.TypeOID.int4), ("old_pid", Backend.TypeOID.int4),
                                                ("new_pid", Backend.TypeOID.int4), ("result", Backend.TypeOID.text)]

    /// UPGRADE from the admin console (`requester` is the process that holds that client). Always the
    /// whole thing: the supervisor re-executes the binary at its path (after checking it in a child),
    /// and the new image rolls every worker. The answer goes out when the roll has finished or stopped.
    func startUpgrade(requester: WorkerSlot?, requestID: UInt32) {
        if upgrade.roll != nil || upgrade.check != nil || upgrade.resume != nil {
            if let r = requester { replyError(to: r, requestID: requestID, AdminError("an UPGRADE is already in progress", code: "55000")) }
            return
        }
        if stopping != nil {
            if let r = requester { replyError(to: r, requestID: requestID, AdminError("shutting down", code: "57P01")) }
            return
        }
        systemd.reloading()
        systemd.status("upgrading: checking the supervisor binary")
        beginSupervisorUpgrade(requester: requester, requestID: requestID)
    }

    /// The rolling restart proper (in the re-executed image): slot by slot, the requester's slot last.
    func startRoll(requester: WorkerSlot?, requestID: UInt32) {
        let holder = requester.flatMap { r in slots.first { $0 === r }?.index }
        var order = slots.map(\.index).filter { $0 != holder }
        if let holder { order.append(holder) }
        var roll = UpgradeState.Roll(order: order)
        roll.requester = requester.map { ($0, requestID) }
        roll.startedAt = Clock.monotonicNanos()
        upgrade.roll = roll
        systemd.status("rolling restart of \(slots.count) workers")
        log.info("UPGRADE: rolling restart of \(slots.count) workers with \(currentWorkerBinary())")
        startNextSlot(now: Clock.monotonicNanos())
    }

    /// `worker_binary` as configured now (a reload may have changed it), else the one found at start.
    func currentWorkerBinary() -> String {
        if let configured = config.workerBinary, !configured.isEmpty { return configured }
        return workerBinary
    }

    private func startNextSlot(now: Int64) {
        guard var roll = upgrade.roll else { return }
        guard roll.position < roll.order.count else {
            finishRoll(failure: nil)
            return
        }
        let index = roll.order[roll.position]
        let old = slots[index]
        do throws(SyscallError) {
            let (fresh, socket) = try spawnSuccessor(of: old, now: now)
            roll.fresh = fresh
            roll.handoffSocket = socket
            roll.readyDeadline = now + UpgradeState.readyTimeoutNanos
            upgrade.roll = roll
            log.info("UPGRADE: worker \(index): new process \(fresh.pid) started beside \(old.pid == 0 ? "no running process" : "pid \(old.pid)")")
        } catch {
            upgrade.roll = roll
            failSlot(index, newPid: 0, because: "cannot start \(currentWorkerBinary()): \(error)")
        }
    }

    /// Starts a new worker for `old`'s slot on the same listening sockets, with one end of a fresh
    /// socket pair for the clients `old` will hand over (the other end is returned).
    private func spawnSuccessor(of old: WorkerSlot, now: Int64) throws(SyscallError) -> (WorkerSlot, Int32) {
        let (mine, theirs) = try Posix.socketPair()
        let handoff: (Int32, Int32)
        do throws(SyscallError) {
            handoff = try Posix.socketPair()
        } catch {
            Posix.close(mine)
            Posix.close(theirs)
            throw error
        }
        let listenFDs = listeners.fds(forSlot: old.index)
        // The old process keeps its word of the client count until it exits; the new one takes the other.
        let word = old.counterWord == old.index ? old.index + slots.count : old.index
        let counterFDs = limits.counter.map { [$0.fd] } ?? []
        // Descriptors land on 3, 4, ...: listeners, control socket, the client count, then the handoff socket.
        let arguments = WorkerLaunch.arguments(configPath: configPath, slot: old.index,
                                               tcpCount: listeners.addresses.count, hasUnix: listeners.unix >= 0,
                                               verbosity: options.verbosity, respawned: true,
                                               clientsFD: !counterFDs.isEmpty, clientsWord: word,
                                               overrides: setOverrides, peerID: running.peerID)
            + ["--handoff-fd", String(3 + listenFDs.count + 1 + counterFDs.count)]
        let pid: Int32
        do throws(SyscallError) {
            pid = try Posix.spawn(path: currentWorkerBinary(), arguments: arguments, environment: Posix.environment(),
                                  fds: listenFDs + [theirs] + counterFDs + [handoff.1])
        } catch {
            for fd in [mine, theirs, handoff.0, handoff.1] { Posix.close(fd) }
            throw error
        }
        Posix.close(theirs)
        Posix.close(handoff.1)
        let fresh = WorkerSlot(index: old.index)
        fresh.counterWord = word
        fresh.generation = old.generation &+ UpgradeState.generationStride
        fresh.pid = pid
        fresh.startedAt = now
        fresh.restarts = old.restarts
        fresh.channel = ControlChannel(fd: mine)
        do throws(SyscallError) {
            try epoll.add(mine, events: .input, data: fresh.epollData.raw)
        } catch {
            log.error("worker \(old.index): cannot watch the new process's control channel: \(error)")
        }
        if paused { fresh.send(.pause) }
        sendHealth(to: fresh)
        sendDatabaseStates(to: fresh)
        return (fresh, handoff.0)
    }

    // MARK: Progress

    /// The new process said ready: it becomes the slot's worker; the old one drains into it.
    private func successorReady(_ fresh: WorkerSlot) {
        guard var roll = upgrade.roll, roll.fresh === fresh else { return }
        let index = fresh.index
        let old = slots[index]
        fresh.ready = true
        slots[index] = fresh
        old.respawnAt = nil
        sendQuotas(quotas.workerStarted(slot: index))
        // Connection-limit shares, paused/disabled databases and warm-up parts, now that it is the slot's.
        limitsWorkerStarted(fresh)
        let now = Clock.monotonicNanos()
        var result = "ok"
        if old.pid != 0 {
            if !sendDrain(to: old, socket: roll.handoffSocket, successor: fresh) { result = "ok (old worker unreachable)" }
            let grace = Clock.nanos(seconds: config.drainTimeout) + UpgradeState.drainGraceNanos
            upgrade.retired.append(RetiredWorker(process: old, killAt: now + grace))
        } else {
            closeChannel(old)
        }
        Posix.close(roll.handoffSocket)
        log.info("UPGRADE: worker \(index): new process \(fresh.pid) ready; \(old.pid == 0 ? "no old process" : "old process \(old.pid) draining")")
        roll.rows.append(UpgradeRow(slot: index, oldPid: old.pid, newPid: fresh.pid, result: result))
        roll.fresh = nil
        roll.handoffSocket = -1
        roll.position += 1
        upgrade.roll = roll
        startNextSlot(now: now)
    }

    /// `drain` with the old worker's end of the handoff pair (SCM_RIGHTS). If the channel cannot take
    /// it now, a plain `drain` is queued: the old worker then keeps its clients until they leave.
    /// The successor's features go along only to an old worker that can read them (it announced
    /// `pairMoves`): with them it knows what the successor can adopt (Worker/Control/PairHandoff.swift).
    private func sendDrain(to old: WorkerSlot, socket: Int32, successor: WorkerSlot) -> Bool {
        guard let fd = old.channel?.fd else { return false }
        _ = old.outbox.drain(fd: fd)
        if old.outbox.isEmpty {
            let features = old.features & WorkerFeatures.pairMoves != 0 ? successor.features : 0
            let bytes = ControlMessage.drain(handoff: true, successorFeatures: features).encode()
            let sent = bytes.withUnsafeBytes { raw -> Bool in
                guard let r = try? Posix.sendWithFDs(fd, raw, fds: [socket]), case .processed = r else { return false }
                return true
            }
            if sent { return true }
        }
        log.warning("worker \(old.index) (pid \(old.pid)): could not pass the handoff socket; its clients stay until they leave")
        return old.send(.drain(handoff: false))
    }

    /// The roll stops at `index`: the new process goes away, the old one keeps serving.
    private func failSlot(_ index: Int, newPid: Int32, because reason: String) {
        guard var roll = upgrade.roll else { return }
        if let fresh = roll.fresh {
            closeChannel(fresh)
            forgetAdminKey(fresh)
            if fresh.pid != 0 { try? Posix.kill(fresh.pid, SIGKILL) }
        }
        if roll.handoffSocket >= 0 { Posix.close(roll.handoffSocket) }
        roll.fresh = nil
        roll.handoffSocket = -1
        roll.rows.append(UpgradeRow(slot: index, oldPid: slots[index].pid, newPid: newPid, result: "failed: \(reason)"))
        for later in roll.order.dropFirst(roll.position + 1) {
            roll.rows.append(UpgradeRow(slot: later, oldPid: slots[later].pid, newPid: 0, result: "not started"))
        }
        upgrade.roll = roll
        log.error("UPGRADE stopped at worker \(index): \(reason); the running workers keep serving")
        finishRoll(failure: reason)
    }

    private func finishRoll(failure: String?) {
        guard let roll = upgrade.roll else { return }
        upgrade.roll = nil
        let seconds = Double(Clock.monotonicNanos() - roll.startedAt) / 1e9
        if failure == nil {
            log.info("UPGRADE: all \(roll.rows.count) workers replaced in \(Int(seconds * 1000)) ms")
        }
        systemd.ready(status: "\(slots.count) workers accepting connections")
        guard let (process, requestID) = roll.requester else { return }
        var out = OutBuffer(capacity: 512)
        AdminResults.resultSet(Self.upgradeColumns, roll.rows.sorted { $0.slot < $1.slot }.map {
            [String($0.slot), String($0.oldPid), String($0.newPid), $0.result]
        }, tag: "UPGRADE", into: &out)
        reply(to: process, requestID: requestID, out)
    }

    // MARK: Hooks from the loop

    /// Messages from a process in the middle of a roll. True when handled here.
    func upgradeIntercepts(_ message: ControlMessage, from process: WorkerSlot) -> Bool {
        if let fresh = upgrade.roll?.fresh, fresh === process {
            switch message {
            case .ready:
                successorReady(process)
                return true
            case .poolReport, .heartbeat:
                // Not the slot's worker yet: its figures would overwrite the old one's.
                return true
            case .statsFromWorker(let chunk):
                return isPeriodicSnapshot(chunk)
            default:
                return false
            }
        }
        if upgrade.retired.contains(where: { $0.process === process }) {
            switch message {
            case .poolReport, .heartbeat, .ready:
                // Its slot's quota and figures belong to the successor now.
                return true
            case .statsFromWorker(let chunk):
                // Its admin requests go through; its snapshots would mix with the slot's worker's
                // (same slot label) in reassembly, and SHOW counts the slot's worker only.
                return isPeriodicSnapshot(chunk)
            default:
                return false
            }
        }
        return false
    }

    private func isPeriodicSnapshot(_ chunk: [UInt8]) -> Bool {
        guard let c = try? StatsChunk.decode(chunk) else { return false }
        return c.kind == .periodicSnapshot
    }

    /// A child exited: the new process of a roll (which stops it) or a retired worker. True when it was one.
    func upgradeReaped(pid: Int32, status: ChildStatus) -> Bool {
        if let check = upgrade.check, check.pid == pid {
            checkFinished(check, status: status)
            return true
        }
        if let fresh = upgrade.roll?.fresh, fresh.pid == pid {
            fresh.pid = 0
            reclaimClientPlaces(slot: fresh.index, counterWord: fresh.counterWord)
            failSlot(fresh.index, newPid: pid, because: "the new worker (pid \(pid)) \(status) before it was ready")
            return true
        }
        if let i = upgrade.retired.firstIndex(where: { $0.process.pid == pid }) {
            let r = upgrade.retired.remove(at: i)
            reclaimClientPlaces(slot: r.process.index, counterWord: r.process.counterWord)
            closeChannel(r.process)
            forgetAdminKey(r.process)
            r.process.pid = 0
            log.info("worker \(r.process.index): replaced process \(pid) \(status) after draining")
            return true
        }
        return false
    }

    /// The process whose channel `data` names: a slot's worker, a roll's new process, or a retired one.
    func channelOwner(_ token: SupervisorToken) -> WorkerSlot? {
        let index = token.index
        if index >= 0 && index < slots.count && slots[index].epollData == token { return slots[index] }
        if let fresh = upgrade.roll?.fresh, fresh.epollData == token { return fresh }
        return upgrade.retired.first { $0.process.epollData == token }?.process
    }

    /// Every process with a control channel, for output interest and broadcasts of shutdown.
    var allProcesses: [WorkerSlot] {
        var all = slots
        if let fresh = upgrade.roll?.fresh { all.append(fresh) }
        all += upgrade.retired.map(\.process)
        return all
    }

    /// A shutdown began: retired workers stop too, a roll in progress stops.
    func upgradeShutdown(_ mode: ShutdownMode) {
        if upgrade.roll != nil, let index = upgrade.roll?.order[upgrade.roll!.position] {
            failSlot(index, newPid: upgrade.roll?.fresh?.pid ?? 0, because: "interrupted by shutdown")
        }
        let now = Clock.monotonicNanos()
        for i in upgrade.retired.indices {
            let r = upgrade.retired[i]
            if !r.process.send(.shutdown(mode)) { try? Posix.kill(r.process.pid, SIGTERM) }
            if mode == .immediate { upgrade.retired[i].killAt = min(r.killAt, now + Self.immediateGraceNanos) }
        }
    }

    /// A cancel for `slot`'s clients: those still on a draining predecessor must be reachable too.
    func forwardCancelToRetired(slot: Int, processID: Int32, secretKey: UInt32) {
        for r in upgrade.retired where r.process.index == slot {
            r.process.send(.cancel(processID: processID, secretKey: secretKey))
        }
    }

    func upgradeNextDeadline() -> Int64 {
        var next: Int64 = .max
        if let roll = upgrade.roll, roll.fresh != nil { next = roll.readyDeadline }
        for r in upgrade.retired { next = min(next, r.killAt) }
        if let c = upgrade.check { next = min(next, c.deadline) }
        return next
    }

    func runUpgradeTimers(now: Int64) {
        if let c = upgrade.check, now >= c.deadline {
            try? Posix.kill(c.pid, SIGKILL)
            upgrade.check = nil
            supervisorUpgradeFailed("the new supervisor binary did not finish its check within \(Self.checkTimeoutNanos / 1_000_000_000) s",
                                    requester: c.requester, requestID: c.requestID)
        }
        if let roll = upgrade.roll, let fresh = roll.fresh, now >= roll.readyDeadline {
            failSlot(fresh.index, newPid: fresh.pid, because: "the new worker (pid \(fresh.pid)) was not ready within \(UpgradeState.readyTimeoutNanos / 1_000_000_000) s")
        }
        for r in upgrade.retired where now >= r.killAt && r.process.pid != 0 {
            log.warning("worker \(r.process.index): replaced process \(r.process.pid) still running after drain_timeout: killing it")
            try? Posix.kill(r.process.pid, SIGKILL)
            if let i = upgrade.retired.firstIndex(where: { $0.process === r.process }) { upgrade.retired[i].killAt = .max }
        }
    }

    // MARK: Admin answers to a particular process

    /// The admin key of a process: its slot index while it is the slot's worker, else its retired key.
    func adminKey(of process: WorkerSlot) -> Int {
        if process.index < slots.count && slots[process.index] === process { return process.index }
        if let k = upgrade.adminKeys[ObjectIdentifier(process)] { return k }
        let k = upgrade.nextAdminKey
        upgrade.nextAdminKey += 1
        upgrade.adminKeys[ObjectIdentifier(process)] = k
        upgrade.adminProcesses[k] = process
        return k
    }

    /// Forgets the admin key of a process that is gone.
    func forgetAdminKey(_ process: WorkerSlot) {
        if let k = upgrade.adminKeys.removeValue(forKey: ObjectIdentifier(process)) { upgrade.adminProcesses[k] = nil }
    }

    /// The process an admin key names.
    func adminTarget(_ key: Int) -> WorkerSlot? {
        if key >= 0 && key < slots.count { return slots[key] }
        return upgrade.adminProcesses[key]
    }

    func reply(to process: WorkerSlot, requestID: UInt32, _ out: OutBuffer) {
        for chunk in StatsChunk.split(out.bytes, kind: .adminResult, slot: Int32(process.index), requestID: requestID) {
            if !process.send(.statsToWorker(chunk)) {
                log.warning("admin answer for worker \(process.index) (pid \(process.pid)) dropped: worker not reachable")
                return
            }
        }
    }

    func replyError(to process: WorkerSlot, requestID: UInt32, _ e: AdminError) {
        var out = OutBuffer(capacity: 256)
        AdminResults.error(e, into: &out)
        reply(to: process, requestID: requestID, out)
    }
}
