// The supervisor's stats: worker snapshots collected and merged, stale workers noticed, averages kept,
// admin answers sent back to the worker that holds the admin client.
import Glibc
import Shared

/// A round of StatsRequests to every live worker, finished when all answered or after a second.
struct StatsCollection {
    enum Purpose {
        /// An admin SHOW to answer for the worker `slot` (its request `requestID`).
        case admin(slot: Int, requestID: UInt32, command: AdminCommand)
        /// Is every server released yet (PAUSE)?
        case pauseCheck
        /// Is no server in use anywhere yet (SHUTDOWN WAIT_FOR_SERVERS, ServiceStop.swift)?
        case serversCheck
        /// /metrics requests waiting for fresh figures (MetricsServer.swift).
        case metrics
    }
    var purpose: Purpose
    var waiting: Set<Int>
    var snapshots: [Int: WorkerStatsSnapshot] = [:]
    /// Query statistics, when asked for (they arrive before their worker's snapshot).
    var queries: [Int: QueryStatsSnapshot] = [:]
    var deadline: Int64
}

struct SupervisorStatsState {
    /// A snapshot page is about `WorkerStatsSnapshot.targetPageBytes`: this bound is never reached by
    /// a worker, however many pools it has (pages, not one blob, carry them).
    var reassembler = StatsReassembler(maximumBlobSize: 16 << 20)
    struct PageKey: Hashable {
        var slot: Int
        var kind: UInt8
        var requestID: UInt32
    }
    /// Snapshots whose first pages arrived, waiting for their last page (WorkerStatsSnapshot paging).
    var partialSnapshots: [PageKey: WorkerStatsSnapshot] = [:]
    var averager: StatsAverager
    var nextAveragerRefresh: Int64
    var nextRequestID: UInt32 = 0
    var collections: [UInt32: StatsCollection] = [:]
    /// Admin PAUSE commands waiting for the servers to be released: (worker slot, request id).
    var pendingPauses: [(slot: Int, requestID: UInt32)] = []
    var nextPauseCheck: Int64? = nil
    var pauseCheckRunning = false
    /// SHUTDOWN WAIT_FOR_SERVERS polling (ServiceStop.swift), as PAUSE's.
    var nextServersCheck: Int64? = nil
    var serversCheckRunning = false
    var nextTick: Int64
    var metrics: MetricsServer? = nil
    /// auth_file's user names for SHOW USERS, read with the configuration (`loadAuthFileUsers`); nil
    /// until then.
    var authFileUsers: [String]? = nil

    /// How long a collection waits for slow workers before answering with what it has.
    static let collectionTimeoutNanos: Int64 = 1_000_000_000
    /// A worker silent for longer is logged.
    static let silenceNanos: Int64 = 3_000_000_000

    init(now: Int64, statsPeriod: Int) {
        averager = StatsAverager(now: now / 1000)
        nextAveragerRefresh = now + Int64(max(statsPeriod, 1)) * 1_000_000_000
        nextTick = now + 1_000_000_000
    }
}

extension Supervisor {
    // MARK: Receiving

    func handleStatsChunk(_ chunk: [UInt8], from slot: WorkerSlot) {
        guard let blob = statsState.reassembler.add(chunk, from: "worker \(slot.index) (pid \(slot.pid))", log: log) else { return }
        guard Int(blob.slot) == slot.index else {
            log.warning("worker \(slot.index) sent a stats blob labelled slot \(blob.slot)")
            return
        }
        switch blob.kind {
        case .periodicSnapshot, .requestedSnapshot:
            let page: WorkerStatsSnapshot
            do throws(StatsDecodeError) {
                page = try WorkerStatsSnapshot.decode(blob.bytes)
            } catch {
                log.warning("worker \(slot.index) sent \(error)")
                return
            }
            let key = SupervisorStatsState.PageKey(slot: slot.index, kind: blob.kind.rawValue, requestID: blob.requestID)
            var snap: WorkerStatsSnapshot
            if page.page == 0 {
                snap = page
            } else if var earlier = statsState.partialSnapshots.removeValue(forKey: key), earlier.page + 1 == page.page {
                earlier.appendPage(page)
                snap = earlier
            } else {
                log.warning("worker \(slot.index) sent snapshot page \(page.page) without the pages before it")
                return
            }
            guard snap.lastPage else {
                statsState.partialSnapshots[key] = snap
                return
            }
            statsState.partialSnapshots[key] = nil
            var periodic = snap
            periodic.clients = []
            periodic.servers = []
            slot.latest = periodic
            slot.lastReportAt = Clock.monotonicNanos()
            if slot.reportedSilent {
                slot.reportedSilent = false
                log.info("worker \(slot.index) (pid \(slot.pid)) reports stats again")
            }
            if blob.kind == .requestedSnapshot { collected(snap, from: slot.index, requestID: blob.requestID) }
        case .adminRequest:
            do throws(StatsDecodeError) {
                let request = try AdminRequest.decode(blob.bytes, requestID: blob.requestID)
                executeAdmin(request, from: adminKey(of: slot))
            } catch {
                log.warning("worker \(slot.index) sent \(error)")
            }
        case .queryStats:
            do throws(StatsDecodeError) {
                let q = try QueryStatsSnapshot.decode(blob.bytes)
                statsState.collections[blob.requestID]?.queries[slot.index] = q
            } catch {
                log.warning("worker \(slot.index) sent \(error)")
            }
        case .statsRequest, .adminResult:
            log.warning("worker \(slot.index) sent a supervisor-only stats blob (\(blob.kind))")
        }
    }

