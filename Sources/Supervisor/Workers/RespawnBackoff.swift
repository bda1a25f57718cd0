// When to restart a worker that exited unexpectedly: at once, then with doubling delays while it keeps crashing.

struct RespawnBackoff: Equatable, Sendable {
    static let initialDelayNanos: Int64 = 100_000_000
    static let maximumDelayNanos: Int64 = 5_000_000_000
    /// A worker that ran at least this long before exiting starts a fresh series.
    static let stableAfterNanos: Int64 = 10_000_000_000

    /// Exits in a row, each within `stableAfterNanos` of its start.
    private(set) var quickFailures = 0

    /// Records an exit after `ranForNanos` of running; returns how long to wait before respawning.
    /// The first failure restarts at once (a one-off crash costs no downtime); a worker that keeps
    /// crashing is retried after 0.1 s, 0.2 s, 0.4 s ... up to 5 s, so a broken setup does not spin.
    mutating func delayAfterExit(ranForNanos: Int64) -> Int64 {
        if ranForNanos >= Self.stableAfterNanos { quickFailures = 0 }
        quickFailures += 1
        if quickFailures == 1 { return 0 }
        var delay = Self.initialDelayNanos
        var n = 2
        while n < quickFailures && delay < Self.maximumDelayNanos {
            delay *= 2
            n += 1
        }
        return min(delay, Self.maximumDelayNanos)
    }
}
