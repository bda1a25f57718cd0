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
    /// any more: clients queued or waiting for a pool's first login get `server shutting down` now,
    /// and so does any client whose next transaction needs a server (`acquireServer`); linked clients
    /// finish their transaction (session mode: until they leave), and the worker exits once no server
    /// is linked. A graceful stop serves every client already in until it leaves.
    func beginServiceShutdown(_ mode: ShutdownMode) {
        serviceStopping = true
        if mode == .safe { failClientsWaitingForServers() }
        beginShutdown(mode, keepUnixSocket: true)
    }

    func failClientsWaitingForServers() {
        var ci: Int32 = 0
        let cap = Int32(clients.capacity)
        while ci < cap {
            if clients[ci].state == .waitServer || clients[ci].state == .waitWelcome {
                sendClientError(ci, Worker.serverShuttingDown, close: true)
            }
            ci += 1
        }
    }
}
