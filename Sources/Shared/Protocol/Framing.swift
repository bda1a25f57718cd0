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
    /// Every reader of a regular message header goes through here (the worker's `frameHeader` picks
    /// `maxLength`); the result is a plain value, no reference counting on the data path.
    @inlinable @inline(__always)
    public static func peekHeader(_ p: UnsafeRawPointer, available: Int, maxLength: Int) -> FrameResult {
        if available < 5 { return .incomplete }
        let type = p.load(as: UInt8.self)
        let length = Int(ByteReader.int32(at: p + 1))
        let header = MessageHeader(type: type, length: length)
        if length < 4 || length > maxLength { return .invalid(header) }
        return .header(header)
    }

    /// Why `header` was refused under `maxLength`, for a log line or an ErrorResponse. Kept out of line
    /// so the data path carries no string-building code.
    @inline(never)
    public static func invalidLengthReason(_ header: MessageHeader, maxLength: Int) -> String {
        invalidLengthReason(type: header.type, length: header.length, maxLength: maxLength)
    }

    @inline(never)
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

@frozen
public enum FrameResult: Equatable, Sendable {
    case incomplete
    case header(MessageHeader)
    /// The length word is below 4 or above the cap: the header as read (see `Wire.invalidLengthReason`).
    case invalid(MessageHeader)
}

/// Type bytes of messages sent by the server. Computed constants, not `static let`: a global `let`
/// is reached through a lazy-initialisation accessor on every use, which showed in the hot path.
public enum BackendType {
    @inlinable public static var authentication: UInt8 { 82 } // R
    @inlinable public static var parameterStatus: UInt8 { 83 } // S
    @inlinable public static var backendKeyData: UInt8 { 75 } // K
    @inlinable public static var readyForQuery: UInt8 { 90 } // Z
    @inlinable public static var errorResponse: UInt8 { 69 } // E
    @inlinable public static var noticeResponse: UInt8 { 78 } // N
    @inlinable public static var commandComplete: UInt8 { 67 } // C
    @inlinable public static var dataRow: UInt8 { 68 } // D
    @inlinable public static var rowDescription: UInt8 { 84 } // T
    @inlinable public static var copyInResponse: UInt8 { 71 } // G
    @inlinable public static var copyOutResponse: UInt8 { 72 } // H
    @inlinable public static var copyBothResponse: UInt8 { 87 } // W
    @inlinable public static var copyData: UInt8 { 100 } // d
    @inlinable public static var copyDone: UInt8 { 99 } // c
    @inlinable public static var parseComplete: UInt8 { 49 } // 1
    @inlinable public static var bindComplete: UInt8 { 50 } // 2
    @inlinable public static var closeComplete: UInt8 { 51 } // 3
    @inlinable public static var noData: UInt8 { 110 } // n
    @inlinable public static var portalSuspended: UInt8 { 115 } // s
    @inlinable public static var parameterDescription: UInt8 { 116 } // t
    @inlinable public static var emptyQueryResponse: UInt8 { 73 } // I
    @inlinable public static var notificationResponse: UInt8 { 65 } // A
    @inlinable public static var functionCallResponse: UInt8 { 86 } // V
    @inlinable public static var negotiateProtocolVersion: UInt8 { 118 } // v
}

/// Type bytes of messages sent by the client.
public enum FrontendType {
    @inlinable public static var query: UInt8 { 81 } // Q
    @inlinable public static var parse: UInt8 { 80 } // P
    @inlinable public static var bind: UInt8 { 66 } // B
    @inlinable public static var describe: UInt8 { 68 } // D
    @inlinable public static var execute: UInt8 { 69 } // E
    @inlinable public static var sync: UInt8 { 83 } // S
    @inlinable public static var flush: UInt8 { 72 } // H
    @inlinable public static var close: UInt8 { 67 } // C
    @inlinable public static var copyData: UInt8 { 100 } // d
    @inlinable public static var copyDone: UInt8 { 99 } // c
    @inlinable public static var copyFail: UInt8 { 102 } // f
    @inlinable public static var functionCall: UInt8 { 70 } // F
    @inlinable public static var terminate: UInt8 { 88 } // X
    /// PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse all share 'p'.
    @inlinable public static var password: UInt8 { 112 } // p
}
