// Whole-file reads and path helpers for config, include and auth files (through System's Files, no Foundation).

/// Why a config-related file could not be read, as errno and its text.
struct ConfigFileError: Error, Sendable {
    var errno: Int32
    var reason: String { Errno(rawValue: self.errno).description }
}

enum ConfigFile {
    /// Upper bound on a config or auth file; anything larger is surely a mistake (wrong path).
    static let maxSize = 64 << 20

    /// Reads a whole file as UTF-8 (invalid sequences are replaced, which then fail parsing visibly).
    static func readAll(path: String) throws(ConfigFileError) -> String {
        do throws(SyscallError) {
            return String(decoding: try Files.readContents(path, limit: maxSize, longerIsError: true), as: UTF8.self)
        } catch {
            throw ConfigFileError(errno: error.errno.rawValue)
        }
    }

    /// `readAll` for a file to parse: a failure is a `ConfigError` at `path`, "could not read <what>: <reason>".
    static func readText(path: String, what: String) throws(ConfigError) -> String {
        do throws(ConfigFileError) {
            return try readAll(path: path)
        } catch {
            throw ConfigError(file: path, line: 0, message: "could not read \(what): \(error.reason)")
        }
    }

    /// nil when the file can be opened for reading, else the reason it cannot.
    static func unreadableReason(path: String) -> String? {
        do throws(SyscallError) {
            let fd = try Files.openForReading(path)
            defer { Posix.close(fd) }
            return Files.isDirectory(fd) ? Errno.isADirectory.description : nil
        } catch {
            return error.errno.description
        }
    }

    /// The directory part of a path ("" when there is none).
    static func directory(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return "" }
        if slash == path.utf8.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// A file named in a config (`auth_file`, `auth_hba_file`, `%include`) as PgBouncer takes it: a
    /// relative name against the working directory, made absolute so every process agrees. When nothing
    /// is there but the file exists next to the config file, that one is used (pgswift's earlier rule,
    /// kept so that configs written for it keep working under systemd, whose working directory is "/")
    /// and `nextToConfig` says so, for a warning.
    static func resolveFromWorkingDirectory(_ path: String, configFile: String) -> (path: String, nextToConfig: Bool) {
        if path.hasPrefix("/") { return (path, false) }
        let cwd = Files.currentDirectory() ?? "."
        let fromCWD = resolve(path, relativeTo: cwd)
        if Files.exists(fromCWD) { return (fromCWD, false) }
        let beside = resolve(path, relativeTo: directory(of: configFile))
        if beside != fromCWD && Files.exists(beside) { return (beside, true) }
        return (fromCWD, false)
    }

    /// `path` taken relative to `directory` unless it is absolute.
    static func resolve(_ path: String, relativeTo directory: String) -> String {
        if path.hasPrefix("/") || directory.isEmpty || directory == "." { return path }
        if directory.hasSuffix("/") { return directory + path }
        return directory + "/" + path
    }
}

/// The lines of a config, auth or hba file: split at LF, a CR before the LF dropped, numbered from 1;
/// no line after a final LF. A UTF-8 byte order mark at the start is skipped when asked (it is
/// invisible in editors and must not become part of a key).
struct ConfigLines: Sequence {
    let bytes: [UInt8]
    let start: Int

    init(_ text: String, skippingByteOrderMark: Bool) {
        bytes = Array(text.utf8)
        let bom = bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF
        start = skippingByteOrderMark && bom ? 3 : 0
    }

    struct Iterator: IteratorProtocol {
        let bytes: [UInt8]
        var start: Int
        var number = 0

        /// The line's number and its bytes (indices are `bytes`' own).
        mutating func next() -> (number: Int, line: ArraySlice<UInt8>)? {
            guard start < bytes.count else { return nil }
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            var lineEnd = end
            if lineEnd > start && bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            defer { start = end + 1 }
            number += 1
            return (number, bytes[start..<lineEnd])
        }
    }

    func makeIterator() -> Iterator { Iterator(bytes: bytes, start: start) }
}

/// Small byte-level text helpers, kept in a namespace so they cannot clash with other extensions.
enum ConfigText {
    @inline(__always) static func isBlank(_ b: UInt8) -> Bool {
        b == 0x20 || b == 0x09
    }

    @inline(__always) static func isSpace(_ b: UInt8) -> Bool {
        b == 0x20 || (b >= 0x09 && b <= 0x0D)
    }

    /// Trims ASCII whitespace from both ends.
    static func trim<S: StringProtocol>(_ s: S) -> String {
        let u = Array(s.utf8)
        var lo = 0
        var hi = u.count
        while lo < hi && isSpace(u[lo]) { lo += 1 }
        while hi > lo && isSpace(u[hi - 1]) { hi -= 1 }
        return String(decoding: u[lo..<hi], as: UTF8.self)
    }

    /// Comma-separated list: items trimmed, empty items dropped (PgBouncer's list settings).
    static func list(_ s: String) -> [String] {
        s.split(separator: ",", omittingEmptySubsequences: false)
            .map { trim($0) }
            .filter { !$0.isEmpty }
    }

    /// Strict decimal integer with optional sign, no surrounding spaces.
    static func decimal(_ s: String) -> Int? {
        var u = Substring(s).utf8[...]
        var negative = false
        if let f = u.first, f == UInt8(ascii: "+") || f == UInt8(ascii: "-") {
            negative = f == UInt8(ascii: "-")
            u = u.dropFirst()
        }
        if u.isEmpty { return nil }
        var value = 0
        for b in u {
            guard b >= 0x30 && b <= 0x39 else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(b - 0x30))
            if o1 || o2 { return nil }
            value = a
        }
        return negative ? -value : value
    }

    /// An integer as C `strtol(s, &end, 0)` reads it when the whole string must be consumed:
    /// `0x` prefix is hexadecimal, a leading `0` octal (PgBouncer's `unix_socket_mode = 0777`).
    static func cInteger(_ s: String) -> Int? {
        var u = Array(s.utf8)[...]
        var negative = false
        if let f = u.first, f == UInt8(ascii: "+") || f == UInt8(ascii: "-") {
            negative = f == UInt8(ascii: "-")
            u = u.dropFirst()
        }
        var base = 10
        if u.count >= 2 && u[u.startIndex] == UInt8(ascii: "0")
            && (u[u.startIndex + 1] | 0x20) == UInt8(ascii: "x") {
            base = 16
            u = u.dropFirst(2)
        } else if u.count >= 2 && u[u.startIndex] == UInt8(ascii: "0") {
            base = 8
            u = u.dropFirst()
        }
        if u.isEmpty { return nil }
        var value = 0
        for b in u {
            let digit: Int
            switch b {
            case 0x30...0x39: digit = Int(b - 0x30)
            case 0x61...0x66: digit = Int(b - 0x61 + 10)
            case 0x41...0x46: digit = Int(b - 0x41 + 10)
            default: return nil
            }
            if digit >= base { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: base)
            let (a, o2) = m.addingReportingOverflow(digit)
            if o1 || o2 { return nil }
            value = a
        }
        return negative ? -value : value
    }

    /// Seconds as PgBouncer reads them (`strtod`): a finite, non-negative number.
    static func seconds(_ s: String) -> Double? {
        guard !s.isEmpty, let v = Double(s), v.isFinite, v >= 0 else { return nil }
        return v
    }

    /// Formats seconds the way PgBouncer's SHOW CONFIG does (`%g`-like: no trailing ".0").
    static func formatSeconds(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e15 { return String(Int(v)) }
        return String(v)
    }
}