    // MARK: Collections

    /// Asks every live worker for a fresh snapshot; `collectionDone` runs once all answered (or 1 s passed).
    func startCollection(_ purpose: StatsCollection.Purpose, clients: Bool, servers: Bool, queries: Bool = false,
                         resetQueries: Bool = false) {
        statsState.nextRequestID &+= 1
        let id = statsState.nextRequestID
        var waiting = Set<Int>()
        let request = StatsRequest(requestID: id, includeClients: clients, includeServers: servers,
                                   includeQueries: queries, resetQueries: resetQueries).encode()
        for slot in slots where slot.pid != 0 && slot.channel != nil {
            var ok = true
            for chunk in StatsChunk.split(request, kind: .statsRequest, slot: Int32(slot.index), requestID: id) {
                ok = ok && slot.send(.statsToWorker(chunk))
            }
            if ok { waiting.insert(slot.index) }
        }
        statsState.collections[id] = StatsCollection(purpose: purpose, waiting: waiting,
                                                     deadline: Clock.monotonicNanos() + SupervisorStatsState.collectionTimeoutNanos)
        if waiting.isEmpty { finishCollection(id) }
    }

    func collected(_ snap: WorkerStatsSnapshot, from slot: Int, requestID: UInt32) {
        guard statsState.collections[requestID] != nil else { return }
        statsState.collections[requestID]!.snapshots[slot] = snap
        statsState.collections[requestID]!.waiting.remove(slot)
        if statsState.collections[requestID]!.waiting.isEmpty { finishCollection(requestID) }
    }

    func finishCollection(_ id: UInt32) {
        guard let c = statsState.collections.removeValue(forKey: id) else { return }
        var snaps: [WorkerStatsSnapshot] = []
        for slot in slots where slot.pid != 0 {
            if let s = c.snapshots[slot.index] {
                snaps.append(s)
            } else if let s = slot.latest {
                // A worker that did not answer in time: its last periodic view (no rows).
                snaps.append(s)
            }
        }
        let merged = MergedStats.merge(snaps)
        switch c.purpose {
        case .admin(let slot, let requestID, let command):
            var out = OutBuffer(capacity: 4096)
            defer { out.deallocate() }
            switch command {
            case .showQueries(let limit):
                AdminResults.queries(MergedQueryStats.merge(Array(c.queries.values)), limit: limit, into: &out)
            case .showTables:
                AdminResults.tables(MergedQueryStats.merge(Array(c.queries.values)), into: &out)
            case .resetQueries:
                AdminResults.done("RESET", into: &out)
            default:
                renderShow(command, merged, into: &out)
            }
            replyAdmin(slot: slot, requestID: requestID, out)
        case .pauseCheck:
            statsState.pauseCheckRunning = false
            guard paused, !statsState.pendingPauses.isEmpty else { return }
            let busy = merged.pools.reduce(0) { $0 + Int($1.svActive) + Int($1.svTested) + Int($1.svActiveCancel) }
            if busy == 0 && c.waiting.isEmpty {
                for p in statsState.pendingPauses { replyDone(slot: p.slot, requestID: p.requestID, "PAUSE") }
                statsState.pendingPauses = []
                log.info("PAUSE: every server connection is released")
            } else {
                statsState.nextPauseCheck = Clock.monotonicNanos() + 50_000_000
            }
        case .serversCheck:
            serversChecked(merged, everyWorkerAnswered: c.waiting.isEmpty)
        case .metrics:
            metricsRoundDone(merged, queries: Array(c.queries.values))
        }
    }

