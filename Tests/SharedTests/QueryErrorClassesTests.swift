// Errors by SQLSTATE class (Stats/QueryErrorClasses.swift): the class read from an ErrorResponse, the
// fixed slots and "other", the merge over workers, the snapshot codec carrying them.
import XCTest
@testable import Shared

final class QueryErrorClassesTests: XCTestCase {
    private func body(_ fields: [(Character, String)]) -> [UInt8] {
        fields.flatMap { [UInt8($0.0.asciiValue!)] + Array($0.1.utf8) + [0] } + [0]
    }

    private func code(_ b: [UInt8]) -> UInt16 { b.withUnsafeBytes { QueryErrorClasses.code(errorBody: $0) } }

    func testClassFromTheErrorResponse() {
        XCTAssertEqual(code(body([("S", "ERROR"), ("V", "ERROR"), ("C", "22012"), ("M", "division by zero")])),
                       UInt16(UInt8(ascii: "2")) << 8 | UInt16(UInt8(ascii: "2")))
        XCTAssertEqual(code(body([("C", "23505")])), UInt16(UInt8(ascii: "2")) << 8 | UInt16(UInt8(ascii: "3")))
        XCTAssertEqual(code(body([("S", "ERROR"), ("M", "no code")])), 0)
        XCTAssertEqual(code(body([("C", "4")])), 0, "a code too short")
        XCTAssertEqual(code([UInt8(ascii: "S"), UInt8(ascii: "E")]), 0, "truncated")
        XCTAssertEqual(code([]), 0)
    }

    func testSlotsOtherAndOrder() {
        var e = QueryErrorClasses()
        XCTAssertEqual(e.list, [])
        func c(_ s: String) -> UInt16 { s.withCString { p in UInt16(UInt8(p[0])) << 8 | UInt16(UInt8(p[1])) } }
        for s in ["23", "22", "23", "40", "42", "57", "53", "08", "08", "XX"] { e.record(c(s)) }
        e.record(0)
        XCTAssertEqual(QueryErrorClasses.text(e.list), "23:2 22:1 40:1 42:1 53:1 57:1 other:4",
                       "six classes kept, later ones (08 twice, XX) and the unknown as other")
        let merged = QueryErrorClasses.merged(e.list, [QueryErrorClassCount(sqlClass: "22", count: 5),
                                                       QueryErrorClassCount(sqlClass: "other", count: 1),
                                                       QueryErrorClassCount(sqlClass: "P0", count: 1)])
        XCTAssertEqual(QueryErrorClasses.text(merged), "22:6 23:2 40:1 42:1 53:1 57:1 P0:1 other:5")
    }

    /// Recorded through the table, carried by the snapshot codec and merged over workers.
    func testTableSnapshotAndMerge() throws {
        var a = QueryStatsTable(capacity: 10), b = QueryStatsTable(capacity: 10)
        let oa = a.owner(database: "db", user: "u"), ob = b.owner(database: "db", user: "u")
        let ra = a.findOrInsert(queryid: 7, owner: oa) { ("p", []) }
        let rb = b.findOrInsert(queryid: 7, owner: ob) { ("p", []) }
        let c22 = UInt16(UInt8(ascii: "2")) << 8 | UInt16(UInt8(ascii: "2"))
        let c23 = UInt16(UInt8(ascii: "2")) << 8 | UInt16(UInt8(ascii: "3"))
        a.record(ra, micros: 10, rows: 0, error: true, waitMicros: 0, errorClass: c22)
        a.record(ra, micros: 10, rows: 0, error: false, waitMicros: 0)
        b.record(rb, micros: 10, rows: 0, error: true, waitMicros: 0, errorClass: c23)
        b.record(rb, micros: 10, rows: 0, error: true, waitMicros: 0, errorClass: c23)
        let sa = try QueryStatsSnapshot.decode(a.snapshot().encode())
        XCTAssertEqual(sa.rows.first?.errorClasses, [QueryErrorClassCount(sqlClass: "22", count: 1)])
        let m = MergedQueryStats.merge([sa, try QueryStatsSnapshot.decode(b.snapshot().encode())])
        XCTAssertEqual(m.rows.count, 1)
        XCTAssertEqual(m.rows[0].errors, 3)
        XCTAssertEqual(QueryErrorClasses.text(m.rows[0].errorClasses), "23:2 22:1")
    }
}
