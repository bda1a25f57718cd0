// Framing for the fuzzer: frontend messages as (type, payload) values, their encoders, and a scanner of
// what pgswift sends back (message by message, without keeping large bodies).

/// One frontend message. `type == 0` is an untyped packet (startup, SSLRequest, CancelRequest...).
public struct Message: Equatable, Sendable {
    public var type: UInt8
    public var payload: [UInt8]

    public init(_ type: UInt8, _ payload: [UInt8] = []) {
        self.type = type
        self.payload = payload
    }

    /// Untyped packet (length word, then payload).
    public static func untyped(_ payload: [UInt8]) -> Message { Message(0, payload) }

    public var encodedCount: Int { (type == 0 ? 4 : 5) + payload.count }

    public func append(to out: inout [UInt8]) {
        if type != 0 { out.append(type) }
        Enc.int32(UInt32(truncatingIfNeeded: payload.count + 4), into: &out)
        out += payload
    }
}

public enum Enc {
    public static func int32(_ v: UInt32, into out: inout [UInt8]) {
        out.append(UInt8(v >> 24)); out.append(UInt8((v >> 16) & 0xff))
        out.append(UInt8((v >> 8) & 0xff)); out.append(UInt8(v & 0xff))
    }

    public static func int32(_ v: Int) -> [UInt8] {
        var o: [UInt8] = []
        int32(UInt32(truncatingIfNeeded: v), into: &o)
        return o
    }

