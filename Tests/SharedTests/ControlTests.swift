// Tests of the supervisor↔worker control messages: codec round trips, hostile input, a real socket pair.
import Glibc
import XCTest
import Shared

final class ControlTests: XCTestCase {
    static let allMessages: [ControlMessage] = [
        .shutdown(.graceful), .shutdown(.safe), .shutdown(.immediate),
        .reload(overrides: []), .pause, .resume,
        .reload(overrides: [ConfigOverride(key: "default_pool_size", value: "5"),
                            ConfigOverride(key: "server_reset_query", value: "")]),
        .cancel(processID: 0x1234_5678, secretKey: 0xDEAD_BEEF),
        .cancel(processID: -1, secretKey: 0),
        .ready(slot: 3, pid: 4242),
        .forwardCancel(targetSlot: 7, processID: Int32.min, secretKey: UInt32.max),
        .heartbeat(clients: 10_000, servers: 0),
        .log(""),
        .log("worker 1: ünïcödé ✓ line"),
        .quota(database: "app", user: "ünï", quota: 3, seq: 7),
        .quota(database: "", user: "", quota: 0, seq: UInt32.max),
        .poolReport(database: "app", user: "bob", servers: 5, idle: 2, waiting: 40, seq: 9),
        .poolReport(database: "app", user: "bob", servers: 5, idle: 0, waiting: 40, seq: 9, overdue: 3),
        .backendState(host: "db.example", port: 5432, flags: 0x23, addresses: ["10.0.0.1", "::1"]),
        .backendState(host: "127.0.0.1", port: 1, flags: 0, addresses: []),
        .backendFailed(host: "db", port: 6543, reason: "connection refused"),
        .welcomeToWorker(database: "app", user: "bob", parameters: ["server_version", "16.4", "DateStyle", "ISO, MDY"]),
        .welcomeFromWorker(database: "app", user: "ünï", parameters: ["application_name", ""]),
        .welcomeFromWorker(database: "", user: "", parameters: []),
    ]

    private func decode(_ bytes: [UInt8]) throws -> ControlMessage {
        try bytes.withUnsafeBytes { raw throws -> ControlMessage in try ControlMessage.decode(raw) }
    }

    func testEveryMessageRoundTrips() throws {
        for m in Self.allMessages {
            XCTAssertEqual(try decode(m.encode()), m, "\(m)")
        }
    }

    func testWireFormatIsBigEndianKindThenPayload() {
        XCTAssertEqual(ControlMessage.shutdown(.safe).encode(), [0x01, 2])
        XCTAssertEqual(ControlMessage.reload(overrides: []).encode(), [0x02])
        XCTAssertEqual(ControlMessage.reload(overrides: [ConfigOverride(key: "k", value: "v")]).encode(),
                       [0x02, 0, 0, 0, 1, 0, 0, 0, 1, 0x6B, 0, 0, 0, 1, 0x76])
        XCTAssertEqual(ControlMessage.cancel(processID: 0x0102_0304, secretKey: 0xA0B0_C0D0).encode(),
                       [0x05, 1, 2, 3, 4, 0xA0, 0xB0, 0xC0, 0xD0])
        XCTAssertEqual(ControlMessage.ready(slot: 1, pid: 256).encode(), [0x41, 0, 0, 0, 1, 0, 0, 1, 0])
        XCTAssertEqual(ControlMessage.log("ok").encode(), [0x44, 0, 0, 0, 2, 0x6F, 0x6B])
        XCTAssertEqual(ControlMessage.quota(database: "d", user: "u", quota: 2, seq: 1).encode(),
                       [0x07, 0, 0, 0, 1, 0x64, 0, 0, 0, 1, 0x75, 0, 0, 0, 2, 0, 0, 0, 1])
        var reused: [UInt8] = [9]
        ControlMessage.pause.encode(into: &reused)
        XCTAssertEqual(reused, [9, 0x03], "encode(into:) appends")
    }

    /// Welcome parameters travel as name/value pairs: an odd count is refused, not half-read.
    func testWelcomeParametersComeInPairs() {
        let odd = ControlMessage.welcomeToWorker(database: "d", user: "u", parameters: ["a", "b", "c"]).encode()
        XCTAssertThrowsError(try decode(odd))
        let even = ControlMessage.welcomeToWorker(database: "d", user: "u", parameters: ["a", "b"])
        XCTAssertEqual(try decode(even.encode()), even)
    }

