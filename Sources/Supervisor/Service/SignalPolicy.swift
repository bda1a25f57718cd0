// What each signal means to the supervisor (PgBouncer's meanings), given whether a shutdown is under way.
import Glibc
import Shared

enum SignalAction: Equatable, Sendable {
    case shutdown(ShutdownMode)
    case reload
    case pause
    case resume
    case reapChildren
    case ignore
}

enum SignalPolicy {
    /// The signals the supervisor blocks and reads from its signalfd.
    static let handled: [Int32] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD]

    /// `stopping` is the shutdown mode already in force, if any.
    static func action(for signal: Int32, stopping: ShutdownMode?) -> SignalAction {
        switch signal {
        case SIGCHLD:
            return .reapChildren
        case SIGTERM:
            // A second SIGTERM/SIGINT means "now", whatever the first one asked for.
            return .shutdown(stopping == nil ? .graceful : .immediate)
        case SIGINT:
            return .shutdown(stopping == nil ? .safe : .immediate)
        case SIGQUIT:
            return .shutdown(.immediate)
        case SIGHUP:
            // Workers that are draining keep the configuration they stop with.
            return stopping == nil ? .reload : .ignore
        case SIGUSR1:
            return .pause
        case SIGUSR2:
            // As PgBouncer: nothing to resume once stopping (WAIT_FOR_SERVERS pauses on purpose).
            return stopping == nil ? .resume : .ignore
        default:
            return .ignore
        }
    }
}
