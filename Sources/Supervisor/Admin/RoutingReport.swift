// SHOW ROUTING and its /metrics series (issue 20): per routed database and host, the role the health
// check sees and the workers' routing counters summed.
import Shared

extension Supervisor {
    /// One routed database's hosts: (key, host, port) in the entry's order.
    private func routedHosts(_ entry: DatabaseEntry) -> [(key: String, host: String, port: Int)] {
        let hosts = entry.hosts.isEmpty ? [""] : entry.hosts
        return hosts.enumerated().map { (i, raw) in
            let port = entry.port(forHostAt: i)
            let host = raw.isEmpty ? "/var/run/postgresql" : raw
            return (HealthCheckState.key(host: host, port: port), host, port)
        }
    }

    /// Each routed database's counters per host key, summed over its pools (users) and workers.
    private func routeTotals(_ m: MergedStats) -> [String: [String: RouteStat]] {
        var out: [String: [String: RouteStat]] = [:]
        for p in m.pools where !p.routes.isEmpty {
            var byHost = out[p.database] ?? [:]
            for r in p.routes {
                var t = byHost[r.host] ?? RouteStat(host: r.host)
                RouteStat.merge(&t, r)
                byHost[r.host] = t
            }
            out[p.database] = byHost
        }
        return out
    }

    /// The role column: what the health check last saw.
    private func roleText(_ key: String) -> String {
        guard let t = healthState.targets.first(where: { $0.key == key }) else { return "" }
        if t.health.state == .down { return "down" }
        return t.health.role.map { $0.inRecovery ? (t.flags.contains(.lagging) ? "standby (lagging)" : "standby") : "primary" } ?? ""
    }

    func routingRows(_ m: MergedStats) -> [[String?]] {
        let totals = routeTotals(m)
        var rows: [[String?]] = []
        for entry in config.databases where entry.routing.enabled {
            for h in routedHosts(entry) {
                let c = totals[entry.name]?[h.key] ?? RouteStat(host: h.key)
                let lag = healthState.targets.first { $0.key == h.key }?.replayLagMillis.map { String($0) }
                rows.append([entry.name, h.host, String(h.port), roleText(h.key), lag,
                             String(c.reads), String(c.writes), String(c.fallbacks), String(c.retries)])
            }
        }
        return rows
    }

    /// Appended to /metrics: routing counters per routed database and host.
    func routingMetrics(_ m: MergedStats) -> String {
        let routed = config.databases.filter { $0.routing.enabled }
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

extension RouteStat {
    /// Adds `o`'s counters to `t`.
    static func merge(_ t: inout RouteStat, _ o: RouteStat) {
        var rows = [t]
        RouteStat.merge(&rows, [RouteStat(host: t.host, reads: o.reads, writes: o.writes, fallbacks: o.fallbacks,
                                          retries: o.retries)])
        t = rows[0]
    }
}
