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

    // MARK: Peering (peer_id > 0)

    /// With peering the key has PgBouncer's layout: one process id for every client of the worker
    /// (peer id and slot), TTL bits set. The secret finds the client, also in a key a peer forwarded
    /// (TTL lowered), and the cancel goes to that client's server, not another's.
    func testPeeringKeyNamesThePeerAndTheSecretFindsTheClient() throws {
        try start(peerID: 0x0102)
        let (a, pidA, keyA) = loginWithKey()
        let (b, pidB, keyB) = loginWithKey()
        XCTAssertEqual(pidA, PeerCancelKey.processID(slot: 0, peer: 0x0102))
        XCTAssertEqual(pidB, pidA, "every client of a worker has the same process id")
        XCTAssertEqual(keyA & 3, 3)
        XCTAssertEqual(keyB & 3, 3)
        let sa = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select pg_sleep(100)"))
        _ = h.next(sa)
        b.send(FE.query("select pg_sleep(101)"))
        let sb = try XCTUnwrap(h.waitServers(2))
        XCTAssertFalse(sa === sb)
        _ = h.next(sb)
        let c = h.connect()
        c.send(FE.cancel(pid: pidB, key: keyB - 2))  // forwarded twice by peers
        XCTAssertEqual(h.readUntilClosed(c), [])
        h.waitUntil("the cancel connection") { !cancelConnections.isEmpty }
        XCTAssertEqual(cancelConnections.count, 1)
        XCTAssertEqual(cancelConnections.first?.cancel?.pid, sb.backendPID)
        XCTAssertEqual(cancelConnections.first?.cancel?.key, sb.backendKey)
        // A secret nobody has cancels nothing.
        let d = h.connect()
        d.send(FE.cancel(pid: pidA, key: keyA ^ 0x100))
        XCTAssertEqual(h.readUntilClosed(d), [])
        h.settle()
        XCTAssertEqual(cancelConnections.count, 1)
    }

    /// A key with another peer's id goes to the supervisor with one forward less (PgBouncer's TTL);
    /// one whose TTL is spent, or whose peer is not in [peers], goes nowhere.
    func testCancelForAnotherPeerGoesToTheSupervisorWithOneForwardLess() throws {
        try start(peerID: 1, peers: ["1 = host=/tmp", "2 = host=127.0.0.1 port=6999"])
        let (control, ours) = try Posix.socketPair()
        defer { Posix.close(control) }
        h.worker.controlFD = ours
        defer { h.worker.controlFD = -1; Posix.close(ours) }
        func received() -> [ControlMessage] {
            var out: [ControlMessage] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let r = buf.withUnsafeMutableBytes { try? Posix.recv(control, $0.baseAddress!, $0.count) }
                guard case .processed(let n)? = r, n > 0 else { return out }
                if let m = buf.withUnsafeBytes({ try? ControlMessage.decode(UnsafeRawBufferPointer(rebasing: $0[..<n])) }) {
                    out.append(m)
                }
            }
        }
        try Posix.setNonBlocking(control)
        let peer2 = PeerCancelKey.processID(slot: 5, peer: 2)
        for key: UInt32 in [0xABCD_0003, 0xABCD_0000] {  // TTL 3, then TTL spent
            let c = h.connect()
            c.send(FE.cancel(pid: peer2, key: key))
            XCTAssertEqual(h.readUntilClosed(c), [])
        }
        let unknown = h.connect()
        unknown.send(FE.cancel(pid: PeerCancelKey.processID(slot: 0, peer: 3), key: 0xABCD_0003))
        XCTAssertEqual(h.readUntilClosed(unknown), [])
        h.settle()
        XCTAssertEqual(received(), [.peerCancel(peerID: 2, processID: peer2, secretKey: 0xABCD_0002)])
        XCTAssertTrue(cancelConnections.isEmpty)
    }
}
