// Tests of the Prometheus exposition (strict line checks, and prometheus_client's parser when present)
// and of the /metrics HTTP responder.
import Foundation
import XCTest
import Shared
@testable import Supervisor

final class MetricsExpositionTests: XCTestCase {
    static func input() -> MetricsInput {
        var p = PoolStats(database: "db\"1\\x\ny", user: "app", poolMode: .transaction)
        p.clActive = 3
        p.clWaiting = 1
        p.svIdle = 2
        p.maxWaitMicros = 1_250_000
        p.totals.queryCount = 42
        p.totals.queryTimeMicros = 1_500_000
        p.totals.waitTimeMicros = 16
        for v: Int64 in [10, 100, 1000, 10_000, 1 << 28] { p.queryDuration.record(micros: v) }
        p.xactDuration.record(micros: 500)
        var q = PoolStats(database: "other", user: "ro", poolMode: .session)
        q.totals.xactCount = 7
        var w0 = WorkerStatsSnapshot(slot: 0, pid: 100, startedAt: 1_700_000_000, takenAt: 0)
        w0.pools = [p, q]
        var w1 = WorkerStatsSnapshot(slot: 1, pid: 101, startedAt: 1_700_000_005, takenAt: 0)
        w1.pools = [p]
        var input = MetricsInput(merged: MergedStats.merge([w0, w1]))
        input.databases = [AdminDatabaseRow(name: "db1", host: nil, port: 5432, database: "real", forceUser: "u",
                                            poolSize: 20, minPoolSize: 0, reservePoolSize: 5, serverLifetime: 3600,
                                            poolMode: "transaction", maxConnections: 0, currentConnections: 2,
                                            maxClientConnections: 0, currentClientConnections: 3, paused: false,
                                            disabled: true)]
        input.workers = [
            AdminWorkerRow(slot: 0, pid: 100, startedAt: 1_700_000_000, clients: 4, servers: 2, state: "running",
                           restarts: 0, cpuMicros: 2_000_001, residentBytes: 10_000_000),
            AdminWorkerRow(slot: 1, pid: 0, startedAt: 0, clients: 0, servers: 0, state: "restarting",
                           restarts: 2, cpuMicros: 0, residentBytes: 0),
        ]
        input.configuredDatabases = 2
        input.configuredUsers = 1
        input.maxClientConnections = 100
        input.cachedDNSNames = 3
        input.inFlightDNSQueries = 1
        input.serverMoves = 5
        input.serverMovesLost = 1
        return input
    }

