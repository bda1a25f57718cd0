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
