// The `replication` startup parameter's values, read as PostgreSQL reads them.
import XCTest
@testable import Shared

final class ReplicationTests: XCTestCase {
    func testReplicationStartupValuesAsPostgreSQLReadsThem() {
        XCTAssertEqual(ReplicationMode(startupValue: "database"), .logical)
        for v in ["true", "on", "yes", "1", "TRUE", "t", "y", "On", "tr"] {
            XCTAssertEqual(ReplicationMode(startupValue: v), .physical, v)
        }
        for v in ["false", "off", "no", "0", "f", "n", "OFF"] {
            XCTAssertEqual(ReplicationMode(startupValue: v), ReplicationMode.none, v)
        }
        for v in ["", "o", "Database", "2", "truex", "physical", "10"] {
            XCTAssertNil(ReplicationMode(startupValue: v), v)
        }
        XCTAssertEqual(ReplicationMode.logical.startupValue, "database")
        XCTAssertEqual(ReplicationMode.physical.startupValue, "yes")
        XCTAssertEqual(ReplicationMode.none.startupValue, "no")
    }
}
