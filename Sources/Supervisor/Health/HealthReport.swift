// What the health check shows: SHOW HEALTH and SHOW DNS_HOSTS rows, and the pgswift_backend_* metrics.
import Shared

extension Supervisor {
    func healthRows(now: Int64) -> [[String?]] {
        healthState.targets.map { t in
            let h = t.health
            let role = h.role.map { r -> String in r.inRecovery ? "standby" : (r.readOnly ? "read-only" : "primary") } ?? ""
            let addrs = t.kind == .name ? t.addressTexts.joined(separator: ",") : (t.addresses.first?.hostString ?? "")
            let sinceCheck = h.lastCheckNanos > 0 ? "\(HealthText.seconds(nanos: now - h.lastCheckNanos)) s ago" : "never"
            return [t.host, String(t.port), h.state.rawValue, role, addrs, String(h.checks), String(h.failedChecks),
                    String(h.backoff.failures), String(h.backoff.currentCapNanos / 1_000_000),
                    String(h.lastChangeNanos > 0 ? (now - h.lastChangeNanos) / 1_000_000 : 0), sinceCheck, h.lastError]
        }
    }

    /// PgBouncer's SHOW DNS_HOSTS: the names pgswift resolves, seconds until the next lookup, addresses.
    func dnsHostRows(now: Int64) -> [[String?]] {
        let ttl = Clock.nanos(seconds: max(config.dnsMaxTTL, 1))
        return healthState.targets.filter { $0.kind == .name }.map { t in
            let left = t.resolvedAt > 0 ? max(0, (t.resolvedAt + ttl - now) / 1_000_000_000) : 0
            return [t.host, String(left), t.addressTexts.joined(separator: ",")]
        }
    }

    /// PgBouncer's SHOW LISTS dns_names and dns_queries: the distinct host names the supervisor
    /// resolves that have an answer (or a failure) cached or a lookup running, and the lookups running.
    func dnsCounts() -> (names: Int, queries: Int) {
        let running = healthState.resolver?.inFlight ?? []
        var names = Set<String>()
        for t in healthState.targets where t.kind == .name && (t.resolvedAt > 0 || running.contains(t.key)) {
            names.insert(t.host)
        }
        return (names.count, running.count)
    }

    /// Appended to /metrics: one series per backend host.
    func healthMetrics() -> String {
        var w = PrometheusTextWriter(capacity: 1024)
        let targets = healthState.targets
        func labels(_ t: HealthTarget) -> [(String, String)] { [("host", t.host), ("port", String(t.port))] }
        w.family("pgswift_backend_up", .gauge, "1 while the health check reaches the backend host, 0 when it is down, -1 before the first check.")
        for t in targets {
            w.sample("pgswift_backend_up", labels(t), t.health.state == .up ? "1" : (t.health.state == .down ? "0" : "-1"))
        }
        w.family("pgswift_backend_checks_total", .counter, "Health checks run against the backend host.")
        for t in targets { w.sample("pgswift_backend_checks_total", labels(t), String(t.health.checks)) }
        w.family("pgswift_backend_check_failures_total", .counter, "Health checks of the backend host that failed.")
        for t in targets { w.sample("pgswift_backend_check_failures_total", labels(t), String(t.health.failedChecks)) }
        w.family("pgswift_backend_transitions_total", .counter, "Up/down changes of the backend host's state.")
        for t in targets { w.sample("pgswift_backend_transitions_total", labels(t), String(t.health.transitions)) }
        w.family("pgswift_backend_backoff_seconds", .gauge, "Current backoff ceiling of a failing backend host (0 while up).")
        for t in targets {
            w.sample("pgswift_backend_backoff_seconds", labels(t), HealthText.seconds(nanos: t.health.backoff.currentCapNanos))
        }
        w.family("pgswift_backend_in_recovery", .gauge, "1 when the backend host is a standby (pg_is_in_recovery), -1 when not checked.")
        for t in targets {
            w.sample("pgswift_backend_in_recovery", labels(t), t.health.role.map { $0.inRecovery ? "1" : "0" } ?? "-1")
        }
        return w.text
    }
}