    /// A strict reading of text format 0.0.4: every line is HELP, TYPE or a sample; a family's TYPE
    /// comes once, before its samples, which are contiguous; names and labels are well formed; histogram
    /// buckets are cumulative and end with +Inf equal to _count. Returns samples by family.
    @discardableResult
    static func strictCheck(_ text: String) throws -> [String: [(name: String, labels: [String: String], value: String)]] {
        struct Fail: Error, CustomStringConvertible { var description: String }
        guard text.hasSuffix("\n") else { throw Fail(description: "no final newline") }
        let namePattern = try NSRegularExpression(pattern: "^[a-zA-Z_:][a-zA-Z0-9_:]*$")
        func validName(_ s: String) -> Bool {
            namePattern.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
        }
        var types: [String: String] = [:]
        var helps: Set<String> = []
        var finished: Set<String> = []
        var current: String? = nil
        var samples: [String: [(name: String, labels: [String: String], value: String)]] = [:]
        func family(of sample: String) -> String? {
            if types[sample] != nil { return sample }
            for suffix in ["_bucket", "_sum", "_count"] where sample.hasSuffix(suffix) {
                let base = String(sample.dropLast(suffix.count))
                if types[base] == "histogram" { return base }
            }
            return nil
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            let l = String(line)
            if l.hasPrefix("# HELP ") {
                let parts = l.dropFirst(7).split(separator: " ", maxSplits: 1)
                guard parts.count == 2, validName(String(parts[0])) else { throw Fail(description: "bad HELP: \(l)") }
                guard helps.insert(String(parts[0])).inserted else { throw Fail(description: "second HELP: \(l)") }
                continue
            }
            if l.hasPrefix("# TYPE ") {
                let parts = l.dropFirst(7).split(separator: " ")
                guard parts.count == 2, validName(String(parts[0])),
                      ["counter", "gauge", "histogram", "summary", "untyped"].contains(String(parts[1])) else {
                    throw Fail(description: "bad TYPE: \(l)")
                }
                let name = String(parts[0])
                guard types[name] == nil else { throw Fail(description: "second TYPE: \(l)") }
                if let c = current { finished.insert(c) }
                types[name] = String(parts[1])
                current = name
                continue
            }
            guard !l.hasPrefix("#"), !l.isEmpty else { throw Fail(description: "unexpected line: \(l)") }
            // name{labels} value
            var i = l.startIndex
            while i < l.endIndex, l[i] != "{", l[i] != " " { i = l.index(after: i) }
            let name = String(l[..<i])
            guard validName(name), let fam = family(of: name) else { throw Fail(description: "sample of no family: \(l)") }
            guard fam == current, !finished.contains(fam) else { throw Fail(description: "samples not contiguous: \(l)") }
            var labels: [String: String] = [:]
            if i < l.endIndex, l[i] == "{" {
                i = l.index(after: i)
                while l[i] != "}" {
                    let eq = l[i...].firstIndex(of: "=")!
                    let key = String(l[i..<eq])
                    guard validName(key), !key.hasPrefix("__") else { throw Fail(description: "bad label name: \(l)") }
                    var j = l.index(after: eq)
                    guard l[j] == "\"" else { throw Fail(description: "unquoted label: \(l)") }
                    j = l.index(after: j)
                    var value = ""
                    while l[j] != "\"" {
                        if l[j] == "\\" {
                            j = l.index(after: j)
                            switch l[j] {
                            case "\\": value += "\\"
                            case "\"": value += "\""
                            case "n": value += "\n"
                            default: throw Fail(description: "bad escape: \(l)")
                            }
                        } else {
                            value.append(l[j])
                        }
                        j = l.index(after: j)
                    }
                    guard labels.updateValue(value, forKey: key) == nil else { throw Fail(description: "label twice: \(l)") }
                    i = l.index(after: j)
                    if l[i] == "," { i = l.index(after: i) }
                }
                i = l.index(after: i)
            }
            guard i < l.endIndex, l[i] == " " else { throw Fail(description: "no value: \(l)") }
            let value = String(l[l.index(after: i)...])
            guard Double(value) != nil || ["+Inf", "-Inf", "NaN"].contains(value), !value.contains(" ") else {
                throw Fail(description: "bad value: \(l)")
            }
            if types[fam] == "counter", let v = Double(value), v < 0 { throw Fail(description: "negative counter: \(l)") }
            samples[fam, default: []].append((name, labels, value))
        }
        for (fam, kind) in types where kind == "histogram" {
            var series: [String: (last: Double, inf: Double?, count: Double?)] = [:]
            for s in samples[fam] ?? [] {
                var key = s.labels
                let le = key.removeValue(forKey: "le")
                let k = key.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
                var e = series[k] ?? (0, nil, nil)
                if s.name.hasSuffix("_bucket") {
                    guard let le, let v = Double(s.value), v >= e.last else { throw Fail(description: "buckets not cumulative in \(fam)") }
                    e.last = v
                    if le == "+Inf" { e.inf = v }
                } else if s.name.hasSuffix("_count") {
                    e.count = Double(s.value)
                }
                series[k] = e
            }
            for (k, e) in series where e.inf == nil || e.inf != e.count {
                throw Fail(description: "histogram \(fam){\(k)}: +Inf bucket \(String(describing: e.inf)) != count \(String(describing: e.count))")
            }
        }
        return samples
    }

