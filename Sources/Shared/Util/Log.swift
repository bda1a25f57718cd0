// Logging: one line per event on stderr (and the logfile when set): time, pid, who, level, message;
// with `syslog`, also to syslog (Shared/System/Syslog.swift).
public enum LogLevel: Int, Comparable, Sendable {
    case debug = 0, log, warning, error, fatal
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
    public var label: String {
        switch self {
        case .debug: return "DEBUG"
        case .log: return "LOG"
        case .warning: return "WARNING"
        case .error: return "ERROR"
        case .fatal: return "FATAL"
        }
    }
}

/// A logger owned by one process's single thread. Lines look like
/// `2026-11-22 23:04:39.123 UTC [4242] w1 LOG C-7: login attempt: db=app user=app tls=no`.
public struct Logger: Sendable {
    public var who: String
    public var minimumLevel: LogLevel
    /// Extra fd the lines also go to (the `logfile`), or -1.
    public var fileFD: Int32

    public init(who: String, minimumLevel: LogLevel = .log, fileFD: Int32 = -1) {
        self.who = who
        self.minimumLevel = minimumLevel
        self.fileFD = fileFD
    }

    /// Opens `path` for appending as the log file (keeps stderr too). Returns false on failure.
    public mutating func openLogFile(_ path: String) -> Bool {
        guard let fd = try? Files.openForAppending(path, mode: 0o640) else { return false }
        if fileFD >= 0 { Posix.close(fileFD) }
        fileFD = fd
        return true
    }

    /// Makes `path` the log file, opened anew even when the name is unchanged, so that a file moved
    /// away by log rotation is followed by a new one at the next reload (PgBouncer's SIGHUP/RELOAD).
    /// nil or empty: no log file (one open is closed). Returns false when `path` cannot be opened;
    /// the previous file, if any, is kept.
    public mutating func useLogFile(_ path: String?) -> Bool {
        guard let path, !path.isEmpty else {
            if fileFD >= 0 { Posix.close(fileFD) }
            fileFD = -1
            return true
        }
        return openLogFile(path)
    }

    @inline(__always)
    public func enabled(_ level: LogLevel) -> Bool { level >= minimumLevel }

    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard level >= minimumLevel else { return }
        let text = message()
        if Syslog.isOn { Syslog.send(level, "\(who) \(text)") }
        let line = "\(Clock.timestamp()) [\(Posix.getpid())] \(who) \(level.label) \(text)\n"
        var copy = line
        copy.withUTF8 { buf in
            Posix.writeAll(2, UnsafeRawBufferPointer(buf))
            if fileFD >= 0 { Posix.writeAll(fileFD, UnsafeRawBufferPointer(buf)) }
        }
    }

    /// A line without the `who` field, in PgBouncer's own shape (`<time> [<pid>] LOG <message>`), for
    /// the lines log parsers read from PgBouncer's logs (pgbadger's pattern has no room for `who`):
    /// `log_stats`.
    public func logUntagged(_ level: LogLevel, _ message: String) {
        guard level >= minimumLevel else { return }
        var line = "\(Clock.timestamp()) [\(Posix.getpid())] \(level.label) \(message)\n"
        line.withUTF8 { buf in
            Posix.writeAll(2, UnsafeRawBufferPointer(buf))
            if fileFD >= 0 { Posix.writeAll(fileFD, UnsafeRawBufferPointer(buf)) }
        }
    }

    public func debug(_ m: @autoclosure () -> String) { log(.debug, m()) }
    public func info(_ m: @autoclosure () -> String) { log(.log, m()) }
    public func warning(_ m: @autoclosure () -> String) { log(.warning, m()) }
    public func error(_ m: @autoclosure () -> String) { log(.error, m()) }
    public func fatal(_ m: @autoclosure () -> String) { log(.fatal, m()) }
}
