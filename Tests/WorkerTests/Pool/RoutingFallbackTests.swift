// standby_reads_fallback = wait | error (RoutingFallback.swift) through a real worker loop: the
// harness's backend plays the primary, RoutingLoopTests' second listener the standby.
import XCTest
@testable import Worker
import Shared

extension RoutingLoopTests {
    private var downStandby: BackendFlags { [.known, .roleKnown, .inRecovery] }

    private func standbyDown() {
        h.worker.applyBackendState(host: "127.0.0.1", port: standbyPort, flags: downStandby.rawValue, addresses: [])
    }

    private func standbyUp() {
        h.worker.applyBackendState(host: "127.0.0.1", port: standbyPort, flags: downStandby.union(.up).rawValue, addresses: [])
    }

    /// What the client got, up to `readies` ReadyForQuery messages.
    private func answers(_ c: Peer, readies: Int = 1, file: StaticString = #filePath, line: UInt = #line) -> [Msg] {
        var msgs: [Msg] = []
        wait("\(readies) ReadyForQuery", file: file, line: line) {
            while let m = c.reader.next() { msgs.append(m) }
            return msgs.filter { $0.char == "Z" }.count >= readies
        }
        return msgs
    }

    /// Any message a server (primary or standby) has received, taken.
    private func serverGotSomething() -> Bool {
        var got = false
        for s in h.servers + standbys where s.loggedIn { while s.nextMessage() != nil { got = true } }
        return got
    }

    private func pool() throws -> Int {
        try XCTUnwrap(h.worker.pools.indices.first { h.worker.pools[$0].database == "rdb" })
    }

    /// `error`: a read with no usable standby gets 57P03 at once, as a simple Query (ErrorResponse and
    /// ReadyForQuery) or as an extended-protocol batch (ErrorResponse, its messages skipped to the Sync,
    /// ReadyForQuery), pipelined with what follows; the client stays connected, its writes and hinted
    /// reads still go to the primary, and reads go to the standby again once it is back.
    func testFallbackErrorRefusesReadsAndKeepsTheClient() throws {
        try startRouted("read_after_write=none standby_reads_fallback=error")
        let c = h.login(database: "rdb")
        XCTAssertEqual(run(c, "select 1"), true)
        standbyDown()
        c.send(FE.query("select 1"))
        var got = answers(c)
        XCTAssertEqual(got.map { $0.char }, ["E", "Z"], "\(got)")
        XCTAssertEqual(got.first?.sqlState, "57P03")
        XCTAssertEqual(got.first?.error?.severity, "ERROR")
        XCTAssertTrue(got.first?.error?.message.contains("no standby is usable") == true, "\(got)")
        XCTAssertEqual(got.last?.status, "I")
        XCTAssertFalse(serverGotSomething(), "a refused read reaches no server")
        XCTAssertEqual(run(c, "insert into t values (1)"), false, "a write still works")
        XCTAssertEqual(run(c, "/* pgswift:primary */ select 1"), false, "a read sent to the primary runs")
        // Extended protocol, with a large Bind skipped whole, and a write pipelined behind it.
        let big = String(repeating: "x", count: 200_000)
        c.send(FE.parse("", "select $1::text") + FE.bind("", "", [big]) + FE.execute() + FE.sync)
        got = answers(c)
        XCTAssertEqual(got.map { $0.char }, ["E", "Z"], "\(got)")
        XCTAssertEqual(got.first?.sqlState, "57P03")
        XCTAssertEqual(runExtended(c, FE.parse("", "insert into t values ($1)") + FE.bind("", "", ["1"]) + FE.execute() + FE.sync),
                       false, "the next batch runs")
        c.send(FE.query("select 2") + FE.query("select 3"))
        got = answers(c, readies: 2)
        XCTAssertEqual(got.map { $0.char }, ["E", "Z", "E", "Z"], "\(got)")
        XCTAssertEqual(h.worker.routeStats(try pool())[0].fallbacks, 0, "nothing fell back to the primary")
        standbyUp()
        XCTAssertEqual(run(c, "select 1"), true, "the standby is back")
        XCTAssertFalse(c.eof)
    }

