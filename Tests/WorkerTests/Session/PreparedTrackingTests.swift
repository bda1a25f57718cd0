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
}