    func testStrictFormatAndNames() throws {
        let text = MetricsExposition.render(Self.input())
        let samples = try Self.strictCheck(text)
        // pgbouncer_exporter's names
        for name in ["pgbouncer_up", "pgbouncer_version_info", "pgbouncer_databases", "pgbouncer_users", "pgbouncer_pools",
                     "pgbouncer_free_clients", "pgbouncer_used_clients", "pgbouncer_login_clients",
                     "pgbouncer_free_servers", "pgbouncer_used_servers", "pgbouncer_cached_dns_names",
                     "pgbouncer_cached_dns_zones", "pgbouncer_in_flight_dns_queries",
                     "pgbouncer_config_max_client_connections", "pgbouncer_config_max_user_connections",
                     "pgbouncer_databases_pool_size", "pgbouncer_databases_reserve_pool",
                     "pgbouncer_databases_max_connections", "pgbouncer_databases_current_connections",
                     "pgbouncer_databases_paused", "pgbouncer_databases_disabled",
                     "pgbouncer_stats_queries_pooled_total", "pgbouncer_stats_queries_duration_seconds_total",
                     "pgbouncer_stats_received_bytes_total", "pgbouncer_stats_sent_bytes_total",
                     "pgbouncer_stats_client_wait_seconds_total", "pgbouncer_stats_sql_transactions_pooled_total",
                     "pgbouncer_stats_server_in_transaction_seconds_total", "pgbouncer_stats_client_parses_total",
                     "pgbouncer_stats_server_parses_total", "pgbouncer_stats_binds_total",
                     "pgbouncer_pools_client_active_connections", "pgbouncer_pools_client_active_cancel_connections",
                     "pgbouncer_pools_client_waiting_connections", "pgbouncer_pools_client_waiting_cancel_connections",
                     "pgbouncer_pools_server_active_connections", "pgbouncer_pools_server_active_cancel_connections",
                     "pgbouncer_pools_server_being_canceled_connections", "pgbouncer_pools_server_idle_connections",
                     "pgbouncer_pools_server_used_connections", "pgbouncer_pools_server_testing_connections",
                     "pgbouncer_pools_server_login_connections", "pgbouncer_pools_client_maxwait_seconds",
                     "pgswift_query_duration_seconds", "pgswift_transaction_duration_seconds",
                     "pgswift_client_wait_seconds", "pgswift_worker_up", "pgswift_worker_restarts_total",
                     "pgswift_worker_cpu_seconds_total", "pgswift_worker_resident_memory_bytes"] {
            XCTAssertTrue(text.contains("# TYPE \(name) "), name)
        }
        let active = try XCTUnwrap(samples["pgbouncer_pools_client_active_connections"])
        XCTAssertEqual(active.count, 2)
        XCTAssertEqual(active[0].labels, ["database": "db\"1\\x\ny", "user": "app"])  // escaped and read back
        XCTAssertEqual(active[0].value, "6")                                             // merged over two workers
        XCTAssertTrue(text.contains("pgbouncer_pools_client_maxwait_seconds{database=\"db\\\"1\\\\x\\ny\",user=\"app\"} 1.25\n"))
        XCTAssertTrue(text.contains("pgbouncer_stats_queries_duration_seconds_total{database=\"db\\\"1\\\\x\\ny\"} 3\n"))
        XCTAssertTrue(text.contains("pgswift_query_duration_seconds_bucket{database=\"db\\\"1\\\\x\\ny\",user=\"app\",le=\"0.000016\"} 2\n"))
        XCTAssertTrue(text.contains("pgswift_query_duration_seconds_bucket{database=\"db\\\"1\\\\x\\ny\",user=\"app\",le=\"+Inf\"} 10\n"))
        XCTAssertTrue(text.contains("pgswift_worker_up{slot=\"1\"} 0\n"))
        XCTAssertTrue(text.contains("\npgbouncer_cached_dns_names 3\n"))
        XCTAssertTrue(text.contains("\npgbouncer_in_flight_dns_queries 1\n"))
        XCTAssertTrue(text.contains("\npgbouncer_cached_dns_zones 0\n"))
        XCTAssertTrue(text.contains("\npgswift_server_moves_total 5\n"))
        XCTAssertTrue(text.contains("\npgswift_server_moves_lost_total 1\n"))
        XCTAssertTrue(text.contains("pgswift_worker_cpu_seconds_total{slot=\"0\"} 2.000001\n"))
        XCTAssertTrue(text.contains("pgbouncer_databases_disabled{name=\"db1\",host=\"\",port=\"5432\",database=\"real\",force_user=\"u\",pool_mode=\"transaction\"} 1\n"))
        // Only the pool that recorded queries has a series: an empty histogram is not written (with
        // thousands of idle pools it would be most of the scrape).
        XCTAssertEqual(samples["pgswift_query_duration_seconds"]?.count, LatencyHistogram.bucketCount + 2)
        XCTAssertFalse(text.contains("pgswift_query_duration_seconds_count{database=\"other\""))
    }

