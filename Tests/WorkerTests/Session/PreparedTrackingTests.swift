// The response queue behind prepared-statement tracking, driven without sockets.
import XCTest
@testable import Worker
import Shared

final class PreparedTrackingTests: XCTestCase {
    private func makeWorker() throws -> Worker {
        let config = try Config.parse(text: """
            [databases]
            db = host=127.0.0.1 port=1
            [pgbouncer]
            listen_port = 1
            pool_mode = transaction
            auth_type = trust
            """, file: "test.ini")
        let options = WorkerOptions(configPath: "test.ini", slot: 0, tcpFDs: [], unixFDs: [], controlFD: -1, verbose: 0)
        return try Worker(options: options, config: config, userlist: Userlist(entries: [:]))
    }

    func testAnswersPopTheirEntriesInOrder() throws {
        let w = try makeWorker()
        let si = w.servers.allocate()
        for s in [ExpectedAnswer.parse, ExpectedAnswer.bind, ExpectedAnswer.describePortal, ExpectedAnswer.execute, ExpectedAnswer.sync] {
            XCTAssertTrue(w.pushAnswer(si, s))
        }
        XCTAssertTrue(w.serverAnswer(si, BackendType.parseComplete))
        XCTAssertTrue(w.serverAnswer(si, BackendType.bindComplete))
        XCTAssertTrue(w.serverAnswer(si, BackendType.rowDescription))
        XCTAssertTrue(w.serverAnswer(si, BackendType.dataRow), "rows do not end an Execute")
        XCTAssertEqual(w.servers[si].answerCount, 2)
        XCTAssertTrue(w.serverAnswer(si, BackendType.commandComplete))
        XCTAssertTrue(w.serverAnswer(si, BackendType.readyForQuery))
        XCTAssertEqual(w.servers[si].answerCount, 0)
    }

    func testInjectedParseCompleteIsSwallowed() throws {
        let w = try makeWorker()
        let si = w.servers.allocate()
        XCTAssertTrue(w.pushAnswer(si, ExpectedAnswer.parse.swallowed))
        XCTAssertTrue(w.pushAnswer(si, ExpectedAnswer.bind))
        XCTAssertFalse(w.serverAnswer(si, BackendType.parseComplete), "the client never sent that Parse")
        XCTAssertTrue(w.serverAnswer(si, BackendType.bindComplete))
        XCTAssertEqual(w.servers[si].answerCount, 0)
    }

    func testErrorSkipsToTheSyncLikePostgres() throws {
        let w = try makeWorker()
        let si = w.servers.allocate()
        for s in [ExpectedAnswer.parse, ExpectedAnswer.bind, ExpectedAnswer.synthCloseComplete, ExpectedAnswer.execute, ExpectedAnswer.sync, ExpectedAnswer.parse] {
            XCTAssertTrue(w.pushAnswer(si, s))
        }
        XCTAssertTrue(w.serverAnswer(si, BackendType.errorResponse))
        XCTAssertEqual(w.servers[si].answerCount, 2, "only the Sync and what follows it remain")
        XCTAssertEqual(w.headAnswer(si), ExpectedAnswer.sync)
        XCTAssertTrue(w.serverAnswer(si, BackendType.readyForQuery))
        XCTAssertEqual(w.headAnswer(si), ExpectedAnswer.parse)
    }

    /// PostgreSQL skips a Query sent between a failed extended-protocol message and the Sync: one
    /// ReadyForQuery answers both, so the Query's count in `pendingSyncs` goes with its slot.
    func testQuerySkippedAfterAnErrorNoLongerCountsAsPending() throws {
        let w = try makeWorker()
        let si = w.servers.allocate()
        for s in [ExpectedAnswer.parse, ExpectedAnswer.query, ExpectedAnswer.sync] { XCTAssertTrue(w.pushAnswer(si, s)) }
        w.servers[si].pendingSyncs = 2  // the Query and the Sync, as the scanner counts them
        XCTAssertTrue(w.serverAnswer(si, BackendType.errorResponse))
        XCTAssertEqual(w.servers[si].pendingSyncs, 1)
        XCTAssertEqual(w.headAnswer(si), ExpectedAnswer.sync)
        XCTAssertTrue(w.serverAnswer(si, BackendType.readyForQuery))
        XCTAssertEqual(w.servers[si].answerCount, 0)
    }