    public static func int16(_ v: Int) -> [UInt8] { [UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }

    public static func cstr(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

    public static func serialize(_ msgs: [Message]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(msgs.reduce(0) { $0 + $1.encodedCount })
        for m in msgs { m.append(to: &out) }
        return out
    }

    /// Byte offsets where each message starts in `serialize(msgs)`.
    public static func offsets(_ msgs: [Message]) -> [Int] {
        var at = 0
        var out: [Int] = []
        for m in msgs {
            out.append(at)
            at += m.encodedCount
        }
        return out
    }

    // Frontend messages.
    public static let protocol3 = 196_608
    public static func startup(_ params: [(String, String)], version: Int = protocol3) -> Message {
        var p = int32(version)
        for (k, v) in params { p += cstr(k) + cstr(v) }
        return .untyped(p + [0])
    }
    public static let sslRequest = Message.untyped(int32(80_877_103))
    public static let gssRequest = Message.untyped(int32(80_877_104))
    public static func cancel(pid: Int, key: Int) -> Message { .untyped(int32(80_877_102) + int32(pid) + int32(key)) }
    public static func password(_ bytes: [UInt8]) -> Message { Message(UInt8(ascii: "p"), bytes) }
    public static func query(_ sql: String) -> Message { Message(UInt8(ascii: "Q"), cstr(sql)) }
    public static func parse(_ name: String, _ sql: String, _ types: [Int] = []) -> Message {
        var p = cstr(name) + cstr(sql) + int16(types.count)
        for t in types { p += int32(t) }
        return Message(UInt8(ascii: "P"), p)
    }
    /// Bind with text parameters (nil = NULL) and `resultFormats` result format codes.
    public static func bind(portal: String = "", _ statement: String, _ params: [[UInt8]?] = [],
                            paramFormats: [Int] = [], resultFormats: [Int] = []) -> Message {
        var p = cstr(portal) + cstr(statement) + int16(paramFormats.count)
        for f in paramFormats { p += int16(f) }
        p += int16(params.count)
        for v in params {
            if let v { p += int32(v.count) + v } else { p += int32(-1) }
        }
        p += int16(resultFormats.count)
        for f in resultFormats { p += int16(f) }
        return Message(UInt8(ascii: "B"), p)
    }
    public static func describe(_ kind: Character, _ name: String) -> Message {
        Message(UInt8(ascii: "D"), [kind.asciiValue!] + cstr(name))
    }
    public static func close(_ kind: Character, _ name: String) -> Message {
        Message(UInt8(ascii: "C"), [kind.asciiValue!] + cstr(name))
    }
    public static func execute(_ portal: String = "", maxRows: Int = 0) -> Message {
        Message(UInt8(ascii: "E"), cstr(portal) + int32(maxRows))
    }
    public static let sync = Message(UInt8(ascii: "S"))
    public static let flush = Message(UInt8(ascii: "H"))
    public static let terminate = Message(UInt8(ascii: "X"))
    public static func copyData(_ b: [UInt8]) -> Message { Message(UInt8(ascii: "d"), b) }
    public static let copyDone = Message(UInt8(ascii: "c"))
    public static func copyFail(_ why: String) -> Message { Message(UInt8(ascii: "f"), cstr(why)) }
    /// FunctionCall with text arguments and a text result.
    public static func functionCall(oid: Int, _ args: [[UInt8]?]) -> Message {
        var p = int32(oid) + int16(0) + int16(args.count)
        for v in args {
            if let v { p += int32(v.count) + v } else { p += int32(-1) }
        }
        return Message(UInt8(ascii: "F"), p + int16(0))
    }

    /// Frontend types a logged-in client may send (what a type mutation picks from).
    public static let frontendTypes: [UInt8] = Array("PBDECSHQFdcf".utf8)
}

/// Scans the server's byte stream message by message. Bodies are kept only for the messages the
/// caller asks about (`keep`), up to a bound; the rest is skipped as it arrives.
public struct BackendScanner {
    public enum Event: Equatable {
        /// A whole message of a kept type, or its first `keepLimit` bytes.
        case message(type: UInt8, body: [UInt8])
        /// A message of a type pgswift or PostgreSQL never sends, or a length below 4: the stream
        /// is no longer framed (e.g. bytes inserted inside another message).
        case garbled(type: UInt8, length: Int)
    }

    /// Backend message types of protocol 3.0 (plus 'v' NegotiateProtocolVersion).
    public static let knownTypes: Set<UInt8> = Set("123ACDEGHIKNRSTVWZcdnstv".utf8)

    private var header: [UInt8] = []
    private var remaining = 0
    private var type: UInt8 = 0
    private var keeping = false
    private var body: [UInt8] = []
    private var bodyWant = 0
    public var keepLimit = 4096
    public var keep: Set<UInt8>
    /// Set once garbled: nothing more is scanned.
    public private(set) var broken = false

    public init(keep: Set<UInt8>) { self.keep = keep }

    public mutating func reset() {
        header.removeAll(keepingCapacity: true)
        remaining = 0
        keeping = false
        body.removeAll(keepingCapacity: true)
        broken = false
    }

    /// Feeds bytes; calls `emit` for each kept message (or the garbling) in order.
    public mutating func feed(_ p: UnsafeRawBufferPointer, _ emit: (Event) -> Void) {
        var i = 0
        let n = p.count
        while i < n && !broken {
            if remaining == 0 && header.count < 5 {
                header.append(p[i]); i += 1
                if header.count == 5 {
                    type = header[0]
                    let len = Int(header[1]) << 24 | Int(header[2]) << 16 | Int(header[3]) << 8 | Int(header[4])
                    header.removeAll(keepingCapacity: true)
                    if len < 4 || !BackendScanner.knownTypes.contains(type) {
                        broken = true
                        emit(.garbled(type: type, length: len))
                        return
                    }
                    remaining = len - 4
                    keeping = keep.contains(type)
                    bodyWant = min(remaining, keepLimit)
                    body.removeAll(keepingCapacity: true)
                    if remaining == 0 {
                        if keeping { emit(.message(type: type, body: [])) }
                    }
                }
                continue
            }
            let take = min(remaining, n - i)
            if keeping && body.count < bodyWant {
                let k = min(take, bodyWant - body.count)
                body.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[i..<(i + k)]))
            }
            i += take
            remaining -= take
            if remaining == 0 && keeping {
                emit(.message(type: type, body: body))
            }
        }
    }
}
