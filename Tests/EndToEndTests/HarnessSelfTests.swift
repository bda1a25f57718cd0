// Checks the end-to-end harness itself against PostgreSQL directly (no pgswift involved).
import Foundation
import XCTest

final class HarnessSelfTests: XCTestCase {
    /// Every test role logs in over TCP by its pg_hba method with the right password, and a wrong
    /// one gets 28P01 from PostgreSQL itself: what the client-auth tests expect pgswift to mimic.
    func testRolesAndAuthMethodsAgainstPostgresDirectly() throws {
        let pg = try PostgresServer.shared()
        for (role, password) in PostgresServer.passwords {
            let target = ClientTarget(port: pg.port, user: role, database: "testdb", password: password)
            let r = try Psql.run(target, "select current_user")
            XCTAssertTrue(r.succeeded, "\(role): \(r)")
            XCTAssertEqual(r.stdout.trimmed, role)
            guard role != "u_trust" else { continue }
            let fields = try WireClient.failedLogin(port: pg.port, user: role, database: "testdb")
            XCTAssertEqual(fields.sqlstate, "28P01", "\(role): \(fields)")
            XCTAssertTrue(fields.message?.contains("password authentication failed") ?? false, "\(fields)")
        }
        XCTAssertTrue(try pg.storedPassword(of: "u_md5").hasPrefix("md5"))
        XCTAssertTrue(try pg.storedPassword(of: "u_scram").hasPrefix("SCRAM-SHA-256$"))
    }

    func testWireClientAndBackendCount() throws {
        let pg = try PostgresServer.shared()
        let c = try WireClient.connect(port: pg.port, user: "u_trust", database: "testdb")
        XCTAssertEqual(try c.query("select 1, null::text, 'x'").first ?? [], ["1", nil, "x"])
        XCTAssertThrowsError(try c.query("select * from no_such_table")) { error in
            XCTAssertEqual((error as? WireServerError)?.fields.sqlstate, "42P01")
        }
        XCTAssertGreaterThanOrEqual(try pg.countBackends(user: "u_trust", db: "testdb"), 1)
        c.close()
        XCTAssertTrue(waitUntil(timeout: 10) { (try? pg.countBackends(user: "u_trust", db: "testdb")) == 0 })
    }

    func testPgbenchSummaryParsing() {
        let s = Pgbench.parse("""
            number of clients: 50
            number of transactions actually processed: 100525
            number of failed transactions: 0 (0.000%)
            latency average = 4.585 ms
            tps = 10906.171879 (without initial connection time)
            """)
        XCTAssertEqual(s.transactions, 100525)
        XCTAssertEqual(s.failedTransactions, 0)
        XCTAssertEqual(s.tps ?? 0, 10906.171879, accuracy: 0.001)
    }
}
