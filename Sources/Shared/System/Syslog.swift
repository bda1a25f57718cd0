// syslog (PgBouncer's syslog, syslog_ident, syslog_facility): each process, the supervisor and every
// worker, sends its log lines to the local syslog daemon through libc's openlog/syslog.
import Glibc
import CLinux
import Synchronization

/// The process's syslog connection. `configure` runs at start and at every reload; `send` is what
/// `Logger` calls for each line while it is on (one atomic load per line when it is off).
public enum Syslog {
    /// The ident string openlog(3) keeps a pointer to: it must outlive the connection.
    private struct State {
        var ident: UnsafeMutablePointer<CChar>? = nil
        var settings: (ident: String, facility: SyslogFacility)? = nil
    }

    private static let state = Mutex(State())
    private static let on = Atomic<Bool>(false)

    /// Whether lines go to syslog now.
    public static var isOn: Bool { on.load(ordering: .relaxed) }

    /// Opens (or reopens with a new ident or facility) or closes the connection, as `enabled` says.
    public static func configure(enabled: Bool, ident: String, facility: SyslogFacility) {
        state.withLock { s in
            if enabled, let current = s.settings, current.ident == ident, current.facility == facility { return }
            if s.settings != nil {
                on.store(false, ordering: .relaxed)
                closelog()
                s.settings = nil
            }
            free(s.ident)
            s.ident = nil
            guard enabled else { return }
            s.ident = strdup(ident)
            // As PgBouncer: the pid in every message; the socket is connected at the first line.
            openlog(s.ident, LOG_PID, facility.code)
            s.settings = (ident, facility)
            on.store(true, ordering: .relaxed)
        }
    }

    /// The syslog priority of a level; debug lines are not sent (PgBouncer's syslog level is INFO).
    public static func severity(_ level: LogLevel) -> Int32? {
        switch level {
        case .fatal: return LOG_CRIT
        case .error: return LOG_ERR
        case .warning: return LOG_WARNING
        case .log: return LOG_INFO
        case .debug: return nil
        }
    }

    /// Sends one line (no time or pid: syslog adds its own) at `level`'s priority.
    public static func send(_ level: LogLevel, _ message: String) {
        guard let priority = severity(level) else { return }
        message.withCString { cl_syslog(priority, $0) }
    }
}
