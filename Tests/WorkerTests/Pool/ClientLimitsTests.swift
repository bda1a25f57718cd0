// max_db_client_connections and max_user_client_connections (ClientLimits.swift) through a real worker
// loop. The harness worker has no supervisor, so it counts in its own table (the per-worker fallback);
// the service-wide table is SharedTests/LimitsMessageTests and EndToEndTests/ClientLimitsTests.
import XCTest
@testable import Worker
import Shared

final class ClientLimitsTests: WorkerHarnessCase {
    /// A login the worker refuses: everything it sent before closing.
    private func refusedLogin(user: String = "u", database: String = "db") -> [Msg] {
        let c = h.connect()
        c.send(FE.startup(user: user, database: database))
        return h.readUntilClosed(c)
    }

    private func assertRefused(_ got: [Msg], _ key: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.map { $0.char }, ["E"], "only PgBouncer's error, no AuthenticationOk: \(got)", file: file, line: line)
        XCTAssertEqual(got.first?.error?.severity, "FATAL", file: file, line: line)
        XCTAssertEqual(got.first?.sqlState, SQLState.protocolViolation, file: file, line: line)
        XCTAssertEqual(got.first?.error?.message, "client connections exceeded (\(key))", file: file, line: line)
    }

    func testDatabaseLimitRefusesTheClientOverItAndAPlaceFreesWhenOneLeaves() throws {
        try start(["max_db_client_connections": "5"], databaseOptions: "max_db_client_connections=2",
                  extraDatabases: ["other = host=127.0.0.1 port=$PORT"])
        let a = h.login()
        h.login(user: "v")
        assertRefused(refusedLogin(), "max_db_client_connections")
        assertRefused(refusedLogin(user: "v"), "max_db_client_connections")
        // The global 5 applies to the other database: three clients there are fine.
        for _ in 0..<3 { h.login(database: "other") }
        a.send(FE.terminate)
        h.settle()
        h.login()
        assertRefused(refusedLogin(), "max_db_client_connections")
    }

    func testUserLimitCountsTheUserInEveryDatabase() throws {
        try start(["max_user_client_connections": "2"], extraDatabases: ["other = host=127.0.0.1 port=$PORT"])
        h.login(user: "u")
        let b = h.login(user: "u", database: "other")
        assertRefused(refusedLogin(user: "u"), "max_user_client_connections")
        assertRefused(refusedLogin(user: "u", database: "other"), "max_user_client_connections")
        h.login(user: "v")
        h.login(user: "v", database: "other")
        b.send(FE.terminate)
        h.settle()
        h.login(user: "u", database: "other")
    }

    /// A client refused for its user gives back the place it took for its database.
    func testRefusalByTheUserLimitTakesNoDatabasePlace() throws {
        try start(["max_user_client_connections": "1"], databaseOptions: "max_db_client_connections=2")
        h.login(user: "u")
        for _ in 0..<3 { assertRefused(refusedLogin(user: "u"), "max_user_client_connections") }
        XCTAssertEqual(h.worker.limits.localClientCounts[ClientCounter.nameKey(kind: "d", "db")], 1)
        h.login(user: "v")
        assertRefused(refusedLogin(user: "v"), "max_db_client_connections")
    }

    func testNoLimitCountsNothing() throws {
        try start()
        for _ in 0..<5 { h.login() }
        XCTAssertTrue(h.worker.limits.localClientCounts.isEmpty)
    }
}
