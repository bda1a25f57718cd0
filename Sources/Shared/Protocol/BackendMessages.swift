// Encoders for the messages pgswift sends to clients in the server's role.

/// Fields of an ErrorResponse / NoticeResponse that pgswift produces or inspects.
public struct ErrorFields: Equatable, Sendable {
    /// Non-localised severity: ERROR, FATAL, PANIC, WARNING, NOTICE, DEBUG, INFO, LOG.
    public var severity: String
    /// SQLSTATE, see `SQLState`.
    public var code: String
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(severity: String, code: String, message: String, detail: String? = nil, hint: String? = nil) {
        self.severity = severity
        self.code = code
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    /// Severity names as PostgreSQL spells them.
    public enum Severity {
        public static let error = "ERROR"
        public static let fatal = "FATAL"
        public static let panic = "PANIC"
        public static let warning = "WARNING"
        public static let notice = "NOTICE"
        public static let info = "INFO"
        public static let log = "LOG"
    }

    /// Field type bytes of ErrorResponse / NoticeResponse.
    public enum FieldType {
        public static let severity = UInt8(ascii: "S")
        public static let severityNonLocalized = UInt8(ascii: "V")
        public static let code = UInt8(ascii: "C")
        public static let message = UInt8(ascii: "M")
        public static let detail = UInt8(ascii: "D")
        public static let hint = UInt8(ascii: "H")
    }
}

/// Messages from pgswift to a client (pgswift acting as the server). Those with no body (ParseComplete,
/// BindComplete, CloseComplete, NoData, EmptyQueryResponse) have no encoder here:
/// `out.appendEmptyMessage(BackendType.parseComplete)`.
public enum Backend {
    /// One-byte answers to SSLRequest / GSSENCRequest (sent without any framing).
    public static let sslRefused = UInt8(ascii: "N")
    public static let sslAccepted = UInt8(ascii: "S")

    /// Type OIDs used in RowDescription (pg_type.oid values).
    public enum TypeOID {
        public static let bool: Int32 = 16
        public static let bytea: Int32 = 17
        public static let name: Int32 = 19
        public static let int8: Int32 = 20
        public static let int2: Int32 = 21
        public static let int4: Int32 = 23
        public static let text: Int32 = 25
        public static let oid: Int32 = 26
        public static let float4: Int32 = 700
        public static let float8: Int32 = 701
        public static let varchar: Int32 = 1043
        public static let timestamp: Int32 = 1114
        public static let timestamptz: Int32 = 1184
        public static let numeric: Int32 = 1700

        /// pg_type.typlen for the types above; -1 (variable) for anything else.
        public static func typeLength(_ type: Int32) -> Int16 {
            switch type {
            case TypeOID.bool: return 1
            case TypeOID.int2: return 2
            case TypeOID.int4, TypeOID.oid, TypeOID.float4: return 4
            case TypeOID.int8, TypeOID.float8, TypeOID.timestamp, TypeOID.timestamptz: return 8
            case TypeOID.name: return 64
            default: return -1
            }
        }
    }

    // MARK: authentication

    public static func authenticationOk(into out: inout OutBuffer) {
        authenticationCode(into: &out, 0)
    }

    public static func authenticationCleartextPassword(into out: inout OutBuffer) {
        authenticationCode(into: &out, 3)
    }

    public static func authenticationMD5Password(into out: inout OutBuffer, salt: (UInt8, UInt8, UInt8, UInt8)) {
        out.message(BackendType.authentication) {
            $0.appendInt32(5)
            $0.appendUInt8(salt.0)
            $0.appendUInt8(salt.1)
            $0.appendUInt8(salt.2)
            $0.appendUInt8(salt.3)
        }
    }

    public static func authenticationMD5Password(into out: inout OutBuffer, salt: [UInt8]) {
        precondition(salt.count == 4, "MD5 salt must be 4 bytes")
        authenticationMD5Password(into: &out, salt: (salt[0], salt[1], salt[2], salt[3]))
    }

    /// AuthenticationSASL: the mechanisms offered, in order of preference.
    public static func authenticationSASL(into out: inout OutBuffer, mechanisms: [String]) {
        out.message(BackendType.authentication) {
            $0.appendInt32(10)
            for m in mechanisms { $0.appendCString(m) }
            $0.appendUInt8(0)
        }
    }

    public static func authenticationSASLContinue(into out: inout OutBuffer, data: [UInt8]) {
        authenticationCode(into: &out, 11, data: data)
    }

    public static func authenticationSASLFinal(into out: inout OutBuffer, data: [UInt8]) {
        authenticationCode(into: &out, 12, data: data)
    }

