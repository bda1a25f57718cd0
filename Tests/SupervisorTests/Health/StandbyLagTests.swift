// The standby replay figures the health check reads for read/write routing (StandbyLag.swift).
import XCTest
import Shared
@testable import Supervisor

final class StandbyLagTests: XCTestCase {
    func testLSNText() {
        XCTAssertEqual(StandbyLag.lsn("16/B374D848"), 0x16_B374_D848)
        XCTAssertEqual(StandbyLag.lsn("0/3000060"), 0x300_0060)
        for bad in [nil, "", "16", "x/1", "1/x", "100000000/0"] { XCTAssertNil(StandbyLag.lsn(bad), "\(bad ?? "nil")") }
    }

    func testSmallestMaxStandbyLagOfTheRoutedEntries() throws {
        let c = try Config.parse(text: """
            [databases]
            a = host=h port=1 routing=read-write-split max_standby_lag=3000
            b = host=h port=1 routing=read-write-split max_standby_lag=800
            c = host=h port=1 max_standby_lag=10
            """, file: "t.ini")
        var t = HealthTarget(key: "h:1", host: "h", port: 1, kind: .name, database: "a", user: "u", secret: nil,
                             needRole: true, health: HostHealth(backoff: Backoff(initialNanos: 1, maxNanos: 2)))
        for e in c.databases { StandbyLag.noteEntry(e, &t) }
        XCTAssertEqual(t.maxLagMillis, 800, "entry c does not route: its value does not count")
        t.replayLagMillis = 900
        XCTAssertFalse(t.flags.contains(.lagging), "no role known yet")
    }
}
