// Tests of the health-check settings: [pgswift] keys, target_session_attrs and load_balance_hosts per database.
import XCTest
import Shared

final class HealthConfigTests: XCTestCase {
    func testHealthKeysAndDatabaseOptionsParse() throws {
        let c = try Config.parse(text: """
            [databases]
            app = host=a,b port=5432,5433 target_session_attrs=read-write load_balance_hosts=least-connections
            plain = host=127.0.0.1
            [pgbouncer]
            server_check_delay = 0.5
            dns_max_ttl = 2
            [pgswift]
            health_check_backoff_initial = 0.25
            health_check_backoff_max = 8
            health_check_timeout = 1.5
            health_check_user = checker
            fail_fast = 1
            """, file: "t.ini")
        XCTAssertEqual(c.databases[0].targetSessionAttrs, .readWrite)
        XCTAssertEqual(c.databases[0].loadBalanceHosts, .leastConnections)
        XCTAssertEqual(c.databases[0].hosts, ["a", "b"])
        XCTAssertEqual(c.databases[0].port(forHostAt: 1), 5433)
        XCTAssertEqual(c.databases[1].targetSessionAttrs, .any)
        XCTAssertEqual(c.healthCheckBackoffInitial, 0.25)
        XCTAssertEqual(c.healthCheckBackoffMax, 8)
        XCTAssertEqual(c.healthCheckTimeout, 1.5)
        XCTAssertEqual(c.healthCheckUser, "checker")
        XCTAssertTrue(c.failFast)
        XCTAssertEqual(c.serverCheckDelay, 0.5)
        XCTAssertEqual(Config.isImplemented(key: "health_check_backoff_max"), true)
        XCTAssertTrue(c.warnings.isEmpty, "\(c.warnings)")
    }

    func testBadTargetSessionAttrsIsAnErrorWithTheLine() {
        XCTAssertThrowsError(try Config.parse(text: "[databases]\napp = host=a target_session_attrs=sometimes\n", file: "t.ini")) { e in
            XCTAssertEqual((e as? ConfigError)?.line, 2)
            XCTAssertTrue("\(e)".contains("target_session_attrs"), "\(e)")
        }
    }
}
