// The supervisor's set of pools' welcome parameters (Supervisor/Workers/SharedWelcomes.swift).
import XCTest
@testable import Supervisor

final class SharedWelcomesTests: XCTestCase {
    func testAWelcomeIsNewOnceAndAgainWhenItChanges() {
        var w = SharedWelcomes()
        XCTAssertTrue(w.record(database: "app", user: "bob", parameters: ["server_version", "16.4"]))
        XCTAssertFalse(w.record(database: "app", user: "bob", parameters: ["server_version", "16.4"]), "known: not passed on again")
        XCTAssertTrue(w.record(database: "app", user: "bob", parameters: ["server_version", "17.0"]), "changed: passed on")
        XCTAssertTrue(w.record(database: "app", user: "alice", parameters: ["server_version", "16.4"]))
        XCTAssertEqual(w.byPool.count, 2)
        XCTAssertEqual(w.byPool["app\u{0}bob"]?.parameters, ["server_version", "17.0"])
    }

    func testTheSetIsBoundedOldestFirstOut() {
        var w = SharedWelcomes()
        let n = SharedWelcomes.capacity + 25
        for i in 0..<n { _ = w.record(database: "db\(i)", user: "u", parameters: ["k", "\(i)"]) }
        XCTAssertEqual(w.byPool.count, SharedWelcomes.capacity)
        XCTAssertNil(w.byPool["db0\u{0}u"], "the oldest went")
        XCTAssertNil(w.byPool["db24\u{0}u"])
        XCTAssertNotNil(w.byPool["db25\u{0}u"])
        XCTAssertNotNil(w.byPool["db\(n - 1)\u{0}u"])
    }
}
