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

    /// [flags u8][query UTF-8 to the end]
    public func encode() -> [UInt8] {
        var w = MessageWriter(capacity: 1 + query.utf8.count)
        w.put(isAdmin)
        w.raw(query.utf8)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8], requestID: UInt32) throws(StatsDecodeError) -> AdminRequest {
        try StatsReader.reading(bytes) { r throws(StatsDecodeError) in
            AdminRequest(requestID: requestID, isAdmin: try r.bool("admin request flags"),
                         query: try StatsReader.text(r.rest(), "admin query"))
        }
    }
}
