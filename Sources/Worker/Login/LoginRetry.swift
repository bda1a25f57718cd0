// server_login_retry as PgBouncer applies it: when a failing pool may try again, which clients a failed
// login fails, and the cached error new clients get meanwhile. Pure rules; ServerLogin.swift acts on them.
import Shared

enum LoginRetry {
    /// A pool whose last login failed starts no new connection until server_login_retry has passed
    /// since the last one started (PgBouncer's last_connect_time check in launch_new_connection).
    static func pending(failing: Bool, lastConnectAt: Int64, now: Int64, retryNanos: Int64) -> Bool {
        failing && now - lastConnectAt < retryNanos
    }

    /// Whether a failed login tells something about every login of the pool: PostgreSQL answered it
    /// with an error (a wrong password, an unknown database, too many connections...), except 57P03
    /// ("the database system is starting up", which passes), or pgswift had no answer to the server's
    /// authentication request (no usable password...). A refused or timed-out connect, a TLS failure
    /// or a server closing the connection is not one (and does not come through the login machine):
    /// those leave waiting clients waiting, as PgBouncer kills its waiting clients only from an
    /// ErrorResponse at login.
    static func isRefusal(_ failure: BackendLoginFailure) -> Bool {
        if case .server(let fields) = failure { return fields.code != SQLState.cannotConnectNow }
        return true
    }

    /// A refusal fails the pool's waiting clients (queued and logging in) unless the pool still has a
    /// logged-in server and knows its welcome parameters (PgBouncer's kill_pool_logins).
    static func failsWaitingClients(refusal: Bool, loggedInServers: Int, welcomeKnown: Bool) -> Bool {
        refusal && !(loggedInServers > 0 && welcomeKnown)
    }

    /// What a new client gets while the pool's login is failing (PgBouncer's check_fast_fail words).
    static func cachedError(_ failure: ErrorFields) -> ErrorFields {
        ErrorFields(severity: "FATAL", code: SQLState.protocolViolation,
                    message: "server login has been failing, cached error: \(failure.message) (server_login_retry)")
    }
}

extension Worker {
    /// PostgreSQL refused another worker's login for a pool this worker may hold: the same as a
    /// refusal here (`poolLoginFailed`), and no connect of this worker until server_login_retry from
    /// now, so that the service tries a failing login once per server_login_retry, as PgBouncer's one
    /// process does, rather than once per worker. A pool not open here has nothing to do.
    func loginRefusedElsewhere(database: String, user: String, code: String, message: String) {
        guard let p = poolIndex[database + "\u{0}" + user] else { return }
        pools[Int(p)].lastConnectAt = now
        poolLoginFailed(p, ErrorFields(severity: "FATAL", code: code, message: message), refusal: true)
    }
}
