// Linking clients to servers and back (Linking.swift, Pool.swift) through a real worker loop: release
// at ReadyForQuery per pool mode, session mode, resets, the wait queue, parameter sync.
import XCTest
@testable import Worker
import Shared

final class LinkingTests: WorkerHarnessCase {
    // MARK: Transaction mode

    func testTransactionModeReleasesOnReadyIdleAndTheNextClientReusesTheServer() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let got = h.roundTrip(a, s, "select 1")
        XCTAssertEqual(got.map { $0.char }, ["T", "D", "C", "Z"])
        let b = h.login()
        h.roundTrip(b, s, "select 2")
        h.roundTrip(a, s, "select 3")
        XCTAssertEqual(h.servers.count, 1, "one server served both clients in turn")
    }

    func testTransactionModeKeepsTheServerWhileInATransaction() throws {
        try start()
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        XCTAssertEqual(h.roundTrip(a, s0, "begin", status: "T").last?.status, "T")
        let b = h.login()
        b.send(FE.query("select 2"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select 2")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
        XCTAssertNil(s0.nextMessage(), "the server in a transaction was not handed to another client")
        h.roundTrip(a, s0, "commit")
        // a's transaction is over: s0 goes back to the pool, the most recently used on top.
        b.send(FE.query("select 4"))
        let (s, m) = try XCTUnwrap(h.nextOnAnyServer())
        XCTAssertEqual(m.firstString, "select 4")
        XCTAssertTrue(s === s0, "LIFO: the server released last is used first")
    }

    func testFailedTransactionKeepsTheServerUntilRollback() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")
        a.send(FE.query("select bad"))
        XCTAssertEqual(h.next(s)?.firstString, "select bad")
        s.send(BE.error("42703", "column \"bad\" does not exist") + BE.ready("E"))
        let got = h.readUntilReady(a)
        XCTAssertEqual(got.map { $0.char }, ["E", "Z"])
        XCTAssertEqual(got.last?.status, "E")
        let b = h.login()
        b.send(FE.query("select 2"))
        h.settle()
        XCTAssertNil(s.nextMessage(), "a failed transaction's server stays with its client")
        XCTAssertTrue(b.reader.unread.isEmpty, "the other client waits")
        h.roundTrip(a, s, "rollback")
        h.answerQuery(s, expect: "select 2")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
        XCTAssertEqual(h.servers.count, 1)
    }

    func testSessionStateTagMakesTheServerResetBeforeTheNextClient() throws {
        try start(pgswift: ["pin_session_state": "0"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        // A SET pgswift cannot carry (SessionState.swift), not pinned: the old rule, reset at release.
        a.send(FE.query("set session characteristics as transaction read only"))
        XCTAssertEqual(h.next(s)?.firstString, "set session characteristics as transaction read only")
        s.send(BE.complete("SET") + BE.ready("I"))
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["C", "Z"])
        XCTAssertEqual(h.next(s)?.firstString, "DISCARD ALL", "server_reset_query after a SET in transaction mode")
        s.send(BE.complete("DISCARD ALL") + BE.ready("I"))
        let b = h.login()
        h.roundTrip(b, s, "select 1")
        XCTAssertTrue(a.reader.unread.isEmpty, "the reset's answers were swallowed")
    }

    func testCarriedSetIsUndoneForTheNextClientAndReplayedForItsOwn() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("set work_mem = '1MB'"))
        XCTAssertEqual(h.next(s)?.firstString, "set work_mem = '1MB'")
        s.send(BE.complete("SET") + BE.ready("I"))
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["C", "Z"])
        // No reset: the next client gets the one setting it must not see undone, then its query.
        let b = h.login()
        b.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s)?.firstString, "RESET work_mem;")
        s.send(BE.complete("RESET") + BE.ready("I"))
        h.answerQuery(s, expect: "select 1")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
        // The first client's next transaction has it again.
        a.send(FE.query("show work_mem"))
        XCTAssertEqual(h.next(s)?.firstString, "SET work_mem TO '1MB';")
        s.send(BE.complete("SET") + BE.ready("I"))
        h.answerQuery(s, expect: "show work_mem")
        XCTAssertEqual(h.readUntilReady(a).last?.status, "I")
        XCTAssertTrue(b.reader.unread.isEmpty && a.reader.unread.isEmpty, "pgswift's own answers were swallowed")
    }

    func testRolledBackSetIsNotCarried() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("set work_mem = '1MB'; select 1/0"))
        _ = h.next(s)
        s.send(BE.complete("SET") + BE.error("22012", "division by zero") + BE.ready("I"))
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["C", "E", "Z"])
        let b = h.login()
        h.roundTrip(b, s, "select 2")
        h.roundTrip(a, s, "select 3")
    }

    func testPlainSelectDoesNotResetTheServer() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        let b = h.login()
        b.send(FE.query("select 2"))
        XCTAssertEqual(h.next(s)?.firstString, "select 2", "no DISCARD ALL between transactions")
    }

    // MARK: Statement mode

    func testStatementModeRefusesATransactionBlock() throws {
        try start(["pool_mode": "statement"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("begin"))
        XCTAssertEqual(h.next(s)?.firstString, "begin")
        s.send(BE.complete("BEGIN") + BE.ready("T"))
        let got = h.readUntilClosed(a)
        // PgBouncer's SQLSTATE for it (its disconnect_server default), not PostgreSQL's 0A000.
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.protocolViolation], "\(got)")
        XCTAssertEqual(got.first?.error?.message, "transaction blocks not allowed in statement pooling mode")
        h.waitClosed(s)
    }

    func testStatementModeReleasesAfterEachStatement() throws {
        try start(["pool_mode": "statement"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        let b = h.login()
        h.roundTrip(b, s, "select 2")
        XCTAssertEqual(h.servers.count, 1)
    }

    // MARK: server_check_query before reuse (server_check_delay)

    /// A server used within server_check_delay goes to the next client at once; one idle longer is
    /// counted as used (SHOW POOLS sv_used) and runs server_check_query first, whose answer the
    /// client never sees.
    func testServerIdleLongerThanTheCheckDelayIsCheckedBeforeReuse() throws {
        try start(["server_check_delay": "1", "server_check_query": "select 'alive'"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        h.roundTrip(a, s, "select 2")  // used just now: no check
        let released = Clock.monotonicNanos()
        h.waitUntil("server_check_delay to pass") { Clock.monotonicNanos() - released > 1_100_000_000 }
        let pool = try XCTUnwrap(h.worker.makeSnapshot(includeClients: false, includeServers: true).pools.first)
        XCTAssertEqual([pool.svIdle, pool.svUsed], [0, 1], "idle past server_check_delay counts as used")
        a.send(FE.query("select 3"))
        XCTAssertEqual(h.next(s)?.firstString, "select 'alive'", "checked before the client's query")
        s.send(BE.rowDescription(["?column?"]) + BE.dataRow(["alive"]) + BE.complete("SELECT 1") + BE.ready("I"))
        h.answerQuery(s, expect: "select 3")
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"], "the check's answer is swallowed")
        XCTAssertEqual(h.servers.count, 1)
    }

    /// server_check_delay = 0 checks at every reuse with the default `<empty>` query (an empty Query).
    /// A check that fails closes the server and the client is served by a new one without an error;
    /// so is a server that dies during its check.
    func testFailedCheckClosesTheServerAndTheClientGetsAnother() throws {
        try start(["server_check_delay": "0"])
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select 1"))
        let check = h.next(s0)
        XCTAssertEqual(check?.char, "Q")
        XCTAssertEqual(check?.firstString, "", "<empty>: an empty query")
        s0.send(TestWire.message("I", []) + BE.ready("I"))  // EmptyQueryResponse
        h.answerQuery(s0, expect: "select 1")
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"])

        a.send(FE.query("select 2"))
        XCTAssertEqual(h.next(s0)?.firstString, "")
        s0.send(BE.error("XX000", "check failed") + BE.ready("I"))
        h.waitClosed(s0)
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select 2")  // a new server is not checked
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"], "no error reaches the client")

        a.send(FE.query("select 3"))
        XCTAssertEqual(h.next(s1)?.firstString, "")
        s1.close()  // the backend went away during the check
        let s2 = try XCTUnwrap(h.waitServers(3))
        h.answerQuery(s2, expect: "select 3")
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"], "no error reaches the client")
    }

    /// An empty server_check_query turns the check off, whatever server_check_delay says.
    func testEmptyCheckQueryNeverChecks() throws {
        try start(["server_check_delay": "0", "server_check_query": ""])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        h.roundTrip(a, s, "select 2")
    }

    // MARK: Session mode

    func testSessionModeKeepsTheServerForTheClient() throws {
        try start(["pool_mode": "session"])
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s0, "select 1")
        let b = h.login()
        b.send(FE.query("select 2"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select 2")
        h.readUntilReady(b)
        h.roundTrip(a, s0, "select 3")
        h.roundTrip(b, s1, "select 4")
        XCTAssertNil(s0.nextMessage())
        XCTAssertNil(s1.nextMessage())
    }

    func testSessionModeRunsServerResetQueryWhenTheClientLeaves() throws {
        try start(["pool_mode": "session", "server_reset_query": "RESET ALL"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        a.send(FE.terminate)
        let reset = h.next(s)
        XCTAssertEqual(reset?.char, "Q")
        XCTAssertEqual(reset?.firstString, "RESET ALL")
        s.send(BE.complete("RESET") + BE.ready("I"))
        XCTAssertFalse(h.servers[0].closed, "Terminate never reaches a pooled server")
        let b = h.login()
        h.roundTrip(b, s, "select 2")
        XCTAssertEqual(h.servers.count, 1, "the reset server was reused")
    }

    func testSessionClientLeavingInsideATransactionRollsBackFirst() throws {
        try start(["pool_mode": "session"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")
        a.send(FE.terminate)
        let msgs = h.next(s, 2)
        XCTAssertEqual(msgs.map { $0.firstString }, ["ROLLBACK", "DISCARD ALL"])
        s.send(BE.complete("ROLLBACK") + BE.ready("I") + BE.complete("DISCARD ALL") + BE.ready("I"))
        let b = h.login()
        h.roundTrip(b, s, "select 2")
    }

    // MARK: The wait queue

    func testWaitingClientsAreServedInArrivalOrder() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")
        let b = h.login(), c = h.login(), d = h.login()
        for (client, sql) in [(c, "select c"), (b, "select b"), (d, "select d")] {
            client.send(FE.query(sql))
            h.settle(turns: 5)
        }
        XCTAssertNil(s.nextMessage(), "nobody gets the server while a holds it")
        h.roundTrip(a, s, "commit")
        for (client, sql) in [(c, "select c"), (b, "select b"), (d, "select d")] {
            h.answerQuery(s, expect: sql)
            XCTAssertEqual(h.readUntilReady(client).last?.status, "I")
        }
        XCTAssertEqual(h.servers.count, 1, "pool_size=1 held")
    }

    func testClientLeavingTheWaitQueueIsSkipped() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")
        let b = h.login(), c = h.login()
        b.send(FE.query("select b"))
        h.settle(turns: 5)
        c.send(FE.query("select c"))
        h.settle(turns: 5)
        b.close()
        h.settle(turns: 5)
        h.roundTrip(a, s, "commit")
        h.answerQuery(s, expect: "select c")
        XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
    }

    // MARK: Parameters that follow the client

    /// search_path is a list PostgreSQL quotes element by element: each element becomes a literal of
    /// its own (one literal would be a single schema named "a, b"), split as PostgreSQL splits it.
    func testSearchPathIsSetElementByElement() throws {
        XCTAssertEqual(settingValueSQL(name: "search_path", "a, public"), "'a', 'public'")
        XCTAssertEqual(settingValueSQL(name: "search_path", "\"$user\", public"), "'$user', 'public'")
        XCTAssertEqual(settingValueSQL(name: "search_path", " My ,\"Odd \"\"S\"\"\" "), "'my', 'Odd \"S\"'")
        XCTAssertEqual(settingValueSQL(name: "search_path", "x'y"), "'x''y'")
        for notAList in ["", "a,,b", "a,", "\"open", "a b", "\"\""] {
            XCTAssertEqual(settingValueSQL(name: "search_path", notAList), sqlLiteral(notAList), notAList)
        }
        XCTAssertEqual(settingValueSQL(name: "DateStyle", "ISO, MDY"), "'ISO, MDY'", "other lists are one value")
        try start()
        let a = h.login([("search_path", "app, public")])
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s)?.firstString, "SET search_path='app', 'public';")
    }

    func testClientStartupParameterIsSetOnTheServerAndTheAnswerSwallowed() throws {
        try start()
        let a = h.login([("application_name", "app1")])
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select 1"))
        let msgs = h.next(s, 2)
        XCTAssertEqual(msgs.first?.firstString, "SET application_name='app1';")
        XCTAssertEqual(msgs.last?.firstString, "select 1")
        s.send(BE.complete("SET") + BE.parameterStatus("application_name", "app1") + BE.ready("I")
               + BE.row("1") + BE.ready("I"))
        let got = h.readUntilReady(a)
        XCTAssertEqual(got.map { $0.char }, ["T", "D", "C", "Z"], "the SET's answers never reach the client: \(got)")
        // Same values next time: no SET.
        a.send(FE.query("select 2"))
        XCTAssertEqual(h.next(s)?.firstString, "select 2")
    }

    func testParameterChangedByTheClientFollowsIt() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select set_config('TimeZone', 'Europe/Paris', false)"))
        _ = h.next(s)
        s.send(BE.parameterStatus("TimeZone", "Europe/Paris") + BE.row("Europe/Paris") + BE.ready("I"))
        let got = h.readUntilReady(a)
        XCTAssertEqual(got.first?.strings, ["TimeZone", "Europe/Paris"], "the client sees the change")
        let b = h.login()
        b.send(FE.query("select 2"))
        let forB = h.next(s, 2)
        XCTAssertEqual(forB.first?.firstString, "SET TimeZone='UTC';", "b expects the pool's default")
        s.send(BE.complete("SET") + BE.parameterStatus("TimeZone", "UTC") + BE.ready("I") + BE.row("2") + BE.ready("I"))
        XCTAssertEqual(h.readUntilReady(b).map { $0.char }, ["T", "D", "C", "Z"])
        a.send(FE.query("select 3"))
        XCTAssertEqual(h.next(s)?.firstString, "SET TimeZone='Europe/Paris';", "a keeps the value it set")
    }

    /// The server answers pgswift's SET of a client's value with its own spelling of it (DateStyle
    /// `ISO` is reported as `ISO, MDY`): that becomes the client's value, so the next link finds them
    /// equal and sends no SET (PgBouncer's varcache_set_canonical). Before, every link SET it again.
    func testTheServersSpellingOfASetValueBecomesTheClients() throws {
        try start()
        let a = h.login([("DateStyle", "ISO")])
        let s = try XCTUnwrap(h.waitServers(1))
        for (i, expectSet) in [(1, true), (2, false), (3, false)] {
            a.send(FE.query("select \(i)"))
            if expectSet {
                XCTAssertEqual(h.next(s, 2).map { $0.firstString }, ["SET DateStyle='ISO';", "select 1"])
                s.send(BE.complete("SET") + BE.parameterStatus("DateStyle", "ISO, MDY") + BE.ready("I"))
            } else {
                XCTAssertEqual(h.next(s)?.firstString, "select \(i)", "no SET once the value is the server's")
            }
            s.send(BE.row("\(i)") + BE.ready("I"))
            XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"])
        }
    }
}
