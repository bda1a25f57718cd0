// Transaction mode releases a server when the bytes up to its ReadyForQuery 'I' have reached the
// client (`releaseOnFlush`). A client that pipelines its next query while the previous answer still
// waits for it to read gets that query forwarded to the same server in between: the release must then
// not happen. Before the fix the conditions were checked only when the ReadyForQuery was scanned; the
// server went back to the pool with the query running, the client never got its answer, and the next
// client linked to that server received it (found by the worker harness).
import XCTest
@testable import Worker
import Shared

final class ReleaseOnFlushTests: WorkerHarnessCase {
    func testQueryPipelinedBehindAnUndeliveredAnswerKeepsItsServer() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login(smallBuffers: true)
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select lots"))
        _ = h.next(s)
        a.readingPaused = true
        // An answer that fits pgswift's 32 KiB buffer but not a's socket: its ReadyForQuery is
        // scanned (release due once flushed) while most of it waits for a to read.
        var reply = BE.rowDescription(["v"])
        for _ in 0..<25 { reply += BE.dataRow([String(repeating: "r", count: 1_000)]) }
        reply += BE.complete("SELECT 25") + BE.ready()
        s.send(reply)
        h.settle()
        // a pipelines its next query before reading the first answer (libpq pipeline mode, JDBC batches).
        a.send(FE.query("select next"))
        XCTAssertEqual(h.next(s)?.firstString, "select next")
        a.readingPaused = false
        h.settle()
        let b = h.login()
        b.send(FE.query("select b"))
        h.settle()
        XCTAssertNil(s.nextMessage(), "b got a's server while a's query runs on it")
        s.send(BE.row("for a") + BE.ready())
        let got = h.readUntilReady(a, count: 2)
        XCTAssertEqual(got.filter { $0.char == "Z" }.count, 2, "a's second query was never answered: \(got.suffix(4))")
        // Only now is the server free: b's query reaches it, and b gets its own answer.
        XCTAssertEqual(h.next(s)?.firstString, "select b")
        s.send(BE.row("for b") + BE.ready())
        let forB = h.readUntilReady(b, count: 1)
        XCTAssertFalse(forB.contains { $0.char == "D" && $0.body.suffix(5) == Array("for a".utf8) }, "b received a's row")
        XCTAssertTrue(forB.contains { $0.char == "D" && $0.body.suffix(5) == Array("for b".utf8) }, "b: \(forB)")
    }

    /// The fuzzer's stall: a Query whose answer (here an error and ReadyForQuery 'I') comes back while
    /// the client is still sending a large message after it (a CopyData outside COPY, which PostgreSQL
    /// ignores). The server must stay linked until that message is through: released, the rest of it
    /// had no server to go to and the session hung.
    func testServerIsNotReleasedInTheMiddleOfAClientMessage() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let copyData = TestWire.message("d", [UInt8](repeating: 0, count: 200_000))
        a.send(FE.query("select 1") + Array(copyData[0..<20_000]))
        XCTAssertEqual(h.next(s)?.firstString, "select 1")
        s.send(BE.error("08P01", "invalid string in message") + BE.ready())
        XCTAssertEqual(h.readUntilReady(a).map(\.char), ["E", "Z"])
        a.send(Array(copyData[20_000...]) + FE.sync + FE.query("select 'tail'"))
        let rest = h.next(s, 3)
        XCTAssertEqual(rest.map(\.char), ["d", "S", "Q"], "the rest of the CopyData, Sync and Query reach the server")
        XCTAssertEqual(rest.first?.body.count, 200_000)
        s.send(BE.ready() + BE.row("tail") + BE.ready())
        let got = h.readUntilReady(a, count: 2)
        XCTAssertTrue(got.contains { $0.char == "D" && $0.body.suffix(4) == Array("tail".utf8) }, "\(got.map(\.char))")
    }
}