    /// Issue 21: the top query_stats_metrics_top patterns by total time get series; the others none.
    func testQueryPatternSeriesForTheTopPatternsOnly() throws {
        var t = QueryStatsTable(capacity: 10)
        let o = t.owner(database: "db", user: "app")
        for (id, micros) in [(UInt64(1), UInt64(300)), (2, 2_000_000), (3, 40)] {
            let r = t.findOrInsert(queryid: id, owner: o) { ("p\(id)", []) }
            t.record(r, micros: micros, rows: 1, error: id == 2, waitMicros: 0, errorClass: 0x3232)  // "22"
            t.record(r, micros: micros, rows: 1, error: false, waitMicros: 0)
        }
        var input = Self.input()
        input.queries = MergedQueryStats.merge([t.snapshot()])
        input.queryTop = 2
        let text = MetricsExposition.render(input)
        let samples = try Self.strictCheck(text)
        XCTAssertEqual(samples["pgswift_query_calls_total"]?.map { $0.labels["queryid"] ?? "" }, ["2", "1"])
        XCTAssertTrue(text.contains("pgswift_query_calls_total{database=\"db\",user=\"app\",queryid=\"2\"} 2\n"))
        XCTAssertTrue(text.contains("pgswift_query_errors_total{database=\"db\",user=\"app\",queryid=\"2\",class=\"22\"} 1\n"))
        XCTAssertFalse(text.contains("pgswift_query_errors_total{database=\"db\",user=\"app\",queryid=\"1\""), "no errors, no series")
        XCTAssertTrue(text.contains("pgswift_query_exec_seconds_total{database=\"db\",user=\"app\",queryid=\"2\"} 4\n"))
        XCTAssertTrue(text.contains("pgswift_query_exec_seconds_bucket{database=\"db\",user=\"app\",queryid=\"1\",le=\"0.0005\"} 2\n"))
        XCTAssertTrue(text.contains("pgswift_query_exec_seconds_bucket{database=\"db\",user=\"app\",queryid=\"2\",le=\"1\"} 0\n"))
        XCTAssertTrue(text.contains("pgswift_query_exec_seconds_bucket{database=\"db\",user=\"app\",queryid=\"2\",le=\"2.5\"} 2\n"))
        XCTAssertTrue(text.contains("\npgswift_query_patterns_evicted_total 0\n"))
        XCTAssertTrue(text.contains("\npgswift_query_untracked_total 0\n"))
        XCTAssertFalse(text.contains("queryid=\"3\""), "beyond the top 2")
        input.queryTop = 0
        XCTAssertFalse(MetricsExposition.render(input).contains("pgswift_query_calls_total"))
        XCTAssertFalse(MetricsExposition.render(MetricsInput(merged: MergedStats())).contains("pgswift_query_patterns"))
    }

    func testEmptyStatsStillValid() throws {
        let text = MetricsExposition.render(MetricsInput(merged: MergedStats()))
        try Self.strictCheck(text)
        XCTAssertTrue(text.contains("pgbouncer_up 1\n"))
    }

    func testEscaping() {
        XCTAssertEqual(PrometheusTextWriter.escapeLabel("plain"), "plain")
        XCTAssertEqual(PrometheusTextWriter.escapeLabel("a\"b\\c\nd"), "a\\\"b\\\\c\\nd")
        XCTAssertEqual(PrometheusTextWriter.escapeHelp("a\"b\\c\nd"), "a\"b\\\\c\\nd")
    }

