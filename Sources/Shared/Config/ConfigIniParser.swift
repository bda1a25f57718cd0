// Splits pgbouncer.ini-format text into section and key=value events, following %include.

enum ConfigIniEvent {
    case section(name: String, file: String, line: Int)
    case entry(key: String, value: String, file: String, line: Int)
}

enum ConfigIniParser {
    /// PgBouncer's limit on nested `%include`s.
    static let maxIncludeDepth = 10

    /// Feeds every event of `text` (and of the files it includes, in place) to `handler`.
    /// Lines: `[section]`, `key = value` (the value is the rest of the line, trimmed; `;`/`#` are
    /// only comments at the start of a line), `"quoted key" = value`, `%include FILE`.
    static func parse(text: String, file: String, depth: Int,
                      handler: (ConfigIniEvent) throws(ConfigError) -> Void) throws(ConfigError) {
        let lines = ConfigLines(text, skippingByteOrderMark: true)
        let bytes = lines.bytes
        for (lineNo, raw) in lines {
            var lo = raw.startIndex
            var hi = raw.endIndex
            while lo < hi && ConfigText.isSpace(bytes[lo]) { lo += 1 }
            while hi > lo && ConfigText.isSpace(bytes[hi - 1]) { hi -= 1 }
            if lo == hi { continue }
            let line = bytes[lo..<hi]
            func fail(_ message: String) -> ConfigError {
                ConfigError(file: file, line: lineNo, message: message)
            }

            switch line.first! {
            case UInt8(ascii: "#"), UInt8(ascii: ";"):
                continue
            case UInt8(ascii: "%"):
                try include(line, file: file, line: lineNo, depth: depth, handler: handler)
            case UInt8(ascii: "["):
                guard let close = line.firstIndex(of: UInt8(ascii: "]")) else {
                    throw fail("syntax error: section header is missing \"]\"")
                }
                let name = ConfigText.trim(String(decoding: line[(lo + 1)..<close], as: UTF8.self))
                if name.isEmpty { throw fail("syntax error: empty section name") }
                var rest = close + 1
                while rest < hi && ConfigText.isSpace(bytes[rest]) { rest += 1 }
                if rest < hi && bytes[rest] != UInt8(ascii: "#") && bytes[rest] != UInt8(ascii: ";") {
                    throw fail("syntax error: unexpected text after section header [\(name)]")
                }
                try handler(.section(name: name, file: file, line: lineNo))
            default:
                var p = lo
                let key: String
                if bytes[p] == UInt8(ascii: "\"") {
                    // SQL-identifier quoting for database and user names: "" is one quote.
                    guard let name = QuotedText.read(bytes[lo..<hi], at: &p, quote: UInt8(ascii: "\"")) else {
                        throw fail("syntax error: unterminated quoted name")
                    }
                    if name.isEmpty { throw fail("syntax error: empty quoted name") }
                    key = name
                } else {
                    while p < hi && isKeyByte(bytes[p]) { p += 1 }
                    if p == lo {
                        throw fail("syntax error: expected \"key = value\", a [section] or a comment")
                    }
                    key = String(decoding: bytes[lo..<p], as: UTF8.self)
                }
                while p < hi && ConfigText.isBlank(bytes[p]) { p += 1 }
                guard p < hi && bytes[p] == UInt8(ascii: "=") else {
                    throw fail("syntax error: expected \"=\" after \"\(key)\"")
                }
                p += 1
                while p < hi && ConfigText.isBlank(bytes[p]) { p += 1 }
                let value = String(decoding: bytes[p..<hi], as: UTF8.self)
                try handler(.entry(key: key, value: value, file: file, line: lineNo))
            }
        }
    }

    /// Unquoted key characters: PgBouncer's alphanumerics and `_.-*`, plus non-ASCII bytes so that
    /// UTF-8 database names need no quoting.
    @inline(__always) static func isKeyByte(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, 0x80...0xFF: return true
        case UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "*"): return true
        default: return false
        }
    }

    private static func include(_ line: ArraySlice<UInt8>, file: String, line lineNo: Int, depth: Int,
                                handler: (ConfigIniEvent) throws(ConfigError) -> Void) throws(ConfigError) {
        let directive = Array("%include".utf8)
        guard line.count >= directive.count && line.prefix(directive.count).elementsEqual(directive)
                && (line.count == directive.count || ConfigText.isBlank(line[line.startIndex + directive.count]))
        else {
            throw ConfigError(file: file, line: lineNo,
                              message: "syntax error: unknown directive (only %include is supported)")
        }
        let name = ConfigText.trim(String(decoding: line.dropFirst(directive.count), as: UTF8.self))
        if name.isEmpty {
            throw ConfigError(file: file, line: lineNo, message: "%include needs a file name")
        }
        if depth >= maxIncludeDepth {
            throw ConfigError(file: file, line: lineNo,
                              message: "%include nested too deeply (limit \(maxIncludeDepth))")
        }
        let path = ConfigFile.resolveFromWorkingDirectory(name, configFile: file).path
        let text: String
        do {
            text = try ConfigFile.readAll(path: path)
        } catch {
            throw ConfigError(file: file, line: lineNo,
                              message: "could not read included file \"\(path)\": \(error.reason)")
        }
        try parse(text: text, file: path, depth: depth + 1, handler: handler)
    }
}
