// `pgswift top`'s pure parts: arguments, SHOW rows read, the interval diff of SHOW QUERIES, the layout.
import XCTest
import Shared
@testable import Supervisor

final class TopModelTests: XCTestCase {
    private func sample(_ id: String, calls: UInt64, us: UInt64, errors: UInt64 = 0, p99: UInt64 = 10,
                        db: String = "db", query: String? = nil) -> TopPatternSample {
        TopPatternSample(database: db, user: "u", queryid: id, query: query ?? "select \(id)", totals: TopFigures(calls: calls, execMicros: us, errors: errors), p99Micros: p99)
    }

    func testArguments() throws {
        XCTAssertEqual(try Arguments.parse(["top"]), .top(TopOptions()))
        var o = TopOptions()
        o.host = "10.0.0.5"; o.port = 6433; o.user = "admin"; o.database = "pgbouncer"
        XCTAssertEqual(try Arguments.parse(["top", "-h", "10.0.0.5", "-p", "6433", "-U", "admin", "-d", "pgbouncer"]), .top(o))
        XCTAssertEqual(try Arguments.parse(["top", "-h10.0.0.5", "-p6433", "-Uadmin"]), .top(o))
        o = TopOptions(); o.batch = true; o.iterations = 3; o.delay = 0.5
        XCTAssertEqual(try TopCLI.parse(["-b", "-n", "3", "-s", "0.5"]), o)
        XCTAssertTrue(try TopCLI.parse(["--help"]).help)
        for bad in [["-p"], ["-p", "0"], ["-p", "x"], ["-x"], ["-n", "0"], ["-s", "0"], ["-bx"]] {
            XCTAssertThrowsError(try TopCLI.parse(bad), "\(bad)")
        }
    }

    func testTargetFromEnvironmentAndDefaults() {
        let env = ["PGHOST": "db.example", "PGPORT": "7000", "PGUSER": "ops", "USER": "me"]
        XCTAssertEqual(TopCLI.target(TopOptions(), environment: { env[$0] }),
                       AdminTarget(host: "db.example", port: 7000, user: "ops", database: "pgbouncer"))
        var o = TopOptions(); o.host = "/run/pg"; o.port = 6432; o.user = "a"
        let t = TopCLI.target(o, environment: { env[$0] })
        XCTAssertEqual(t.unixSocketPath, "/run/pg/.s.PGSQL.6432")
        XCTAssertEqual(TopCLI.target(TopOptions(), environment: { ["USER": "me"][$0] }),
                       AdminTarget(host: "/tmp", port: 6432, user: "me", database: "pgbouncer"))
    }

    func testRowsReadByColumnName() {
        let q = AdminResultSet(columns: ["database", "user", "queryid", "query", "calls", "total_exec_us", "p99_us", "errors"],
                               rows: [["db", "u", "42", "select $1", "7", "700", "150", "2"], ["db", nil, "1", "x", "1", "1", "1", "0"]])
        XCTAssertEqual(TopModel.patterns(q), [TopPatternSample(database: "db", user: "u", queryid: "42", query: "select $1",
                                                                totals: TopFigures(calls: 7, execMicros: 700, errors: 2), p99Micros: 150)])
        let p = AdminResultSet(columns: ["database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
                                         "sv_login", "maxwait", "maxwait_us", "pool_mode"],
                               rows: [["app", "web", "5", "3", "4", "1", "0", "0", "2", "500000", "transaction"]])
        XCTAssertEqual(TopModel.pools(p), [TopPool(database: "app", user: "web", clientsActive: 5, clientsWaiting: 3,
                                                   serversActive: 4, serversIdle: 1, serversUsed: 0, serversLogin: 0,
                                                   maxWaitMicros: 2_500_000, mode: "transaction")])
    }

