// The LISTEN relay's bookkeeping (ListenBook.swift): transaction semantics of a client's LISTEN,
// UNLISTEN and DISCARD ALL, tentative notifications, the listening connection's commands, and the
// first-keyword test, with no worker.
import XCTest
@testable import Worker
import Shared

final class ListenBookTests: XCTestCase {
    private let I = UInt8(ascii: "I"), T = UInt8(ascii: "T"), E = UInt8(ascii: "E")

    private func predicted(_ ops: ListenOp..., before: Int32 = 0) -> ListenClientState {
        var st = ListenClientState(pool: 0)
        for o in ops { st.predicted.append(PredictedListenOp(op: o, readiesBefore: before)) }
        return st
    }

    func testAutocommitListenSubscribesAtReadyForQuery() {
        var st = predicted(.listen("a"))
        XCTAssertEqual(st.tag(.listen), .confirmed)
        XCTAssertTrue(st.subscribed.isEmpty, "not before the transaction ends")
        _ = st.ready(I)
        XCTAssertEqual(st.subscribed, ["a"])
        XCTAssertFalse(st.pending)
    }

    func testListenInsideACommittedBlock() {
        var st = ListenClientState(pool: 0)
        _ = st.tag(.other)  // BEGIN
        _ = st.ready(T)
        st.predicted.append(PredictedListenOp(op: .listen("a"), readiesBefore: 0))
        XCTAssertEqual(st.tag(.listen), .confirmed)
        _ = st.ready(T)
        XCTAssertTrue(st.subscribed.isEmpty)
        _ = st.tag(.commit)
        XCTAssertEqual(st.subscribed, ["a"], "COMMIT's tag commits")
        _ = st.ready(I)
        XCTAssertEqual(st.subscribed, ["a"])
    }

    func testListenInARolledBackBlockDoesNotSubscribe() {
        var st = predicted(.listen("a"))
        _ = st.tag(.listen)
        _ = st.ready(T)
        _ = st.tag(.rollback)
        _ = st.ready(I)
        XCTAssertTrue(st.subscribed.isEmpty)
        XCTAssertFalse(st.pending)
    }

    func testListenInAFailedBlockDoesNotSubscribeEvenWithCommit() {
        var st = predicted(.listen("a"))
        _ = st.tag(.listen)
        _ = st.ready(T)
        st.error()
        _ = st.ready(E)
        _ = st.tag(.rollback)  // COMMIT of a failed block answers ROLLBACK
        _ = st.ready(I)
        XCTAssertTrue(st.subscribed.isEmpty)
    }

    func testAnErrorInTheSameImplicitTransactionUndoesIt() {
        var st = predicted(.listen("a"))
        _ = st.tag(.listen)
        st.error()  // LISTEN a; SELECT 1/0
        _ = st.ready(I)
        XCTAssertTrue(st.subscribed.isEmpty)
    }

    func testRollbackToSavepointKeepsTheListen() {
        var st = predicted(.listen("a"))
        _ = st.tag(.listen)
        _ = st.tag(.rollback)  // ROLLBACK TO s: the same tag, the block goes on
        _ = st.ready(T)
        _ = st.tag(.commit)
        _ = st.ready(I)
        XCTAssertEqual(st.subscribed, ["a"])
    }

    func testAListenThatFailedIsForgotten() {
        var st = predicted(.listen("a"))
        st.error()  // no tag: it never ran
        _ = st.ready(I)
        XCTAssertTrue(st.subscribed.isEmpty)
        XCTAssertTrue(st.empty)
    }

    func testPipelinedQueriesConfirmInTheirOwnTurn() {
        var st = predicted(.listen("a"))
        st.predicted.append(PredictedListenOp(op: .listen("b"), readiesBefore: 1))
        XCTAssertEqual(st.tag(.listen), .confirmed)
        _ = st.ready(I)
        XCTAssertEqual(st.subscribed, ["a"])
        XCTAssertEqual(st.predicted, [PredictedListenOp(op: .listen("b"), readiesBefore: 0)])
        XCTAssertEqual(st.tag(.listen), .confirmed)
        _ = st.ready(I)
        XCTAssertEqual(st.subscribed, ["a", "b"])
    }

    func testAnUnpredictedListenIsReported() {
        var st = ListenClientState(pool: 0)
        XCTAssertEqual(st.tag(.listen), .unpredicted)
        var later = predicted(.listen("b"), before: 1)
        XCTAssertEqual(later.tag(.listen), .unpredicted, "a tag of an earlier query is not the prediction's")
        XCTAssertEqual(later.predicted.count, 1)
    }

    func testUnlistenAndDiscardAll() {
        var st = ListenClientState(pool: 0)
        st.subscribed = ["a", "b", "c"]
        st.predicted = [PredictedListenOp(op: .unlisten("a"), readiesBefore: 0)]
        XCTAssertEqual(st.tag(.unlisten), .confirmed)
        _ = st.ready(I)
        XCTAssertEqual(st.subscribed, ["b", "c"])
        st.predicted = [PredictedListenOp(op: .unlistenAll, readiesBefore: 0)]
        XCTAssertEqual(st.tag(.unlisten), .confirmed)
        _ = st.ready(I)
        XCTAssertTrue(st.subscribed.isEmpty)
        st.subscribed = ["x"]
        st.predicted = [PredictedListenOp(op: .discardAll, readiesBefore: 0)]
        XCTAssertEqual(st.tag(.discardAll), .confirmed)
        _ = st.ready(I)
        XCTAssertTrue(st.subscribed.isEmpty)
    }

