// Stopping the service as PgBouncer's SHUTDOWN WAIT_FOR_CLIENTS / WAIT_FOR_SERVERS (SIGTERM / SIGINT) do.
import Shared

extension Worker {
    /// PgBouncer's `server shutting down` (FATAL 08P01): during WAIT_FOR_SERVERS (`safe`) a client that
    /// needs a server, or is waiting for one, is closed instead of served.
    static let serverShuttingDown = ErrorFields(severity: "FATAL", code: SQLState.protocolViolation,
                                                message: "server shutting down")
    /// PgBouncer's `pooler is shutting down` (FATAL 08P01): a client that logs in to a database while
    /// the service stops.
    static let poolerShuttingDown = ErrorFields(severity: "FATAL", code: SQLState.protocolViolation,
                                                message: "pooler is shutting down")

    /// The supervisor's `shutdown`. As in PgBouncer, a graceful (WAIT_FOR_CLIENTS) or safe
    /// (WAIT_FOR_SERVERS) stop closes the TCP listeners and keeps the Unix socket: the admin console
    /// still logs in there (SHOW, and a second SHUTDOWN), while a login to a database gets `pooler is
    /// shutting down` once authenticated (`authenticated`). A safe stop also hands no server to anyone
    /// any more: clients queued or waiting for a pool's first login get `server shutting down` at the
    /// next tick (`shutdownTick`), and so does any client whose next transaction needs a server
    /// (`acquireServer`); linked clients finish their transaction (session mode: until they leave),
    /// and the service exits once no server
    /// is in use in any worker (the supervisor's `shutdown(.immediate)`, ServiceStop.swift). A
    /// graceful stop serves every client already in until it leaves.
    func beginServiceShutdown(_ mode: ShutdownMode) {
        serviceStopping = true
        beginShutdown(mode, keepUnixSocket: true)
    }

    /// Every 100 ms (the janitor's cadence, as PgBouncer's janitor does it every 1/3 s) while a safe
    /// stop runs: the clients queued for a server, or waiting for a pool's first login, are failed.
    @inline(never)  // cold: kept out of the loop turn (see `turn`)
    func shutdownTick() {
        if hot.pointee.safeShutdown && hot.pointee.running { failClientsWaitingForServers() }
    }

    /// What the clients still here get (FATAL, 57P01 admin_shutdown) when the worker exits: when the
    /// service stops, `database removed`, what PgBouncer's exit cleanup tells its clients (once
    /// WAIT_FOR_SERVERS has seen every server released, or on an immediate stop); when a rolling
    /// restart's drain or a lost supervisor's drain times out, `pgswift is shutting down`.
    func exitNotice() -> (reason: String, code: String) {
        (serviceStopping ? "database removed" : "pgswift is shutting down", SQLState.adminShutdown)
    }

    func failClientsWaitingForServers() {
        var ci: Int32 = 0
        let cap = Int32(clients.capacity)
        while ci < cap {
            if clients[ci].state == .waitServer || clients[ci].state == .waitWelcome || clients[ci].state == .replicationWait {
                sendClientError(ci, Worker.serverShuttingDown, close: true)
            }
            ci += 1
        }
    }
}