    /// Merged view of the last periodic snapshots (metrics, averages).
    func latestMerged() -> MergedStats {
        MergedStats.merge(slots.compactMap { $0.pid != 0 ? $0.latest : nil })
    }

    // MARK: Timers

    /// Milliseconds until the stats timers need the loop.
    func statsTimeout(now: Int64) -> Int64 {
        var next = statsState.nextTick
        for c in statsState.collections.values { next = min(next, c.deadline) }
        if let t = statsState.nextPauseCheck { next = min(next, t) }
        if let t = statsState.nextServersCheck { next = min(next, t) }
        if let t = statsState.metrics?.nextRoundAt { next = min(next, t) }
        return next
    }

    func runStatsTimers(now: Int64) {
        for (id, c) in statsState.collections where c.deadline <= now {
            if !c.waiting.isEmpty {
                log.warning("workers \(c.waiting.sorted()) did not answer a stats request within 1 s")
            }
            finishCollection(id)
        }
        if let t = statsState.nextPauseCheck, t <= now, !statsState.pauseCheckRunning {
            statsState.nextPauseCheck = nil
            statsState.pauseCheckRunning = true
            startCollection(.pauseCheck, clients: false, servers: false)
        }
        if let t = statsState.nextServersCheck, t <= now, !statsState.serversCheckRunning {
            statsState.nextServersCheck = nil
            statsState.serversCheckRunning = true
            startCollection(.serversCheck, clients: false, servers: false)
        }
        startMetricsRound(now: now)
        if now >= statsState.nextTick {
            statsState.nextTick = now + 1_000_000_000
            for slot in slots where slot.pid != 0 && slot.ready && !slot.reportedSilent {
                let since = max(slot.lastReportAt, slot.startedAt)
                if now - since > SupervisorStatsState.silenceNanos {
                    slot.reportedSilent = true
                    log.warning("worker \(slot.index) (pid \(slot.pid)) has sent no stats for \((now - since) / 1_000_000_000) s")
                }
            }
            statsState.metrics?.expire(now: now, epoll: epoll)
        }
        if now >= statsState.nextAveragerRefresh {
            statsState.nextAveragerRefresh = now + Int64(max(config.statsPeriod, 1)) * 1_000_000_000
            let merged = latestMerged()
            statsState.averager.refresh(merged.databaseTotals(), now: now / 1000)
            if config.logStats {
                // PgBouncer's line, over all pools and the period that just ended; without the `supervisor`
                // field, so that pgbadger's pattern for PgBouncer's logs reads it.
                let averages = statsState.averager.averages(total: merged.grandTotals(), now: now / 1000)
                log.logUntagged(.log, averages.statsLogLine)
            }
        }
    }

    // MARK: Replies

    func replyAdmin(slot: Int, requestID: UInt32, _ out: OutBuffer) {
        guard let target = adminTarget(slot) else { return }
        for chunk in StatsChunk.split(out.bytes, kind: .adminResult, slot: Int32(target.index), requestID: requestID) {
            if !target.send(.statsToWorker(chunk)) {
                log.warning("admin answer for worker \(slot) dropped: worker not reachable")
                return
            }
        }
    }

    func replyError(slot: Int, requestID: UInt32, _ e: AdminError) {
        var out = OutBuffer(capacity: 256)
        defer { out.deallocate() }
        AdminResults.error(e, into: &out)
        replyAdmin(slot: slot, requestID: requestID, out)
    }

    func replyDone(slot: Int, requestID: UInt32, _ tag: String) {
        var out = OutBuffer(capacity: 64)
        defer { out.deallocate() }
        AdminResults.done(tag, into: &out)
        replyAdmin(slot: slot, requestID: requestID, out)
    }
}

extension Supervisor {
    /// A worker died: collections stop waiting for it.
    func forgetInCollections(_ slot: Int) {
        statsState.reassembler.discard(slot: Int32(slot))
        statsState.partialSnapshots = statsState.partialSnapshots.filter { $0.key.slot != slot }
        for (id, c) in statsState.collections where c.waiting.contains(slot) {
            statsState.collections[id]!.waiting.remove(slot)
            if statsState.collections[id]!.waiting.isEmpty { finishCollection(id) }
        }
    }
}
