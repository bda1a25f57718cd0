// Tests of per-pattern query statistics (issue 21): log-linear histograms and their percentiles, the
// bounded table and its eviction, the snapshot codec, the merge over workers, the admin commands.
import XCTest
import Shared

final class QueryLatencyTests: XCTestCase {
    func testEveryValueLandsInABucketThatHoldsIt() {
        var values: [UInt64] = Array(0...100) + [1000, 1023, 1024, 1025, 65_535, 65_536, 1_000_000, 300_000_000, .max]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 { values.append(UInt64.random(in: 0...(1 << 40), using: &rng)) }
        for v in values {
            let g = QueryLatencyBuckets.index(micros: v)
            XCTAssertLessThanOrEqual(g, QueryLatencyBuckets.maxIndex)
            let lo = QueryLatencyBuckets.lowerBound(g)
            XCTAssertLessThanOrEqual(lo, v, "\(v)")
            XCTAssertLessThanOrEqual(v - lo, QueryLatencyBuckets.width(g) - 1, "\(v)")
            // The midpoint is within 3.2 % of the value.
            let mid = Double(QueryLatencyBuckets.midpoint(g))
            XCTAssertLessThanOrEqual(abs(mid - Double(v)), max(0.5, Double(v) * 0.032), "\(v)")
        }
    }

    /// Percentiles from the window against the exact ones of the recorded values: within 5 %.
    func testPercentilesAreWithinFivePercent() {
        var rng = SystemRandomNumberGenerator()
        for round in 0..<20 {
            var w = QueryLatencyWindow()
            var values: [UInt64] = []
            let scale = Double.random(in: 50...50_000, using: &rng)
            for _ in 0..<5000 {
                // Log-normal-ish: most near `scale`, a tail 30 times longer.
                let v = UInt64(scale * exp(Double.random(in: -1...1, using: &rng)) * (Double.random(in: 0...1, using: &rng) < 0.02 ? 30 : 1))
                values.append(v)
                w.record(micros: v)
            }
            values.sort()
            let h = w.sparse
            XCTAssertEqual(h.count, 5000)
            for q in [0.5, 0.95, 0.99] {
                let exact = Double(values[Int((q * 5000).rounded(.up)) - 1])
                let got = Double(h.percentile(q))
                XCTAssertLessThanOrEqual(abs(got - exact), exact * 0.05 + 1, "round \(round) q \(q): \(got) vs \(exact)")
            }
        }
    }

    /// Values above the window move it up; what falls off the bottom is kept in its lowest bucket.
    func testWindowShiftKeepsTheCountAndTheHighBuckets() {
        var w = QueryLatencyWindow()
        for _ in 0..<10 { w.record(micros: 100) }
        for _ in 0..<10 { w.record(micros: 10_000_000) }
        let h = w.sparse
        XCTAssertEqual(h.count, 20)
        XCTAssertEqual(h.percentile(1.0), QueryLatencyBuckets.midpoint(QueryLatencyBuckets.index(micros: 10_000_000)))
        XCTAssertEqual(h.buckets.last?.count, 10)
        // A window that started high moves down while its top has room.
        var d = QueryLatencyWindow()
        d.record(micros: 3_000_000)
        for _ in 0..<10 { d.record(micros: 2000) }
        XCTAssertEqual(d.sparse.buckets.first, QueryLatencyHistogram.Bucket(index: Int32(QueryLatencyBuckets.index(micros: 2000)), count: 10))
    }

    func testMergeIsExact() {
        var a = QueryLatencyWindow(), b = QueryLatencyWindow(), both = QueryLatencyWindow()
        for v: UInt64 in [10, 200, 3000, 3000, 45_000] { a.record(micros: v); both.record(micros: v) }
        for v: UInt64 in [200, 7, 3001, 40_000] { b.record(micros: v); both.record(micros: v) }
        var m = a.sparse
        m.merge(b.sparse)
        XCTAssertEqual(m, both.sparse)
    }
}

