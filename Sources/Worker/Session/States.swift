// The one place a connection changes state, in the manner of PgBouncer's change_client_state /
// change_server_state: `setClientState` and `setServerState` alone write `.state`, and with it keep
// the lists and counters a state implies and `stateSince`. Nothing else adds to or removes from a
// pool's idle list or wait queue, or counts servers by state.
//
// What each state means for the lists and counters (docs/ARCHITECTURE.md draws both machines):
//   client .waitServer         in its pool's wait queue (FIFO), counted in waiting.count
//   client .startup/.auth      holds its login state (`ClientInfo.login`), dropped as it leaves them
//   client .waitWelcome        counted in its pool's welcomeWaitCount (until detachClient)
//   client .replicationWait    counted in its pool's replicationWaitCount; holds its login state too
//   client .replicationLogin   linked (`server`) to its own server, which is connecting or logging in
//   server .connecting/.login  counted in connectingCount
//   server .idle               in its pool's idle list (LIFO), counted in idle.count
//   server .resetting + checking  running server_check_query, counted in checkingCount
//   server .active             counted in the pool's activeCount and the worker's activeServerCount
//   server, any but .free and .cancelRequest: counted in serverCount (a cancel connection is not
//   one of the pool's servers)
// Adding a state: add the case to ClientState/ServerState, then its enter/leave effects here.
import Shared

extension Worker {
    /// Moves a client to `to`: leaves the wait queue when it stops waiting, joins it when it starts.
    /// A move to the same state only restarts `stateSince`.
    @inline(__always)
    func setClientState(_ ci: Int32, _ to: ClientState) {
        let from = clients[ci].state
        clients[ci].stateSince = now
        if from == to { return }
        if from == .waitServer {
            removeWaiting(ci)
            clients[ci].waitNotified = false  // told again if it queues again (query_wait_notify)
        }
        // A client in .waitWelcome is counted while it belongs to its pool (detachClient uncounts it).
        if from == .waitWelcome && clients[ci].pool >= 0 { pools[Int(clients[ci].pool)].welcomeWaitCount -= 1 }
        if from == .replicationWait { pools[Int(clients[ci].pool)].replicationWaitCount -= 1 }
        clients[ci].state = to
        if to == .waitServer { enqueueWaiting(ci) }
        if to == .waitWelcome { pools[Int(clients[ci].pool)].welcomeWaitCount += 1 }
        if to == .replicationWait { pools[Int(clients[ci].pool)].replicationWaitCount += 1 }
        if to == .free { clients[ci].skipUntilSync = false }
        // The login ends here, whichever way: what only it needed goes (an idle client keeps none).
        if Worker.isLoginState(from) && !Worker.isLoginState(to) {
            // A login accepted over max_client_conn is counted as it ends, so that its free gives the
            // place back like any other (ServiceLimits.swift, `overLimitLogin`).
            if clients[ci].info?.login?.overLimit == true { overLimitLogin(ci, counted: true) }
            clients[ci].info?.login = nil
        }
        #if DEBUG
        checkPoolInvariants(clients[ci].pool)
        checkScopedFields(client: ci)
        #endif
    }

