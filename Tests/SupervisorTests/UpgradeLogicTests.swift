// Tests of the rolling-restart pieces that need no processes: `pgswift upgrade` arguments.
import XCTest
import Shared
@testable import Supervisor

final class UpgradeLogicTests: XCTestCase {
    func testUpgradeCommandForms() throws {
        XCTAssertEqual(try Arguments.parse(["upgrade", "-c", "a.ini"]), .upgrade(SupervisorOptions(configPath: "a.ini")))
        XCTAssertEqual(try Arguments.parse(["upgrade", "--config", "b.ini"]), .upgrade(SupervisorOptions(configPath: "b.ini")))
        XCTAssertEqual(try Arguments.parse(["upgrade", "c.ini"]), .upgrade(SupervisorOptions(configPath: "c.ini")))
        for bad in [["upgrade"], ["upgrade", "-c"], ["upgrade", "-x", "a.ini"], ["upgrade", "a.ini", "b.ini"]] {
            XCTAssertThrowsError(try Arguments.parse(bad), "\(bad)")
        }
        // A config file really named "upgrade" still runs the service when given as a path.
        XCTAssertEqual(try Arguments.parse(["./upgrade"]), .run(SupervisorOptions(configPath: "./upgrade")))
    }
}