    func testEveryTruncationIsAnErrorNotACrash() {
        for m in Self.allMessages {
            let full = m.encode()
            for cut in 0..<full.count {
                // A reload cut right after its kind is a valid reload without SET values.
                if case .reload = m, cut == 1 { continue }
                // A report cut right before its overdue count is a valid report without one.
                if case .poolReport(_, _, _, _, _, _, let overdue) = m, overdue != 0, cut == full.count - 4 { continue }
                XCTAssertThrowsError(try decode(Array(full[0..<cut])), "\(m) cut at \(cut)")
            }
        }
    }

    func testTrailingBytesAreRejected() {
        for m in Self.allMessages {
            XCTAssertThrowsError(try decode(m.encode() + [0]), "\(m)")
        }
    }

    func testUnknownKindModeAndBadTextAreRejected() {
        XCTAssertThrowsError(try decode([0x00])) { error in
            XCTAssertEqual((error as? ControlDecodeError)?.description, "invalid control message: unknown message kind 0")
        }
        XCTAssertThrowsError(try decode([0xFF, 1, 2, 3]))
        XCTAssertThrowsError(try decode([0x01, 0]), "shutdown mode 0")
        XCTAssertThrowsError(try decode([0x01, 4]), "shutdown mode 4")
        XCTAssertThrowsError(try decode([0x44, 0, 0, 0, 2, 0xC3, 0x28]), "invalid UTF-8")
        XCTAssertThrowsError(try decode([0x44, 0xFF, 0xFF, 0xFF, 0xFF, 0x41]), "length beyond the datagram")
    }

    func testRandomGarbageNeverCrashes() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let n = Int.random(in: 0...24, using: &rng)
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? decode(bytes)
        }
    }

    // MARK: Channel over a real SEQPACKET socket pair

    func testChannelCarriesEveryMessageBothWays() throws {
        let (a, b) = try Posix.socketPair()
        let supervisor = ControlChannel(fd: a)
        let worker = ControlChannel(fd: b)
        XCTAssertEqual(worker.receive(), .wouldBlock)
        for m in Self.allMessages { XCTAssertTrue(supervisor.send(m)) }
        for m in Self.allMessages { XCTAssertEqual(worker.receive(), .message(m)) }
        XCTAssertEqual(worker.receive(), .wouldBlock)
        XCTAssertTrue(worker.send(.ready(slot: 0, pid: 99)))
        XCTAssertEqual(supervisor.receive(), .message(.ready(slot: 0, pid: 99)))
    }

    func testChannelReportsInvalidDatagramAndStaysUsable() throws {
        let (a, b) = try Posix.socketPair()
        let receiver = ControlChannel(fd: b)
        defer { Posix.close(a) }
        let junk: [UInt8] = [0x99, 1, 2]
        _ = try junk.withUnsafeBytes { try Posix.send(a, $0.baseAddress!, $0.count) }
        let good = ControlMessage.heartbeat(clients: 1, servers: 2).encode()
        _ = try good.withUnsafeBytes { try Posix.send(a, $0.baseAddress!, $0.count) }
        guard case .invalid(let reason) = receiver.receive() else { return XCTFail("expected .invalid") }
        XCTAssertTrue(reason.contains("unknown message kind 153"), reason)
        XCTAssertEqual(receiver.receive(), .message(.heartbeat(clients: 1, servers: 2)))
    }

    func testOversizedMessagesAreRefusedOnBothSides() throws {
        let (a, b) = try Posix.socketPair()
        let sender = ControlChannel(fd: a)
        let receiver = ControlChannel(fd: b)
        let huge = String(repeating: "x", count: ControlMessage.maximumSize)
        XCTAssertFalse(sender.send(.log(huge)), "longer than maximumSize once encoded")

        // A peer that ignores the limit: the datagram is consumed and reported, not cut and misread.
        let raw = ControlMessage.log(huge).encode()
        let sent = try raw.withUnsafeBytes { try Posix.send(sender.fd, $0.baseAddress!, $0.count) }
        if case .processed = sent {
            guard case .invalid = receiver.receive() else { return XCTFail("expected .invalid") }
        }
        XCTAssertEqual(receiver.receive(), .wouldBlock)
        let fits = String(repeating: "y", count: ControlMessage.maximumSize - 5)
        XCTAssertTrue(sender.send(.log(fits)))
        XCTAssertEqual(receiver.receive(), .message(.log(fits)))
    }

    func testChannelReportsClosedPeer() throws {
        let (a, b) = try Posix.socketPair()
        var sender: ControlChannel? = ControlChannel(fd: a)
        let receiver = ControlChannel(fd: b)
        XCTAssertTrue(sender?.send(.pause) ?? false)
        sender = nil  // closes the fd
        XCTAssertEqual(receiver.receive(), .message(.pause), "queued messages are still delivered")
        XCTAssertEqual(receiver.receive(), .closed)
        XCTAssertFalse(receiver.send(.resume), "peer gone")
    }

    func testSendReportsFullSocket() throws {
        let (a, b) = try Posix.socketPair()
        let sender = ControlChannel(fd: a)
        let receiver = ControlChannel(fd: b)
        var accepted = 0
        while sender.send(.heartbeat(clients: 1, servers: 1)) {
            accepted += 1
            if accepted > 1_000_000 { return XCTFail("socket never filled") }
        }
        XCTAssertGreaterThan(accepted, 0)
        XCTAssertEqual(receiver.receive(), .message(.heartbeat(clients: 1, servers: 1)))
    }
}