    /// Moves a server to `to`, keeping its pool's idle list and counters and the worker's count of
    /// active servers. The server's `pool` must be set before it leaves `.free`.
    @inline(__always)
    func setServerState(_ si: Int32, _ to: ServerState) {
        let from = servers[si].state
        servers[si].stateSince = now
        if from == to { return }
        if servers[si].listener {
            // A listening connection is in no list or count of its pool (ListenRelay.swift).
            servers[si].state = to
            return
        }
        let p = Int(servers[si].pool)
        switch from {
        case .idle:
            removeIdle(si)
        case .active:
            pools[p].activeCount -= 1
            hot.pointee.activeServerCount -= 1
        case .connecting, .login:
            if to != .connecting && to != .login { pools[p].connectingCount -= 1 }
        case .resetting:
            // The end of a server_check_query, passed or not (Linking.swift, `checkServer`).
            if servers[si].checking {
                servers[si].checking = false
                pools[p].checkingCount -= 1
            }
        default:
            break
        }
        assert(p >= 0, "a server record changes state without a pool")
        if from == .free {
            if to != .cancelRequest { pools[p].serverCount += 1 }
        } else if to == .free || to == .cancelRequest {
            if from != .cancelRequest { pools[p].serverCount -= 1 }
        }
        servers[si].state = to
        // Fields that belong to one state end with it (see "State-scoped fields" below).
        if from == .active { servers[si].releaseOnFlush = false }
        if to == .free { servers[si].internalQueries = 0 }
        switch to {
        case .idle:
            pushIdle(si)
        case .active:
            pools[p].activeCount += 1
            hot.pointee.activeServerCount += 1
        case .connecting, .login:
            if from != .connecting && from != .login { pools[p].connectingCount += 1 }
        default:
            break
        }
        #if DEBUG
        checkPoolInvariants(servers[si].pool)
        checkScopedFields(server: si)
        #endif
    }

    /// A client logging in: the states that carry `ClientInfo.login`. A replication client's login
    /// goes on until its own server's has ended (Replication.swift).
    @inline(__always)
    static func isLoginState(_ s: ClientState) -> Bool {
        s == .startup || s == .auth || s == .replicationWait || s == .replicationLogin
    }

    /// Counted in its pool's serverCount: every state but free and a cancel connection's (what
    /// `setServerState` counts and `checkPoolInvariants` checks).
    @inline(__always)
    static func isPoolServer(_ s: ServerState) -> Bool { s != .free && s != .cancelRequest && s != .listening }

    #if DEBUG
    /// Debug builds (`make test`): after every transition, the pool's counters equal what its lists and
    /// its servers' states say. A mismatch is a bug in a transition: stop at once, loudly.
    func checkPoolInvariants(_ p: Int32) {
        guard p >= 0, Int(p) < pools.capacity, pools[Int(p)].inUse else { return }
        let pi = Int(p)
        var idle = 0, wait = 0, all = 0, connecting = 0, active = 0, activeAll = 0, checking = 0
        var si = pools[pi].idle.head, last: Int32 = -1
        while si >= 0 {
            precondition(servers[si].state == .idle, "S-\(servers[si].id) in the idle list in state \(servers[si].state)")
            idle += 1
            last = si
            si = servers[si].links.next
        }
        precondition(pools[pi].idle.tail == last, "pool \(pi): idle tail \(pools[pi].idle.tail), last in the list \(last)")
        var ci = pools[pi].waiting.head
        while ci >= 0 {
            precondition(clients[ci].state == .waitServer, "C-\(clients[ci].id) in the wait queue in state \(clients[ci].state)")
            wait += 1
            ci = clients[ci].links.next
        }
        var welcomeWait = 0, replicationWait = 0
        var ck: Int32 = 0
        while ck < Int32(clients.capacity) {
            if clients[ck].pool == p && clients[ck].state == .waitWelcome { welcomeWait += 1 }
            if clients[ck].pool == p && clients[ck].state == .replicationWait { replicationWait += 1 }
            ck += 1
        }
        precondition(welcomeWait == pools[pi].welcomeWaitCount,
                     "pool \(pi): welcomeWaitCount \(pools[pi].welcomeWaitCount), clients in waitWelcome \(welcomeWait)")
        precondition(replicationWait == pools[pi].replicationWaitCount,
                     "pool \(pi): replicationWaitCount \(pools[pi].replicationWaitCount), clients in replicationWait \(replicationWait)")
        var i: Int32 = 0
        while i < Int32(servers.capacity) {
            let s = servers[i].state
            if s == .active { activeAll += 1 }
            if servers[i].pool == p && Worker.isPoolServer(s) && !servers[i].listener {
                all += 1
                if s == .connecting || s == .login { connecting += 1 }
                if s == .active { active += 1 }
                if servers[i].checking { checking += 1 }
            }
            i += 1
        }
        let c = pools[pi]
        precondition(idle == c.idle.count && wait == c.waiting.count && all == c.serverCount
                     && connecting == c.connectingCount && active == c.activeCount && activeAll == hot.pointee.activeServerCount
                     && checking == c.checkingCount,
                     "pool \(c.database)/\(c.user): counters idle \(c.idle.count) wait \(c.waiting.count) servers \(c.serverCount) "
                     + "connecting \(c.connectingCount) active \(c.activeCount) (worker \(hot.pointee.activeServerCount)) checking "
                     + "\(c.checkingCount), but the lists and states say \(idle) \(wait) \(all) \(connecting) \(active) "
                     + "(\(activeAll)) \(checking)")
    }

