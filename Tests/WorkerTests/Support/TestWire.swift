// Protocol bytes for the worker harness: what a scripted client sends, what a scripted PostgreSQL
// answers, and a reader that cuts a received byte stream into messages.
import Shared

/// One protocol message as a test sees it (type byte and body, the length left out).
struct Msg: CustomStringConvertible, Equatable {
    let type: UInt8
    let body: [UInt8]

    var char: Character { Character(UnicodeScalar(type)) }
    /// The message as it was on the wire.
    var frame: [UInt8] { [type] + TestWire.int32(Int32(body.count + 4)) + body }

    /// ErrorResponse / NoticeResponse fields.
    var error: ErrorFields? { body.withUnsafeBytes { ErrorFields.parse($0) } }
    var sqlState: String? { error?.code }
    /// ReadyForQuery's transaction status.
    var status: Character? { type == UInt8(ascii: "Z") && body.count == 1 ? Character(UnicodeScalar(body[0])) : nil }
    /// The first NUL-terminated string of the body: a Query's SQL, a CommandComplete's tag, a Parse's name.
    var firstString: String { TestWire.cString(body, from: 0).0 }
    /// The strings of a NUL-separated body (ParameterStatus name and value, Parse name and query...).
    var strings: [String] {
        var out: [String] = []
        var at = 0
        while at < body.count, let end = body[at...].firstIndex(of: 0) {
            out.append(String(decoding: body[at..<end], as: UTF8.self))
            at = end + 1
        }
        return out
    }

    var description: String {
        switch type {
        case UInt8(ascii: "E"), UInt8(ascii: "N"):
            return "\(char)(\(error?.severity ?? "?") \(sqlState ?? "?") \(error?.message ?? ""))"
        case UInt8(ascii: "Z"): return "Z(\(status.map { String($0) } ?? "?"))"
        case UInt8(ascii: "Q"), UInt8(ascii: "C"): return "\(char)(\(firstString.prefix(60)))"
        default: return "\(char)[\(body.count)]"
        }
    }
}

enum TestWire {
    static func int32(_ v: Int32) -> [UInt8] {
        let u = UInt32(bitPattern: v)
        return [UInt8(u >> 24), UInt8(truncatingIfNeeded: u >> 16), UInt8(truncatingIfNeeded: u >> 8), UInt8(truncatingIfNeeded: u)]
    }

    static func int16(_ v: Int16) -> [UInt8] {
        let u = UInt16(bitPattern: v)
        return [UInt8(u >> 8), UInt8(truncatingIfNeeded: u)]
    }

    static func readInt32(_ b: [UInt8], _ at: Int) -> Int32 {
        Int32(bitPattern: UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3]))
    }

    static func cString(_ b: [UInt8], from: Int) -> (String, Int) {
        guard from < b.count else { return ("", from) }
        let end = b[from...].firstIndex(of: 0) ?? b.count
        return (String(decoding: b[from..<end], as: UTF8.self), end + 1)
    }

    /// Bytes written by one of Shared's encoders.
    static func encode(_ f: (inout OutBuffer) -> Void) -> [UInt8] {
        var o = OutBuffer(capacity: 256)
        defer { o.deallocate() }
        f(&o)
        return o.bytes
    }

    /// Any typed message, including ones no encoder writes (garbage, lengths that lie).
    static func message(_ type: Character, _ body: [UInt8]) -> [UInt8] {
        [UInt8(ascii: type.unicodeScalars.first!)] + int32(Int32(body.count + 4)) + body
    }

    static func cstr(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }
}

/// What a scripted client sends.
enum FE {
    static func startup(user: String, database: String, _ extra: [(String, String)] = [],
                        minor: Int32 = 0) -> [UInt8] {
        TestWire.encode { Frontend.startupMessage(into: &$0, parameters: [("user", user), ("database", database)] + extra,
                                                  protocolVersion: Wire.protocolVersion3 | minor) }
    }
    static let sslRequest = TestWire.encode { Frontend.sslRequest(into: &$0) }
    static let gssEncRequest = TestWire.encode { Frontend.gssEncRequest(into: &$0) }
    static func cancel(pid: Int32, key: UInt32) -> [UInt8] {
        TestWire.encode { Frontend.cancelRequest(into: &$0, processID: pid, secretKey: key) }
    }
    static func password(_ pw: String) -> [UInt8] { TestWire.encode { Frontend.passwordMessage(into: &$0, password: pw) } }
    static func query(_ sql: String) -> [UInt8] { TestWire.encode { Frontend.query(into: &$0, sql: sql) } }
    static func parse(_ name: String, _ sql: String, types: [Int32] = []) -> [UInt8] {
        TestWire.encode { Frontend.parse(into: &$0, name: name, query: sql, parameterTypes: types) }
    }
    static func bind(_ portal: String = "", _ statement: String, _ params: [String?] = []) -> [UInt8] {
        TestWire.encode { Frontend.bind(into: &$0, portal: portal, statement: statement, parameters: params) }
    }
    static func describeStatement(_ name: String) -> [UInt8] {
        TestWire.encode { Frontend.describe(into: &$0, kind: Frontend.statementKind, name: name) }
    }
    static func describePortal(_ name: String = "") -> [UInt8] {
        TestWire.encode { Frontend.describe(into: &$0, kind: Frontend.portalKind, name: name) }
    }
    static func execute(_ portal: String = "") -> [UInt8] { TestWire.encode { Frontend.execute(into: &$0, portal: portal) } }
    static func closeStatement(_ name: String) -> [UInt8] {
        TestWire.encode { Frontend.close(into: &$0, kind: Frontend.statementKind, name: name) }
    }
    static let sync = TestWire.encode { $0.appendEmptyMessage(FrontendType.sync) }
    static let flush = TestWire.encode { $0.appendEmptyMessage(FrontendType.flush) }
    static let terminate = TestWire.encode { $0.appendEmptyMessage(FrontendType.terminate) }
}

