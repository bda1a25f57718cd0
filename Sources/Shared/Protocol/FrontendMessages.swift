// Encoders for the messages pgswift sends to PostgreSQL servers in the client's role.

/// Messages from pgswift to a PostgreSQL server (pgswift acting as the client). Those with no body
/// (Sync, Flush, Terminate, CopyDone) have no encoder here: `out.appendEmptyMessage(FrontendType.sync)`.
public enum Frontend {
    // MARK: startup-phase packets (no type byte)

    public static func startupMessage(into out: inout OutBuffer, parameters: [(String, String)],
                                      protocolVersion: Int32 = Wire.protocolVersion3) {
        out.untypedMessage {
            $0.appendInt32(protocolVersion)
            for (name, value) in parameters {
                $0.appendCString(name)
                $0.appendCString(value)
            }
            $0.appendUInt8(0)
        }
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
        out.message(FrontendType.password) {
            $0.appendCString(mechanism)
            if let data {
                $0.appendInt32(Int32(truncatingIfNeeded: data.count))
                $0.appendBytes(data)
            } else {
                $0.appendInt32(-1)
            }
        }
    }

    public static func saslResponse(into out: inout OutBuffer, data: [UInt8]) {
        out.message(FrontendType.password) { $0.appendBytes(data) }
    }

    // MARK: simple query

    public static func query(into out: inout OutBuffer, sql: String) {
        out.appendCStringMessage(FrontendType.query, sql)
    }

    // MARK: extended query

    /// Parse; `name` "" is the unnamed statement. `parameterTypes` 0 lets the server infer a type.
    public static func parse(into out: inout OutBuffer, name: String, query: String, parameterTypes: [Int32] = []) {
        out.message(FrontendType.parse) {
            $0.appendCString(name)
            $0.appendCString(query)
            $0.appendInt16(Int16(truncatingIfNeeded: parameterTypes.count))
            for t in parameterTypes { $0.appendInt32(t) }
        }
    }

    /// Bind with text-format parameters (nil = NULL) and text-format results.
    public static func bind(into out: inout OutBuffer, portal: String, statement: String, parameters: [String?] = []) {
        out.message(FrontendType.bind) { out in
            out.appendCString(portal)
            out.appendCString(statement)
            out.appendInt16(0)                          // parameter formats: all text
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
            out.appendInt16(0)                          // result formats: all text
        }
    }

    /// Execute; `maxRows` 0 means no limit.
    public static func execute(into out: inout OutBuffer, portal: String, maxRows: Int32 = 0) {
        out.message(FrontendType.execute) {
            $0.appendCString(portal)
            $0.appendInt32(maxRows)
        }
    }

    /// Describe; `kind` is `Frontend.statementKind` ('S') or `Frontend.portalKind` ('P').
    public static func describe(into out: inout OutBuffer, kind: UInt8, name: String) {
        target(into: &out, FrontendType.describe, kind: kind, name: name)
    }

    /// Close; `kind` is `Frontend.statementKind` ('S') or `Frontend.portalKind` ('P').
    public static func close(into out: inout OutBuffer, kind: UInt8, name: String) {
        target(into: &out, FrontendType.close, kind: kind, name: name)
    }

    /// Describe and Close have the same body: what kind of object, and its name.
    private static func target(into out: inout OutBuffer, _ type: UInt8, kind: UInt8, name: String) {
        out.message(type) {
            $0.appendUInt8(kind)
            $0.appendCString(name)
        }
    }

    /// Target kinds of Describe and Close.
    public static let statementKind = UInt8(ascii: "S")
    public static let portalKind = UInt8(ascii: "P")

    // MARK: COPY

    public static func copyFail(into out: inout OutBuffer, message: String) {
        out.appendCStringMessage(FrontendType.copyFail, message)
    }
}
