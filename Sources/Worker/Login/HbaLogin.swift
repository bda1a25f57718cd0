// auth_type = hba: the method of the first matching auth_hba_file line, and the peer and cert methods.
import Shared
import Glibc

extension Worker {
    /// The authentication method for this client under `auth_type = hba`. nil means the client was
    /// dealt with here: refused (a `reject` line, no line at all, cert without TLS) or settled by peer.
    func hbaAuthType(_ ci: Int32) -> AuthType? {
        guard let info = clients[ci].info else { return nil }
        let peer: HbaPeer
        if clients[ci].isUnix {
            peer = .unix
        } else if let address = Sockets.peerAddress(clients[ci].io.fd), let p = HbaPeer(address) {
            peer = p
        } else {
            hbaReject(ci, reason: "cannot read the client's address")
            return nil
        }
        // A physical replication connection matches only lines for `replication` (Hba.swift).
        let replication = info.login?.replication ?? .none
        guard let rules = config.hba,
              let rule = rules.match(peer: peer, tls: clients[ci].usesTLS, database: info.database, user: info.user,
                                     replication: replication) else {
            hbaReject(ci, reason: "no auth_hba_file line matches host \(info.peer), user \(info.user), "
                      + (replication == .physical ? "physical replication" : "database \(info.database)")
                      + (clients[ci].usesTLS ? ", TLS" : ", no TLS"))
            return nil
        }
        log.debug("C-\(clients[ci].id): \(rule.file):\(rule.line) chose \(rule.method.rawValue)")
        switch rule.method {
        case .trust: return .trust
        case .password: return .plain
        case .md5: return .md5
        case .scramSHA256: return .scramSHA256
        case .reject:
            hbaReject(ci, reason: "rejected by \(rule.file):\(rule.line)")
        case .peer:
            peerAuthentication(ci, map: rule.identMap)
        case .cert:
            // The certificate check is auth_type cert's, on the TLS side, with the line's ident map;
            // without TLS there is none.
            if clients[ci].usesTLS {
                info.login?.identMap = rule.identMap
                return .cert
            }
            log.warning("C-\(clients[ci].id): cert authentication for user \"\(info.user)\" refused: the connection is not TLS")
            failClient(ci, code: SQLState.invalidAuthorizationSpecification, message: "cert authentication requires TLS")
        }
        return nil
    }

    /// PgBouncer's answer to a refused login; the log says which line (or none) refused it.
    private func hbaReject(_ ci: Int32, reason: String) {
        log.warning("C-\(clients[ci].id): login rejected: \(reason)")
        failClient(ci, code: SQLState.invalidAuthorizationSpecification, message: "login rejected")
    }

    /// `peer`: the Unix socket's peer uid must belong to the user name the client asked for, or, with
    /// `map=`, be one the ident map lets log in as that user.
    func peerAuthentication(_ ci: Int32, map: IdentMap?) {
        guard let info = clients[ci].info else { return }
        guard clients[ci].isUnix else {
            // The parser only allows peer on local lines; a TCP client never gets here.
            hbaReject(ci, reason: "peer authentication over TCP")
            return
        }
        guard let uid = Sockets.peerUID(clients[ci].io.fd), let name = Posix.userName(uid: uid) else {
            log.warning("C-\(clients[ci].id): peer authentication failed for user \"\(info.user)\": cannot identify the socket's peer")
            failClient(ci, code: SQLState.invalidAuthorizationSpecification,
                       message: "Peer authentication failed for user \"\(info.user)\"")
            return
        }
        guard map?.permits(systemUser: name, databaseUser: info.user) ?? (name == info.user) else {
            // With a map, PgBouncer's words, then who asked.
            let why = map.map { "ident map \($0.name) cannot be matched: OS user \"\(name)\" may not log in as user \"\(info.user)\"" }
                ?? "peer authentication failed for user \"\(info.user)\": the peer is OS user \"\(name)\""
            log.warning("C-\(clients[ci].id): \(why)")
            failClient(ci, code: SQLState.invalidAuthorizationSpecification,
                       message: "Peer authentication failed for user \"\(info.user)\"")
            return
        }
        authenticated(ci)
    }
}
