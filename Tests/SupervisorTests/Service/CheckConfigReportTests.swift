// Tests of what `pgswift --check-config` prints: effective values with where each comes from, passwords masked.
import XCTest
import Shared
@testable import Supervisor

final class CheckConfigReportTests: XCTestCase {
    func testSetKeysWithTheirOriginAndDatabasesWithoutPasswords() throws {
        let c = try Config.parse(text: """
            [pgbouncer]
            listen_port = 6500
            [databases]
            app = host=${DB_HOST} port=5433 dbname=shop user=app password=${DB_PASSWORD} pool_size=5
            [users]
            app = pool_mode=transaction
            """, file: "/etc/p.ini", environment: [
                "DB_HOST": "db.internal", "DB_PASSWORD": "hunter2",
                "PGSWIFT_DEFAULT_POOL_SIZE": "50", "PGSWIFT_WORKERS": "3",
            ])
        let text = CheckConfigReport.render(c)
        XCTAssertEqual(text, """
            [pgbouncer]
            default_pool_size = 50    ; environment variable PGSWIFT_DEFAULT_POOL_SIZE
            listen_port = 6500    ; /etc/p.ini:2
            [pgswift]
            workers = 3    ; environment variable PGSWIFT_WORKERS
            [databases]
            app = host=db.internal port=5433 dbname=shop user=app password=******** pool_size=5    ; /etc/p.ini:4
            [users]
            app = pool_mode=transaction

            """)
        XCTAssertFalse(text.contains("hunter2"))
    }

    func testNothingSetPrintsNothing() throws {
        XCTAssertEqual(CheckConfigReport.render(try Config.parse(text: "[pgbouncer]\n", file: "p.ini")), "")
    }
}
