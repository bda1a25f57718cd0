// Replication connections (`replication=database` logical, `replication=true` physical), as PgBouncer
// 1.23+ takes them: each client gets a server connection of its own, opened with the same replication
// parameter, its startup parameters and its `options` as they came; linked to it from its launch,
// never pooled, never given to anyone else, closed when the client leaves. It counts in its pool like
// any server (pool_size, this worker's quota, max_db_connections, max_user_connections), and an idle
// server of the pool is evicted to make room for it. The link then runs as session mode whatever the
// pool's mode: the walsender protocol (IDENTIFY_SYSTEM, START_REPLICATION, CopyBoth) goes through
// byte for byte, with no SET, reset, prepared-statement tracking or release at ReadyForQuery.
//
// Client states (Connections.swift): authenticated → `.replicationWait` (no room yet) →
// `.replicationLogin` (its server connecting and logging in, `server` set) → `.active` once that
// login has ended: the client then gets AuthenticationOk, that server's own ParameterStatus set,
// pgswift's BackendKeyData and ReadyForQuery. A failed login fails only its client ("login failed").
import Shared

extension Worker {
    /// How a link behaves at ReadyForQuery (PgBouncer's connection_pool_mode): the pool's mode, or
    /// session for a replication client's own server.
    @inline(__always)
    func linkMode(_ si: Int32) -> PoolMode {
        servers[si].replication != .none || servers[si].listenPinned ? .session : pools[Int(servers[si].pool)].mode
    }

    /// An authenticated replication client (`authenticated`): it waits for room, then for its own server.
    func startReplication(_ ci: Int32) {
        let p = clients[ci].pool
        if pools[Int(p)].allDown && config.failFast {
            // fail_fast (pgswift's extension), as for any client of a pool whose hosts are all down.
            sendClientError(ci, downError(Int(p)), close: true)
            return
        }
        setClientState(ci, .replicationWait)
        launchReplication(p)
        if clients[ci].state != .free { flushClient(ci) }
    }

    /// Opens own servers for the pool's waiting replication clients, oldest first, while there is room.
    /// Called wherever room may appear (`launchIfNeeded`, a server parked idle, the janitor's tick).
    func launchReplication(_ p: Int32) {
        let pi = Int(p)
        while pools[pi].replicationWaitCount > 0 {
            // PgBouncer's find_server: nothing is launched while paused; server_login_retry holds it too.
            if hot.pointee.paused || pools[pi].limits.dbPaused || hot.pointee.safeShutdown || loginRetryPending(pi)
                || pools[pi].connectingCount >= Worker.maxConcurrentConnectsPerPool || !replicationRoom(pi) { return }
            guard let ci = oldestReplicationWaiter(p) else { return }
            launchServer(p, replicationClient: ci)
            // No host to try now (BackendHealth.swift): the janitor's tick tries again.
            if clients[ci].state == .replicationWait { return }
        }
    }

    /// Room for one more server of pool `pi`: this worker's quota of the pool, then the connection-limit
    /// groups. As PgBouncer does for a replication client (launch_new_connection, evict_if_needed), the
    /// pool's least recently used idle server is closed to make room ("evicted"); in a full group, an
    /// idle server of another pool is retired (`groupRoom`) and the launch follows its end.
    func replicationRoom(_ pi: Int) -> Bool {
        while pools[pi].serverCount >= pools[pi].limit {
            guard evictIdle(pi) else { return false }
        }
        guard pools[pi].limits.grouped else { return true }
        for g in [pools[pi].limits.dbGroup, pools[pi].limits.userGroup] where g >= 0 {
            while groupServers(Int(g)) >= groupLimit(Int(g)) && evictIdle(pi) {}
        }
        return groupRoom(pi)
    }

    /// Closes the pool's idle server unused the longest (PgBouncer's evict_pool_connection). False: none.
    private func evictIdle(_ pi: Int) -> Bool {
        var oldest: Int32 = -1
        var si = pools[pi].idle.head
        while si >= 0 {
            if oldest < 0 || servers[si].stateSince < servers[oldest].stateSince { oldest = si }
            si = servers[si].links.next
        }
        guard oldest >= 0 else { return false }
        closeServer(oldest, reason: "evicted")
        return true
    }

