// Tests of the internal message codec (MessageWriter / MessageReader) and of the wire bytes it must
// keep: control and handoff datagrams cross binary versions during a rolling upgrade.
import XCTest
import Shared

private struct TestFailure: MessageDecodeFailure, Equatable {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}

private typealias Reader = MessageReader<TestFailure>

private enum Color: UInt8, MessageField { case red = 1, blue = 2 }

final class MessageCodecTests: XCTestCase {
    private func sample() -> [UInt8] {
        var w = MessageWriter()
        w.put(Color.blue, Int32(-2), UInt32(0xDEAD_BEEF), UInt64(1) << 40 | 7, Int64(-3), true, "ünï", [UInt8]([9, 8]))
        w.varint(300)
        w.signed(-65)
        w.compactString("db")
        w.raw([0xAA, 0xBB])
        return w.bytes
    }

    private struct Sample: Equatable {
        var color: Color, i32: Int32, u32: UInt32, u64: UInt64, i64: Int64, flag: Bool, text: String, blob: [UInt8]
        var varint: UInt64, signed: Int64, compact: String, rest: [UInt8]
    }

    private func readSample(_ r: inout Reader) throws(TestFailure) -> Sample {
        let s = Sample(color: try r.code(Color.self, "color"), i32: try r.i32("i32"), u32: try r.u32("u32"),
                       u64: try r.u64("u64"), i64: Int64(bitPattern: try r.u64("i64")), flag: try r.bool("flag"),
                       text: try r.string("text"), blob: try r.blob("blob"), varint: try r.varint("varint"),
                       signed: try r.signed("signed"), compact: try r.compactString("compact"), rest: Array(r.rest()))
        try r.expectEnd("sample")
        return s
    }

    func testRoundTripAndLayout() throws {
        let bytes = sample()
        let s = try Reader.reading(bytes) { r throws(TestFailure) in try readSample(&r) }
        XCTAssertEqual(s, Sample(color: .blue, i32: -2, u32: 0xDEAD_BEEF, u64: UInt64(1) << 40 | 7, i64: -3, flag: true,
                                 text: "ünï", blob: [9, 8], varint: 300, signed: -65, compact: "db", rest: [0xAA, 0xBB]))
        // Fixed style is big-endian with u32 length prefixes; compact style is LEB128 / zigzag.
        XCTAssertEqual(Array(bytes.prefix(9)), [2, 0xFF, 0xFF, 0xFF, 0xFE, 0xDE, 0xAD, 0xBE, 0xEF])
        XCTAssertEqual(Array(bytes[26..<33]), [0, 0, 0, 5, 0xC3, 0xBC, 0x6E])
        XCTAssertEqual(Array(bytes.suffix(9)), [0xAC, 0x02, 0x81, 0x01, 2, 0x64, 0x62, 0xAA, 0xBB])
    }

    /// Every prefix that cuts a field is refused with a reason, never a trap.
    func testTruncatedInputIsRejected() {
        let bytes = sample()
        for n in 0..<(bytes.count - 2) {
            XCTAssertThrowsError(try Reader.reading(Array(bytes.prefix(n))) { r throws(TestFailure) in
                _ = try readSample(&r)
            }, "prefix of \(n) bytes") { error in
                XCTAssertTrue((error as? TestFailure)?.reason.contains("truncated") == true, "\(error)")
            }
        }
    }

    func testHostileFieldsAreRejected() {
        func fails(_ bytes: [UInt8], _ read: (inout Reader) throws(TestFailure) -> Void) -> String? {
            do throws(TestFailure) {
                try Reader.reading(bytes) { r throws(TestFailure) in try read(&r) }
                return nil
            } catch {
                return error.reason
            }
        }
        XCTAssertEqual(fails([3]) { r throws(TestFailure) in _ = try r.code(Color.self, "color") }, "unknown color 3")
        XCTAssertEqual(fails([2]) { r throws(TestFailure) in _ = try r.bool("flag") }, "bad flag 2 (flag)")
        XCTAssertEqual(fails([0, 0, 0, 2, 0xC3, 0x28]) { r throws(TestFailure) in _ = try r.string("name") },
                       "name is not valid UTF-8")
        XCTAssertEqual(fails([0xFF, 0xFF, 0xFF, 0xFF, 1, 2]) { r throws(TestFailure) in
            _ = try r.count("rows", minimumEach: 1)
        }, "element count 4294967295 exceeds the data (rows)")
        XCTAssertEqual(fails([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]) { r throws(TestFailure) in
            _ = try r.varint("v")
        }, "varint overflow (v)")
        XCTAssertEqual(fails([0x80, 0x80, 0x80, 0x80, 0x10]) { r throws(TestFailure) in _ = try r.signed32("v") },
                       "value out of range (v)")
        XCTAssertEqual(fails([1, 2]) { r throws(TestFailure) in
            _ = try r.u8("one")
            try r.expectEnd("message")
        }, "1 unexpected trailing bytes after message")
    }