    /// State-scoped fields: flags that mean something in some states only. The transitions above end
    /// them with their state (`releaseOnFlush` when a server leaves `.active`, `internalQueries` and
    /// `skipUntilSync` when the record is freed); this checks that no other state carries one:
    ///   server.releaseOnFlush   only `.active`: release (or, draining, move the pair) once the
    ///                           ReadyForQuery is flushed
    ///   server.internalQueries  only `.active` (parameter SETs before the client's query), `.resetting`
    ///                           (ROLLBACK, server_reset_query) and `.closing`/`.beingCanceled` (a
    ///                           server dropped before its swallowed answers came)
    ///   server.checking         only `.resetting` (server_check_query running)
    ///   client.skipUntilSync    only `.idle`, `.waitServer`, `.active` (a logged-in client)
    ///   client.waitNotified     only `.waitServer` (told it is queued, query_wait_notify)
    ///   client.info.login       only `.startup`, `.auth`, `.replicationWait`, `.replicationLogin`
    ///                           (dropped as the client leaves them)
    ///   client.server           only `.active`, and `.replicationLogin` (its own server logging in)
    ///   server.replication      only `.connecting`, `.login`, `.active` (linked to its client), and
    ///                           `.closing`/`.free` on its way out
    func checkScopedFields(server si: Int32) {
        let s = servers[si]
        precondition(!s.checking || s.state == .resetting, "S-\(s.id): checking in state \(s.state)")
        precondition(!s.releaseOnFlush || s.state == .active, "S-\(s.id): releaseOnFlush in state \(s.state)")
        precondition(s.internalQueries == 0 || s.state == .active || s.state == .resetting || s.state == .closing
                     || s.state == .beingCanceled,
                     "S-\(s.id): \(s.internalQueries) internal queries in state \(s.state)")
        precondition(s.replication == .none || s.state == .connecting || s.state == .login || s.state == .active
                     || s.state == .closing || s.state == .free,
                     "S-\(s.id): a replication connection in state \(s.state)")
    }

    func checkScopedFields(client ci: Int32) {
        let c = clients[ci]
        precondition(!c.skipUntilSync || c.state == .idle || c.state == .waitServer || c.state == .active,
                     "C-\(c.id): skipUntilSync in state \(c.state)")
        precondition(!c.waitNotified || c.state == .waitServer, "C-\(c.id): waitNotified in state \(c.state)")
        precondition(c.info?.login == nil || Worker.isLoginState(c.state), "C-\(c.id): login state kept in state \(c.state)")
        precondition(c.server < 0 || c.state == .active || c.state == .replicationLogin,
                     "C-\(c.id): linked to S-\(c.server) in state \(c.state)")
    }

    /// A linked pair points at each other (checked where pairs are made and undone).
    func checkLink(_ ci: Int32, _ si: Int32) {
        precondition(clients[ci].server == si && servers[si].client == ci
                     && clients[ci].state == .active && servers[si].state == .active,
                     "C-\(clients[ci].id) and S-\(servers[si].id) are not a linked pair")
    }
    #endif
}
