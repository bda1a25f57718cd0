// auth_query on the wire: the extended-protocol request, and a pure reader of the server's reply.

/// PgBouncer's auth_query: one row of (user name, password hash) for `$1`, run over a server
/// connection logged in as `auth_user`. The reader takes the reply message by message and
/// decides once ReadyForQuery arrives.
public struct AuthQueryReply: Sendable {
    public enum Outcome: Equatable, Sendable {
        /// The user exists; `password` nil means no password is available (nobody may log in as it).
        case found(user: String, password: String?)
        /// No row, or a row whose user name is NULL (PgBouncer's two ways of saying "no such user").
        case notFound
        /// The query failed or returned something else than one row of two columns (reason for the log).
        case failed(String)
    }

    public enum Step: Equatable, Sendable {
        case more
        /// ReadyForQuery arrived; `transactionStatus` is its status byte.
        case done(Outcome, transactionStatus: UInt8)
        /// A message that has no place in this reply: the connection cannot be trusted any more.
        case protocolError(String)
    }

    private var rows = 0
    private var row: [String?] = []
    private var error: String? = nil

    public init() {}

    /// Parse (unnamed), Bind with the user name as the only text parameter, Execute, Sync.
    public static func request(into out: inout OutBuffer, query: String, user: String) {
        Frontend.parse(into: &out, name: "", query: query)
        Frontend.bind(into: &out, portal: "", statement: "", parameters: [user])
        Frontend.execute(into: &out, portal: "")
        out.appendEmptyMessage(FrontendType.sync)
    }

    public mutating func receive(type: UInt8, body: UnsafeRawBufferPointer) -> Step {
        switch type {
        case BackendType.parseComplete, BackendType.bindComplete, BackendType.commandComplete,
             BackendType.noticeResponse, BackendType.parameterStatus, BackendType.notificationResponse,
             BackendType.emptyQueryResponse, BackendType.noData:
            return .more
        case BackendType.dataRow:
            guard let values = Decode.dataRowText(body) else { return .protocolError("malformed DataRow") }
            rows += 1
            if rows == 1 { row = values }
            return .more
        case BackendType.errorResponse:
            let fields = ErrorFields.parse(body)
            if error == nil {
                error = fields.map { "\($0.message) (\($0.code))" } ?? "malformed ErrorResponse"
            }
            return .more
        case BackendType.portalSuspended:
            return .protocolError("unexpected PortalSuspended")
        case BackendType.readyForQuery:
            guard body.count == 1 else { return .protocolError("malformed ReadyForQuery") }
            return .done(outcome, transactionStatus: body[0])
        default:
            return .protocolError("unexpected message type \(type) in the auth_query reply")
        }
    }

    private var outcome: Outcome {
        if let error { return .failed("auth_query failed: \(error)") }
        if rows == 0 { return .notFound }
        if rows > 1 { return .failed("auth_query returned \(rows) rows (expected at most one)") }
        if row.count != 2 { return .failed("auth_query returned \(row.count) columns (expected user name and password)") }
        guard let user = row[0] else { return .notFound }
        return .found(user: user, password: row[1])
    }
}