    /// Lists: `array` writes a u32 count and the fields of each element, as `MessageReader.array`
    /// reads them; `compactArray` reads a varint count, bounded by the bytes left.
    func testListsRoundTripAndLayout() throws {
        var w = MessageWriter()
        w.array([Color.red, Color.blue])
        w.array([Color]())
        w.varint(2)
        w.raw([1, 2])
        XCTAssertEqual(w.bytes, [0, 0, 0, 2, 1, 2, 0, 0, 0, 0, 2, 1, 2])
        let back = try Reader.reading(w.bytes) { r throws(TestFailure) in
            let fixed = try r.array("colors", minimumEach: 1) { r throws(TestFailure) in try r.code(Color.self, "color") }
            let none = try r.array("colors", minimumEach: 1) { r throws(TestFailure) in try r.code(Color.self, "color") }
            let compact = try r.compactArray("colors", minimumEach: 1) { r throws(TestFailure) in try r.code(Color.self, "color") }
            try r.expectEnd("lists")
            return (fixed, none, compact)
        }
        XCTAssertEqual(back.0, [.red, .blue])
        XCTAssertEqual(back.1, [])
        XCTAssertEqual(back.2, [.red, .blue])
        XCTAssertThrowsError(try Reader.reading([5, 1, 2]) { r throws(TestFailure) in
            _ = try r.compactArray("colors", minimumEach: 1) { r throws(TestFailure) in try r.code(Color.self, "color") }
        }) { error in XCTAssertEqual((error as? TestFailure)?.reason, "element count 5 exceeds the data (colors)") }
    }

    func testAppendingToAnExistingBuffer() {
        var out: [UInt8] = [7]
        var w = MessageWriter(appendingTo: &out)
        w.put(UInt8(1), "a")
        w.finish(into: &out)
        XCTAssertEqual(out, [7, 1, 0, 0, 0, 1, 0x61])
    }

    // MARK: wire bytes that must not change (encoded by main at fb5702a, before this codec existed)

