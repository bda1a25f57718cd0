// Rolling-restart drain (Handoff.swift) without a supervisor: which clients move to the successor,
// and when, seen on the handoff socket and on the wire.
import XCTest
import Glibc
@testable import Worker
import Shared

final class HandoffTests: WorkerHarnessCase {
    private var pair: (Int32, Int32) = (-1, -1)
    private var received: [Int32] = []

    override func tearDown() {
        super.tearDown()
        for fd in [pair.0, pair.1] + received where fd >= 0 { Glibc.close(fd) }
    }

    /// Starts draining the harness's worker with a handoff socket whose other end the test reads.
    private func drain() throws {
        pair = try Posix.socketPair()
        h.worker.beginDrain(handoffFD: pair.0)
        pair.0 = -1  // the worker owns it now
    }

    /// A client handed over, if one arrived on the handoff socket.
    private func handedOver() -> HandoffClient? {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: HandoffClient.maximumSize + 1, alignment: 16)
        defer { buf.deallocate() }
        var fds: [Int32] = []
        guard case .processed(let n)? = try? Posix.receiveWithFDs(pair.1, buf, HandoffClient.maximumSize + 1, fds: &fds),
              n > 0 else { return nil }
        received += fds
        XCTAssertEqual(fds.count, 1, "the client's socket travels with its state")
        return try? HandoffClient.decode(UnsafeRawBufferPointer(start: buf, count: n))
    }

    private func loginWithKey(_ params: [(String, String)] = []) -> (Peer, pid: Int32, key: UInt32) {
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db", params))
        let k = h.readUntilReady(c).first { $0.char == "K" }?.body ?? [UInt8](repeating: 0, count: 8)
        return (c, TestWire.readInt32(k, 0), UInt32(bitPattern: TestWire.readInt32(k, 4)))
    }

    func testIdleTransactionModeClientMovesWithItsKeyAndParameters() throws {
        try start()
        let (a, pid, key) = loginWithKey([("application_name", "moving")])
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s, 2).map { $0.firstString }, ["SET application_name='moving';", "select 1"])
        s.send(BE.complete("SET") + BE.ready() + BE.row("1") + BE.ready())
        h.readUntilReady(a)
        try drain()
        var moved: HandoffClient? = nil
        h.waitUntil("the client on the handoff socket") { moved = handedOver(); return moved != nil }
        XCTAssertEqual(moved?.user, "u")
        XCTAssertEqual(moved?.database, "db")
        XCTAssertEqual(moved?.processID, pid, "cancel keys survive the move")
        XCTAssertEqual(moved?.secretKey, key)
        XCTAssertEqual(moved?.applicationName, "moving")
        h.waitClosed(s)  // nobody is left to use it: the draining worker closes its idle servers
    }

    func testClientInsideATransactionMovesOnlyWhenItEnds() throws {
        try start()
        let (a, pid, _) = loginWithKey()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")
        try drain()
        h.settle()
        XCTAssertNil(handedOver(), "a client inside a transaction stays")
        h.roundTrip(a, s, "insert", status: "T")
        XCTAssertNil(handedOver())
        h.roundTrip(a, s, "commit")
        var moved: HandoffClient? = nil
        h.waitUntil("the client on the handoff socket") { moved = handedOver(); return moved != nil }
        XCTAssertEqual(moved?.processID, pid)
    }

    /// A successor that did not announce `WorkerFeatures.pairMoves` (an older build: `drain` without its
    /// features) gets no client with a server: the session stays here (PairHandoffTests for the rest).
    func testSessionModeClientsStay() throws {
        try start(["pool_mode": "session"])
        let (a, _, _) = loginWithKey()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        try drain()
        h.settle()
        XCTAssertNil(handedOver())
        h.roundTrip(a, s, "select 2")  // still served here, on its own server
    }

    /// A client that carries a SET and an SQL PREPARE (issue 19) stays when the successor did not
    /// announce `WorkerFeatures.sessionMoves`, and moves with both when it did.
    func testCarriedSessionStateMovesOnlyToASuccessorThatReadsIt() throws {
        for features in [WorkerFeatures.pairMoves, WorkerFeatures.all] {
            try start()
            let (a, _, _) = loginWithKey()
            let s = try XCTUnwrap(h.waitServers(1))
            a.send(FE.query("SET statement_timeout = '12s'; PREPARE s AS select 42"))
            _ = h.next(s)
            s.send(BE.complete("SET") + BE.complete("PREPARE") + BE.ready())
            h.readUntilReady(a)
            if pair.1 >= 0 { Glibc.close(pair.1) }  // the first round's
            pair = try Posix.socketPair()
            h.worker.beginDrain(handoffFD: pair.0, successorFeatures: features)
            pair.0 = -1
            if features & WorkerFeatures.sessionMoves == 0 {
                h.settle()
                XCTAssertNil(handedOver(), "an older successor would lose the settings: the client stays")
                h.roundTrip(a, s, "select 1")
                continue
            }
            var moved: HandoffClient? = nil
            h.waitUntil("the client on the handoff socket") { moved = handedOver(); return moved != nil }
            XCTAssertEqual(moved?.settings.map(\.set), ["SET statement_timeout TO '12s'"])
            XCTAssertEqual(moved?.sqlPrepared, [HandoffParameter(name: "s", value: "PREPARE s AS select 42")])
        }
    }

    /// The successor replays an adopted client's carried state on its own server at the first link.
    func testSuccessorReplaysTheAdoptedClientsSettings() throws {
        try start()
        let (a, _, _) = loginWithKey()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("SET statement_timeout = '12s'"))
        _ = h.next(s0)
        s0.send(BE.complete("SET") + BE.ready())
        h.readUntilReady(a)
        let successor = try h.addWorker(slot: 0)
        pair = try Posix.socketPair()
        try successor.registerHandoffInput(pair.1)
        pair.1 = -1
        h.worker.beginDrain(handoffFD: pair.0, successorFeatures: WorkerFeatures.all)
        pair.0 = -1
        h.waitClosed(s0)
        a.send(FE.query("show statement_timeout"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        XCTAssertEqual(h.next(s1)?.firstString, "SET statement_timeout TO '12s';", "replayed before the client's query")
        s1.send(BE.complete("SET") + BE.ready())
        h.answerQuery(s1, expect: "show statement_timeout")
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"], "the replay's answers were swallowed")
    }

    func testSuccessorAdoptsTheClientAndServesItsNextQuery() throws {
        try start()
        let (a, pid, key) = loginWithKey()
        let s0 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s0, "select 1")
        let successor = try h.addWorker(slot: 0)
        pair = try Posix.socketPair()
        try successor.registerHandoffInput(pair.1)
        pair.1 = -1
        h.worker.beginDrain(handoffFD: pair.0)
        pair.0 = -1
        h.waitClosed(s0)
        a.send(FE.query("select 2"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select 2")
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"])
        // The key it got from the old worker cancels its query on the successor.
        a.send(FE.query("select pg_sleep(100)"))
        _ = h.next(s1)
        h.connect(to: successor).send(FE.cancel(pid: pid, key: key))
        h.waitUntil("a cancel connection") { h.servers.contains { $0.cancel != nil } }
        XCTAssertEqual(h.servers.first { $0.cancel != nil }?.cancel?.pid, s1.backendPID)
    }
}
