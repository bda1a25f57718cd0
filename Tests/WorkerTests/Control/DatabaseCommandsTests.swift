// The worker's side of the per-database admin commands (DatabaseCommands.swift), through a real loop.
import XCTest
@testable import Worker
import Shared

final class DatabaseCommandsTests: WorkerHarnessCase {
    /// server_fast_close = 1, session mode: after RECONNECT, a server linked to a client between its
    /// transactions is closed at the janitor's next pass, and the client with it, in PgBouncer's words
    /// (FATAL 08P01 "database configuration changed"). One inside a transaction is left until the
    /// transaction ends; without the setting, the pair stays until the client leaves.
    func testServerFastCloseEndsAMarkedSessionBetweenTransactions() throws {
        try start(["pool_mode": "session", "server_fast_close": "1"])
        let a = h.login(), b = h.login()
        let sa = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, sa, "select 1")
        b.send(FE.query("begin"))
        let sb = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(sb, expect: "begin", status: "T")
        h.readUntilReady(b)
        _ = h.worker.applyDatabaseOp(.reconnect, "db")
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.map { $0.error?.message }, ["database configuration changed"])
        XCTAssertEqual(got.first?.error?.severity, "FATAL")
        XCTAssertEqual(got.first?.sqlState, SQLState.protocolViolation)
        h.waitClosed(sa)
        // b is inside a transaction: it keeps its server until the transaction ends.
        h.worker.limitsTick()
        h.settle()
        XCTAssertFalse(b.eof)
        XCTAssertFalse(sb.closed)
        h.roundTrip(b, sb, "commit")
        XCTAssertEqual(h.readUntilClosed(b).map { $0.error?.message }, ["database configuration changed"])
        h.waitClosed(sb)
    }

    func testWithoutServerFastCloseAMarkedSessionKeepsItsServer() throws {
        try start(["pool_mode": "session"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        _ = h.worker.applyDatabaseOp(.reconnect, "db")
        h.worker.limitsTick()
        h.settle()
        XCTAssertFalse(a.eof)
        XCTAssertFalse(s.closed)
        h.roundTrip(a, s, "select 2")
    }
}