    func testUncommittedUnlistenStillDelivers() {
        var st = ListenClientState(pool: 0)
        st.subscribed = ["a"]
        st.predicted = [PredictedListenOp(op: .unlisten("a"), readiesBefore: 0)]
        _ = st.tag(.unlisten)
        guard case .now = st.delivery("a") else { return XCTFail("PostgreSQL delivers until the UNLISTEN commits") }
    }

    func testTentativeNotificationsAreDeliveredOnCommitAndDroppedOnRollback() {
        var st = predicted(.listen("a"))
        guard case .tentative = st.delivery("a") else { return XCTFail() }
        st.tentative.append(("a", [1]))
        _ = st.tag(.listen)
        XCTAssertEqual(st.ready(I), [[1]])
        XCTAssertTrue(st.tentative.isEmpty)

        var rb = predicted(.listen("b"))
        rb.tentative.append(("b", [2]))
        _ = rb.tag(.listen)
        _ = rb.ready(T)
        XCTAssertEqual(rb.ready(T), [], "nothing while the block is open")
        _ = rb.tag(.rollback)
        XCTAssertEqual(rb.ready(I), [])
        XCTAssertTrue(rb.tentative.isEmpty)
        guard case .none = rb.delivery("b") else { return XCTFail() }
    }

    func testHeldWantsCountAsTentative() {
        var st = ListenClientState(pool: 0)
        st.wants = ["h"]
        guard case .tentative = st.delivery("h") else { return XCTFail() }
        var set = Set<String>()
        st.channelsWanted(into: &set)
        XCTAssertEqual(set, ["h"])
    }

    // MARK: The listening connection

    func testCommandsBringTheConnectionToTheUnion() {
        var ps = ListenPoolState()
        XCTAssertEqual(ps.commands(toward: ["a"]), [], "nothing before the login ends")
        ps.ready = true
        XCTAssertEqual(ps.commands(toward: ["a", "b"]), [.listen("a"), .listen("b")])
        XCTAssertEqual(ps.commands(toward: ["a", "b"]), [], "in flight: not sent twice")
        XCTAssertFalse(ps.holds("a"))
        ps.commandDone()
        XCTAssertTrue(ps.holds("a"))
        ps.commandDone()
        XCTAssertEqual(ps.listening, ["a", "b"])
        XCTAssertEqual(ps.commands(toward: ["b"]), [.unlisten("a")])
        XCTAssertFalse(ps.holds("a"), "an UNLISTEN in flight")
        ps.commandDone()
        XCTAssertEqual(ps.listening, ["b"])
        XCTAssertTrue(ps.idle(wanted: []))
        XCTAssertFalse(ps.idle(wanted: ["b"]))
    }

    // MARK: Reading statements

    private func hint(_ s: String) -> ListenStatements.Hint {
        var bytes = Array(s.utf8)
        return bytes.withUnsafeMutableBytes { ListenStatements.firstKeyword($0.baseAddress!, $0.count) }
    }

    func testFirstKeyword() {
        XCTAssertEqual(hint("LISTEN a"), .maybe)
        XCTAssertEqual(hint("  listen \"A\""), .maybe)
        XCTAssertEqual(hint("UnListen *"), .maybe)
        XCTAssertEqual(hint("DISCARD ALL"), .maybe)
        XCTAssertEqual(hint("/* c */ LISTEN a"), .maybe)
        XCTAssertEqual(hint("SELECT 1"), .no)
        XCTAssertEqual(hint("UPDATE t SET a=1"), .no)
        XCTAssertEqual(hint("DELETE FROM t"), .no)
        XCTAssertEqual(hint("listener"), .no)
        XCTAssertEqual(hint("LIST"), .needMore)
        XCTAssertEqual(hint("   "), .needMore)
    }

    func testLaterStatement() {
        func later(_ s: String) -> Bool {
            var bytes = Array(s.utf8) + [0]
            return bytes.withUnsafeMutableBytes { ListenStatements.laterStatement($0.baseAddress!, $0.count) }
        }
        XCTAssertTrue(later("BEGIN; LISTEN a; COMMIT"))
        XCTAssertTrue(later("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;"))
        XCTAssertFalse(later("SELECT 1;"))
        XCTAssertFalse(later("SELECT 1; \n ;"))
        XCTAssertFalse(later("SELECT 1"))
    }

    private func ops(_ s: String) -> [ListenOp] {
        var bytes = Array(s.utf8)
        return bytes.withUnsafeMutableBytes { ListenStatements.ops(UnsafeRawBufferPointer($0), classifier: SQLClassifier()) }
    }

    func testStatementsRead() {
        XCTAssertEqual(ops("LISTEN Chan"), [.listen("chan")])
        XCTAssertEqual(ops("LISTEN \"Chan\""), [.listen("Chan")])
        XCTAssertEqual(ops("LISTEN a; UNLISTEN b; UNLISTEN *; DISCARD ALL; SELECT 1"),
                       [.listen("a"), .unlisten("b"), .unlistenAll, .discardAll])
        XCTAssertEqual(ops("DISCARD TEMP"), [])
        XCTAssertEqual(ops("/* pgswift:primary */ LISTEN x;"), [.listen("x")])
    }

    func testQuotedIdentifier() {
        XCTAssertEqual(quotedIdentifier("a\"b"), "\"a\"\"b\"")
    }
}
