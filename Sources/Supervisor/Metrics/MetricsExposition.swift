// Prometheus text exposition (format 0.0.4) of merged stats, with pgbouncer_exporter's metric names.
import Shared

/// What one scrape shows; the supervisor fills it from its merged stats, config and slots.
struct MetricsInput {
    var merged: MergedStats
    /// SHOW DATABASES rows (pgbouncer_databases_* series).
    var databases: [AdminDatabaseRow] = []
    /// One per worker slot, running or not.
    var workers: [AdminWorkerRow] = []
    var configuredDatabases = 0
    var configuredUsers = 0
    var maxClientConnections: Int64 = 0
    var maxUserConnections: Int64 = 0
    /// Host names the supervisor resolves (answered or being looked up) and lookups running now
    /// (`Supervisor.dnsCounts`). pgswift has no DNS zones (dns_zone_check_period is not implemented).
    var cachedDNSNames: Int64 = 0
    var inFlightDNSQueries: Int64 = 0
    /// Server connections relayed between workers for quota moves, and those that could not be
    /// delivered (closed) (`Supervisor.relayServer`).
    var serverMoves: Int64 = 0
    var serverMovesLost: Int64 = 0
    var version = "pgswift " + PgswiftVersion.string
    /// Query statistics merged over workers (nil: query_stats off) and how many patterns get series.
    var queries: MergedQueryStats? = nil
    var queryTop = 0
}

