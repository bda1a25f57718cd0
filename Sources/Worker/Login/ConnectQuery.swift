// connect_query: a [databases] entry's query, run once on each new server connection after its
// login and before it serves any client (PgBouncer's exec_on_connect).
//
// As in PgBouncer, the server stays in its login state (counted as connecting, bounded by
// server_connect_timeout) until the query's ReadyForQuery; rows and notices are dropped, an error is
// logged and otherwise ignored (PostgreSQL rolls back what the failed query string did), and
// ParameterStatus messages count as the login's (so a SET of a reported parameter becomes the pool's
// welcome value). Unlike PgBouncer, which ignores the transaction status, a server the query leaves
// inside a transaction is closed and its pool's login fails: it must never reach a client that way.
import Shared

extension Worker {
    /// At the login's ReadyForQuery: sends the database's connect_query, if it has one. True when sent;
    /// `connectQueryMessage` then reads the answer.
    func startConnectQuery(_ si: Int32) -> Bool {
        guard let query = pools[Int(servers[si].pool)].entry.connectQuery, !query.isEmpty,
              let info = servers[si].info else { return false }
        info.connectQueryRunning = true
        log.debug("S-\(servers[si].id): server login ok, running connect_query")
        scratch.clear()
        Frontend.query(into: &scratch, sql: query)
        servers[si].io.out.append(scratch)
        return true
    }

    /// One message of connect_query's answer.
    func connectQueryMessage(_ si: Int32, _ type: UInt8, _ body: [UInt8]) {
        switch type {
        case BackendType.errorResponse:
            let f = body.withUnsafeBytes { ErrorFields.parse($0) }
            log.error("S-\(servers[si].id): error while executing connect_query: "
                      + "\(f?.severity ?? "ERROR"): \(f?.message ?? "(no message)")")
        case BackendType.parameterStatus:
            noteLoginParameter(si, body)
        case BackendType.readyForQuery:
            servers[si].info?.connectQueryRunning = false
            if body.first == UInt8(ascii: "I") {
                serverLoginDone(si)
            } else {
                serverLoginFailed(si, ErrorFields(severity: "FATAL", code: SQLState.invalidTransactionState,
                                                  message: "connect_query left the server connection inside a transaction"),
                                  refusal: true)  // retrying gives the same: fail the waiting clients
            }
        default:
            // RowDescription, DataRow, CommandComplete, EmptyQueryResponse, NoticeResponse, COPY out.
            break
        }
    }
}