final class QueryStatsTableTests: XCTestCase {
    func testFindInsertRecordAndSnapshot() {
        var t = QueryStatsTable(capacity: 10)
        let o = t.owner(database: "db", user: "u")
        XCTAssertEqual(t.owner(database: "db", user: "u"), o)
        let r = t.findOrInsert(queryid: 42, owner: o) { ("select $1", [QueryTableUse(name: "t", access: 1)]) }
        XCTAssertEqual(t.find(queryid: 42, owner: o), r)
        XCTAssertNil(t.find(queryid: 42, owner: t.owner(database: "db", user: "v")))
        t.record(r, micros: 100, rows: 3, error: false, waitMicros: 5)
        t.record(r, micros: 300, rows: 0, error: true, waitMicros: 0)
        let s = t.snapshot()
        XCTAssertEqual(s.rows.count, 1)
        let row = s.rows[0]
        XCTAssertEqual(row.calls, 2)
        XCTAssertEqual(row.errors, 1)
        XCTAssertEqual(row.totalMicros, 400)
        XCTAssertEqual(row.minMicros, 100)
        XCTAssertEqual(row.maxMicros, 300)
        XCTAssertEqual(row.rows, 3)
        XCTAssertEqual(row.waitMicros, 5)
        XCTAssertEqual(row.text, "select $1")
        XCTAssertEqual(row.percentile(1.0), 300)
    }

    /// Many distinct patterns through a small table: it never holds more than its capacity, the
    /// eviction count says how many went, the called ones stay, and every pattern left is found.
    func testEvictionKeepsTheTableBoundedAndTheBusyPatterns() {
        var t = QueryStatsTable(capacity: 100)
        let o = t.owner(database: "db", user: "u")
        let hot = t.findOrInsert(queryid: 1, owner: o) { ("hot", []) }
        for _ in 0..<50 { t.record(hot, micros: 10, rows: 0, error: false, waitMicros: 0) }
        var hotRef = hot
        for q in 2..<10_002 as Range<UInt64> {
            let r = t.findOrInsert(queryid: q &* 0x9E37_79B9_7F4A_7C15, owner: o) { ("p\(q)", []) }
            t.record(r, micros: 10, rows: 0, error: false, waitMicros: 0)
            XCTAssertLessThanOrEqual(t.liveCount, 100)
            if q % 97 == 0 {
                hotRef = t.findOrInsert(queryid: 1, owner: o) { ("hot", []) }
                t.record(hotRef, micros: 10, rows: 0, error: false, waitMicros: 0)
            }
        }
        XCTAssertEqual(UInt64(t.liveCount) + t.evicted, 10_001)
        XCTAssertTrue(t.isValid(hotRef), "the busy pattern stays")
        XCTAssertEqual(t.find(queryid: 1, owner: o), hotRef)
        // Every live entry is reachable through the index.
        for i in t.entries.indices where t.entries[i].inUse {
            XCTAssertEqual(t.find(queryid: t.entries[i].queryid, owner: t.entries[i].owner)?.slot, Int32(i))
        }
    }

    func testResetAndLowerCapacity() {
        var t = QueryStatsTable(capacity: 10)
        let o = t.owner(database: "db", user: "u")
        var refs: [QueryPatternRef] = []
        for q in 0..<10 as Range<UInt64> {
            let r = t.findOrInsert(queryid: q, owner: o) { ("p\(q)", []) }
            for _ in 0...q { t.record(r, micros: 1, rows: 0, error: false, waitMicros: 0) }
            refs.append(r)
        }
        t.setCapacity(3)
        XCTAssertEqual(t.liveCount, 3)
        XCTAssertEqual(t.evicted, 7)
        XCTAssertEqual(Set(t.snapshot().rows.map(\.text)), ["p7", "p8", "p9"])
        XCTAssertFalse(refs.contains { t.isValid($0) }, "refs from before the resize are stale")
        t.reset()
        XCTAssertEqual(t.liveCount, 0)
        XCTAssertTrue(t.snapshot().rows.isEmpty)
        XCTAssertEqual(t.snapshot().evicted, 7)
        XCTAssertNil(t.find(queryid: 9, owner: o))
    }

