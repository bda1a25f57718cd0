// SHOW ROUTING and its /metrics series (issue 20): per routed database and host, the role the health
// check sees and the workers' routing counters summed.
import Shared

extension Supervisor {
    func routingRows(_ m: MergedStats) -> [[String?]] {
        Self.routingRows(config.databases, healthState.targets, m)
    }

    /// Appended to /metrics: routing counters per routed database and host.
    func routingMetrics(_ m: MergedStats) -> String {
        Self.routingMetrics(config.databases, m)
    }

    /// One routed database's hosts: (key, host, port) in the entry's order.
    static func routedHosts(_ entry: DatabaseEntry) -> [(key: String, host: String, port: Int)] {
        let hosts = entry.hosts.isEmpty ? [""] : entry.hosts
        return hosts.enumerated().map { (i, raw) in
            let port = entry.port(forHostAt: i)
            let host = raw.isEmpty ? "/var/run/postgresql" : raw
            return (HealthCheckState.key(host: host, port: port), host, port)
        }
    }

    /// Each routed database's counters per host key, summed over its pools (users) and workers.
    static func routeTotals(_ m: MergedStats) -> [String: [String: RouteStat]] {
        var out: [String: [String: RouteStat]] = [:]
        for p in m.pools where !p.routes.isEmpty {
            var rows = Array((out[p.database] ?? [:]).values)
            RouteStat.merge(&rows, p.routes)
            out[p.database] = Dictionary(uniqueKeysWithValues: rows.map { ($0.host, $0) })
        }
        return out
    }

    /// The role column: what the health check last saw ("down", "primary", "standby", "standby (lagging)",
    /// "" before the role is known).
    static func roleText(_ t: HealthTarget?) -> String {
        guard let t else { return "" }
        if t.health.state == .down { return "down" }
        return t.health.role.map { $0.inRecovery ? (t.flags.contains(.lagging) ? "standby (lagging)" : "standby") : "primary" } ?? ""
    }

    static func routingRows(_ databases: [DatabaseEntry], _ targets: [HealthTarget], _ m: MergedStats) -> [[String?]] {
        let totals = routeTotals(m)
        var rows: [[String?]] = []
        for entry in databases where entry.routing.enabled {
            for h in routedHosts(entry) {
                let t = targets.first { $0.key == h.key }
                let c = totals[entry.name]?[h.key] ?? RouteStat(host: h.key)
                rows.append([entry.name, h.host, String(h.port), roleText(t), t?.replayLagMillis.map { String($0) },
                             String(c.reads), String(c.writes), String(c.fallbacks), String(c.retries)])
            }
        }
        return rows
    }

    static func routingMetrics(_ databases: [DatabaseEntry], _ m: MergedStats) -> String {
        let routed = databases.filter { $0.routing.enabled }
        guard !routed.isEmpty else { return "" }
        let totals = routeTotals(m)
        var w = PrometheusTextWriter(capacity: 1024)
        let families: [(String, String, (RouteStat) -> UInt64)] = [
            ("pgswift_routing_reads_total", "Read transactions routed to the host (read/write routing).", { $0.reads }),
            ("pgswift_routing_writes_total", "Transactions routed to the host as writes (read/write routing).", { $0.writes }),
            ("pgswift_routing_fallbacks_total", "Reads sent to the primary because no standby was usable.", { $0.fallbacks }),
            ("pgswift_routing_retries_total", "Statements re-run on the host after a standby refused them (25006).", { $0.retries }),
        ]
        for (name, help, value) in families {
            w.family(name, .counter, help)
            for entry in routed {
                for h in routedHosts(entry) {
                    let c = totals[entry.name]?[h.key] ?? RouteStat(host: h.key)
                    w.sample(name, [("database", entry.name), ("host", h.host), ("port", String(h.port))], String(value(c)))
                }
            }
        }
        return w.text
    }
}
