// The read/write routing keys of a [databases] entry (RoutingSettings.swift): values, refusals, warnings.
import XCTest
import Shared

final class RoutingSettingsTests: XCTestCase {
    func testKeysParse() throws {
        let c = try Config.parse(text: """
            [databases]
            app = host=a,b,c port=5432,5433,5434 routing=read-write-split read_after_write=primary_window read_after_write_window=250 max_standby_lag=2000ms standby_reads_fallback=primary routing_deny_functions=nextval,my_*
            plain = host=a
            [pgbouncer]
            pool_mode = transaction
            """, file: "t.ini")
        let app = try XCTUnwrap(c.database(named: "app")).routing
        XCTAssertEqual(app.mode, .readWriteSplit)
        XCTAssertEqual(app.readAfterWrite, .primaryWindow)
        XCTAssertEqual(app.windowMillis, 250)
        XCTAssertEqual(app.maxStandbyLagMillis, 2000)
        XCTAssertEqual(app.denyFunctions, SQLFunctionDenyList(["nextval", "my_*"]))
        XCTAssertEqual(try XCTUnwrap(c.database(named: "plain")).routing, RoutingSettings(), "routing=none by default")
        XCTAssertTrue(c.warnings.isEmpty, "\(c.warnings)")
    }

    func testUnfinishedValuesWarnOrAreRefused() throws {
        let c = try Config.parse(text: "[databases]\napp = host=a,b routing=read-write-split pool_mode=session\n", file: "t.ini")
        let text = c.warnings.map { "\($0)" }.joined(separator: "\n")
        XCTAssertTrue(text.contains("does not route session-mode pools"), text)
        for bad in ["routing=sometimes", "standby_reads_fallback=wait", "standby_reads_fallback=error",
                    "read_after_write=never", "max_standby_lag=-1", "read_after_write_window=1s"] {
            XCTAssertThrowsError(try Config.parse(text: "[databases]\napp = host=a \(bad)\n", file: "t.ini"), bad) { e in
                XCTAssertEqual((e as? ConfigError)?.line, 2)
            }
        }
    }
}
