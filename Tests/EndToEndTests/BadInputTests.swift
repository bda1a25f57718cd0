// End to end: malformed, oversized, old-protocol and silent clients are dropped without harming others.
import Foundation
import XCTest

final class BadInputTests: XCTestCase {
    private var pg: PostgresServer!
    private var px: Pgswift!
    private var workersBefore: [pid_t] = []

    override func setUpWithError() throws {
        pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.settings = [("client_login_timeout", "2")]
        px = try Pgswift.start(s)
        workersBefore = px.workerPids()
    }

    override func tearDown() {
        px?.stop()
        px = nil
    }

    /// After each bad client: a normal client still gets served, by the same worker (no crash).
    private func assertStillServing(file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try Psql.run(px.target(user: "u_trust", database: "testdb"), "select 1")
        XCTAssertTrue(r.succeeded, "\(r)\nlog:\n\(px.log().suffix(3000))", file: file, line: line)
        XCTAssertEqual(r.stdout.trimmed, "1", file: file, line: line)
        XCTAssertEqual(px.workerPids(), workersBefore, "a worker was replaced; log:\n\(px.log().suffix(3000))",
                       file: file, line: line)
    }

    /// The first backend message, if the first thing that arrives is a whole message.
    private func firstMessage(_ data: [UInt8]) -> WireMessage? {
        guard data.count >= 5 else { return nil }
        let len = Int(data[1]) << 24 | Int(data[2]) << 16 | Int(data[3]) << 8 | Int(data[4])
        guard len >= 4, data.count >= 1 + len else { return nil }
        return WireMessage(type: data[0], body: Array(data[5..<1 + len]))
    }

    func testGarbageBytesAreDropped() throws {
        for garbage in [Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8),
                        (0..<200).map { _ in UInt8.random(in: 0...255) },
                        [0, 0, 0, 0, 0, 0, 0, 0]] {
            let sock = try TestSocket(port: px.port)
            try sock.send(garbage)
            let (data, closed) = sock.readUntilClosed(timeout: 15)
            XCTAssertTrue(closed, "connection still open 15 s after garbage \(garbage.prefix(8))")
            if let m = firstMessage(data) {
                XCTAssertEqual(m.typeChar, "E", "only an ErrorResponse may answer garbage")
            }
            try assertStillServing()
        }
    }

    func testTruncatedStartupPacketThenClose() throws {
        let full = WireEncode.startup(parameters: [("user", "u_trust"), ("database", "testdb")])
        let sock = try TestSocket(port: px.port)
        try sock.send(Array(full.prefix(10)))
        sock.close()
        try assertStillServing()

        // Also the half-close variant: the pooler sees EOF mid-packet but could still write.
        let half = try TestSocket(port: px.port)
        try half.send(Array(full.prefix(full.count - 3)))
        half.shutdownWrite()
        XCTAssertTrue(half.readUntilClosed(timeout: 15).closed, "connection kept open after EOF mid-packet")
        try assertStillServing()
    }

    func testHugeStartupLengthIsRefused() throws {
        let sock = try TestSocket(port: px.port)
        // Length 1 GiB, protocol 3.0, then a few bytes of what would be parameters.
        try sock.send(WireEncode.int32(1 << 30) + WireEncode.int32(0x0003_0000) + Array("user\0u_trust\0".utf8))
        let (data, closed) = sock.readUntilClosed(timeout: 15)
        XCTAssertTrue(closed, "connection still open 15 s after a 1 GiB startup length")
        if !data.isEmpty {
            let m = firstMessage(data)
            XCTAssertEqual(m?.typeChar, "E", "answer to a 1 GiB startup packet: \(data.prefix(32))")
            if let m { XCTAssertEqual(WireErrorFields(body: m.body).sqlstate, "08P01") }
        }
        try assertStillServing()
    }

    func testProtocolVersion2IsRefusedWithAnError() throws {
        let sock = try TestSocket(port: px.port)
        try sock.send(WireEncode.startup(parameters: [("user", "u_trust"), ("database", "testdb")],
                                         protocolVersion: 0x0002_0000))
        let (data, closed) = sock.readUntilClosed(timeout: 15)
        XCTAssertTrue(closed, "connection still open 15 s after a protocol 2.0 startup")
        let m = try XCTUnwrap(firstMessage(data), "no ErrorResponse for protocol 2.0: \(data.prefix(64))")
        XCTAssertEqual(m.typeChar, "E")
        let fields = WireErrorFields(body: m.body)
        XCTAssertTrue(["0A000", "08P01"].contains(fields.sqlstate ?? ""), "\(fields)")
        XCTAssertTrue(fields.message?.lowercased().contains("unsupported frontend protocol") ?? false, "\(fields)")
        try assertStillServing()
    }

    func testSilentClientIsClosedAfterLoginTimeout() throws {
        let sock = try TestSocket(port: px.port)
        let started = monotonicNow()
        let (_, closed) = sock.readUntilClosed(timeout: 30)
        let elapsed = monotonicNow() - started
        XCTAssertTrue(closed, "a silent client was still connected after 30 s (client_login_timeout = 2)")
        XCTAssertGreaterThanOrEqual(elapsed, 1.5, "closed before client_login_timeout")
        print("silent client closed after \(String(format: "%.2f", elapsed)) s (client_login_timeout = 2)")
        try assertStillServing()
    }

    func testSilentClientAfterPartialStartupIsClosed() throws {
        let sock = try TestSocket(port: px.port)
        try sock.send(Array(WireEncode.startup(parameters: [("user", "u_trust")]).prefix(6)))
        let started = monotonicNow()
        XCTAssertTrue(sock.readUntilClosed(timeout: 30).closed, "a stalled login was kept past 30 s")
        XCTAssertGreaterThanOrEqual(monotonicNow() - started, 1.5, "closed before client_login_timeout")
        try assertStillServing()
    }
}