    /// `error`: a read already waiting for a standby connection when the last standby goes down is
    /// refused then, and leaves the queue.
    func testFallbackErrorRefusesAWaitingRead() throws {
        try startRouted("read_after_write=none standby_reads_fallback=error")
        let c = h.login(database: "rdb")
        c.send(FE.query("select 1"))
        // The standby's connection is not answered (h.step, not step): the read waits for it.
        let w = h.worker
        h.waitUntil("the read waits") { (0..<Int32(w.clients.capacity)).contains { w.clients[$0].state == .waitServer } }
        standbyDown()
        let got = answers(c)
        XCTAssertEqual(got.map { $0.char }, ["E", "Z"], "\(got)")
        XCTAssertEqual(got.first?.sqlState, "57P03")
        XCTAssertFalse((0..<Int32(w.clients.capacity)).contains { w.clients[$0].state == .waitServer })
        XCTAssertEqual(run(c, "insert into t values (1)"), false)
    }

    /// `wait`: a read with no usable standby waits (no server gets it, no error) while other clients'
    /// writes go on, and runs on the standby once it is back; nothing fell back to the primary.
    func testFallbackWaitHoldsAReadUntilAStandbyIsBack() throws {
        try startRouted("read_after_write=none standby_reads_fallback=wait")
        let c = h.login(database: "rdb"), other = h.login(database: "rdb")
        XCTAssertEqual(run(c, "select 1"), true)
        standbyDown()
        // Lagging is unusable too, even with the standby's connection open.
        h.worker.applyBackendState(host: "127.0.0.1", port: standbyPort,
                                   flags: downStandby.union([.up, .lagging]).rawValue, addresses: [])
        c.send(FE.query("select 42"))
        let deadline = Clock.monotonicNanos() + 300_000_000
        while Clock.monotonicNanos() < deadline { step() }
        XCTAssertNil(c.reader.next(), "the read waits")
        XCTAssertEqual(run(other, "insert into t values (1)"), false, "a write goes on meanwhile")
        XCTAssertEqual(run(other, "select 1 for update"), false)
        XCTAssertNil(c.reader.next(), "the read still waits")
        standbyUp()
        var standby: FakeServer? = nil
        wait("the read on the standby") {
            for s in standbys where s.loggedIn {
                if let m = s.nextMessage(), m.char == "Q" { XCTAssertEqual(m.firstString, "select 42"); standby = s }
            }
            for s in h.servers where s.loggedIn { if let m = s.nextMessage() { XCTFail("the primary got \(m)") } }
            return standby != nil
        }
        standby?.send(BE.complete("SELECT 1") + BE.ready("I"))
        XCTAssertEqual(answers(c).map { $0.char }, ["C", "Z"])
        XCTAssertEqual(h.worker.routeStats(try pool())[0].fallbacks, 0)
    }

    /// `wait`: a read that waits past query_wait_timeout gets PgBouncer's error and is closed, as any
    /// client waiting that long. The wait is aged by moving `stateSince` back.
    func testFallbackWaitEndsAtQueryWaitTimeout() throws {
        try startRouted("read_after_write=none standby_reads_fallback=wait query_wait_timeout=5")
        let c = h.login(database: "rdb")
        XCTAssertEqual(run(c, "select 1"), true)
        standbyDown()
        c.send(FE.query("select 1"))
        let w = h.worker
        h.waitUntil("the read waits") { (0..<Int32(w.clients.capacity)).contains { w.clients[$0].state == .waitServer } }
        let ci = try XCTUnwrap((0..<Int32(w.clients.capacity)).first { w.clients[$0].state == .waitServer })
        w.janitor()
        h.settle()
        XCTAssertNil(c.reader.next(), "not before query_wait_timeout")
        w.clients[ci].stateSince = w.now - 6_000_000_000
        w.janitor()
        let got = h.readUntilClosed(c)
        let e = try XCTUnwrap(got.first { $0.char == "E" }, "\(got)")
        XCTAssertEqual(e.error?.message, "query_wait_timeout")
        XCTAssertEqual(e.sqlState, "08P01")
    }
}
