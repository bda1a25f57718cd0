// Tests of the auth_query wire pieces: the extended-protocol request and the reply reader's outcomes.
import XCTest
@testable import Shared

final class AuthQueryReplyTests: XCTestCase {
    /// Splits encoded backend messages and feeds them to a fresh reader; returns the last step.
    private func feed(_ build: (inout OutBuffer) -> Void) -> [AuthQueryReply.Step] {
        var out = OutBuffer(capacity: 256)
        build(&out)
        let bytes = out.withUnsafeBytes { [UInt8]($0) }
        var reply = AuthQueryReply()
        var steps: [AuthQueryReply.Step] = []
        var p = 0
        while p + 5 <= bytes.count {
            let len = Int(bytes[p + 1]) << 24 | Int(bytes[p + 2]) << 16 | Int(bytes[p + 3]) << 8 | Int(bytes[p + 4])
            let body = Array(bytes[(p + 5)..<(p + 1 + len)])
            steps.append(body.withUnsafeBytes { reply.receive(type: bytes[p], body: $0) })
            p += 1 + len
        }
        XCTAssertEqual(p, bytes.count)
        return steps
    }

    private func outcome(_ build: (inout OutBuffer) -> Void) -> AuthQueryReply.Outcome? {
        let steps = feed(build)
        XCTAssertEqual(steps.dropLast().filter { $0 != .more }, [], "only the last message decides")
        guard case .done(let o, _)? = steps.last else {
            XCTFail("no decision: \(steps)")
            return nil
        }
        return o
    }

    private func prefix(_ out: inout OutBuffer) {
        out.appendEmptyMessage(BackendType.parseComplete)
        out.appendEmptyMessage(BackendType.bindComplete)
    }

    func testRequestIsParseBindExecuteSyncWithTheUserAsTextParameter() {
        var out = OutBuffer(capacity: 256)
        AuthQueryReply.request(into: &out, query: "SELECT u, p FROM f($1)", user: "o'neil")
        let bytes = out.withUnsafeBytes { [UInt8]($0) }
        var types: [Character] = []
        var p = 0
        while p < bytes.count {
            types.append(Character(UnicodeScalar(bytes[p])))
            let len = Int(bytes[p + 1]) << 24 | Int(bytes[p + 2]) << 16 | Int(bytes[p + 3]) << 8 | Int(bytes[p + 4])
            p += 1 + len
        }
        XCTAssertEqual(types, ["P", "B", "E", "S"])
        let text = String(decoding: bytes, as: UTF8.self)
        XCTAssertTrue(text.contains("SELECT u, p FROM f($1)"))
        XCTAssertTrue(text.contains("o'neil"), "the name travels as a parameter, never spliced into SQL")
    }

    func testFoundRow() {
        let o = outcome { out in
            prefix(&out)
            Backend.dataRow(into: &out, ["alice", "md5abc"])
            Backend.commandComplete(into: &out, tag: "SELECT 1")
            Backend.readyForQuery(into: &out, status: UInt8(ascii: "I"))
        }
        XCTAssertEqual(o, .found(user: "alice", password: "md5abc"))
    }

    func testTransactionStatusIsReported() {
        let steps = feed { out in
            Backend.dataRow(into: &out, ["a", "b"])
            Backend.readyForQuery(into: &out, status: UInt8(ascii: "T"))
        }
        XCTAssertEqual(steps.last, .done(.found(user: "a", password: "b"), transactionStatus: UInt8(ascii: "T")))
    }

    func testNullPasswordMeansNoUsablePassword() {
        let o = outcome { out in
            Backend.dataRow(into: &out, ["alice", nil])
            Backend.readyForQuery(into: &out, status: UInt8(ascii: "I"))
        }
        XCTAssertEqual(o, .found(user: "alice", password: nil))
    }

    func testNoRowOrNullUserIsNotFound() {
        XCTAssertEqual(outcome { out in
            prefix(&out)
            Backend.commandComplete(into: &out, tag: "SELECT 0")
            Backend.readyForQuery(into: &out, status: UInt8(ascii: "I"))
        }, .notFound)
        XCTAssertEqual(outcome { out in
            Backend.dataRow(into: &out, [nil, nil])
            Backend.readyForQuery(into: &out, status: UInt8(ascii: "I"))
        }, .notFound)
    }

    func testErrorsAndOddShapesFail() {
        guard case .failed(let reason)? = outcome({ out in
            out.appendEmptyMessage(BackendType.parseComplete)
            Backend.errorResponse(into: &out, ErrorFields(severity: "ERROR", code: "42501",
                                                          message: "permission denied for table pg_authid"))
            Backend.readyForQuery(into: &out, status: UInt8(ascii: "I"))
        }) else { return XCTFail("an error must fail") }
        XCTAssertTrue(reason.contains("permission denied for table pg_authid (42501)"), reason)

        guard case .failed(let two)? = outcome({ out in
            Backend.dataRow(into: &out, ["a", "x"])
            Backend.dataRow(into: &out, ["a", "y"])
            Backend.readyForQuery(into: &out, status: UInt8(ascii: "I"))
        }) else { return XCTFail("two rows must fail") }
        XCTAssertTrue(two.contains("2 rows"), two)

        guard case .failed(let cols)? = outcome({ out in
            Backend.dataRow(into: &out, ["a"])
            Backend.readyForQuery(into: &out, status: UInt8(ascii: "I"))
        }) else { return XCTFail("one column must fail") }
        XCTAssertTrue(cols.contains("1 columns"), cols)
    }

    func testNoticesAndParameterStatusAreIgnored() {
        XCTAssertEqual(outcome { out in
            Backend.noticeResponse(into: &out, ErrorFields(severity: "NOTICE", code: "00000", message: "hi"))
            Backend.parameterStatus(into: &out, name: "TimeZone", value: "UTC")
            Backend.dataRow(into: &out, ["bob", "SCRAM-SHA-256$4096:c2FsdA==$a:b"])
            Backend.readyForQuery(into: &out, status: UInt8(ascii: "I"))
        }, .found(user: "bob", password: "SCRAM-SHA-256$4096:c2FsdA==$a:b"))
    }

    func testUnexpectedMessagesAreProtocolErrors() {
        var reply = AuthQueryReply()
        let copyIn = [UInt8](repeating: 0, count: 3)
        if case .protocolError = copyIn.withUnsafeBytes({ reply.receive(type: BackendType.copyInResponse, body: $0) }) {
        } else {
            XCTFail("CopyInResponse has no place in an auth_query reply")
        }
        let badRow: [UInt8] = [0, 2, 0, 0, 0, 9, 65]  // claims 9 bytes, has 1
        if case .protocolError = badRow.withUnsafeBytes({ reply.receive(type: BackendType.dataRow, body: $0) }) {
        } else {
            XCTFail("a truncated DataRow is a protocol error")
        }
        let badZ: [UInt8] = [73, 73]
        if case .protocolError = badZ.withUnsafeBytes({ reply.receive(type: BackendType.readyForQuery, body: $0) }) {
        } else {
            XCTFail("a two-byte ReadyForQuery is a protocol error")
        }
    }
}
