// Protocol v3 constants, message type bytes and the allocation-free header scanner.

/// Wire-level constants of protocol 3.0.
public enum Wire {
    /// 3.0 as sent in StartupMessage (major << 16 | minor).
    public static let protocolVersion3: Int32 = 196608
    /// Highest 3.x minor version pgswift speaks; newer clients are told this via NegotiateProtocolVersion.
    public static let newestMinorVersion: Int = 0
    public static let sslRequestCode: Int32 = 80877103
    public static let gssEncRequestCode: Int32 = 80877104
    public static let cancelRequestCode: Int32 = 80877102
    /// PostgreSQL's own limit on startup packets (MAX_STARTUP_PACKET_LENGTH); larger ones are refused
    /// before anything is buffered.
    public static let maxStartupPacketLength: Int = 10000
    /// Bytes of type + length that precede every regular message body.
    public static let headerSize: Int = 5

    /// ReadyForQuery transaction status bytes.
    public enum TransactionStatus {
        public static let idle = UInt8(ascii: "I")
        public static let inTransaction = UInt8(ascii: "T")
        public static let failed = UInt8(ascii: "E")
    }

    /// Reads the type byte and length of the message starting at `p`.
    ///
    /// Returns `.incomplete` while fewer than the 5 header bytes are available, `.invalid` when the
    /// length is below 4 or above `maxLength`, otherwise `.header` — as soon as the header is there,
    /// even if the body is not yet: the caller compares `header.frameLength` with what it has.
    @inlinable
    public static func peekHeader(_ p: UnsafeRawPointer, available: Int, maxLength: Int) -> FrameResult {
        if available < 5 { return .incomplete }
        let type = p.load(as: UInt8.self)
        let length = Int(ByteReader.int32(at: p + 1))
        if length < 4 || length > maxLength {
            return .invalid(reason: invalidLengthReason(type: type, length: length, maxLength: maxLength))
        }
        return .header(MessageHeader(type: type, length: length))
    }

    // Kept out of line so the hot path carries no string-building code.
    @usableFromInline @inline(never)
    static func invalidLengthReason(type: UInt8, length: Int, maxLength: Int) -> String {
        let printable = type >= 0x20 && type < 0x7F ? "'\(Character(Unicode.Scalar(type)))'" : "0x\(String(type, radix: 16))"
        if length < 4 {
            return "invalid message length \(length) for message type \(printable) (minimum is 4)"
        }
        return "message type \(printable) length \(length) exceeds the limit of \(maxLength) bytes"
    }
}

/// Type byte and length of one regular message.
@frozen
public struct MessageHeader: Equatable, Sendable {
    public var type: UInt8
    /// Length field as on the wire: includes its own 4 bytes, excludes the type byte.
    public var length: Int

    @inlinable public init(type: UInt8, length: Int) {
        self.type = type
        self.length = length
    }

    /// Bytes of the whole message including the type byte.
    @inlinable public var frameLength: Int { length &+ 1 }
    /// Bytes of the body after type and length.
    @inlinable public var bodyLength: Int { length &- 4 }
}

public enum FrameResult: Equatable, Sendable {
    case incomplete
    case header(MessageHeader)
    case invalid(reason: String)
}

/// Type bytes of messages sent by the server.
public enum BackendType {
    public static let authentication = UInt8(ascii: "R")
    public static let parameterStatus = UInt8(ascii: "S")
    public static let backendKeyData = UInt8(ascii: "K")
    public static let readyForQuery = UInt8(ascii: "Z")
    public static let errorResponse = UInt8(ascii: "E")
    public static let noticeResponse = UInt8(ascii: "N")
    public static let commandComplete = UInt8(ascii: "C")
    public static let dataRow = UInt8(ascii: "D")
    public static let rowDescription = UInt8(ascii: "T")
    public static let copyInResponse = UInt8(ascii: "G")
    public static let copyOutResponse = UInt8(ascii: "H")
    public static let copyBothResponse = UInt8(ascii: "W")
    public static let copyData = UInt8(ascii: "d")
    public static let copyDone = UInt8(ascii: "c")
    public static let parseComplete = UInt8(ascii: "1")
    public static let bindComplete = UInt8(ascii: "2")
    public static let closeComplete = UInt8(ascii: "3")
    public static let noData = UInt8(ascii: "n")
    public static let portalSuspended = UInt8(ascii: "s")
    public static let parameterDescription = UInt8(ascii: "t")
    public static let emptyQueryResponse = UInt8(ascii: "I")
    public static let notificationResponse = UInt8(ascii: "A")
    public static let functionCallResponse = UInt8(ascii: "V")
    public static let negotiateProtocolVersion = UInt8(ascii: "v")
}

/// Type bytes of messages sent by the client.
public enum FrontendType {
    public static let query = UInt8(ascii: "Q")
    public static let parse = UInt8(ascii: "P")
    public static let bind = UInt8(ascii: "B")
    public static let describe = UInt8(ascii: "D")
    public static let execute = UInt8(ascii: "E")
    public static let sync = UInt8(ascii: "S")
    public static let flush = UInt8(ascii: "H")
    public static let close = UInt8(ascii: "C")
    public static let copyData = UInt8(ascii: "d")
    public static let copyDone = UInt8(ascii: "c")
    public static let copyFail = UInt8(ascii: "f")
    public static let functionCall = UInt8(ascii: "F")
    public static let terminate = UInt8(ascii: "X")
    /// PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse all share 'p'.
    public static let password = UInt8(ascii: "p")
}