    /// Long texts are kept cut; a report stays within its byte budget, busiest patterns first.
    func testLongTextsAreClippedAndTheReportIsBounded() {
        var t = QueryStatsTable(capacity: 100)
        let o = t.owner(database: "db", user: "u")
        for q in 0..<50 as Range<UInt64> {
            let r = t.findOrInsert(queryid: q, owner: o) { (String(repeating: "é", count: 3000), []) }
            t.record(r, micros: 100 + q, rows: 0, error: false, waitMicros: 0)
        }
        let s = t.snapshot(maxBytes: 10 * 2200)
        XCTAssertEqual(s.rows.count, 10, "96 + 2048 bytes counted per row")
        XCTAssertEqual(s.rows.first?.queryid, 49, "the busiest first")
        XCTAssertEqual(s.rows.first?.text.utf8.count, QueryStatsTable.maxTextBytes)
        XCTAssertEqual(t.snapshot().rows.count, 50)
    }

    func testSnapshotCodecRoundTripAndMerge() throws {
        var a = QueryStatsTable(capacity: 10), b = QueryStatsTable(capacity: 10)
        let oa = a.owner(database: "db", user: "u"), ob = b.owner(database: "db", user: "u")
        let ra = a.findOrInsert(queryid: 7, owner: oa) { ("select * from t where id = $1", [QueryTableUse(name: "t", access: 1)]) }
        let rb = b.findOrInsert(queryid: 7, owner: ob) { ("select * from t where id = $1", [QueryTableUse(name: "t", access: 1)]) }
        let wb = b.findOrInsert(queryid: 8, owner: ob) { ("update t set x = $1", [QueryTableUse(name: "t", access: 2)]) }
        for v: UInt64 in [100, 200, 300] { a.record(ra, micros: v, rows: 1, error: false, waitMicros: 1) }
        for v: UInt64 in [400, 500] { b.record(rb, micros: v, rows: 1, error: v == 500, waitMicros: 2) }
        b.record(wb, micros: 5000, rows: 1, error: false, waitMicros: 0)
        let sa = try QueryStatsSnapshot.decode(a.snapshot().encode())
        XCTAssertEqual(sa, a.snapshot())
        let sb = try QueryStatsSnapshot.decode(b.snapshot().encode())
        XCTAssertThrowsError(try QueryStatsSnapshot.decode(Array(b.snapshot().encode().dropLast())))
        let m = MergedQueryStats.merge([sa, sb])
        XCTAssertEqual(m.rows.count, 2)
        XCTAssertEqual(m.rows[0].text, "update t set x = $1", "sorted by total time")
        let sel = m.rows[1]
        XCTAssertEqual(sel.calls, 5)
        XCTAssertEqual(sel.errors, 1)
        XCTAssertEqual(sel.totalMicros, 1500)
        XCTAssertEqual(sel.minMicros, 100)
        XCTAssertEqual(sel.maxMicros, 500)
        XCTAssertEqual(sel.waitMicros, 7)
        XCTAssertEqual(sel.histogram.count, 5)
        let tables = m.tables()
        XCTAssertEqual(tables.count, 1)
        XCTAssertEqual(tables[0].table, "t")
        XCTAssertEqual(tables[0].calls, 6)
        XCTAssertEqual(tables[0].reads, 5)
        XCTAssertEqual(tables[0].writes, 1)
        XCTAssertEqual(tables[0].totalMicros, 6500)
    }

    func testAdminCommands() throws {
        XCTAssertEqual(try AdminCommand.parse("SHOW QUERIES"), .showQueries(limit: nil))
        XCTAssertEqual(try AdminCommand.parse("show queries 10;"), .showQueries(limit: 10))
        XCTAssertEqual(try AdminCommand.parse("SHOW TABLES"), .showTables)
        XCTAssertEqual(try AdminCommand.parse("reset queries"), .resetQueries)
        XCTAssertTrue(AdminCommand.resetQueries.requiresAdmin)
        XCTAssertFalse(AdminCommand.showQueries(limit: nil).requiresAdmin)
        XCTAssertThrowsError(try AdminCommand.parse("show queries x"))
        XCTAssertEqual(try StatsRequest.decode(StatsRequest(requestID: 3, includeClients: false, includeServers: true,
                                                            includeQueries: true, resetQueries: true).encode(), requestID: 3),
                       StatsRequest(requestID: 3, includeClients: false, includeServers: true, includeQueries: true, resetQueries: true))
    }
}
