// systemd Type=notify, continued: STATUS= with live counts, and the watchdog only while healthy.
import Shared

extension Supervisor {
    /// True while every slot has a running worker that reports its stats: systemd's watchdog then
    /// hears from us; a worker that keeps crashing or hangs lets it fire.
    var workersHealthy: Bool {
        slots.allSatisfy { $0.pid != 0 && !$0.reportedSilent }
    }

    /// Once a second under systemd: `STATUS=N workers, C clients, S servers` when it changed.
    func updateSystemdStatus(now: Int64) {
        guard systemd.enabled, announcedReady, stopping == nil, upgrade.roll == nil, now >= systemdState.nextStatus else { return }
        systemdState.nextStatus = now + 1_000_000_000
        let merged = latestMerged()
        let clients = merged.workers.reduce(0) { $0 + Int($1.clients) }
        let servers = merged.workers.reduce(0) { $0 + Int($1.servers) }
        let running = slots.filter { $0.pid != 0 }.count
        var text = "\(running) workers, \(clients) clients, \(servers) servers"
        if !upgrade.retired.isEmpty { text += ", \(upgrade.retired.count) draining" }
        if text != systemdState.lastStatus {
            systemdState.lastStatus = text
            systemd.status(text)
        }
    }
}

/// What was last told to systemd.
struct SystemdState {
    var nextStatus: Int64 = 0
    var lastStatus = ""
}
