// Cancel requests (Cancel.swift) through a real worker loop: the client's key is ours, the server's
// key goes to PostgreSQL on a new connection, and a canceled server is lent to nobody meanwhile.
import XCTest
@testable import Worker
import Shared

final class CancelTests: WorkerHarnessCase {
    /// A logged-in client and the BackendKeyData pgswift gave it.
    private func loginWithKey(file: StaticString = #filePath, line: UInt = #line) -> (Peer, pid: Int32, key: UInt32) {
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let msgs = h.readUntilReady(c, file: file, line: line)
        let k = msgs.first { $0.char == "K" }?.body ?? [0, 0, 0, 0, 0, 0, 0, 0]
        XCTAssertEqual(k.count, 8, file: file, line: line)
        return (c, TestWire.readInt32(k, 0), UInt32(bitPattern: TestWire.readInt32(k, 4)))
    }

    private var cancelConnections: [FakeServer] { h.servers.filter { $0.cancel != nil } }

    func testClientKeyIsPgswiftsOwnNotTheServers() throws {
        try start()
        let (_, pid, key) = loginWithKey()
        let s = try XCTUnwrap(h.waitServers(1))
        XCTAssertNotEqual(pid, s.backendPID)
        XCTAssertNotEqual(key, s.backendKey)
    }

    func testCancelReachesTheServerWithItsOwnKey() throws {
        try start()
        let (a, pid, key) = loginWithKey()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select pg_sleep(100)"))
        _ = h.next(s)
        let c = h.connect()
        c.send(FE.cancel(pid: pid, key: key))
        XCTAssertEqual(h.readUntilClosed(c), [], "a CancelRequest gets no answer")
        h.waitUntil("the cancel connection") { !cancelConnections.isEmpty }
        XCTAssertEqual(cancelConnections.first?.cancel?.pid, s.backendPID)
        XCTAssertEqual(cancelConnections.first?.cancel?.key, s.backendKey)
        s.send(BE.error("57014", "canceling statement due to user request") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map { $0.sqlState ?? "Z" }, ["57014", "Z"])
    }

    func testCancelWithAWrongKeyCancelsNothing() throws {
        try start()
        let (a, pid, key) = loginWithKey()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select pg_sleep(100)"))
        _ = h.next(s)
        let c = h.connect()
        c.send(FE.cancel(pid: pid, key: key ^ 1))
        XCTAssertEqual(h.readUntilClosed(c), [])
        h.settle()
        XCTAssertTrue(cancelConnections.isEmpty)
    }

    func testCancelForAnIdleClientCancelsNothing() throws {
        try start()
        let (a, pid, key) = loginWithKey()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        let c = h.connect()
        c.send(FE.cancel(pid: pid, key: key))
        XCTAssertEqual(h.readUntilClosed(c), [])
        h.settle()
        XCTAssertTrue(cancelConnections.isEmpty, "the server may run someone else's query by now")
    }

    func testACanceledServerIsLentToNobodyUntilTheCancelIsDone() throws {
        try start(databaseOptions: "pool_size=1")
        let (a, pid, key) = loginWithKey()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select pg_sleep(100)"))
        _ = h.next(s)
        h.connect().send(FE.cancel(pid: pid, key: key))
        h.waitUntil("the cancel connection") { !cancelConnections.isEmpty }
        // The query ends on its own before PostgreSQL acts on the cancel.
        s.send(BE.row("") + BE.ready())
        h.readUntilReady(a)
        let b = h.login()
        b.send(FE.query("select 2"))
        h.settle()
        XCTAssertNil(s.nextMessage(), "the cancel could still hit b's query")
        cancelConnections.first?.close()  // PostgreSQL closes a cancel connection once it signalled
        h.answerQuery(s, expect: "select 2")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
    }
}