    func testErrorInsideASimpleQueryDoesNotSkip() throws {
        let w = try makeWorker()
        let si = w.servers.allocate()
        XCTAssertTrue(w.pushAnswer(si, ExpectedAnswer.query))
        XCTAssertTrue(w.pushAnswer(si, ExpectedAnswer.query))
        XCTAssertTrue(w.serverAnswer(si, BackendType.errorResponse))
        XCTAssertEqual(w.servers[si].answerCount, 2)
        XCTAssertTrue(w.serverAnswer(si, BackendType.readyForQuery))
        XCTAssertEqual(w.servers[si].answerCount, 1)
    }

    func testQueueIsBounded() throws {
        let w = try makeWorker()
        let si = w.servers.allocate()
        for _ in 0..<Int(ExpectedAnswer.capacity) { XCTAssertTrue(w.pushAnswer(si, ExpectedAnswer.execute)) }
        XCTAssertFalse(w.pushAnswer(si, ExpectedAnswer.execute))
    }

    func testRegistrySharesIdenticalStatements() {
        var r = StatementRegistry()
        let a = Array("select 1\0\0\0".utf8), b = Array("select 2\0\0\0".utf8)
        let ia = a.withUnsafeBytes { r.intern($0) }
        let ib = b.withUnsafeBytes { r.intern($0) }
        let ia2 = a.withUnsafeBytes { r.intern($0) }
        XCTAssertEqual(ia, ia2)
        XCTAssertNotEqual(ia, ib)
        XCTAssertEqual(StatementRegistry.serverName(ia), "PGSWIFT_\(ia)")
    }

    func testRegistryForgetsWhatIsNotLiveAndNeverReusesIds() {
        var r = StatementRegistry()
        let ids = (0..<5).map { i in Array("select \(i)\0\0\0".utf8).withUnsafeBytes { r.intern($0) } }
        r.keepOnly([ids[1], ids[3]])
        XCTAssertEqual(r.count, 2)
        XCTAssertNil(r.body(ids[0]))
        XCTAssertEqual(r.body(ids[3]), Array("select 3\0\0\0".utf8))
        // A forgotten text comes back under a new id: PGSWIFT_<old id> may still exist somewhere.
        let again = Array("select 0\0\0\0".utf8).withUnsafeBytes { r.intern($0) }
        XCTAssertFalse(ids.contains(again))
        XCTAssertEqual(Array("select 3\0\0\0".utf8).withUnsafeBytes { r.intern($0) }, ids[3], "a live text keeps its id")
    }

    /// Long statement texts make a sweep due by their bytes, long before 10,000 of them are kept.
    func testRegistrySweepIsDueByBytesToo() {
        var r = StatementRegistry()
        let long = String(repeating: "x", count: 1 << 20)
        for i in 0..<15 { _ = Array("select '\(long)\(i)'\0\0\0".utf8).withUnsafeBytes { r.intern($0) } }
        XCTAssertFalse(r.sweepDue, "15 MiB of statements: not due yet")
        _ = Array("select '\(long)15'\0\0\0".utf8).withUnsafeBytes { r.intern($0) }
        XCTAssertTrue(r.sweepDue, "16 MiB: due")
        r.keepOnly([])
        XCTAssertEqual(r.bytes, 0)
        XCTAssertFalse(r.sweepDue)
    }

    /// The worker's sweep keeps what a client names or a server holds (prepared, or a Parse/Close in
    /// flight) and forgets the rest; a sweep is due only once the registry has doubled.
    func testSweepKeepsStatementsClientsAndServersStillUse() throws {
        let w = try makeWorker()
        func intern(_ i: Int) -> Int32 { Array("select \(i)\0\0\0".utf8).withUnsafeBytes { w.statements.intern($0) } }
        let all = (0..<StatementRegistry.minimumSweep).map(intern)
        XCTAssertTrue(w.statements.sweepDue)
        let ci = w.clients.allocate()
        w.setClientState(ci, .idle)
        let cinfo = ClientInfo(trackedCount: 1)
        cinfo.preparedNames()["a"] = all[7]
        w.clients[ci].info = cinfo
        let si = w.servers.allocate()
        w.servers[si].pool = try XCTUnwrap(w.pool(database: "db", user: "u"))
        w.setServerState(si, .connecting)
        let sinfo = ServerInfo(trackedCount: 1)
        sinfo.prepared[all[8]] = 1
        sinfo.parsesInFlight = [ParseInFlight(id: all[9], clientName: nil)]
        sinfo.closesInFlight = [all[10]]
        w.servers[si].info = sinfo
        w.sweepStatements()
        XCTAssertEqual(w.statements.count, 4)
        for i in [7, 8, 9, 10] { XCTAssertNotNil(w.statements.body(all[i]), "statement \(i)") }
        XCTAssertNil(w.statements.body(all[0]))
        XCTAssertFalse(w.statements.sweepDue)
    }