    /// prometheus_client's own parser, when python3 has it (pip install prometheus_client).
    func testPrometheusClientParses() throws {
        func run(_ args: [String], stdin: String? = nil) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = args
            let out = Pipe(), inPipe = Pipe()
            p.standardOutput = out
            p.standardError = out
            p.standardInput = inPipe
            try p.run()
            if let stdin { inPipe.fileHandleForWriting.write(Data(stdin.utf8)) }
            try inPipe.fileHandleForWriting.close()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        // The drivers' venv (scripts/install-deps.sh drivers puts prometheus_client there), else python3.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        var pythons = ["python3"]
        pythons.insert(root.appendingPathComponent(".build/pyenv/bin/python").path, at: 0)
        if let p = ProcessInfo.processInfo.environment["PGSWIFT_PYTHON"], !p.isEmpty { pythons.insert(p, at: 0) }
        guard let python = pythons.first(where: { (try? run([$0, "-c", "import prometheus_client"]))?.0 == 0 }) else {
            throw XCTSkip("no python with prometheus_client among \(pythons) (scripts/install-deps.sh drivers installs it)")
        }
        let script = """
            import sys
            from prometheus_client.parser import text_string_to_metric_families
            fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
            h = fams['pgswift_query_duration_seconds']
            assert h.type == 'histogram', h.type
            assert fams['pgbouncer_stats_queries_pooled'].type == 'counter'
            s = [x for x in fams['pgbouncer_pools_client_active_connections'].samples if x.labels['user'] == 'app'][0]
            assert s.labels['database'] == 'db"1\\\\x\\ny', repr(s.labels)
            assert s.value == 6.0
            print(len(fams))
            """
        let (status, output) = try run([python, "-c", script], stdin: MetricsExposition.render(Self.input()))
        XCTAssertEqual(status, 0, output)
        XCTAssertGreaterThan(Int(output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, 50, output)
    }
}

final class MetricsHTTPTests: XCTestCase {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testParse() {
        XCTAssertEqual(MetricsHTTP.parse(bytes("GET /metrics HTTP/1.1\r\nHost: x\r\n")), .incomplete)
        XCTAssertEqual(MetricsHTTP.parse(bytes("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")),
                       .request(HTTPRequest(method: "GET", path: "/metrics", version: "HTTP/1.1")))
        XCTAssertEqual(MetricsHTTP.parse(bytes("\r\nHEAD /health?x=1 HTTP/1.0\n\n")),
                       .request(HTTPRequest(method: "HEAD", path: "/health", version: "HTTP/1.0")))
        XCTAssertEqual(MetricsHTTP.parse(bytes("GET http://h:9127/metrics HTTP/1.1\r\n\r\n")),
                       .request(HTTPRequest(method: "GET", path: "/metrics", version: "HTTP/1.1")))
        XCTAssertEqual(MetricsHTTP.parse(bytes("GET /metrics\r\n\r\n")), .invalid(status: 400, reason: "Bad Request"))
        XCTAssertEqual(MetricsHTTP.parse(bytes("GET  /metrics HTTP/1.1\r\n\r\n")), .invalid(status: 400, reason: "Bad Request"))
        XCTAssertEqual(MetricsHTTP.parse(bytes("GET /metrics HTTP/2.0\r\n\r\n")),
                       .invalid(status: 505, reason: "HTTP Version Not Supported"))
        XCTAssertEqual(MetricsHTTP.parse(bytes("GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n")),
                       .invalid(status: 400, reason: "Bad Request"))
        XCTAssertEqual(MetricsHTTP.parse(bytes("GET /metrics HTTP/1.1\r\nBad Name: v\r\n\r\n")),
                       .invalid(status: 400, reason: "Bad Request"))
        let huge = bytes("GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 9000))
        XCTAssertEqual(MetricsHTTP.parse(huge), .invalid(status: 431, reason: "Request Header Fields Too Large"))
    }