    /// The pool's replication client that has waited longest (a walk of the table: such clients are few).
    private func oldestReplicationWaiter(_ p: Int32) -> Int32? {
        var best: Int32 = -1
        var ci: Int32 = 0
        let cap = Int32(clients.capacity)
        while ci < cap {
            if clients[ci].state == .replicationWait && clients[ci].pool == p
                && (best < 0 || clients[ci].stateSince < clients[best].stateSince) { best = ci }
            ci += 1
        }
        return best >= 0 ? best : nil
    }

    /// `launchServer` made server `si` for replication client `ci`: they are linked from now on (as
    /// PgBouncer links them when it sends the startup packet), so that the server's login answers the
    /// client and the client's departure closes the server.
    func linkReplicationServer(_ ci: Int32, _ si: Int32) {
        servers[si].replication = clients[ci].info?.login?.replication ?? .logical
        clients[ci].server = si
        setClientState(ci, .replicationLogin)
    }

    /// The startup parameters of a replication client's own server, after the database entry's: the
    /// client's tracked parameters (its value replaces the entry's), `replication` as PgBouncer sends it
    /// (`database` or `yes`), and the client's `options` untouched. Physical replication connections take
    /// no SET, so everything the client asked for goes here.
    func addReplicationParameters(_ si: Int32, _ parameters: inout [(String, String)]) {
        let ci = servers[si].client
        guard ci >= 0, let info = clients[ci].info else { return }
        for (t, name) in tracked.names.enumerated() {
            guard let value = info.params.values[t] else { continue }
            if let i = parameters.firstIndex(where: { $0.0.lowercased() == tracked.lowered[t] }) {
                parameters[i].1 = value
            } else {
                parameters.append((name, value))
            }
        }
        parameters.append(("replication", servers[si].replication.startupValue))
        if let options = info.login?.replicationOptions { parameters.append(("options", options)) }
    }

    /// The own server of a replication client finished its login (and connect_query, if any): the
    /// client's login ends with that server's own ParameterStatus set, and the pair is linked.
    func replicationServerReady(_ si: Int32) {
        let ci = servers[si].client
        let p = servers[si].pool
        guard ci >= 0, clients[ci].state == .replicationLogin, let sinfo = servers[si].info else {
            closeServer(si, reason: "replication client was closed")
            launchIfNeeded(p)
            return
        }
        sinfo.login = nil
        scratch.clear()
        Backend.authenticationOk(into: &scratch)
        for (name, value) in sinfo.reported { Backend.parameterStatus(into: &scratch, name: name, value: value) }
        Backend.backendKeyData(into: &scratch, processID: clientProcessID(ci), secretKey: clients[ci].cancelKey)
        Backend.readyForQuery(into: &scratch, status: servers[si].txStatus)
        clients[ci].io.out.append(scratch)
        sinfo.reported = []
        servers[si].lastReady = now
        join(ci, si)  // both `.active`; the client's login state goes
        log.debug("S-\(servers[si].id): replication connection ready for C-\(clients[ci].id) (backend pid \(servers[si].backendPID))")
        if !flushClient(ci) { return }
        if clients[ci].io.input.hasUnscanned || clients[ci].io.readable { clientData(ci) }
        if !hot.pointee.paused { launchIfNeeded(p) }
    }

    /// A replication client's own server closes before its login ended (`closeServer`): the client's
    /// login fails with the server's reason ("login failed" when PostgreSQL refused it), as PgBouncer's
    /// unlink_server tells it.
    func replicationLoginFailed(_ si: Int32, reason: String) {
        let ci = servers[si].client
        servers[si].client = -1
        clients[ci].server = -1
        sendClientError(ci, ErrorFields(severity: "FATAL", code: SQLState.protocolViolation, message: reason), close: true)
    }

    /// A replication client leaves before its login ended (`detachClient`): out of the pool's count, and
    /// its own server, if launched, closes.
    func replicationClientLeaves(_ ci: Int32) {
        let si = clients[ci].server
        if si >= 0 {
            clients[ci].server = -1
            servers[si].client = -1
            let p = servers[si].pool
            closeServer(si, reason: "replication client disconnected")
            launchIfNeeded(p)
        }
        setClientState(ci, .idle)
    }
}
