// Tests of the rolling-restart client handoff codec and the `drain` control message: round trips,
// hostile input, and a socket carried with its state over a real SEQPACKET pair.
import Glibc
import XCTest
import Shared

final class HandoffCodecTests: XCTestCase {
    static let full = HandoffClient(
        user: "app", database: "ünïcödé db",
        parameters: [HandoffParameter(name: "client_encoding", value: "UTF8"),
                     HandoffParameter(name: "application_name", value: "pgbench"),
                     HandoffParameter(name: "search_path", value: "")],
        applicationName: "pgbench", protocolMinor: 0, processID: (1 << 20) | 77, secretKey: 0xDEAD_BEEF,
        isUnix: true, peer: "unix", connectedAt: 123_456_789_012,
        prepared: [HandoffStatement(name: "s1", body: Array("select $1\0".utf8) + [0, 1, 0, 0, 0, 23]),
                   HandoffStatement(name: "", body: [])],
        pending: [0x51, 0, 0, 0, 9, 0x73], scramClientKey: Array(repeating: 7, count: 32))

    private func decode(_ bytes: [UInt8]) throws -> HandoffClient {
        try bytes.withUnsafeBytes { raw throws -> HandoffClient in try HandoffClient.decode(raw) }
    }

    func testRoundTrips() throws {
        XCTAssertEqual(try decode(Self.full.encode()), Self.full)
        let minimal = HandoffClient(user: "u", database: "d", processID: -1, secretKey: 0)
        XCTAssertEqual(try decode(minimal.encode()), minimal)
    }

    /// Carried session state (issue 19) comes after the fields above, and only when there is some: a
    /// client without any keeps the bytes MessageCodecTests pins (a build that predates it reads
    /// them), and one with some cannot be cut anywhere but at that boundary.
    func testCarriedSessionStateFollowsTheOlderFields() throws {
        var carried = Self.full
        carried.settings = [HandoffSetting(key: "statement_timeout", set: "SET statement_timeout TO '12s'",
                                           reset: "RESET statement_timeout")]
        carried.sqlPrepared = [HandoffParameter(name: "s", value: "PREPARE s AS select 42")]
        let bytes = carried.encode()
        XCTAssertEqual(try decode(bytes), carried)
        let older = Self.full.encode()
        XCTAssertEqual(Array(bytes.prefix(older.count)), older)
        for n in 0..<bytes.count where n != older.count {
            XCTAssertThrowsError(try decode(Array(bytes.prefix(n))), "prefix of \(n) bytes")
        }
        XCTAssertThrowsError(try decode(bytes + [0]))
    }

    func testEveryTruncationAndTrailingByteIsRejected() {
        let bytes = Self.full.encode()
        for n in 0..<bytes.count {
            XCTAssertThrowsError(try decode(Array(bytes.prefix(n))), "prefix of \(n) bytes")
        }
        XCTAssertThrowsError(try decode(bytes + [0]))
    }

    func testForeignFormatAndHugeCountsAreRejected() {
        XCTAssertThrowsError(try decode(Array("PGH2".utf8) + Array(Self.full.encode().dropFirst(4)))) { error in
            XCTAssertEqual("\(error)", "invalid client handoff: not a pgswift client handoff (format PGH1)")
        }
        // A parameter count of 2^32-1 in a short datagram must not allocate or loop.
        var w = Array("PGH1".utf8) + [0, 0, 0, 1, 0x75, 0, 0, 0, 1, 0x64]
        w += [0xFF, 0xFF, 0xFF, 0xFF]
        XCTAssertThrowsError(try decode(w))
        // Invalid UTF-8 in a name.
        var bad = Self.full.encode()
        bad[8] = 0xFF
        XCTAssertThrowsError(try decode(bad))
    }