    func testRoutes() {
        func answer(_ method: String, _ path: String, healthy: Bool = true) -> String {
            let health = ServiceHealth(stopping: !healthy, upgrading: false, readyWorkers: 2, workerSlots: 2,
                                       backends: 1, backendsUp: 1)
            switch MetricsHTTP.route(HTTPRequest(method: method, path: path, version: "HTTP/1.1"), health: health) {
            case .answer(let bytes): return String(decoding: bytes, as: UTF8.self)
            case .metrics(let head): return head ? "metrics head" : "metrics"
            }
        }
        XCTAssertEqual(answer("GET", "/metrics"), "metrics")
        XCTAssertEqual(answer("HEAD", "/metrics"), "metrics head")
        XCTAssertEqual(String(decoding: MetricsHTTP.metricsResponse(body: Array("m 1\n".utf8), headOnly: false), as: UTF8.self),
                       "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\nm 1\n")
        XCTAssertEqual(String(decoding: MetricsHTTP.metricsResponse(body: Array("m 1\n".utf8), headOnly: true), as: UTF8.self),
                       "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
        XCTAssertTrue(answer("GET", "/health").hasSuffix("\r\n\r\nok\n"))
        XCTAssertTrue(answer("GET", "/health", healthy: false).hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        XCTAssertTrue(answer("GET", "/health", healthy: false).hasSuffix("\r\n\r\nunavailable: shutting down\n"))
        XCTAssertTrue(answer("HEAD", "/health", healthy: false).hasSuffix("Connection: close\r\n\r\n"))
        XCTAssertTrue(answer("GET", "/").hasPrefix("HTTP/1.1 404 Not Found\r\n"))
        let post = answer("POST", "/metrics")
        XCTAssertTrue(post.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        XCTAssertTrue(post.contains("\r\nAllow: GET, HEAD\r\n"))
    }

    func testConnectionLifecycle() {
        var c = MetricsConnection()
        let healthy = ServiceHealth(stopping: false, upgrading: false, readyWorkers: 1, workerSlots: 1, backends: 1, backendsUp: 1)
        let respond: (HTTPRequest) -> MetricsRoute = { MetricsHTTP.route($0, health: healthy) }
        XCTAssertEqual(c.received(bytes("GET /met"), respond: respond), .readMore)
        // /metrics waits for the round's figures; more input meanwhile is ignored.
        XCTAssertEqual(c.received(bytes("rics HTTP/1.1\r\n\r\n"), respond: respond), .awaitMetrics)
        XCTAssertTrue(c.pendingOutput.isEmpty)
        XCTAssertEqual(c.received(bytes("more"), respond: respond), .awaitMetrics)
        XCTAssertEqual(c.answerMetrics(body: bytes("x 1\n")), .write)
        let total = c.pendingOutput.count
        XCTAssertTrue(String(decoding: c.pendingOutput, as: UTF8.self).hasPrefix("HTTP/1.1 200 OK"))
        XCTAssertTrue(String(decoding: c.pendingOutput, as: UTF8.self).hasSuffix("\r\n\r\nx 1\n"))
        XCTAssertEqual(c.wrote(10), .write)
        XCTAssertEqual(c.pendingOutput.count, total - 10)
        XCTAssertEqual(c.received(bytes("more"), respond: respond), .write)  // extra input is ignored
        XCTAssertEqual(c.wrote(total - 10), .close)

        // A client that hangs up while its figures are collected is closed, not read again and again.
        var leaving = MetricsConnection()
        XCTAssertEqual(leaving.received(bytes("HEAD /metrics HTTP/1.1\r\n\r\n"), respond: respond), .awaitMetrics)
        XCTAssertEqual(leaving.received([], respond: respond), .close)
        var head = MetricsConnection()
        _ = head.received(bytes("HEAD /metrics HTTP/1.1\r\n\r\n"), respond: respond)
        XCTAssertEqual(head.answerMetrics(body: bytes("x 1\n")), .write)
        XCTAssertTrue(String(decoding: head.pendingOutput, as: UTF8.self).hasSuffix("Content-Length: 4\r\nConnection: close\r\n\r\n"))

        var health = MetricsConnection()
        XCTAssertEqual(health.received(bytes("GET /health HTTP/1.1\r\n\r\n"), respond: respond), .write)

        var eof = MetricsConnection()
        XCTAssertEqual(eof.received([], respond: respond), .close)

        var flood = MetricsConnection()
        var action = MetricsConnection.Action.readMore
        for _ in 0..<20 where action == .readMore {
            action = flood.received([UInt8](repeating: 0x61, count: 1000), respond: respond)
        }
        XCTAssertEqual(action, .write)
        XCTAssertTrue(String(decoding: flood.pendingOutput, as: UTF8.self).hasPrefix("HTTP/1.1 431 "))
        XCTAssertLessThanOrEqual(flood.input.count, MetricsHTTP.maximumRequestSize + 1)
    }
}