    func testControlMessagesKeepTheirBytes() throws {
        let expected: [(ControlMessage, String)] = [
            (.shutdown(.safe), "0102"), (.reload(overrides: []), "02"), (.cancel(processID: -5, secretKey: 0xFEED_FACE), "05fffffffbfeedface"),
            (.quota(database: "db", user: "ü", quota: 7, seq: 9), "0700000002646200000002c3bc0000000700000009"),
            (.drain(handoff: true), "1001"),
            (.backendState(host: "h", port: 5432, flags: 3, addresses: ["10.0.0.1", "::1"]),
             "2000000001680000153803000000020000000831302e302e302e31000000033a3a31"),
            (.ready(slot: 2, pid: 1234), "4100000002000004d2"),
            (.forwardCancel(targetSlot: 1, processID: 2, secretKey: 3), "42000000010000000200000003"),
            (.peerCancel(peerID: 7, processID: 2, secretKey: 3), "48000000070000000200000003"),
            (.heartbeat(clients: 4, servers: -1), "4300000004ffffffff"), (.log("x"), "440000000178"),
            (.poolReport(database: "d", user: "u", servers: 1, idle: 2, waiting: 3, seq: 4),
             "460000000164000000017500000001000000020000000300000004"),
            // reserve_pool_size: clients past reserve_pool_timeout, a trailing field only when not 0.
            (.poolReport(database: "d", user: "u", servers: 1, idle: 2, waiting: 3, seq: 4, overdue: 5),
             "46000000016400000001750000000100000002000000030000000400000005"),
            (.backendFailed(host: "h", port: 1, reason: "r"), "600000000168000000010000000172"),
            (.limitsToWorker(.groupQuota(LimitGroupKey(kind: .user, name: "bob"), quota: 3, seq: 8)),
             "30010200000003626f620000000300000008"),
            (.limitsToWorker(.database(.kill, database: "db", requestID: 77)), "3002060000000264620000004d"),
            // KILL_CLIENT's id is 64 bits and service-wide (kind 5; 3 was the 32-bit per-worker id).
            (.limitsToWorker(.killClient(clientID: 0x1_0000_0005, requestID: 6)), "3005000000010000000500000006"),
            (.limitsToWorker(.warm(database: "a", user: "b", count: 2)), "30040000000161000000016200000002"),
            (.limitsFromWorker(.groupReport(LimitGroupKey(kind: .database, name: "db"), servers: 1, idle: 2, waiting: 3,
                                            seq: 4)), "70810100000002646200000001000000020000000300000004"),
            (.limitsFromWorker(.reply(requestID: 9, count: -2)), "708200000009fffffffe"),
            // Server moves (issue 18): `ready`'s features and `quota`'s moveTo are new kinds or trailing
            // fields, so the bytes above (what older builds send and read) are unchanged.
            (.ready(slot: 2, pid: 1234, features: 1), "4100000002000004d200000001"),
            (.quota(database: "d", user: "u", quota: 1, seq: 2, moveTo: 3), "0800000001640000000175000000010000000200000003"),
            (.moveServer(targetSlot: 1, state: [0xAB]), "4700000001ab"),
            (.adoptServer([0xCD, 0xEF]), "09cdef"),
            // Pairs move (issue 18): `drain` carries the successor's features as a trailing field, sent
            // only to a worker that announced pairMoves; without it the bytes are those above.
            (.drain(handoff: true, successorFeatures: 3), "100100000003"),
            (.drain(handoff: false, successorFeatures: 0), "1000"),
            (.ready(slot: 2, pid: 1234, features: 3), "4100000002000004d200000003"),
        ]
        for (message, hex) in expected {
            XCTAssertEqual(Self.hex(message.encode()), hex, "\(message)")
            XCTAssertEqual(try message.encode().withUnsafeBytes { try ControlMessage.decode($0) }, message)
        }
    }

    func testHandoffKeepsItsBytes() throws {
        let golden = "50474831000000036170700000000ec3bc6ec3af63c3b664c3a9206462000000030000000f636c69656e745f656e636f"
            + "64696e670000000455544638000000106170706c69636174696f6e5f6e616d6500000007706762656e63680000000b7365617263"
            + "685f706174680000000000000007706762656e6368000000000010004ddeadbeef0100000004756e69780000001cbe991a1400000002"
            + "0000000273310000001073656c65637420243100000100000017000000000000000000000006510000000973000000200707070707"
            + "070707070707070707070707070707070707070707070707070707"
        XCTAssertEqual(Self.hex(HandoffCodecTests.full.encode()), golden)
    }

    /// A client with its server (issue 18): the nested client and server states are the bytes pinned
    /// above and in HandoffServerCodecTests, each behind a u32 length.
    func testPairHandoffKeepsItsBytes() throws {
        let pair = HandoffPair(client: HandoffClient(user: "u", database: "d", processID: 7, secretKey: 9),
                               server: HandoffServer(database: "d", user: "u", id: 5, backendPID: 6, backendKey: 8),
                               poolMode: "session", txStatus: UInt8(ascii: "T"), needsReset: true, lastReady: 10,
                               xactStart: -1)
        let client = Self.hex(pair.client.encode()), server = Self.hex(pair.server.encode())
        XCTAssertEqual(client, "5047483100000001750000000164000000000000000000000000000000070000000900000000000000000000000000000000000000000000000000")
        XCTAssertEqual(server, "50475331000000016400000001750000000000000005000000060000000800000000000000000000000000000000000000000000000000000000")
        XCTAssertEqual(Self.hex(pair.encode()), "50475031" + "0000003b" + client + "0000003a" + server
                       + "0000000773657373696f6e" + "54" + "01" + "000000000000000a" + "ffffffffffffffff")
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
    }
}
