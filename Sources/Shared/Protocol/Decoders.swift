// Decoders for the message bodies pgswift must understand; each takes the body after type + length.
//
// Every decoder consumes its body exactly: trailing or missing bytes yield nil, since a length
// that disagrees with the content means the peer and we no longer agree on framing.

/// An 'R' message from a server.
public enum AuthenticationRequest: Equatable, Sendable {
    case ok
    case cleartextPassword
    case md5Password(salt: [UInt8])
    case sasl(mechanisms: [String])
    case saslContinue(data: [UInt8])
    case saslFinal(data: [UInt8])
    /// Kerberos, SCM, GSSAPI, SSPI...: methods pgswift does not implement.
    case unsupported(code: Int32)

    public static func parse(_ body: UnsafeRawBufferPointer) -> AuthenticationRequest? {
        var r = ByteReader(body)
        guard let code = r.readInt32() else { return nil }
        switch code {
        case 0:
            return r.remaining == 0 ? .ok : nil
        case 3:
            return r.remaining == 0 ? .cleartextPassword : nil
        case 5:
            guard r.remaining == 4, let salt = r.readBytes(4) else { return nil }
            return .md5Password(salt: [UInt8](salt))
        case 10:
            var mechanisms: [String] = []
            while true {
                guard let m = r.readCString() else { return nil }
                if m.isEmpty { break }
                mechanisms.append(m)
            }
            return r.remaining == 0 ? .sasl(mechanisms: mechanisms) : nil
        case 11:
            return .saslContinue(data: [UInt8](r.readRest()))
        case 12:
            return .saslFinal(data: [UInt8](r.readRest()))
        default:
            return .unsupported(code: code)
        }
    }
}

extension ErrorFields {
    /// Parses an ErrorResponse / NoticeResponse body. Severity prefers the untranslated 'V' field
    /// (servers since 9.6) over 'S'; fields we do not model are skipped; missing ones become "".
    public static func parse(_ body: UnsafeRawBufferPointer) -> ErrorFields? {
        var r = ByteReader(body)
        var severity: String?
        var localizedSeverity: String?
        var fields = ErrorFields(severity: "", code: "", message: "")
        while true {
            guard let type = r.readUInt8() else { return nil }
            if type == 0 { break }
            guard let value = r.readCString() else { return nil }
            switch type {
            case FieldType.severityNonLocalized: severity = value
            case FieldType.severity: localizedSeverity = value
            case FieldType.code: fields.code = value
            case FieldType.message: fields.message = value
            case FieldType.detail: fields.detail = value
            case FieldType.hint: fields.hint = value
            default: break
            }
        }
        guard r.remaining == 0 else { return nil }
        fields.severity = severity ?? localizedSeverity ?? ""
        return fields
    }
}

/// ParameterStatus ('S' from a server).
public enum ParameterStatus {
    public static func parse(_ body: UnsafeRawBufferPointer) -> (name: String, value: String)? {
        var r = ByteReader(body)
        guard let name = r.readCString(), let value = r.readCString(), r.remaining == 0 else { return nil }
        return (name: name, value: value)
    }
}

/// BackendKeyData ('K' from a server).
public enum BackendKeyData {
    /// Process ID and the first 4 key bytes. Keys of protocol 3.2 (4...256 bytes) are accepted;
    /// use `parseFull` when the whole key matters.
    public static func parse(_ body: UnsafeRawBufferPointer) -> (processID: Int32, secretKey: UInt32)? {
        guard body.count >= 8, body.count <= 4 + 256, let base = body.baseAddress else { return nil }
        return (processID: ByteReader.int32(at: base), secretKey: ByteReader.uint32(at: base + 4))
    }

    /// Process ID and the whole secret key.
    public static func parseFull(_ body: UnsafeRawBufferPointer) -> (processID: Int32, secretKeyBytes: [UInt8])? {
        var r = ByteReader(body)
        guard body.count >= 8, body.count <= 4 + 256, let pid = r.readInt32() else { return nil }
        return (processID: pid, secretKeyBytes: [UInt8](r.readRest()))
    }
}