    func testSessionTags() {
        func classify(_ s: String) -> Bool? {
            Array((s + "\0").utf8).withUnsafeBytes { SessionTags.classify($0) }
        }
        XCTAssertEqual(classify("SET"), true)
        XCTAssertEqual(classify("PREPARE"), true)
        XCTAssertEqual(classify("LISTEN"), true)
        XCTAssertEqual(classify("DISCARD ALL"), false)
        XCTAssertNil(classify("SELECT 1"))
        XCTAssertNil(classify("SETTLE"), "whole tags only")
        XCTAssertNil(classify("COMMIT"))
    }

    /// The fast exit for a query's row count: every tag `classify`, the LISTEN relay or the statement
    /// wipe checks would act on is refused, and so is `SELECT INTO`'s spelling.
    func testSelectRowsTag() {
        func rows(_ s: String) -> Bool {
            Array((s + "\0").utf8).withUnsafeBytes { SessionTags.isSelectRows($0) }
        }
        XCTAssertTrue(rows("SELECT 1"))
        XCTAssertTrue(rows("SELECT 0"))
        XCTAssertTrue(rows("SELECT 123456"))
        for tag in ["SELECT INTO", "SELECT", "SELECTS 1", "SET", "select 1", "SELECT x", "INSERT 0 1", "DISCARD ALL",
                    "LISTEN", "SELECT :", "SELECT /"] {
            XCTAssertFalse(rows(tag), tag)
        }
        XCTAssertFalse([UInt8]("SELECT 1".utf8).withUnsafeBytes { SessionTags.isSelectRows($0) }, "needs 9 bytes")
    }
}

final class ExpectedAnswerTests: XCTestCase {
    func testByteLayout() {
        XCTAssertEqual(MemoryLayout<ExpectedAnswer>.size, 1, "one byte per ring entry")
        XCTAssertEqual(ExpectedAnswer.parse.raw, 1)
        XCTAssertEqual(ExpectedAnswer.closeTracked.raw, 11)
        XCTAssertEqual(ExpectedAnswer.synthParseComplete.raw, 20)
        XCTAssertEqual(ExpectedAnswer.synthError.raw, 22)
        let s = ExpectedAnswer.parseTracked.swallowed
        XCTAssertEqual(s.raw, 0x80 | 10)
        XCTAssertTrue(s.isSwallowed)
        XCTAssertEqual(s.kind, .parseTracked)
        XCTAssertFalse(ExpectedAnswer.parseTracked.isSwallowed)
        XCTAssertTrue(ExpectedAnswer.synthCloseComplete.isSynthetic)
        XCTAssertTrue(ExpectedAnswer.synthCloseComplete.swallowed.isSynthetic)
        XCTAssertFalse(ExpectedAnswer.closeTracked.swallowed.isSynthetic)
        XCTAssertEqual(ExpectedAnswer.none.raw, 0)
    }

    /// The server-side name a forwarded Bind carries is written digit by digit, without a string: the
    /// same bytes and length as `serverName` for every id (the sign, one digit, ten digits).
    func testServerNamesWrittenInPlaceMatchTheirStrings() {
        var seed = UInt64(UInt32(truncatingIfNeeded: time(nil)))
        print("testServerNamesWrittenInPlaceMatchTheirStrings seed \(seed)")
        var ids: [Int32] = [0, 1, 9, 10, 99, 100, 12345, Int32.max, -1, -10, Int32.min]
        for _ in 0..<1000 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            ids.append(Int32(truncatingIfNeeded: seed >> 33))
        }
        for id in ids {
            var out = OutBuffer(capacity: 32)
            StatementRegistry.appendServerName(id, to: &out)
            let expected = Array(StatementRegistry.serverName(id).utf8) + [0]
            XCTAssertEqual(out.bytes, expected, "id \(id)")
            XCTAssertEqual(StatementRegistry.serverNameLength(id) + 1, expected.count, "id \(id)")
        }
    }
}
