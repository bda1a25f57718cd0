// End to end (issue 21): the Grafana dashboard and the Prometheus alert rules in Packaging/ parse,
// and every metric they name is in a live /metrics scrape of a running pgswift with traffic.
import Foundation
import XCTest

final class DashboardTests: XCTestCase {
    static var packaging: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Packaging")
    }

    /// Metric names in a PromQL expression: pgswift's own names all start with pgswift_ or pgbouncer_.
    static func metricNames(_ expr: String) -> Set<String> {
        let re = try! NSRegularExpression(pattern: "\\b(pgswift|pgbouncer)_[a-zA-Z0-9_]+")
        let ns = expr as NSString
        return Set(re.matches(in: expr, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range) })
    }

    /// Every `expr` of the dashboard's panels (JSON parsed by JSONSerialization).
    static func dashboardExpressions() throws -> [String] {
        let data = try Data(contentsOf: packaging.appendingPathComponent("grafana/pgswift-dashboard.json"))
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(root["uid"] as? String, "pgswift-overview")
        var exprs: [String] = []
        func walk(_ panels: [[String: Any]]) {
            for p in panels {
                for t in (p["targets"] as? [[String: Any]]) ?? [] { if let e = t["expr"] as? String { exprs.append(e) } }
                walk((p["panels"] as? [[String: Any]]) ?? [])
            }
        }
        walk(try XCTUnwrap(root["panels"] as? [[String: Any]]))
        return exprs
    }

    /// The alert rules, read with Debian's python3 and python3-yaml (scripts/install-deps.sh test) into JSON.
    static func alertRules() throws -> [[String: Any]] {
        let python = "/usr/bin/python3"
        let path = packaging.appendingPathComponent("prometheus/pgswift-alerts.yml").path
        let r = try runCommand([python, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)", path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let groups = try XCTUnwrap(root["groups"] as? [[String: Any]])
        return groups.flatMap { ($0["rules"] as? [[String: Any]]) ?? [] }
    }

    func testDashboardAndAlertRulesNameOnlyMetricsPgswiftExports() throws {
        let exprs = try Self.dashboardExpressions()
        XCTAssertGreaterThanOrEqual(exprs.count, 15)
        let rules = try Self.alertRules()
        let alerts = rules.compactMap { $0["alert"] as? String }
        for wanted in ["PgswiftPoolSaturated", "PgswiftClientWaitHigh", "PgswiftQueryErrorRateHigh", "PgswiftBackendDown"] {
            XCTAssertTrue(alerts.contains(wanted), "\(wanted) missing: \(alerts)")
        }
        for r in rules {
            XCTAssertNotNil(r["expr"] as? String, "\(r)")
            XCTAssertNotNil((r["labels"] as? [String: Any])?["severity"], "\(r)")
            XCTAssertNotNil((r["annotations"] as? [String: Any])?["summary"], "\(r)")
        }
        let named = (exprs + rules.compactMap { $0["expr"] as? String }).reduce(into: Set<String>()) { $0.formUnion(Self.metricNames($1)) }

        // A live scrape with every kind of series present: traffic in a pool, a pattern that fails,
        // the health check of the backend, both workers.
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        let metricsPort = try freePort()
        s.pgswiftSettings = [("metrics_listen", "127.0.0.1:\(metricsPort)")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { c.close() }
        for i in 0..<20 { _ = try c.query("select \(i)") }
        XCTAssertThrowsError(try c.query("select 1 / 0"))
        var scrape = ""
        var missing: [String] = []
        let complete = waitUntil(timeout: 20, poll: 0.5) {
            scrape = (try? httpGet(port: metricsPort, path: "/metrics", timeout: 10)) ?? ""
            let present = Set(scrape.split(separator: "\n").compactMap { line -> String? in
                guard !line.hasPrefix("#") else { return nil }
                return String(line.prefix { $0 != "{" && $0 != " " })
            })
            missing = named.subtracting(present).sorted()
            return missing.isEmpty
        }
        XCTAssertTrue(complete, "named by the dashboard or the alert rules but not in the scrape: \(missing)")
        XCTAssertTrue(named.contains("pgswift_query_errors_total") && named.contains("pgswift_backend_up"))
        print("dashboard: \(exprs.count) queries, alert rules: \(alerts.count), metric names: \(named.count), all in a live scrape")
    }
}
