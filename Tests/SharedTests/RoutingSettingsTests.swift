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
        XCTAssertFalse(try XCTUnwrap(c.database(named: "plain")).routing.enabled, "routing=none by default")
        XCTAssertTrue(c.warnings.isEmpty, "\(c.warnings)")
    }

    func testDefaultsInTheMainSections() throws {
        let c = try Config.parse(text: """
            [databases]
            a = host=h,i routing=read-write-split max_standby_lag=100
            b = host=h,i routing=read-write-split
            [pgbouncer]
            pool_mode = transaction
            max_standby_lag = 700
            [pgswift]
            read_after_write = primary_window
            read_after_write_window = 250
            """, file: "t.ini")
        let a = try XCTUnwrap(c.database(named: "a")).routing, b = try XCTUnwrap(c.database(named: "b")).routing
        XCTAssertEqual(a.maxStandbyLagMillis, 100, "the entry's own value wins")
        XCTAssertEqual(b.maxStandbyLagMillis, 700)
        XCTAssertEqual([a.readAfterWrite, b.readAfterWrite], [.primaryWindow, .primaryWindow])
        XCTAssertEqual(b.windowMillis, 250)
        XCTAssertThrowsError(try Config.parse(text: "[pgswift]\nrouting = read-write-split\n", file: "t.ini"),
                             "routing is per database")
        XCTAssertEqual([a.fallback, b.fallback], [.primary, .primary], "the default")
        let w = try Config.parse(text: """
            [databases]
            a = host=h,i routing=read-write-split standby_reads_fallback=error
            b = host=h,i routing=read-write-split
            [pgswift]
            standby_reads_fallback = wait
            """, file: "t.ini")
        XCTAssertEqual(try XCTUnwrap(w.database(named: "a")).routing.fallback, .error, "the entry's own value wins")
        XCTAssertEqual(try XCTUnwrap(w.database(named: "b")).routing.fallback, .wait)
    }

    /// SHOW CONFIG lists the routing defaults after the [pgswift] keys, with their values and defaults.
    func testShowConfigListsTheRoutingDefaults() throws {
        let rows = try Config.parse(text: """
            [pgbouncer]
            max_standby_lag = 700
            [pgswift]
            standby_reads_fallback = error
            routing_deny_functions = nextval, My_*
            """, file: "t.ini").settings()
        let s = Dictionary(uniqueKeysWithValues: rows.map { ($0.key, $0) })
        XCTAssertEqual(s["max_standby_lag"]?.value, "700")
        XCTAssertEqual(s["max_standby_lag"]?.defaultValue, "5000")
        XCTAssertEqual(s["standby_reads_fallback"]?.value, "error")
        XCTAssertEqual(s["standby_reads_fallback"]?.defaultValue, "primary")
        XCTAssertEqual(s["read_after_write"]?.value, "lsn")
        XCTAssertEqual(s["read_after_write_window"]?.value, "1000")
        XCTAssertEqual(s["routing_deny_functions"]?.value, "nextval,my_*")
        XCTAssertEqual(s["routing_deny_functions"]?.defaultValue,
                       "nextval,setval,pg_advisory_lock*,pg_try_advisory_lock*,lo_*,txid_current,pg_current_wal*,set_config,dblink*")
        XCTAssertNil(s["routing"], "per database only")
        XCTAssertEqual(rows.suffix(5).map(\.key), ["max_standby_lag", "read_after_write", "read_after_write_window",
                                                  "routing_deny_functions", "standby_reads_fallback"])
        XCTAssertTrue(rows.suffix(5).allSatisfy { $0.implemented && $0.changeable })
    }

    func testUnfinishedAndBadValuesWarnOrAreRefused() throws {
        let c = try Config.parse(text: "[databases]\napp = host=a,b routing=read-write-split pool_mode=session\n", file: "t.ini")
        let text = c.warnings.map { "\($0)" }.joined(separator: "\n")
        XCTAssertTrue(text.contains("does not route session-mode pools"), text)
        for bad in ["routing=sometimes", "standby_reads_fallback=never",
                    "read_after_write=never", "max_standby_lag=-1", "read_after_write_window=1s"] {
            XCTAssertThrowsError(try Config.parse(text: "[databases]\napp = host=a \(bad)\n", file: "t.ini"), bad) { e in
                XCTAssertEqual((e as? ConfigError)?.line, 2)
            }
        }
    }
}
