// The TLS connection layer over a socketpair: handshake, backpressure through the ciphertext spill
// buffer, data integrity, the "socket drained" hint, end of stream.
import Foundation
import XCTest
@testable import Worker
import Shared

final class TLSConnectionTests: XCTestCase {
    private var dir = ""
    private var fds: [Int32] = [-1, -1]
    private var conns: [TLSConn] = []

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "pgswift-tlsconn-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        for c in conns { TLSIO.free(c) }
        for fd in fds where fd >= 0 { close(fd) }
        try? FileManager.default.removeItem(atPath: dir)
    }

    private func contexts() throws -> (server: TLSContext, client: TLSContext) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                       "-keyout", "\(dir)/k.pem", "-out", "\(dir)/c.pem", "-days", "1", "-subj", "/CN=localhost"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let server = try XCTUnwrap(try TLSContext.acceptingClients(TLSSideSettings(
            mode: .require, keyFile: "\(dir)/k.pem", certFile: "\(dir)/c.pem", caFile: "", protocols: "secure",
            ciphers: "default", tls13Ciphers: "", prefix: "client")))
        let client = try XCTUnwrap(try TLSContext.connectingServers(TLSSideSettings(
            mode: .require, keyFile: "", certFile: "", caFile: "", protocols: "secure", ciphers: "default",
            tls13Ciphers: "", prefix: "server")))
        return (server, client)
    }

    /// A connected pair (accepting side, connecting side) over a non-blocking socketpair with small buffers.
    private func pair() throws -> (TLSConn, TLSConn) {
        let (server, client) = try contexts()
        var sv: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &sv), 0)
        fds = sv
        var small: Int32 = 4096
        for fd in sv {
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        }
        let bio = TLSBIOMethod()
        let a = try XCTUnwrap(TLSIO.make(server, fd: sv[0], accepting: true, method: bio))
        let b = try XCTUnwrap(TLSIO.make(client, fd: sv[1], accepting: false, method: bio))
        conns = [a, b]
        var doneA = false, doneB = false
        for _ in 0..<200 where !(doneA && doneB) {
            for (c, isA) in [(a, true), (b, false)] {
                try? TLSIO.flush(c)
                if isA ? doneA : doneB { continue }
                switch TLSIO.handshake(c) {
                case .done: if isA { doneA = true } else { doneB = true }
                case .wantMore: break
                case .failed(let reason): XCTFail("handshake failed: \(reason)")
                }
            }
        }
        XCTAssertTrue(doneA && doneB, "handshake did not complete")
        return (a, b)
    }

    func testLargeTransferThroughBackpressure() throws {
        let (a, b) = try pair()
        let total = 1 << 20
        let payload = (0..<total).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        var received: [UInt8] = []
        received.reserveCapacity(total)
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 32768, alignment: 16)
        defer { buf.deallocate() }
        var sent = 0
        var blocked = 0
        var sawSpill = false
        var rounds = 0
        while received.count < total && rounds < 1_000_000 {
            rounds += 1
            if sent < total {
                let r = try payload.withUnsafeBytes { try TLSIO.send(b, $0.baseAddress! + sent, total - sent) }
                switch r {
                case .processed(let n):
                    XCTAssertGreaterThan(n, 0)
                    sent += n
                case .wouldBlock:
                    blocked += 1
                }
                if !b.pointee.out.isEmpty { sawSpill = true }
            } else {
                try TLSIO.flush(b)
            }
            // The reader drains what is there, as the worker does on an EPOLLIN edge.
            readLoop: while true {
                switch TLSIO.read(a, buf, 32768) {
                case .data(let n, let drained):
                    received += UnsafeRawBufferPointer(start: buf, count: n)
                    if drained { break readLoop }
                case .wouldBlock:
                    break readLoop
                case .closed, .failed:
                    XCTFail("reader closed early")
                    return
                }
            }
        }
        XCTAssertEqual(received.count, total)
        XCTAssertTrue(received == payload, "bytes differ after the TLS round trip")
        XCTAssertGreaterThan(blocked, 0, "the writer never met backpressure: the test did not exercise it")
        XCTAssertTrue(sawSpill, "no ciphertext was ever left for later")
    }

    /// A small message read whole says the socket is empty, so the worker skips the EAGAIN read.
    func testSmallMessageReportsDrained() throws {
        let (a, b) = try pair()
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 32768, alignment: 16)
        defer { buf.deallocate() }
        for size in [1, 100, 5000] {
            let msg = [UInt8](repeating: 0x5a, count: size)
            guard case .processed(size) = try msg.withUnsafeBytes({ try TLSIO.send(b, $0.baseAddress!, size) }) else {
                return XCTFail("send of \(size) bytes")
            }
            guard case .data(let n, let drained) = TLSIO.read(a, buf, 32768) else { return XCTFail("read \(size)") }
            XCTAssertEqual(n, size)
            XCTAssertTrue(drained, "a \(size)-byte message read whole did not report the socket empty")
            guard case .wouldBlock = TLSIO.read(a, buf, 32768) else { return XCTFail("more data than sent") }
        }
    }

    func testSendBeforeHandshakeIsRefused() throws {
        let (server, _) = try contexts()
        var sv: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &sv), 0)
        fds = sv
        let a = try XCTUnwrap(TLSIO.make(server, fd: sv[0], accepting: true, method: TLSBIOMethod()))
        conns = [a]
        let bytes: [UInt8] = [1, 2, 3]
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try TLSIO.send(a, $0.baseAddress!, 3) })
        // Garbage instead of a ClientHello fails the handshake cleanly.
        XCTAssertEqual(write(sv[1], "GET / HTTP/1.0\r\n\r\n", 18), 18)
        guard case .failed = TLSIO.handshake(a) else { return XCTFail("garbage handshake did not fail") }
    }

    func testPeerCloseIsEndOfStream() throws {
        let (a, b) = try pair()
        let msg = Array("last words".utf8)
        _ = try msg.withUnsafeBytes { try TLSIO.send(b, $0.baseAddress!, msg.count) }
        TLSIO.free(b)  // sends close_notify
        conns = [a]
        close(fds[1])
        fds[1] = -1
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 1024, alignment: 16)
        defer { buf.deallocate() }
        var got: [UInt8] = []
        var closed = false
        for _ in 0..<10 {
            switch TLSIO.read(a, buf, 1024) {
            case .data(let n, _): got += UnsafeRawBufferPointer(start: buf, count: n)
            case .closed: closed = true
            case .wouldBlock, .failed: break
            }
            if closed { break }
        }
        XCTAssertEqual(got, msg)
        XCTAssertTrue(closed)
    }
}
