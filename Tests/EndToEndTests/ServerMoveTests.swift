// End to end: server connections move between workers (Worker/Control/ServerMove.swift) when the
// supervisor moves pool quota, so a skewed load never makes PostgreSQL start a new backend.
import Foundation
import XCTest

final class ServerMoveTests: XCTestCase {
    /// 2 workers / pool_size 2 with 60 clients, then 4 workers / pool_size 4 with 120: after warm-up,
    /// a 60 s load that moves from one worker's clients to another's (each in turn wants the whole pool,
    /// the others are idle) runs on the same pool_size backends throughout. Every query reports its
    /// backend's pid: none is new, and PostgreSQL ends with the very backends it had after warm-up.
    /// Before server moves, each quota move closed a connection on one worker and opened one on another.
    func testSkewedLoadKeepsTheSameBackends() throws {
        let seconds = Double(ProcessInfo.processInfo.environment["PGSWIFT_MOVE_SECONDS"] ?? "") ?? 60
        for (workers, poolSize, clients) in [(2, 2, 60), (4, 4, 120)] {
            try skewedLoad(workers: workers, poolSize: poolSize, clients: clients, seconds: seconds)
        }
    }

    private func skewedLoad(workers: Int, poolSize: Int, clients: Int, seconds: Double) throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        var settings = try TxFixtures.settings(pg, workers: workers, poolSize: poolSize)
        let metricsPort = try freePort()
        settings.pgswiftSettings = [("metrics_listen", "127.0.0.1:\(metricsPort)")]
        let px = try Pgswift.start(settings)
        defer { px.stop() }
        let context = "\(workers) workers, pool_size \(poolSize)"
        var bySlot: [Int32: [WireClient]] = [:]
        for _ in 0..<clients {
            let c = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
            bySlot[c.backendProcessID >> 20, default: []].append(c)
        }
        defer { for list in bySlot.values { for c in list { c.close() } } }
        XCTAssertEqual(bySlot.count, workers, "\(context): SO_REUSEPORT gave every worker clients: \(bySlot.mapValues(\.count))")

        /// Every client of `group` runs one query at once; returns the backend pids they ran on.
        func burst(_ group: [WireClient]) throws -> [Int] {
            let sql = "select pg_backend_pid(), pg_sleep(0.01)"
            for c in group { try c.socket.send(WireEncode.query(sql)) }
            return try group.map { c in Int(try c.readResult(sql).first?.first.flatMap { $0 } ?? "") ?? -1 }
        }

        // Warm-up: everyone at once until PostgreSQL holds the whole pool.
        let all = bySlot.values.flatMap { $0 }
        XCTAssertTrue(waitUntil(timeout: 60, poll: 0.05) {
            _ = try? burst(all)
            return ((try? TxFixtures.backends(pg).count) ?? 0) == poolSize
        }, "\(context): the pool never reached its size: \((try? TxFixtures.backends(pg)) ?? [])")
        let warm = Set(try TxFixtures.backends(pg).map(\.pid))
        XCTAssertEqual(warm.count, poolSize, context)

        // The load moves from worker to worker: each slot's clients in turn, for ~3 s each (longer
        // than the supervisor's calm window, so quota moves every turn).
        var seen = Set<Int>()
        var bursts = 0
        let order = bySlot.keys.sorted()
        let end = monotonicNow() + seconds
        var turn = 0
        while monotonicNow() < end {
            let group = bySlot[order[turn % order.count]]!
            let turnEnd = monotonicNow() + 3
            while monotonicNow() < turnEnd {
                seen.formUnion(try burst(group))
                bursts += 1
            }
            turn += 1
        }
        let after = Set(try TxFixtures.backends(pg).map(\.pid))
        let log = px.log()
        let metrics = try httpGet(port: metricsPort, path: "/metrics")
        let moves = metrics.split(separator: "\n").first { $0.hasPrefix("pgswift_server_moves_total ") }
            .flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
        let lost = metrics.split(separator: "\n").first { $0.hasPrefix("pgswift_server_moves_lost_total ") }
            .flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
        print("server moves: \(context), \(clients) clients, \(turn) turns, \(bursts) bursts, \(moves) moves; backends used \(seen.sorted()), warm \(warm.sorted())")
        XCTAssertTrue(seen.isSubset(of: warm), "\(context): queries ran on new backends \(seen.subtracting(warm).sorted())\npgswift log (tail):\n\(log.suffix(3000))")
        XCTAssertEqual(after, warm, "\(context): PostgreSQL's backends changed during the load\npgswift log (tail):\n\(log.suffix(3000))")
        XCTAssertGreaterThan(turn, order.count, "\(context): the load visited every worker more than once")
        XCTAssertGreaterThanOrEqual(moves, turn - 1, "\(context): servers moved with the load (pgswift_server_moves_total)")
        XCTAssertEqual(lost, 0, "\(context): no server lost in a move")
        XCTAssertTrue(px.isRunning, "pgswift died; log:\n\(log.suffix(4000))")
    }
}
