// SHOW ROUTING rows and the pgswift_routing_* series (RoutingReport.swift) from config, health and
// merged worker counters.
import XCTest
import Shared
@testable import Supervisor

final class RoutingReportTests: XCTestCase {
    func testRowsAndMetrics() throws {
        let c = try Config.parse(text: """
            [databases]
            app = host=10.0.0.1,10.0.0.2 port=5432,5433 routing=read-write-split
            plain = host=10.0.0.1
            """, file: "t.ini")
        var p1 = PoolStats(database: "app", user: "a", poolMode: .transaction)
        p1.routes = [RouteStat(host: "10.0.0.1:5432", writes: 5, fallbacks: 1), RouteStat(host: "10.0.0.2:5433", reads: 7)]
        var p2 = PoolStats(database: "app", user: "b", poolMode: .transaction)
        p2.routes = [RouteStat(host: "10.0.0.2:5433", reads: 3)]
        var m = MergedStats()
        m.pools = [p1, p2, PoolStats(database: "plain", user: "a", poolMode: .transaction)]
        var standby = HealthTarget(key: "10.0.0.2:5433", host: "10.0.0.2", port: 5433, kind: .numeric, database: "app",
                                   user: "u", secret: nil, needRole: true, health: HostHealth(backoff: Backoff(initialNanos: 1, maxNanos: 2)))
        _ = standby.health.succeeded(now: 1, role: HostRole(inRecovery: true, readOnly: true), periodNanos: 1)
        standby.replayLagMillis = 12
        let rows = Supervisor.routingRows(c.databases, [standby], m)
        XCTAssertEqual(rows, [
            ["app", "10.0.0.1", "5432", "", nil, "0", "5", "1", "0"],
            ["app", "10.0.0.2", "5433", "standby", "12", "10", "0", "0", "0"],
        ])
        standby.maxLagMillis = 10
        XCTAssertEqual(Supervisor.roleText(standby), "standby (lagging)")
        let text = Supervisor.routingMetrics(c.databases, m)
        XCTAssertTrue(text.contains("pgswift_routing_reads_total{database=\"app\",host=\"10.0.0.2\",port=\"5433\"} 10"), text)
        XCTAssertTrue(text.contains("pgswift_routing_fallbacks_total{database=\"app\",host=\"10.0.0.1\",port=\"5432\"} 1"), text)
        XCTAssertFalse(text.contains("plain"))
        XCTAssertEqual(Supervisor.routingMetrics([], m), "")
    }
}
