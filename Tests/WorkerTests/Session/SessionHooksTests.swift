// The carried session state on the data path (SessionHooks.swift) through a real worker loop: SQL
// prepared statements replayed on a server that lacks them, another client's dropped at link, and a
// pinned client kept on its server.
import XCTest
@testable import Worker
import Shared

final class SessionHooksTests: WorkerHarnessCase {
    func testPrepareIsReplayedOnAnotherServerAndHiddenFromOtherClients() throws {
        try start(databaseOptions: "pool_size=2")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("PREPARE s AS select 1"))
        XCTAssertEqual(h.next(s0)?.firstString, "PREPARE s AS select 1")
        s0.send(BE.complete("PREPARE") + BE.ready("I"))
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["C", "Z"])
        // b gets s0: a's statement is dropped there first, and no reset was needed.
        let b = h.login()
        b.send(FE.query("begin"))
        XCTAssertEqual(h.next(s0)?.firstString, "DEALLOCATE \"s\";")
        s0.send(BE.complete("DEALLOCATE") + BE.ready("I"))
        h.answerQuery(s0, expect: "begin", status: "T")
        _ = h.readUntilReady(b)
        // a's EXECUTE goes to a new server, where its PREPARE is replayed first.
        a.send(FE.query("EXECUTE s"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        XCTAssertEqual(h.next(s1)?.firstString, "PREPARE s AS select 1;")
        s1.send(BE.complete("PREPARE") + BE.ready("I"))
        h.answerQuery(s1, expect: "EXECUTE s")
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"], "the replay's answers were swallowed")
        // Once there, not again.
        h.roundTrip(a, s1, "EXECUTE s")
    }

    /// A client runs `sql` (answered with `tag`) on its first server, then another client needs one:
    /// the first keeps its server (no reset after its transaction), the other gets a second one.
    private func pinningStatement(_ sql: String, tag: String) throws -> (Peer, FakeServer) {
        try start(databaseOptions: "pool_size=2")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query(sql))
        _ = h.next(s0)
        s0.send(BE.complete(tag) + BE.ready("I"))
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["C", "Z"])
        XCTAssertNil(s0.nextMessage(), "no reset: the server stays with the client")
        let b = h.login()
        b.send(FE.query("select 2"))
        let s1 = try XCTUnwrap(h.waitServers(2), "the other client gets another server")
        h.answerQuery(s1, expect: "select 2")
        _ = h.readUntilReady(b)
        return (a, s0)
    }

    func testTempTableKeepsTheClientOnItsServer() throws {
        let (a, s0) = try pinningStatement("create temp table t (i int)", tag: "CREATE TABLE")
        h.roundTrip(a, s0, "select 3")
        a.send(FE.query("discard temp"))
        _ = h.next(s0)
        s0.send(BE.complete("DISCARD TEMP") + BE.ready("I"))
        _ = h.readUntilReady(a)
        // Unpinned: released, and reset (the temp table's CREATE asked for it) before anyone else.
        XCTAssertEqual(h.next(s0)?.firstString, "DISCARD ALL")
        s0.send(BE.complete("DISCARD ALL") + BE.ready("I"))
    }

    /// A session setting pgswift cannot replay elsewhere (SET SESSION CHARACTERISTICS) pins like a temp
    /// table: the client's later transactions run on the server that has it.
    func testSessionSettingThatCannotBeCarriedKeepsTheClientOnItsServer() throws {
        let (a, s0) = try pinningStatement("set session characteristics as transaction isolation level serializable",
                                           tag: "SET")
        h.roundTrip(a, s0, "show transaction_isolation")
    }

    func testPinOffKeepsTheOldReset() throws {
        try start(databaseOptions: "pool_size=1", pgswift: ["pin_session_state": "off"])
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("create temp table t (i int)"))
        _ = h.next(s0)
        s0.send(BE.complete("CREATE TABLE") + BE.ready("I"))
        _ = h.readUntilReady(a)
        XCTAssertEqual(h.next(s0)?.firstString, "DISCARD ALL")
        s0.send(BE.complete("DISCARD ALL") + BE.ready("I"))
        let b = h.login()
        h.roundTrip(b, s0, "select 2")
    }

    func testPinnedClientLeavingWithoutAResetQueryClosesItsServer() throws {
        try start(["server_reset_query": ""], databaseOptions: "pool_size=1")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select pg_advisory_lock(1)"))
        h.answerQuery(s0, expect: "select pg_advisory_lock(1)")
        _ = h.readUntilReady(a)
        a.close()
        h.waitClosed(s0)
    }

    /// search_path is a tracked parameter the server (before PostgreSQL 18) does not report: the
    /// client's SET becomes its tracked value, synced like a startup value.
    func testSetOfAnUnreportedTrackedParameterFollowsTheClient() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("SET search_path = app, public"))
        _ = h.next(s0)
        s0.send(BE.complete("SET") + BE.ready("I"))
        _ = h.readUntilReady(a)
        let b = h.login()
        b.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s0)?.firstString, "RESET search_path;")
        s0.send(BE.complete("RESET") + BE.ready("I"))
        h.answerQuery(s0, expect: "select 1")
        _ = h.readUntilReady(b)
        a.send(FE.query("select 2"))
        XCTAssertEqual(h.next(s0)?.firstString, "SET search_path='app', 'public';")
        s0.send(BE.complete("SET") + BE.ready("I"))
        h.answerQuery(s0, expect: "select 2")
        _ = h.readUntilReady(a)
    }

    /// A statement the client deallocated (or prepared anew) on another server is dropped from a server
    /// that still has the old one before the client uses it again: EXECUTE then fails as PostgreSQL's would.
    func testStaleOwnStatementIsDroppedAtLink() throws {
        try start(databaseOptions: "pool_size=2")
        let a = h.login()
        let c = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s0, "begin", status: "T")
        c.send(FE.query("begin"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "begin", status: "T")
        _ = h.readUntilReady(c)
        a.send(FE.query("PREPARE s AS select 1"))
        _ = h.next(s0)
        s0.send(BE.complete("PREPARE") + BE.ready("T"))
        _ = h.readUntilReady(a)
        h.roundTrip(a, s0, "commit")
        h.roundTrip(c, s1, "commit")
        // s1 was released last: a gets it, its PREPARE is replayed there, then dropped by its DEALLOCATE.
        a.send(FE.query("DEALLOCATE s"))
        XCTAssertEqual(h.next(s1)?.firstString, "PREPARE s AS select 1;")
        s1.send(BE.complete("PREPARE") + BE.ready("I"))
        XCTAssertEqual(h.next(s1)?.firstString, "DEALLOCATE s")
        s1.send(BE.complete("DEALLOCATE") + BE.ready("I"))
        _ = h.readUntilReady(a)
        // c takes s1; a gets s0 back, which still has the old s: dropped before a's EXECUTE.
        h.roundTrip(c, s1, "begin", status: "T")
        a.send(FE.query("EXECUTE s"))
        XCTAssertEqual(h.next(s0)?.firstString, "DEALLOCATE \"s\";")
        s0.send(BE.complete("DEALLOCATE") + BE.ready("I"))
        XCTAssertEqual(h.next(s0)?.firstString, "EXECUTE s")
    }

    /// A client that leaves inside a transaction gets a ROLLBACK, not a reset: its carried settings
    /// are still on the server, and the next client gets them undone.
    func testCarriedSettingsOutliveARollbackOnlyCleanup() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("set work_mem = '1MB'"))
        _ = h.next(s0)
        s0.send(BE.complete("SET") + BE.ready("I"))
        _ = h.readUntilReady(a)
        h.roundTrip(a, s0, "begin", status: "T")
        a.close()
        XCTAssertEqual(h.next(s0)?.firstString, "ROLLBACK")
        s0.send(BE.complete("ROLLBACK") + BE.ready("I"))
        let b = h.login()
        b.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s0)?.firstString, "RESET work_mem;")
        s0.send(BE.complete("RESET") + BE.ready("I"))
        h.answerQuery(s0, expect: "select 1")
    }

    /// a sends `SET work_mem = '1MB'` as Parse (of `statement`), Bind, Execute, Sync; then b gets the
    /// one server, where the SET is undone (carried, not reset) before b's query.
    private func extendedSetThenNeighbour(statement: String) throws -> (Peer, FakeServer, Peer) {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse(statement, "SET work_mem = '1MB'") + FE.bind("", statement) + FE.execute() + FE.sync)
        _ = h.next(s0, 4)
        s0.send(BE.parseComplete + BE.bindComplete + BE.complete("SET") + BE.ready("I"))
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["1", "2", "C", "Z"])
        let b = h.login()
        b.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s0)?.firstString, "RESET work_mem;", "carried, not reset")
        s0.send(BE.complete("RESET") + BE.ready("I"))
        h.answerQuery(s0, expect: "select 1")
        _ = h.readUntilReady(b)
        return (a, s0, b)
    }

    /// A SET sent the way drivers send it (unnamed Parse, Bind, Execute, Sync) is carried too.
    func testExtendedProtocolSetIsCarried() throws {
        let (a, s0, _) = try extendedSetThenNeighbour(statement: "")
        a.send(FE.query("select 2"))
        XCTAssertEqual(h.next(s0)?.firstString, "SET work_mem TO '1MB';")
        s0.send(BE.complete("SET") + BE.ready("I"))
        h.answerQuery(s0, expect: "select 2")
        _ = h.readUntilReady(a)
    }

    /// A SET through a named statement (JDBC from its prepareThreshold on) is carried, and so is the
    /// same statement executed again on a later link, without its Parse.
    func testNamedStatementSetIsCarriedWhenExecutedAgain() throws {
        let (a, s0, b) = try extendedSetThenNeighbour(statement: "S_1")
        // a sets another value, then runs S_1 again (the server has it: no Parse).
        a.send(FE.query("SET work_mem = '2MB'"))
        XCTAssertEqual(h.next(s0)?.firstString, "SET work_mem TO '1MB';")
        s0.send(BE.complete("SET") + BE.ready("I"))
        XCTAssertEqual(h.next(s0)?.firstString, "SET work_mem = '2MB'")
        s0.send(BE.complete("SET") + BE.ready("I"))
        _ = h.readUntilReady(a)
        a.send(FE.bind("", "S_1") + FE.execute() + FE.sync)
        XCTAssertEqual(h.next(s0, 3).map { $0.char }, ["B", "E", "S"])
        s0.send(BE.bindComplete + BE.complete("SET") + BE.ready("I"))
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["2", "C", "Z"])
        // b's turn: undone for b; then a gets its 1MB back (not the 2MB of its simple SET).
        b.send(FE.query("select 2"))
        XCTAssertEqual(h.next(s0)?.firstString, "RESET work_mem;", "S_1's SET carried, not reset")
        s0.send(BE.complete("RESET") + BE.ready("I"))
        h.answerQuery(s0, expect: "select 2")
        _ = h.readUntilReady(b)
        a.send(FE.query("select 3"))
        XCTAssertEqual(h.next(s0)?.firstString, "SET work_mem TO '1MB';")
        s0.send(BE.complete("SET") + BE.ready("I"))
        h.answerQuery(s0, expect: "select 3")
        _ = h.readUntilReady(a)
    }

    /// A second Execute of the unnamed portal keeps the old reset.
    func testExtendedProtocolSetOutsideTheSimpleShapeIsReset() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("", "SET work_mem = '1MB'") + FE.bind("", "") + FE.execute() + FE.execute() + FE.sync)
        _ = h.next(s0, 5)
        s0.send(BE.parseComplete + BE.bindComplete + BE.complete("SET") + BE.complete("SET") + BE.ready("I"))
        _ = h.readUntilReady(a)
        XCTAssertEqual(h.next(s0)?.firstString, "DISCARD ALL")
        s0.send(BE.complete("DISCARD ALL") + BE.ready("I"))
    }
}
