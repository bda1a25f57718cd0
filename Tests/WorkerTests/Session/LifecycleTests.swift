// Connection endings (Lifecycle.swift) through a real worker loop: servers that die or speak while
// idle, clients that hang up in each state, shutdown modes.
import XCTest
@testable import Worker
import Shared

final class LifecycleTests: WorkerHarnessCase {
    func testServerDyingWhileIdleIsReplacedForTheNextQuery() throws {
        try start()
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s0, "select 1")
        s0.close()
        h.settle()
        a.send(FE.query("select 2"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select 2")
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"], "the client never noticed")
    }

    func testNoticeFromAnIdleServerIsDroppedAndTheServerKept() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        s.send(BE.notice("checkpoint starting"))
        h.settle()
        XCTAssertFalse(s.closed)
        XCTAssertEqual(h.roundTrip(a, s, "select 2").map { $0.char }, ["T", "D", "C", "Z"], "no stray notice")
        XCTAssertEqual(h.servers.count, 1)
    }

    func testErrorFromAnIdleServerClosesIt() throws {
        try start()
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s0, "select 1")
        s0.send(BE.error("57P01", "terminating connection due to administrator command", severity: "FATAL"))
        h.waitClosed(s0)
        a.send(FE.query("select 2"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select 2")
        XCTAssertEqual(h.readUntilReady(a).first?.char, "T", "the idle server's error never reached a client")
    }

    func testClientHangingUpInsideATransactionRollsBackAndKeepsTheServer() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")
        a.close()
        let m = h.next(s)
        XCTAssertEqual(m?.firstString, "ROLLBACK")
        s.send(BE.complete("ROLLBACK") + BE.ready("I"))
        let b = h.login()
        h.roundTrip(b, s, "select 2")
        XCTAssertEqual(h.servers.count, 1, "a clean server goes back to the pool")
    }

    func testClientHangingUpWhileAQueryRunsCancelsItAndClosesTheServer() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select pg_sleep(100)"))
        _ = h.next(s)
        a.close()
        h.waitUntil("a cancel connection") { h.servers.contains { $0.cancel != nil } }
        let cancel = h.servers.first { $0.cancel != nil }?.cancel
        XCTAssertEqual(cancel?.pid, s.backendPID)
        XCTAssertEqual(cancel?.key, s.backendKey)
        h.waitClosed(s)
        let b = h.login()
        b.send(FE.query("select 2"))
        let (s1, m) = try XCTUnwrap(h.nextOnAnyServer())
        XCTAssertFalse(s1 === s)
        XCTAssertEqual(m.firstString, "select 2")
    }

    func testClientHalfClosingAfterItsQueryCancelsIt() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select pg_sleep(100)"))
        a.shutdownWrite()
        _ = h.next(s)
        h.waitUntil("a cancel connection for that query") { h.servers.contains { $0.cancel?.pid == s.backendPID } }
        h.waitClosed(s)
    }

    func testIdleClientHangingUpLeavesTheServerAlone() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        a.close()
        h.settle()
        XCTAssertNil(s.nextMessage())
        XCTAssertFalse(s.closed)
        let b = h.login()
        h.roundTrip(b, s, "select 2")
    }

    func testClientLeavingBeforeTheFirstServerLoginLeavesAnIdleServer() throws {
        try start()
        var pending: [FakeServer] = []
        h.onStartup = { pending.append($0) }
        let a = h.connect()
        a.send(FE.startup(user: "u", database: "db"))
        h.waitUntil("the first server login") { !pending.isEmpty }
        a.close()
        h.settle(turns: 5)
        pending[0].answerLogin(welcome: h.welcome)
        h.settle(turns: 5)
        XCTAssertFalse(pending[0].closed, "the server logged in for nobody stays in the pool")
        h.onStartup = nil
        let b = h.login()
        h.roundTrip(b, pending[0], "select 1")
        XCTAssertEqual(h.servers.count, 1)
    }

    /// A client waiting for its pool's first server login (`.waitWelcome`) that closes its socket leaves
    /// at once (its pool place and client count go), not at client_login_timeout.
    func testClientHangingUpWhileThePoolsFirstServerLogsInLeavesAtOnce() throws {
        try start()
        var pending: [FakeServer] = []
        h.onStartup = { pending.append($0) }
        let a = h.connect(tcp: true)  // TCP: a close is a FIN (RDHUP), not a hang-up
        a.send(FE.startup(user: "u", database: "db"))
        h.waitUntil("the first server login") { !pending.isEmpty }
        let p = Int(h.worker.clients[0].pool)
        XCTAssertEqual(h.worker.clients[0].state, .waitWelcome)
        XCTAssertEqual(h.worker.pools[p].clientCount, 1)
        a.close()
        h.waitUntil("the worker to let the client go", timeout: 10) { h.worker.pools[p].clientCount == 0 }
        XCTAssertEqual(h.worker.clients[0].state, .free)
    }

    func testImmediateShutdownClosesClientsWithAnError() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        h.worker.beginShutdown(.immediate)
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.adminShutdown], "\(got)")
        h.waitClosed(s)
    }

    func testSafeShutdownLetsTheOpenTransactionFinish() throws {
        try start()
        let a = h.login(), b = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")
        h.worker.beginShutdown(.safe)
        h.settle(turns: 5)
        XCTAssertFalse(a.eof, "a transaction in progress is not cut")
        h.roundTrip(a, s, "commit")
        // No server is linked any more: the worker ends and closes everyone.
        XCTAssertEqual(h.readUntilClosed(b).map { $0.sqlState }, [SQLState.adminShutdown])
        h.waitClosed(s)
    }

    func testGracefulShutdownServesClientsUntilTheyLeave() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.worker.beginShutdown(.graceful)
        h.roundTrip(a, s, "select 1")
        h.roundTrip(a, s, "select 2")
        XCTAssertTrue(h.worker.hot.pointee.running)
        a.send(FE.terminate)
        h.waitUntil("the worker to stop once its last client left") { !h.worker.hot.pointee.running }
        h.waitClosed(s)
    }
}