/// ReadyForQuery ('Z' from a server).
public enum ReadyForQuery {
    /// The transaction status byte (`Wire.TransactionStatus`), nil if the body is not one valid byte.
    @inlinable
    public static func parse(_ body: UnsafeRawBufferPointer) -> UInt8? {
        guard body.count == 1 else { return nil }
        let s = body[0]
        switch s {
        case Wire.TransactionStatus.idle, Wire.TransactionStatus.inTransaction, Wire.TransactionStatus.failed:
            return s
        default:
            return nil
        }
    }
}

/// SASLInitialResponse ('p' from a client answering AuthenticationSASL).
public enum SASLInitialResponse {
    /// Mechanism and client-first data; a data length of -1 ("none") yields empty data.
    public static func parse(_ body: UnsafeRawBufferPointer) -> (mechanism: String, data: [UInt8])? {
        var r = ByteReader(body)
        guard let mechanism = r.readCString(), let n = r.readInt32() else { return nil }
        if n == -1 {
            return r.remaining == 0 ? (mechanism: mechanism, data: []) : nil
        }
        guard Int(n) == r.remaining, let data = r.readBytes(Int(n)) else { return nil }
        return (mechanism: mechanism, data: [UInt8](data))
    }
}

/// All decoders under one name, plus the less common ones.
public enum Decode {
    public static func authentication(_ body: UnsafeRawBufferPointer) -> AuthenticationRequest? {
        AuthenticationRequest.parse(body)
    }

    public static func errorFields(_ body: UnsafeRawBufferPointer) -> ErrorFields? {
        ErrorFields.parse(body)
    }

    public static func parameterStatus(_ body: UnsafeRawBufferPointer) -> (name: String, value: String)? {
        ParameterStatus.parse(body)
    }

    public static func backendKeyData(_ body: UnsafeRawBufferPointer) -> (processID: Int32, secretKey: UInt32)? {
        BackendKeyData.parse(body)
    }

    @inlinable
    public static func readyForQuery(_ body: UnsafeRawBufferPointer) -> UInt8? {
        ReadyForQuery.parse(body)
    }

    /// CommandComplete ('C' from a server): the command tag, e.g. "SELECT 1", "INSERT 0 5", "BEGIN".
    public static func commandComplete(_ body: UnsafeRawBufferPointer) -> String? {
        exactCString(body)
    }

    /// PasswordMessage ('p' from a client answering a cleartext or MD5 request).
    public static func passwordCleartext(_ body: UnsafeRawBufferPointer) -> String? {
        exactCString(body)
    }

    public static func saslInitialResponse(_ body: UnsafeRawBufferPointer) -> (mechanism: String, data: [UInt8])? {
        SASLInitialResponse.parse(body)
    }

