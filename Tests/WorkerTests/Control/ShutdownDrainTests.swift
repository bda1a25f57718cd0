// Stopping the service as PgBouncer does (ShutdownDrain.swift): WAIT_FOR_SERVERS fails the clients
// that need a server, a login while stopping is refused, linked clients finish.
import XCTest
@testable import Worker
import Shared

final class ShutdownDrainTests: WorkerHarnessCase {
    /// WAIT_FOR_SERVERS (`safe`): a queued client gets PgBouncer's FATAL 08P01 `server shutting down`
    /// at once, and so does an idle client as soon as its next transaction needs a server; a client
    /// inside its transaction finishes it, and the worker stops once no server is linked.
    func testSafeStopFailsClientsThatNeedAServerAndLetsTransactionsFinish() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let b = h.login()
        let c = h.login()
        a.send(FE.query("begin"))
        _ = h.answerQuery(s, expect: "begin", status: "T")
        XCTAssertEqual(h.readUntilReady(a).last?.status, "T")
        b.send(FE.query("select 1"))
        h.waitUntil("b queued behind a") { self.h.worker.pools.indices.contains { self.h.worker.pools[$0].waiting.count == 1 } }

        h.worker.beginServiceShutdown(.safe)
        let queued = h.readUntilClosed(b)
        XCTAssertEqual(queued.map { $0.sqlState }, [SQLState.protocolViolation], "\(queued)")
        XCTAssertEqual(queued.first?.error?.message, "server shutting down")
        c.send(FE.query("select 2"))
        let idle = h.readUntilClosed(c)
        XCTAssertEqual(idle.map { $0.sqlState }, [SQLState.protocolViolation], "\(idle)")
        XCTAssertEqual(idle.first?.error?.message, "server shutting down")

        a.send(FE.query("select 3"))
        _ = h.answerQuery(s, expect: "select 3", status: "T")
        XCTAssertEqual(h.readUntilReady(a).last?.status, "T", "a's transaction goes on")
        XCTAssertTrue(h.worker.hot.pointee.running)
        a.send(FE.query("commit"))
        _ = h.answerQuery(s, expect: "commit", status: "I")
        // No supervisor here (a lost one): the worker decides alone. With one, the supervisor does,
        // for the whole service (Supervisor/Service/ServiceStop.swift; EndToEndTests/ShutdownE2ETests).
        h.waitUntil("the worker to stop once no server is linked") { !self.h.worker.hot.pointee.running }
        let last = h.readUntilClosed(a)
        XCTAssertEqual(last.last?.error?.message, "database removed", "what is left hears PgBouncer's words: \(last)")
    }

    /// A second stop signal (immediate) closes the clients still in with `database removed`, what
    /// PgBouncer's cleanup tells them as it exits; a rolling restart's drain says pgswift's own words.
    func testImmediateStopSaysDatabaseRemoved() throws {
        try start()
        let a = h.login()
        h.worker.beginServiceShutdown(.graceful)
        XCTAssertTrue(h.worker.hot.pointee.running)
        h.worker.beginServiceShutdown(.immediate)
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.map { $0.error?.message }, ["database removed"], "\(got)")
        XCTAssertEqual(got.first?.sqlState, SQLState.adminShutdown)
        XCTAssertEqual(h.worker.exitNotice().reason, "database removed")

        try start()
        XCTAssertEqual(h.worker.exitNotice().reason, "pgswift is shutting down", "not a stopping service")
    }

    /// While the service stops (graceful here), a login to a database gets PgBouncer's `pooler is
    /// shutting down` once authenticated; clients already in are served as before.
    func testLoginWhileStoppingIsRefusedAndClientsInAreServed() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.worker.beginServiceShutdown(.graceful)
        let late = h.connect()
        late.send(FE.startup(user: "u", database: "db"))
        let got = h.readUntilClosed(late)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.protocolViolation], "\(got)")
        XCTAssertEqual(got.first?.error?.message, "pooler is shutting down")
        XCTAssertEqual(h.roundTrip(a, s, "select 1").last?.status, "I", "a client already in is served")
        XCTAssertTrue(h.worker.hot.pointee.running, "a graceful stop waits for the clients")
    }
}
