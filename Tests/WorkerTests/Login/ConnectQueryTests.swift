// connect_query (ConnectQuery.swift) through a real worker loop: sent once after a server's login,
// answered before any client is served; errors logged and ignored; a transaction left open closes it.
import XCTest
@testable import Worker
import Shared

final class ConnectQueryTests: WorkerHarnessCase {
    /// A client that logged in before the pool's first server finished, and that server.
    private func loginWaitingForTheServer() throws -> (Peer, FakeServer) {
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let s = try XCTUnwrap(h.waitServers(1))
        return (c, s)
    }

    func testQueryRunsAfterLoginAndBeforeTheServerServesAnyone() throws {
        try start(databaseOptions: "connect_query='SET application_name = ''fromcq''; SELECT 1'")
        let (c, s) = try loginWaitingForTheServer()
        let m = h.next(s)
        XCTAssertEqual(m?.char, "Q")
        XCTAssertEqual(m?.firstString, "SET application_name = 'fromcq'; SELECT 1")
        h.settle()
        XCTAssertNil(c.reader.next(), "the client was let in before connect_query finished")

        s.send(BE.complete("SET") + BE.parameterStatus("application_name", "fromcq") + BE.row("1") + BE.ready("I"))
        let login = h.readUntilReady(c)
        XCTAssertEqual(login.first?.char, "R", "\(login)")
        XCTAssertTrue(login.contains { $0.char == "S" && $0.strings == ["application_name", "fromcq"] },
                      "a parameter connect_query set is the pool's welcome value: \(login)")
        XCTAssertFalse(login.contains { $0.char == "D" || $0.char == "C" }, "connect_query's rows reached the client: \(login)")

        let answer = h.roundTrip(c, s, "select 2")
        XCTAssertEqual(answer.last?.status, "I", "\(answer)")
        let again = h.roundTrip(c, s, "select 3")
        XCTAssertEqual(again.last?.status, "I", "connect_query runs once per server, not before each query: \(again)")
    }

    /// As PgBouncer: an error of connect_query is logged and otherwise ignored; the server serves.
    func testErrorIsLoggedAndTheServerStillServes() throws {
        try start(databaseOptions: "connect_query='select broken'")
        let (c, s) = try loginWaitingForTheServer()
        XCTAssertEqual(h.next(s)?.firstString, "select broken")
        s.send(BE.error("42703", "column \"broken\" does not exist") + BE.ready("I"))
        let login = h.readUntilReady(c)
        XCTAssertEqual(login.first?.char, "R", "\(login)")
        XCTAssertFalse(login.contains { $0.char == "E" }, "the error reached the client: \(login)")
        XCTAssertEqual(h.roundTrip(c, s, "select 2").last?.status, "I")
        XCTAssertFalse(s.closed)
    }

    /// A server connect_query leaves inside a transaction is never handed to a client: it is closed,
    /// and the clients waiting for the pool's login get the reason.
    func testServerLeftInsideATransactionIsClosed() throws {
        try start(databaseOptions: "connect_query=begin")
        let (c, s) = try loginWaitingForTheServer()
        XCTAssertEqual(h.next(s)?.firstString, "begin")
        s.send(BE.complete("BEGIN") + BE.ready("T"))
        let got = h.readUntilClosed(c)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.invalidTransactionState], "\(got)")
        XCTAssertEqual(got.first?.error?.message, "connect_query left the server connection inside a transaction")
        h.waitClosed(s)
    }

    func testWithoutConnectQueryNothingIsSent() throws {
        try start()
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        XCTAssertEqual(h.roundTrip(c, s, "select 1").last?.status, "I")
    }
}
