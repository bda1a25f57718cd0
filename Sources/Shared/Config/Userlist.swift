// PgBouncer's auth_file (userlist.txt): `"user" "password"` lines; passwords kept exactly as written.

public struct Userlist: Sendable {
    /// User name → password as stored: plain text, `md5<32 hex>` or `SCRAM-SHA-256$...`.
    public var entries: [String: String]

    public init(entries: [String: String] = [:]) {
        self.entries = entries
    }

    public static func load(path: String) throws(ConfigError) -> Userlist {
        let text: String
        do {
            text = try ConfigFile.readAll(path: path)
        } catch {
            throw ConfigError(file: path, line: 0, message: "could not read auth_file: \(error.reason)")
        }
        return try parse(text: text, file: path)
    }

    /// Each line: a double-quoted user name, blanks, a double-quoted password, then anything
    /// (ignored, as PgBouncer does). Inside quotes `""` is one `"`. Blank lines and lines starting
    /// with `;` or `#` are skipped. A later line for the same user replaces an earlier one.
    public static func parse(text: String, file: String) throws(ConfigError) -> Userlist {
        var list = Userlist()
        let b = Array(text.utf8)
        var lineStart = 0
        var lineNo = 0
        if b.count >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF { lineStart = 3 }
        while lineStart < b.count {
            var lineEnd = lineStart
            while lineEnd < b.count && b[lineEnd] != 0x0A { lineEnd += 1 }
            lineNo += 1
            var p = lineStart
            let end = lineEnd
            lineStart = lineEnd + 1
            func fail(_ message: String) -> ConfigError {
                ConfigError(file: file, line: lineNo, message: message)
            }

            while p < end && ConfigText.isSpace(b[p]) { p += 1 }
            if p == end || b[p] == UInt8(ascii: ";") || b[p] == UInt8(ascii: "#") { continue }
            guard b[p] == UInt8(ascii: "\"") else {
                throw fail("expected a double-quoted user name at the start of the line")
            }
            guard let user = quoted(b, &p, end) else { throw fail("unterminated quoted user name") }
            if user.isEmpty { throw fail("empty user name") }
            while p < end && ConfigText.isBlank(b[p]) { p += 1 }
            guard p < end && b[p] == UInt8(ascii: "\"") else {
                throw fail("expected a double-quoted password after user \"\(user)\"")
            }
            guard let password = quoted(b, &p, end) else {
                throw fail("unterminated quoted password for user \"\(user)\"")
            }
            list.entries[user] = password
        }
        return list
    }

    public func password(for user: String) -> String? {
        entries[user]
    }

    /// Reads a `"..."` field starting at `p` (on the opening quote); leaves `p` after the closing one.
    private static func quoted(_ b: [UInt8], _ p: inout Int, _ end: Int) -> String? {
        var out: [UInt8] = []
        var i = p + 1
        while i < end {
            if b[i] == UInt8(ascii: "\"") {
                if i + 1 < end && b[i + 1] == UInt8(ascii: "\"") {
                    out.append(b[i])
                    i += 2
                    continue
                }
                p = i + 1
                return String(decoding: out, as: UTF8.self)
            }
            out.append(b[i])
            i += 1
        }
        return nil
    }
}
