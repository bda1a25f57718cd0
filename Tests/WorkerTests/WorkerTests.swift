// Worker.swift: the tracked startup parameters.
import XCTest
@testable import Worker
import Shared

final class TrackedParamsTests: XCTestCase {
    func testCaseInsensitiveLookupAndExtras() {
        let t = TrackedParams(extra: ["IntervalStyle", "datestyle"])
        XCTAssertEqual(t.index(of: "datestyle"), t.index(of: "DateStyle"))
        XCTAssertNotNil(t.index(of: "intervalstyle"))
        XCTAssertNotNil(t.index(of: "Search_Path"), "search_path follows clients too, as in PgBouncer 1.26")
        XCTAssertNil(t.index(of: "work_mem"))
        XCTAssertEqual(t.names.filter { $0.lowercased() == "datestyle" }.count, 1, "no duplicates")
    }

    func testSQLLiteralDoublesQuotes() {
        XCTAssertEqual(sqlLiteral("it's"), "'it''s'")
        XCTAssertEqual(sqlLiteral(""), "''")
    }
}

/// When a worker gives up its place at the head of a shared listener's queue (`Worker.takesTurn`).
final class SharedListenerTurnTests: XCTestCase {
    /// One client at a time on a quiet service (each gone before the next): the worker keeps its
    /// place, so the next client lands where the idle server is, as with one PgBouncer process
    /// (PgBouncer's test_ssl.py test_server_ssl_set_disable reuses a server opened by the previous
    /// client). Before, with the share rounded down, a lone client already made its worker step back.
    func testALoneClientKeepsTheWorkersPlace() {
        XCTAssertFalse(Worker.takesTurn(held: 1, total: 1, workers: 2))
        XCTAssertFalse(Worker.takesTurn(held: 1, total: 1, workers: 4))
        XCTAssertFalse(Worker.takesTurn(held: 5, total: 5, workers: 1), "one worker: nobody to give way to")
    }

    /// Clients that stay spread: a worker above its share rounded up steps back, so sessions opened
    /// one after another end up with no worker more than two above another.
    func testStayingClientsAreSpread() {
        XCTAssertTrue(Worker.takesTurn(held: 2, total: 2, workers: 2))
        XCTAssertFalse(Worker.takesTurn(held: 2, total: 3, workers: 2))
        XCTAssertTrue(Worker.takesTurn(held: 3, total: 4, workers: 2))
        XCTAssertTrue(Worker.takesTurn(held: 2, total: 4, workers: 4))
        // A simulated queue: 20 sessions that stay, accepted by whoever is at the head.
        for workers in 2...4 {
            var held = Array(repeating: 0, count: workers)
            var queue = Array(0..<workers)
            for total in 1...20 {
                let w = queue[0]
                held[w] += 1
                if Worker.takesTurn(held: held[w], total: total, workers: workers) { queue.append(queue.removeFirst()) }
            }
            XCTAssertLessThanOrEqual(held.max()! - held.min()!, 2, "\(workers) workers: \(held)")
        }
    }
}
