// The data path (Forwarding.swift) through a real worker loop: pipelines, byte-boundary splits,
// errors, servers dying mid-result, garbage from clients, messages larger than the 32 KiB buffer.
import XCTest
@testable import Worker
import Shared

final class ForwardingTests: WorkerHarnessCase {
    /// Three unnamed extended-protocol queries, each ending in Sync, as one write.
    private func pipeline(_ n: Int = 3) -> [UInt8] {
        (0..<n).flatMap { i in
            FE.parse("", "select \(i)") + FE.bind("", "") + FE.describePortal() + FE.execute() + FE.sync
        }
    }

    /// What PostgreSQL answers to one Parse/Bind/Describe/Execute/Sync.
    private func answer(_ i: Int, status: Character = "I") -> [UInt8] {
        BE.parseComplete + BE.bindComplete + BE.rowDescription(["v"]) + BE.dataRow(["\(i)"])
            + BE.complete("SELECT 1") + BE.ready(status)
    }

    private func frames(_ msgs: [Msg]) -> [UInt8] { msgs.flatMap { $0.frame } }

    func testPipelineWithSeveralSyncsPassesIntactAndReleasesOnlyAfterTheLast() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let bytes = pipeline()
        a.send(bytes)
        XCTAssertEqual(frames(h.next(s, 15)), bytes, "the server gets the client's bytes unchanged")
        let b = h.login()
        b.send(FE.query("select b"))
        var expected: [UInt8] = []
        for i in 0..<3 {
            s.send(answer(i))
            expected += answer(i)
            XCTAssertEqual(h.readUntilReady(a).last?.status, "I")
            if i < 2 {
                h.settle(turns: 5)
                XCTAssertNil(s.nextMessage(), "released after ReadyForQuery \(i + 1) of 3")
            }
        }
        XCTAssertEqual(Array(a.received.suffix(expected.count)), expected, "answers reach the client unchanged")
        h.answerQuery(s, expect: "select b")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
    }

    /// The same pipeline, cut in two at every byte boundary, and the answers cut at the same offset.
    func testPipelineSplitAtEveryByteBoundary() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let bytes = pipeline()
        let answers = answer(0) + answer(1) + answer(2)
        for cut in 1..<bytes.count {
            a.send(Array(bytes[..<cut]))
            h.step(waitMillis: 0)
            h.step(waitMillis: 0)
            a.send(Array(bytes[cut...]))
            let got = frames(h.next(s, 15))
            XCTAssertEqual(got, bytes, "client bytes cut at \(cut)")
            let at = cut % answers.count
            let before = a.received.count
            s.send(Array(answers[..<at]))
            h.step(waitMillis: 0)
            h.step(waitMillis: 0)
            s.send(Array(answers[at...]))
            let msgs = h.readUntilReady(a, count: 3)
            XCTAssertEqual(Array(a.received[before...]), answers, "server bytes cut at \(at)")
            XCTAssertEqual(msgs.count, 18)
            if got != bytes || msgs.count != 18 { return }
        }
        // Released after all that: another client gets the same server.
        let b = h.login()
        h.roundTrip(b, s, "select 1")
        XCTAssertEqual(h.servers.count, 1)
    }

    /// Random pipelines (simple and extended queries, Flush, several Syncs) cut at random points in
    /// both directions, on one server that must come back to the pool each time.
    func testRandomPipelinesAndSplits() throws {
        var rng = SeededRandom("testRandomPipelinesAndSplits")
        let seed = rng.seed
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        for round in 0..<60 {
            var request: [UInt8] = [], reply: [UInt8] = []
            var messages = 0, readies = 0
            for q in 0..<Int.random(in: 1...4, using: &rng) {
                if Bool.random(using: &rng) {
                    request += FE.query("select \(round)_\(q)")
                    reply += BE.row("\(q)") + BE.ready("I")
                    messages += 1
                } else {
                    let sql = "select '" + String(repeating: "x", count: Int.random(in: 0...300, using: &rng)) + "'"
                    request += FE.parse("", sql) + FE.bind("", "") + FE.execute() + (Bool.random(using: &rng) ? FE.flush : []) + FE.sync
                    reply += BE.parseComplete + BE.bindComplete + BE.dataRow([String(repeating: "y", count: Int.random(in: 0...3000, using: &rng))])
                        + BE.complete("SELECT 1") + BE.ready("I")
                    messages += request.count  // counted below from the frames instead
                }
                readies += 1
            }
            var expectedServer: [Msg] = []
            var r = MessageReader()
            request.withUnsafeBytes { r.append($0) }
            while let m = r.next() { expectedServer.append(m) }
            send(request, to: a, pieces: Int.random(in: 1...6, using: &rng), &rng)
            let got = h.next(s, expectedServer.count)
            XCTAssertEqual(got, expectedServer, "seed \(seed) round \(round): the server got other bytes")
            let before = a.received.count
            send(reply, to: s.peer, pieces: Int.random(in: 1...6, using: &rng), &rng)
            let msgs = h.readUntilReady(a, count: readies)
            XCTAssertEqual(Array(a.received[before...]), reply, "seed \(seed) round \(round): the client got other bytes")
            if got != expectedServer || msgs.filter({ $0.char == "Z" }).count != readies { return }
        }
        let b = h.login()
        h.roundTrip(b, s, "select 1")
        XCTAssertEqual(h.servers.count, 1, "seed \(seed): the server came back to the pool after every round")
    }

    private func send(_ bytes: [UInt8], to p: Peer, pieces: Int, _ rng: inout SeededRandom) {
        var cuts = (0..<(pieces - 1)).map { _ in Int.random(in: 0...bytes.count, using: &rng) }.sorted()
        cuts.append(bytes.count)
        var at = 0
        for c in cuts where c > at {
            p.send(Array(bytes[at..<c]))
            at = c
            h.step(waitMillis: 0)
        }
    }

    func testErrorInsidePipelineIsPassedAndTheServerReleasedAfterTheLastSync() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(pipeline(2))
        _ = h.next(s, 10)
        // PostgreSQL skips to the Sync after an error.
        s.send(BE.error("42601", "syntax error") + BE.ready("I") + answer(1))
        let got = h.readUntilReady(a, count: 2)
        XCTAssertEqual(got.map { $0.char }, ["E", "Z", "1", "2", "T", "D", "C", "Z"])
        let b = h.login()
        h.roundTrip(b, s, "select 1")
    }

    // MARK: Servers dying

    func testServerDyingInsideAMessageClosesTheClientWithoutSplicingAnError() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select big"))
        _ = h.next(s)
        let row = BE.dataRow([String(repeating: "z", count: 1000)])
        let sent = BE.rowDescription(["big"]) + Array(row[..<500])
        let before = a.received.count
        s.send(sent)
        h.waitUntil("the first half of the row at the client") { a.received.count - before >= sent.count }
        s.close()
        h.waitUntil("the client closed") { a.eof }
        XCTAssertEqual(Array(a.received[before...]), sent, "only what the server sent, nothing spliced in")
        // The pool refills: the next client is served by a new connection.
        let b = h.login()
        b.send(FE.query("select 2"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select 2")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
    }

    func testServerDyingBetweenMessagesGivesTheClientAnError() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select 1"))
        _ = h.next(s)
        s.send(BE.rowDescription(["v"]) + BE.dataRow(["1"]))
        h.read(a, 2)
        s.close()
        let rest = h.readUntilClosed(a)
        XCTAssertEqual(rest.map { $0.char }, ["E"], "\(rest)")
        XCTAssertEqual(rest.first?.sqlState, SQLState.connectionFailure)
        XCTAssertEqual(rest.first?.error?.severity, "FATAL")
    }

    func testServerSendingAnInvalidLengthIsDropped() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select 1"))
        _ = h.next(s)
        s.send([UInt8(ascii: "D")] + TestWire.int32(2))
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.connectionFailure], "\(got)")
        h.waitClosed(s)
    }

    // MARK: What clients send

    func testUnknownMessageTypeGetsOneFatalAndNothingReachesTheServer() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(TestWire.message("z", [1, 2, 3]))
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.count, 1, "\(got)")
        XCTAssertEqual(got.first?.sqlState, SQLState.protocolViolation)
        XCTAssertEqual(got.first?.error?.message, "invalid frontend message type 122")
        h.settle(turns: 5)
        XCTAssertNil(s.nextMessage())
    }

    func testUnknownMessageTypeAfterAQueryStillGetsOneFatal() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")
        a.send(FE.query("select 1") + TestWire.message("z", []))
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.protocolViolation], "\(got)")
        // Mid-transaction, with a query scanned: that server is closed, never handed to anyone else.
        h.waitClosed(s)
        XCTAssertFalse(s.peer.received.contains(UInt8(ascii: "z")), "the garbage never reached the server")
    }

    func testNegativeMessageLengthIsRefused() throws {
        try start()
        let a = h.login()
        a.send([UInt8(ascii: "Q")] + TestWire.int32(-5))
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.protocolViolation], "\(got)")
    }

    func testMessageAboveMaxPacketSizeIsRefused() throws {
        try start(["max_packet_size": "65536"])
        let a = h.login()
        a.send([UInt8(ascii: "Q")] + TestWire.int32(70_000))
        let got = h.readUntilClosed(a)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.protocolViolation], "\(got)")
        XCTAssertTrue(got.first?.error?.message.contains("max_packet_size") ?? false)
    }

    func testTerminateClosesTheClientAndNeverReachesTheServer() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        a.send(FE.terminate)
        XCTAssertEqual(h.readUntilClosed(a), [])
        h.settle(turns: 5)
        XCTAssertNil(s.nextMessage())
        XCTAssertFalse(s.closed)
    }

    // MARK: Large messages

    func testQueryLargerThanTheBufferPassesIntact() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let sql = "select '" + String((0..<100_000).map { Character(UnicodeScalar(UInt8(97 + $0 % 26))) }) + "'"
        a.send(FE.query(sql))
        let m = h.next(s)
        XCTAssertEqual(m?.frame, FE.query(sql))
        s.send(BE.row("ok") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).last?.status, "I")
    }

    func testRowLargerThanTheBufferPassesIntact() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select big"))
        _ = h.next(s)
        let value = String((0..<300_000).map { Character(UnicodeScalar(UInt8(65 + $0 % 26))) })
        let reply = BE.rowDescription(["big"]) + BE.dataRow([value]) + BE.complete("SELECT 1") + BE.ready()
        let before = a.received.count
        s.send(reply)
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"])
        XCTAssertEqual(Array(a.received[before...]), reply)
        let b = h.login()
        h.roundTrip(b, s, "select 1")
    }

    func testLargeUnnamedParseAndBindStreamThrough() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let big = String(repeating: "p", count: 70_000)
        let bytes = FE.parse("", "select '\(big)', $1") + FE.bind("", "", [String(repeating: "b", count: 50_000)])
            + FE.execute() + FE.sync
        a.send(bytes)
        XCTAssertEqual(frames(h.next(s, 4)), bytes)
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["x"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["1", "2", "D", "C", "Z"])
    }

    func testCopyInPassesThrough() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("copy t from stdin"))
        _ = h.next(s)
        s.send(TestWire.message("G", [0] + TestWire.int16(1) + TestWire.int16(0)))
        XCTAssertEqual(h.read(a, 1).first?.char, "G")
        let data = TestWire.message("d", Array("1\n".utf8)) + TestWire.message("d", Array("2\n".utf8)) + TestWire.message("c", [])
        a.send(data)
        XCTAssertEqual(frames(h.next(s, 3)), data)
        s.send(BE.complete("COPY 2") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["C", "Z"])
    }

    // MARK: Edge cases of the response queue

    /// The sequence the fuzzer froze a pool with (HostileClientTests): a Bind to an unknown
    /// statement, then a real unnamed query, a Query exactly the buffer's size and a FunctionCall,
    /// then Sync. Every Sync, Query and FunctionCall gets its ReadyForQuery, and the server comes back.
    func testFuzzerSequenceWithAFunctionCallIsAnsweredToTheEnd() throws {
        // PostgreSQL's answer to the unknown statement (pgswift's extension; the default disconnects).
        try start(databaseOptions: "pool_size=1", pgswift: ["prepared_statement_errors": "postgresql"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let filler = 32_768 - 5 - 1 - "select ''".utf8.count
        let query = FE.query("select '" + String(repeating: "q", count: filler) + "'")
        XCTAssertEqual(query.count, 32_768)
        let call = TestWire.message("F", TestWire.int32(-294_967_296) + TestWire.int16(0) + TestWire.int16(0) + TestWire.int16(0))
        a.send(FE.bind("", "nosuch") + FE.execute() + FE.sync
               + FE.parse("", "select 1") + FE.bind("", "") + FE.execute() + query + call + FE.sync)
        let got = h.next(s, 7)
        XCTAssertEqual(got.map { $0.char }, ["S", "P", "B", "E", "Q", "F", "S"], "the unknown Bind and its Execute are skipped")
        s.send(BE.ready()
               + BE.parseComplete + BE.bindComplete + BE.dataRow(["1"]) + BE.complete("SELECT 1")
               + BE.row("q") + BE.ready()
               + BE.error("42883", "function 4000000000 does not exist") + BE.ready()
               + BE.ready())
        let msgs = h.readUntilReady(a, count: 4)
        XCTAssertEqual(msgs.map { $0.char }, ["E", "Z", "1", "2", "D", "C", "T", "D", "C", "Z", "E", "Z", "Z"])
        let b = h.login()
        h.roundTrip(b, s, "select 'after'")
    }

    /// PostgreSQL skips a Query that follows a failed extended-protocol message up to the Sync: one
    /// ReadyForQuery answers both, and the server must still come back to the pool.
    func testQuerySkippedAfterAnExtendedErrorDoesNotHoldTheServer() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("", "selec 1") + FE.query("select 2") + FE.sync)
        XCTAssertEqual(h.next(s, 3).map { $0.char }, ["P", "Q", "S"])
        s.send(BE.error("42601", "syntax error") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["E", "Z"])
        let b = h.login()
        h.roundTrip(b, s, "select 3")
    }

    func testFlushWithoutSyncKeepsTheServer() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("", "select 1") + FE.bind("", "") + FE.execute() + FE.flush)
        XCTAssertEqual(h.next(s, 4).map { $0.char }, ["P", "B", "E", "H"])
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["1"]) + BE.complete("SELECT 1"))
        XCTAssertEqual(h.read(a, 4).map { $0.char }, ["1", "2", "D", "C"])
        let b = h.login()
        b.send(FE.query("select b"))
        h.settle()
        XCTAssertNil(s.nextMessage(), "mid-protocol (no Sync yet): the server stays with a")
        a.send(FE.sync)
        XCTAssertEqual(h.next(s)?.char, "S")
        s.send(BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["Z"])
        h.answerQuery(s, expect: "select b")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
    }

    /// pgx's describe-then-execute: Parse of the unnamed statement, Describe, Sync; the Bind and
    /// Execute come in the next batch. PostgreSQL keeps that statement on the one server, so the
    /// link is held across the ReadyForQuery between (a released server would give the Bind to
    /// another backend: "unnamed prepared statement does not exist"). Both with and without
    /// prepared-statement tracking (`max_prepared_statements = 0`).
    func testUnnamedStatementParsedInOneBatchAndExecutedInTheNextKeepsItsServer() throws {
        for tracking in ["200", "0"] {
            try start(["max_prepared_statements": tracking], databaseOptions: "pool_size=1")
            let a = h.login()
            let s = try XCTUnwrap(h.waitServers(1))
            a.send(FE.parse("", "select $1::int") + FE.describeStatement("") + FE.sync)
            XCTAssertEqual(h.next(s, 3).map { $0.char }, ["P", "D", "S"])
            let parameterDescription: [UInt8] = [UInt8(ascii: "t"), 0, 0, 0, 10, 0, 1, 0, 0, 0, 23]
            s.send(BE.parseComplete + parameterDescription + BE.rowDescription(["int4"]) + BE.ready())
            XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["1", "t", "T", "Z"])
            let b = h.login()
            b.send(FE.query("select b"))
            h.waitUntil("b queued behind a") { self.h.worker.pools.indices.contains { self.h.worker.pools[$0].waiting.count == 1 } }
            a.send(FE.bind("", "", ["7"]) + FE.execute() + FE.sync)
            XCTAssertEqual(h.next(s, 3).map { $0.char }, ["B", "E", "S"], "a's Bind reached the server its statement is on")
            s.send(BE.bindComplete + BE.dataRow(["7"]) + BE.complete("SELECT 1") + BE.ready())
            XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["2", "D", "C", "Z"])
            // Executed: released, and b gets the server.
            h.answerQuery(s, expect: "select b")
            XCTAssertEqual(h.readUntilReady(b).last?.status, "I", "max_prepared_statements = \(tracking)")
        }
    }

    /// An unnamed statement that failed to parse does not exist: the server goes back to the pool at
    /// that batch's ReadyForQuery (a client that then idles must not hold it).
    func testUnnamedStatementThatFailedToParseDoesNotHoldTheServer() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("", "selec 1") + FE.describeStatement("") + FE.sync)
        XCTAssertEqual(h.next(s, 3).map { $0.char }, ["P", "D", "S"])
        s.send(BE.error("42601", "syntax error") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["E", "Z"])
        let b = h.login()
        h.roundTrip(b, s, "select 3")
    }

    /// A client that parses the unnamed statement and then sends a simple Query has dropped it: the
    /// Query's ReadyForQuery releases the server as usual.
    func testQueryAfterAnUnexecutedUnnamedStatementReleasesTheServer() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("", "select 1") + FE.sync)
        XCTAssertEqual(h.next(s, 2).map { $0.char }, ["P", "S"])
        s.send(BE.parseComplete + BE.ready())
        _ = h.readUntilReady(a)
        h.roundTrip(a, s, "select 2")
        let b = h.login()
        h.roundTrip(b, s, "select 3")
    }

    func testParameterStatusLargerThanTheBufferPassesThrough() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("set application_name = 'long'"))
        _ = h.next(s)
        let ps = BE.parameterStatus("application_name", String(repeating: "n", count: 40_000))
        let reply = ps + BE.complete("SET") + BE.ready()
        let before = a.received.count
        s.send(reply)
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["S", "C", "Z"])
        XCTAssertEqual(Array(a.received[before...]), reply)
    }

    func testFailedParameterSetClosesTheServerAfterTheTransaction() throws {
        try start()
        let a = h.login([("application_name", "x")])
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s, 2).map { $0.firstString }, ["SET application_name='x';", "select 1"])
        s.send(BE.error("22023", "invalid value") + BE.ready() + BE.row("1") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["T", "D", "C", "Z"], "pgswift's own error is not the client's")
        h.waitClosed(s)
    }

    // MARK: Backpressure

    /// Sends `chunk` from `p` again and again until the socket refuses more: the worker stopped
    /// reading (kernel buffers may first absorb a few megabytes). Returns everything sent.
    private func sendUntilRefused(_ p: Peer, _ chunk: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> [UInt8] {
        var sent: [UInt8] = []
        h.waitUntil("the worker to stop reading (sent \(sent.count) bytes)", file: file, line: line) {
            if p.pendingOut > 0 {
                h.settle(turns: 5)
                if p.pendingOut > 0 { return true }
            }
            guard sent.count < 256 << 20 else { return false }
            p.send(chunk)
            sent += chunk
            return false
        }
        return sent
    }

    func testAClientThatStopsReadingGetsEverythingOnceItReadsAgain() throws {
        try start()
        let a = h.login(), b = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select lots"))
        _ = h.next(s0)
        a.readingPaused = true
        let chunk = (0..<100).flatMap { i in BE.dataRow([String(repeating: Character(UnicodeScalar(UInt8(65 + i % 26))), count: 10_000)]) }
        let before = a.received.count
        var reply = BE.rowDescription(["v"])
        s0.send(reply)
        reply += sendUntilRefused(s0.peer, chunk)
        // Meanwhile another client is served by another server.
        b.send(FE.query("select b"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select b")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
        let end = BE.complete("SELECT") + BE.ready()
        s0.send(end)
        reply += end
        a.readingPaused = false
        _ = h.readUntilReady(a)
        XCTAssertEqual(a.received.count - before, reply.count)
        XCTAssertTrue(Array(a.received[before...]) == reply, "the rows arrived intact and in order")
    }

    func testAServerThatStopsReadingGetsEverythingOnceItReadsAgain() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("copy t from stdin"))
        _ = h.next(s)
        s.send(TestWire.message("G", [0] + TestWire.int16(0)))
        XCTAssertEqual(h.read(a, 1).first?.char, "G")
        s.peer.readingPaused = true
        let chunk = (0..<100).flatMap { i in TestWire.message("d", Array(String(repeating: "\(i % 10)", count: 10_000).utf8) + [10]) }
        let before = s.peer.received.count
        var data = sendUntilRefused(a, chunk)
        data += TestWire.message("c", [])
        a.send(TestWire.message("c", []))
        s.peer.readingPaused = false
        h.waitUntil("all the COPY data at the server") { s.peer.received.count - before >= data.count }
        XCTAssertTrue(Array(s.peer.received[before...]) == data, "the COPY data arrived intact and in order")
        s.send(BE.complete("COPY") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map { $0.char }, ["C", "Z"])
    }

    func testAClientThatHangsUpBehindAStuckServerIsClosedAndTheServerWithIt() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("copy t from stdin"))
        _ = h.next(s)
        s.send(TestWire.message("G", [0] + TestWire.int16(0)))
        _ = h.read(a, 1)
        s.peer.readingPaused = true
        _ = sendUntilRefused(a, (0..<100).flatMap { _ in TestWire.message("d", [UInt8](repeating: 65, count: 10_000)) })
        a.close()
        // Its input waits behind a server that does not read: the janitor closes the hung-up client
        // (half a second after the hang-up), and the busy server with it (after a cancel).
        h.waitUntil("a cancel connection for the COPY") { h.servers.contains { $0.cancel?.pid == s.backendPID } }
        s.peer.readingPaused = false
        h.waitClosed(s)
    }

    /// The hooks' prefilter without query statistics passes every type a session hook or the LISTEN
    /// relay acts on and stops the ones an extended transaction sends most besides.
    func testSessionHookTypesPassEveryTypeTheHooksActOn() {
        for t in [FrontendType.query, FrontendType.parse, FrontendType.bind, FrontendType.execute] {
            XCTAssertTrue(SessionHookTypes.contains(t), "type \(t)")
        }
        for t in [FrontendType.sync, FrontendType.describe, FrontendType.flush, FrontendType.copyData,
                  FrontendType.copyDone, FrontendType.close, FrontendType.functionCall] {
            XCTAssertFalse(SessionHookTypes.contains(t), "type \(t)")
        }
    }
}
