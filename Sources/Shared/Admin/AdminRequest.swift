// An admin console query forwarded by the worker that received it to the supervisor, which answers it.

/// The worker knows who the admin client is; the supervisor has the merged stats and the process
/// controls. The request ID travels in the chunk header and comes back with the `.adminResult` blob.
public struct AdminRequest: Equatable, Sendable {
    public var requestID: UInt32
    /// The client's user is in admin_users (false: a stats_users member, SHOW only).
    public var isAdmin: Bool
    /// The query text exactly as received (PgBouncer's error texts quote it).
    public var query: String

    public init(requestID: UInt32, isAdmin: Bool, query: String) {
        self.requestID = requestID
        self.isAdmin = isAdmin
        self.query = query
    }

    /// [flags u8][query UTF-8]
    public func encode() -> [UInt8] {
        [isAdmin ? 1 : 0] + Array(query.utf8)
    }

    public static func decode(_ bytes: [UInt8], requestID: UInt32) throws(StatsDecodeError) -> AdminRequest {
        guard let flags = bytes.first, flags & ~1 == 0 else { throw StatsDecodeError("bad admin request flags") }
        guard let query = bytes.dropFirst().withUnsafeBufferPointer({ String(validating: $0, as: UTF8.self) }) else {
            throw StatsDecodeError("admin query is not valid UTF-8")
        }
        return AdminRequest(requestID: requestID, isAdmin: flags & 1 != 0, query: query)
    }
}
