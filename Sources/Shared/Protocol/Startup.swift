// Parsing of the untyped first packet a client sends: StartupMessage, SSL/GSS requests, CancelRequest.

/// Why a startup-phase packet was refused.
public enum StartupParseError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Declared length above `Wire.maxStartupPacketLength`.
    case tooLong(Int)
    /// Declared length below the 8 bytes of length + code (or fewer bytes than a length field).
    case tooShort(Int)
    case malformed(String)

    public var description: String {
        switch self {
        case .tooLong(let n):
            return "invalid length of startup packet: \(n) bytes exceeds the limit of \(Wire.maxStartupPacketLength)"
        case .tooShort(let n):
            return "invalid length of startup packet: \(n) bytes is below the minimum of 8"
        case .malformed(let why):
            return "invalid startup packet: \(why)"
        }
    }
}

/// A StartupMessage's content.
public struct StartupMessage: Sendable {
    /// A client-supplied name cut to PostgreSQL's NAMEDATALEN - 1 (63) bytes on a character boundary,
    /// "..." marking the cut: what errors and logs echo (a startup packet may carry a 10 KB name).
    public static func truncatedName(_ name: String) -> String {
        if name.utf8.count <= 63 { return name }
        var out = ""
        var n = 0
        for ch in name {
            n += ch.utf8.count
            if n > 63 { break }
            out.append(ch)
        }
        return out + "..."
    }

    public var majorVersion: Int
    public var minorVersion: Int
    /// In the order sent, without the `_pq_.` protocol options.
    public var parameters: [(name: String, value: String)]
    /// Names of `_pq_.` protocol extension options; pgswift recognises none and reports them back
    /// in NegotiateProtocolVersion, as PostgreSQL does.
    public var unrecognizedProtocolOptions: [String]

    public init(majorVersion: Int = 3, minorVersion: Int = 0,
                parameters: [(name: String, value: String)] = [],
                unrecognizedProtocolOptions: [String] = []) {
        self.majorVersion = majorVersion
        self.minorVersion = minorVersion
        self.parameters = parameters
        self.unrecognizedProtocolOptions = unrecognizedProtocolOptions
    }

    /// The value of parameter `name` (the last one if a client repeats it, as PostgreSQL does).
    public func value(_ name: String) -> String? {
        parameters.last(where: { $0.name == name })?.value
    }
}

/// The first packet of a connection (or the one after a refused SSL/GSS request).
public enum StartupPacket: Sendable {
    case startup(StartupMessage)
    case sslRequest
    case gssEncRequest
    /// CancelRequest with the 4-byte secret key of protocol 3.0.
    case cancel(processID: Int32, secretKey: UInt32)
    case unsupportedVersion(major: Int, minor: Int)

    /// The packet's declared length (including the 4 length bytes), or nil while fewer than 4 bytes
    /// are available. Not validated: pass it to `checkLength` before waiting for that many bytes.
    @inlinable
    public static func peekLength(_ p: UnsafeRawPointer, available: Int) -> Int? {
        if available < 4 { return nil }
        return Int(ByteReader.int32(at: p))
    }

    /// Rejects a declared length outside 8...maxStartupPacketLength, so a client cannot make the
    /// worker buffer (or allocate) more than the limit.
    public static func checkLength(_ length: Int) throws(StartupParseError) {
        if length > Wire.maxStartupPacketLength { throw .tooLong(length) }
        if length < 8 { throw .tooShort(length) }
    }

    /// Parses one whole packet (length field included). Bytes after the declared length are ignored;
    /// the length is validated before anything else is read.
    public static func parse(_ packet: UnsafeRawBufferPointer) throws(StartupParseError) -> StartupPacket {
        guard packet.count >= 4, let base = packet.baseAddress else { throw .tooShort(packet.count) }
        let length = Int(ByteReader.int32(at: base))
        try checkLength(length)
        guard packet.count >= length else {
            throw .malformed("truncated: \(packet.count) of \(length) bytes present")
        }
        var r = ByteReader(UnsafeRawBufferPointer(start: base, count: length))
        _ = r.readInt32()
        let code = r.readInt32()!

        switch code {
        case Wire.sslRequestCode:
            guard length == 8 else { throw .malformed("SSLRequest of \(length) bytes, expected 8") }
            return .sslRequest
        case Wire.gssEncRequestCode:
            guard length == 8 else { throw .malformed("GSSENCRequest of \(length) bytes, expected 8") }
            return .gssEncRequest
        case Wire.cancelRequestCode:
            // Protocol 3.2 allows longer keys; pgswift negotiates clients down to 3.0, whose keys
            // are 4 bytes, so anything else cannot match a key we handed out.
            guard length == 16 else { throw .malformed("CancelRequest of \(length) bytes, expected 16") }
            return .cancel(processID: r.readInt32()!, secretKey: r.readUInt32()!)
        default:
            break
        }

        let major = Int(UInt32(bitPattern: code) >> 16)
        let minor = Int(UInt32(bitPattern: code) & 0xFFFF)
        if major != 3 { return .unsupportedVersion(major: major, minor: minor) }

        var message = StartupMessage(majorVersion: major, minorVersion: minor)
        // name NUL value NUL ... NUL, where the final NUL must be the packet's last byte.
        while true {
            guard let name = r.readCString() else {
                throw .malformed("expected terminator as last byte")
            }
            if name.isEmpty {
                guard r.remaining == 0 else {
                    throw .malformed("\(r.remaining) bytes after the parameter list terminator")
                }
                break
            }
            guard let value = r.readCString() else {
                throw .malformed("missing value for parameter \"\(StartupMessage.truncatedName(name))\"")
            }
            if name.hasPrefix("_pq_.") {
                message.unrecognizedProtocolOptions.append(name)
            } else {
                message.parameters.append((name: name, value: value))
            }
        }
        return .startup(message)
    }
}
