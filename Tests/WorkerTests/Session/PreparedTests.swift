// Prepared-statement tracking in transaction mode (Prepared.swift) through a real worker loop: what
// the server sees (renamed, dropped, injected) and what the client gets (synthesised answers, in order).
import XCTest
@testable import Worker
import Shared

final class PreparedTests: WorkerHarnessCase {
    private func chars(_ msgs: [Msg]) -> [Character] { msgs.map { $0.char } }
    /// pgswift's extension: PostgreSQL's errors for a statement name in use or unknown (the default is
    /// PgBouncer's disconnect).
    private let postgresqlErrors = ["prepared_statement_errors": "postgresql"]

    /// Client `c` prepares `name` as `sql` and runs it once; the server answers as PostgreSQL would.
    /// Returns the server's name for the statement.
    @discardableResult
    private func prepareAndRun(_ c: Peer, _ s: FakeServer, _ name: String, _ sql: String,
                               file: StaticString = #filePath, line: UInt = #line) -> String {
        c.send(FE.parse(name, sql) + FE.bind("", name, ["7"]) + FE.execute() + FE.sync)
        let got = h.next(s, 4, file: file, line: line)
        XCTAssertEqual(chars(got), ["P", "B", "E", "S"], file: file, line: line)
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["7"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(c, file: file, line: line)), ["1", "2", "D", "C", "Z"], file: file, line: line)
        return got.first?.strings.first ?? ""
    }

    func testNamedParseAndBindAreRenamedForTheServer() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("mine", "select $1::int") + FE.bind("", "mine", ["7"]) + FE.execute() + FE.sync)
        let got = h.next(s, 4)
        XCTAssertEqual(chars(got), ["P", "B", "E", "S"])
        let serverName = got[0].strings[0]
        XCTAssertTrue(serverName.hasPrefix("PGSWIFT_"), serverName)
        XCTAssertEqual(got[0].strings[1], "select $1::int", "the query text is unchanged")
        XCTAssertEqual(Array(got[1].strings.prefix(2)), ["", serverName], "the Bind names the server's statement")
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["7"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["1", "2", "D", "C", "Z"])
    }

    func testAStatementTheServerHasGetsASynthesisedParseComplete() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let serverName = prepareAndRun(a, s, "mine", "select $1::int")
        // Another client prepares the same text under another name: the server already has it.
        let b = h.login()
        b.send(FE.parse("theirs", "select $1::int") + FE.bind("", "theirs", ["8"]) + FE.execute() + FE.sync)
        let got = h.next(s, 3)
        XCTAssertEqual(chars(got), ["B", "E", "S"], "no Parse reaches the server")
        XCTAssertEqual(got.first?.strings[1], serverName)
        s.send(BE.bindComplete + BE.dataRow(["8"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(b)), ["1", "2", "D", "C", "Z"], "ParseComplete comes first, in order")
    }

    func testBindOnAServerWithoutTheStatementInjectsAParseAndSwallowsItsAnswer() throws {
        try start()
        let a = h.login(), b = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        let serverName = prepareAndRun(b, s0, "st", "select $1::text")
        h.roundTrip(a, s0, "begin", status: "T")  // a holds s0
        b.send(FE.bind("", "st", ["x"]) + FE.execute() + FE.sync)
        let s1 = try XCTUnwrap(h.waitServers(2))
        let got = h.next(s1, 4)
        XCTAssertEqual(chars(got), ["P", "B", "E", "S"], "a Parse is injected before the Bind")
        XCTAssertEqual(Array(got[0].strings.prefix(2)), [serverName, "select $1::text"])
        s1.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["x"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(b)), ["2", "D", "C", "Z"], "the injected Parse's answer is swallowed")
    }

    func testCloseIsAnsweredByPgswiftAndForgetsOnlyTheClientsName() throws {
        try start(pgswift: postgresqlErrors)
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        prepareAndRun(a, s, "mine", "select $1::int")
        a.send(FE.closeStatement("mine") + FE.sync)
        let got = h.next(s, 1)
        XCTAssertEqual(chars(got), ["S"], "the server keeps the statement: only the Sync goes")
        s.send(BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["3", "Z"])
        a.send(FE.bind("", "mine", ["1"]) + FE.execute() + FE.sync)
        XCTAssertEqual(chars(h.next(s, 1)), ["S"])
        s.send(BE.ready())
        let after = h.readUntilReady(a)
        XCTAssertEqual(after.first?.sqlState, SQLState.invalidSQLStatementName, "\(after)")
    }

    func testBindToAnUnknownStatementIsAnsweredByPgswiftAndSkippedToSync() throws {
        try start(pgswift: postgresqlErrors)
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.bind("", "nosuch", ["1"]) + FE.describePortal() + FE.execute() + FE.sync)
        let toServer = h.next(s, 1)
        XCTAssertEqual(chars(toServer), ["S"], "everything up to the Sync is skipped")
        s.send(BE.ready())
        let got = h.readUntilReady(a)
        XCTAssertEqual(chars(got), ["E", "Z"])
        XCTAssertEqual(got.first?.sqlState, SQLState.invalidSQLStatementName)
        XCTAssertEqual(got.first?.error?.message, "prepared statement \"nosuch\" does not exist")
        // Messages after the Sync are processed again.
        h.roundTrip(a, s, "select 1")
    }

    /// The default, PgBouncer's: a Bind or Describe naming a statement the client has not prepared
    /// (never, or dropped by DEALLOCATE ALL) gets FATAL 08P01 "prepared statement did not exist" and the
    /// client is disconnected; nothing of it reaches the server.
    func testAnUnknownStatementDisconnectsTheClientByDefault() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.bind("", "nosuch", ["1"]) + FE.execute() + FE.sync)
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.map { $0.error?.message }, ["prepared statement did not exist"])
        XCTAssertEqual(got.first?.error?.severity, "FATAL")
        XCTAssertEqual(got.first?.sqlState, SQLState.protocolViolation)
        let b = h.login()
        b.send(FE.describeStatement("nosuch") + FE.sync)
        XCTAssertEqual(h.readUntilClosed(b).map { $0.error?.message }, ["prepared statement did not exist"])
        let c = h.login()
        prepareAndRun(c, s, "mine", "select $1::int")
        c.send(FE.query("deallocate all"))
        _ = h.next(s)
        s.send(BE.complete("DEALLOCATE ALL") + BE.ready())
        h.readUntilReady(c)
        c.send(FE.bind("", "mine", ["1"]) + FE.execute() + FE.sync)
        XCTAssertEqual(h.readUntilClosed(c).map { $0.error?.message }, ["prepared statement did not exist"])
        h.settle()
        XCTAssertNil(s.nextMessage(), "nothing of the refused messages reached the server")
    }

    /// The default, PgBouncer's: a Parse of a name the client already uses gets FATAL 08P01 "prepared
    /// statement name is already in use" and the client is disconnected.
    func testAParseOfANameInUseDisconnectsTheClientByDefault() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        prepareAndRun(a, s, "mine", "select 1")
        a.send(FE.parse("mine", "select 2") + FE.sync)
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.map { $0.error?.message }, ["prepared statement name is already in use"])
        XCTAssertEqual(got.first?.sqlState, SQLState.protocolViolation)
    }

    /// The server's own error can end a batch before an error pgswift owes reaches the client (an
    /// unnamed Parse fails, then a Bind to an unknown statement): the owed error is dropped with the
    /// batch, and its text with it. Before, the text stayed queued and the next synthesised error (here
    /// for "other") went out with the old one's text ("nosuch").
    func testAnOwedErrorDroppedWithItsBatchTakesItsTextAlong() throws {
        try start(pgswift: postgresqlErrors)
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("", "select syntax error") + FE.bind("", "nosuch", ["1"]) + FE.execute() + FE.sync)
        XCTAssertEqual(chars(h.next(s, 2)), ["P", "S"])
        s.send(BE.error("42601", "syntax error") + BE.ready())
        let first = h.readUntilReady(a)
        XCTAssertEqual(first.first?.sqlState, "42601", "\(chars(first))")
        a.send(FE.bind("", "other", ["1"]) + FE.execute() + FE.sync)
        XCTAssertEqual(chars(h.next(s, 1)), ["S"])
        s.send(BE.ready())
        let second = h.readUntilReady(a)
        XCTAssertEqual(chars(second), ["E", "Z"])
        XCTAssertEqual(second.first?.error?.message, "prepared statement \"other\" does not exist")
    }

    func testSkippingAfterAnErrorConsumesAMessageLargerThanTheBuffer() throws {
        try start(pgswift: postgresqlErrors)
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.bind("", "nosuch") + FE.query("select '" + String(repeating: "q", count: 80_000) + "'") + FE.sync)
        XCTAssertEqual(chars(h.next(s, 1)), ["S"])
        s.send(BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["E", "Z"])
        h.roundTrip(a, s, "select 1")
    }

    func testParseOfANameInUseGetsDuplicateStatementError() throws {
        try start(pgswift: postgresqlErrors)
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        prepareAndRun(a, s, "mine", "select 1")
        a.send(FE.parse("mine", "select 2") + FE.bind("", "mine") + FE.execute() + FE.sync)
        XCTAssertEqual(chars(h.next(s, 1)), ["S"])
        s.send(BE.ready())
        let got = h.readUntilReady(a)
        XCTAssertEqual(got.map { $0.sqlState ?? String($0.char) }, [SQLState.duplicatePreparedStatement, "Z"])
    }

    func testAParseTheServerRefusesLeavesTheNameUndefined() throws {
        try start(pgswift: postgresqlErrors)
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("bad", "selec 1") + FE.sync)
        XCTAssertEqual(chars(h.next(s, 2)), ["P", "S"])
        s.send(BE.error("42601", "syntax error at or near \"selec\"") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["E", "Z"])
        // As in PostgreSQL: the name can be prepared again, and is unknown until then.
        a.send(FE.bind("", "bad") + FE.execute() + FE.sync)
        XCTAssertEqual(chars(h.next(s, 1)), ["S"])
        s.send(BE.ready())
        XCTAssertEqual(h.readUntilReady(a).first?.sqlState, SQLState.invalidSQLStatementName)
        a.send(FE.parse("bad", "select 1") + FE.sync)
        XCTAssertEqual(chars(h.next(s, 2)), ["P", "S"])
        s.send(BE.parseComplete + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["1", "Z"])
    }

    func testDescribeOfANamedStatementIsRenamed() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let serverName = prepareAndRun(a, s, "mine", "select $1::int")
        a.send(FE.describeStatement("mine") + FE.sync)
        let got = h.next(s, 2)
        XCTAssertEqual(chars(got), ["D", "S"])
        XCTAssertEqual(got.first?.body.first, UInt8(ascii: "S"))
        XCTAssertEqual(TestWire.cString(got.first?.body ?? [], from: 1).0, serverName)
        s.send(TestWire.message("t", TestWire.int16(1) + TestWire.int32(23)) + BE.rowDescription(["int4"]) + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["t", "T", "Z"])
    }

    func testNamedParseLargerThanTheBufferIsCollectedAndRenamed() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let sql = "select '" + String(repeating: "L", count: 90_000) + "'"
        a.send(FE.parse("large", sql) + FE.bind("", "large") + FE.execute() + FE.sync)
        let got = h.next(s, 4)
        XCTAssertEqual(chars(got), ["P", "B", "E", "S"])
        XCTAssertTrue(got.first?.strings.first?.hasPrefix("PGSWIFT_") ?? false)
        XCTAssertEqual(got.first?.strings[1], sql, "the query text arrives whole")
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["L"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["1", "2", "D", "C", "Z"])
    }

    func testDeallocateAllForgetsTheClientsStatements() throws {
        try start(pgswift: postgresqlErrors)
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        prepareAndRun(a, s, "mine", "select 1")
        a.send(FE.query("deallocate all"))
        _ = h.next(s)
        s.send(BE.complete("DEALLOCATE ALL") + BE.ready())
        h.readUntilReady(a)
        a.send(FE.bind("", "mine") + FE.execute() + FE.sync)
        XCTAssertEqual(chars(h.next(s, 1)), ["S"])
        s.send(BE.ready())
        XCTAssertEqual(h.readUntilReady(a).first?.sqlState, SQLState.invalidSQLStatementName)
    }

    func testSessionModeDoesNotRenameStatements() throws {
        try start(["pool_mode": "session"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let bytes = FE.parse("mine", "select 1") + FE.bind("", "mine") + FE.execute() + FE.sync
        a.send(bytes)
        XCTAssertEqual(h.next(s, 4).flatMap { $0.frame }, bytes)
    }

    func testTrackingOffWithMaxPreparedStatementsZero() throws {
        try start(["max_prepared_statements": "0"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let bytes = FE.parse("mine", "select 1") + FE.sync
        a.send(bytes)
        XCTAssertEqual(h.next(s, 2).flatMap { $0.frame }, bytes)
    }

    func testServerCacheEvictsTheLeastRecentlyUsedStatement() throws {
        try start(["max_prepared_statements": "1"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("one", "select 1") + FE.sync)
        let first = h.next(s, 2)
        XCTAssertEqual(chars(first), ["P", "S"])
        let n1 = first[0].strings[0]
        s.send(BE.parseComplete + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["1", "Z"])
        a.send(FE.parse("two", "select 2") + FE.sync)
        let second = h.next(s, 3)
        XCTAssertEqual(chars(second), ["C", "P", "S"], "the first statement is closed to make room")
        XCTAssertEqual(TestWire.cString(second[0].body, from: 1).0, n1)
        let n2 = second[1].strings[0]
        XCTAssertNotEqual(n1, n2)
        s.send(BE.closeComplete + BE.parseComplete + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["1", "Z"], "the eviction's CloseComplete is swallowed")
        a.send(FE.bind("", "one") + FE.execute() + FE.sync)
        let third = h.next(s, 5)
        XCTAssertEqual(chars(third), ["C", "P", "B", "E", "S"], "evicted again, and prepared again")
        XCTAssertEqual(third[1].strings[0], n1)
        s.send(BE.closeComplete + BE.parseComplete + BE.bindComplete + BE.dataRow(["1"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["2", "D", "C", "Z"])
    }

    /// A RELOAD or SET that lowers max_prepared_statements leaves open servers' caches as they are;
    /// the next statement a server gets evicts as many as it takes to fit (PgBouncer's way). Before,
    /// one was evicted per insert, so the cache never shrank.
    func testALoweredLimitShrinksAServersCacheAtItsNextInsert() throws {
        try start(["max_prepared_statements": "5"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        var names: [String] = []
        for i in 0..<3 {
            a.send(FE.parse("s\(i)", "select \(i)") + FE.sync)
            let got = h.next(s, 2)
            XCTAssertEqual(chars(got), ["P", "S"])
            names.append(got.first?.strings.first ?? "")
            s.send(BE.parseComplete + BE.ready())
            XCTAssertEqual(chars(h.readUntilReady(a)), ["1", "Z"])
        }
        h.worker.config.maxPreparedStatements = 2  // what a RELOAD or SET brings
        h.worker.applyHotSettings()
        a.send(FE.parse("s3", "select 3") + FE.sync)
        let got = h.next(s, 4)
        XCTAssertEqual(chars(got), ["C", "C", "P", "S"], "two go, so that the new one makes 2")
        XCTAssertEqual(got.prefix(2).map { TestWire.cString($0.body, from: 1).0 }, Array(names.prefix(2)),
                       "the least recently used go first")
        s.send(BE.closeComplete + BE.closeComplete + BE.parseComplete + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["1", "Z"])
    }

    /// SHOW STATS' total_client_parse_count, total_server_parse_count and total_bind_count, as
    /// PgBouncer counts them: a client's named Parse, a Parse pgswift sends a server (the client's
    /// or injected), every named Bind.
    func testParsesAndBindsAreCountedForShowStats() throws {
        try start()
        let a = h.login(), b = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        prepareAndRun(a, s0, "st", "select $1::int")  // client parse, server parse, bind
        h.roundTrip(b, s0, "begin", status: "T")
        a.send(FE.bind("", "st", ["1"]) + FE.execute() + FE.sync)  // another server: injected parse, bind
        let s1 = try XCTUnwrap(h.waitServers(2))
        XCTAssertEqual(chars(h.next(s1, 4)), ["P", "B", "E", "S"])
        s1.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["1"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["2", "D", "C", "Z"])
        // b prepares the same text on s0, which has it: a client parse, no server parse, a bind.
        b.send(FE.parse("other", "select $1::int") + FE.bind("", "other", ["2"]) + FE.execute() + FE.sync)
        XCTAssertEqual(chars(h.next(s0, 3)), ["B", "E", "S"])
        s0.send(BE.bindComplete + BE.dataRow(["2"]) + BE.complete("SELECT 1") + BE.ready("T"))
        XCTAssertEqual(chars(h.readUntilReady(b)), ["1", "2", "D", "C", "Z"])
        let pool = try XCTUnwrap(h.worker.pools.indices.first { self.h.worker.pools[$0].database == "db" })
        let t = h.worker.pools[pool].totals
        XCTAssertEqual([t.clientParseCount, t.serverParseCount, t.bindCount], [2, 2, 3])
    }

    func testDescribeOfAnUnknownStatementIsAnsweredByPgswift() throws {
        try start(pgswift: postgresqlErrors)
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.describeStatement("nosuch") + FE.sync)
        XCTAssertEqual(chars(h.next(s, 1)), ["S"])
        s.send(BE.ready())
        let got = h.readUntilReady(a)
        XCTAssertEqual(got.map { $0.sqlState ?? String($0.char) }, [SQLState.invalidSQLStatementName, "Z"])
    }

    func testPreparedStatementSurvivesMovingToAnotherServer() throws {
        try start()
        let a = h.login(), b = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        let name = prepareAndRun(a, s0, "mine", "select $1::int")
        h.roundTrip(b, s0, "begin", status: "T")
        // a's next use lands on a new server, which gets the statement first.
        a.send(FE.bind("", "mine", ["9"]) + FE.execute() + FE.sync)
        let s1 = try XCTUnwrap(h.waitServers(2))
        let got = h.next(s1, 4)
        XCTAssertEqual(chars(got), ["P", "B", "E", "S"])
        XCTAssertEqual(got[0].strings[0], name, "the same server-side name on every server")
        s1.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["9"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["2", "D", "C", "Z"])
        // And back on s0, which still has it: nothing injected.
        h.roundTrip(b, s0, "commit")
        a.send(FE.bind("", "mine", ["10"]) + FE.execute() + FE.sync)
        let (s, m) = try XCTUnwrap(h.nextOnAnyServer())
        XCTAssertEqual(m.char, "B", "no Parse for a server that has the statement (got it on server \(s.index))")
    }
}
