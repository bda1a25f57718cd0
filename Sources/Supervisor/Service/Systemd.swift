// systemd integration (Type=notify): READY, RELOADING, STOPPING, STATUS and the watchdog, via sd_notify.
import CSystemd
import Shared

struct Systemd {
    /// NOTIFY_SOCKET is set: we run under systemd (or something speaking its protocol).
    let enabled: Bool
    /// How often to send WATCHDOG=1 (half of WatchdogSec), or 0 when no watchdog is configured.
    let watchdogIntervalNanos: Int64

    init() {
        enabled = Posix.getenv("NOTIFY_SOCKET") != nil
        var usec: UInt64 = 0
        if enabled && sd_watchdog_enabled(0, &usec) > 0 && usec > 0 {
            watchdogIntervalNanos = Int64(clamping: usec / 2) &* 1000
        } else {
            watchdogIntervalNanos = 0
        }
    }

    private func notify(_ state: String) {
        guard enabled else { return }
        // unset_environment = 0: workers inherit NOTIFY_SOCKET, but systemd's default NotifyAccess=main ignores them.
        _ = sd_notify(0, state)
    }

    func ready(status: String) { notify("READY=1\nSTATUS=\(status)") }

    /// systemd >= 253 (Type=notify-reload) wants the reload's start time with RELOADING=1.
    func reloading() { notify("RELOADING=1\nMONOTONIC_USEC=\(Clock.monotonicNanos() / 1000)") }

    func stopping(status: String) { notify("STOPPING=1\nSTATUS=\(status)") }

    func status(_ text: String) { notify("STATUS=\(text)") }

    func watchdog() { notify("WATCHDOG=1") }
}