/// The stats messages carry one StatsChunk each, filling the rest of the datagram.
final class ControlStatsMessageTests: XCTestCase {
    private func decode(_ bytes: [UInt8]) throws -> ControlMessage {
        try bytes.withUnsafeBytes { raw throws -> ControlMessage in try ControlMessage.decode(raw) }
    }

    func testStatsMessagesRoundTripWithKinds0x06And0x45() throws {
        let chunks = StatsChunk.split(Array(repeating: 7, count: 300), kind: .periodicSnapshot, slot: 2,
                                      requestID: 0, maximumSize: 100)
        XCTAssertEqual(chunks.count, 4)
        for c in chunks {
            let up = ControlMessage.statsFromWorker(c)
            XCTAssertEqual(up.encode().first, 0x45)
            XCTAssertEqual(try decode(up.encode()), up)
            let down = ControlMessage.statsToWorker(c)
            XCTAssertEqual(down.encode().first, 0x06)
            XCTAssertEqual(Array(down.encode().dropFirst()), c)
            XCTAssertEqual(try decode(down.encode()), down)
        }
    }

    func testAStatsMessageWithABrokenChunkIsRejected() {
        let good = StatsChunk.split([1, 2, 3], kind: .adminRequest, slot: 0, requestID: 9)[0]
        for cut in 0..<StatsChunk.headerSize {
            XCTAssertThrowsError(try decode([0x45] + Array(good[0..<cut])), "cut at \(cut)")
        }
        var badKind = good
        badKind[0] = 0xEE
        XCTAssertThrowsError(try decode([0x06] + badKind))
        var badIndex = good
        badIndex[12] = 5  // index 5 of 1
        XCTAssertThrowsError(try decode([0x45] + badIndex))
    }

    func testALargestChunkFitsOneControlMessage() throws {
        let blob = [UInt8](repeating: 0xAB, count: 200_000)
        let chunks = StatsChunk.split(blob, kind: .adminResult, slot: 1, requestID: 3,
                                      maximumSize: ControlMessage.maximumSize - 1)
        var r = StatsReassembler()
        var out: StatsBlob?
        for c in chunks {
            let m = ControlMessage.statsToWorker(c)
            XCTAssertLessThanOrEqual(m.encode().count, ControlMessage.maximumSize)
            guard case .statsToWorker(let back) = try decode(m.encode()) else { return XCTFail() }
            out = try r.add(back)
        }
        XCTAssertEqual(out?.bytes, blob)
    }
}

/// The outbox keeps what a full socket refused and sends it, in order, once the peer reads.
final class ControlOutboxTests: XCTestCase {
    func testAFullSocketQueuesAndDrainsInOrder() throws {
        let (a, b) = try Posix.socketPair()
        let receiver = ControlChannel(fd: b)
        defer { Posix.close(a) }
        var outbox = ControlOutbox()
        let chunks = StatsChunk.split([UInt8](repeating: 0x5A, count: 3_000_000), kind: .adminResult, slot: 0, requestID: 1)
        for c in chunks {
            XCTAssertTrue(outbox.enqueue(ControlMessage.statsToWorker(c).encode()))
            XCTAssertTrue(outbox.drain(fd: a))
        }
        XCTAssertFalse(outbox.isEmpty, "3 MB cannot fit a socket buffer: some chunks must wait")
        var reassembler = StatsReassembler()
        var blob: StatsBlob?
        var rounds = 0
        while blob == nil && rounds < 10_000 {
            rounds += 1
            switch receiver.receive() {
            case .message(.statsToWorker(let c)): blob = try reassembler.add(c)
            case .wouldBlock: XCTAssertTrue(outbox.drain(fd: a))
            default: return XCTFail("unexpected receive result")
            }
        }
        XCTAssertTrue(outbox.isEmpty)
        XCTAssertEqual(blob?.bytes.count, 3_000_000)
    }
}