    /// An Authentication message: its code, then the code's data (none for Ok and CleartextPassword).
    private static func authenticationCode(into out: inout OutBuffer, _ code: Int32, data: [UInt8] = []) {
        out.message(BackendType.authentication) {
            $0.appendInt32(code)
            $0.appendBytes(data)
        }
    }

    // MARK: session setup

    public static func parameterStatus(into out: inout OutBuffer, name: String, value: String) {
        out.message(BackendType.parameterStatus) {
            $0.appendCString(name)
            $0.appendCString(value)
        }
    }

    public static func backendKeyData(into out: inout OutBuffer, processID: Int32, secretKey: UInt32) {
        out.message(BackendType.backendKeyData) {
            $0.appendInt32(processID)
            $0.appendUInt32(secretKey)
        }
    }

    /// `status` is one of `Wire.TransactionStatus`.
    public static func readyForQuery(into out: inout OutBuffer, status: UInt8) {
        out.message(BackendType.readyForQuery) { $0.appendUInt8(status) }
    }

    /// Tells a client asking for 3.`x` (x > newestMinor) or sending `_pq_.` options what we support.
    public static func negotiateProtocolVersion(into out: inout OutBuffer, newestMinor: Int, unrecognized: [String]) {
        out.message(BackendType.negotiateProtocolVersion) {
            $0.appendInt32(Wire.protocolVersion3 | Int32(truncatingIfNeeded: newestMinor & 0xFFFF))
            $0.appendInt32(Int32(truncatingIfNeeded: unrecognized.count))
            for name in unrecognized { $0.appendCString(name) }
        }
    }

    // MARK: errors and notices

    public static func errorResponse(into out: inout OutBuffer, _ e: ErrorFields) {
        errorOrNotice(into: &out, BackendType.errorResponse, e)
    }

    public static func noticeResponse(into out: inout OutBuffer, _ e: ErrorFields) {
        errorOrNotice(into: &out, BackendType.noticeResponse, e)
    }

    /// Written out with begin/end rather than `message`: the worker sends these itself, and at -O a
    /// closure this long is compiled as a separate function, one more call than this form costs.
    private static func errorOrNotice(into out: inout OutBuffer, _ type: UInt8, _ e: ErrorFields) {
        let at = out.beginMessage(type)
        // PostgreSQL sends S (possibly translated) and V (never translated); ours are never translated.
        out.appendUInt8(ErrorFields.FieldType.severity)
        out.appendCString(e.severity)
        out.appendUInt8(ErrorFields.FieldType.severityNonLocalized)
        out.appendCString(e.severity)
        out.appendUInt8(ErrorFields.FieldType.code)
        out.appendCString(e.code)
        out.appendUInt8(ErrorFields.FieldType.message)
        out.appendCString(e.message)
        if let d = e.detail {
            out.appendUInt8(ErrorFields.FieldType.detail)
            out.appendCString(d)
        }
        if let h = e.hint {
            out.appendUInt8(ErrorFields.FieldType.hint)
            out.appendCString(h)
        }
        out.appendUInt8(0)
        out.endMessage(at)
    }

    // MARK: query results (admin console, synthetic answers)

    public static func commandComplete(into out: inout OutBuffer, tag: String) {
        out.appendCStringMessage(BackendType.commandComplete, tag)
    }

    /// Columns in text format, not tied to a table, as PostgreSQL describes a computed result.
    public static func rowDescription(into out: inout OutBuffer, columns: [(name: String, typeOID: Int32)]) {
        out.message(BackendType.rowDescription) {
            $0.appendInt16(Int16(truncatingIfNeeded: columns.count))
            for c in columns {
                $0.appendCString(c.name)
                $0.appendInt32(0)                       // table OID
                $0.appendInt16(0)                       // column attribute number
                $0.appendInt32(c.typeOID)
                $0.appendInt16(TypeOID.typeLength(c.typeOID))
                $0.appendInt32(-1)                      // type modifier
                $0.appendInt16(0)                       // text format
            }
        }
    }

    /// One row of text values; nil is SQL NULL.
    public static func dataRow(into out: inout OutBuffer, _ values: [String?]) {
        out.message(BackendType.dataRow) {
            $0.appendInt16(Int16(truncatingIfNeeded: values.count))
            for v in values {
                guard let v else {
                    $0.appendInt32(-1)
                    continue
                }
                let lengthAt = $0.beginUntypedMessage()
                $0.appendString(v)
                // A value's length excludes its own length field, unlike a message's.
                let n = $0.count - lengthAt - 4
                $0.base.storeBytes(of: Int32(truncatingIfNeeded: n).bigEndian, toByteOffset: lengthAt, as: Int32.self)
            }
        }
    }
}
