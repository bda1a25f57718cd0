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
    /// only comments at the start of a line), `"quoted key" = value`, `%include FILE`. Every line but a
    /// comment has its `${NAME}` references replaced from `environment` first (ConfigEnvironment.swift).
    static func parse(text: String, file: String, depth: Int, environment: ConfigEnvironment = [:],
                      handler: (ConfigIniEvent) throws(ConfigError) -> Void) throws(ConfigError) {
        let lines = ConfigLines(text, skippingByteOrderMark: true)
        let bytes = lines.bytes
        for (lineNo, raw) in lines {
            let line = trimmed(bytes[raw.startIndex..<raw.endIndex])
            if line.isEmpty || isComment(line) { continue }
            if let expanded = try environment.expand(line, file: file, line: lineNo) {
                let again = trimmed(expanded[...])
                if again.isEmpty || isComment(again) { continue }
                try parseLine(again, file: file, line: lineNo, depth: depth, environment: environment, handler: handler)
            } else {
                try parseLine(line, file: file, line: lineNo, depth: depth, environment: environment, handler: handler)
            }
        }
    }

    private static func trimmed(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var lo = s.startIndex
        var hi = s.endIndex
        while lo < hi && ConfigText.isSpace(s[lo]) { lo += 1 }
        while hi > lo && ConfigText.isSpace(s[hi - 1]) { hi -= 1 }
        return s[lo..<hi]
    }

    private static func isComment(_ line: ArraySlice<UInt8>) -> Bool {
        line.first == UInt8(ascii: "#") || line.first == UInt8(ascii: ";")
    }

    /// One trimmed, non-empty line that is not a comment.
    private static func parseLine(_ line: ArraySlice<UInt8>, file: String, line lineNo: Int, depth: Int,
                                  environment: ConfigEnvironment,
                                  handler: (ConfigIniEvent) throws(ConfigError) -> Void) throws(ConfigError) {
        let lo = line.startIndex
        let hi = line.endIndex
        func fail(_ message: String) -> ConfigError {
            ConfigError(file: file, line: lineNo, message: message)
        }
        switch line.first! {
        case UInt8(ascii: "%"):
            try include(line, file: file, line: lineNo, depth: depth, environment: environment, handler: handler)
        case UInt8(ascii: "["):
            guard let close = line.firstIndex(of: UInt8(ascii: "]")) else {
                throw fail("syntax error: section header is missing \"]\"")
            }
            let name = ConfigText.trim(String(decoding: line[(lo + 1)..<close], as: UTF8.self))
            if name.isEmpty { throw fail("syntax error: empty section name") }
            var rest = close + 1
            while rest < hi && ConfigText.isSpace(line[rest]) { rest += 1 }
            if rest < hi && line[rest] != UInt8(ascii: "#") && line[rest] != UInt8(ascii: ";") {
                throw fail("syntax error: unexpected text after section header [\(name)]")
            }
            try handler(.section(name: name, file: file, line: lineNo))
        default:
            var p = lo
            let key: String
            if line[p] == UInt8(ascii: "\"") {
                // SQL-identifier quoting for database and user names: "" is one quote.
                guard let name = QuotedText.read(line, at: &p, quote: UInt8(ascii: "\"")) else {
                    throw fail("syntax error: unterminated quoted name")
                }
                if name.isEmpty { throw fail("syntax error: empty quoted name") }
                key = name
            } else {
                while p < hi && isKeyByte(line[p]) { p += 1 }
                if p == lo {
                    throw fail("syntax error: expected \"key = value\", a [section] or a comment")
                }
                key = String(decoding: line[lo..<p], as: UTF8.self)
            }
            while p < hi && ConfigText.isBlank(line[p]) { p += 1 }
            guard p < hi && line[p] == UInt8(ascii: "=") else {
                throw fail("syntax error: expected \"=\" after \"\(key)\"")
            }
            p += 1
            while p < hi && ConfigText.isBlank(line[p]) { p += 1 }
            let value = String(decoding: line[p..<hi], as: UTF8.self)
            try handler(.entry(key: key, value: value, file: file, line: lineNo))
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
                                environment: ConfigEnvironment, handler: (ConfigIniEvent) throws(ConfigError) -> Void) throws(ConfigError) {
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
        try parse(text: text, file: path, depth: depth + 1, environment: environment, handler: handler)
    }
}