/// Writes families one at a time: HELP and TYPE once, then every sample of the family, as the text
/// format requires (a family's samples must be contiguous). Appends UTF-8 bytes to one buffer, with no
/// intermediate strings or label arrays per sample: a scrape with tens of thousands of pools writes
/// hundreds of thousands of lines.
struct PrometheusTextWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 16_384) { bytes.reserveCapacity(capacity) }

    var text: String { String(decoding: bytes, as: UTF8.self) }

    enum Kind: String { case counter, gauge, histogram }

    private mutating func put(_ s: String) {
        var s = s
        s.withUTF8 { bytes.append(contentsOf: $0) }
    }

    private mutating func put(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    private mutating func putLabel(_ v: String) {
        var v = v
        v.withUTF8 { utf8 in
            for b in utf8 {
                switch b {
                case 0x5C: bytes.append(0x5C); bytes.append(0x5C)
                case 0x22: bytes.append(0x5C); bytes.append(0x22)
                case 0x0A: bytes.append(0x5C); bytes.append(UInt8(ascii: "n"))
                default: bytes.append(b)
                }
            }
        }
    }

    private mutating func putLabels(_ labels: [(String, String)], extra: (String, String)? = nil) {
        guard !labels.isEmpty || extra != nil else { return }
        bytes.append(UInt8(ascii: "{"))
        var first = true
        for (k, v) in labels {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            put(k)
            put("=\"")
            putLabel(v)
            bytes.append(UInt8(ascii: "\""))
        }
        if let (k, v) = extra {
            if !first { bytes.append(UInt8(ascii: ",")) }
            put(k)
            put("=\"")
            putLabel(v)
            bytes.append(UInt8(ascii: "\""))
        }
        bytes.append(UInt8(ascii: "}"))
    }

    mutating func family(_ name: String, _ kind: Kind, _ help: String) {
        put("# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n")
    }

    mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: String) {
        put(name)
        putLabels(labels)
        bytes.append(UInt8(ascii: " "))
        put(value)
        bytes.append(UInt8(ascii: "\n"))
    }

    /// The `le` label values, in seconds, computed once.
    private static let bucketBounds: [String] = (0..<LatencyHistogram.bucketCount).map { i in
        LatencyHistogram.upperBoundMicros(i).map { AdminResults.decimalMicros($0) } ?? "+Inf"
    }

    /// One whole histogram series: cumulative buckets with `le` in seconds, then _sum and _count.
    mutating func histogram(_ name: String, _ labels: [(String, String)], _ h: LatencyHistogram) {
        var cumulative: UInt64 = 0
        for i in 0..<LatencyHistogram.bucketCount {
            cumulative &+= h.bucketCount(i)
            put(name)
            put("_bucket")
            putLabels(labels, extra: ("le", Self.bucketBounds[i]))
            bytes.append(UInt8(ascii: " "))
            put(String(cumulative))
            bytes.append(UInt8(ascii: "\n"))
        }
        sample(name + "_sum", labels, AdminResults.decimalMicros(h.sumMicros))
        sample(name + "_count", labels, String(h.count))
    }

    /// Label values escape backslash, double quote and line feed.
    static func escapeLabel(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 0x5C || $0 == 0x22 || $0 == 0x0A }) else { return s }
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// HELP text escapes backslash and line feed (quotes stay as they are).
    static func escapeHelp(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

enum MetricsExposition {
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The whole /metrics body.
    static func render(_ input: MetricsInput) -> String {
        let m = input.merged
        // About 1 KiB per pool without histograms.
        var w = PrometheusTextWriter(capacity: 16_384 + m.pools.count * 1200)

        w.family("pgbouncer_up", .gauge, "Whether the pooler answered this scrape (always 1 when pgswift serves it).")
        w.sample("pgbouncer_up", [], "1")
        w.family("pgbouncer_version_info", .gauge, "Version of the pooler, as a label.")
        w.sample("pgbouncer_version_info", [("version", input.version)], "1")

        // SHOW LISTS
        let lists: [(String, String, Int64)] = [
            ("pgbouncer_databases", "Number of configured databases.", Int64(input.configuredDatabases)),
            ("pgbouncer_users", "Number of configured users.", Int64(input.configuredUsers)),
            ("pgbouncer_pools", "Number of (database, user) pools.", Int64(m.pools.count)),
            ("pgbouncer_free_clients", "Client records allocated but unused.", Int64(m.lists.freeClients)),
            ("pgbouncer_used_clients", "Client records in use.", Int64(m.lists.usedClients)),
            ("pgbouncer_login_clients", "Clients still logging in.", Int64(m.lists.loginClients)),
            ("pgbouncer_free_servers", "Server records allocated but unused.", Int64(m.lists.freeServers)),
            ("pgbouncer_used_servers", "Server records in use.", Int64(m.lists.usedServers)),
            ("pgbouncer_cached_dns_names", "Host names in the DNS cache.", input.cachedDNSNames),
            ("pgbouncer_cached_dns_zones", "DNS zones in the DNS cache (always 0: pgswift tracks no zones).", 0),
            ("pgbouncer_in_flight_dns_queries", "DNS lookups in progress.", input.inFlightDNSQueries),
        ]
        for (name, help, value) in lists {
            w.family(name, .gauge, help)
            w.sample(name, [], String(value))
        }

        w.family("pgbouncer_config_max_client_connections", .gauge, "The max_client_conn setting.")
        w.sample("pgbouncer_config_max_client_connections", [], String(input.maxClientConnections))
        w.family("pgbouncer_config_max_user_connections", .gauge, "The max_user_connections setting.")
        w.sample("pgbouncer_config_max_user_connections", [], String(input.maxUserConnections))

        // SHOW DATABASES
        let dbGauges: [(String, String, (AdminDatabaseRow) -> Int64)] = [
            ("pool_size", "Server connections allowed per pool of this database.", { Int64($0.poolSize) }),
            ("reserve_pool", "Extra server connections allowed when clients wait too long.", { Int64($0.reservePoolSize) }),
            ("max_connections", "Server connections allowed for this database in all (0: no limit).", { Int64($0.maxConnections) }),
            ("current_connections", "Server connections open for this database.", { Int64($0.currentConnections) }),
            ("paused", "1 while the database is paused.", { $0.paused ? 1 : 0 }),
            ("disabled", "1 while the database is disabled.", { $0.disabled ? 1 : 0 }),
        ]
        for (suffix, help, value) in dbGauges {
            let name = "pgbouncer_databases_" + suffix
            w.family(name, .gauge, help)
            for d in input.databases {
                let labels = [("name", d.name), ("host", d.host ?? ""), ("port", String(d.port)),
                              ("database", d.database ?? ""), ("force_user", d.forceUser ?? ""),
                              ("pool_mode", d.poolMode ?? "")]
                w.sample(name, labels, String(value(d)))
            }
        }

        // SHOW STATS_TOTALS, per database
        let totals = m.databaseTotals()
        let statsCounters: [(String, String, (PoolCounters) -> String)] = [
            ("queries_pooled_total", "Queries pooled.", { String($0.queryCount) }),
            ("queries_duration_seconds_total", "Time servers spent executing queries, in seconds.",
             { AdminResults.decimalMicros($0.queryTimeMicros) }),
            ("received_bytes_total", "Bytes received from clients.", { String($0.bytesReceived) }),
            ("sent_bytes_total", "Bytes sent to clients.", { String($0.bytesSent) }),
            ("client_wait_seconds_total", "Time clients waited for a server, in seconds.",
             { AdminResults.decimalMicros($0.waitTimeMicros) }),
            ("sql_transactions_pooled_total", "Transactions pooled.", { String($0.xactCount) }),
            ("server_in_transaction_seconds_total", "Time servers spent inside transactions, in seconds.",
             { AdminResults.decimalMicros($0.xactTimeMicros) }),
            ("client_parses_total", "Prepared statements created by clients (Parse).", { String($0.clientParseCount) }),
            ("server_parses_total", "Prepared statements created on servers by the pooler.", { String($0.serverParseCount) }),
            ("binds_total", "Prepared statement executions forwarded (Bind).", { String($0.bindCount) }),
        ]
        for (suffix, help, value) in statsCounters {
            let name = "pgbouncer_stats_" + suffix
            w.family(name, .counter, help)
            for t in totals { w.sample(name, [("database", t.database)], value(t.totals)) }
        }

        // SHOW POOLS
        let poolGauges: [(String, String, (PoolStats) -> String)] = [
            ("client_active_connections", "Clients linked to a server or idle.", { String($0.clActive) }),
            ("client_active_cancel_connections", "Clients whose cancel request was forwarded.", { String($0.clActiveCancelReq) }),
            ("client_waiting_connections", "Clients waiting for a server.", { String($0.clWaiting) }),
            ("client_waiting_cancel_connections", "Clients whose cancel request waits to be forwarded.", { String($0.clWaitingCancelReq) }),
            ("client_pinned_connections", "Clients kept on their server by session state (pin_session_state).", { String($0.clPinned) }),
            ("server_listen_connections", "Listening connections of the pool (listen_mode = relay), outside pool_size.", { String($0.svListen) }),
            ("server_active_connections", "Servers linked to a client.", { String($0.svActive) }),
            ("server_active_cancel_connections", "Servers forwarding a cancel request.", { String($0.svActiveCancel) }),
            ("server_being_canceled_connections", "Servers waiting for cancel requests aimed at them to finish.", { String($0.svBeingCanceled) }),
            ("server_idle_connections", "Servers idle and ready.", { String($0.svIdle) }),
            ("server_used_connections", "Servers idle long enough to need a check before use.", { String($0.svUsed) }),
            ("server_testing_connections", "Servers running a reset or check query.", { String($0.svTested) }),
            ("server_login_connections", "Servers logging in.", { String($0.svLogin) }),
            ("client_maxwait_seconds", "How long the oldest waiting client has waited, in seconds.",
             { AdminResults.decimalMicros(UInt64(max($0.maxWaitMicros, 0))) }),
        ]
        for (suffix, help, value) in poolGauges {
            let name = "pgbouncer_pools_" + suffix
            w.family(name, .gauge, help)
            for p in m.pools { w.sample(name, [("database", p.database), ("user", p.user)], value(p)) }
        }

        // pgswift's own: latency distributions per pool
        let histograms: [(String, String, (PoolStats) -> LatencyHistogram)] = [
            ("pgswift_query_duration_seconds", "Query duration on the server, from forwarding to ReadyForQuery.", { $0.queryDuration }),
            ("pgswift_transaction_duration_seconds", "Transaction duration on the server.", { $0.xactDuration }),
            ("pgswift_client_wait_seconds", "Time a client waited for a server before one was assigned.", { $0.waitDuration }),
        ]
        // A pool's series appear once it recorded something: with many pools (most of them idle) the
        // 27 lines per histogram and pool would be most of the scrape.
        for (name, help, value) in histograms {
            w.family(name, .histogram, help)
            for p in m.pools where value(p).count > 0 {
                w.histogram(name, [("database", p.database), ("user", p.user)], value(p))
            }
        }

        // pgswift's own: worker processes
        let workerFamilies: [(String, PrometheusTextWriter.Kind, String, (AdminWorkerRow) -> String)] = [
            ("pgswift_worker_up", .gauge, "1 while a worker process runs in the slot.", { $0.pid != 0 ? "1" : "0" }),
            ("pgswift_worker_restarts_total", .counter, "Times the slot's worker was restarted.", { String($0.restarts) }),
            ("pgswift_worker_cpu_seconds_total", .counter, "CPU time (user and system) of the slot's current worker.",
             { AdminResults.decimalMicros($0.cpuMicros) }),
            ("pgswift_worker_resident_memory_bytes", .gauge, "Resident memory of the slot's current worker.", { String($0.residentBytes) }),
            ("pgswift_worker_start_time_seconds", .gauge, "Start time of the slot's current worker, seconds since the epoch.",
             { String($0.startedAt) }),
            ("pgswift_worker_clients", .gauge, "Client connections of the slot's worker.", { String($0.clients) }),
            ("pgswift_worker_servers", .gauge, "Server connections of the slot's worker.", { String($0.servers) }),
        ]
        for (name, kind, help, value) in workerFamilies {
            w.family(name, kind, help)
            for row in input.workers { w.sample(name, [("slot", String(row.slot))], value(row)) }
        }
        w.family("pgswift_server_moves_total", .counter,
                 "Idle server connections handed from one worker to another when pool quota moved (no new login).")
        w.sample("pgswift_server_moves_total", [], String(input.serverMoves))
        w.family("pgswift_server_moves_lost_total", .counter,
                 "Server connections given up for a move that could not reach the other worker (closed).")
        w.sample("pgswift_server_moves_lost_total", [], String(input.serverMovesLost))
        if let q = input.queries { renderQueries(q, top: input.queryTop, &w) }
        return w.text
    }

    /// The `le` bounds of the per-pattern histograms, in µs (their labels in seconds).
    static let queryBoundsMicros: [UInt64] = [500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000,
                                              500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000]

    /// Issue 21: the `top` patterns by total time (bounded cardinality), labelled database, user, queryid.
    static func renderQueries(_ q: MergedQueryStats, top: Int, _ w: inout PrometheusTextWriter) {
        w.family("pgswift_query_patterns_evicted_total", .counter,
                 "Query patterns the workers evicted from their tables (query_stats_max).")
        w.sample("pgswift_query_patterns_evicted_total", [], String(q.evicted))
        w.family("pgswift_query_untracked_total", .counter,
                 "Statements not counted: a message over 32 KiB, or a pattern evicted while its statement ran.")
        w.sample("pgswift_query_untracked_total", [], String(q.untracked))
        let rows = q.rows.prefix(max(0, top))
        if rows.isEmpty { return }
        func labels(_ r: QueryPatternRow) -> [(String, String)] {
            [("database", r.database), ("user", r.user), ("queryid", String(Int64(bitPattern: r.queryid)))]
        }
        w.family("pgswift_query_calls_total", .counter, "Statements of the pattern run (query_stats_metrics_top patterns by time).")
        for r in rows { w.sample("pgswift_query_calls_total", labels(r), String(r.calls)) }
        w.family("pgswift_query_exec_seconds_total", .counter, "Time of the pattern's statements, client message to end of answer.")
        for r in rows { w.sample("pgswift_query_exec_seconds_total", labels(r), AdminResults.decimalMicros(r.totalMicros)) }
        // By SQLSTATE class: a pattern's series appear at its first error of that class.
        w.family("pgswift_query_errors_total", .counter,
                 "Statements of the pattern that ended with an error, by SQLSTATE class (its first two characters).")
        for r in rows {
            for c in r.errorClasses { w.sample("pgswift_query_errors_total", labels(r) + [("class", c.sqlClass)], String(c.count)) }
        }
        w.family("pgswift_query_exec_seconds", .histogram, "Time of the pattern's statements.")
        for r in rows {
            // Each log-linear bucket counts under the first bound at or above its midpoint.
            var counts = [UInt64](repeating: 0, count: queryBoundsMicros.count + 1)
            for b in r.histogram.buckets {
                let mid = QueryLatencyBuckets.midpoint(Int(b.index))
                let i = queryBoundsMicros.firstIndex { mid <= $0 } ?? queryBoundsMicros.count
                counts[i] &+= b.count
            }
            var cumulative: UInt64 = 0
            for i in 0...queryBoundsMicros.count {
                cumulative &+= counts[i]
                let le = i < queryBoundsMicros.count ? AdminResults.decimalMicros(queryBoundsMicros[i]) : "+Inf"
                w.sample("pgswift_query_exec_seconds_bucket", labels(r) + [("le", le)], String(cumulative))
            }
            w.sample("pgswift_query_exec_seconds_sum", labels(r), AdminResults.decimalMicros(r.totalMicros))
            w.sample("pgswift_query_exec_seconds_count", labels(r), String(cumulative))
        }
    }
}