    /// The interval: differences since the last sample, busiest first, idle patterns left out, a
    /// pattern new since then (or reset) counted from zero.
    func testDiffIsTheLastInterval() {
        let before = [sample("a", calls: 10, us: 1000), sample("b", calls: 5, us: 5000, errors: 1), sample("c", calls: 3, us: 30)]
        let after = [sample("a", calls: 30, us: 3000), sample("b", calls: 6, us: 9000, errors: 3),
                     sample("c", calls: 3, us: 30), sample("d", calls: 2, us: 50), sample("a", calls: 1, us: 10_000, db: "other")]
        let d = TopModel.diff(previous: before, current: after)
        XCTAssertEqual(d.map { "\($0.sample.database)/\($0.sample.queryid) \($0.interval.calls) \($0.interval.execMicros) \($0.interval.errors)" },
                       ["other/a 1 10000 0", "b 1 4000 2", "a 20 2000 0", "d 2 50 0"].map { $0.contains("/") ? $0 : "db/" + $0 })
        // RESET QUERIES between two samples: the counters went down, so the new figures are the interval's.
        let reset = TopModel.diff(previous: after, current: [sample("a", calls: 4, us: 40)])
        XCTAssertEqual(reset.map(\.interval.calls), [4])
        XCTAssertEqual(TopModel.diff(previous: after, current: after), [])
    }

    func testDurationsAndNumbers() {
        XCTAssertEqual(TopModel.duration(850), "850us")
        XCTAssertEqual(TopModel.duration(1250), "1.3ms")
        XCTAssertEqual(TopModel.duration(3_400_000), "3.40s")
        XCTAssertEqual(TopModel.fixed(0.05, 1), "0.1")
        XCTAssertEqual(TopModel.fixed(12, 2), "12.00")
    }

    /// The screen: within the terminal's size, pools with waiting clients first, patterns by interval
    /// time, the footer last; a small terminal keeps the header and cuts the pattern list.
    func testLayoutFitsTheTerminal() {
        let pools = (0..<10).map { i in
            TopPool(database: "db\(i)", user: "u", clientsActive: i, clientsWaiting: i == 7 ? 4 : 0, serversActive: 1,
                    serversIdle: 0, serversUsed: 0, serversLogin: 0, maxWaitMicros: 0, mode: "session")
        }
        var current: [TopPatternSample] = []
        for i in 0..<40 {
            let n = UInt64(i + 1)
            current.append(sample("q\(i)", calls: n, us: n * 100, query: "select\n  \(i)"))
        }
        let frame = TopFrame(title: "127.0.0.1:6432", clock: "12:00:00", intervalSeconds: 1, pools: pools,
                             patterns: TopModel.diff(previous: [], current: current), patternCount: 40, firstSample: false)
        let lines = TopModel.render(frame, width: 100, height: 30)
        XCTAssertEqual(lines.count, 30)
        XCTAssertTrue(lines.allSatisfy { $0.count <= 100 })
        XCTAssertTrue(lines[0].hasPrefix("pgswift top - 127.0.0.1:6432"))
        XCTAssertTrue(lines[1].contains("waiting 4"), lines[1])
        let header = lines.firstIndex { $0.hasPrefix("POOL") }!
        XCTAssertTrue(lines[header + 1].hasPrefix("db7/u"), "waiting clients first: \(lines[header + 1])")
        XCTAssertTrue(lines.contains { $0.contains("more pools") })
        let patHeader = lines.firstIndex { $0.contains("QUERY") }!
        XCTAssertTrue(lines[patHeader + 1].hasSuffix("db/u  select 39"), "busiest first, on one line: \(lines[patHeader + 1])")
        XCTAssertTrue(lines[29].hasPrefix("q: quit"))
        let small = TopModel.render(frame, width: 40, height: 12)
        XCTAssertEqual(small.count, 12)
        XCTAssertTrue(small.allSatisfy { $0.count <= 40 })
        let empty = TopModel.render(TopFrame(title: "t", clock: "c", intervalSeconds: 1, pools: [], patterns: [],
                                             patternCount: 0, firstSample: true), width: 80, height: 24)
        XCTAssertTrue(empty.contains { $0.contains("(no pools)") })
        XCTAssertTrue(empty.contains { $0.contains("(no statements in this interval)") })
        let batch = TopModel.render(frame, width: 100, height: 60, fill: false)
        XCTAssertEqual(batch.filter(\.isEmpty).count, 2, "no padding: \(batch)")
        XCTAssertTrue(batch.last!.hasPrefix("q: quit"))
        let ansi = TopModel.ansi(["a", "b"])
        XCTAssertEqual(ansi, "\u{1B}[Ha\u{1B}[K\r\nb\u{1B}[K\u{1B}[J")
    }
}
