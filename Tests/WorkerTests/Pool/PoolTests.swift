// Pools after a reload (Pool.swift `refreshPools`), through a real loop.
import XCTest
@testable import Worker
import Shared

final class PoolTests: WorkerHarnessCase {
    /// The worker's configuration replaced by the harness's with `options` on the `db` line, then
    /// refreshPools, as `reload` does after reading the file.
    private func reload(databaseOptions options: String) throws {
        let text = h.configText.replacingOccurrences(of: "db = host=127.0.0.1 port=\(h.backendPort) ",
                                                     with: "db = host=127.0.0.1 port=\(h.backendPort) \(options)")
        XCTAssertNotEqual(text, h.configText)
        h.worker.config = try Config.parse(text: text, file: "harness.ini")
        h.worker.refreshPools()
    }

    /// As PgBouncer's RELOAD (test_operations.py test_database_change): a database whose server
    /// database changed closes its servers made for the old one, an idle one at once ("database
    /// configuration changed"), and the next transaction gets a server of the new database.
    func testAChangedDatabaseEntryClosesItsServers() throws {
        try start(["log_disconnections": "1"])
        h.captureLog()
        let a = h.login()
        let s1 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s1, "select 1")
        try reload(databaseOptions: "dbname=other")
        h.waitClosed(s1)
        XCTAssertEqual(h.logLines(containing: "db/u@", "closing because: database configuration changed").count, 1)
        a.send(FE.query("select 2"))
        let s2 = try XCTUnwrap(h.waitServers(2))
        XCTAssertEqual(s2.startup?["database"], "other")
        h.answerQuery(s2, expect: "select 2")
        XCTAssertEqual(h.readUntilReady(a).last?.status, "I")
    }

    /// A new password alone keeps the servers, as in PgBouncer.
    func testANewPasswordKeepsTheServers() throws {
        try start()
        let a = h.login()
        let s1 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s1, "select 1")
        try reload(databaseOptions: "password=new")
        h.settle()
        XCTAssertFalse(s1.closed)
        h.roundTrip(a, s1, "select 2")
    }
}