    func testDrainControlMessage() throws {
        for m in [ControlMessage.drain(handoff: true), .drain(handoff: false), .drain(handoff: true, successorFeatures: 3)] {
            XCTAssertEqual(try m.encode().withUnsafeBytes { try ControlMessage.decode($0) }, m)
        }
        XCTAssertEqual(ControlMessage.drain(handoff: true).encode(), [0x10, 1])
        XCTAssertThrowsError(try [UInt8]([0x10, 2]).withUnsafeBytes { try ControlMessage.decode($0) })
        XCTAssertThrowsError(try [UInt8]([0x10]).withUnsafeBytes { try ControlMessage.decode($0) })
        // The successor's features: a whole u32 or nothing.
        XCTAssertThrowsError(try [UInt8]([0x10, 1, 0, 0]).withUnsafeBytes { try ControlMessage.decode($0) })
        XCTAssertThrowsError(try [UInt8]([0x10, 1, 0, 0, 0, 1, 0]).withUnsafeBytes { try ControlMessage.decode($0) })
    }

    /// The state and a socket travel together; the received descriptor is the same connection.
    func testStateAndSocketTravelTogether() throws {
        let (a, b) = try Posix.socketPair()
        defer { Posix.close(a); Posix.close(b) }
        let (client, server) = try Posix.socketPair(type: cl_SOCK_STREAM_value())
        defer { Posix.close(client) }
        let bytes = Self.full.encode()
        let sent = try bytes.withUnsafeBytes { try Posix.sendWithFDs(a, $0, fds: [server]) }
        XCTAssertEqual(sent, .processed(bytes.count))
        Posix.close(server)
        let buf = UnsafeMutableRawPointer.allocate(byteCount: HandoffClient.maximumSize + 1, alignment: 8)
        defer { buf.deallocate() }
        var fds: [Int32] = []
        let got = try Posix.receiveWithFDs(b, buf, HandoffClient.maximumSize + 1, fds: &fds)
        XCTAssertEqual(got, .processed(bytes.count))
        XCTAssertEqual(fds.count, 1)
        XCTAssertEqual(try HandoffClient.decode(UnsafeRawBufferPointer(start: buf, count: bytes.count)), Self.full)
        // Bytes written by the "client" reach the passed descriptor.
        var ping: [UInt8] = [1, 2, 3]
        XCTAssertEqual(Glibc.write(client, &ping, 3), 3)
        var back = [UInt8](repeating: 0, count: 3)
        XCTAssertEqual(Glibc.read(fds[0], &back, 3), 3)
        XCTAssertEqual(back, ping)
        Posix.close(fds[0])
    }
}

private func cl_SOCK_STREAM_value() -> Int32 { Int32(SOCK_STREAM.rawValue) }

/// The state of a server connection moving between workers (issue 18), and the outbox that carries its socket.
final class HandoffServerCodecTests: XCTestCase {
    static let full = HandoffServer(
        database: "ünï db", user: "app", id: 0x1_0000_0042, backendPID: 4242, backendKey: 0xFEED_BEEF,
        createdAt: 987_654_321_000, hostKey: "127.0.0.1:5432", address: "127.0.0.1:5432",
        parameters: [HandoffParameter(name: "search_path", value: "a, b"), HandoffParameter(name: "TimeZone", value: "UTC")],
        prepared: [HandoffServerStatement(serverID: 7, body: Array("select $1\0".utf8) + [0, 1, 0, 0, 0, 23]),
                   HandoffServerStatement(serverID: 0, body: [])],
        welcome: [HandoffParameter(name: "server_version", value: "16.4")])

    private func decode(_ bytes: [UInt8]) throws -> HandoffServer {
        try bytes.withUnsafeBytes { raw throws -> HandoffServer in try HandoffServer.decode(raw) }
    }

    func testRoundTrips() throws {
        XCTAssertEqual(try decode(Self.full.encode()), Self.full)
        let minimal = HandoffServer(database: "d", user: "u")
        XCTAssertEqual(try decode(minimal.encode()), minimal)
    }

