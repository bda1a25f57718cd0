// The admin console's worker half: login to the virtual `pgbouncer`/`pgswift` database, access
// rules, and simple-protocol queries relayed to the supervisor (which holds the merged stats).
import Shared
import Glibc

extension Worker {
    /// The startup packet named an admin database. Like PgBouncer, a Unix-socket peer running as root
    /// or as pgswift's own user gets in without a password; everyone else authenticates as usual and
    /// must then be in admin_users or stats_users.
    func adminLogin(_ ci: Int32) {
        if clients[ci].isUnix, let uid = Sockets.peerUID(clients[ci].io.fd), uid == 0 || uid == Posix.getuid() {
            clients[ci].admin = .full
            adminLoginDone(ci)
            return
        }
        clients[ci].admin = .pending
        startAuthentication(ci)
    }

    /// The client proved who it is: check the lists, then finish the login.
    func adminAuthenticated(_ ci: Int32) {
        let user = clients[ci].info?.user ?? ""
        if config.authType == .any || config.adminUsers.contains(user) {
            clients[ci].admin = .full
        } else if config.statsUsers.contains(user) {
            clients[ci].admin = .statsOnly
        } else {
            log.warning("C-\(clients[ci].id): admin console refused to user \"\(user)\" (not in admin_users or stats_users)")
            failClient(ci, code: SQLState.protocolViolation, message: "not allowed")
            return
        }
        // The console counts for max_db_client_connections and max_user_client_connections too;
        // admin_users are never refused, as in PgBouncer.
        if let refusal = admitToClientLimits(ci, entry: nil, exempt: config.adminUsers.contains(user)) {
            failClient(ci, code: SQLState.protocolViolation, message: refusal)
            return
        }
        adminLoginDone(ci)
    }

    /// No server is involved: AuthenticationOk, a few parameters, our key, ReadyForQuery.
    private func adminLoginDone(_ ci: Int32) {
        scratch.clear()
        Backend.authenticationOk(into: &scratch)
        for (name, value) in [("server_version", PgswiftVersion.string + " pgswift"), ("server_encoding", "UTF8"),
                              ("client_encoding", "UTF8"), ("DateStyle", "ISO"), ("TimeZone", "GMT"),
                              ("standard_conforming_strings", "on"), ("integer_datetimes", "on"),
                              ("is_superuser", "off")] {
            Backend.parameterStatus(into: &scratch, name: name, value: value)
        }
        Backend.backendKeyData(into: &scratch, processID: clientProcessID(ci), secretKey: clients[ci].cancelKey)
        Backend.readyForQuery(into: &scratch, status: UInt8(ascii: "I"))
        clients[ci].io.out.append(scratch)
        setClientState(ci, .idle)
        if config.logConnections { log.info("C-\(clients[ci].id): admin console login (\(clients[ci].admin == .full ? "admin" : "stats"))") }
        flushClient(ci)
        if clients[ci].state == .idle { adminInput(ci) }
    }

    /// Events of a logged-in admin client: write what is pending, then run queries one at a time.
    func adminInput(_ ci: Int32) {
        while clients[ci].state == .idle {
            if !clients[ci].io.out.isEmpty && !flushClient(ci) { return }
            // One query at a time: the rest waits in the buffer until the answer came back.
            if clients[ci].adminRequest != 0 { return }
            if adminNextMessage(ci) { continue }
            let read = readHeld(client: ci, tooLarge: (SQLState.programLimitExceeded, "admin query too long"),
                                closed: "admin client closed the connection")
            if read != .more { return }
        }
    }

    /// Handles one complete message if the buffer holds one; true when it consumed something.
    private func adminNextMessage(_ ci: Int32) -> Bool {
        let type: UInt8, body: [UInt8]
        switch clients[ci].io.heldMessage(maxLength: frameLimit(.held)) {
        case .none: return false
        case .message(let t, let raw): (type, body) = (t, [UInt8](raw))
        case .invalid(let h):
            failClient(ci, code: SQLState.protocolViolation, message: "invalid message length \(h.length)")
            return false
        }
        clients[ci].io.consume(Wire.headerSize + body.count, buffers)
        clients[ci].io.input.scan = clients[ci].io.input.start
        if type != FrontendType.terminate && !clients[ci].adminCounted {
            // PgBouncer counts an admin client's first message as a query and a transaction of its admin
            // pool, and no more (nothing ends them): SHOW STATS/TOTALS include the console, as there.
            clients[ci].adminCounted = true
            stats.adminTotals.queryCount &+= 1
            stats.adminTotals.xactCount &+= 1
        }
        switch type {
        case FrontendType.query:
            let text = String(decoding: body.prefix(while: { $0 != 0 }), as: UTF8.self)
            adminQuery(ci, text)
        case FrontendType.terminate:
            closeClient(ci, reason: "admin client sent Terminate", notify: false, quiet: true)
        default:
            failClient(ci, code: SQLState.protocolViolation,
                       message: "unsupported pkt type: \(type) (the admin console speaks the simple query protocol only)")
        }
        return true
    }

    private func adminQuery(_ ci: Int32, _ query: String) {
        if query.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" || $0 == ";" }) {
            scratch.clear()
            scratch.appendEmptyMessage(BackendType.emptyQueryResponse)
            Backend.readyForQuery(into: &scratch, status: UInt8(ascii: "I"))
            clients[ci].io.out.append(scratch)
            return
        }
        guard controlFD >= 0 else {
            adminAnswered(ci, error: AdminError("the admin console needs the pgswift supervisor"))
            return
        }
        stats.nextAdminRequest &+= 1
        if stats.nextAdminRequest == 0 { stats.nextAdminRequest = 1 }
        let id = stats.nextAdminRequest
        stats.pendingAdmin[id] = (ci, clients[ci].io.gen)
        clients[ci].adminRequest = id
        setClientState(ci, clients[ci].state)  // restarts stateSince: the request's wait
        let request = AdminRequest(requestID: id, isAdmin: clients[ci].admin == .full, query: query)
        sendBlob(request.encode(), kind: .adminRequest, requestID: id)
    }

    private func adminAnswered(_ ci: Int32, error: AdminError) {
        scratch.clear()
        AdminResults.error(error, into: &scratch)
        Backend.readyForQuery(into: &scratch, status: UInt8(ascii: "I"))
        clients[ci].io.out.append(scratch)
    }

    /// The supervisor is gone: queries waiting for its answer get an error instead of waiting forever.
    func failPendingAdminRequests() {
        for (id, (ci, gen)) in stats.pendingAdmin {
            guard clients[ci].io.gen == gen, clients[ci].state == .idle, clients[ci].adminRequest == id else { continue }
            clients[ci].adminRequest = 0
            adminAnswered(ci, error: AdminError("the pgswift supervisor is gone; this worker only serves its remaining clients"))
            adminInput(ci)
        }
        stats.pendingAdmin.removeAll()
    }

    /// The supervisor's answer: written to the client with ReadyForQuery, then the next query runs.
    func adminAnswered(requestID: UInt32, bytes: [UInt8]) {
        guard let (ci, gen) = stats.pendingAdmin.removeValue(forKey: requestID) else { return }
        guard clients[ci].io.gen == gen, clients[ci].state == .idle, clients[ci].adminRequest == requestID else { return }
        clients[ci].adminRequest = 0
        bytes.withUnsafeBytes { clients[ci].io.out.append($0) }
        scratch.clear()
        Backend.readyForQuery(into: &scratch, status: UInt8(ascii: "I"))
        clients[ci].io.out.append(scratch)
        setClientState(ci, clients[ci].state)
        adminInput(ci)
    }
}
