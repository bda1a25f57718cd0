// The LISTEN/NOTIFY relay (ListenRelay.swift) through a real worker loop and scripted servers: the
// client's LISTEN is held until the listening connection has the channel, notifications reach the
// client between messages (never inside one), a pooled server's own are dropped, UNLISTEN closes the
// listening connection, and its loss closes the listener with FATAL 08006.
import XCTest
@testable import Worker
import Shared

final class ListenRelayTests: WorkerHarnessCase {
    private func notification(_ channel: String, _ payload: String, pid: Int32 = 4242) -> [UInt8] {
        TestWire.message("A", TestWire.int32(pid) + TestWire.cstr(channel) + TestWire.cstr(payload))
    }

    /// a logs in, LISTENs to `chan`; returns a, its pooled server and the listening connection.
    private func listening() throws -> (Peer, FakeServer, FakeServer) {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("LISTEN chan"))
        let l = try XCTUnwrap(h.waitServers(2), "the listening connection")
        XCTAssertFalse(l === s)
        XCTAssertEqual(h.next(l)?.firstString, "/* pgswift listening connection */ LISTEN \"chan\"")
        h.settle()
        XCTAssertNil(s.nextMessage(), "the client's LISTEN waits for the listening connection's")
        l.send(BE.complete("LISTEN") + BE.ready())
        XCTAssertEqual(h.next(s)?.firstString, "LISTEN chan")
        s.send(BE.complete("LISTEN") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map(\.char), ["C", "Z"])
        // The LISTEN tag still marks the pooled server for server_reset_query.
        XCTAssertEqual(h.next(s)?.firstString, "DISCARD ALL")
        s.send(BE.complete("DISCARD ALL") + BE.ready())
        h.settle()
        return (a, s, l)
    }

    func testNotificationsGoToTheSubscriberOnceAndBetweenMessages() throws {
        let (a, s, l) = try listening()
        XCTAssertEqual(h.worker.pools[0].serverCount, 1, "the listening connection is outside the pool")
        l.send(notification("chan", "one"))
        let first = h.read(a, 1)
        XCTAssertEqual(first.first?.char, "A")
        XCTAssertEqual(first.first.map { Array($0.body.dropFirst(4)) }, TestWire.cstr("chan") + TestWire.cstr("one"))

        // The pooled server's own notification (it ran the LISTEN) is dropped: no duplicate.
        a.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s)?.firstString, "select 1")
        s.send(notification("chan", "one") + BE.row("1") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map(\.char), ["T", "D", "C", "Z"])

        // A notification while a row is half forwarded waits for the row's end.
        a.send(FE.query("select big"))
        XCTAssertEqual(h.next(s)?.firstString, "select big")
        let row = BE.dataRow([String(repeating: "x", count: 2_000)])
        s.send(BE.rowDescription(["v"]) + Array(row[0..<1_000]))
        h.settle()
        l.send(notification("chan", "two"))
        h.settle()
        s.send(Array(row[1_000...]) + BE.complete("SELECT 1") + BE.ready())
        var got = h.readUntilReady(a)
        if !got.contains(where: { $0.char == "A" }) { got += h.read(a, 1) }  // after the ReadyForQuery
        XCTAssertEqual(got.map(\.char).filter { $0 != "A" }, ["T", "D", "C", "Z"])
        XCTAssertEqual(got.filter { $0.char == "D" }.first?.body.count, row.count - 5, "the row arrived whole")
        let a2 = got.firstIndex { $0.char == "A" } ?? -1
        XCTAssertGreaterThan(a2, 1, "after the row being forwarded: \(got.map(\.char))")
        XCTAssertEqual(got.filter { $0.char == "A" }.count, 1)
    }

    func testUnlistenClosesTheListeningConnection() throws {
        let (a, s, l) = try listening()
        a.send(FE.query("UNLISTEN *"))
        XCTAssertEqual(h.next(s)?.firstString, "UNLISTEN *")
        s.send(BE.complete("UNLISTEN") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map(\.char), ["C", "Z"])
        h.waitClosed(l)
    }

    func testARolledBackListenDoesNotSubscribe() throws {
        let (a, s, l) = try listening()
        a.send(FE.query("UNLISTEN chan"))
        XCTAssertEqual(h.next(s)?.firstString, "UNLISTEN chan")
        s.send(BE.complete("UNLISTEN") + BE.ready())
        _ = h.readUntilReady(a)
        h.waitClosed(l)
        // BEGIN; LISTEN other; ROLLBACK: the listening connection is opened (the LISTEN might commit),
        // and closed again once it does not.
        a.send(FE.query("BEGIN"))
        XCTAssertEqual(h.next(s)?.firstString, "BEGIN")
        s.send(BE.complete("BEGIN") + BE.ready("T"))
        _ = h.readUntilReady(a)
        a.send(FE.query("LISTEN other"))
        let l2 = try XCTUnwrap(h.waitServers(3))
        XCTAssertEqual(h.next(l2)?.firstString, "/* pgswift listening connection */ LISTEN \"other\"")
        l2.send(BE.complete("LISTEN") + BE.ready())
        XCTAssertEqual(h.next(s)?.firstString, "LISTEN other")
        s.send(BE.complete("LISTEN") + BE.ready("T"))
        _ = h.readUntilReady(a)
        l2.send(notification("other", "inside"))
        h.settle()
        a.send(FE.query("ROLLBACK"))
        XCTAssertEqual(h.next(s)?.firstString, "ROLLBACK")
        s.send(BE.complete("ROLLBACK") + BE.ready())
        let got = h.readUntilReady(a)
        XCTAssertFalse(got.contains { $0.char == "A" }, "the rolled-back LISTEN's notification: \(got)")
        h.waitClosed(l2)
    }

    func testTheListeningConnectionsLossClosesItsListeners() throws {
        let (a, _, l) = try listening()
        l.close()
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.last?.char, "E")
        XCTAssertEqual(got.last?.sqlState, "08006")
    }

    /// psycopg's way: Parse/Bind/Execute/Sync of an unnamed statement; and a LISTEN that is the
    /// second statement of a simple Query.
    func testExtendedProtocolAndMultiStatementListen() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("", "LISTEN ext") + FE.bind("", "") + FE.execute() + FE.sync)
        let l = try XCTUnwrap(h.waitServers(2))
        XCTAssertEqual(h.next(l)?.firstString, "/* pgswift listening connection */ LISTEN \"ext\"")
        l.send(BE.complete("LISTEN") + BE.ready())
        XCTAssertEqual(h.next(s, 4).map(\.char), ["P", "B", "E", "S"])
        s.send(BE.parseComplete + BE.bindComplete + BE.complete("LISTEN") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map(\.char), ["1", "2", "C", "Z"])
        XCTAssertEqual(h.next(s)?.firstString, "DISCARD ALL")
        s.send(BE.complete("DISCARD ALL") + BE.ready())
        a.send(FE.query("BEGIN; LISTEN multi; COMMIT"))
        XCTAssertEqual(h.next(l)?.firstString, "/* pgswift listening connection */ LISTEN \"multi\"")
        l.send(BE.complete("LISTEN") + BE.ready())
        XCTAssertEqual(h.next(s)?.firstString, "BEGIN; LISTEN multi; COMMIT")
        s.send(BE.complete("BEGIN") + BE.complete("LISTEN") + BE.complete("COMMIT") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map(\.char), ["C", "C", "C", "Z"])
        l.send(notification("ext", "e") + notification("multi", "m") + notification("nobody", "n"))
        let got = h.read(a, 2)
        XCTAssertEqual(got.map { Array($0.body.dropFirst(4)) },
                       [TestWire.cstr("ext") + TestWire.cstr("e"), TestWire.cstr("multi") + TestWire.cstr("m")])
    }

    /// listen_mode = pin: the listening client keeps its server (others wait for it) and gets that
    /// server's notifications; UNLISTEN * gives the server back.
    func testListenModePinKeepsTheServerUntilUnlisten() throws {
        try start(databaseOptions: "pool_size=1", pgswift: ["listen_mode": "pin"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("LISTEN chan"))
        XCTAssertEqual(h.next(s)?.firstString, "LISTEN chan")
        s.send(BE.complete("LISTEN") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map(\.char), ["C", "Z"])
        let b = h.login()
        b.send(FE.query("select b"))
        h.settle()
        XCTAssertNil(s.nextMessage(), "a's server is pinned to a")
        XCTAssertEqual(h.servers.count, 1, "no listening connection in pin mode")
        s.send(notification("chan", "p"))
        XCTAssertEqual(h.read(a, 1).first?.char, "A")
        a.send(FE.query("UNLISTEN *"))
        XCTAssertEqual(h.next(s)?.firstString, "UNLISTEN *")
        s.send(BE.complete("UNLISTEN") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map(\.char), ["C", "Z"])
        XCTAssertEqual(h.next(s)?.firstString, "DISCARD ALL")
        s.send(BE.complete("DISCARD ALL") + BE.ready())
        h.answerQuery(s, expect: "select b")
        XCTAssertEqual(h.readUntilReady(b).last?.char, "Z")
    }

    func testListenModeOffForwardsAndOpensNothing() throws {
        try start(databaseOptions: "pool_size=1", pgswift: ["listen_mode": "off"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("LISTEN chan"))
        XCTAssertEqual(h.next(s)?.firstString, "LISTEN chan")
        s.send(BE.complete("LISTEN") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map(\.char), ["C", "Z"])
        h.settle()
        XCTAssertEqual(h.servers.count, 1, "no listening connection")
    }
}
