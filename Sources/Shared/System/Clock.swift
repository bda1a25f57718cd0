// Time: a monotonic clock for timeouts and a wall clock for logs.
import Glibc

public enum Clock {
    /// Monotonic nanoseconds (CLOCK_MONOTONIC): never goes back, unaffected by NTP steps.
    @inlinable
    public static func monotonicNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
    }

    /// Wall-clock time as (seconds, microseconds) since the epoch.
    public static func wallClock() -> (seconds: Int, micros: Int) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return (Int(ts.tv_sec), Int(ts.tv_nsec) / 1000)
    }

    /// "2026-11-22 23:04:39.123 UTC" for the current time, or for a given epoch second.
    public static func timestamp(seconds: Int? = nil, millis: Int? = nil) -> String {
        let now = wallClock()
        var t = time_t(seconds ?? now.seconds)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        func pad(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
        }
        var s = "\(tmv.tm_year + 1900)-\(pad(tmv.tm_mon + 1, 2))-\(pad(tmv.tm_mday, 2)) "
        s += "\(pad(tmv.tm_hour, 2)):\(pad(tmv.tm_min, 2)):\(pad(tmv.tm_sec, 2))"
        if seconds == nil || millis != nil {
            s += "." + pad(Int32(millis ?? now.micros / 1000), 3)
        }
        return s + " UTC"
    }

    public static func nanos(seconds: Double) -> Int64 { Int64(seconds * 1_000_000_000) }

    /// Blocks the calling thread for `nanos` (nanosleep, resumed after a signal). Only for short
    /// waits outside an event loop (the supervisor's start-up retries).
    public static func sleep(nanos: Int64) {
        var request = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) < 0 && Errno.current == .interrupted { request = remaining }
    }
}