    func testEveryTruncationTrailingByteAndForeignFormatIsRejected() {
        let bytes = Self.full.encode()
        for n in 0..<bytes.count {
            XCTAssertThrowsError(try decode(Array(bytes.prefix(n))), "prefix of \(n) bytes")
        }
        XCTAssertThrowsError(try decode(bytes + [0]))
        XCTAssertThrowsError(try decode(Array("PGS2".utf8) + Array(bytes.dropFirst(4)))) { error in
            XCTAssertEqual("\(error)", "invalid client handoff: not a pgswift server handoff (format PGS1)")
        }
        XCTAssertThrowsError(try decode(HandoffCodecTests.full.encode()), "a client state is not a server state")
    }

    /// A datagram queued with a descriptor goes out with it, in order behind the ones queued before;
    /// the outbox closes its own copy once sent, and closes what it drops.
    func testOutboxCarriesADescriptorInOrderAndClosesItsCopy() throws {
        let (a, b) = try Posix.socketPair()
        defer { Glibc.close(a); Glibc.close(b) }
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        defer { Glibc.close(fds[1]) }
        var box = ControlOutbox()
        XCTAssertTrue(box.enqueue([1]))
        XCTAssertTrue(box.enqueue([2], fd: fds[0]))
        XCTAssertTrue(box.drain(fd: a))
        XCTAssertTrue(box.isEmpty)
        XCTAssertEqual(fcntl(fds[0], F_GETFD), -1, "the outbox closed its copy after sending")
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        defer { buf.deallocate() }
        var got: [Int32] = []
        guard case .processed(1) = try Posix.receiveWithFDs(b, buf, 16, fds: &got) else { return XCTFail("first datagram") }
        XCTAssertEqual(buf.load(as: UInt8.self), 1)
        XCTAssertTrue(got.isEmpty)
        guard case .processed(1) = try Posix.receiveWithFDs(b, buf, 16, fds: &got) else { return XCTFail("second datagram") }
        XCTAssertEqual(buf.load(as: UInt8.self), 2)
        XCTAssertEqual(got.count, 1)
        // The received descriptor is the same connection.
        XCTAssertEqual(Glibc.write(fds[1], "x", 1), 1)
        var byte: UInt8 = 0
        XCTAssertEqual(Glibc.read(got[0], &byte, 1), 1)
        XCTAssertEqual(byte, UInt8(ascii: "x"))
        Glibc.close(got[0])

        // Dropped (the peer is gone): the queued descriptor is closed, not leaked.
        var pair2: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair2), 0)
        defer { Glibc.close(pair2[1]) }
        var box2 = ControlOutbox()
        XCTAssertTrue(box2.enqueue([3], fd: pair2[0]))
        box2.discard()
        XCTAssertEqual(fcntl(pair2[0], F_GETFD), -1, "a discarded outbox closes the descriptors it held")
    }

    /// A supervisor's channel takes the descriptor a `moveServer` carries; one not taken is closed.
    func testControlChannelHandsOverThePassedDescriptor() throws {
        let (w, s) = try Posix.socketPair()
        defer { Glibc.close(w) }
        let channel = ControlChannel(fd: s)
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        defer { Glibc.close(fds[1]) }
        var box = ControlOutbox()
        XCTAssertTrue(box.enqueue(ControlMessage.moveServer(targetSlot: 2, state: [9]).encode(), fd: fds[0]))
        XCTAssertTrue(box.enqueue(ControlMessage.heartbeat(clients: 1, servers: 2).encode()))
        XCTAssertTrue(box.drain(fd: w))
        XCTAssertEqual(channel.receive(), .message(.moveServer(targetSlot: 2, state: [9])))
        let passed = channel.takePassedFD()
        XCTAssertGreaterThanOrEqual(passed, 0)
        XCTAssertEqual(channel.takePassedFD(), -1, "taken once")
        XCTAssertEqual(channel.receive(), .message(.heartbeat(clients: 1, servers: 2)))
        XCTAssertEqual(Glibc.write(fds[1], "y", 1), 1)
        var byte: UInt8 = 0
        XCTAssertEqual(Glibc.read(passed, &byte, 1), 1)
        Glibc.close(passed)
    }
}