    /// SASLResponse ('p' from a client during a SASL exchange): the body is the mechanism's data.
    public static func saslResponse(_ body: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](body)
    }

    /// Query ('Q' from a client).
    public static func query(_ body: UnsafeRawBufferPointer) -> String? {
        exactCString(body)
    }

    /// NegotiateProtocolVersion ('v' from a server).
    public static func negotiateProtocolVersion(_ body: UnsafeRawBufferPointer) -> (newestMinor: Int, unrecognized: [String])? {
        var r = ByteReader(body)
        guard let version = r.readInt32(), let n = r.readInt32(), n >= 0, Int(n) <= r.remaining else { return nil }
        guard UInt32(bitPattern: version) >> 16 == 3 else { return nil }
        var names: [String] = []
        for _ in 0..<Int(n) {
            guard let name = r.readCString() else { return nil }
            names.append(name)
        }
        guard r.remaining == 0 else { return nil }
        return (newestMinor: Int(UInt32(bitPattern: version) & 0xFFFF), unrecognized: names)
    }

    /// RowDescription ('T'): column names and type OIDs (other attributes skipped).
    public static func rowDescription(_ body: UnsafeRawBufferPointer) -> [(name: String, typeOID: Int32)]? {
        var r = ByteReader(body)
        guard let n = r.readInt16(), n >= 0 else { return nil }
        var columns: [(name: String, typeOID: Int32)] = []
        columns.reserveCapacity(Int(n))
        for _ in 0..<Int(n) {
            // name, table OID(4), attnum(2), type OID(4), typlen(2), typmod(4), format(2)
            guard let name = r.readCString(), r.readBytes(6) != nil, let oid = r.readInt32(),
                  r.readBytes(8) != nil else { return nil }
            columns.append((name: name, typeOID: oid))
        }
        return r.remaining == 0 ? columns : nil
    }

    /// DataRow ('D'): raw column values, nil for NULL.
    public static func dataRow(_ body: UnsafeRawBufferPointer) -> [[UInt8]?]? {
        var r = ByteReader(body)
        guard let n = r.readInt16(), n >= 0 else { return nil }
        var values: [[UInt8]?] = []
        values.reserveCapacity(Int(n))
        for _ in 0..<Int(n) {
            guard let len = r.readInt32() else { return nil }
            if len == -1 {
                values.append(nil)
                continue
            }
            guard let bytes = r.readBytes(Int(len)) else { return nil }
            values.append([UInt8](bytes))
        }
        return r.remaining == 0 ? values : nil
    }

    /// DataRow with every value decoded as UTF-8 text.
    public static func dataRowText(_ body: UnsafeRawBufferPointer) -> [String?]? {
        dataRow(body)?.map { $0.map { String(decoding: $0, as: UTF8.self) } }
    }

    /// Parse ('P' from a client): statement name, query text, declared parameter type OIDs.
    public static func parse(_ body: UnsafeRawBufferPointer) -> (name: String, query: String, parameterTypes: [Int32])? {
        var r = ByteReader(body)
        guard let name = r.readCString(), let query = r.readCString(), let n = r.readInt16(), n >= 0,
              r.remaining == Int(n) * 4 else { return nil }
        var types: [Int32] = []
        types.reserveCapacity(Int(n))
        for _ in 0..<Int(n) { types.append(r.readInt32()!) }
        return (name: name, query: query, parameterTypes: types)
    }

    /// Bind ('B' from a client): only the portal and statement names that lead the body; the
    /// parameters are forwarded untouched, so they are not decoded.
    public static func bindNames(_ body: UnsafeRawBufferPointer) -> (portal: String, statement: String)? {
        var r = ByteReader(body)
        guard let portal = r.readCString(), let statement = r.readCString() else { return nil }
        return (portal: portal, statement: statement)
    }

    /// Describe or Close ('D' / 'C' from a client): kind 'S' (statement) or 'P' (portal) and name.
    public static func describeOrClose(_ body: UnsafeRawBufferPointer) -> (kind: UInt8, name: String)? {
        var r = ByteReader(body)
        guard let kind = r.readUInt8(), kind == Frontend.statementKind || kind == Frontend.portalKind,
              let name = r.readCString(), r.remaining == 0 else { return nil }
        return (kind: kind, name: name)
    }

    /// Execute ('E' from a client): portal name and row limit (0 = all).
    public static func execute(_ body: UnsafeRawBufferPointer) -> (portal: String, maxRows: Int32)? {
        var r = ByteReader(body)
        guard let portal = r.readCString(), let maxRows = r.readInt32(), r.remaining == 0 else { return nil }
        return (portal: portal, maxRows: maxRows)
    }

    /// A body that is exactly one NUL-terminated string.
    @usableFromInline
    static func exactCString(_ body: UnsafeRawBufferPointer) -> String? {
        var r = ByteReader(body)
        guard let s = r.readCString(), r.remaining == 0 else { return nil }
        return s
    }
}
