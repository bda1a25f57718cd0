// Tests of the stats blobs' shared list helpers (StatsCodec.swift's CompactRecord lists, MergedStats'
// fold): layout, round trip, and the bound on a corrupt count.
import XCTest
@testable import Shared

final class StatsCodecTests: XCTestCase {
    private struct Named: CompactRecord, Equatable {
        var name: String
        var n: Int64

        func encode(into w: inout MessageWriter) {
            w.compactString(name)
            w.signed(n)
        }

        static func decode(_ r: inout StatsReader) throws(StatsDecodeError) -> Named {
            Named(name: try r.compactString("name"), n: try r.signed("n"))
        }
    }

    private func decode(_ bytes: [UInt8]) throws -> [Named] {
        try StatsReader.reading(bytes) { r throws(StatsDecodeError) in
            let rows = try r.compactArray("named count", minimumEach: 2) { r throws(StatsDecodeError) in try Named.decode(&r) }
            try r.expectEnd("rows")
            return rows
        }
    }

    func testCompactRecordsRoundTripAndLayout() throws {
        let rows = [Named(name: "a", n: -1), Named(name: "", n: 300)]
        var w = MessageWriter()
        w.compactArray(rows)
        // Varint count, then each record: varint-length text, zigzag varint.
        XCTAssertEqual(w.bytes, [2, 1, 0x61, 1, 0, 0xD8, 0x04])
        XCTAssertEqual(try decode(w.bytes), rows)
        var empty = MessageWriter()
        empty.compactArray([Named]())
        XCTAssertEqual(empty.bytes, [0])
        XCTAssertEqual(try decode(empty.bytes), [])
        XCTAssertThrowsError(try decode([3, 1, 0x61, 1])) { error in
            XCTAssertEqual((error as? StatsDecodeError)?.reason, "element count 3 exceeds the data (named count)")
        }
    }

    func testFoldCombinesRowsOfTheSameKeyAndAppendsNewOnes() {
        var rows = [RouteStat(host: "a", reads: 1), RouteStat(host: "b", writes: 2)]
        rows.fold(RouteStat(host: "b", writes: 3, retries: 1), by: \.host) { $0.writes += $1.writes }
        rows.fold(RouteStat(host: "c", reads: 4), by: \.host) { _, _ in XCTFail("no row c to combine with") }
        XCTAssertEqual(rows, [RouteStat(host: "a", reads: 1), RouteStat(host: "b", writes: 5), RouteStat(host: "c", reads: 4)])
    }
}