/// What a scripted PostgreSQL answers.
enum BE {
    static let authOk = TestWire.encode { Backend.authenticationOk(into: &$0) }
    static func parameterStatus(_ name: String, _ value: String) -> [UInt8] {
        TestWire.encode { Backend.parameterStatus(into: &$0, name: name, value: value) }
    }
    static func backendKeyData(pid: Int32, key: UInt32) -> [UInt8] {
        TestWire.encode { Backend.backendKeyData(into: &$0, processID: pid, secretKey: key) }
    }
    static func ready(_ status: Character = "I") -> [UInt8] {
        TestWire.encode { Backend.readyForQuery(into: &$0, status: UInt8(ascii: status.unicodeScalars.first!)) }
    }
    static func complete(_ tag: String) -> [UInt8] { TestWire.encode { Backend.commandComplete(into: &$0, tag: tag) } }
    static func rowDescription(_ columns: [String]) -> [UInt8] {
        TestWire.encode { Backend.rowDescription(into: &$0, columns: columns.map { ($0, Backend.TypeOID.text) }) }
    }
    static func dataRow(_ values: [String?]) -> [UInt8] { TestWire.encode { Backend.dataRow(into: &$0, values) } }
    static func error(_ code: String, _ message: String, severity: String = "ERROR") -> [UInt8] {
        TestWire.encode { Backend.errorResponse(into: &$0, ErrorFields(severity: severity, code: code, message: message)) }
    }
    static func notice(_ message: String) -> [UInt8] {
        TestWire.encode { Backend.noticeResponse(into: &$0, ErrorFields(severity: "NOTICE", code: "00000", message: message)) }
    }
    static let parseComplete = TestWire.encode { $0.appendEmptyMessage(BackendType.parseComplete) }
    static let bindComplete = TestWire.encode { $0.appendEmptyMessage(BackendType.bindComplete) }
    static let closeComplete = TestWire.encode { $0.appendEmptyMessage(BackendType.closeComplete) }
    static let noData = TestWire.encode { $0.appendEmptyMessage(BackendType.noData) }

    /// A one-row, one-column result and its CommandComplete (what `select <value>` returns).
    static func row(_ value: String) -> [UInt8] {
        rowDescription(["v"]) + dataRow([value]) + complete("SELECT 1")
    }
}

/// Cuts a byte stream into messages; what is incomplete stays for later.
struct MessageReader {
    var bytes: [UInt8] = []
    var offset = 0

    mutating func append(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }

    var unread: [UInt8] { Array(bytes[offset...]) }

    /// The next typed message, if whole.
    mutating func next() -> Msg? {
        guard bytes.count - offset >= 5 else { return nil }
        let len = Int(TestWire.readInt32(bytes, offset + 1))
        guard len >= 4, bytes.count - offset >= len + 1 else { return nil }
        let m = Msg(type: bytes[offset], body: Array(bytes[(offset + 5)..<(offset + 1 + len)]))
        offset += len + 1
        compact()
        return m
    }

    /// The next untyped packet (a startup message or CancelRequest: length first), if whole.
    mutating func nextUntyped() -> [UInt8]? {
        guard bytes.count - offset >= 4 else { return nil }
        let len = Int(TestWire.readInt32(bytes, offset))
        guard len >= 4, bytes.count - offset >= len else { return nil }
        let p = Array(bytes[offset..<(offset + len)])
        offset += len
        compact()
        return p
    }

    /// Takes `n` raw bytes (a single-byte SSL answer).
    mutating func take(_ n: Int) -> [UInt8]? {
        guard bytes.count - offset >= n else { return nil }
        let p = Array(bytes[offset..<(offset + n)])
        offset += n
        compact()
        return p
    }

    private mutating func compact() {
        if offset > 65536 && offset * 2 > bytes.count {
            bytes.removeFirst(offset)
            offset = 0
        }
    }
}
