// log_statement_parameters (issue 21): the values a slow statement ran with, for its log line — Bind's
// parameters (extended protocol) or the statement's own text (simple protocol, where the literals are).
// Only kept while the setting is on and log_min_duration_statement is set; off, nothing here runs.
import Shared

/// How much of the values a log line carries.
enum StatementParameters {
    /// Bytes of one parameter value, and of all of them, before "..." (as PostgreSQL's
    /// log_parameter_max_length cuts them).
    static let maxValueBytes = 256
    static let maxTotalBytes = 2048
    /// Values kept at once per worker: beyond, the oldest are dropped (their statements log without).
    static let maxKept = 10_000

    /// A Bind body's values from `at` (after the statement name): "$1 = '42', $2 = NULL"; binary
    /// values in hex ('\x0102'). nil when the body is malformed.
    static func bindText(_ b: UnsafeRawBufferPointer, valuesAt start: Int) -> String? {
        var r = ByteReader(UnsafeRawBufferPointer(rebasing: b[min(start, b.count)...]))
        guard let nf = r.readInt16(), nf >= 0 else { return nil }
        var formats: [Int16] = []
        for _ in 0..<Int(nf) {
            guard let f = r.readInt16() else { return nil }
            formats.append(f)
        }
        guard let n = r.readInt16(), n >= 0 else { return nil }
        if n == 0 { return "parameters: (none)" }
        var out = "parameters: "
        for i in 0..<Int(n) {
            guard let len = r.readInt32() else { return nil }
            if i > 0 { out += ", " }
            out += "$\(i + 1) = "
            if len < 0 {
                out += "NULL"
            } else {
                guard let v = r.readBytes(Int(len)) else { return nil }
                let binary = formats.count == 1 ? formats[0] == 1 : (i < formats.count && formats[i] == 1)
                out += binary ? hexLiteral(v) : quoted(v)
            }
            if out.utf8.count > maxTotalBytes {
                out = clip(out, maxTotalBytes) + "..."
                break
            }
        }
        return out
    }

    /// A text value as a SQL literal ('it''s'), cut at `maxValueBytes`.
    static func quoted(_ v: UnsafeRawBufferPointer) -> String {
        let cut = v.count > maxValueBytes
        var s = String(decoding: UnsafeRawBufferPointer(rebasing: v[0..<min(v.count, maxValueBytes)]), as: UTF8.self)
        s = s.replacingAll("'", with: "''")
        return "'" + s + (cut ? "..." : "") + "'"
    }

    static func hexLiteral(_ v: UnsafeRawBufferPointer) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = Array("'\\x".utf8)
        for byte in v.prefix(maxValueBytes / 2) {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 15)])
        }
        if v.count > maxValueBytes / 2 { out += Array("...".utf8) }
        out.append(UInt8(ascii: "'"))
        return String(decoding: out, as: UTF8.self)
    }

    /// A simple-protocol statement's own text (its literals in place): "text: ...".
    static func rawText(_ text: UnsafeRawBufferPointer) -> String {
        let cut = text.count > maxTotalBytes
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: text[0..<min(text.count, maxTotalBytes)]), as: UTF8.self)
        return "text: " + s.trimmingSpaces() + (cut ? "..." : "")
    }

    static func clip(_ s: String, _ bytes: Int) -> String {
        guard s.utf8.count > bytes else { return s }
        return String(decoding: s.utf8.prefix(bytes), as: UTF8.self)
    }
}

private extension String {
    func replacingAll(_ a: Character, with b: String) -> String {
        guard contains(a) else { return self }
        var out = ""
        for c in self { if c == a { out += b } else { out.append(c) } }
        return out
    }

    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace || l == ";" { s.removeLast() }
        return String(s)
    }
}

extension Worker {
    /// The values kept for a statement in flight; its key for `PendingStatement.parametersID`.
    func keepParameters(_ text: String) -> UInt32 {
        let q = queryStats
        if q.pointee.parameters.count >= StatementParameters.maxKept { q.pointee.parameters.removeAll() }
        q.pointee.nextParametersID &+= 1
        if q.pointee.nextParametersID == 0 { q.pointee.nextParametersID = 1 }
        q.pointee.parameters[q.pointee.nextParametersID] = text
        return q.pointee.nextParametersID
    }

    /// A simple Query's statement (`range` of `text`, all of it when nil) when capturing, else nil.
    @inline(__always)
    func rawParameters(_ text: UnsafeRawBufferPointer, _ range: Range<Int>?) -> String? {
        guard queryStats.pointee.captureParameters else { return nil }
        return StatementParameters.rawText(range.map { UnsafeRawBufferPointer(rebasing: text[$0]) } ?? text)
    }

    /// A Bind's values, kept with the portal it makes.
    func keepBindParameters(_ sx: Int, _ body: UnsafeRawBufferPointer, portalEnd: Int, valuesAt: Int) {
        let q = queryStats
        let text = StatementParameters.bindText(body, valuesAt: valuesAt)
        if portalEnd == 0 {
            q.pointee.sessions[sx].unnamedPortalParameters = text
        } else {
            ClientQuerySession.remember(text, at: Self.portalKey(body, portalEnd),
                                        in: &q.pointee.sessions[sx].namedParameters)
        }
    }

    /// The values of the portal an Execute runs (`body` is the Execute's).
    func boundParameters(_ sx: Int, _ body: UnsafeRawBufferPointer, portalEnd: Int) -> String? {
        let q = queryStats
        if portalEnd == 0 { return q.pointee.sessions[sx].unnamedPortalParameters }
        return q.pointee.sessions[sx].namedParameters?[Self.portalKey(body, portalEnd)]
    }

    /// A named portal's key in `ClientQuerySession.namedParameters`: the hash of its name, the first
    /// `portalEnd` bytes of a Bind or Execute body.
    private static func portalKey(_ body: UnsafeRawBufferPointer, _ portalEnd: Int) -> UInt64 {
        SQLHash.rawText(UnsafeRawBufferPointer(rebasing: body[0..<portalEnd]), seed: 0x706f_7274)
    }
}

extension ClientQuerySession {
    /// `names[key] = value` in one of a client's maps by name hash, the map made at its first use. A
    /// client that names statements or portals without end and never closes them has its names
    /// forgotten (their calls then go uncounted) rather than the map grow without bound.
    static func remember<Value>(_ value: Value?, at key: UInt64, in names: inout [UInt64: Value]?) {
        if names == nil { names = [:] }
        if names!.count >= QueryStatsState.maxNamesPerClient { names!.removeAll() }
        names![key] = value
    }
}