/// A client and its server moving together on a rolling restart (issue 18): round trips, hostile input,
/// and two sockets carried with the state in one datagram.
final class HandoffPairCodecTests: XCTestCase {
    static let full = HandoffPair(client: HandoffCodecTests.full, server: HandoffServerCodecTests.full, poolMode: "transaction",
                                  txStatus: UInt8(ascii: "E"), needsReset: true, lastReady: 123_456, xactStart: 120_000)

    private func decode(_ bytes: [UInt8]) throws -> HandoffPair {
        try bytes.withUnsafeBytes { raw throws -> HandoffPair in try HandoffPair.decode(raw) }
    }

    func testRoundTrips() throws {
        XCTAssertEqual(try decode(Self.full.encode()), Self.full)
        let minimal = HandoffPair(client: HandoffClient(user: "u", database: "d", processID: 1, secretKey: 2),
                                  server: HandoffServer(database: "d", user: "u"), poolMode: "session")
        XCTAssertEqual(try decode(minimal.encode()), minimal)
        XCTAssertTrue(Self.full.encode().withUnsafeBytes { HandoffPair.isPair($0) })
        XCTAssertFalse(HandoffCodecTests.full.encode().withUnsafeBytes { HandoffPair.isPair($0) }, "a lone client is not a pair")
    }

    func testEveryTruncationTrailingByteAndBadNestedStateIsRejected() {
        let bytes = Self.full.encode()
        for n in 0..<bytes.count {
            XCTAssertThrowsError(try decode(Array(bytes.prefix(n))), "prefix of \(n) bytes")
        }
        XCTAssertThrowsError(try decode(bytes + [0]))
        XCTAssertThrowsError(try decode(Array("PGP2".utf8) + Array(bytes.dropFirst(4)))) { error in
            XCTAssertEqual("\(error)", "invalid client handoff: not a pgswift client-server handoff (format PGP1)")
        }
        // The client state's own format tag, spoiled inside the pair.
        var bad = bytes
        bad[8] = UInt8(ascii: "X")
        XCTAssertThrowsError(try decode(bad))
        // A nested length that runs past the datagram.
        var long = bytes
        long[4] = 0x7F
        XCTAssertThrowsError(try decode(long))
    }

    /// Both sockets travel with the state, in order (the client's first), over a SEQPACKET pair.
    func testStateAndBothSocketsTravelTogether() throws {
        let (a, b) = try Posix.socketPair()
        defer { Posix.close(a); Posix.close(b) }
        var client: [Int32] = [-1, -1], server: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &client), 0)
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &server), 0)
        defer { Glibc.close(client[1]); Glibc.close(server[1]) }
        let bytes = Self.full.encode()
        XCTAssertLessThanOrEqual(bytes.count, HandoffClient.maximumSize)
        let sent = try bytes.withUnsafeBytes { try Posix.sendWithFDs(a, $0, fds: [client[0], server[0]]) }
        XCTAssertEqual(sent, .processed(bytes.count))
        Glibc.close(client[0])
        Glibc.close(server[0])
        let buf = UnsafeMutableRawPointer.allocate(byteCount: HandoffClient.maximumSize + 1, alignment: 8)
        defer { buf.deallocate() }
        var fds: [Int32] = []
        XCTAssertEqual(try Posix.receiveWithFDs(b, buf, HandoffClient.maximumSize + 1, fds: &fds), .processed(bytes.count))
        XCTAssertEqual(fds.count, 2)
        defer { fds.forEach { Glibc.close($0) } }
        XCTAssertEqual(try HandoffPair.decode(UnsafeRawBufferPointer(start: buf, count: bytes.count)), Self.full)
        for (mine, theirs, byte) in [(client[1], fds[0], UInt8(1)), (server[1], fds[1], UInt8(2))] {
            var out = byte
            XCTAssertEqual(Glibc.write(mine, &out, 1), 1)
            var back: UInt8 = 0
            XCTAssertEqual(Glibc.read(theirs, &back, 1), 1)
            XCTAssertEqual(back, byte)
        }
    }
}
