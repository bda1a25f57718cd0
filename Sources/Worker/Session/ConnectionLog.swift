// Log lines of connection events in PgBouncer's shape, for tools that read PgBouncer's log (pgbadger).
import Shared
import Glibc

extension Worker {
    /// PgBouncer's socket prefix with pgswift's connection number: `C-7: db/user@127.0.0.1:50123`
    /// (`[::1]:port` for IPv6, `unix(<pid>):<listen_port>` for the Unix socket, `(nodb)`/`(nouser)`
    /// before the startup packet named them).
    func clientLogPrefix(_ ci: Int32) -> String {
        guard let info = clients[ci].info else { return "C-\(clients[ci].id):" }
        if info.peer == "unix" {
            // Looked up once, the first time a line needs it (one getsockopt), then kept.
            let pid = Sockets.peerPID(clients[ci].io.fd) ?? 0
            info.peer = (pid > 0 ? "unix(\(pid))" : "unix") + ":\(config.listenPort)"
        }
        let db = info.database.isEmpty ? "(nodb)" : info.database
        let user = info.user.isEmpty ? "(nouser)" : info.user
        return "C-\(clients[ci].id): \(db)/\(user)@\(info.peer)"
    }

    /// `S-3: db/user@127.0.0.1:5432` (`unix:<port>` for a Unix socket), the pool's database and user.
    func serverLogPrefix(_ si: Int32) -> String {
        let p = Int(servers[si].pool)
        let db = p >= 0 ? pools[p].database : "(nodb)"
        let user = p >= 0 ? pools[p].user : "(nouser)"
        return "S-\(servers[si].id): \(db)/\(user)@\(ConnectionLog.serverAddress(servers[si].info?.address ?? ""))"
    }

    /// PgBouncer's `closing because: <reason> (age=<seconds>s)`, with log_disconnections.
    @inline(never)  // error path: kept out of the forward loops it is called from
    func logClientClosing(_ ci: Int32, _ reason: String) {
        guard config.logDisconnections else { return }
        log.info("\(clientLogPrefix(ci)) closing because: \(reason) (age=\(ConnectionLog.ageSeconds(now - clients[ci].connectedAt))s)")
    }

    func logServerClosing(_ si: Int32, _ reason: String) {
        guard config.logDisconnections else { return }
        log.info("\(serverLogPrefix(si)) closing because: \(reason) (age=\(ConnectionLog.ageSeconds(now - servers[si].createdAt))s)")
    }

    /// PgBouncer's `new connection to server (from <local address>)`, with log_connections.
    func logNewServerConnection(_ si: Int32) {
        guard config.logConnections else { return }
        let address = servers[si].info?.socketAddress
        if address == nil || address?.family == AF_UNIX {
            log.info("\(serverLogPrefix(si)) new connection to server")
        } else {
            let local = Sockets.localAddress(servers[si].io.fd)?.description ?? "?"
            log.info("\(serverLogPrefix(si)) new connection to server (from \(local))")
        }
    }
}

enum ConnectionLog {
    /// Whole seconds, as PgBouncer prints ages.
    static func ageSeconds(_ nanos: Int64) -> Int64 { max(0, nanos) / 1_000_000_000 }

    /// A server address as PgBouncer's log shows it: `host:port`, `[v6]:port`, and `unix:<port>` for
    /// `unix:/dir/.s.PGSQL.<port>`.
    static func serverAddress(_ description: String) -> String {
        guard description.hasPrefix("unix:") else { return description }
        let marker = "/.s.PGSQL."
        guard let slash = description.lastIndex(of: "/"),
              description[slash...].hasPrefix(marker) else { return "unix" }
        return "unix:" + description[description.index(slash, offsetBy: marker.count)...]
    }
}
