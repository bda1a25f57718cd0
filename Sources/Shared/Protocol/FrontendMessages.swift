// Encoders for the messages pgswift sends to PostgreSQL servers in the client's role.

/// Messages from pgswift to a PostgreSQL server (pgswift acting as the client).
public enum Frontend {
    // MARK: startup-phase packets (no type byte)

    public static func startupMessage(into out: inout OutBuffer, parameters: [(String, String)],
                                      protocolVersion: Int32 = Wire.protocolVersion3) {
        let at = out.beginUntypedMessage()
        out.appendInt32(protocolVersion)
        for (name, value) in parameters {
            out.appendCString(name)
            out.appendCString(value)
        }
        out.appendUInt8(0)
        out.endMessage(at)
    }

    public static func sslRequest(into out: inout OutBuffer) {
        out.appendInt32(8)
        out.appendInt32(Wire.sslRequestCode)
    }

    public static func gssEncRequest(into out: inout OutBuffer) {
        out.appendInt32(8)
        out.appendInt32(Wire.gssEncRequestCode)
    }

    public static func cancelRequest(into out: inout OutBuffer, processID: Int32, secretKey: UInt32) {
        out.appendInt32(16)
        out.appendInt32(Wire.cancelRequestCode)
        out.appendInt32(processID)
        out.appendUInt32(secretKey)
    }

    // MARK: authentication ('p' messages)

    /// Cleartext password or the "md5..." hash string.
    public static func passwordMessage(into out: inout OutBuffer, password: String) {
        out.appendCStringMessage(FrontendType.password, password)
    }

    /// SASLInitialResponse; nil data is sent as length -1 ("no initial response").
    public static func saslInitialResponse(into out: inout OutBuffer, mechanism: String, data: [UInt8]?) {
        let at = out.beginMessage(FrontendType.password)
        out.appendCString(mechanism)
        if let data {
            out.appendInt32(Int32(truncatingIfNeeded: data.count))
            out.appendBytes(data)
        } else {
            out.appendInt32(-1)
        }
        out.endMessage(at)
    }

    public static func saslResponse(into out: inout OutBuffer, data: [UInt8]) {
        let at = out.beginMessage(FrontendType.password)
        out.appendBytes(data)
        out.endMessage(at)
    }

    // MARK: simple query and session end

    public static func query(into out: inout OutBuffer, sql: String) {
        out.appendCStringMessage(FrontendType.query, sql)
    }

    public static func terminate(into out: inout OutBuffer) {
        out.appendEmptyMessage(FrontendType.terminate)
    }

    // MARK: extended query

    public static func sync(into out: inout OutBuffer) {
        out.appendEmptyMessage(FrontendType.sync)
    }

    public static func flush(into out: inout OutBuffer) {
        out.appendEmptyMessage(FrontendType.flush)
    }

    /// Parse; `name` "" is the unnamed statement. `parameterTypes` 0 lets the server infer a type.
    public static func parse(into out: inout OutBuffer, name: String, query: String, parameterTypes: [Int32] = []) {
        let at = out.beginMessage(FrontendType.parse)
        out.appendCString(name)
        out.appendCString(query)
        out.appendInt16(Int16(truncatingIfNeeded: parameterTypes.count))
        for t in parameterTypes { out.appendInt32(t) }
        out.endMessage(at)
    }

    /// Bind with text-format parameters (nil = NULL) and text-format results.
    public static func bind(into out: inout OutBuffer, portal: String, statement: String, parameters: [String?] = []) {
        let at = out.beginMessage(FrontendType.bind)
        out.appendCString(portal)
        out.appendCString(statement)
        out.appendInt16(0)                              // parameter formats: all text
        out.appendInt16(Int16(truncatingIfNeeded: parameters.count))
        for p in parameters {
            guard let p else {
                out.appendInt32(-1)
                continue
            }
            var utf8 = p
            utf8.withUTF8 { bytes in
                out.appendInt32(Int32(truncatingIfNeeded: bytes.count))
                out.appendBytes(UnsafeRawBufferPointer(bytes))
            }
        }
        out.appendInt16(0)                              // result formats: all text
        out.endMessage(at)
    }

    /// Execute; `maxRows` 0 means no limit.
    public static func execute(into out: inout OutBuffer, portal: String, maxRows: Int32 = 0) {
        let at = out.beginMessage(FrontendType.execute)
        out.appendCString(portal)
        out.appendInt32(maxRows)
        out.endMessage(at)
    }

    /// Describe; `kind` is `Frontend.statementKind` ('S') or `Frontend.portalKind` ('P').
    public static func describe(into out: inout OutBuffer, kind: UInt8, name: String) {
        let at = out.beginMessage(FrontendType.describe)
        out.appendUInt8(kind)
        out.appendCString(name)
        out.endMessage(at)
    }

    /// Close; `kind` is `Frontend.statementKind` ('S') or `Frontend.portalKind` ('P').
    public static func close(into out: inout OutBuffer, kind: UInt8, name: String) {
        let at = out.beginMessage(FrontendType.close)
        out.appendUInt8(kind)
        out.appendCString(name)
        out.endMessage(at)
    }

    /// Target kinds of Describe and Close.
    public static let statementKind = UInt8(ascii: "S")
    public static let portalKind = UInt8(ascii: "P")

    // MARK: COPY

    public static func copyDone(into out: inout OutBuffer) {
        out.appendEmptyMessage(FrontendType.copyDone)
    }

    public static func copyFail(into out: inout OutBuffer, message: String) {
        out.appendCStringMessage(FrontendType.copyFail, message)
    }
}
