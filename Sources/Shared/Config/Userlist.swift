// PgBouncer's auth_file (userlist.txt): `"user" "password"` lines; passwords kept exactly as written.

public struct Userlist: Sendable {
    /// User name → password as stored: plain text, `md5<32 hex>` or `SCRAM-SHA-256$...`.
    public var entries: [String: String]

    public init(entries: [String: String] = [:]) {
        self.entries = entries
    }

    public static func load(path: String) throws(ConfigError) -> Userlist {
        try parse(text: try ConfigFile.readText(path: path, what: "auth_file"), file: path)
    }

    /// Each line: a double-quoted user name, blanks, a double-quoted password, then anything
    /// (ignored, as PgBouncer does). Inside quotes `""` is one `"`. Blank lines and lines starting
    /// with `;` or `#` are skipped. A later line for the same user replaces an earlier one.
    public static func parse(text: String, file: String) throws(ConfigError) -> Userlist {
        var list = Userlist()
        for (lineNo, b) in ConfigLines(text, skippingByteOrderMark: true) {
            func fail(_ message: String) -> ConfigError {
                ConfigError(file: file, line: lineNo, message: message)
            }
            var p = b.startIndex
            let end = b.endIndex
            while p < end && ConfigText.isSpace(b[p]) { p += 1 }
            if p == end || b[p] == UInt8(ascii: ";") || b[p] == UInt8(ascii: "#") { continue }
            guard b[p] == UInt8(ascii: "\"") else {
                throw fail("expected a double-quoted user name at the start of the line")
            }
            guard let user = QuotedText.read(b, at: &p, quote: UInt8(ascii: "\"")) else {
                throw fail("unterminated quoted user name")
            }
            if user.isEmpty { throw fail("empty user name") }
            while p < end && ConfigText.isBlank(b[p]) { p += 1 }
            guard p < end && b[p] == UInt8(ascii: "\"") else {
                throw fail("expected a double-quoted password after user \"\(user)\"")
            }
            guard let password = QuotedText.read(b, at: &p, quote: UInt8(ascii: "\"")) else {
                throw fail("unterminated quoted password for user \"\(user)\"")
            }
            list.entries[user] = password
        }
        return list
    }

    public func password(for user: String) -> String? {
        entries[user]
    }
}
