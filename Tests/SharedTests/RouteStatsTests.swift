// Read/write routing counters in worker snapshots (RouteStats.swift): round trip and merge.
import XCTest
import Shared

final class RouteStatsTests: XCTestCase {
    func testSnapshotRoundTripAndMerge() throws {
        var snap = WorkerStatsSnapshot(slot: 1, pid: 2, startedAt: 3, takenAt: 4)
        var p = PoolStats(database: "app", user: "u", poolMode: .transaction)
        p.routes = [RouteStat(host: "h1:5432", reads: 3, writes: 7, fallbacks: 2, retries: 1), RouteStat(host: "h2:5433", reads: 9)]
        snap.pools = [p, PoolStats(database: "plain", user: "u", poolMode: .session)]
        let back = try WorkerStatsSnapshot.decode(snap.encode())
        XCTAssertEqual(back, snap)
        var other = WorkerStatsSnapshot(slot: 2, pid: 3, startedAt: 3, takenAt: 4)
        var q = PoolStats(database: "app", user: "u", poolMode: .transaction)
        q.routes = [RouteStat(host: "h2:5433", reads: 1, writes: 0), RouteStat(host: "h3:5434", reads: 4)]
        other.pools = [q]
        let m = MergedStats.merge([snap, other])
        let app = try XCTUnwrap(m.pools.first { $0.database == "app" })
        XCTAssertEqual(app.routes, [RouteStat(host: "h1:5432", reads: 3, writes: 7, fallbacks: 2, retries: 1),
                                    RouteStat(host: "h2:5433", reads: 10), RouteStat(host: "h3:5434", reads: 4)])
    }
}
